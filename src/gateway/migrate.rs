//! Moving a polling session to another node: `migrate(sid → node)`.
//!
//! The owner takes the session out of its engine (`Engine::move_out`; requests for it wait
//! meanwhile) and sends it over `Forward.Migrate`. The receiving node commits itself as the
//! owner with a higher epoch in the registry, resumes the session (`Engine::move_in`) and
//! answers with the epoch. From then on the former owner sends whatever still reaches it for
//! that sid on to the new owner: a forwarded request is answered "moved to N" (the forwarding
//! node asks N, one more hop and never more), a request of its own HTTP front is forwarded.
//! It remembers the move until every node's registry has long caught up.
//!
//! If the receiving node refuses, the former owner takes the session back; the client only
//! saw its parked long-poll answered `6`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Gateway, convert};
use crate::engine::{MoveError, SessionImage};
use crate::registry::{Command, NodeId, Registry, Response};
use crate::rpc::pb::forward::forward_client::ForwardClient;
use crate::rpc::pb::forward::{HandoverRequest, MigrateReply, MigrateRequest, migrate_reply};

/// How long a request for a session in flight waits for the move to end. A move is one gRPC
/// call and one Raft commit: milliseconds.
const MOVE_WAIT: Duration = Duration::from_secs(5);

/// How long a former owner remembers where a session went: far longer than any registry lag.
const REMEMBER: Duration = Duration::from_secs(120);

/// How long a move may take on the wire, commit included.
const MIGRATE_DEADLINE: Duration = Duration::from_secs(10);

/// Room for a session's application state (its sockets, rooms and data) beyond its queue.
pub(crate) const APP_STATE_MARGIN: usize = 4 * 1024 * 1024;

/// Why a session did not move.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MigrateError {
    /// This node is not part of a cluster, or `to` is not one of its other members.
    #[error("node {0} is not another member of this cluster")]
    NotAMember(NodeId),
    /// No mount at that path.
    #[error("no mount at {0}")]
    NoSuchMount(String),
    /// The session is already moving.
    #[error("the session is already moving")]
    InFlight,
    /// The engine could not take the session out (unknown, or busy: try again).
    #[error(transparent)]
    Move(#[from] MoveError),
    /// The other node did not take it; the session stays here.
    #[error("node {node} did not take the session: {reason}")]
    Refused {
        /// The node asked.
        node: NodeId,
        /// What it said, or why it could not be asked.
        reason: String,
    },
}

impl Gateway {
    /// A session the registry gave this node after its owner was lost ([`Command::TakeOver`])
    /// that this node does not hold: started here, once, on its first request, with an empty
    /// queue and what the cluster kept of its sockets (`Application::adoption`; requests for
    /// it wait meanwhile). What the lost node had queued is gone.
    /// Until this process has taken over what an earlier one left (its registry may not even
    /// have caught up with the records yet), any session it does not hold may be one of
    /// those: that is waited for (up to `OWNER_WAIT`).
    pub(crate) async fn adopt(&self, mount: &str, sid: &str) {
        let (Some(cluster), Some(engine)) = (&self.inner.cluster, self.engine(mount)) else {
            return;
        };
        if engine.has_session(sid) {
            return;
        }
        let mut reclaimed = cluster.reclaimed.subscribe();
        let _ = tokio::time::timeout(super::OWNER_WAIT, reclaimed.wait_for(|done| *done)).await;
        let given = cluster
            .registry
            .session(sid)
            .is_some_and(|r| r.taken_over && r.owner == cluster.node);
        if !given || engine.has_session(sid) {
            return;
        }
        if !self.inner.moves.adopt(sid) {
            // Being started by another request: wait for it.
            self.inner.moves.settled(sid).await;
            return;
        }
        let image = SessionImage {
            sid: sid.to_owned(),
            handshake: Default::default(),
            queue: Vec::new(),
            // Its client's heartbeat went with the lost node, and may be near its end: a
            // ping at once starts it again.
            next_ping_in: Some(Duration::ZERO),
            pong_due_in: None,
            app: engine.adoption(sid).await,
        };
        let started = engine.move_in(image);
        self.inner.moves.adopted(sid);
        match started {
            Ok(()) => {
                self.inner
                    .counters
                    .taken_over
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tracing::debug!(sid, %e, "taken-over session not started"),
        }
    }
}

/// The sessions this node moved away, or is moving.
#[derive(Default)]
pub(crate) struct Moves {
    entries: Mutex<HashMap<String, Entry>>,
}

enum Entry {
    /// Being moved: requests wait for this.
    InFlight(Arc<Notify>),
    /// Moved to this node, with this epoch, at this time.
    Moved(NodeId, u64, Instant),
    /// Taken over here, at this time, from a node that was lost.
    Adopted(Instant),
}

impl Moves {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks `sid` in flight; false if it already is.
    fn begin(&self, sid: &str) -> bool {
        let mut entries = self.lock();
        if matches!(entries.get(sid), Some(Entry::InFlight(_))) {
            return false;
        }
        Self::forget_old(&mut entries);
        entries.insert(sid.to_owned(), Entry::InFlight(Arc::new(Notify::new())));
        true
    }

