//! The seam to other nodes: a cluster installs a [`Fanout`] that carries broadcasts to its
//! peers, and hands broadcasts from peers to [`SocketIo::deliver_remote`](super::SocketIo::deliver_remote).

use crate::protocol::sio::Encoded;

/// A broadcast on its way to (or from) another node: the packet as encoded for the client, and
/// which sockets it is for.
#[derive(Debug, Clone)]
pub struct RemoteBroadcast {
    /// The namespace.
    pub nsp: String,
    /// The packet, already encoded.
    pub packet: Encoded,
    /// Sockets in any of these rooms (all sockets of the namespace if empty).
    pub rooms: Vec<String>,
    /// Minus the sockets in any of these rooms (socket ids count as rooms).
    pub except: Vec<String>,
    /// Drop it for sockets whose transport cannot take it right now.
    pub volatile: bool,
}

/// Carries broadcasts to the other nodes of a cluster.
pub trait Fanout: Send + Sync + 'static {
    /// Send `broadcast` to every other node, without waiting.
    fn broadcast(&self, broadcast: RemoteBroadcast);
}
