//! The seam to other nodes. A cluster installs an [`Adapter`] that carries what a node does to
//! a selection of sockets (broadcasts, room changes, disconnects, listings, broadcasts with
//! acks, recovery look-ups) to its peers, and keeps the replicated record of this node's sockets
//! ([`SocketChange`]); each peer answers from its own sockets through the `*_local` methods of
//! [`SocketIo`](super::SocketIo).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::ack::AckResponse;
use super::args::Args;
use super::broadcast::BroadcastOperator;
use super::error::{AckError, EmitError};
use super::namespace::NamespaceInner;
use super::socket::Handshake;
use crate::engine::Transport;
use crate::protocol::sio::Encoded;
use crate::protocol::value::Value;

/// Sockets of one namespace: those in any of `rooms` (all if empty), minus those in any of
/// `except`. Socket ids count as rooms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// The namespace.
    pub nsp: String,
    /// Sockets in any of these rooms (all sockets of the namespace if empty).
    pub rooms: Vec<String>,
    /// Minus the sockets in any of these rooms.
    pub except: Vec<String>,
}

/// A broadcast on its way to (or from) another node: the packet as encoded for the client
/// (without recovery offset: each node adds its own), and which sockets it is for.
#[derive(Debug, Clone)]
pub struct RemoteBroadcast {
    /// The recipients.
    pub selection: Selection,
    /// The packet, already encoded.
    pub packet: Encoded,
    /// Drop it for sockets whose transport cannot take it right now.
    pub volatile: bool,
    /// Its number for connection state recovery (`origin-counter`), when the namespace keeps
    /// a log: the receiving node logs the packet for replay and gives it, as its last
    /// argument, the offset of its own log.
    pub stamp: Option<String>,
}

/// What to do to the selected sockets of another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteAction {
    /// Join this room.
    Join(String),
    /// Leave this room.
    Leave(String),
    /// Disconnect from the namespace; with `close`, close the whole Engine.IO connection.
    Disconnect {
        /// Close the connection instead of sending a DISCONNECT packet.
        close: bool,
    },
}

/// A broadcast with acks on its way to another node.
#[derive(Debug, Clone)]
pub struct RemoteAckRequest {
    /// The recipients.
    pub selection: Selection,
    /// The event name.
    pub event: String,
    /// Its arguments.
    pub args: Vec<Value>,
    /// Skip sockets whose transport cannot take the packet right now.
    pub volatile: bool,
    /// How long the receiving node waits for its sockets' answers.
    pub timeout: Duration,
}

/// An event from one server of a cluster to the others (a server-side emit).
#[derive(Debug, Clone)]
pub struct ServerEvent {
    /// The namespace whose handlers receive it.
    pub nsp: String,
    /// The event name.
    pub event: String,
    /// Its arguments.
    pub args: Vec<Value>,
}

/// A socket as any node can describe it: what [`BroadcastOperator::fetch_sockets`] lists.
#[derive(Debug, Clone)]
pub struct SocketDetails {
    /// The socket id.
    pub id: String,
    /// Its rooms, its own id included.
    pub rooms: BTreeSet<String>,
    /// Its application data.
    pub data: Value,
    /// What its client presented when it joined.
    pub handshake: Handshake,
    /// Its client: the first [`CLIENT_ID_CHARS`] characters of its Engine.IO session id (never
    /// all of it, which would let whoever reads a listing poll as that client).
    pub client: String,
    /// Its client's transport when listed.
    pub transport: Transport,
}

/// How much of a session id a listing shows (as much as the reference Admin UI shows).
pub const CLIENT_ID_CHARS: usize = 12;

/// The saved state of a disconnected socket, taken back from the cluster's record. What it
/// missed is replayed from the log of the node its client came back to.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// The socket id.
    pub sid: String,
    /// Its rooms other than its own.
    pub rooms: Vec<String>,
    /// Its application data.
    pub data: Value,
    /// It was still recorded as connected (its node had not seen the connection go, or is
    /// gone): that stale socket is to be disconnected before this one joins.
    pub was_connected: bool,
}

