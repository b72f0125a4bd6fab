//! Run Socket.IO applications as a server: on one node or as one node of a cluster, on its own
//! HTTP listener or inside the program's own axum app. The built-in applications of the
//! `nonstick` binary go through exactly this API.
//!
//! - [`Mount`]: an application at a path ([`SocketIo`] or a raw Engine.IO [`Application`]).
//! - [`NodeBuilder`] → [`Node`]: the engines, the gateway and, for a cluster node, the
//!   registry and the peer gRPC server, started. [`Node::router`] is the HTTP side of it, to
//!   merge into any axum app.
//! - [`Node::serve`] / [`Node::start`] → [`RunningNode`]: that app served on the node's
//!   listener, with a graceful shutdown that closes every session first.
//! - [`NodeArgs`]: the binary's node flags, for a program's own command line.
//!
//! ```no_run
//! use nonstick::node::{Node, NodeArgs};
//! use nonstick::socketio::{SocketIo, SocketIoConfig};
//! use clap::Parser;
//!
//! # async fn run() -> std::io::Result<()> {
//! let args = NodeArgs::parse(); // --listen, --id, --grpc, --peers, --data-dir, ...
//! let io = SocketIo::new(SocketIoConfig::default());
//! io.of("/").on_connect(|socket| async move {
//!     socket.on("ping", |socket, _event| async move {
//!         let _ = socket.emit("pong", ());
//!     });
//! });
//! let node = args.builder()?.socketio(io).build().await?;
//! let app = axum::Router::new()
//!     .route("/hello", axum::routing::get(|| async { "hello" }))
//!     .merge(node.router());
//! node.serve(app).await
//! # }
//! ```

mod args;
mod cluster;
mod drain;
mod metrics;
mod observer;
pub mod tls;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use args::{NodeArgs, secret};
pub use drain::DrainReport;
pub use observer::{NodeStatus, Observer};

use crate::config::Config;
use crate::engine::{Application, Engine, EngineConfig};
use crate::gateway::{Gateway, MigrateError};
use crate::http::{self, Cors, CorsOrigins, HttpConfig};
use crate::registry::{NodeId, Registry};
use crate::rpc::{PeerTls, Peers, Secret};
use crate::socketio::SocketIo;
use cluster::ClusterParts;

/// Where Socket.IO is served unless told otherwise, as in the reference server.
pub const SOCKETIO_PATH: &str = "/socket.io/";

/// One application served at a path.
#[derive(Clone)]
pub struct Mount {
    path: String,
    engine: Option<EngineConfig>,
    app: Arc<dyn Application>,
    socketio: Option<SocketIo>,
}

impl Mount {
    /// A Socket.IO server at `path` (clients' `path` option; a trailing slash is added when
    /// missing). On a cluster node its broadcasts, room actions and listings span the cluster.
    pub fn socketio(path: &str, io: SocketIo) -> Mount {
        Mount {
            path: with_slash(path),
            engine: None,
            app: Arc::new(io.clone()),
            socketio: Some(io),
        }
    }

    /// A raw Engine.IO application at `path` (no Socket.IO on top).
    pub fn engine_io(path: &str, app: Arc<dyn Application>) -> Mount {
        Mount {
            path: with_slash(path),
            engine: None,
            app,
            socketio: None,
        }
    }

    /// Engine.IO settings for this mount alone, instead of the node's [`Config::engine`].
    pub fn with_engine(mut self, engine: EngineConfig) -> Mount {
        self.engine = Some(engine);
        self
    }

    /// The path, with its trailing slash.
    pub fn path(&self) -> &str {
        &self.path
    }
}

fn with_slash(path: &str) -> String {
    let path = path.trim_end_matches('/');
    let path = path.strip_prefix('/').unwrap_or(path);
    if path.is_empty() {
        "/".to_owned()
    } else {
        format!("/{path}/")
    }
}

/// A listener, or the address to bind one on when the node is built.
#[derive(Debug)]
pub enum Bind {
    /// Bind this address.
    Addr(SocketAddr),
    /// Use this bound listener (tests bind port 0 and pass it).
    Listener(TcpListener),
}

