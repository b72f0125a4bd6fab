//! The demo's cluster page at `/cluster`: the nodes, the Raft leader, the sessions each node
//! owns and the requests it forwards per second, live over Socket.IO itself. Every node sends
//! its own line once a second to the `/cluster` namespace of the demo's server; the emit is a
//! broadcast, so it reaches a page whichever node holds its socket, and the page keeps the
//! latest line of each node. Written against the public API only, like the rest of the demo.

use std::sync::Arc;
use std::time::Duration;

use axum::response::Html;
use axum::routing::get;
use axum::{Extension, Router};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::node::Observer;
use crate::socketio::{Socket, SocketIo};

/// The namespace the page's socket joins.
pub const NAMESPACE: &str = "/cluster";

/// How often each node sends its line.
const EVERY: Duration = Duration::from_secs(1);

const PAGE: &str = include_str!("../../web/cluster.html");

/// The namespace on `io`: a page that connects is told which node serves it.
pub fn register(io: &SocketIo, node_id: &str) {
    let node: Arc<str> = node_id.into();
    io.of(NAMESPACE).on_connect(move |socket: Socket| {
        let node = node.clone();
        async move {
            let _ = socket.emit("welcome", json!({ "node": &*node }));
        }
    });
}

/// `GET /cluster`, and this node's line sent every second for as long as the returned router
/// (or a clone of it) is served.
pub fn routes(observer: Observer, io: SocketIo) -> Router {
    let feed = Arc::new(Feed(tokio::spawn(feed(observer, io))));
    Router::new()
        .route("/cluster", get(|| async { Html(PAGE) }))
        .layer(Extension(feed))
}

/// The task sending this node's line; stopped when the last router holding it is dropped.
struct Feed(JoinHandle<()>);

impl Drop for Feed {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn feed(observer: Observer, io: SocketIo) {
    let mut ticks = tokio::time::interval(EVERY);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut last: Option<(Instant, u64)> = None;
    loop {
        ticks.tick().await;
        let status = observer.status();
        let now = Instant::now();
        let per_second = match last {
            Some((at, forwarded)) => {
                status.forwarded.saturating_sub(forwarded) as f64
                    / now.duration_since(at).as_secs_f64().max(0.001)
            }
            None => 0.0,
        };
        last = Some((now, status.forwarded));
        let members: Vec<_> = status
            .members
            .iter()
            .map(|(id, addr, voter)| json!({ "id": id, "addr": addr, "voter": voter }))
            .collect();
        let line = json!({
            "id": status.node_id,
            "leader": status.leader,
            "members": members,
            "sessions": status.sessions_owned,
            "polling": status.polling,
            "websocket": status.websocket,
            "forwarded_per_second": per_second,
        });
        // Volatile: a line a page missed is replaced by the next one, and none is kept for
        // connection state recovery.
        let _ = io.of(NAMESPACE).broadcast().volatile().emit("node", line);
    }
}
