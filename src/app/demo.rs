//! The demo app of the app contract: the events every test, benchmark and outside checker
//! drives. Written only against the public API, as a user of the library would write it.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::socketio::{ConnectError, Event, Namespace, Socket, SocketIo, Value};

/// Settings of the demo app.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The id this node reports in `welcome` and in room answers.
    pub node_id: String,
    /// The `auth.token` that `/admin` requires.
    pub admin_token: String,
    /// How long `server-ack` waits for the client's acknowledgement.
    pub client_ack_timeout: Duration,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            node_id: "1".to_owned(),
            admin_token: "secret".to_owned(),
            client_ack_timeout: Duration::from_secs(10),
        }
    }
}

/// Register the demo namespaces `/` and `/admin` on `io`. Other namespaces stay unknown, so
/// their CONNECT is refused with "Invalid namespace".
pub fn register(io: &SocketIo, options: &DemoOptions) {
    serve_events(&io.of("/"), options);
    let admin = io.of("/admin");
    let token = options.admin_token.clone();
    admin.middleware(move |socket: Socket| {
        let allowed =
            socket.handshake().auth.get("token").and_then(Value::as_str) == Some(token.as_str());
        async move {
            if allowed {
                Ok(())
            } else {
                Err(ConnectError::new("unauthorized"))
            }
        }
    });
    serve_events(&admin, options);
}

fn serve_events(ns: &Namespace, options: &DemoOptions) {
    // Shared, not copied: the handlers of every socket hold it.
    let options = Arc::new(options.clone());
    ns.on_connect(move |socket: Socket| {
        let options = Arc::clone(&options);
        async move {
            let node = options.node_id.as_str();
            let _ = socket.emit("welcome", json!({ "sid": socket.id(), "node": node }));
            on_events(&socket, &options);
        }
    });
}

fn on_events(socket: &Socket, options: &Arc<DemoOptions>) {
    socket.on("echo", |socket, event: Event| async move {
        match event.ack {
            Some(ack) => ack.send(event.args),
            None => {
                let _ = socket.emit("echo", event.args);
            }
        }
    });

    for (name, joining) in [("join", true), ("leave", false)] {
        let options = Arc::clone(options);
        socket.on(name, move |socket, event: Event| {
            let options = Arc::clone(&options);
            async move {
                if let Some(room) = event.arg(0).and_then(Value::as_str) {
                    if joining {
                        socket.join(room);
                    } else {
                        socket.leave(room);
                    }
                }
                if let Some(ack) = event.ack {
                    ack.send(room_state(&socket, &options.node_id));
                }
            }
        });
    }

    let shared = Arc::clone(options);
    socket.on("whoami", move |socket, event: Event| {
        let state = room_state(&socket, &shared.node_id);
        async move {
            if let Some(ack) = event.ack {
                ack.send(state);
            }
        }
    });

    socket.on("to-room", |socket, event: Event| async move {
        let result = to_room(&socket, event.arg(0));
        reply_ok(event.ack, result);
    });

    socket.on("broadcast", |socket, event: Event| async move {
        let result = match event.arg(0) {
            Some(body) => match body.get("room").and_then(Value::as_str) {
                Some(room) => socket
                    .namespace()
                    .to(room)
                    .emit("broadcast", body.clone())
                    .map_err(|e| e.to_string()),
                None => Err("missing room".to_owned()),
            },
            None => Err("missing payload".to_owned()),
        };
        reply_ok(event.ack, result);
    });

    socket.on("broadcast-all", |socket, event: Event| async move {
        let data = event.arg(0).cloned().unwrap_or(Value::Null);
        let result = socket
            .namespace()
            .emit("broadcast-all", data)
            .map_err(|e| e.to_string());
        reply_ok(event.ack, result);
    });

    let wait = options.client_ack_timeout;
    socket.on("server-ack", move |socket, event: Event| async move {
        let reply = socket
            .emit_with_ack("ping-client", event.args)
            .timeout(wait)
            .await;
        if let Some(ack) = event.ack {
            match reply {
                Ok(args) => ack.send(args),
                Err(error) => ack.send(json!({ "error": error.to_string() })),
            }
        }
    });

    socket.on("disconnect-me", |socket, _event: Event| async move {
        socket.disconnect();
    });

    socket.on("close-transport", |socket, _event: Event| async move {
        socket.close_transport();
    });
}

/// `{node, rooms}`: the socket's rooms, sorted, without its own id.
fn room_state(socket: &Socket, node: &str) -> serde_json::Value {
    let rooms: Vec<String> = socket
        .rooms()
        .into_iter()
        .filter(|room| room != socket.id())
        .collect();
    json!({ "node": node, "rooms": rooms })
}

fn to_room(socket: &Socket, body: Option<&Value>) -> Result<(), String> {
    let body = body.ok_or("missing payload")?;
    let room = body
        .get("room")
        .and_then(Value::as_str)
        .ok_or("`room` must be a string")?;
    let name = body
        .get("event")
        .and_then(Value::as_str)
        .filter(|e| !e.is_empty())
        .ok_or("`event` must be a non-empty string")?;
    let data = body.get("data").cloned().unwrap_or(Value::Null);
    socket.to(room).emit(name, data).map_err(|e| e.to_string())
}

fn reply_ok(ack: Option<crate::socketio::Ack>, result: Result<(), String>) {
    if let Some(ack) = ack {
        ack.send(match result {
            Ok(()) => json!({ "ok": true }),
            Err(error) => json!({ "ok": false, "error": error }),
        });
    }
}