    fn forget_old(entries: &mut HashMap<String, Entry>) {
        let now = Instant::now();
        entries.retain(|_, e| match e {
            Entry::Moved(_, _, at) | Entry::Adopted(at) => now - *at <= REMEMBER,
            Entry::InFlight(_) => true,
        });
    }

    /// Marks `sid` being taken over here; false if this node moved or took it before (a
    /// session is started afresh from the registry at most once).
    fn adopt(&self, sid: &str) -> bool {
        let mut entries = self.lock();
        if entries.contains_key(sid) {
            return false;
        }
        Self::forget_old(&mut entries);
        entries.insert(sid.to_owned(), Entry::InFlight(Arc::new(Notify::new())));
        true
    }

    /// Ends the take-over of `sid` begun by [`adopt`](Self::adopt).
    fn adopted(&self, sid: &str) {
        let previous = self
            .lock()
            .insert(sid.to_owned(), Entry::Adopted(Instant::now()));
        if let Some(Entry::InFlight(done)) = previous {
            done.notify_waiters();
        }
    }

    /// Ends the move of `sid`: moved to `to` with an epoch, or (`None`) back here.
    fn finish(&self, sid: &str, to: Option<(NodeId, u64)>) {
        let mut entries = self.lock();
        let previous = match to {
            Some((node, epoch)) => {
                entries.insert(sid.to_owned(), Entry::Moved(node, epoch, Instant::now()))
            }
            None => entries.remove(sid),
        };
        if let Some(Entry::InFlight(done)) = previous {
            done.notify_waiters();
        }
    }

