//! Wiring of one server process: build the engines, the gateway and the HTTP front (and, for a
//! cluster node, the registry and the peer gRPC server), run until shutdown.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::service::Routes;

use crate::adapter::{AdapterLosses, AdapterServed, AdapterService, GrpcAdapter};
use crate::app::{self, AppMount};
use crate::config::{AppKind, Config};
use crate::engine::{Application, Engine};
use crate::gateway::service::ForwardService;
use crate::gateway::{Gateway, Recorded};
use crate::http::{self, Cors, CorsOrigins, HttpConfig, Page};
use crate::registry::admin::AdminService;
use crate::registry::{NodeId, Registry, RegistryConfig};
use crate::rpc::{self, Peers, Secret};
use crate::socketio::SocketIo;

/// A running node. Stop it with [`RunningNode::shutdown`]; dropping it stops it too, abruptly.
pub struct RunningNode {
    addr: SocketAddr,
    gateway: Gateway,
    /// The Socket.IO servers of the mounts, by path.
    servers: HashMap<String, SocketIo>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<io::Result<()>>>,
    shutdown_timeout: Duration,
    cluster: Option<ClusterParts>,
}

/// What a cluster node runs besides HTTP.
struct ClusterParts {
    /// The adapters of the Socket.IO mounts, for their counters.
    adapters: Vec<Arc<GrpcAdapter>>,
    /// The counters of the adapter requests peers sent here.
    served: AdapterServed,
    registry: Registry,
    /// The peer directory: the members and this node's links to them.
    peers: Peers,
    grpc_addr: SocketAddr,
    stop_grpc: Option<oneshot::Sender<()>>,
    grpc: Option<JoinHandle<()>>,
    /// Keeps the peer directory in step with the Raft membership.
    sync: JoinHandle<()>,
}

impl std::fmt::Debug for RunningNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningNode")
            .field("addr", &self.addr)
            .field("grpc", &self.cluster.as_ref().map(|c| c.grpc_addr))
            .finish()
    }
}

/// The cluster side of a node's settings.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// This node's id in the cluster (also the owner hint in its sids).
    pub node_id: NodeId,
    /// Every member's gRPC address, this node included. The cluster initializes itself from
    /// this list once; later starts find it initialized.
    pub peers: BTreeMap<NodeId, String>,
    /// Where this node's registry keeps its Raft log and state (exclusive to this process).
    pub data_dir: PathBuf,
    /// The secret every inter-node call must carry.
    pub secret: Secret,
    /// Join a running cluster (to be added with `nonstick member add`) instead of forming one
    /// from `peers`.
    pub join: bool,
}

/// Starts a node serving its configured built-in application on `listener`. Must be
/// called inside a Tokio runtime.
pub fn start(config: Config, listener: TcpListener) -> io::Result<RunningNode> {
    let mounts = app::mounts(config.app, &config);
    let servers = socketio_servers(&mounts);
    let gateway = Gateway::local(engines(mounts, |app| app));
    start_http(config, gateway, servers, listener, None)
}

/// Starts a node serving the Socket.IO server `io` at `/socket.io/`, with the engine, HTTP
/// and shutdown settings of `config` (its `app` and the built-in app's settings are not
/// used). Must be called inside a Tokio runtime.
pub fn start_socketio(
    config: Config,
    io: SocketIo,
    listener: TcpListener,
) -> io::Result<RunningNode> {
    let mounts = vec![app::socketio_mount(config.engine.clone(), io)];
    let servers = socketio_servers(&mounts);
    let gateway = Gateway::local(engines(mounts, |app| app));
    start_http(config, gateway, servers, listener, None)
}

