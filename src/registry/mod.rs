//! The session registry: a Raft-replicated record of every session's owner, epoch, transport,
//! namespaces, rooms and data, stored on sled on every node.
//!
//! [`Registry`] is the whole interface; openraft and sled stay inside this module (sled inside
//! [`store`] alone). A node starts it with [`Registry::start`], mounts the returned
//! [`RegistryService`] on its peer gRPC server ([`crate::rpc::serve`]), and calls
//! [`Registry::initialize`] with the static member list. After that:
//!
//! - [`Registry::write`] works on every node: a follower forwards to the leader itself, and
//!   concurrent writes of one node are grouped into one Raft entry ([`Command::Batch`]), so a
//!   burst of handshakes costs one replication round and one fsync, not one each;
//! - [`Registry::session`] and [`Registry::sessions_owned_by`] read the locally applied state
//!   (fast, possibly a few milliseconds behind the leader);
//! - [`Registry::read_linearizable`] reads after confirming with the leader that nothing newer
//!   is committed: use it before answering "unknown sid" for a sid this node has not seen.
//!
//! Failure model: a write returns once it is committed by a majority and applied locally
//! (on the leader; a follower's own state may apply it a moment later). It fails with
//! [`RegistryError::NoLeader`] when no majority is reachable within
//! [`RegistryConfig::write_timeout`]. A write retried after a lost connection may be applied
//! twice; commands are idempotent except that the repeat answers
//! [`Response::AlreadyExists`] / [`Response::StaleEpoch`].

#![allow(clippy::result_large_err)]

pub mod admin;
mod error;
mod lease;
mod network;
mod service;
mod state;
pub mod store;
mod types;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use openraft::error::{Fatal, RaftError};
use openraft::{BasicNode, Raft, ServerState, SnapshotPolicy};
use prometheus_client::metrics::histogram::Histogram;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use error::RegistryError;
pub use service::RaftGrpc;
pub use types::{
    Command, NodeId, Response, SavedSocket, SessionRecord, SocketRecord, Transport, TypeConfig,
};

use crate::rpc::Peers;
use crate::rpc::pb::raft::RaftBytes;
use crate::rpc::pb::raft::raft_service_client::RaftServiceClient;
use crate::rpc::pb::raft::raft_service_server::RaftServiceServer;
use service::{ForwardError, ReadIndexReply, WriteReply};
use store::StateView;

/// The gRPC service a node mounts so its peers can reach its registry.
pub type RegistryService = RaftServiceServer<RaftGrpc>;

/// Largest gRPC message of the registry protocol (batched log entries, snapshot chunks).
pub const MAX_MESSAGE_SIZE: usize = 64 << 20;

/// How many writes may wait for the batcher before `write` callers wait for room.
const WRITE_QUEUE: usize = 16 * 1024;

/// How many times a write or read is re-sent after "not leader" or an unreachable leader,
/// within its time limit.
const MAX_ATTEMPTS: u32 = 20;

/// Settings of one registry node.
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    /// This node's id (unique in the cluster, never reused for another data directory).
    pub node_id: NodeId,
    /// Where sled keeps this node's log and state. Exclusive to one process.
    pub data_dir: PathBuf,
    /// The peer directory shared with the node's other inter-node services.
    pub peers: Peers,
    /// How often the leader sends heartbeats; also the time limit of one append-entries call.
    pub heartbeat_interval: Duration,
    /// Lower bound of the randomized election timeout.
    pub election_timeout_min: Duration,
    /// Upper bound of the randomized election timeout.
    pub election_timeout_max: Duration,
    /// Build a snapshot after this many log entries since the previous one.
    pub snapshot_every: u64,
    /// Log entries kept after a snapshot (so a briefly lagging follower needs no snapshot).
    pub logs_kept_after_snapshot: u64,
    /// Most commands grouped into one Raft entry by the write batcher.
    pub max_batch: usize,
    /// How many batches may be replicating at once. 1 (the default) measured best: writes that
    /// arrive while a batch is in flight all leave together in the next one.
    pub max_inflight_batches: usize,
    /// Time limit of [`Registry::write`] and [`Registry::read_linearizable`], leader search
    /// and forwarding included.
    pub write_timeout: Duration,
    /// Time limit of a membership change, including a new learner's catch-up.
    pub membership_timeout: Duration,
    /// A member the leader has had no answer from for this long is taken as lost: its
    /// polling sessions go to the other members, its other sessions are forgotten with their
    /// sockets saved for recovery ([`Command::TakeOver`]).
    pub takeover_after: Duration,
    /// A node serves its sessions only while it has heard the leader (or, as the leader, a
    /// majority) within this long ([`Registry::has_lease`]): shorter than `takeover_after`,
    /// so that a node cut off stops before the others take its sessions over, and longer than
    /// an election, so that a leader's loss does not stop the others.
    pub serving_lease: Duration,
}

