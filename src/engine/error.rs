//! Every way an Engine.IO request can fail, with its protocol error code and HTTP status.

/// A refused Engine.IO request. The HTTP front turns it into a response in one place;
/// a peer forwarding a request carries it as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// `transport` missing or not enabled (code 0).
    #[error("Transport unknown")]
    UnknownTransport,
    /// No live session with that sid (code 1).
    #[error("Session ID unknown")]
    UnknownSid,
    /// A handshake with a method other than GET (code 2).
    #[error("Bad handshake method")]
    BadHandshakeMethod,
    /// A malformed request: bad `Origin`, websocket handshake without an upgrade, a
    /// request of the wrong transport for the session (code 3).
    #[error("Bad request")]
    BadRequest,
    /// A request for a session that is now carried by another transport (code 3).
    #[error("Bad request")]
    TransportMismatch,
    /// A second long-poll while one is parked; the session is closed (code 3).
    #[error("Bad request")]
    DuplicatePoll,
    /// A second POST while one is in progress; the session is closed (code 3).
    #[error("Bad request")]
    ConcurrentPost,
    /// The body held an invalid packet; the session is closed (code 3).
    #[error("Bad request")]
    BadPacket,
    /// A POST whose body is declared as `application/octet-stream`, which Engine.IO v4
    /// clients never send; the session is closed (code 3).
    #[error("Bad request")]
    BinaryBody,
    /// The handshake was refused, e.g. the session limit is reached (code 4, HTTP 403).
    #[error("Forbidden")]
    Forbidden,
    /// The server takes no new session now: it is draining (its sessions move to other
    /// nodes), so the client should open one elsewhere (code 4, HTTP 503, which balancers
    /// retry on another backend).
    #[error("Server unavailable: not taking new sessions")]
    Unavailable,
    /// `EIO` is not `4` (code 5).
    #[error("Unsupported protocol version")]
    UnsupportedProtocolVersion,
    /// The body is larger than `maxHttpBufferSize` (HTTP 413, no code).
    #[error("Payload too large")]
    PayloadTooLarge,
}

impl EngineError {
    /// The Engine.IO error code of the JSON body, `None` for 413.
    pub fn code(&self) -> Option<u8> {
        Some(match self {
            EngineError::UnknownTransport => 0,
            EngineError::UnknownSid => 1,
            EngineError::BadHandshakeMethod => 2,
            EngineError::BadRequest
            | EngineError::TransportMismatch
            | EngineError::DuplicatePoll
            | EngineError::ConcurrentPost
            | EngineError::BadPacket
            | EngineError::BinaryBody => 3,
            EngineError::Forbidden | EngineError::Unavailable => 4,
            EngineError::UnsupportedProtocolVersion => 5,
            EngineError::PayloadTooLarge => return None,
        })
    }

    /// The HTTP status of the reply.
    pub fn status(&self) -> u16 {
        match self {
            EngineError::Forbidden => 403,
            EngineError::Unavailable => 503,
            EngineError::PayloadTooLarge => 413,
            _ => 400,
        }
    }
}

/// Why a session could not move ([`crate::engine::Engine::move_out`],
/// [`crate::engine::Engine::move_in`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoveError {
    /// No live session with that sid here.
    #[error("no live session with that sid")]
    UnknownSid,
    /// A POST is being delivered to the session, or its application is in the middle of
    /// something it cannot hand over (a Socket.IO namespace connection): try again shortly.
    #[error("the session is busy (a POST or a namespace connection in progress)")]
    Busy,
    /// The session is carried by a websocket, or upgrading to one: only polling sessions move.
    #[error("the session is on a websocket or upgrading")]
    NotPolling,
    /// `move_in`: a session with that sid is already here.
    #[error("a session with that sid is already here")]
    Exists,
    /// `move_in`: the session limit is reached, or the session's queue exceeds this engine's
    /// bounds.
    #[error("no room for the session")]
    Full,
}
