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
pub mod tls;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;

use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::service::interceptor::{InterceptedService, InterceptorLayer};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};

pub use auth::{ClientAuth, Secret, SecretError, ServerAuth};
pub use link::{Link, LinkConfig, LinkError, LinkKind, LinkSpec};
pub use tls::PeerTls;

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

/// The peer directory: node id -> address, with one lazily connected channel per peer and the
/// peer's [`Link`]s.
///
/// Cheap to clone; clones share the directory. The channel of a peer connects on first use and
/// reconnects by itself after a failure; every clone of it multiplexes over the same HTTP/2
/// connection. A peer's links start on first use and end when the peer leaves the directory.
/// [`Peers::set`] replaces a peer's address (membership change, restart on another port) and
/// its links; calls already made on the old channel finish on it. Reads take no lock: the
/// directory is swapped whole on the rare changes.
#[derive(Clone)]
pub struct Peers {
    inner: Arc<PeersInner>,
}

struct PeersInner {
    /// Mutual TLS on every channel, when the cluster uses it.
    tls: Option<PeerTls>,
    auth: ClientAuth,
    map: ArcSwap<HashMap<u64, Arc<Peer>>>,
    /// Serializes changes (each copies the map); readers never take it.
    changes: Mutex<()>,
}

struct Peer {
    addr: String,
    channel: Channel,
    links: [OnceLock<Link>; LinkKind::COUNT],
}

impl Peers {
    /// An empty directory whose channels carry `secret`.
    pub fn new(secret: Secret) -> Self {
        Peers::with_tls(secret, None)
    }

    /// An empty directory whose channels carry `secret`, over mutual TLS when `tls` is given.
    pub fn with_tls(secret: Secret, tls: Option<PeerTls>) -> Self {
        Self {
            inner: Arc::new(PeersInner {
                tls,
                auth: ClientAuth::new(secret),
                map: ArcSwap::from_pointee(HashMap::new()),
                changes: Mutex::new(()),
            }),
        }
    }

    /// Sets the address of `node` (`host:port` or `http://host:port`). Setting the same address
    /// again keeps the existing connection and links.
    pub fn set(&self, node: u64, addr: &str) -> Result<(), RpcError> {
        let addr = normalize(addr, self.inner.tls.is_some());
        let _change = self.change();
        if self.addr(node).as_deref() == Some(addr.as_str()) {
            return Ok(());
        }
        let invalid = |e: tonic::transport::Error| RpcError::InvalidAddress {
            addr: addr.clone(),
            reason: e.to_string(),
        };
        let mut endpoint = Endpoint::from_shared(addr.clone()).map_err(invalid)?;
        if let Some(tls) = &self.inner.tls {
            endpoint = endpoint.tls_config(tls.client()).map_err(invalid)?;
        }
        let channel = endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .connect_lazy();
        let peer = Arc::new(Peer {
            addr,
            channel,
            links: Default::default(),
        });
        let mut map = HashMap::clone(&self.inner.map.load());
        map.insert(node, peer);
        self.inner.map.store(Arc::new(map));
        Ok(())
    }

    /// Forgets `node`; its links end once the calls under way on them are done.
    pub fn remove(&self, node: u64) {
        let _change = self.change();
        let mut map = HashMap::clone(&self.inner.map.load());
        if map.remove(&node).is_some() {
            self.inner.map.store(Arc::new(map));
        }
    }

    /// Makes the directory hold exactly `members` (node id -> address): new ones are added,
    /// moved ones get their new address, the others are removed. A member whose address is
    /// unusable is left out (the others are still applied) and its error returned.
    pub fn sync(&self, members: &BTreeMap<u64, String>) -> Result<(), RpcError> {
        let gone: Vec<u64> = self
            .inner
            .map
            .load()
            .keys()
            .filter(|id| !members.contains_key(id))
            .copied()
            .collect();
        for id in gone {
            self.remove(id);
        }
        let mut result = Ok(());
        for (id, addr) in members {
            if let Err(e) = self.set(*id, addr) {
                result = Err(e);
            }
        }
        result
    }

    /// Whether `node` is in the directory (a member, once the directory follows the
    /// membership).
    pub fn contains(&self, node: u64) -> bool {
        self.inner.map.load().contains_key(&node)
    }

    /// The address of `node` (always with its `http://` scheme), if known.
    pub fn addr(&self, node: u64) -> Option<String> {
        self.inner
            .map
            .load()
            .get(&node)
            .map(|peer| peer.addr.clone())
    }

    /// Every known peer and its address, sorted by node id.
    pub fn nodes(&self) -> Vec<(u64, String)> {
        let mut nodes: Vec<_> = self
            .inner
            .map
            .load()
            .iter()
            .map(|(id, peer)| (*id, peer.addr.clone()))
            .collect();
        nodes.sort();
        nodes
    }

    /// The authenticated channel to `node`, if its address is known.
    pub fn channel(&self, node: u64) -> Option<PeerChannel> {
        let channel = self.inner.map.load().get(&node)?.channel.clone();
        Some(self.authenticated(channel))
    }

    /// The link of kind `spec.kind` to `node`, started on first use; `None` when `node` is not
    /// in the directory.
    pub fn link(&self, node: u64, spec: &LinkSpec) -> Option<Link> {
        let map = self.inner.map.load();
        let peer = map.get(&node)?;
        let link = peer.links[spec.kind.slot()]
            .get_or_init(|| Link::start(node, self.authenticated(peer.channel.clone()), spec));
        Some(link.clone())
    }

    /// The links to `node` that are started.
    pub fn started_links(&self, node: u64) -> Vec<Link> {
        self.inner
            .map
            .load()
            .get(&node)
            .map(|peer| peer.links.iter().filter_map(|l| l.get().cloned()).collect())
            .unwrap_or_default()
    }

    /// How many links are started, over every peer and kind.
    pub fn open_links(&self) -> usize {
        self.inner
            .map
            .load()
            .values()
            .map(|peer| peer.links.iter().filter(|l| l.get().is_some()).count())
            .sum()
    }

    fn authenticated(&self, channel: Channel) -> PeerChannel {
        InterceptedService::new(channel, self.inner.auth.clone())
    }

    fn change(&self) -> std::sync::MutexGuard<'_, ()> {
        // The guarded data is the map in the ArcSwap, replaced whole: never half-updated.
        self.inner.changes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.nodes()).finish()
    }
}

/// Adds the scheme to a bare `host:port`: `https://` over TLS, else `http://`.
fn normalize(addr: &str, tls: bool) -> String {
    match (addr.contains("://"), tls) {
        (true, _) => addr.to_owned(),
        (false, true) => format!("https://{addr}"),
        (false, false) => format!("http://{addr}"),
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
    tls: Option<&PeerTls>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RpcError> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut server = Server::builder();
    if let Some(tls) = tls {
        server = server.tls_config(tls.server())?;
    }
    server
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