/// Starts a cluster node: its registry (joining or initializing the cluster), its peer gRPC
/// server on `grpc` and its HTTP front on `http`, serving the configured built-in application.
/// A request for a session owned by another node is forwarded there.
pub async fn start_cluster(
    mut config: Config,
    cluster: ClusterConfig,
    http: TcpListener,
    grpc: TcpListener,
) -> io::Result<RunningNode> {
    let node = cluster.node_id;
    let grpc_addr = grpc.local_addr()?;
    let peers = Peers::new(cluster.secret.clone());
    for (id, addr) in &cluster.peers {
        peers.set(*id, addr).map_err(io::Error::other)?;
    }
    let (registry, raft) = Registry::start(RegistryConfig::new(
        node,
        cluster.data_dir.clone(),
        peers.clone(),
    ))
    .await
    .map_err(io::Error::other)?;
    config.node_id = node.to_string();
    config.engine.sid_prefix = format!("{node}.");
    let mounts = app::mounts(config.app, &config);
    let servers = socketio_servers(&mounts);
    let mut adapters = Vec::new();
    for (path, io) in &servers {
        let adapter = Arc::new(GrpcAdapter::new(
            node,
            path,
            peers.clone(),
            registry.clone(),
            config.adapter,
        ));
        io.set_adapter(adapter.clone());
        adapters.push(adapter);
    }
    let recorder = registry.clone();
    let engines = engines(mounts, move |app| {
        Arc::new(Recorded::new(app, recorder.clone(), node)) as Arc<dyn Application>
    });
    let gateway = Gateway::clustered(node, engines, registry.clone(), peers.clone());

    let (adapter_service, served) =
        AdapterService::server(servers.clone(), config.adapter.max_message);
    let routes = Routes::new(raft)
        .add_service(ForwardService::server(gateway.clone()))
        .add_service(adapter_service)
        .add_service(AdminService::server(registry.clone()));
    let (stop_grpc, grpc_stopped) = oneshot::channel::<()>();
    let secret = cluster.secret.clone();
    let grpc_task = tokio::spawn(async move {
        let stopped = async {
            let _ = grpc_stopped.await;
        };
        if let Err(e) = rpc::serve(grpc, routes, secret, stopped).await {
            tracing::error!(%e, "peer gRPC server failed");
        }
    });
    // Every member may try: the first one forms the cluster, the others find it formed.
    if !cluster.join {
        let members = cluster.peers.clone();
        let init = registry.clone();
        tokio::spawn(async move {
            if let Err(e) = init.initialize(members).await {
                tracing::warn!(%e, "cluster initialization");
            }
        });
    }
    // Members added later (`nonstick member add`) become reachable from every node: the Raft
    // membership carries their addresses.
    let sync = tokio::spawn(sync_peers(registry.clone(), peers.clone()));
    start_http(
        config,
        gateway,
        servers,
        http,
        Some(ClusterParts {
            adapters,
            served,
            registry,
            peers,
            grpc_addr,
            stop_grpc: Some(stop_grpc),
            grpc: Some(grpc_task),
            sync,
        }),
    )
}

/// Serve `io` at `/socket.io/` on `listener` until SIGINT or SIGTERM, then shut down
/// gracefully. The shortest way to run a server from a program: reference defaults, no CORS,
/// no page, `/healthz` and `/metrics`.
pub async fn serve(listener: TcpListener, io: SocketIo) -> io::Result<()> {
    let config = Config {
        page: false,
        cors_origins: None,
        client_bundle: None,
        ..Config::new(AppKind::Demo)
    };
    let node = start_socketio(config, io, listener)?;
    shutdown_signal().await;
    node.shutdown().await
}

