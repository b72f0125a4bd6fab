//! Settings of the Socket.IO layer (the Engine.IO settings live in the engine's config).

use std::time::Duration;

/// Settings of a [`SocketIo`](super::SocketIo) server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketIoConfig {
    /// How long a new Engine.IO session may stay without joining any namespace before it is
    /// closed. Reference default: 45 s.
    pub connect_timeout: Duration,
    /// Most binary attachments one packet may announce. Reference default: 10.
    pub max_attachments: usize,
    /// How long [`Socket::emit_with_ack`](super::Socket::emit_with_ack) waits when no timeout is
    /// given.
    pub ack_timeout: Duration,
    /// Connection state recovery; `None` turns it off.
    pub recovery: Option<RecoveryConfig>,
    /// Most namespaces one connection may join; a CONNECT past it is refused with
    /// CONNECT_ERROR `Too many namespaces`.
    pub max_namespaces: usize,
    /// Most rooms one socket may be in (its own room aside); a join past it is not made.
    pub max_rooms: usize,
    /// How packets are written on the wire; the clients must use the same.
    pub parser: Parser,
}

/// How Socket.IO packets are written on the wire. Nothing in the protocol says which one a
/// client uses: a server and its clients are set up alike.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Parser {
    /// Socket.IO's own: JSON text, binary as attachments (`socket.io-parser`).
    #[default]
    Default,
    /// `socket.io-msgpack-parser`: each packet one msgpack binary message.
    Msgpack,
}

impl Default for SocketIoConfig {
    fn default() -> Self {
        SocketIoConfig {
            connect_timeout: Duration::from_secs(45),
            max_attachments: 10,
            ack_timeout: Duration::from_secs(10),
            recovery: None,
            max_namespaces: 100,
            max_rooms: 1000,
            parser: Parser::Default,
        }
    }
}

/// Connection state recovery: a client that lost its connection gets its socket id, rooms and
/// data back, plus the events it missed, if it returns within `max_disconnection_duration`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryConfig {
    /// How long a disconnected socket's state and the packets sent since are kept.
    /// Reference default: 2 minutes.
    pub max_disconnection_duration: Duration,
    /// Skip the namespace middleware for a recovered socket (reference default: true).
    pub skip_middlewares: bool,
    /// Most packets kept per namespace for replay; the oldest are dropped first, and a client
    /// whose offset has been dropped gets a fresh session instead of a partial replay.
    pub max_packets: usize,
    /// Most disconnected sessions kept per namespace; the oldest are dropped first.
    pub max_sessions: usize,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        RecoveryConfig {
            max_disconnection_duration: Duration::from_secs(120),
            skip_middlewares: true,
            max_packets: 100_000,
            max_sessions: 100_000,
        }
    }
}
