//! What a cluster node runs besides its engines: the registry (joining or forming the cluster),
//! an adapter per Socket.IO mount, the peer gRPC server, and the task that keeps the peer
//! directory equal to the Raft membership.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tonic::service::Routes;

use super::ClusterConfig;
use super::drain::DrainReport;
use crate::adapter::{AdapterConfig, AdapterServed, AdapterService, Checkpoints, GrpcAdapter};
use crate::engine::{Application, Engine, EngineConfig};
use crate::gateway::service::ForwardService;
use crate::gateway::{Gateway, Recorded};
use crate::http;
use crate::registry::admin::AdminService;
use crate::registry::{NodeId, Registry, RegistryConfig};
use crate::rpc::{self, Peers};
use crate::socketio::SocketIo;

/// How long a stopping node's peer server may take to end its calls. The peers hold their
/// link streams open for as long as they run, so waiting for those to end would wait for the
/// peers to stop (a whole cluster stopping at once would wait out the shutdown timeout); what
/// the node owed its peers was answered when its sessions closed, before this.
const PEER_GRACE: Duration = Duration::from_millis(300);

/// The running cluster side of a node.
pub(super) struct ClusterParts {
    /// This node's routing front, for its counters and to drain it.
    gateway: Gateway,
    /// Set once the node drains: it then reports itself unhealthy.
    draining: Arc<AtomicBool>,
    /// Notified when `nonstick drain` asks this node to drain and stop.
    pub(super) drain_asked: Arc<Notify>,
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

/// Start the registry, connect every Socket.IO server of `servers` to the other nodes, build
/// the engines of `mounts` (path, settings, application) with sids that name this node, and
/// serve the peer gRPC services.
pub(super) async fn start(
    cluster: ClusterConfig,
    mounts: Vec<(String, EngineConfig, Arc<dyn Application>)>,
    servers: &HashMap<String, SocketIo>,
    adapter: AdapterConfig,
) -> io::Result<(Gateway, ClusterParts)> {
    let node = cluster.node_id;
    let grpc = cluster.grpc.bind().await?;
    let grpc_addr = grpc.local_addr()?;
    let peers = Peers::with_tls(cluster.secret.clone(), cluster.tls.clone());
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
    let mut adapters = Vec::new();
    let checkpoints = Checkpoints::default();
    for (path, io) in servers {
        let grpc_adapter = Arc::new(GrpcAdapter::new(
            node,
            path,
            peers.clone(),
            registry.clone(),
            adapter,
            checkpoints.clone(),
        ));
        io.set_adapter(grpc_adapter.clone());
        adapters.push(grpc_adapter);
    }
    let engines = mounts.into_iter().map(|(path, mut config, app)| {
        config.sid_prefix = format!("{node}.");
        let app = Arc::new(Recorded::new(app, registry.clone(), node)) as Arc<dyn Application>;
        (path, Engine::new(config, app))
    });
    let gateway = Gateway::clustered(node, engines, registry.clone(), peers.clone());

    let drain_asked = Arc::new(Notify::new());
    let (adapter_service, served) =
        AdapterService::server(servers.clone(), checkpoints, adapter.max_message);
    let routes = Routes::new(raft)
        .add_service(ForwardService::server(gateway.clone()))
        .add_service(adapter_service)
        .add_service(AdminService::server(registry.clone(), drain_asked.clone()));
    let (stop_grpc, grpc_stopped) = oneshot::channel::<()>();
    let (secret, tls) = (cluster.secret.clone(), cluster.tls.clone());
    let grpc_task = tokio::spawn(async move {
        let stopped = async {
            let _ = grpc_stopped.await;
        };
        if let Err(e) = rpc::serve(grpc, routes, secret, tls.as_ref(), stopped).await {
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
    // A node starts without a lease: it serves once it has taken over what an earlier
    // process of it left in the registry.
    tokio::spawn(gateway.clone().keep_fenced());
    let parts = ClusterParts {
        gateway: gateway.clone(),
        draining: Arc::new(AtomicBool::new(false)),
        drain_asked,
        adapters,
        served,
        registry,
        peers,
        grpc_addr,
        stop_grpc: Some(stop_grpc),
        grpc: Some(grpc_task),
        sync,
    };
    Ok((gateway, parts))
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

impl ClusterParts {
    pub(super) fn registry(&self) -> &Registry {
        &self.registry
    }

    pub(super) fn peers(&self) -> &Peers {
        &self.peers
    }

    pub(super) fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// Healthy while the node serves (it holds its lease and has taken over what an earlier
    /// process left), the registry reaches a Raft majority and the node is not draining.
    pub(super) fn health(&self) -> http::Health {
        let (registry, draining) = (self.registry.clone(), self.draining.clone());
        let gateway = self.gateway.clone();
        Arc::new(move || {
            gateway.serving()
                && gateway.reclaimed()
                && registry.is_healthy()
                && !draining.load(Ordering::Acquire)
        })
    }

    /// Report unhealthy, move the polling sessions to the other members, close the
    /// websockets (see [`super::drain`]).
    pub(super) async fn drain(&self, timeout: Duration, linger: Duration) -> DrainReport {
        self.draining.store(true, Ordering::Release);
        let me = self.registry.node_id();
        let members: Vec<NodeId> = self
            .registry
            .membership()
            .into_iter()
            .map(|(id, _, _)| id)
            .filter(|id| *id != me && self.peers.contains(*id))
            .collect();
        super::drain::drain(&self.gateway, &members, timeout, linger).await
    }

    /// What `/metrics` reads of the cluster side.
    pub(super) fn metric_sources(&self) -> super::metrics::ClusterSources {
        super::metrics::ClusterSources {
            registry: self.registry.clone(),
            adapters: self.adapters.clone(),
            served: self.served.clone(),
        }
    }

    /// Stop the peer server (waiting at most `timeout`, and at most [`PEER_GRACE`], for its
    /// calls to end) and the registry.
    pub(super) async fn shutdown(mut self, timeout: Duration) -> io::Result<()> {
        self.sync.abort();
        if let Some(stop) = self.stop_grpc.take() {
            let _ = stop.send(());
        }
        if let Some(mut grpc) = self.grpc.take()
            && tokio::time::timeout(timeout.min(PEER_GRACE), &mut grpc)
                .await
                .is_err()
        {
            grpc.abort();
        }
        self.registry.shutdown().await.map_err(io::Error::other)
    }
}

impl Drop for ClusterParts {
    fn drop(&mut self) {
        self.sync.abort();
        if let Some(grpc) = self.grpc.take() {
            grpc.abort();
        }
    }
}