impl From<SocketAddr> for Bind {
    fn from(addr: SocketAddr) -> Bind {
        Bind::Addr(addr)
    }
}

impl From<TcpListener> for Bind {
    fn from(listener: TcpListener) -> Bind {
        Bind::Listener(listener)
    }
}

impl Bind {
    async fn bind(self) -> io::Result<TcpListener> {
        match self {
            Bind::Addr(addr) => TcpListener::bind(addr)
                .await
                .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))),
            Bind::Listener(listener) => Ok(listener),
        }
    }
}

/// The cluster side of a node's settings.
#[derive(Debug)]
pub struct ClusterConfig {
    /// This node's id in the cluster (also the owner hint in its sids).
    pub node_id: NodeId,
    /// Where the peer gRPC server (forwarding, broadcasts, Raft) listens.
    pub grpc: Bind,
    /// Every member's gRPC address as the others reach it, this node included. The cluster
    /// initializes itself from this list once; later starts find it initialized.
    pub peers: BTreeMap<NodeId, String>,
    /// Where this node's registry keeps its Raft log and state (exclusive to this process).
    pub data_dir: PathBuf,
    /// The secret every inter-node call must carry.
    pub secret: Secret,
    /// Join a running cluster (to be added with `nonstick member add`) instead of forming one
    /// from `peers`.
    pub join: bool,
    /// Mutual TLS between the nodes (their addresses in `peers` then name their certificates),
    /// or plaintext gRPC when `None`.
    pub tls: Option<PeerTls>,
}

/// Builds a [`Node`]: its settings, its mounts, its listener, and whether it is a cluster node.
pub struct NodeBuilder {
    config: Config,
    mounts: Vec<Mount>,
    http: Option<Bind>,
    cluster: Option<ClusterConfig>,
}

impl NodeBuilder {
    /// A node with these settings and nothing mounted yet.
    pub fn new(config: Config) -> NodeBuilder {
        NodeBuilder {
            config,
            mounts: Vec::new(),
            http: None,
            cluster: None,
        }
    }

    /// The settings so far (a cluster node's `node_id` is its cluster id).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Serve `io` at the configured path ([`Config::path`], [`SOCKETIO_PATH`] by default).
    pub fn socketio(self, io: SocketIo) -> NodeBuilder {
        let path = self.config.path.clone();
        self.mount(Mount::socketio(&path, io))
    }

    /// Serve one more application. A later mount at the same path replaces an earlier one.
    pub fn mount(mut self, mount: Mount) -> NodeBuilder {
        self.mounts.retain(|m| m.path != mount.path);
        self.mounts.push(mount);
        self
    }

    /// Serve several more applications.
    pub fn mounts(self, mounts: impl IntoIterator<Item = Mount>) -> NodeBuilder {
        mounts.into_iter().fold(self, NodeBuilder::mount)
    }

    /// The HTTP listener [`Node::serve`] and [`Node::start`] use. Not needed when the program
    /// serves [`Node::router`] itself.
    pub fn listen(mut self, http: impl Into<Bind>) -> NodeBuilder {
        self.http = Some(http.into());
        self
    }

    /// Make this a cluster node. Its `node_id` becomes the cluster id.
    pub fn cluster(mut self, cluster: ClusterConfig) -> NodeBuilder {
        self.config.node_id = cluster.node_id.to_string();
        self.cluster = Some(cluster);
        self
    }

    /// Start what serves the mounts: the engines and, for a cluster node, the registry (which
    /// joins or forms the cluster) and the peer gRPC server. Must be called inside a Tokio
    /// runtime.
    pub async fn build(self) -> io::Result<Node> {
        let NodeBuilder {
            config,
            mounts,
            http,
            cluster,
        } = self;
        let http = match http {
            Some(bind) => Some(bind.bind().await?),
            None => None,
        };
        let https = config.https.as_ref().map(tls::server_config).transpose()?;
        let servers: HashMap<String, SocketIo> = mounts
            .iter()
            .filter_map(|m| Some((m.path.clone(), m.socketio.clone()?)))
            .collect();
        let engine_config = |m: &Mount| m.engine.clone().unwrap_or_else(|| config.engine.clone());
        let (gateway, cluster) = match cluster {
            None => {
                let engines = mounts
                    .iter()
                    .map(|m| (m.path.clone(), Engine::new(engine_config(m), m.app.clone())));
                (Gateway::local(engines), None)
            }
            Some(cluster) => {
                let mounts = mounts
                    .iter()
                    .map(|m| (m.path.clone(), engine_config(m), m.app.clone()));
                let (gateway, parts) =
                    cluster::start(cluster, mounts.collect(), &servers, config.adapter).await?;
                (gateway, Some(parts))
            }
        };
        Ok(Node {
            config,
            gateway,
            servers,
            http,
            https,
            cluster,
        })
    }
}

