//! The session registry over real sled directories and real gRPC on 127.0.0.1:0: openraft's
//! storage suite, a 3-node cluster, snapshot catch-up of a learner, restart from disk, the
//! cluster secret, and (ignored, run in release) write throughput.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nonstick::registry::store::{self, LogStore, StateMachineStore};
use nonstick::registry::{
    Command, NodeId, Registry, RegistryConfig, RegistryError, Response, Role, Transport, TypeConfig,
};
use nonstick::rpc::pb::raft::RaftBytes;
use nonstick::rpc::pb::raft::raft_service_client::RaftServiceClient;
use nonstick::rpc::{self, Peers, Secret};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{StorageError, StorageIOError};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::service::Routes;

/// Upper bound of any wait for the cluster to converge.
const CONVERGE: Duration = Duration::from_secs(20);

const SECRET: &str = "test-cluster-secret-of-thirty-two-chars";

fn init_tracing() {
    // openraft logs every late vote reply at WARN; keep test output to real errors.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for SledBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<NodeId>> {
        let dir = tempfile::tempdir().map_err(|e| StorageIOError::<NodeId>::write(&e))?;
        let (log, sm) = store::open(dir.path())?;
        Ok((dir, log, sm))
    }
}

/// openraft's own conformance suite against the sled store. A plain test: the suite makes its
/// own runtime.
#[test]
fn sled_store_passes_the_openraft_storage_suite() {
    init_tracing();
    Suite::test_all(SledBuilder).expect("storage suite");
}

/// One registry node: its registry, its gRPC server and its data directory.
struct Member {
    id: NodeId,
    addr: String,
    dir: PathBuf,
    registry: Registry,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), rpc::RpcError>>>,
}

impl Member {
    async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(CONVERGE, server).await;
        }
        self.registry.shutdown().await.expect("shutdown");
    }
}

fn config(id: NodeId, dir: &Path, peers: Peers) -> RegistryConfig {
    let mut config = RegistryConfig::new(id, dir, peers);
    config.heartbeat_interval = Duration::from_millis(100);
    config.election_timeout_min = Duration::from_millis(600);
    config.election_timeout_max = Duration::from_millis(1200);
    config
}

/// A peer directory with the cluster secret and these members' addresses.
fn peers_of<'a>(members: impl IntoIterator<Item = (NodeId, &'a str)>) -> Peers {
    let peers = Peers::new(Secret::new(SECRET).expect("secret"));
    for (id, addr) in members {
        peers.set(id, addr).expect("peer address");
    }
    peers
}

async fn bind() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    (listener, addr)
}

