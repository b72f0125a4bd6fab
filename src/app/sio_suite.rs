//! The Socket.IO application the official Socket.IO v5 test suite expects at `/socket.io/`.

use crate::socketio::{Event, SocketIo};

/// `/` emits `auth` with the CONNECT payload, answers `message` with `message-back` and
/// `message-with-ack` through the ack; `/custom` emits `auth` only. Nothing else exists.
pub fn register(io: &SocketIo) {
    io.of("/").on_connect(|socket| async move {
        let _ = socket.emit("auth", socket.handshake().auth.clone());
        socket.on("message", |socket, event: Event| async move {
            let _ = socket.emit("message-back", event.args);
        });
        socket.on("message-with-ack", |_socket, event: Event| async move {
            if let Some(ack) = event.ack {
                ack.send(event.args);
            }
        });
    });
    io.of("/custom").on_connect(|socket| async move {
        let _ = socket.emit("auth", socket.handshake().auth.clone());
    });
}
