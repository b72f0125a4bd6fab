//! Keeping a cluster node from serving a session the cluster may have given to another.
//!
//! A node serves only while the registry says it holds its lease (it hears the Raft
//! majority, see `registry::lease`); the other members take over its sessions only after the
//! lease has surely lapsed. When it lapses, the node lets go of its clients: websockets are
//! closed (their clients reconnect through the balancer and recover their sockets on a node
//! that serves) and parked long-polls are answered, so that their clients poll again through
//! another node; every request it gets is refused with 503 until it serves again. Once it
//! hears the majority again, it catches up with what was committed meanwhile, drops the
//! polling sessions that were taken over, and takes back those still recorded as its own
//! (an earlier process's, when it just started) before it serves again.

use std::time::Duration;

use super::Gateway;
use crate::engine::{CloseReason, Transport};
use crate::registry::{Command, Response, unix_millis};

/// How often the lease is looked at, and a catch-up tried again.
const WATCH_EVERY: Duration = Duration::from_millis(100);

impl Gateway {
    /// Whether this node serves its clients now: a single node always does; a cluster node
    /// while it holds its lease.
    pub fn serving(&self) -> bool {
        self.inner
            .cluster
            .as_ref()
            .is_none_or(|c| c.registry.has_lease())
    }

    /// Whether this process has taken back what an earlier one left in the registry (always,
    /// on a single node): until then it is not healthy.
    pub fn reclaimed(&self) -> bool {
        self.inner
            .cluster
            .as_ref()
            .is_none_or(|c| *c.reclaimed.borrow())
    }

    /// Takes back what an earlier process of this node left in the registry, then watches
    /// the lease for as long as the node runs: lets go of the clients when it lapses, catches
    /// up before serving again.
    pub(crate) async fn keep_fenced(self) {
        let Some(cluster) = &self.inner.cluster else {
            return;
        };
        while !self.take_back().await {
            tokio::time::sleep(WATCH_EVERY * 5).await;
        }
        let registry = &cluster.registry;
        let mut let_go = false;
        loop {
            if registry.has_lease() {
                let_go = false;
                tokio::time::sleep(WATCH_EVERY).await;
                continue;
            }
            if !let_go {
                self.let_go();
                let_go = true;
            }
            match registry.catch_up().await {
                Ok(Some(lapse)) => {
                    if self.take_back().await {
                        registry.renew_lease(lapse);
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(%e, "lease not renewed yet"),
            }
            tokio::time::sleep(WATCH_EVERY).await;
        }
    }

    /// The lease lapsed: websockets closed (recoverable: their sockets are saved), parked
    /// long-polls answered.
    fn let_go(&self) {
        tracing::warn!("cut off from the cluster majority: not serving until it is heard again");
        for (_, engine) in self.mounts() {
            for sid in engine.sids(Transport::Websocket) {
                engine.close(&sid, CloseReason::ServerShutdown);
            }
            engine.release_polls();
        }
    }

    /// Caught up: the polling sessions the cluster gave to other nodes meanwhile are dropped
    /// here (their new owners serve them); the sessions still recorded as this node's are
    /// taken over by this process ([`Command::TakeOver`] to itself: an earlier process's
    /// start afresh from the registry on their next request). False if the take-over could
    /// not be committed.
    async fn take_back(&self) -> bool {
        let Some(cluster) = &self.inner.cluster else {
            return true;
        };
        for (_, engine) in self.mounts() {
            for sid in engine.sids(Transport::Polling) {
                let owner = cluster.registry.owner(&sid);
                if owner.is_some_and(|owner| owner != cluster.node) {
                    // Taken out as if moved, without a word to the cluster: the socket
                    // lives on at its new owner.
                    let _ = engine.move_out(&sid).await;
                    tracing::info!(sid, ?owner, "dropped a session taken over meanwhile");
                }
            }
        }
        let take = Command::TakeOver {
            node: cluster.node,
            to: vec![cluster.node],
            at_ms: unix_millis(),
        };
        match cluster.registry.write(take).await {
            Ok(Response::TakenOver { moved, deleted }) => {
                if moved + deleted > 0 {
                    tracing::warn!(
                        moved,
                        deleted,
                        "took back the sessions recorded as this node's"
                    );
                }
                cluster.reclaimed.send_replace(true);
                true
            }
            Ok(other) => {
                tracing::warn!(?other, "unexpected answer to a take-over");
                false
            }
            Err(e) => {
                tracing::debug!(%e, "sessions recorded as this node's not taken back yet");
                false
            }
        }
    }
}