    /// Where `sid` went and with which epoch, once any move in flight has ended (waiting at
    /// most [`MOVE_WAIT`]); `None` if it did not move away from here.
    pub(crate) async fn settled(&self, sid: &str) -> Option<(NodeId, u64)> {
        let until = Instant::now() + MOVE_WAIT;
        loop {
            let done = match self.lock().get(sid) {
                None | Some(Entry::Adopted(_)) => return None,
                Some(Entry::Moved(node, epoch, _)) => return Some((*node, *epoch)),
                Some(Entry::InFlight(done)) => done.clone(),
            };
            let notified = done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Ended between the look-up and `enable`: look again.
            if !matches!(self.lock().get(sid), Some(Entry::InFlight(_))) {
                continue;
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                return None;
            }
        }
    }
}

impl Gateway {
    /// Move the polling session `sid` of `mount` to node `to`; returns the epoch of its new
    /// ownership. The client notices nothing but a long-poll answered `6`.
    pub async fn migrate(&self, mount: &str, sid: &str, to: NodeId) -> Result<u64, MigrateError> {
        let cluster = self
            .inner
            .cluster
            .as_ref()
            .filter(|c| c.node != to && c.peers.contains(to))
            .ok_or(MigrateError::NotAMember(to))?;
        let engine = self
            .engine(mount)
            .ok_or_else(|| MigrateError::NoSuchMount(mount.to_owned()))?;
        if !self.inner.moves.begin(sid) {
            return Err(MigrateError::InFlight);
        }
        let image = match engine.move_out(sid).await {
            Ok(image) => image,
            Err(e) => {
                self.inner.moves.finish(sid, None);
                return Err(e.into());
            }
        };
        let refused = |reason: String| MigrateError::Refused { node: to, reason };
        let request = MigrateRequest {
            mount: mount.to_owned(),
            session: Some(convert::image_to_pb(&image)),
        };
        let sent = match cluster.peers.channel(to) {
            Some(channel) => {
                let mut client = ForwardClient::new(channel);
                match tokio::time::timeout(MIGRATE_DEADLINE, client.migrate(request)).await {
                    Ok(Ok(reply)) => Ok(reply.into_inner()),
                    Ok(Err(status)) => Err(status.message().to_owned()),
                    Err(_) => Err("no answer in time".to_owned()),
                }
            }
            None => Err("not reachable".to_owned()),
        };
        // Whether the session comes back here if it did not move.
        let mut take_back = true;
        let outcome = match sent {
            Ok(MigrateReply {
                result: Some(migrate_reply::Result::Epoch(epoch)),
            }) => Ok(epoch),
            Ok(MigrateReply {
                result: Some(migrate_reply::Result::Closed(reason)),
            }) => {
                take_back = false;
                Err(refused(reason))
            }
            Ok(MigrateReply {
                result: Some(migrate_reply::Result::Refused(reason)),
            }) => Err(refused(reason)),
            Ok(MigrateReply {
                result: Some(migrate_reply::Result::Busy(_)) | None,
            }) => Err(refused("an unexpected answer".to_owned())),
            // The call failed on the way: it may have been taken all the same. The registry
            // knows.
            Err(reason) => match committed_to(&cluster.registry, sid, to).await {
                Some(epoch) => Ok(epoch),
                None => Err(refused(reason)),
            },
        };
        match outcome {
            Ok(epoch) => {
                self.inner.moves.finish(sid, Some((to, epoch)));
                self.inner
                    .counters
                    .moved_out
                    .fetch_add(1, Ordering::Relaxed);
                Ok(epoch)
            }
            Err(e) => {
                if !take_back {
                    tracing::info!(
                        sid,
                        "a session closed on the node it was moving to: dropped"
                    );
                } else if let Err(lost) = engine.move_in(image) {
                    tracing::warn!(sid, %lost, "a session that did not move could not be taken back");
                }
                self.inner.moves.finish(sid, None);
                Err(e)
            }
        }
    }

    /// Ask `owner` to migrate the polling session `sid` of `mount` here (this node's front
    /// received its websocket, so the upgrade runs here with no hop). Asks again a few times
    /// while the owner is busy delivering a POST.
    pub async fn pull(&self, owner: NodeId, mount: &str, sid: &str) -> Result<u64, MigrateError> {
        const ATTEMPTS: u32 = 4;
        let cluster = self
            .inner
            .cluster
            .as_ref()
            .filter(|c| c.node != owner && c.peers.contains(owner))
            .ok_or(MigrateError::NotAMember(owner))?;
        let refused = |reason: String| MigrateError::Refused {
            node: owner,
            reason,
        };
        let channel = cluster
            .peers
            .channel(owner)
            .ok_or_else(|| refused("not reachable".to_owned()))?;
        for attempt in 1..=ATTEMPTS {
            let request = HandoverRequest {
                mount: mount.to_owned(),
                sid: sid.to_owned(),
                to: cluster.node,
            };
            let mut client = ForwardClient::new(channel.clone());
            let reply = tokio::time::timeout(MIGRATE_DEADLINE, client.handover(request))
                .await
                .map_err(|_| refused("no answer in time".to_owned()))?
                .map_err(|status| refused(status.message().to_owned()))?
                .into_inner();
            match reply.result {
                Some(migrate_reply::Result::Epoch(epoch)) => {
                    self.inner.counters.pulls.fetch_add(1, Ordering::Relaxed);
                    return Ok(epoch);
                }
                Some(migrate_reply::Result::Busy(_)) if attempt < ATTEMPTS => {
                    tokio::time::sleep(Duration::from_millis(10) * attempt).await;
                }
                Some(migrate_reply::Result::Busy(_)) => {
                    return Err(MigrateError::Move(MoveError::Busy));
                }
                Some(
                    migrate_reply::Result::Refused(reason) | migrate_reply::Result::Closed(reason),
                ) => return Err(refused(reason)),
                None => return Err(refused("an empty answer".to_owned())),
            }
        }
        Err(MigrateError::Move(MoveError::Busy))
    }

