//! The cross-node adapter: what a node does to a selection of sockets — broadcast, join or
//! leave rooms, disconnect, list them, broadcast with acks, take back a socket for recovery —
//! reaches the matching sockets of every node, and server-side emits reach the servers of every
//! node.
//!
//! The node that acts does its own sockets itself and sends the request to every other member
//! of the registry's membership over its adapter link to that member (`rpc::link`), where the
//! same selection runs against that node's sockets (`service`).
//!
//! - Broadcasts, actions and server-side emits need no answer. Each peer has one ordered queue
//!   and one sending task, which takes whatever has queued up as one batch and puts it on the
//!   link; a few batches may be on their way at once, and the peer applies them in order. So
//!   requests arrive at another node in the order they were made, and a join followed by a
//!   broadcast to that room reaches the joined sockets. Everything is bounded: a full queue
//!   drops new requests, a request older than [`AdapterConfig::max_age`] when its batch leaves
//!   is dropped instead of delivered late, a batch the link cannot take or could not open a
//!   stream for (the peer is restarting, say: nothing was sent) is tried again while it is
//!   younger than that, and a batch not confirmed within [`AdapterConfig::deadline`] is given
//!   up. Each loss is counted. Delivery is at most once, like a pub/sub adapter's.
//! - Listings, broadcasts with acks and server-side emits with acks ask every member at once,
//!   each with a deadline.
//! - Connection state recovery takes a socket's saved state back from the registry (where its
//!   node saved it when the connection was lost, or the cluster when the node was lost).
//!
//! It also keeps the registry's record of this node's sockets (namespace joins with socket ids
//! and pids, rooms, data) up to date: each change is queued as one registry command, in order,
//! without holding up the socket.

mod convert;
mod service;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{FuturesOrdered, FuturesUnordered, StreamExt};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use crate::protocol::sio::Encoded;
use crate::protocol::value::Value;
use crate::registry::{self, Command, NodeId, Registry, Response};
use crate::rpc::link::{LinkConfig, LinkError, LinkKind, LinkSpec};
use crate::rpc::pb::adapter::adapter_client::AdapterClient;
use crate::rpc::pb::adapter::{
    AckRequest, ActRequest, AdapterReply, AdapterRequest, Batch, BroadcastRequest, Checkpoint,
    CheckpointsRequest, Disconnect, FetchRequest, ReplayRequest, ServerEventRequest, Tell,
    act_request, adapter_reply, adapter_request, tell,
};
use crate::rpc::pb::link::Frame;
use crate::rpc::{PeerChannel, Peers};
use crate::socketio::{
    AckError, AckResponse, Adapter, AdoptedSocket, Recovered, RemoteAckRequest, RemoteAction,
    RemoteBroadcast, Replayed, Selection, ServerEvent, SocketChange, SocketDetails,
};
use convert::{
    ack_from_pb, details_from_pb, millis, replayed_from_pb, selection_to_pb, values_from_pb,
    values_to_pb,
};

pub use service::{AdapterServed, AdapterService};

/// Requests that may wait for one peer.
const PEER_QUEUE: usize = 4096;
/// Most requests in one batch.
const MAX_BATCH: usize = 256;
/// A batch stops growing past this many bytes (a larger request still travels alone).
const BATCH_BYTES: usize = 256 * 1024;
/// How long a batch that could not be put on its link waits before it is tried again.
const RESEND_PAUSE: Duration = Duration::from_millis(100);
/// Batches on their way to one peer at once.
const MAX_IN_FLIGHT: usize = 8;
/// How often a recovery look-up asks again while the socket is still recorded as connected,
/// and how long it waits in between.
const LIVE_TAKE_ATTEMPTS: u32 = 10;
const LIVE_TAKE_PAUSE: Duration = Duration::from_millis(100);
/// How long a listing waits for a peer.
const PEER_DEADLINE: Duration = Duration::from_secs(5);
/// How much longer than the emit's timeout a peer's ack report may take: the peer reports at
/// the timeout at the latest.
const ACK_REPORT_GRACE: Duration = Duration::from_secs(2);

/// Bounds of the adapter's traffic to each peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdapterConfig {
    /// A broadcast, action or server-side emit that waited this long for its peer is dropped
    /// (and counted) instead of delivered late.
    pub max_age: Duration,
    /// How long a batch may wait for the peer's confirmation before it is given up.
    pub deadline: Duration,
    /// The largest request or reply on an adapter link (a broadcast's packet with its
    /// attachments, a listing of many sockets).
    pub max_message: usize,
}