/// What a returning client missed, replayed from another node's log.
#[derive(Debug, Clone)]
pub struct Replayed {
    /// The logged packets it missed, encoded, with their offsets.
    pub missed: Vec<Encoded>,
    /// That node's log position when it answered (a recovery offset): the packets it
    /// covers are in `missed` or were seen by the client.
    pub position: String,
}

/// A socket of a session this node takes over from a node that was lost, as the cluster
/// recorded it.
#[derive(Debug, Clone)]
pub struct AdoptedSocket {
    /// The namespace.
    pub nsp: String,
    /// The socket id.
    pub id: String,
    /// Its private id for connection state recovery.
    pub pid: Option<String>,
    /// Its rooms other than its own.
    pub rooms: Vec<String>,
    /// Its application data.
    pub data: Value,
    /// The recovery offset its client was last known to have received (a checkpoint).
    pub received: Option<String>,
}

/// A change of one of this node's sockets that the cluster keeps a replicated record of. A
/// socket is named by its Engine.IO session and its namespace (a session has at most one
/// socket per namespace).
#[derive(Debug, Clone, PartialEq)]
pub enum SocketChange {
    /// The session joined the namespace (new, or recovered with these rooms and data).
    Joined {
        /// The Engine.IO session id.
        session: String,
        /// The namespace.
        nsp: String,
        /// The socket id.
        socket_id: String,
        /// Its private id for connection state recovery.
        pid: Option<String>,
        /// Its rooms other than its own.
        rooms: Vec<String>,
        /// Its application data.
        data: Value,
    },
    /// The socket left the namespace.
    Left {
        /// The Engine.IO session id.
        session: String,
        /// The namespace.
        nsp: String,
        /// It lost its connection and may be recovered: keep its state (id, rooms, data) for
        /// its private id.
        saved: bool,
    },
    /// The socket joined rooms it was not in.
    JoinedRooms {
        /// The Engine.IO session id.
        session: String,
        /// The namespace.
        nsp: String,
        /// The rooms.
        rooms: Vec<String>,
    },
    /// The socket left a room it was in.
    LeftRoom {
        /// The Engine.IO session id.
        session: String,
        /// The namespace.
        nsp: String,
        /// The room.
        room: String,
    },
    /// The socket's application data was replaced.
    Data {
        /// The Engine.IO session id.
        session: String,
        /// The namespace.
        nsp: String,
        /// The new data.
        data: Value,
    },
}

