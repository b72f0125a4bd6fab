//! What happens to the sockets of a server, as it happens, for instruments that watch a server
//! from the outside (the Admin UI, [`super::admin_ui`]). Observers are called synchronously, on
//! the path of the change and outside the server's locks; one that has work to do hands it to a
//! task of its own.

use std::sync::Arc;

use super::socket::Socket;

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
}

/// A function told of every [`Activity`] of a server.
pub type ActivityObserver = Arc<dyn Fn(Activity<'_>) + Send + Sync>;
