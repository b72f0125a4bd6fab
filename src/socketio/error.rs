//! Errors of the Socket.IO layer, and the reasons a socket disconnects.

use crate::protocol::value::Value;

/// A refusal of a namespace CONNECT, sent to the client as CONNECT_ERROR
/// `{"message": …, "data": …}`. Returned by namespace middleware.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("connection refused: {message}")]
pub struct ConnectError {
    /// The `message` field the client sees in `connect_error`.
    pub message: String,
    /// Optional `data` field.
    pub data: Option<Value>,
}

impl ConnectError {
    /// A refusal with only a message.
    pub fn new(message: impl Into<String>) -> Self {
        ConnectError {
            message: message.into(),
            data: None,
        }
    }

    /// Attach a `data` payload to the refusal.
    pub fn with_data(mut self, data: impl Into<Value>) -> Self {
        self.data = Some(data.into());
        self
    }
}

/// Why an emit could not be queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmitError {
    /// The socket is disconnected (or its Engine.IO session is closed).
    #[error("socket disconnected")]
    Disconnected,
    /// The event name is reserved by Socket.IO (`connect`, `disconnect`, …).
    #[error("reserved event name: {0}")]
    ReservedEvent(String),
}

/// Why an acknowledgement did not arrive.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// No acknowledgement within the timeout.
    #[error("acknowledgement timed out")]
    Timeout,
    /// The socket disconnected before acknowledging (or, for a server-side emit, the other
    /// server could not be reached).
    #[error("socket disconnected before acknowledging")]
    Disconnected,
    /// The socket moved to another node before acknowledging: the answer goes there, where
    /// nobody waits for it.
    #[error("socket moved to another node before acknowledging")]
    Moved,
    /// The other server of a server-side emit has no handler for the event, or its handler
    /// dropped the acknowledgement unanswered.
    #[error("the other server did not acknowledge")]
    Unanswered,
    /// The packet could not be sent.
    #[error(transparent)]
    Emit(#[from] EmitError),
}

/// Why a socket left its namespace, with the reason strings of the reference server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The client sent a DISCONNECT for this namespace.
    ClientNamespaceDisconnect,
    /// The server called [`Socket::disconnect`](super::Socket::disconnect).
    ServerNamespaceDisconnect,
    /// The client closed the Engine.IO connection.
    TransportClose,
    /// The transport failed (aborted long-poll, broken websocket).
    TransportError,
    /// The client stopped answering pings.
    PingTimeout,
    /// The client sent an invalid packet.
    ParseError,
    /// The server closed the Engine.IO connection.
    ForcedClose,
    /// The server is shutting down.
    ServerShuttingDown,
}

impl DisconnectReason {
    /// The reason string the reference server reports.
    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::ClientNamespaceDisconnect => "client namespace disconnect",
            DisconnectReason::ServerNamespaceDisconnect => "server namespace disconnect",
            DisconnectReason::TransportClose => "transport close",
            DisconnectReason::TransportError => "transport error",
            DisconnectReason::PingTimeout => "ping timeout",
            DisconnectReason::ParseError => "parse error",
            DisconnectReason::ForcedClose => "forced close",
            DisconnectReason::ServerShuttingDown => "server shutting down",
        }
    }

    /// Whether the client may come back and recover this socket's state: every reason but a
    /// deliberate namespace disconnect and a protocol violation.
    pub fn is_recoverable(self) -> bool {
        !matches!(
            self,
            DisconnectReason::ClientNamespaceDisconnect
                | DisconnectReason::ServerNamespaceDisconnect
                | DisconnectReason::ParseError
        )
    }
}

impl std::fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&crate::engine::CloseReason> for DisconnectReason {
    fn from(reason: &crate::engine::CloseReason) -> Self {
        use crate::engine::CloseReason;
        match reason {
            CloseReason::TransportClose => DisconnectReason::TransportClose,
            CloseReason::TransportError | CloseReason::QueueOverflow => {
                DisconnectReason::TransportError
            }
            CloseReason::PingTimeout => DisconnectReason::PingTimeout,
            CloseReason::ParseError => DisconnectReason::ParseError,
            CloseReason::ServerClose => DisconnectReason::ForcedClose,
            CloseReason::ServerShutdown => DisconnectReason::ServerShuttingDown,
            // A moved session's sockets are handed over, never disconnected (`on_move`, not
            // `on_close`); the transport they had here is what ended.
            CloseReason::Moved => DisconnectReason::TransportClose,
        }
    }
}