/// A node whose engines (and, in a cluster, registry and peer server) run; HTTP is served by
/// [`Node::serve`], [`Node::start`], or the program's own axum server around
/// [`Node::router`]. Stop it with [`Node::shutdown`] (or through [`RunningNode::shutdown`]);
/// dropping it stops it too, abruptly.
pub struct Node {
    config: Config,
    gateway: Gateway,
    /// The Socket.IO servers of the mounts, by path.
    servers: HashMap<String, SocketIo>,
    http: Option<TcpListener>,
    /// HTTPS on `http`, when configured.
    https: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    cluster: Option<ClusterParts>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("node_id", &self.config.node_id)
            .field("http", &self.http_addr())
            .field("grpc", &self.grpc_addr())
            .finish()
    }
}

impl Node {
    /// A builder with these settings.
    pub fn builder(config: Config) -> NodeBuilder {
        NodeBuilder::new(config)
    }

    /// The HTTP side of the node: every mount's Engine.IO endpoint (with and without its
    /// trailing slash), the health check and the counters at their configured paths, with
    /// CORS and the cookie as configured. Merge it into an axum app next to the app's own
    /// routes, state and middleware; a request for a session another cluster node owns is
    /// forwarded there from inside these routes. Paths it does not name reach the app's own
    /// routes and fallback untouched. Serve the app with connect info
    /// (`into_make_service_with_connect_info::<SocketAddr>()`) to give handlers the client's
    /// address. The routes serve only while the `Node` lives: dropping it closes its sessions
    /// and, on a cluster node, stops its peer server.
    pub fn router<S>(&self) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let config = &self.config;
        let cors = config.cors_origins.as_ref().map(|origins| Cors {
            origins: if origins.iter().any(|o| o == "*") {
                CorsOrigins::Any
            } else {
                CorsOrigins::List(origins.clone())
            },
            credentials: config.cors_credentials,
        });
        http::router(
            self.gateway.clone(),
            HttpConfig {
                node_id: config.node_id.clone(),
                cors,
                cookie: config.cookie.clone(),
                move_on_upgrade: config.move_on_upgrade,
                health_path: config.health_path.clone(),
                metrics_path: config.metrics_path.clone(),
                healthy: self.cluster.as_ref().map(ClusterParts::health),
                max_handshakes_per_second: config.max_handshakes_per_second,
                trust_forwarded_for: config.trust_forwarded_for,
                metrics: Some(metrics::page(metrics::Sources {
                    gateway: self.gateway.clone(),
                    servers: self
                        .servers
                        .iter()
                        .map(|(path, io)| (path.clone(), io.clone()))
                        .collect(),
                    cluster: self.cluster.as_ref().map(ClusterParts::metric_sources),
                })),
            },
        )
    }

    /// Serve `app` (which should contain [`Node::router`]) on the node's listener until SIGTERM
    /// or SIGINT (or, on a cluster node, `nonstick drain`), then shut down gracefully; on
    /// SIGTERM (how service managers and Kubernetes stop a process) or a drain request a
    /// cluster node first drains ([`Node::drain`]), while SIGINT (Ctrl-C, or a whole local
    /// cluster stopping) stops at once.
    pub async fn serve(self, app: Router) -> io::Result<()> {
        let drain_asked = self.cluster.as_ref().map(|c| c.drain_asked.clone());
        let running = self.start(app)?;
        let asked = async {
            match drain_asked {
                Some(asked) => asked.notified().await,
                None => std::future::pending().await,
            }
        };
        let stop = tokio::select! {
            stop = stop_signal() => stop,
            () = asked => Stop::Terminate,
        };
        if stop == Stop::Terminate {
            let report = running.node().drain().await;
            tracing::info!(?report, "drained");
        }
        running.shutdown().await
    }

    /// Prepare a cluster node to stop without its clients noticing: `/healthz` turns 503, every
    /// polling session moves to the other members (for up to `Config::drain_timeout`), then
    /// the websockets are closed (their clients reconnect through the balancer and recover
    /// their sockets elsewhere) and the node goes on serving for `Config::drain_linger`, so
    /// balancers stop sending it requests before it stops; what still reaches it is sent to
    /// where the sessions went. Stop it afterwards. Nothing to do on a single node.
    pub async fn drain(&self) -> DrainReport {
        match &self.cluster {
            Some(cluster) => {
                let config = &self.config;
                cluster
                    .drain(config.drain_timeout, config.drain_linger)
                    .await
            }
            None => DrainReport::default(),
        }
    }

    /// Serve `app` (which should contain [`Node::router`]) on the node's listener in the
    /// background. Fails when the builder was given no listener.
    pub fn start(mut self, app: Router) -> io::Result<RunningNode> {
        let listener = self.http.take().ok_or_else(|| {
            io::Error::other("the node has no HTTP listener: give one to NodeBuilder::listen")
        })?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let stopped = async {
            let _ = stopped.await;
        };
        let service = app.into_make_service_with_connect_info::<SocketAddr>();
        let server = match self.https.clone() {
            Some(https) => {
                let listener = tls::TlsListener::new(listener, https)?.tap_io(|_| ());
                tokio::spawn(async move {
                    axum::serve(listener, service)
                        .with_graceful_shutdown(stopped)
                        .await
                })
            }
            None => {
                let listener = listener.tap_io(|tcp| {
                    // Small Engine.IO packets must not wait for Nagle.
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!("TCP_NODELAY failed: {e}");
                    }
                });
                tokio::spawn(async move {
                    axum::serve(listener, service)
                        .with_graceful_shutdown(stopped)
                        .await
                })
            }
        };
        tracing::info!(%addr, node = %self.config.node_id, "listening");
        Ok(RunningNode {
            addr,
            node: self,
            stop: Some(stop),
            server: Server(Some(server)),
        })
    }

    /// A future for an axum server's `with_graceful_shutdown` when the program serves
    /// [`Node::router`] itself: it resolves on SIGINT or SIGTERM, once every session of this
    /// node is closed (parked long-polls answered, websockets closed), so that the server's
    /// graceful shutdown can finish. Call [`Node::shutdown`] after the server returns.
    ///
    /// ```no_run
    /// # async fn run(node: nonstick::Node) -> std::io::Result<()> {
    /// use std::net::SocketAddr;
    ///
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    /// let app: axum::Router = node.router();
    /// axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
    ///     .with_graceful_shutdown(node.on_signal())
    ///     .await?;
    /// node.shutdown().await
    /// # }
    /// ```
    pub fn on_signal(&self) -> impl Future<Output = ()> + Send + 'static {
        let gateway = self.gateway.clone();
        async move {
            shutdown_signal().await;
            gateway.stop();
        }
    }

    /// The node's settings (a cluster node's `node_id` is its cluster id).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The address of the HTTP listener given to the builder, until it is served.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The address of a cluster node's peer gRPC server.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.cluster.as_ref().map(ClusterParts::grpc_addr)
    }

    /// A handle that reads this node's status (sessions, forwarded requests, the cluster as its
    /// registry sees it) for as long as the node runs.
    pub fn observer(&self) -> Observer {
        Observer {
            node_id: self.config.node_id.clone(),
            gateway: self.gateway.clone(),
            registry: self.registry().cloned(),
        }
    }

    /// A cluster node's registry.
    pub fn registry(&self) -> Option<&Registry> {
        self.cluster.as_ref().map(ClusterParts::registry)
    }

    /// A cluster node's peer directory: the members it knows and its links to them.
    pub fn peers(&self) -> Option<&Peers> {
        self.cluster.as_ref().map(ClusterParts::peers)
    }

    /// The Socket.IO server mounted at `path` (e.g. `/socket.io/`).
    pub fn socketio(&self, path: &str) -> Option<SocketIo> {
        self.servers.get(path).cloned()
    }

    /// Move the polling session `sid` of the mount at `path` to cluster node `to`, which
    /// commits itself as its owner; returns the epoch of that ownership. The client goes on
    /// with the same sid through any node and notices nothing but a long-poll answered `6`;
    /// its Socket.IO sockets carry on there as recovered ones.
    pub async fn migrate(&self, path: &str, sid: &str, to: NodeId) -> Result<u64, MigrateError> {
        self.gateway.migrate(path, sid, to).await
    }

    /// The engine of the mount at `path` (e.g. `/socket.io/`).
    pub fn engine(&self, path: &str) -> Option<Engine> {
        self.gateway.engine(path).cloned()
    }

    /// The engines of the node's mounts.
    pub fn engines(&self) -> Vec<Engine> {
        self.gateway.mounts().into_iter().map(|(_, e)| e).collect()
    }

    /// Close every session (parked long-polls get `1`, websockets are closed), then stop the
    /// peer server and the registry. HTTP must be stopped by whoever serves it.
    pub async fn shutdown(mut self) -> io::Result<()> {
        self.gateway.stop();
        match self.cluster.take() {
            Some(cluster) => cluster.shutdown(self.config.shutdown_timeout).await,
            None => Ok(()),
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.gateway.stop();
    }
}

