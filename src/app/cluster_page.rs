//! The demo's cluster page at `/cluster`: the nodes, the Raft leader, the sessions each node
//! owns and the requests it forwards per second, live over Socket.IO itself. Once a second, a
//! node that has pages connected to its `/cluster` namespace asks the other nodes for their
//! status lines (a server-side emit with acks) and sends every line to its own pages; a node
//! with no page watching sends nothing. Written against the public API only, like the rest of
//! the demo.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::response::Html;
use axum::routing::get;
use axum::{Extension, Router};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::node::Observer;
use crate::socketio::{Event, Socket, SocketIo, Value};

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

/// `GET /cluster`, and this node's part in the page's feed (answering the other nodes, sending
/// lines to its own pages) for as long as the returned router (or a clone of it) is served.
pub fn routes(observer: Observer, io: SocketIo) -> Router {
    let lines = Arc::new(Lines::new(observer));
    let answering = lines.clone();
    io.of(NAMESPACE)
        .on_server_event(STATUS, move |event: Event| {
            let line = answering.line();
            async move {
                if let Some(ack) = event.ack {
                    ack.send(Value::from(line));
                }
            }
        });
    let feed = Arc::new(Feed(tokio::spawn(feed(lines, io))));
    Router::new()
        .route("/cluster", get(|| async { Html(PAGE) }))
        .layer(Extension(feed))
}

/// The server-side event that asks a node for its line.
const STATUS: &str = "cluster-status";

/// The task sending lines to this node's pages; stopped when the last router holding it is
/// dropped.
struct Feed(JoinHandle<()>);

impl Drop for Feed {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn feed(lines: Arc<Lines>, io: SocketIo) {
    let mut ticks = tokio::time::interval(EVERY);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let pages = io.of(NAMESPACE);
    loop {
        ticks.tick().await;
        if pages.sockets().is_empty() {
            continue;
        }
        let mut all = vec![lines.line()];
        for answer in pages.server_side_emit_with_ack(STATUS, (), EVERY).await {
            if let Ok(mut args) = answer
                && let Some(line) = args.pop()
            {
                all.push(line.to_json().unwrap_or_default());
            }
        }
        for line in all {
            let _ = pages.broadcast().local().emit("node", Value::from(line));
        }
    }
}

/// A node's status lines, with what its forwarded-requests rate is measured against.
struct Lines {
    observer: Observer,
    last: Mutex<Option<(Instant, u64)>>,
}

impl Lines {
    fn new(observer: Observer) -> Lines {
        Lines {
            observer,
            last: Mutex::new(None),
        }
    }

    /// This node's line now.
    fn line(&self) -> serde_json::Value {
        let status = self.observer.status();
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let per_second = match *last {
            Some((at, forwarded)) => {
                status.forwarded.saturating_sub(forwarded) as f64
                    / now.duration_since(at).as_secs_f64().max(0.001)
            }
            None => 0.0,
        };
        *last = Some((now, status.forwarded));
        let members: Vec<_> = status
            .members
            .iter()
            .map(|(id, addr, voter)| json!({ "id": id, "addr": addr, "voter": voter }))
            .collect();
        json!({
            "id": status.node_id,
            "leader": status.leader,
            "members": members,
            "sessions": status.sessions_owned,
            "polling": status.polling,
            "websocket": status.websocket,
            "forwarded_per_second": per_second,
        })
    }
}
