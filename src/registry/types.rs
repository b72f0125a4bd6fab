//! The replicated data of the registry: session records, the commands that change them and the
//! answers to those commands, plus the openraft type configuration.
//!
//! Everything here is plain data with serde derives: commands travel in Raft log entries (JSON),
//! records sit in sled and in snapshots.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;

use openraft::BasicNode;
use serde::{Deserialize, Serialize};

/// A node of the cluster, as Raft and the registry name it.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// The openraft type configuration of the registry: `u64` node ids, nodes addressed by their
    /// gRPC address ([`BasicNode`]), [`Command`] entries, [`Response`] answers and snapshots
    /// held in memory.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = NodeId,
        Node = BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

/// The transport a session currently uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// HTTP long-polling.
    #[default]
    Polling,
    /// A websocket (opened directly or after an upgrade).
    Websocket,
}

/// What the cluster remembers about one Engine.IO session.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The node that serves the session now.
    pub owner: NodeId,
    /// Bumped on every change of owner; a [`Command::SetOwner`] with an epoch not higher than
    /// this one is refused, so a late or replayed ownership change never wins over a newer one.
    pub epoch: u64,
    /// The transport in use.
    pub transport: Transport,
    /// The Socket.IO namespaces the session has joined, by namespace name.
    pub namespaces: BTreeMap<String, SocketRecord>,
    /// The session was given to `owner` by [`Command::TakeOver`] after its node was lost:
    /// the owner starts it afresh from this record on its first request.
    #[serde(default)]
    pub taken_over: bool,
}

/// One Socket.IO socket of a session (the session's membership in one namespace).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SocketRecord {
    /// The socket id.
    pub socket_id: String,
    /// The private session id used by connection state recovery, if recovery is on.
    pub pid: Option<String>,
    /// The rooms the socket is in (its own id-room need not be listed).
    pub rooms: BTreeSet<String>,
    /// The application's `socket.data`.
    pub data: serde_json::Value,
}

/// The state of a socket that lost its connection, kept under its private id so that its
/// client can take it back on any node (connection state recovery), even after the node it was
/// connected to is gone.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedSocket {
    /// The namespace.
    pub nsp: String,
    /// The socket id.
    pub socket_id: String,
    /// Its rooms (its own id-room need not be listed).
    pub rooms: BTreeSet<String>,
    /// The application's `socket.data`.
    pub data: serde_json::Value,
    /// When it was saved, in milliseconds since the Unix epoch (by the saving node's clock).
    pub saved_at_ms: u64,
}

/// A change of the replicated state. Commands are deterministic: every node applies the same
/// commands in the same order and ends with the same state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Records a new session owned by `owner` with epoch 0. Answers
    /// [`Response::AlreadyExists`] (and changes nothing) if the sid is known.
    CreateSession {
        /// The session id.
        sid: String,
        /// The node that opened it.
        owner: NodeId,
        /// The transport it was opened with.
        transport: Transport,
    },
    /// Moves the session to `node` if `epoch` is higher than the recorded one, else answers
    /// [`Response::StaleEpoch`].
    SetOwner {
        /// The session id.
        sid: String,
        /// The new owner.
        node: NodeId,
        /// The new epoch; must be higher than the current one.
        epoch: u64,
    },
    /// Records the session's transport.
    SetTransport {
        /// The session id.
        sid: String,
        /// The transport now in use.
        transport: Transport,
    },
    /// Forgets the session.
    DeleteSession {
        /// The session id.
        sid: String,
    },
    /// Records that the session joined namespace `nsp` (replacing an earlier socket of the same
    /// session in that namespace).
    JoinNamespace {
        /// The session id.
        sid: String,
        /// The namespace name.
        nsp: String,
        /// The new socket's id.
        socket_id: String,
        /// Its recovery id.
        pid: Option<String>,
    },
    /// Records that the session left namespace `nsp`.
    LeaveNamespace {
        /// The session id.
        sid: String,
        /// The namespace name.
        nsp: String,
    },
    /// Adds rooms to the session's socket in `nsp`.
    JoinRooms {
        /// The session id.
        sid: String,
        /// The namespace name.
        nsp: String,
        /// The rooms to join.
        rooms: Vec<String>,
    },
    /// Removes rooms from the session's socket in `nsp`.
    LeaveRooms {
        /// The session id.
        sid: String,
        /// The namespace name.
        nsp: String,
        /// The rooms to leave.
        rooms: Vec<String>,
    },
    /// Replaces the `socket.data` of the session's socket in `nsp`.
    SetData {
        /// The session id.
        sid: String,
        /// The namespace name.
        nsp: String,
        /// The new data.
        data: serde_json::Value,
    },
    /// Records that the session's socket in `nsp` lost its connection: the socket leaves the
    /// session and, if it has a private id still bound to this session, is kept as a
    /// [`SavedSocket`] for recovery.
    SaveSocket {
        /// The session id.
        sid: String,
        /// The namespace name.
        nsp: String,
        /// When, in milliseconds since the Unix epoch.
        at_ms: u64,
    },
    /// Takes back the saved socket with private id `pid` in `nsp` for a returning client:
    /// answers [`Response::Taken`] (and forgets it) if it was saved at most `max_age_ms`
    /// before `now_ms`. A pid still bound to a connected socket answers [`Response::Live`]
    /// with its owner, unless `live`: then that socket's state is taken (its session keeps
    /// the socket, no longer bound to the pid). Anything else answers [`Response::NotSaved`].
    TakeSocket {
        /// The private id the client presented.
        pid: String,
        /// The namespace name.
        nsp: String,
        /// The taker's clock, in milliseconds since the Unix epoch.
        now_ms: u64,
        /// The recovery window of the namespace.
        max_age_ms: u64,
        /// Take the state of a socket still recorded as connected.
        live: bool,
    },
    /// Forgets every session owned by `node`, for a node that lost its sessions (it restarted
    /// without them, crashed, or was removed from the cluster without handing them over);
    /// their sockets with a private id are saved for recovery as of `at_ms`. Moving them
    /// to survivors instead is a [`Command::Batch`] of [`Command::SetOwner`]s.
    DeleteSessionsOf {
        /// The former owner.
        node: NodeId,
        /// When, in milliseconds since the Unix epoch (0 in entries written before sockets
        /// were saved).
        #[serde(default)]
        at_ms: u64,
    },
    /// Gives the sessions of `node`, lost (unreachable for too long), to the nodes `to`:
    /// polling sessions are reassigned among them in turn (epoch bumped, marked
    /// [`SessionRecord::taken_over`]); the others (their clients reconnect by themselves) are
    /// forgotten, their sockets with a private id saved for recovery as of `at_ms`. With no
    /// node in `to`, all are forgotten that way.
    TakeOver {
        /// The lost node.
        node: NodeId,
        /// The nodes that take its polling sessions.
        to: Vec<NodeId>,
        /// When, in milliseconds since the Unix epoch.
        at_ms: u64,
    },
    /// Several commands applied in order in one Raft entry. Each is applied on its own: one
    /// that is refused does not undo or stop the others. Nested batches are flattened in the
    /// answer shape (a batch answers a batch).
    Batch(Vec<Command>),
    /// `command` (about one session), made by the session's owner `node`: not applied once
    /// the session was taken over by another node ([`Command::TakeOver`]). A node that lost a
    /// session (while it was cut off or stopped) cannot change it any more, whatever it still
    /// had queued.
    AsOwner {
        /// The node that made the command.
        node: NodeId,
        /// The command.
        command: Box<Command>,
    },
}