impl Default for AdapterConfig {
    /// Requests older than 5 s are dropped, batches are given up after 5 s, messages are at
    /// most 16 MiB.
    fn default() -> Self {
        AdapterConfig {
            max_age: Duration::from_secs(5),
            deadline: Duration::from_secs(5),
            max_message: 16 << 20,
        }
    }
}

/// Counters of the requests to peers that were not delivered.
#[derive(Debug, Default)]
struct Losses {
    /// Dropped because a peer's queue was full.
    queue_full: AtomicU64,
    /// Dropped because they waited longer than `max_age`.
    stale: AtomicU64,
    /// Sent in a batch that was not confirmed (peer unreachable, link broken, deadline
    /// passed); some may have been applied.
    unconfirmed: AtomicU64,
}

/// What the adapter of a node did not deliver, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdapterLosses {
    /// Broadcasts and actions dropped because a peer's queue was full.
    pub queue_full: u64,
    /// Dropped because they waited longer than [`AdapterConfig::max_age`].
    pub stale: u64,
    /// In batches a peer did not confirm (unreachable, link broken, deadline passed).
    pub unconfirmed: u64,
}

/// A request that needs no answer, in its peer's ordered queue, with when it was made.
struct Queued {
    tell: tell::Kind,
    at: Instant,
}

/// Sends this node's operations on sockets of one Socket.IO mount to the other nodes.
pub struct GrpcAdapter {
    node: NodeId,
    mount: String,
    peers: Peers,
    registry: Registry,
    config: AdapterConfig,
    link: LinkSpec,
    queues: Mutex<HashMap<NodeId, mpsc::Sender<Queued>>>,
    losses: Arc<Losses>,
    checkpoints: Checkpoints,
}

impl GrpcAdapter {
    /// The adapter of node `node` for the Socket.IO server mounted at `mount`.
    pub fn new(
        node: NodeId,
        mount: &str,
        peers: Peers,
        registry: Registry,
        config: AdapterConfig,
        checkpoints: Checkpoints,
    ) -> Self {
        GrpcAdapter {
            checkpoints,
            node,
            mount: mount.to_owned(),
            peers,
            registry,
            config,
            link: link_spec(&config),
            queues: Mutex::new(HashMap::new()),
            losses: Arc::default(),
        }
    }

    /// What was not delivered to peers so far.
    pub fn losses(&self) -> AdapterLosses {
        let l = &self.losses;
        AdapterLosses {
            queue_full: l.queue_full.load(Ordering::Relaxed),
            stale: l.stale.load(Ordering::Relaxed),
            unconfirmed: l.unconfirmed.load(Ordering::Relaxed),
        }
    }

    /// Broadcasts and actions waiting in the peers' queues now.
    pub fn queued(&self) -> usize {
        let queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        queues
            .values()
            .map(|queue| queue.max_capacity() - queue.capacity())
            .sum()
    }

    /// Every member of the membership but this node.
    fn others(&self) -> Vec<NodeId> {
        self.registry
            .membership()
            .into_iter()
            .map(|(id, _, _)| id)
            .filter(|id| *id != self.node)
            .collect()
    }

    /// Queue `tell` for every other member.
    fn send(&self, tell: tell::Kind) {
        let at = Instant::now();
        for peer in self.others() {
            let queued = Queued {
                tell: tell.clone(),
                at,
            };
            if self.queue(peer).try_send(queued).is_err() {
                self.losses.queue_full.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The ordered queue to `peer`, with its sending task started on first use.
    fn queue(&self, peer: NodeId) -> mpsc::Sender<Queued> {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        queues
            .entry(peer)
            .or_insert_with(|| {
                let (tx, rx) = mpsc::channel(PEER_QUEUE);
                let sender = Sender {
                    peer,
                    peers: self.peers.clone(),
                    link: self.link,
                    config: self.config,
                    losses: self.losses.clone(),
                };
                tokio::spawn(sender.run(rx));
                tx
            })
            .clone()
    }

    /// Ask every other member `request` at once, each within `deadline`: one answer per member,
    /// in no particular order (a member that cannot be reached, or answers with a refusal,
    /// counts as disconnected).
    fn ask_all(
        &self,
        request: adapter_request::Kind,
        deadline: Duration,
    ) -> FuturesUnordered<BoxFuture<'static, Result<adapter_reply::Kind, AckError>>> {
        let request: Bytes = AdapterRequest {
            kind: Some(request),
        }
        .encode_to_vec()
        .into();
        self.others()
            .into_iter()
            .map(|peer| {
                let link = self.peers.link(peer, &self.link);
                let request = request.clone();
                let ask: BoxFuture<'static, _> = Box::pin(async move {
                    let link = link.ok_or(AckError::Disconnected)?;
                    let reply = link.call(request, deadline).await.map_err(|e| {
                        tracing::debug!(peer, %e, "adapter request to peer failed");
                        match e {
                            LinkError::Timeout(_) => AckError::Timeout,
                            _ => AckError::Disconnected,
                        }
                    })?;
                    match AdapterReply::decode(reply) {
                        Ok(AdapterReply {
                            kind: Some(adapter_reply::Kind::Refused(reason)),
                        }) => {
                            tracing::debug!(peer, %reason, "adapter request refused");
                            Err(AckError::Disconnected)
                        }
                        Ok(AdapterReply { kind: Some(kind) }) => Ok(kind),
                        _ => Err(AckError::Disconnected),
                    }
                });
                ask
            })
            .collect()
    }