impl RegistryConfig {
    /// Settings with defaults suited to a LAN cluster (heartbeat 200 ms, elections after
    /// 1–2 s, snapshot every 10 000 entries, batches of up to 512 commands, one batch in flight,
    /// 5 s writes).
    pub fn new(node_id: NodeId, data_dir: impl Into<PathBuf>, peers: Peers) -> Self {
        Self {
            node_id,
            data_dir: data_dir.into(),
            peers,
            heartbeat_interval: Duration::from_millis(200),
            election_timeout_min: Duration::from_millis(1000),
            election_timeout_max: Duration::from_millis(2000),
            snapshot_every: 10_000,
            logs_kept_after_snapshot: 1_000,
            max_batch: 512,
            max_inflight_batches: 1,
            write_timeout: Duration::from_secs(5),
            membership_timeout: Duration::from_secs(30),
            takeover_after: Duration::from_secs(5),
            serving_lease: Duration::from_secs(4),
        }
    }

    fn raft_config(&self) -> Result<openraft::Config, RegistryError> {
        let config = openraft::Config {
            cluster_name: "nonstick".into(),
            heartbeat_interval: millis(self.heartbeat_interval),
            election_timeout_min: millis(self.election_timeout_min),
            election_timeout_max: millis(self.election_timeout_max),
            install_snapshot_timeout: millis(self.write_timeout),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every.max(1)),
            max_in_snapshot_log_to_keep: self.logs_kept_after_snapshot,
            // Entries are batches of up to `max_batch` commands: keep one append call (and one
            // gRPC message) well under MAX_MESSAGE_SIZE.
            max_payload_entries: 64,
            // Chunks travel as JSON byte arrays (about 4 bytes per byte).
            snapshot_max_chunk_size: 1 << 20,
            ..Default::default()
        };
        config
            .validate()
            .map_err(|e| RegistryError::Raft(format!("invalid raft settings: {e}")))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// This node's part in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// It leads: writes are committed through it.
    Leader,
    /// A voting follower.
    Follower,
    /// Standing for election.
    Candidate,
    /// A non-voting member catching up or replicating.
    Learner,
    /// Stopped.
    Shutdown,
}

/// A point-in-time view of this node's registry, for health checks, metrics and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryStatus {
    /// This node.
    pub node_id: NodeId,
    /// Its role.
    pub role: Role,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// The current Raft term.
    pub term: u64,
    /// Index of the last log entry.
    pub last_log_index: Option<u64>,
    /// Index of the last entry applied to the local state.
    pub applied_index: Option<u64>,
    /// Index covered by the current snapshot.
    pub snapshot_index: Option<u64>,
    /// Index up to which the log has been purged.
    pub purged_index: Option<u64>,
    /// Sessions in the local state.
    pub sessions: usize,
    /// Sockets saved for connection state recovery in the local state.
    pub saved_sockets: usize,
}

/// A handle to this node's registry. Cheap to clone; every clone talks to the same instance.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    core: Arc<Core>,
    state: StateView,
    writes: mpsc::Sender<PendingWrite>,
    /// Commands [`Registry::record`] dropped because the write queue was full.
    dropped: AtomicU64,
    /// The batcher and sweeper tasks, aborted on shutdown.
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Dies once the storage (and so sled's directory lock) is released.
    lease: Weak<()>,
    serving: Arc<lease::ServingLease>,
    /// When each peer last answered this node's appends (as the leader).
    contact: network::Contact,
    compactor: store::Compactor,
    membership_timeout: Duration,
    /// A leader whose last majority acknowledgement is older than this is unhealthy.
    election_timeout_max: Duration,
}

/// A lapse of this node's lease, caught up with ([`Registry::catch_up`]).
#[derive(Debug, Clone, Copy)]
pub struct Lapse(u64);

/// What the batcher and the write path share.
struct Core {
    node_id: NodeId,
    raft: Raft<TypeConfig>,
    peers: Peers,
    write_timeout: Duration,
    /// Recorded commands given up after [`RECORD_ATTEMPTS`] failed attempts.
    failed_records: AtomicU64,
    /// How long committed writes took, from this node (through the leader when it is another).
    commits: Histogram,
}

struct PendingWrite {
    command: Command,
    reply: oneshot::Sender<Result<Response, RegistryError>>,
    /// Nobody waits for it ([`Registry::record`]): when its batch fails it is sent again.
    retry: bool,
}

/// How many times a recorded command is tried before it is given up and counted.
const RECORD_ATTEMPTS: u32 = 5;

