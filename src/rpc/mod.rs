//! Peer gRPC plumbing shared by every inter-node service: the generated protobuf modules, the
//! cluster secret, the peer directory with one connection per peer, and the server builder.
//!
//! Every inter-node service (Raft, request forwarding, migration, the adapter) is mounted on ONE
//! tonic server per node through [`serve`], and every outgoing call goes through a
//! [`Peers`] channel. Both ends enable TCP_NODELAY and HTTP/2 keepalive
//! ([`KEEPALIVE_INTERVAL`]/[`KEEPALIVE_TIMEOUT`]), so a frozen peer is detected within about ten
//! seconds instead of stranding calls forever. tonic's server is used rather than `axum::serve`
//! because it has no cap on concurrent HTTP/2 streams per connection.

pub mod auth;
pub mod link;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::service::interceptor::{InterceptedService, InterceptorLayer};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};

pub use auth::{ClientAuth, Secret, SecretError, ServerAuth};

/// Code generated from every `.proto` file under `proto/`: package `nonstick.<name>` is
/// `pb::<name>` (e.g. `pb::raft`, the registry's Raft service). A new file in `proto/` with a
/// new `nonstick.*` package appears here without any code change.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/protos.rs"));
    pub use self::nonstick::*;
}

/// HTTP/2 keepalive ping interval, on client and server connections.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// How long an HTTP/2 keepalive ping may stay unanswered before the connection is closed.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting to a peer may take before the call fails.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How many streams a peer may reset before the server has accepted them. h2's default (20)
/// answers a burst of cancelled calls with GOAWAY, which fails every call on the connection.
pub const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 4096;
/// HTTP/2 flow-control windows. The forwarding streams carry thousands of small messages a
/// second; with the 64 KiB default every few dozen of them cost a WINDOW_UPDATE frame (and a
/// write) back. Bodies stay bounded by `maxHttpBufferSize` before they are sent.
pub const STREAM_WINDOW: Option<u32> = Some(1 << 20);
/// See [`STREAM_WINDOW`]; shared by all streams of one peer connection.
pub const CONNECTION_WINDOW: Option<u32> = Some(4 << 20);

/// A channel to one peer that adds the cluster secret to every call. Pass it to any generated
/// client: `XClient::new(peers.channel(node)?)`.
pub type PeerChannel = InterceptedService<Channel, ClientAuth>;

/// Errors of the peer plumbing.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// A peer address that is not a valid URI.
    #[error("invalid peer address {addr:?}: {reason}")]
    InvalidAddress {
        /// The address as given.
        addr: String,
        /// Why it was refused.
        reason: String,
    },
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Server(#[from] tonic::transport::Error),
}

/// The peer directory: node id -> address, with one lazily connected channel per peer.
///
/// Cheap to clone; clones share the directory. The channel of a peer connects on first use and
/// reconnects by itself after a failure; every clone of it multiplexes over the same HTTP/2
/// connection. [`Peers::set`] replaces a peer's address (membership change, restart on another
/// port); calls already made on the old channel finish on it.
#[derive(Clone)]
pub struct Peers {
    inner: Arc<PeersInner>,
}

struct PeersInner {
    auth: ClientAuth,
    /// Short critical sections only (clone a channel out, or swap one in).
    map: RwLock<HashMap<u64, Peer>>,
}

#[derive(Clone)]
struct Peer {
    addr: String,
    channel: Channel,
}

impl Peers {
    /// An empty directory whose channels carry `secret`.
    pub fn new(secret: Secret) -> Self {
        Self {
            inner: Arc::new(PeersInner {
                auth: ClientAuth::new(secret),
                map: RwLock::new(HashMap::new()),
            }),
        }
    }

    /// Sets the address of `node` (`host:port` or `http://host:port`). Setting the same address
    /// again keeps the existing connection.
    pub fn set(&self, node: u64, addr: &str) -> Result<(), RpcError> {
        let addr = normalize(addr);
        if self.addr(node).as_deref() == Some(addr.as_str()) {
            return Ok(());
        }
        let channel = Endpoint::from_shared(addr.clone())
            .map_err(|e| RpcError::InvalidAddress {
                addr: addr.clone(),
                reason: e.to_string(),
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .connect_lazy();
        self.write().insert(node, Peer { addr, channel });
        Ok(())
    }

    /// Forgets `node`.
    pub fn remove(&self, node: u64) {
        self.write().remove(&node);
    }

    /// The address of `node` (always with its `http://` scheme), if known.
    pub fn addr(&self, node: u64) -> Option<String> {
        self.read().get(&node).map(|peer| peer.addr.clone())
    }

    /// Every known peer and its address, sorted by node id.
    pub fn nodes(&self) -> Vec<(u64, String)> {
        let mut nodes: Vec<_> = self
            .read()
            .iter()
            .map(|(id, peer)| (*id, peer.addr.clone()))
            .collect();
        nodes.sort();
        nodes
    }

    /// The authenticated channel to `node`, if its address is known.
    pub fn channel(&self, node: u64) -> Option<PeerChannel> {
        let channel = self.read().get(&node)?.channel.clone();
        Some(InterceptedService::new(channel, self.inner.auth.clone()))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<u64, Peer>> {
        // A panic while holding this lock cannot leave the map half-updated (single inserts and
        // removes), so a poisoned lock is still consistent.
        self.inner.map.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<u64, Peer>> {
        self.inner.map.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.nodes()).finish()
    }
}

/// Adds the `http://` scheme to a bare `host:port`.
fn normalize(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    }
}

/// Serves `routes` (every inter-node service of this node) on `listener` until `shutdown`
/// resolves, refusing calls that lack the cluster `secret`.
///
/// Build `routes` with `Routes::new(a).add_service(b)`. The server sets TCP_NODELAY on accepted
/// connections, HTTP/2 keepalive, no limit on concurrent streams, and a high
/// [`MAX_PENDING_ACCEPT_RESET_STREAMS`].
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    secret: Secret,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RpcError> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_ACCEPT_RESET_STREAMS))
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .layer(InterceptorLayer::new(ServerAuth::new(secret)))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}
