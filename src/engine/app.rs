//! The seam between the engine and whatever speaks on top of it (Socket.IO, or a raw
//! Engine.IO application such as the protocol-suite echo).

use std::sync::Arc;

use bytes::Bytes;

/// One Engine.IO message payload, as the application sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message (packet type `4` with UTF-8 data).
    Text(String),
    /// A binary message.
    Binary(Bytes),
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent a close packet, or closed the websocket cleanly.
    TransportClose,
    /// The transport failed: an aborted long-poll, a broken websocket, a protocol violation.
    TransportError,
    /// The client did not answer a ping within `pingTimeout`.
    PingTimeout,
    /// The client sent something that is not a valid Engine.IO packet.
    ParseError,
    /// The server closed the session (application request).
    ServerClose,
    /// The process is shutting down.
    ServerShutdown,
    /// The outbound queue reached its configured bound.
    QueueOverflow,
}

/// Why a message could not be queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The session is closed.
    #[error("session closed")]
    Closed,
}

/// Handle to one live Engine.IO session, given to the application.
///
/// Cheap to clone. Sending never blocks: messages go to the session's bounded queue and
/// are written by whichever transport currently carries the session.
#[derive(Clone)]
pub struct Connection {
    // filled in by the engine implementation
}

/// What runs on top of the engine.
pub trait Application: Send + Sync + 'static {
    /// A session was opened. Returns the handler for its messages.
    fn on_open(&self, conn: Connection) -> Arc<dyn SessionHandler>;
}

/// Per-session callbacks. Called in packet order, never concurrently for one session.
pub trait SessionHandler: Send + Sync + 'static {
    /// A message arrived from the client.
    fn on_message(&self, msg: Message);
    /// The session ended. Called exactly once.
    fn on_close(&self, reason: CloseReason);
}