impl Registry {
    /// Opens the data directory, starts Raft and the write batcher, and returns the handle and
    /// the gRPC service to mount on this node's peer server. A directory with earlier state
    /// resumes it (the node rejoins its cluster); an empty one waits for
    /// [`Registry::initialize`] or to be added by the leader.
    pub async fn start(
        config: RegistryConfig,
    ) -> Result<(Registry, RegistryService), RegistryError> {
        let raft_config = Arc::new(config.raft_config()?);
        let dir = config.data_dir.clone();
        let (log_store, sm_store) = tokio::task::spawn_blocking(move || store::open(&dir))
            .await
            .map_err(|e| RegistryError::Storage(e.to_string()))?
            .map_err(|e| RegistryError::Storage(e.to_string()))?;
        let state = sm_store.view();
        let lease = sm_store.lease();
        let compactor = sm_store.compactor();
        let contact = network::Contact::default();
        let network = network::Network {
            peers: config.peers.clone(),
            contact: contact.clone(),
        };
        let raft = Raft::new(config.node_id, raft_config, network, log_store, sm_store)
            .await
            .map_err(|e| RegistryError::Raft(e.to_string()))?;
        let core = Arc::new(Core {
            node_id: config.node_id,
            raft: raft.clone(),
            peers: config.peers.clone(),
            write_timeout: config.write_timeout,
            failed_records: AtomicU64::new(0),
            // From a local commit (about a millisecond) to a write that waited for an election.
            commits: Histogram::new([
                0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
        });
        let (writes, queue) = mpsc::channel(WRITE_QUEUE);
        let batcher = tokio::spawn(run_batcher(
            core.clone(),
            queue,
            config.max_batch.max(1),
            config.max_inflight_batches.max(1),
        ));
        let sweeper = tokio::spawn(sweep(
            core.clone(),
            state.clone(),
            contact.clone(),
            config.takeover_after,
        ));
        let serving = Arc::new(lease::ServingLease::new(config.serving_lease));
        let service = RaftServiceServer::new(RaftGrpc::new(raft, serving.clone()))
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE);
        let registry = Registry {
            inner: Arc::new(Inner {
                core,
                state,
                writes,
                dropped: AtomicU64::new(0),
                tasks: Mutex::new(vec![batcher, sweeper]),
                lease,
                serving,
                contact,
                compactor,
                membership_timeout: config.membership_timeout,
                election_timeout_max: config.election_timeout_max,
            }),
        };
        Ok((registry, service))
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.inner.core.node_id
    }

    /// Forms the cluster from `members` (node id -> gRPC address), all voters. Every node of a
    /// static member list may call it with the same list: a node that is already initialized,
    /// or already received the membership from another, does nothing. The addresses are also
    /// added to [`Peers`] where unknown.
    pub async fn initialize(&self, members: BTreeMap<NodeId, String>) -> Result<(), RegistryError> {
        let core = &self.inner.core;
        for (id, addr) in &members {
            if core.peers.addr(*id).is_none() {
                core.peers
                    .set(*id, addr)
                    .map_err(|e| RegistryError::Membership(e.to_string()))?;
            }
        }
        if core.raft.is_initialized().await.map_err(fatal_error)? {
            return Ok(());
        }
        let nodes: BTreeMap<NodeId, BasicNode> = members
            .into_iter()
            .map(|(id, addr)| (id, BasicNode::new(addr)))
            .collect();
        match core.raft.initialize(nodes).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(()),
            Err(RaftError::APIError(e)) => Err(RegistryError::Membership(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(fatal_error(e)),
        }
    }

    /// Applies `command` through Raft and returns what it did. Works on any node; waits at
    /// most [`RegistryConfig::write_timeout`]. Concurrent calls are batched into one entry.
    pub async fn write(&self, command: Command) -> Result<Response, RegistryError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .writes
            .send(PendingWrite {
                command,
                reply,
                retry: false,
            })
            .await
            .map_err(|_| RegistryError::Shutdown)?;
        answer.await.map_err(|_| RegistryError::Shutdown)?
    }

    /// [`Registry::record`]s `command` as made by this node as its session's owner: it is
    /// applied only if the session is still this node's then ([`Command::AsOwner`]).
    pub fn record_as_owner(&self, command: Command) {
        self.record(command.as_owner(self.node_id()));
    }

    /// Queues `command` without waiting for it: commands recorded by one caller are applied in
    /// the order they were recorded, batched with other writes. When the write queue is full
    /// the command is dropped and counted ([`Registry::dropped_records`]) rather than letting
    /// the caller wait or the queue grow. A command whose batch fails to commit (no majority
    /// for a while) is sent again a few times, with growing pauses, then given up and counted
    /// ([`Registry::failed_records`]).
    pub fn record(&self, command: Command) {
        // Nobody waits for the answer: the batcher's reply goes nowhere.
        let (reply, _) = oneshot::channel();
        if self
            .inner
            .writes
            .try_send(PendingWrite {
                command,
                reply,
                retry: true,
            })
            .is_err()
        {
            self.inner.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// How many recorded commands were dropped because the write queue was full.
    pub fn dropped_records(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// How many recorded commands were given up after failing to commit several times.
    pub fn failed_records(&self) -> u64 {
        self.inner.core.failed_records.load(Ordering::Relaxed)
    }

    /// The locally applied record of `sid`.
    pub fn session(&self, sid: &str) -> Option<SessionRecord> {
        self.inner.state.session(sid)
    }

    /// The owner of `sid` in the locally applied state: what routing needs, without copying
    /// the record.
    pub fn owner(&self, sid: &str) -> Option<NodeId> {
        self.inner.state.owner(sid)
    }

    /// Changes whenever this node has applied a take-over ([`Command::TakeOver`]): a session
    /// whose owner was lost may have an heir now.
    pub fn takeovers(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.state.takeovers()
    }

    /// The sids the locally applied state says `node` owns, sorted.
    pub fn sessions_owned_by(&self, node: NodeId) -> Vec<String> {
        self.inner.state.owned_by(node)
    }

    /// How many sessions the registry records `node` as the owner of (no copy of their sids).
    pub fn sessions_owned_count(&self, node: NodeId) -> usize {
        self.inner.state.owned_count(node)
    }

    /// The record of `sid` as of now, cluster-wide: confirms with the leader (a heartbeat round
    /// to a majority) which log position is the latest, waits until this node has applied it,
    /// then reads locally.
    pub async fn read_linearizable(
        &self,
        sid: &str,
    ) -> Result<Option<SessionRecord>, RegistryError> {
        let core = &self.inner.core;
        let deadline = Instant::now() + core.write_timeout;
        let read_index = core.read_index(deadline).await?;
        if let Some(index) = read_index {
            core.raft
                .wait(Some(remaining(deadline)))
                .applied_index_at_least(Some(index), "read_linearizable")
                .await
                .map_err(wait_error)?;
        }
        Ok(self.session(sid))
    }

    /// Whether this node may serve its sessions (see [`RegistryConfig::serving_lease`]): it
    /// heard the leader (as the leader: a majority) within the lease, and it has caught up
    /// since its lease last lapsed ([`Registry::catch_up`]). The only voter of a cluster
    /// always may.
    pub fn has_lease(&self) -> bool {
        let metrics = self.inner.core.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        let voters = membership.voter_ids().count();
        if voters == 1 && membership.voter_ids().all(|v| v == m.id) {
            return true;
        }
        // Measured here, not taken from the metrics: they are a snapshot of their last report.
        // With this node, the `voters / 2` peers heard most lately make a majority.
        let quorum_ack = (m.state == ServerState::Leader).then(|| {
            let peers = || membership.voter_ids().filter(|v| *v != m.id);
            self.inner.contact.age_of(peers, (voters / 2).max(1))
        });
        self.inner.serving.held(quorum_ack)
    }

    /// After a lapse of the lease: waits until this node has applied everything the
    /// majority committed up to now (a take-over of its sessions, say) and returns the lapse,
    /// for [`Registry::renew_lease`] once the node has let go of what it no longer owns.
    /// `None` when the lease has not lapsed.
    pub async fn catch_up(&self) -> Result<Option<Lapse>, RegistryError> {
        let Some(lapses) = self.inner.serving.broken() else {
            return Ok(None);
        };
        let core = &self.inner.core;
        let deadline = Instant::now() + core.write_timeout;
        if let Some(index) = core.read_index(deadline).await? {
            core.raft
                .wait(Some(remaining(deadline)))
                .applied_index_at_least(Some(index), "catch_up")
                .await
                .map_err(wait_error)?;
        }
        Ok(Some(Lapse(lapses)))
    }

    /// This node caught up after `lapse` ([`Registry::catch_up`]): it holds the lease again
    /// while it hears the majority, unless the lease lapsed once more meanwhile.
    pub fn renew_lease(&self, lapse: Lapse) {
        self.inner.serving.renewed(lapse.0);
    }

    /// Adds node `id` at gRPC address `addr` as a non-voting learner and waits (at most
    /// [`RegistryConfig::membership_timeout`]) until it has caught up. Runs on the leader.
    pub async fn add_learner(&self, id: NodeId, addr: &str) -> Result<(), RegistryError> {
        let core = &self.inner.core;
        core.peers
            .set(id, addr)
            .map_err(|e| RegistryError::Membership(e.to_string()))?;
        let addr = core.peers.addr(id).unwrap_or_else(|| addr.to_owned());
        let change = core.raft.add_learner(id, BasicNode::new(addr), true);
        match tokio::time::timeout(self.inner.membership_timeout, change).await {
            Ok(result) => result.map(|_| ()).map_err(membership_error),
            Err(_) => Err(RegistryError::Timeout),
        }
    }

    /// Makes `voters` the set of voting members (they must already be members; voters left
    /// out are removed from the cluster). Runs on the leader.
    pub async fn change_membership(&self, voters: BTreeSet<NodeId>) -> Result<(), RegistryError> {
        let change = self.inner.core.raft.change_membership(voters, false);
        match tokio::time::timeout(self.inner.membership_timeout, change).await {
            Ok(result) => result.map(|_| ()).map_err(membership_error),
            Err(_) => Err(RegistryError::Timeout),
        }
    }

    /// Every member as `(id, gRPC address, is voter)`, as this node last applied it.
    pub fn membership(&self) -> Vec<(NodeId, String, bool)> {
        let metrics = self.inner.core.raft.metrics();
        let stored = metrics.borrow().membership_config.clone();
        let membership = stored.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, node)| (*id, node.addr.clone(), voters.contains(id)))
            .collect()
    }

    /// How long this node's committed writes took (a batch of records is one write).
    pub fn commit_latency(&self) -> &Histogram {
        &self.inner.core.commits
    }

    /// The leader this node knows of.
    pub fn leader(&self) -> Option<NodeId> {
        self.inner.core.raft.metrics().borrow().current_leader
    }

    /// Whether this node can take part in writes now: it is running and either leads with a
    /// majority that acknowledged it within an election timeout, or follows a known leader (a
    /// follower cut off from its leader drops it after an election timeout).
    pub fn is_healthy(&self) -> bool {
        let metrics = self.inner.core.raft.metrics();
        let m = metrics.borrow();
        if m.running_state.is_err() {
            return false;
        }
        match m.current_leader {
            None => false,
            Some(leader) if leader == m.id => {
                let limit = millis(self.inner.election_timeout_max);
                m.millis_since_quorum_ack.is_some_and(|ms| ms < limit)
            }
            Some(_) => matches!(m.state, ServerState::Follower | ServerState::Learner),
        }
    }

    /// A snapshot of this node's Raft and state counters.
    pub fn status(&self) -> RegistryStatus {
        let metrics = self.inner.core.raft.metrics();
        let m = metrics.borrow();
        RegistryStatus {
            node_id: m.id,
            role: match m.state {
                ServerState::Leader => Role::Leader,
                ServerState::Follower => Role::Follower,
                ServerState::Candidate => Role::Candidate,
                ServerState::Learner => Role::Learner,
                ServerState::Shutdown => Role::Shutdown,
            },
            leader: m.current_leader,
            term: m.current_term,
            last_log_index: m.last_log_index,
            applied_index: m.last_applied.map(|id| id.index),
            snapshot_index: m.snapshot.map(|id| id.index),
            purged_index: m.purged.map(|id| id.index),
            sessions: self.inner.state.len(),
            saved_sockets: self.inner.state.saved_len(),
        }
    }

    /// Builds a snapshot now (the log before it is then purged down to
    /// [`RegistryConfig::logs_kept_after_snapshot`] entries). Returns once requested, not built.
    pub async fn trigger_snapshot(&self) -> Result<(), RegistryError> {
        self.inner
            .core
            .raft
            .trigger()
            .snapshot()
            .await
            .map_err(fatal_error)
    }

    /// Compacts this node's store now: builds a snapshot of the applied state, purges the
    /// whole log it covers (a follower that lags behind then catches up from the snapshot), and
    /// rewrites the data directory with what is left, since sled never gives back the space of
    /// removed entries. Returns sled's size on disk in bytes before and after. The store
    /// also compacts itself after a purge that leaves it mostly empty.
    pub async fn compact(&self) -> Result<(u64, u64), RegistryError> {
        let raft = &self.inner.core.raft;
        let limit = Some(self.inner.membership_timeout);
        let applied = raft.metrics().borrow().last_applied.map(|id| id.index);
        raft.trigger().snapshot().await.map_err(fatal_error)?;
        let metrics = raft
            .wait(limit)
            .metrics(
                |m| m.snapshot.map(|id| id.index) >= applied,
                "a snapshot of the applied state",
            )
            .await
            .map_err(wait_error)?;
        if let Some(upto) = metrics.snapshot.map(|id| id.index) {
            raft.trigger().purge_log(upto).await.map_err(fatal_error)?;
            raft.wait(limit)
                .metrics(
                    |m| m.purged.map(|id| id.index) >= Some(upto),
                    "the log purged up to the snapshot",
                )
                .await
                .map_err(wait_error)?;
        }
        let sizes = self
            .inner
            .compactor
            .compact()
            .await
            .map_err(|e| RegistryError::Storage(e.to_string()))?;
        sizes.ok_or(RegistryError::Shutdown)
    }

    /// Stops Raft, the batcher and the sweeper (pending writes fail with
    /// [`RegistryError::Shutdown`]) and
    /// waits, at most 5 s, until the data directory is released, so it can be opened again in
    /// the same process. Call it once; the gRPC service should be stopped as well.
    pub async fn shutdown(&self) -> Result<(), RegistryError> {
        let tasks =
            std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            task.abort();
        }
        self.inner
            .core
            .raft
            .shutdown()
            .await
            .map_err(|e| RegistryError::Raft(e.to_string()))?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.inner.lease.strong_count() > 0 {
            if Instant::now() >= deadline {
                return Err(RegistryError::Storage(
                    "the data directory is still in use after shutdown".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("node_id", &self.inner.core.node_id)
            .finish_non_exhaustive()
    }
}

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// A local Raft call refused because this node is not the leader: the leader it names, if any,
/// to try next (`None`: wait for one). Any other failure is final.
fn leader_named_by<E>(e: RaftError<NodeId, E>) -> Result<Option<NodeId>, RegistryError>
where
    E: std::fmt::Debug
        + std::fmt::Display
        + openraft::TryAsRef<openraft::error::ForwardToLeader<NodeId, BasicNode>>,
{
    if let Some(forward) = e.forward_to_leader::<BasicNode>() {
        return Ok(forward.leader_id);
    }
    Err(match e {
        RaftError::Fatal(e) => fatal_error(e),
        RaftError::APIError(e) => RegistryError::Raft(e.to_string()),
    })
}

fn wait_error(e: openraft::metrics::WaitError) -> RegistryError {
    match e {
        openraft::metrics::WaitError::Timeout(..) => RegistryError::Timeout,
        openraft::metrics::WaitError::ShuttingDown => RegistryError::Shutdown,
    }
}

fn fatal_error(e: Fatal<NodeId>) -> RegistryError {
    match e {
        Fatal::Stopped => RegistryError::Shutdown,
        other => RegistryError::Raft(other.to_string()),
    }
}

fn membership_error(
    e: RaftError<NodeId, openraft::error::ClientWriteError<NodeId, BasicNode>>,
) -> RegistryError {
    if let Some(forward) = e.forward_to_leader() {
        return RegistryError::NotLeader {
            leader: forward.leader_id,
        };
    }
    match e {
        RaftError::Fatal(e) => fatal_error(e),
        RaftError::APIError(e) => RegistryError::Membership(e.to_string()),
    }
}

/// Groups queued writes into batches and submits them, at most `max_inflight` at a time. A
/// write that finds no batch in flight goes out alone at once; writes arriving meanwhile wait
/// for a free slot and then leave together.
async fn run_batcher(
    core: Arc<Core>,
    mut queue: mpsc::Receiver<PendingWrite>,
    max_batch: usize,
    max_inflight: usize,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(max_inflight));
    while let Some(first) = queue.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut size = first.command.len().max(1);
        let mut batch = vec![first];
        while size < max_batch {
            match queue.try_recv() {
                Ok(next) => {
                    size += next.command.len().max(1);
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let core = core.clone();
        tokio::spawn(async move {
            core.submit_batch(batch).await;
            drop(slot);
        });
    }
}

/// How often the leader looks for sessions of departed or lost nodes.
const SWEEP_EVERY: Duration = Duration::from_millis(250);

/// On the leader, once every [`SWEEP_EVERY`]: forgets the sessions of owners that are no
/// longer members (removed from the cluster, so nobody routes to them any more), and gives
/// away those of members it has had no answer from for `takeover_after` (counted from when it
/// became leader, for a member it never reached).
async fn sweep(
    core: Arc<Core>,
    state: StateView,
    contact: network::Contact,
    takeover_after: Duration,
) {
    let mut leading: Option<(u64, std::time::Instant)> = None;
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let metrics = core.raft.metrics().borrow().clone();
        if metrics.state != ServerState::Leader {
            leading = None;
            continue;
        }
        // A leader that has not heard a majority lately may have been replaced (it was cut
        // off, or stopped and just resumed): its view of who answers is no ground to act on.
        let alone = metrics.membership_config.membership().voter_ids().count() <= 1;
        let acknowledged = metrics
            .millis_since_quorum_ack
            .is_some_and(|ms| ms < millis(SWEEP_EVERY * 4));
        if !acknowledged && !alone {
            continue;
        }
        let now = std::time::Instant::now();
        let since = match leading {
            Some((term, since)) if term == metrics.current_term => since,
            _ => leading.insert((metrics.current_term, now)).1,
        };
        let members: BTreeSet<NodeId> = metrics
            .membership_config
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .collect();
        let lost = |node: NodeId| {
            node != core.node_id && {
                let heard = contact.last(node).map_or(since, |t| t.max(since));
                now.duration_since(heard) > takeover_after
            }
        };
        let heirs: Vec<NodeId> = members.iter().copied().filter(|m| !lost(*m)).collect();
        for node in state.owners() {
            let command = if !members.contains(&node) {
                Command::DeleteSessionsOf {
                    node,
                    at_ms: unix_millis(),
                }
            } else if lost(node) {
                Command::TakeOver {
                    node,
                    to: heirs.clone(),
                    at_ms: unix_millis(),
                }
            } else {
                continue;
            };
            // Written here only, never forwarded: if this node is no longer the leader, the
            // decision is not its to make.
            let written = core.raft.client_write(command).await;
            match written.map(|r| r.data).map_err(|e| e.to_string()) {
                Ok(Response::Deleted { count }) => {
                    tracing::info!(node, count, "forgot the sessions of a departed node");
                }
                Ok(Response::TakenOver { moved, deleted }) => {
                    tracing::warn!(
                        node,
                        moved,
                        deleted,
                        "took over the sessions of a lost node"
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(node, %e, "sessions of a departed or lost node kept"),
            }
        }
    }
}

/// Failure of a call to the leader.
enum CallError {
    /// The leader could not be reached; the request was most likely not delivered.
    Unavailable(String),
    /// Anything else; the outcome is unknown.
    Other(String),
}

/// What a forwarded request asks of the leader.
enum LeaderCall<'a> {
    Write(&'a Command),
    ReadIndex,
}

impl Core {
    /// Commits a batch. When it fails, the writers waiting for it get the error and the
    /// recorded commands in it are sent again after a pause, up to [`RECORD_ATTEMPTS`] times
    /// (holding the batch's slot, so later commands do not overtake them), then given up and
    /// counted.
    async fn submit_batch(&self, mut batch: Vec<PendingWrite>) {
        for attempt in 1.. {
            let command = match batch.as_slice() {
                [one] => one.command.clone(),
                all => Command::Batch(all.iter().map(|w| w.command.clone()).collect()),
            };
            let e = match self.submit(command).await {
                Ok(Response::Batch(responses)) if batch.len() > 1 => {
                    if responses.len() == batch.len() {
                        for (write, response) in batch.into_iter().zip(responses) {
                            let _ = write.reply.send(Ok(response));
                        }
                        return;
                    }
                    RegistryError::Codec(format!("{} answers to a batch", responses.len()))
                }
                Ok(response) if batch.len() == 1 => {
                    for write in batch {
                        let _ = write.reply.send(Ok(response.clone()));
                    }
                    return;
                }
                Ok(other) => RegistryError::Codec(format!("unexpected answer: {other:?}")),
                Err(e) => e,
            };
            let (records, waited): (Vec<_>, Vec<_>) = batch.into_iter().partition(|w| w.retry);
            for write in waited {
                let _ = write.reply.send(Err(e.clone()));
            }
            if records.is_empty() {
                return;
            }
            if attempt >= RECORD_ATTEMPTS || e == RegistryError::Shutdown {
                tracing::warn!(commands = records.len(), %e, "registry records given up");
                self.failed_records
                    .fetch_add(records.len() as u64, Ordering::Relaxed);
                return;
            }
            tracing::debug!(commands = records.len(), attempt, %e, "registry records retried");
            let pause = Duration::from_millis(100 << attempt.min(4));
            tokio::time::sleep(pause).await;
            batch = records;
        }
    }

    /// Commits `command` through the leader, wherever it is; times it when it commits.
    async fn submit(&self, command: Command) -> Result<Response, RegistryError> {
        let started = Instant::now();
        let committed = self.commit(command).await;
        if committed.is_ok() {
            self.commits.observe(started.elapsed().as_secs_f64());
        }
        committed
    }

    async fn commit(&self, command: Command) -> Result<Response, RegistryError> {
        let deadline = Instant::now() + self.write_timeout;
        let mut hint = None;
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                backoff(attempt, deadline).await?;
            }
            let leader = match hint.take() {
                Some(leader) => leader,
                None => self.wait_for_leader(deadline).await?,
            };
            if leader == self.node_id {
                let write = self.raft.client_write(command.clone());
                match tokio::time::timeout(remaining(deadline), write).await {
                    Ok(Ok(written)) => return Ok(written.data),
                    Ok(Err(e)) => {
                        hint = leader_named_by(e)?;
                        continue;
                    }
                    Err(_) => return Err(RegistryError::Timeout),
                }
            }
            match self
                .call_leader::<WriteReply>(leader, LeaderCall::Write(&command), deadline)
                .await
            {
                Ok(Ok(response)) => return Ok(response),
                Ok(Err(ForwardError::NotLeader { leader })) => hint = leader,
                Ok(Err(ForwardError::Failed(message))) => return Err(RegistryError::Raft(message)),
                Err(CallError::Unavailable(message)) => {
                    tracing::debug!(leader, "registry leader unreachable: {message}");
                }
                Err(CallError::Other(message)) => {
                    return Err(RegistryError::Unreachable {
                        node: leader,
                        message,
                    });
                }
            }
        }
        Err(RegistryError::NoLeader)
    }

    /// The log index a linearizable read must wait for, from the leader.
    async fn read_index(&self, deadline: Instant) -> Result<Option<u64>, RegistryError> {
        let mut hint = None;
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                backoff(attempt, deadline).await?;
            }
            let leader = match hint.take() {
                Some(leader) => leader,
                None => self.wait_for_leader(deadline).await?,
            };
            if leader == self.node_id {
                match tokio::time::timeout(remaining(deadline), self.raft.get_read_log_id()).await {
                    Ok(Ok((read, _applied))) => return Ok(read.map(|id| id.index)),
                    Ok(Err(e)) => {
                        hint = leader_named_by(e)?;
                        continue;
                    }
                    Err(_) => return Err(RegistryError::Timeout),
                }
            }
            match self
                .call_leader::<ReadIndexReply>(leader, LeaderCall::ReadIndex, deadline)
                .await
            {
                Ok(Ok(read)) => return Ok(read.map(|id| id.index)),
                Ok(Err(ForwardError::NotLeader { leader })) => hint = leader,
                Ok(Err(ForwardError::Failed(message))) => return Err(RegistryError::Raft(message)),
                // A read has no side effect: any failure may be retried.
                Err(CallError::Unavailable(message) | CallError::Other(message)) => {
                    tracing::debug!(leader, "registry leader unreachable: {message}");
                }
            }
        }
        Err(RegistryError::NoLeader)
    }

    /// Waits until some leader is known.
    async fn wait_for_leader(&self, deadline: Instant) -> Result<NodeId, RegistryError> {
        let metrics = self
            .raft
            .wait(Some(remaining(deadline)))
            .metrics(|m| m.current_leader.is_some(), "registry leader")
            .await
            .map_err(|e| match wait_error(e) {
                RegistryError::Timeout => RegistryError::NoLeader,
                other => other,
            })?;
        metrics.current_leader.ok_or(RegistryError::NoLeader)
    }

    async fn call_leader<T: DeserializeOwned>(
        &self,
        leader: NodeId,
        call: LeaderCall<'_>,
        deadline: Instant,
    ) -> Result<T, CallError> {
        let channel = self
            .peers
            .channel(leader)
            .ok_or_else(|| CallError::Unavailable(format!("no address for node {leader}")))?;
        let mut client = RaftServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE);
        let data = match call {
            LeaderCall::Write(command) => {
                serde_json::to_vec(command).map_err(|e| CallError::Other(e.to_string()))?
            }
            LeaderCall::ReadIndex => Vec::new(),
        };
        let timeout = remaining(deadline);
        let mut request = tonic::Request::new(RaftBytes { data });
        request.set_timeout(timeout);
        let rpc = async {
            match call {
                LeaderCall::Write(_) => client.client_write(request).await,
                LeaderCall::ReadIndex => client.read_index(request).await,
            }
        };
        let reply = match tokio::time::timeout(timeout, rpc).await {
            Ok(Ok(reply)) => reply.into_inner(),
            Ok(Err(status)) if status.code() == tonic::Code::Unavailable => {
                return Err(CallError::Unavailable(status.message().to_owned()));
            }
            Ok(Err(status)) => {
                return Err(CallError::Other(format!(
                    "{:?}: {}",
                    status.code(),
                    status.message()
                )));
            }
            Err(_) => return Err(CallError::Other(format!("no answer within {timeout:?}"))),
        };
        serde_json::from_slice(&reply.data).map_err(|e| CallError::Other(e.to_string()))
    }
}

/// Waits a little longer after each failed attempt (50 ms steps, at most 500 ms), but never
/// past `deadline`.
async fn backoff(attempt: u32, deadline: Instant) -> Result<(), RegistryError> {
    let wait = Duration::from_millis(50 * u64::from(attempt)).min(Duration::from_millis(500));
    if Instant::now() + wait >= deadline {
        return Err(RegistryError::Timeout);
    }
    tokio::time::sleep(wait).await;
    Ok(())
}

/// Milliseconds since the Unix epoch (0 for a clock before it).
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
