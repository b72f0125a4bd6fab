//! Draining a cluster node before it stops: once it reports itself unhealthy (so balancers
//! stop sending it new clients) and refuses new sessions, it moves every polling session to the
//! other members — their clients notice nothing — then closes its websockets, whose clients
//! reconnect through the balancer and recover their sockets on another node. It keeps serving
//! a little longer: the balancers' health checks see it unhealthy and stop sending it requests
//! before its connections close (a POST cut with its connection is not sent again), and the
//! other nodes' recovery look-ups are answered.

use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;

use crate::engine::{CloseReason, Transport};
use crate::gateway::Gateway;
use crate::registry::NodeId;

/// Migrations in flight at once while draining.
const MOVES_AT_ONCE: usize = 16;

/// How long to wait between two rounds of moves (sessions that were busy, or new ones).
const ROUND_PAUSE: Duration = Duration::from_millis(100);

/// What a drain did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Polling sessions moved to other nodes.
    pub moved: usize,
    /// Polling sessions still here when the drain gave up on them (closed at shutdown).
    pub left: usize,
    /// Websocket sessions closed for their clients to reconnect elsewhere.
    pub closed: usize,
}

/// Move the polling sessions of `gateway`'s engines to the other `members` (taking turns),
/// round after round until none is left or `timeout` has passed; then close the websocket
/// sessions and go on serving for `linger`.
pub(super) async fn drain(
    gateway: &Gateway,
    members: &[NodeId],
    timeout: Duration,
    linger: Duration,
) -> DrainReport {
    let mut report = DrainReport::default();
    // Sessions opened here now would only have to move too.
    for (_, engine) in gateway.mounts() {
        engine.refuse_new_sessions();
    }
    let until = Instant::now() + timeout;
    let mut turn = 0usize;
    loop {
        let mut moves = Vec::new();
        for (path, engine) in gateway.mounts() {
            for sid in engine.sids(Transport::Polling) {
                if let Some(to) = members.get(turn % members.len().max(1)) {
                    moves.push((path.clone(), sid, *to));
                }
                turn += 1;
            }
        }
        let attempted = moves.len();
        let moved = futures::stream::iter(moves)
            .map(|(path, sid, to)| async move { gateway.migrate(&path, &sid, to).await.is_ok() })
            .buffer_unordered(MOVES_AT_ONCE)
            .filter(|moved| futures::future::ready(*moved))
            .count()
            .await;
        report.moved += moved;
        report.left = attempted - moved;
        if attempted == 0 || members.is_empty() || Instant::now() >= until {
            break;
        }
        tokio::time::sleep(ROUND_PAUSE).await;
    }
    for (_, engine) in gateway.mounts() {
        for sid in engine.sids(Transport::Websocket) {
            engine.close(&sid, CloseReason::ServerShutdown);
            report.closed += 1;
        }
    }
    tokio::time::sleep(linger).await;
    report
}