/// Starts a member on `listener`, retrying briefly while the previous owner of `dir` in this
/// process releases sled's lock.
async fn start_member(config: RegistryConfig, listener: TcpListener, addr: String) -> Member {
    let mut tries = 0;
    let (registry, service) = loop {
        match Registry::start(config.clone()).await {
            Ok(started) => break started,
            Err(RegistryError::Storage(e)) if tries < 50 => {
                tries += 1;
                tracing::debug!("data dir busy: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("start registry {}: {e}", config.node_id),
        }
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let secret = Secret::new(SECRET).expect("secret");
    let server = tokio::spawn(rpc::serve(
        listener,
        Routes::new(service),
        secret,
        None,
        async move {
            let _ = stopped.await;
        },
    ));
    Member {
        id: config.node_id,
        addr,
        dir: config.data_dir,
        registry,
        stop: Some(stop),
        server: Some(server),
    }
}

/// `n` members in fresh directories under `root`, each knowing every address, initialized
/// from the static member list (every node calls `initialize`).
async fn cluster(root: &TempDir, n: u64, tune: impl Fn(&mut RegistryConfig)) -> Vec<Member> {
    let mut listeners = Vec::new();
    for id in 1..=n {
        let (listener, addr) = bind().await;
        listeners.push((id, listener, addr));
    }
    let members: BTreeMap<NodeId, String> = listeners
        .iter()
        .map(|(id, _, addr)| (*id, addr.clone()))
        .collect();
    let mut nodes = Vec::new();
    for (id, listener, addr) in listeners {
        let peers = peers_of(members.iter().map(|(id, addr)| (*id, addr.as_str())));
        let mut config = config(id, &root.path().join(format!("node{id}")), peers);
        tune(&mut config);
        nodes.push(start_member(config, listener, addr).await);
    }
    let inits = nodes.iter().map(|m| m.registry.initialize(members.clone()));
    for result in futures::future::join_all(inits).await {
        result.expect("initialize");
    }
    nodes
}

/// Polls `check` every 20 ms until it holds, failing after [`CONVERGE`].
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + CONVERGE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The leader once every member agrees on it.
async fn agreed_leader(members: &[Member]) -> NodeId {
    eventually("an agreed leader", || {
        let leaders: BTreeSet<_> = members.iter().map(|m| m.registry.leader()).collect();
        leaders.len() == 1 && leaders.iter().all(Option::is_some)
    })
    .await;
    members[0].registry.leader().expect("leader")
}

fn create(sid: &str, owner: NodeId) -> Command {
    Command::CreateSession {
        sid: sid.to_owned(),
        owner,
        transport: Transport::Polling,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_initialize_and_writes_through_a_follower_reach_every_node() {
    init_tracing();
    let root = tempfile::tempdir().expect("tempdir");
    let mut nodes = cluster(&root, 3, |_| {}).await;
    let leader = agreed_leader(&nodes).await;
    // Initializing again (a static peer list on restart) changes nothing.
    let members: BTreeMap<_, _> = nodes.iter().map(|m| (m.id, m.addr.clone())).collect();
    nodes[0]
        .registry
        .initialize(members)
        .await
        .expect("re-initialize");

    let follower = nodes.iter().find(|m| m.id != leader).expect("a follower");
    let f = &follower.registry;
    assert_eq!(
        f.write(create("s1", follower.id)).await,
        Ok(Response::Applied)
    );
    assert_eq!(f.write(create("s1", 9)).await, Ok(Response::AlreadyExists));
    // Concurrent writes through the follower: batched, each gets its own answer.
    let writes = (0..50).map(|i| f.write(create(&format!("c{i}"), follower.id)));
    for result in futures::future::join_all(writes).await {
        assert_eq!(result, Ok(Response::Applied));
    }
    let set_owner = |epoch| Command::SetOwner {
        sid: "s1".into(),
        node: leader,
        epoch,
    };
    assert_eq!(f.write(set_owner(1)).await, Ok(Response::Applied));
    assert_eq!(
        f.write(set_owner(1)).await,
        Ok(Response::StaleEpoch {
            current: 1,
            owner: leader
        })
    );
    let batch = Command::Batch(vec![
        Command::JoinNamespace {
            sid: "s1".into(),
            nsp: "/chat".into(),
            socket_id: "sock1".into(),
            pid: Some("pid1".into()),
        },
        Command::JoinRooms {
            sid: "s1".into(),
            nsp: "/chat".into(),
            rooms: vec!["lobby".into()],
        },
        Command::SetData {
            sid: "s1".into(),
            nsp: "/chat".into(),
            data: serde_json::json!({"user": "ann"}),
        },
        Command::JoinRooms {
            sid: "nope".into(),
            nsp: "/chat".into(),
            rooms: vec!["x".into()],
        },
    ]);
    assert_eq!(
        f.write(batch).await,
        Ok(Response::Batch(vec![
            Response::Applied,
            Response::Applied,
            Response::Applied,
            Response::UnknownSid
        ]))
    );

    // A linearizable read on a follower sees the last write at once.
    let record = f
        .read_linearizable("s1")
        .await
        .expect("linearizable read")
        .expect("s1 recorded");
    assert_eq!(record.owner, leader);
    assert_eq!(record.epoch, 1);
    let socket = &record.namespaces["/chat"];
    assert_eq!(socket.socket_id, "sock1");
    assert!(socket.rooms.contains("lobby"));
    assert_eq!(socket.data, serde_json::json!({"user": "ann"}));

    for m in &nodes {
        eventually("every node applied the writes", || {
            m.registry
                .session("s1")
                .is_some_and(|r| r.epoch == 1 && !r.namespaces.is_empty())
                && m.registry.sessions_owned_by(follower.id).len() == 50
        })
        .await;
        assert!(m.registry.is_healthy(), "node {} healthy", m.id);
        let membership = m.registry.membership();
        assert_eq!(membership.len(), 3);
        assert!(membership.iter().all(|(_, _, voter)| *voter));
    }
    let removed = nodes[0]
        .registry
        .write(Command::DeleteSessionsOf {
            node: follower.id,
            at_ms: 0,
        })
        .await;
    assert_eq!(removed, Ok(Response::Deleted { count: 50 }));

    for m in &mut nodes {
        m.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_added_after_purge_catches_up_by_snapshot_and_is_promoted() {
    init_tracing();
    let root = tempfile::tempdir().expect("tempdir");
    let tune = |c: &mut RegistryConfig| {
        c.snapshot_every = 20;
        c.logs_kept_after_snapshot = 0;
    };
    let mut nodes = cluster(&root, 3, tune).await;
    let leader_id = agreed_leader(&nodes).await;
    let leader = nodes.iter().find(|m| m.id == leader_id).expect("leader");
    for i in 0..100 {
        let result = leader
            .registry
            .write(create(&format!("s{i}"), leader_id))
            .await;
        assert_eq!(result, Ok(Response::Applied));
    }
    leader.registry.trigger_snapshot().await.expect("snapshot");
    eventually("the leader purged its log", || {
        let s = leader.registry.status();
        s.purged_index.is_some() && s.purged_index >= Some(60)
    })
    .await;

    let (listener, addr) = bind().await;
    let peers = peers_of(nodes.iter().map(|m| (m.id, m.addr.as_str())));
    let mut learner =
        start_member(config(4, &root.path().join("node4"), peers), listener, addr).await;
    leader
        .registry
        .add_learner(4, &learner.addr)
        .await
        .expect("add learner");
    eventually("the learner installed the snapshot and caught up", || {
        let s = learner.registry.status();
        s.snapshot_index.is_some() && s.sessions == 100
    })
    .await;
    assert_eq!(learner.registry.status().role, Role::Learner);

    let voters: BTreeSet<NodeId> = [1, 2, 3, 4].into();
    leader
        .registry
        .change_membership(voters)
        .await
        .expect("promote");
    eventually("the learner became a voter", || {
        learner
            .registry
            .membership()
            .iter()
            .any(|(id, _, voter)| *id == 4 && *voter)
    })
    .await;
    assert_eq!(
        learner.registry.write(create("late", 4)).await,
        Ok(Response::Applied)
    );
    for m in &nodes {
        eventually("the new voter's write reached everyone", || {
            m.registry.session("late").is_some()
        })
        .await;
    }

    learner.stop().await;
    for m in &mut nodes {
        m.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_every_node_from_its_directory_keeps_the_sessions() {
    // No snapshot yet: each node rebuilds its state from its log alone.
    restart_keeps_the_sessions(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_from_a_snapshot_and_the_log_after_it_keeps_the_sessions() {
    restart_keeps_the_sessions(true).await;
}

/// Writes 30 sessions (then, with `snapshot`, snapshots every node and purges its log), moves
/// one session with a later write, stops and restarts all three nodes from their directories,
/// and checks that every node has all of it back before any election.
async fn restart_keeps_the_sessions(snapshot: bool) {
    init_tracing();
    let root = tempfile::tempdir().expect("tempdir");
    let mut nodes = cluster(&root, 3, |c| c.logs_kept_after_snapshot = 0).await;
    agreed_leader(&nodes).await;
    let writes = (0..30).map(|i| nodes[1].registry.write(create(&format!("r{i}"), 2)));
    for result in futures::future::join_all(writes).await {
        assert_eq!(result, Ok(Response::Applied));
    }
    if snapshot {
        for m in &nodes {
            eventually("all 30 applied", || m.registry.status().sessions == 30).await;
            m.registry.trigger_snapshot().await.expect("snapshot");
            eventually("the snapshot is built and the log purged", || {
                m.registry.status().purged_index.is_some()
            })
            .await;
        }
    }
    assert_eq!(
        nodes[2]
            .registry
            .write(Command::SetOwner {
                sid: "r0".into(),
                node: 3,
                epoch: 7
            })
            .await,
        Ok(Response::Applied)
    );
    for m in &nodes {
        eventually("all applied before the stop", || {
            m.registry.session("r0").is_some_and(|r| r.epoch == 7)
                && m.registry.status().sessions == 30
        })
        .await;
    }
    let ids_dirs: Vec<(NodeId, PathBuf)> = nodes.iter().map(|m| (m.id, m.dir.clone())).collect();
    for m in &mut nodes {
        m.stop().await;
    }
    drop(nodes);

    // Restart on new ports: the peer directories carry the new addresses.
    let mut listeners = Vec::new();
    for _ in &ids_dirs {
        listeners.push(bind().await);
    }
    let mut restarted = Vec::new();
    let addrs: Vec<(NodeId, String)> = ids_dirs
        .iter()
        .zip(&listeners)
        .map(|((id, _), (_, addr))| (*id, addr.clone()))
        .collect();
    for ((id, dir), (listener, addr)) in ids_dirs.into_iter().zip(listeners) {
        let peers = peers_of(addrs.iter().map(|(id, addr)| (*id, addr.as_str())));
        restarted.push(start_member(config(id, &dir, peers), listener, addr).await);
    }
    // Before any election the sessions are already back, from each node's own disk.
    for m in &restarted {
        let record = m.registry.session("r0").expect("r0 after restart");
        assert_eq!((record.owner, record.epoch), (3, 7));
        assert_eq!(m.registry.sessions_owned_by(2).len(), 29);
    }
    // Initializing with the static list again is a no-op, and the cluster serves writes.
    let members: BTreeMap<_, _> = addrs.iter().cloned().collect();
    restarted[0]
        .registry
        .initialize(members)
        .await
        .expect("re-initialize");
    agreed_leader(&restarted).await;
    assert_eq!(
        restarted[0].registry.write(create("after", 1)).await,
        Ok(Response::Applied)
    );
    assert_eq!(
        restarted[0]
            .registry
            .read_linearizable("r5")
            .await
            .map(|r| r.map(|r| r.owner)),
        Ok(Some(2))
    );
    for m in &mut restarted {
        m.stop().await;
    }
}

/// Sessions whose owner is not a member (a node that left without handing them over) are
/// forgotten by the leader, on every node; the others stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_of_a_node_that_is_not_a_member_are_forgotten() {
    init_tracing();
    let root = tempfile::tempdir().expect("tempdir");
    let mut nodes = cluster(&root, 3, |_| {}).await;
    agreed_leader(&nodes).await;
    for command in [create("gone-1", 9), create("gone-2", 9), create("kept", 2)] {
        assert_eq!(
            nodes[1].registry.write(command).await,
            Ok(Response::Applied)
        );
    }
    for m in &nodes {
        eventually("the departed node's sessions forgotten", || {
            m.registry.sessions_owned_by(9).is_empty() && m.registry.session("kept").is_some()
        })
        .await;
    }
    for m in &mut nodes {
        m.stop().await;
    }
}

/// A recorded command (nobody waits for it) whose batch cannot be committed is sent again
/// with pauses: it lands once a majority is back, or is given up and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_commands_are_retried_then_given_up_and_counted() {
    init_tracing();
    let root = tempfile::tempdir().expect("tempdir");
    let mut nodes = cluster(&root, 3, |c| c.write_timeout = Duration::from_millis(500)).await;
    agreed_leader(&nodes).await;
    let members: Vec<(NodeId, PathBuf, String)> = nodes
        .iter()
        .map(|m| (m.id, m.dir.clone(), m.addr.clone()))
        .collect();
    for m in &mut nodes[1..] {
        m.stop().await;
    }
    nodes.truncate(1);
    let alone = &nodes[0].registry;

    alone.record(create("given-up", 1));
    eventually("the record given up", || alone.failed_records() == 1).await;

    alone.record(create("late", 1));
    tokio::time::sleep(Duration::from_millis(800)).await;
    for (id, dir, addr) in &members[1..] {
        let listener = TcpListener::bind(addr.as_str()).await.expect("rebind");
        let peers = peers_of(members.iter().map(|(id, _, addr)| (*id, addr.as_str())));
        let mut config = config(*id, dir, peers);
        config.write_timeout = Duration::from_millis(500);
        nodes.push(start_member(config, listener, addr.clone()).await);
    }
    for m in &nodes {
        eventually("the retried record on every node", || {
            m.registry.session("late").is_some()
        })
        .await;
    }
    // Given up means sent no more. (An attempt already in the leader's log may still commit
    // when the majority returns, if that node is still leader then: Raft decides that, not
    // the retry loop.)
    assert_eq!(nodes[0].registry.failed_records(), 1);
    for m in &mut nodes {
        m.stop().await;
    }
}

#[tokio::test]
async fn a_call_without_the_cluster_secret_is_refused() {
    init_tracing();
    let root = tempfile::tempdir().expect("tempdir");
    let mut nodes = cluster(&root, 1, |_| {}).await;
    let addr = format!("http://{}", nodes[0].addr);
    let request = || tonic::Request::new(RaftBytes { data: Vec::new() });

    let channel = tonic::transport::Endpoint::from_shared(addr.clone())
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut bare = RaftServiceClient::new(channel.clone());
    let status = bare.read_index(request()).await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);

    let wrong =
        Peers::new(Secret::new("wrong-cluster-secret-of-thirty-two-chars").expect("secret"));
    wrong.set(1, &addr).expect("peer");
    let mut client = RaftServiceClient::new(wrong.channel(1).expect("channel"));
    let status = client.read_index(request()).await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);

    let right = Peers::new(Secret::new(SECRET).expect("secret"));
    right.set(1, &addr).expect("peer");
    let mut client = RaftServiceClient::new(right.channel(1).expect("channel"));
    client.read_index(request()).await.expect("accepted");
    // A one-node cluster is its own majority.
    eventually("the single node is healthy", || {
        nodes[0].registry.is_healthy()
    })
    .await;

    nodes[0].stop().await;
}

/// Write throughput over three in-process nodes. Run in release:
/// `cargo test --release --test it registry::write_throughput -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread")]
#[ignore = "measurement, run in release by hand"]
async fn write_throughput() {
    init_tracing();
    for inflight in [1, 4] {
        println!("-- at most {inflight} batches in flight per node");
        measure_writes(inflight).await;
    }
}

async fn measure_writes(inflight: usize) {
    let root = tempfile::tempdir().expect("tempdir");
    let mut nodes = cluster(&root, 3, |c| c.max_inflight_batches = inflight).await;
    let leader_id = agreed_leader(&nodes).await;
    let leader = nodes.iter().find(|m| m.id == leader_id).expect("leader");
    let follower = nodes.iter().find(|m| m.id != leader_id).expect("follower");
    let mut counter = 0u64;
    for (name, node) in [("leader", leader), ("follower", follower)] {
        let n = 300;
        let start = Instant::now();
        for _ in 0..n {
            counter += 1;
            let result = node
                .registry
                .write(create(&format!("q{counter}"), node.id))
                .await;
            assert_eq!(result, Ok(Response::Applied));
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "sequential via {name}: {n} writes in {secs:.2} s = {:.0} writes/s ({:.2} ms each)",
            n as f64 / secs,
            secs * 1000.0 / n as f64
        );
        for concurrency in [16usize, 64, 256] {
            let per_task = 8000 / concurrency;
            let start = Instant::now();
            let tasks = (0..concurrency).map(|t| {
                let registry = node.registry.clone();
                let owner = node.id;
                let base = counter + 1 + (t * per_task) as u64;
                tokio::spawn(async move {
                    for i in 0..per_task as u64 {
                        let result = registry
                            .write(create(&format!("q{}", base + i), owner))
                            .await;
                        assert_eq!(result, Ok(Response::Applied));
                    }
                })
            });
            for task in futures::future::join_all(tasks).await {
                task.expect("writer");
            }
            counter += (concurrency * per_task) as u64;
            let total = concurrency * per_task;
            let secs = start.elapsed().as_secs_f64();
            println!(
                "concurrent via {name}, {concurrency} writers: {total} writes in {secs:.2} s = {:.0} writes/s",
                total as f64 / secs
            );
        }
    }
    for m in &nodes {
        println!(
            "node {}: {} sessions, data dir {} KiB",
            m.id,
            m.registry.status().sessions,
            crate::fixture::dir_size(&m.dir) / 1024
        );
    }
    for m in &mut nodes {
        m.stop().await;
    }
}
