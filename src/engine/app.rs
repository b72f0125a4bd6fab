//! The seam between the engine and whatever speaks on top of it (Socket.IO, or a raw
//! Engine.IO application such as the protocol-suite echo).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;

use super::session::Session;

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
    /// The session moved to another node ([`crate::engine::Engine::move_out`]). The
    /// application is told by [`SessionHandler::on_move`], not `on_close`: the session lives on.
    Moved,
}

impl CloseReason {
    /// A stable snake_case name, for logs and metrics labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            CloseReason::TransportClose => "transport_close",
            CloseReason::TransportError => "transport_error",
            CloseReason::PingTimeout => "ping_timeout",
            CloseReason::ParseError => "parse_error",
            CloseReason::ServerClose => "server_close",
            CloseReason::ServerShutdown => "server_shutdown",
            CloseReason::QueueOverflow => "queue_overflow",
            CloseReason::Moved => "moved",
        }
    }
}

/// Why a message could not be queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The session is closed.
    #[error("session closed")]
    Closed,
    /// The outbound queue was full; the session has been closed with
    /// [`CloseReason::QueueOverflow`].
    #[error("outbound queue full")]
    QueueFull,
}

/// The transport currently carrying a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// HTTP long-polling.
    Polling,
    /// WebSocket.
    Websocket,
}

impl Transport {
    /// The name used in the `transport` query parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Polling => "polling",
            Transport::Websocket => "websocket",
        }
    }

    /// Parses the `transport` query parameter.
    pub fn parse(name: &str) -> Option<Transport> {
        match name {
            "polling" => Some(Transport::Polling),
            "websocket" => Some(Transport::Websocket),
            _ => None,
        }
    }
}

/// What the application may know about the request that opened a session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HandshakeInfo {
    /// Query pairs of the opening request, in order, percent-decoded.
    pub query: Vec<(String, String)>,
    /// Request headers of the opening request (names lower-case, values lossily UTF-8).
    pub headers: Vec<(String, String)>,
    /// The peer address of the opening request, when known.
    pub remote_addr: Option<SocketAddr>,
}

impl HandshakeInfo {
    /// The first value of a query parameter.
    pub fn query_value(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Handle to one live Engine.IO session, given to the application.
///
/// Cheap to clone. Sending never blocks: messages go to the session's bounded queue and
/// are written by whichever transport currently carries the session.
#[derive(Clone)]
pub struct Connection {
    pub(super) session: Arc<Session>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("sid", &self.sid())
            .finish()
    }
}

impl Connection {
    /// The Engine.IO session id.
    pub fn sid(&self) -> &str {
        &self.session.sid
    }

    /// Queues one message. Never blocks. Fails when the session is closed, or when the
    /// queue is full (the session is then closed with [`CloseReason::QueueOverflow`]).
    pub fn send(&self, msg: Message) -> Result<(), SendError> {
        self.session.send(vec![msg])
    }

    /// Queues several messages contiguously (a Socket.IO binary packet is one text
    /// message followed by its attachments): either all are queued or none.
    pub fn send_all(&self, msgs: Vec<Message>) -> Result<(), SendError> {
        self.session.send(msgs)
    }

    /// Closes the session from the server side. Messages already queued are still
    /// delivered when the transport allows it; `on_close` follows once.
    pub fn close(&self, reason: CloseReason) {
        self.session.close(reason);
    }

    /// Whether a transport could take a message right now: a long-poll is parked, or
    /// a websocket carries the session. Meant for volatile messages.
    pub fn is_writable(&self) -> bool {
        self.session.is_writable()
    }

    /// Whether the session is closed.
    pub fn is_closed(&self) -> bool {
        self.session.is_closed()
    }

    /// The transport currently carrying the session.
    pub fn transport(&self) -> Transport {
        self.session.transport()
    }

    /// The opening request: query pairs, headers, remote address.
    pub fn handshake(&self) -> &HandshakeInfo {
        &self.session.handshake
    }
}

/// What runs on top of the engine.
pub trait Application: Send + Sync + 'static {
    /// Whether a handshake may open a session (the reference's `allowRequest`). A refusal is
    /// answered with HTTP 403, Engine.IO error code 4. Accepts everything by default.
    fn allow_request(&self, request: &HandshakeInfo) -> bool {
        let _ = request;
        true
    }

    /// A session was opened. Returns the handler for its messages.
    fn on_open(&self, conn: Connection) -> Arc<dyn SessionHandler>;

    /// A session moved here from another node ([`crate::engine::Engine::move_in`]), with
    /// the state its handler there gave up ([`SessionHandler::on_move`]). Returns the handler
    /// for its messages. By default the session starts afresh, as if just opened.
    fn on_move_in(&self, conn: Connection, state: Option<Vec<u8>>) -> Arc<dyn SessionHandler> {
        let _ = state;
        self.on_open(conn)
    }

    /// The state to resume session `sid` with ([`Application::on_move_in`]) when this node
    /// takes it over from a node that was lost, gathered from what the cluster kept of it.
    /// Nothing by default.
    fn adoption(&self, sid: &str) -> BoxFuture<'static, Option<Vec<u8>>> {
        let _ = sid;
        Box::pin(async { None })
    }
}

/// Per-session callbacks. Called in packet order, never concurrently for one session.
pub trait SessionHandler: Send + Sync + 'static {
    /// A message arrived from the client.
    fn on_message(&self, msg: Message);
    /// The session moved from long-polling to its websocket (an upgrade completed). Nothing
    /// by default.
    fn on_upgrade(&self) {}
    /// A long-poll GET arrived: the client has received whatever the previous GET carried
    /// (it polls again only once it has). Nothing by default.
    fn on_poll(&self) {}
    /// The session ended. Called exactly once, unless the session moved.
    fn on_close(&self, reason: CloseReason);
    /// The session leaves this node for another ([`crate::engine::Engine::move_out`]):
    /// called instead of `on_close`, exactly once, with no message being delivered. Returns
    /// what the application needs to resume the session there ([`Application::on_move_in`]).
    /// Nothing by default.
    fn on_move(&self) -> Option<Vec<u8>> {
        None
    }
    /// Whether the session may move now. While this says no (the application is in the middle
    /// of something it cannot hand over), a move is refused as busy. Yes by default.
    fn movable(&self) -> bool {
        true
    }
}