/// Carries operations on sockets to the other nodes of a cluster. Every method targets every
/// other node; a node that receives one applies it to its own sockets only.
pub trait Adapter: Send + Sync + 'static {
    /// Send `broadcast` to every other node, without waiting.
    fn broadcast(&self, broadcast: RemoteBroadcast);
    /// Apply `action` to the selected sockets of every other node, without waiting, in order
    /// with this node's broadcasts.
    fn act(&self, selection: Selection, action: RemoteAction);
    /// Describe the selected sockets of every other node.
    fn fetch(&self, selection: Selection) -> BoxFuture<'static, Vec<SocketDetails>>;
    /// Emit with an ack request to the selected sockets of every other node; resolves with
    /// every answer (or the reason there is none) once each node has reported.
    fn broadcast_with_ack(&self, request: RemoteAckRequest)
    -> BoxFuture<'static, Vec<AckResponse>>;
    /// Take back the saved state of the socket with private id `pid` of namespace `nsp`,
    /// saved at most `max_age` ago, wherever it was connected. Once taken it is gone: a
    /// second take of the same `pid` finds nothing.
    fn recover(
        &self,
        nsp: &str,
        pid: &str,
        max_age: Duration,
    ) -> BoxFuture<'static, Option<Recovered>>;
    /// Hand `event` to the servers of every other node, without waiting, in order with this
    /// node's broadcasts.
    fn server_emit(&self, event: ServerEvent);
    /// Hand `event` to the servers of every other node and collect one answer per node, each
    /// within `timeout`.
    fn server_emit_with_ack(
        &self,
        event: ServerEvent,
        timeout: Duration,
    ) -> BoxFuture<'static, Vec<Result<Vec<Value>, AckError>>>;
    /// Record a change of one of this node's sockets, without waiting; changes of one socket
    /// are recorded in the order they are reported.
    fn changed(&self, change: SocketChange);
    /// Ask the other nodes for the logged packets of `nsp` for a socket in `rooms` that a
    /// client with recovery offset `seen` missed: the first whose log covers them answers.
    /// None by default.
    fn replay(
        &self,
        nsp: &str,
        seen: &str,
        rooms: Vec<String>,
    ) -> BoxFuture<'static, Option<Replayed>> {
        let _ = (nsp, seen, rooms);
        Box::pin(async { None })
    }
    /// Tell the other nodes, without waiting, the recovery offset the client of the socket of
    /// Engine.IO session `session` in `nsp` is known to have received, so that a node taking
    /// the session over replays from there. Nothing by default.
    fn checkpoint(&self, session: &str, nsp: &str, received: String) {
        let _ = (session, nsp, received);
    }
    /// The sockets of Engine.IO session `session`, which this node takes over from a node
    /// that was lost, as the cluster recorded them. None by default.
    fn adopt(&self, session: &str) -> BoxFuture<'static, Vec<AdoptedSocket>> {
        let _ = session;
        Box::pin(async { Vec::new() })
    }
}

/// A socket listed by [`BroadcastOperator::fetch_sockets`], on this node or another. Acting on
/// it reaches it wherever it is connected.
#[derive(Clone)]
pub struct RemoteSocket {
    details: SocketDetails,
    ns: Arc<NamespaceInner>,
}

impl RemoteSocket {
    pub(crate) fn new(details: SocketDetails, ns: Arc<NamespaceInner>) -> Self {
        RemoteSocket { details, ns }
    }

    /// The socket id.
    pub fn id(&self) -> &str {
        &self.details.id
    }

    /// The namespace name.
    pub fn ns(&self) -> &str {
        self.ns.name()
    }

    /// Its rooms when it was listed, its own id included.
    pub fn rooms(&self) -> &BTreeSet<String> {
        &self.details.rooms
    }

    /// Its application data when it was listed.
    pub fn data(&self) -> &Value {
        &self.details.data
    }

    /// What its client presented when it joined.
    pub fn handshake(&self) -> &Handshake {
        &self.details.handshake
    }

    /// Its client, as [`SocketDetails::client`].
    pub fn client(&self) -> &str {
        &self.details.client
    }

    /// Its client's transport when it was listed.
    pub fn transport(&self) -> Transport {
        self.details.transport
    }

    /// Emit `event` to this socket.
    pub fn emit(&self, event: &str, args: impl Into<Args>) -> Result<(), EmitError> {
        self.only().emit(event, args)
    }

    /// Make this socket join `room`.
    pub fn join(&self, room: impl Into<String>) {
        self.only().sockets_join(room);
    }

    /// Make this socket leave `room`.
    pub fn leave(&self, room: &str) {
        self.only().sockets_leave(room);
    }

    /// Disconnect this socket; with `close`, close its whole Engine.IO connection.
    pub fn disconnect(&self, close: bool) {
        self.only().disconnect_sockets(close);
    }

    fn only(&self) -> BroadcastOperator {
        BroadcastOperator::new(self.ns.clone()).to(self.details.id.clone())
    }
}

impl std::fmt::Debug for RemoteSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteSocket")
            .field("id", &self.details.id)
            .field("ns", &self.ns.name())
            .field("rooms", &self.details.rooms)
            .finish()
    }
}