    fn server_event_request(
        &self,
        event: ServerEvent,
        ack: Option<Duration>,
    ) -> ServerEventRequest {
        ServerEventRequest {
            mount: self.mount.clone(),
            nsp: event.nsp,
            event: event.event,
            args: Some(values_to_pb(event.args)),
            want_ack: ack.is_some(),
            timeout_ms: ack.map_or(0, millis),
        }
    }
}

/// The link kind, opener and bounds of adapter links.
fn link_spec(config: &AdapterConfig) -> LinkSpec {
    LinkSpec {
        kind: LinkKind::Adapter,
        open: open_link,
        config: LinkConfig::new(config.max_message),
    }
}

/// Opens the `Adapter.Link` stream of an adapter link.
fn open_link(
    channel: PeerChannel,
    frames: ReceiverStream<Frame>,
) -> BoxFuture<'static, Result<Streaming<Frame>, Status>> {
    Box::pin(async move {
        let replies = AdapterClient::new(channel).link(frames).await?;
        Ok(replies.into_inner())
    })
}

/// The sending task of one peer's queue.
/// A batch that could not be sent, with when its oldest request was made.
type Unsent = Option<(Vec<Tell>, Instant)>;

struct Sender {
    peer: NodeId,
    peers: Peers,
    link: LinkSpec,
    config: AdapterConfig,
    losses: Arc<Losses>,
}

impl Sender {
    /// Takes what has queued up as one batch, puts it on the link (in order, with at most
    /// [`MAX_IN_FLIGHT`] batches unconfirmed), until the adapter is dropped.
    async fn run(self, mut queue: mpsc::Receiver<Queued>) {
        // Confirmations in order: a batch that comes back unsent is put on the link again
        // before the ones behind it come back too.
        let mut in_flight = FuturesOrdered::new();
        loop {
            let (batch, oldest) = tokio::select! {
                next = queue.recv(), if in_flight.len() < MAX_IN_FLIGHT => match next {
                    Some(first) => {
                        let oldest = first.at;
                        (self.batch(first, &mut queue), oldest)
                    }
                    None => break,
                },
                Some(unsent) = in_flight.next(), if !in_flight.is_empty() => match unsent {
                    Some(unsent) => unsent,
                    None => continue,
                },
            };
            if batch.is_empty() {
                continue;
            }
            // A peer that cannot be reached (restarting, say) gets the batch once it can,
            // while the batch is young enough; what queues meanwhile waits behind it.
            loop {
                match self.put(&batch, oldest) {
                    Some(confirmed) => in_flight.push_back(confirmed),
                    None if oldest.elapsed() + RESEND_PAUSE < self.config.max_age => {
                        tokio::time::sleep(RESEND_PAUSE).await;
                        continue;
                    }
                    None => {
                        let count = batch.len() as u64;
                        self.losses.unconfirmed.fetch_add(count, Ordering::Relaxed);
                    }
                }
                break;
            }
        }
        while in_flight.next().await.is_some() {}
    }

