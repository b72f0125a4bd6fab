//! A presence app of its own, run as one node of a nonstick cluster: clients connect with a
//! name, enter rooms and talk in them, and anyone can ask over plain HTTP who is in a room.
//! Which node a client's requests land on does not matter: rooms, broadcasts and the room
//! listing span the cluster.
//!
//! Socket.IO, namespace `/`, `auth: { name }` required:
//! - `enter` (room) → ack `{ node, members }`: the names in the room on every node; the others
//!   in the room get `entered { name, room }`.
//! - `say` (room, text) → everyone in the room, sender included, gets
//!   `said { name, room, text, node }`; ack `{ ok }`.
//! - on disconnect everyone gets `left { name }`.
//!
//! HTTP: `GET /rooms/{room}` → `{ node, members }`, from any node.
//!
//! One node: `cargo run --example cluster -- --listen 127.0.0.1:3000`. Three nodes behind
//! the embedded round-robin balancer:
//! `cargo build --example cluster && cargo run -- cluster --program target/debug/examples/cluster`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::{Json, Router, routing::get};
use clap::Parser;
use nonstick::NodeArgs;
use nonstick::socketio::{BroadcastOperator, ConnectError, Event, Socket, SocketIo, Value};
use serde_json::json;

#[derive(Parser)]
struct Cli {
    /// `--listen`, `--id`, `--grpc`, `--peers`, `--data-dir`, `--config`, … as `nonstick node`
    /// takes them.
    #[command(flatten)]
    node: NodeArgs,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let builder = Cli::parse().node.builder()?;
    let node_id: Arc<str> = builder.config().node_id.as_str().into();

    // Socket.IO settings (connect timeout, recovery, ...) come from the same flags, file and
    // environment as the node's.
    let io = SocketIo::new(builder.config().socketio.clone());
    let lobby = io.of("/");
    lobby.middleware(|socket: Socket| {
        let named = name_in(&socket.handshake().auth).is_some();
        async move {
            match named {
                true => Ok(()),
                false => Err(ConnectError::new("a name is required")),
            }
        }
    });
    let node = node_id.clone();
    lobby.on_connect(move |socket| on_connect(socket, node.clone()));

    let node = builder.socketio(io.clone()).build().await?;
    let app = Router::new()
        .route("/rooms/{room}", get(room))
        .with_state((io, node_id))
        .merge(node.router());
    node.serve(app).await
}

async fn on_connect(socket: Socket, node: Arc<str>) {
    socket.set_data(json!({ "name": name_in(&socket.handshake().auth) }));
    let here = node.clone();
    socket.on("enter", move |socket, event: Event| {
        let node = here.clone();
        async move {
            let Some(room) = event.arg(0).and_then(Value::as_str) else {
                return;
            };
            socket.join(room);
            let entered = json!({ "name": name_in(&socket.data()), "room": room });
            let _ = socket.to(room).emit("entered", entered);
            let members = members(socket.namespace().to(room)).await;
            if let Some(ack) = event.ack {
                ack.send(json!({ "node": &*node, "members": members }));
            }
        }
    });
    socket.on("say", move |socket, event: Event| {
        let node = node.clone();
        async move {
            let room = event.arg(0).and_then(Value::as_str).unwrap_or_default();
            let text = event.arg(1).and_then(Value::as_str).unwrap_or_default();
            let said = json!({
                "name": name_in(&socket.data()), "room": room, "text": text, "node": &*node,
            });
            let sent = socket.namespace().to(room).emit("said", said);
            if let Some(ack) = event.ack {
                ack.send(json!({ "ok": sent.is_ok() }));
            }
        }
    });
    socket.on_disconnect(|socket, _reason| async move {
        let left = json!({ "name": name_in(&socket.data()) });
        let _ = socket.namespace().emit("left", left);
    });
}

/// `GET /rooms/{room}`: who is in the room, on every node.
async fn room(
    State((io, node)): State<(SocketIo, Arc<str>)>,
    Path(room): Path<String>,
) -> Json<serde_json::Value> {
    let members = members(io.of("/").to(room)).await;
    Json(json!({ "node": &*node, "members": members }))
}

/// The sorted names of the sockets a broadcast would reach, on every node.
async fn members(sockets: BroadcastOperator) -> Vec<String> {
    let sockets = sockets.fetch_sockets().await;
    let mut names: Vec<String> = sockets.iter().filter_map(|s| name_in(s.data())).collect();
    names.sort();
    names
}

/// The `name` of an `auth` object or of a socket's data: 1 to 32 characters.
fn name_in(value: &Value) -> Option<String> {
    let name = value.get("name").and_then(Value::as_str)?;
    let length = name.chars().count();
    (1..=32).contains(&length).then(|| name.to_owned())
}