    /// The receiving side of [`Gateway::migrate`]: commit this node as the owner, then resume
    /// the session. Returns the epoch, or why it was not taken (the registry then names the
    /// former owner again).
    pub(crate) async fn accept_migration(
        &self,
        mount: &str,
        image: SessionImage,
    ) -> Result<u64, Declined> {
        let refused = |reason: &str| Declined::Refused(reason.to_owned());
        let cluster = self
            .inner
            .cluster
            .as_ref()
            .ok_or_else(|| refused("not a cluster node"))?;
        let engine = self.engine(mount).ok_or_else(|| refused("no such mount"))?;
        let sid = image.sid.clone();
        // Resumed before the commit: once the registry names this node, this node has it.
        // Meanwhile the former owner holds the requests that reach it.
        engine
            .move_in(image)
            .map_err(|e| Declined::Refused(e.to_string()))?;
        match take_ownership(&cluster.registry, &sid, cluster.node).await {
            Ok(epoch) => {
                self.inner.counters.moved_in.fetch_add(1, Ordering::Relaxed);
                Ok(epoch)
            }
            Err(reason) => {
                // Not committed: the former owner takes it back. What reached it here in
                // these milliseconds (only requests of this node's own front) is lost. Unless
                // it closed here meanwhile (its client, or the server, ended it): taken back,
                // it would live on without that close.
                match engine.move_out(&sid).await {
                    Ok(_) => Err(Declined::Refused(reason)),
                    Err(e) => Err(Declined::Closed(format!("{reason}; then {e}"))),
                }
            }
        }
    }
}

/// Why a node did not take a session it was sent ([`Gateway::accept_migration`]).
pub(crate) enum Declined {
    /// Not taken: the sender keeps it.
    Refused(String),
    /// Resumed, then closed here before it could be committed: the sender drops it rather
    /// than take it back.
    Closed(String),
}

/// Commit `node` as the owner of `sid` with the next epoch; returns it.
async fn take_ownership(registry: &Registry, sid: &str, node: NodeId) -> Result<u64, String> {
    const ATTEMPTS: u32 = 10;
    let mut epoch = registry.session(sid).map_or(0, |r| r.epoch) + 1;
    for attempt in 1..=ATTEMPTS {
        let command = Command::SetOwner {
            sid: sid.to_owned(),
            node,
            epoch,
        };
        match registry.write(command).await.map_err(|e| e.to_string())? {
            Response::Applied => return Ok(epoch),
            Response::StaleEpoch { current, .. } => epoch = current + 1,
            // Its birth is not committed yet (it is queued on the former owner): shortly.
            Response::UnknownSid => {
                tokio::time::sleep(Duration::from_millis(20) * attempt).await;
            }
            other => return Err(format!("the registry answered {other:?}")),
        }
    }
    Err("the session's record did not appear in the registry".to_owned())
}

/// The epoch with which `sid` was committed as owned by `to`, if it was (looked up for a
/// short while: a commit may still be on its way to this node).
async fn committed_to(registry: &Registry, sid: &str, to: NodeId) -> Option<u64> {
    for _ in 0..20 {
        if let Some(record) = registry.session(sid)
            && record.owner == to
        {
            return Some(record.epoch);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}