    /// `first` and whatever else waits, up to the batch bounds, without the requests that
    /// are too old to deliver.
    fn batch(&self, first: Queued, queue: &mut mpsc::Receiver<Queued>) -> Vec<Tell> {
        let now = Instant::now();
        let mut tells = Vec::new();
        let mut bytes = 0;
        let mut next = Some(first);
        while let Some(queued) = next.take() {
            if now.duration_since(queued.at) > self.config.max_age {
                self.losses.stale.fetch_add(1, Ordering::Relaxed);
            } else {
                let tell = Tell {
                    kind: Some(queued.tell),
                };
                bytes += tell.encoded_len();
                tells.push(tell);
            }
            if tells.len() < MAX_BATCH && bytes < BATCH_BYTES {
                next = queue.try_recv().ok();
            }
        }
        tells
    }

    /// Puts a batch (whose oldest request was made at `oldest`) on the link at once; returns
    /// the wait for its confirmation, which gives the batch back when no stream to the peer
    /// could be opened (nothing was sent) and it is young enough to try again, and otherwise
    /// counts a failure as unconfirmed; or `None` when the link could not take it.
    fn put(&self, tells: &[Tell], oldest: Instant) -> Option<BoxFuture<'static, Unsent>> {
        let count = tells.len() as u64;
        let batch = Batch {
            tells: tells.to_vec(),
            sent_ms: registry::unix_millis(),
            max_age_ms: millis(self.config.max_age),
        };
        let request: Bytes = AdapterRequest {
            kind: Some(adapter_request::Kind::Batch(batch)),
        }
        .encode_to_vec()
        .into();
        let sent = self
            .peers
            .link(self.peer, &self.link)
            .ok_or(LinkError::UnknownPeer(self.peer))
            .and_then(|link| link.send(request));
        let (peer, deadline, losses) = (self.peer, self.config.deadline, self.losses.clone());
        let (tells, max_age) = (tells.to_vec(), self.config.max_age);
        let reply = match sent {
            Ok(reply) => reply,
            Err(e) => {
                tracing::debug!(peer, %e, "adapter batch not sent");
                return None;
            }
        };
        Some(Box::pin(async move {
            match reply.wait(deadline).await {
                Ok(_) => None,
                Err(LinkError::Unreachable(_)) if oldest.elapsed() + RESEND_PAUSE < max_age => {
                    tokio::time::sleep(RESEND_PAUSE).await;
                    Some((tells, oldest))
                }
                Err(e) => {
                    tracing::debug!(peer, %e, "adapter batch not confirmed");
                    losses.unconfirmed.fetch_add(count, Ordering::Relaxed);
                    None
                }
            }
        }))
    }
}

/// Most sessions whose checkpoints a node keeps; past it, those not updated for a minute go.
const MAX_CHECKPOINTED: usize = 200_000;
const CHECKPOINT_KEPT: Duration = Duration::from_secs(60);

/// What the polling clients of the other nodes are known to have received, by session and
/// namespace (see [`Adapter::checkpoint`]): kept on every node, so that whichever node takes a
/// lost node's session over replays from there. Cheap to clone; clones share the table.
#[derive(Clone, Default)]
pub struct Checkpoints(Arc<Mutex<HashMap<String, Checkpointed>>>);

/// One session's checkpoints: received offsets by namespace, and when they last changed.
type Checkpointed = (HashMap<String, String>, Instant);

impl Checkpoints {
    fn put(&self, session: String, nsp: String, received: String) {
        let Ok(mut table) = self.0.lock() else {
            return;
        };
        let now = Instant::now();
        if table.len() >= MAX_CHECKPOINTED && !table.contains_key(&session) {
            table.retain(|_, (_, at)| now.duration_since(*at) < CHECKPOINT_KEPT);
            if table.len() >= MAX_CHECKPOINTED {
                return;
            }
        }
        let (namespaces, at) = table
            .entry(session)
            .or_insert_with(|| (HashMap::new(), now));
        namespaces.insert(nsp, received);
        *at = now;
    }

    /// The checkpoints of `session`.
    fn get(&self, session: &str) -> HashMap<String, String> {
        self.0
            .lock()
            .ok()
            .and_then(|table| table.get(session).map(|(namespaces, _)| namespaces.clone()))
            .unwrap_or_default()
    }

    /// The checkpoints of `session`, taken out.
    fn take(&self, session: &str) -> HashMap<String, String> {
        self.0
            .lock()
            .ok()
            .and_then(|mut table| table.remove(session))
            .map(|(namespaces, _)| namespaces)
            .unwrap_or_default()
    }
}