/// What applying a command did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The command changed the state as asked (or there was nothing to change, e.g. leaving a
    /// room the socket was not in).
    Applied,
    /// [`Command::CreateSession`] for a sid that is already recorded; nothing changed.
    AlreadyExists,
    /// [`Command::SetOwner`] with an epoch not higher than `current`; nothing changed.
    StaleEpoch {
        /// The recorded epoch.
        current: u64,
        /// The recorded owner.
        owner: NodeId,
    },
    /// The sid is not recorded; nothing changed.
    UnknownSid,
    /// The session has not joined that namespace; nothing changed.
    UnknownNamespace,
    /// [`Command::TakeSocket`] took this saved state.
    Taken(SavedSocket),
    /// [`Command::TakeSocket`] found the pid bound to a socket still connected on `owner`.
    Live {
        /// The node that serves that socket's session.
        owner: NodeId,
    },
    /// [`Command::TakeSocket`] found nothing to take (never saved, expired, taken already,
    /// or another namespace).
    NotSaved,
    /// [`Command::TakeOver`] reassigned `moved` sessions and forgot `deleted`.
    TakenOver {
        /// Polling sessions given to another node.
        moved: u64,
        /// Sessions forgotten.
        deleted: u64,
    },
    /// [`Command::DeleteSessionsOf`] forgot this many sessions.
    Deleted {
        /// How many sessions were forgotten.
        count: u64,
    },
    /// The answers of a [`Command::Batch`], in order.
    Batch(Vec<Response>),
    /// [`Command::AsOwner`] from a node that no longer owns the session; nothing changed.
    NotOwner {
        /// The session's owner.
        owner: NodeId,
    },
}

impl Command {
    /// How many leaf commands this is (a batch counts its members).
    pub fn len(&self) -> usize {
        match self {
            Command::Batch(commands) => commands.iter().map(Command::len).sum(),
            Command::AsOwner { command, .. } => command.len(),
            _ => 1,
        }
    }

    /// The session a command about one session is about.
    pub(crate) fn sid(&self) -> Option<&str> {
        match self {
            Command::CreateSession { sid, .. }
            | Command::SetOwner { sid, .. }
            | Command::SetTransport { sid, .. }
            | Command::DeleteSession { sid }
            | Command::JoinNamespace { sid, .. }
            | Command::LeaveNamespace { sid, .. }
            | Command::JoinRooms { sid, .. }
            | Command::LeaveRooms { sid, .. }
            | Command::SetData { sid, .. }
            | Command::SaveSocket { sid, .. } => Some(sid),
            Command::AsOwner { command, .. } => command.sid(),
            Command::TakeSocket { .. }
            | Command::DeleteSessionsOf { .. }
            | Command::TakeOver { .. }
            | Command::Batch(_) => None,
        }
    }

    /// `self` made by `node` as the owner of its session(s): see [`Command::AsOwner`]. A
    /// batch is fenced command by command.
    pub fn as_owner(self, node: NodeId) -> Command {
        match self {
            Command::Batch(commands) => Command::Batch(
                commands
                    .into_iter()
                    .map(|command| command.as_owner(node))
                    .collect(),
            ),
            command => Command::AsOwner {
                node,
                command: Box::new(command),
            },
        }
    }

    /// Whether this is an empty batch.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