/// A node serving HTTP in the background. Stop it with [`RunningNode::shutdown`]; dropping it
/// stops it too, abruptly.
pub struct RunningNode {
    addr: SocketAddr,
    node: Node,
    stop: Option<oneshot::Sender<()>>,
    server: Server,
}

/// The HTTP server task, aborted when dropped unawaited.
struct Server(Option<JoinHandle<io::Result<()>>>);

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(server) = self.0.take() {
            server.abort();
        }
    }
}

impl std::fmt::Debug for RunningNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningNode")
            .field("addr", &self.addr)
            .field("node", &self.node)
            .finish()
    }
}

impl RunningNode {
    /// The address HTTP is served on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The node: its registry, peers, Socket.IO servers, engines.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Graceful stop: stop accepting, close every session (parked long-polls get `1`,
    /// websockets are closed), wait a bounded time for connections to finish, then stop the
    /// peer server and the registry.
    pub async fn shutdown(mut self) -> io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.node.gateway.stop();
        let served = match self.server.0.take() {
            None => Ok(()),
            Some(mut server) => {
                let timeout = self.node.config.shutdown_timeout;
                match tokio::time::timeout(timeout, &mut server).await {
                    Ok(Ok(result)) => result,
                    Ok(Err(join)) => Err(io::Error::other(join)),
                    Err(_) => {
                        server.abort();
                        Ok(())
                    }
                }
            }
        };
        let stopped = self.node.shutdown().await;
        served.and(stopped)
    }
}

/// Serve `io` at `/socket.io/` on `listener` until SIGINT or SIGTERM, then shut down
/// gracefully. The shortest way to run a server from a program: reference defaults, no CORS,
/// `/healthz` and `/metrics`.
pub async fn serve(listener: TcpListener, io: SocketIo) -> io::Result<()> {
    let node = Node::builder(Config::default())
        .socketio(io)
        .listen(listener)
        .build()
        .await?;
    let app = node.router();
    node.serve(app).await
}

/// Resolves on SIGINT or SIGTERM (SIGINT only where there is no SIGTERM).
pub async fn shutdown_signal() {
    stop_signal().await;
}

/// Which signal asked a process to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// SIGINT: stop now.
    Interrupt,
    /// SIGTERM: stop gracefully, handing work over first.
    Terminate,
}

/// The first SIGINT or SIGTERM (SIGINT only where there is no SIGTERM).
async fn stop_signal() -> Stop {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => Stop::Interrupt,
                    _ = term.recv() => Stop::Terminate,
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                Stop::Interrupt
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        Stop::Interrupt
    }
}