impl Adapter for GrpcAdapter {
    fn broadcast(&self, broadcast: RemoteBroadcast) {
        let Encoded { text, attachments } = broadcast.packet;
        self.send(tell::Kind::Broadcast(BroadcastRequest {
            selection: Some(selection_to_pb(&self.mount, broadcast.selection)),
            packet: text,
            attachments: attachments.into_iter().map(|a| a.to_vec()).collect(),
            volatile: broadcast.volatile,
            stamp: broadcast.stamp.unwrap_or_default(),
        }));
    }

    fn act(&self, selection: Selection, action: RemoteAction) {
        let action = match action {
            RemoteAction::Join(room) => act_request::Action::Join(room),
            RemoteAction::Leave(room) => act_request::Action::Leave(room),
            RemoteAction::Disconnect { close } => {
                act_request::Action::Disconnect(Disconnect { close })
            }
        };
        self.send(tell::Kind::Act(ActRequest {
            selection: Some(selection_to_pb(&self.mount, selection)),
            action: Some(action),
        }));
    }

    fn fetch(&self, selection: Selection) -> BoxFuture<'static, Vec<SocketDetails>> {
        let request = adapter_request::Kind::Fetch(FetchRequest {
            selection: Some(selection_to_pb(&self.mount, selection)),
        });
        let replies = self.ask_all(request, PEER_DEADLINE);
        Box::pin(async move {
            replies
                .filter_map(|reply| async move {
                    match reply {
                        Ok(adapter_reply::Kind::Fetch(fetched)) => Some(fetched.sockets),
                        _ => None,
                    }
                })
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .flatten()
                .map(details_from_pb)
                .collect()
        })
    }

    fn replay(
        &self,
        nsp: &str,
        seen: &str,
        rooms: Vec<String>,
    ) -> BoxFuture<'static, Option<Replayed>> {
        let request = adapter_request::Kind::Replay(ReplayRequest {
            mount: self.mount.clone(),
            nsp: nsp.to_owned(),
            seen: seen.to_owned(),
            rooms,
        });
        let mut replies = self.ask_all(request, PEER_DEADLINE);
        Box::pin(async move {
            while let Some(reply) = replies.next().await {
                if let Ok(adapter_reply::Kind::Replay(reply)) = reply
                    && let Some(replayed) = replayed_from_pb(reply)
                {
                    return Some(replayed);
                }
            }
            None
        })
    }

    fn broadcast_with_ack(
        &self,
        request: RemoteAckRequest,
    ) -> BoxFuture<'static, Vec<AckResponse>> {
        let timeout = request.timeout;
        let request = adapter_request::Kind::Ack(AckRequest {
            selection: Some(selection_to_pb(&self.mount, request.selection)),
            event: request.event,
            args: Some(values_to_pb(request.args)),
            volatile: request.volatile,
            timeout_ms: millis(timeout),
        });
        let replies = self.ask_all(request, timeout + ACK_REPORT_GRACE);
        Box::pin(async move {
            replies
                .filter_map(|reply| async move {
                    match reply {
                        Ok(adapter_reply::Kind::Ack(acks)) => Some(acks.acks),
                        _ => None,
                    }
                })
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .flatten()
                .map(ack_from_pb)
                .collect()
        })
    }

    fn recover(
        &self,
        nsp: &str,
        pid: &str,
        max_age: Duration,
    ) -> BoxFuture<'static, Option<Recovered>> {
        let registry = self.registry.clone();
        let (nsp, pid) = (nsp.to_owned(), pid.to_owned());
        Box::pin(async move {
            // A pid still bound to a connected socket: its node has not yet seen the
            // connection go (or is gone itself). The client came back, so the old connection
            // is dead to it: wait a moment for the old node's record, then take the state as
            // it stands.
            for attempt in 0..=LIVE_TAKE_ATTEMPTS {
                let take = Command::TakeSocket {
                    pid: pid.clone(),
                    nsp: nsp.clone(),
                    now_ms: registry::unix_millis(),
                    max_age_ms: millis(max_age),
                    live: attempt == LIVE_TAKE_ATTEMPTS,
                };
                match registry.write(take).await {
                    Ok(Response::Taken(saved)) => {
                        return Some(Recovered {
                            sid: saved.socket_id,
                            rooms: saved.rooms.into_iter().collect(),
                            data: Value::from(saved.data),
                            was_connected: attempt == LIVE_TAKE_ATTEMPTS,
                        });
                    }
                    Ok(Response::Live { .. }) => tokio::time::sleep(LIVE_TAKE_PAUSE).await,
                    Ok(_) => return None,
                    Err(e) => {
                        tracing::debug!(%e, "recovery look-up failed");
                        return None;
                    }
                }
            }
            None
        })
    }

    fn server_emit(&self, event: ServerEvent) {
        self.send(tell::Kind::ServerEvent(
            self.server_event_request(event, None),
        ));
    }

    fn server_emit_with_ack(
        &self,
        event: ServerEvent,
        timeout: Duration,
    ) -> BoxFuture<'static, Vec<Result<Vec<Value>, AckError>>> {
        let request =
            adapter_request::Kind::ServerEvent(self.server_event_request(event, Some(timeout)));
        let replies = self.ask_all(request, timeout + ACK_REPORT_GRACE);
        Box::pin(async move {
            replies
                .map(|reply| match reply? {
                    adapter_reply::Kind::ServerEvent(reply) => {
                        match (reply.acknowledged, reply.timed_out) {
                            (true, _) => values_from_pb(reply.args).ok_or(AckError::Unanswered),
                            (false, true) => Err(AckError::Timeout),
                            (false, false) => Err(AckError::Unanswered),
                        }
                    }
                    _ => Err(AckError::Disconnected),
                })
                .collect()
                .await
        })
    }

    fn changed(&self, change: SocketChange) {
        self.registry.record_as_owner(change_to_command(change));
    }

    fn checkpoint(&self, session: &str, nsp: &str, received: String) {
        self.send(tell::Kind::Checkpoint(Checkpoint {
            session: session.to_owned(),
            nsp: nsp.to_owned(),
            received,
        }));
    }

    fn adopt(&self, session: &str) -> BoxFuture<'static, Vec<AdoptedSocket>> {
        let mut received = self.checkpoints.take(session);
        let Some(record) = self.registry.session(session) else {
            return Box::pin(async { Vec::new() });
        };
        // A node that restarted since the session's checkpoints went out asks the others.
        let asked = (received.is_empty() && !record.namespaces.is_empty()).then(|| {
            let request = adapter_request::Kind::Checkpoints(CheckpointsRequest {
                session: session.to_owned(),
            });
            self.ask_all(request, PEER_DEADLINE)
        });
        Box::pin(async move {
            if let Some(mut replies) = asked {
                while let Some(reply) = replies.next().await {
                    if let Ok(adapter_reply::Kind::Checkpoints(reply)) = reply
                        && !reply.received.is_empty()
                    {
                        received = reply.received;
                        break;
                    }
                }
            }
            record
                .namespaces
                .into_iter()
                .map(|(nsp, socket)| AdoptedSocket {
                    received: received.remove(&nsp),
                    nsp,
                    id: socket.socket_id,
                    pid: socket.pid,
                    rooms: socket.rooms.into_iter().collect(),
                    data: Value::from(socket.data),
                })
                .collect()
        })
    }
}

