//! What happens to the sockets of a server, as it happens, for instruments that watch a server
//! from the outside (the Admin UI, [`super::admin_ui`]). Observers are called synchronously, on
//! the path of the change (a delivery may hold the recovery log's lock, never a lock of the
//! sockets); one that has work to do hands it to a task of its own.

use std::sync::Arc;

use super::args::Event;
use super::socket::Socket;
use crate::protocol::sio::Encoded;

/// One change to the sockets of this node's server.
#[derive(Debug, Clone, Copy)]
pub enum Activity<'a> {
    /// A socket joined a namespace (its rooms already include its own).
    Connected(&'a Socket),
    /// A socket left a namespace.
    Disconnected {
        /// The namespace.
        nsp: &'a str,
        /// The socket id.
        id: &'a str,
        /// Why (a Socket.IO disconnect reason).
        reason: &'a str,
    },
    /// A socket joined a room.
    Joined {
        /// The namespace.
        nsp: &'a str,
        /// The room.
        room: &'a str,
        /// The socket id.
        id: &'a str,
    },
    /// A socket left a room.
    Left {
        /// The namespace.
        nsp: &'a str,
        /// The room.
        room: &'a str,
        /// The socket id.
        id: &'a str,
    },
    /// A socket's data was set, or its session upgraded to a websocket.
    Updated(&'a Socket),
    /// An event from a socket's client, about to be handed to its handler.
    Received(&'a Socket, &'a Event),
    /// An event packet went out to sockets of this node (an emit to one socket, a broadcast,
    /// or a broadcast of another node delivered here).
    Sent {
        /// The namespace.
        nsp: &'a str,
        /// The sockets it went to.
        ids: &'a [String],
        /// The packet, in the default parser's form ([`crate::protocol::sio::decode`] reads it).
        packet: &'a Encoded,
    },
}

/// A function told of every [`Activity`] of a server.
pub type ActivityObserver = Arc<dyn Fn(Activity<'_>) + Send + Sync>;