/// Keep `peers` equal to the Raft membership, once a second: members added later become
/// reachable, moved ones are reached at their new address, and a node that left loses its
/// links (and with them any routing to it).
async fn sync_peers(registry: Registry, peers: Peers) {
    loop {
        let members: BTreeMap<NodeId, String> = registry
            .membership()
            .into_iter()
            .map(|(id, addr, _)| (id, addr))
            .collect();
        // Empty until the cluster is formed: the static peer list stands until then.
        if !members.is_empty()
            && let Err(e) = peers.sync(&members)
        {
            tracing::warn!(%e, "member with an unusable address");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The Socket.IO servers among `mounts`, by path.
fn socketio_servers(mounts: &[AppMount]) -> HashMap<String, SocketIo> {
    mounts
        .iter()
        .filter_map(|m| Some((m.path.clone(), m.socketio.clone()?)))
        .collect()
}

/// An engine per mount, each application passed through `wrap` first.
fn engines(
    mounts: Vec<AppMount>,
    wrap: impl Fn(Arc<dyn Application>) -> Arc<dyn Application>,
) -> Vec<(String, Engine)> {
    mounts
        .into_iter()
        .map(|m| (m.path, Engine::new(m.engine, wrap(m.app))))
        .collect()
}

fn start_http(
    config: Config,
    gateway: Gateway,
    servers: HashMap<String, SocketIo>,
    listener: TcpListener,
    cluster: Option<ClusterParts>,
) -> io::Result<RunningNode> {
    let addr = listener.local_addr()?;
    let cors = config.cors_origins.as_ref().map(|origins| Cors {
        origins: if origins.iter().any(|o| o == "*") {
            CorsOrigins::Any
        } else {
            CorsOrigins::List(origins.clone())
        },
        credentials: config.cors_credentials,
    });
    let router = http::router(
        gateway.clone(),
        HttpConfig {
            node_id: config.node_id.clone(),
            cors,
            cookie: config.cookie.then(|| "io".to_owned()),
            page: config.page.then(|| demo_page(&config)),
            healthy: cluster.as_ref().map(|c| {
                let registry = c.registry.clone();
                Arc::new(move || registry.is_healthy()) as http::Health
            }),
            counters: cluster.as_ref().map(|c| {
                let (registry, adapters) = (c.registry.clone(), c.adapters.clone());
                let served = c.served.clone();
                Arc::new(move || {
                    let losses = |f: fn(AdapterLosses) -> u64| {
                        adapters.iter().map(|a| f(a.losses())).sum::<u64>()
                    };
                    vec![
                        (
                            "nonstick_adapter_dropped_total",
                            "Broadcasts and actions not sent to a peer whose queue was full.",
                            losses(|l| l.queue_full),
                        ),
                        (
                            "nonstick_adapter_stale_total",
                            "Broadcasts and actions dropped after waiting longer than their maximum age for a peer.",
                            losses(|l| l.stale),
                        ),
                        (
                            "nonstick_adapter_expired_total",
                            "Broadcasts and actions from peers dropped on arrival: their batch came later than its maximum age.",
                            served.expired(),
                        ),
                        (
                            "nonstick_adapter_unconfirmed_total",
                            "Broadcasts and actions in batches a peer did not confirm (unreachable, link broken, deadline passed).",
                            losses(|l| l.unconfirmed),
                        ),
                        (
                            "nonstick_registry_records_dropped_total",
                            "Socket and session records not written: the registry's write queue was full.",
                            registry.dropped_records(),
                        ),
                        (
                            "nonstick_registry_records_failed_total",
                            "Socket and session records given up after failing to commit several times.",
                            registry.failed_records(),
                        ),
                    ]
                }) as http::Counters
            }),
        },
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let listener = listener.tap_io(|tcp| {
        // Small Engine.IO packets must not wait for Nagle.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY failed: {e}");
        }
    });
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    let server = tokio::spawn(async move {
        axum::serve(listener, service)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    tracing::info!(%addr, node = %config.node_id, "listening");
    Ok(RunningNode {
        addr,
        gateway,
        servers,
        stop: Some(stop),
        server: Some(server),
        shutdown_timeout: config.shutdown_timeout,
        cluster,
    })
}

impl RunningNode {
    /// The address the node's HTTP front listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of a cluster node's peer gRPC server.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.cluster.as_ref().map(|c| c.grpc_addr)
    }

    /// A cluster node's registry.
    pub fn registry(&self) -> Option<&Registry> {
        self.cluster.as_ref().map(|c| &c.registry)
    }

    /// A cluster node's peer directory: the members it knows and its links to them.
    pub fn peers(&self) -> Option<&Peers> {
        self.cluster.as_ref().map(|c| &c.peers)
    }

    /// The Socket.IO server served at `path` (e.g. `/socket.io/`), to act on its sockets from
    /// a program.
    pub fn socketio(&self, path: &str) -> Option<SocketIo> {
        self.servers.get(path).cloned()
    }

    /// The engines of the node's mounts.
    pub fn engines(&self) -> Vec<Engine> {
        self.gateway.mounts().into_iter().map(|(_, e)| e).collect()
    }

    /// Graceful stop: stop accepting, close every session (parked long-polls get `1`,
    /// websockets are closed), wait a bounded time for connections to finish, then stop the
    /// peer server and the registry.
    pub async fn shutdown(mut self) -> io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        for engine in self.engines() {
            engine.shutdown();
        }
        let result = match self.server.take() {
            None => Ok(()),
            Some(mut server) => {
                match tokio::time::timeout(self.shutdown_timeout, &mut server).await {
                    Ok(Ok(result)) => result,
                    Ok(Err(join)) => Err(io::Error::other(join)),
                    Err(_) => {
                        server.abort();
                        Ok(())
                    }
                }
            }
        };
        if let Some(mut cluster) = self.cluster.take() {
            cluster.sync.abort();
            if let Some(stop) = cluster.stop_grpc.take() {
                let _ = stop.send(());
            }
            if let Some(grpc) = cluster.grpc.take() {
                let _ = tokio::time::timeout(self.shutdown_timeout, grpc).await;
            }
            cluster
                .registry
                .shutdown()
                .await
                .map_err(io::Error::other)?;
        }
        result
    }
}

impl Drop for RunningNode {
    fn drop(&mut self) {
        for engine in self.engines() {
            engine.shutdown();
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.sync.abort();
            if let Some(grpc) = cluster.grpc.take() {
                grpc.abort();
            }
        }
    }
}

/// Resolves on SIGINT or SIGTERM (SIGINT only where there is no SIGTERM).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The demo chat page, with the browser client read from disk once. A missing bundle is not
/// fatal: the page then says how to install it.
fn demo_page(config: &Config) -> Page {
    let client_bundle = config.client_bundle.as_ref().and_then(|path| {
        std::fs::read(path)
            .inspect_err(|e| {
                tracing::warn!(
                    path = %path.display(),
                    "Socket.IO browser client not found ({e}); run `npm ci --prefix web`"
                );
            })
            .ok()
    });
    Page {
        html: include_str!("../web/chat.html"),
        client_bundle: client_bundle.map(Into::into),
    }
}