/// The registry command that records a change of a socket.
fn change_to_command(change: SocketChange) -> Command {
    // The registry keeps JSON; binary in socket data is kept as arrays of byte values.
    let json = |data: &Value| serde_json::to_value(data).unwrap_or_default();
    match change {
        SocketChange::Joined {
            session,
            nsp,
            socket_id,
            pid,
            rooms,
            data,
        } => {
            let mut commands = vec![Command::JoinNamespace {
                sid: session.clone(),
                nsp: nsp.clone(),
                socket_id,
                pid,
            }];
            if !rooms.is_empty() {
                commands.push(Command::JoinRooms {
                    sid: session.clone(),
                    nsp: nsp.clone(),
                    rooms,
                });
            }
            if !data.is_null() {
                commands.push(Command::SetData {
                    sid: session,
                    nsp,
                    data: json(&data),
                });
            }
            match commands.len() {
                1 => commands.remove(0),
                _ => Command::Batch(commands),
            }
        }
        SocketChange::Left {
            session,
            nsp,
            saved: false,
        } => Command::LeaveNamespace { sid: session, nsp },
        SocketChange::Left {
            session,
            nsp,
            saved: true,
        } => Command::SaveSocket {
            sid: session,
            nsp,
            at_ms: registry::unix_millis(),
        },
        SocketChange::JoinedRooms {
            session,
            nsp,
            rooms,
        } => Command::JoinRooms {
            sid: session,
            nsp,
            rooms,
        },
        SocketChange::LeftRoom { session, nsp, room } => Command::LeaveRooms {
            sid: session,
            nsp,
            rooms: vec![room],
        },
        SocketChange::Data { session, nsp, data } => Command::SetData {
            sid: session,
            nsp,
            data: json(&data),
        },
    }
}
