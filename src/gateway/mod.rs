//! For a request that carries a sid: serve it here, or forward it to the node that owns the
//! session. The only place routing happens.
//!
//! The owner is, in this order: this node, if its engine holds the sid; the owner recorded in
//! the replicated registry; the owner hint in the sid itself (`"<node>.<random>"`), which lets a
//! brand-new session be routed before the registry has replicated it. A sid none of these place
//! on another node is served locally, where the engine answers "Session ID unknown" at once.
//!
//! The owner serves a forwarded request with the same engine functions as a local one
//! ([`service`]), and never forwards it again. Ownership moves (`migrate`): a node that moved a
//! session away answers "moved to N" and the forwarding node asks N; routing follows the newest
//! epoch this node knows, the registry's or its own memory of a move.

mod convert;
mod fence;
mod migrate;
mod record;
mod relay;
pub mod service;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use prost::Message as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

pub use migrate::MigrateError;
pub use record::Recorded;
pub use relay::Relay;

use crate::engine::{Engine, EngineError, Method, Request};
pub use crate::registry::NodeId;
use crate::registry::Registry;
use crate::rpc::link::{LinkConfig, LinkError, LinkKind, LinkSpec};
use crate::rpc::pb::forward::forward_client::ForwardClient;
use crate::rpc::pb::forward::{PollingReply, polling_reply};
use crate::rpc::pb::link::Frame;
use crate::rpc::{PeerChannel, Peers};
use prometheus_client::metrics::histogram::Histogram;

/// How much longer than the longest park (a ping interval) a forwarded request may take.
const FORWARD_MARGIN: Duration = Duration::from_secs(5);

/// Nodes a forwarded request may be sent to, following "moved to" answers.
const MAX_HOPS: usize = 3;

/// How long a forwarded request waits for an owner that cannot be reached to come back or to
/// be replaced: past the registry's take-over of a lost node (`takeover_after`, plus an
/// election if it was the leader).
const OWNER_WAIT: Duration = Duration::from_secs(15);
/// How often it looks again meanwhile.
const OWNER_RETRY: Duration = Duration::from_millis(200);

/// Room for the fields of a forwarded request around its body (mount, sid, headers).
const REQUEST_FIELDS: usize = 64 * 1024;

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Serve it with this node's engine.
    Local,
    /// Forward it to this node.
    Remote(NodeId),
}

/// What one hop of a forwarded request came back with.
enum Asked {
    /// The owner's answer.
    Answer(Result<String, GatewayError>),
    /// The node asked moved the session to this one.
    Moved(NodeId),
}

/// Why a forwarded request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// The owner's engine refused it, exactly as it would a local request.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The owner could not be asked.
    #[error(transparent)]
    Owner(#[from] LinkError),
    /// The session moved to this very node while the request was on its way: serve it here.
    #[error("the session moved here")]
    MovedHere,
}

/// The routing front of one node. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    /// Engines by mount path.
    engines: HashMap<String, Engine>,
    cluster: Option<Cluster>,
    /// Sessions this node moved away, or is moving.
    moves: migrate::Moves,
    counters: Counters,
    /// How long forwarded requests took, hop and owner included.
    hops: Hops,
    /// Set once the node stops: a request whose owner cannot be reached is answered at once
    /// instead of waiting for the owner or its heir (when the whole cluster stops, neither
    /// comes, and the wait would hold the node's shutdown).
    stopping: AtomicBool,
}

/// How often this node relayed, pulled and moved sessions.
#[derive(Default)]
struct Counters {
    forwarded: AtomicU64,
    relays: AtomicU64,
    pulls: AtomicU64,
    moved_out: AtomicU64,
    moved_in: AtomicU64,
    taken_over: AtomicU64,
}

/// How long this node's forwarded polling requests took, from the first hop to the answer
/// (a long-poll's includes its wait for data; a POST's is the hop's cost).
#[derive(Debug, Clone)]
pub struct Hops {
    /// Forwarded GETs.
    pub get: Histogram,
    /// Forwarded POSTs.
    pub post: Histogram,
}

impl Default for Hops {
    fn default() -> Hops {
        // From a loopback hop (about 0.1 ms) to a long-poll's whole wait (about 25 s).
        let buckets = || {
            Histogram::new([
                0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                2.5, 5.0, 10.0, 30.0,
            ])
        };
        Hops {
            get: buckets(),
            post: buckets(),
        }
    }
}

/// A snapshot of a gateway's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GatewayCounts {
    /// Polling requests forwarded to their session's owner.
    pub forwarded: u64,
    /// Websockets relayed to the owner of their session (the fallback when the session could
    /// not be pulled here).
    pub relays: u64,
    /// Sessions pulled here from their owner because their websocket arrived here.
    pub pulls: u64,
    /// Sessions this node moved to another node.
    pub moved_out: u64,
    /// Sessions another node moved here.
    pub moved_in: u64,
    /// Sessions started here after the registry gave them to this node, their owner lost.
    pub taken_over: u64,
}

struct Cluster {
    node: NodeId,
    registry: Registry,
    /// The members: a sid whose owner is not among them is unknown here.
    peers: Peers,
    /// The forwarding links: one per member, in the peer directory.
    link: LinkSpec,
    /// Whether the sessions an earlier process of this node left in the registry are taken
    /// over yet (see `fence`): requests for them wait until they are.
    reclaimed: tokio::sync::watch::Sender<bool>,
}

impl Gateway {
    /// A gateway that serves everything locally (a single node).
    pub fn local(engines: impl IntoIterator<Item = (String, Engine)>) -> Self {
        Gateway {
            inner: Arc::new(Inner {
                engines: by_mount(engines),
                cluster: None,
                moves: migrate::Moves::default(),
                counters: Counters::default(),
                hops: Hops::default(),
                stopping: AtomicBool::new(false),
            }),
        }
    }

    /// A gateway of cluster node `node`, routing by `registry` and reaching peers through
    /// `peers`.
    pub fn clustered(
        node: NodeId,
        engines: impl IntoIterator<Item = (String, Engine)>,
        registry: Registry,
        peers: Peers,
    ) -> Self {
        let engines = by_mount(engines);
        let link = LinkSpec {
            kind: LinkKind::Forward,
            open: open_polling,
            config: LinkConfig::new(max_forwarded_message(&engines)),
        };
        Gateway {
            inner: Arc::new(Inner {
                engines,
                cluster: Some(Cluster {
                    node,
                    registry,
                    peers,
                    link,
                    reclaimed: tokio::sync::watch::Sender::new(false),
                }),
                moves: migrate::Moves::default(),
                counters: Counters::default(),
                hops: Hops::default(),
                stopping: AtomicBool::new(false),
            }),
        }
    }

    /// How often this node relayed, pulled and moved sessions.
    pub fn counts(&self) -> GatewayCounts {
        let c = &self.inner.counters;
        GatewayCounts {
            forwarded: c.forwarded.load(Ordering::Relaxed),
            relays: c.relays.load(Ordering::Relaxed),
            pulls: c.pulls.load(Ordering::Relaxed),
            moved_out: c.moved_out.load(Ordering::Relaxed),
            moved_in: c.moved_in.load(Ordering::Relaxed),
            taken_over: c.taken_over.load(Ordering::Relaxed),
        }
    }

    /// The node stops: close every session of its engines, and from now on answer a request
    /// whose owner cannot be reached at once.
    pub fn stop(&self) {
        self.inner.stopping.store(true, Ordering::Relaxed);
        for engine in self.inner.engines.values() {
            engine.shutdown();
        }
    }

    /// How long forwarded requests took.
    pub fn hops(&self) -> &Hops {
        &self.inner.hops
    }

    /// This node's cluster id (`None` on a single node).
    pub fn node_id(&self) -> Option<NodeId> {
        self.inner.cluster.as_ref().map(|c| c.node)
    }

    fn stopping(&self) -> bool {
        self.inner.stopping.load(Ordering::Relaxed)
    }

    /// Every mount path and its engine, sorted by path.
    pub fn mounts(&self) -> Vec<(String, Engine)> {
        let mut mounts: Vec<_> = self
            .inner
            .engines
            .iter()
            .map(|(path, engine)| (path.clone(), engine.clone()))
            .collect();
        mounts.sort_by(|a, b| a.0.cmp(&b.0));
        mounts
    }

    /// The engine mounted at `mount`.
    pub fn engine(&self, mount: &str) -> Option<&Engine> {
        self.inner.engines.get(mount)
    }

    /// Where a request for `sid` on `mount` must be served. A session this node is moving
    /// away is waited for (a few milliseconds), then sent where it went.
    pub async fn route(&self, mount: &str, sid: &str) -> Route {
        let Some(cluster) = &self.inner.cluster else {
            return Route::Local;
        };
        if self.engine(mount).is_some_and(|e| e.has_session(sid)) {
            return Route::Local;
        }
        // The registry knows a session once its birth is replicated; before that, the hint.
        let moved = self.inner.moves.settled(sid).await;
        let owner = newest_owner(moved, &cluster.registry, sid).or_else(|| owner_hint(sid));
        match owner {
            // Only members are asked: a sid naming any other node is unknown, at no cost.
            Some(node) if node != cluster.node && cluster.peers.contains(node) => {
                Route::Remote(node)
            }
            Some(node) if node == cluster.node => {
                self.adopt(mount, sid).await;
                Route::Local
            }
            _ => Route::Local,
        }
    }

    /// Forward a polling GET or POST (or any other sid request) to `node` and return the body of
    /// its 200 answer. An owner that moved the session away names the new owner, which is asked
    /// in its place. Dropping the future cancels the request on the owner.
    pub async fn forward(
        &self,
        node: NodeId,
        mount: &str,
        req: &Request,
        body: Bytes,
    ) -> Result<String, GatewayError> {
        let started = tokio::time::Instant::now();
        self.inner
            .counters
            .forwarded
            .fetch_add(1, Ordering::Relaxed);
        let answer = self.forward_to(node, mount, req, body).await;
        let hops = match req.method {
            Method::Post => &self.inner.hops.post,
            _ => &self.inner.hops.get,
        };
        hops.observe(started.elapsed().as_secs_f64());
        answer
    }

    async fn forward_to(
        &self,
        node: NodeId,
        mount: &str,
        req: &Request,
        body: Bytes,
    ) -> Result<String, GatewayError> {
        let request: Bytes = convert::request_to_pb(mount, req, body)
            .encode_to_vec()
            .into();
        let sid = req.sid.as_deref().unwrap_or_default();
        let mut node = node;
        let mut hops = 1;
        let until = tokio::time::Instant::now() + OWNER_WAIT;
        // Whether this request waited for a lost owner: the node that serves it now (an heir,
        // or the owner restarted) may apply the take-over a heartbeat after ours.
        let mut waited = false;
        loop {
            match self.ask(node, mount, sid, request.clone()).await {
                Ok(Asked::Answer(Err(GatewayError::Engine(EngineError::UnknownSid))))
                    if waited && tokio::time::Instant::now() < until =>
                {
                    tokio::time::sleep(OWNER_RETRY).await;
                }
                // The owner cannot be reached (gone, or cut off from here), or does not serve
                // (cut off from the majority): wait for it to come back, or for the cluster to
                // give the session to another node.
                Err(e @ GatewayError::Owner(LinkError::Unreachable(_) | LinkError::Broken(_)))
                | Ok(Asked::Answer(Err(e @ GatewayError::Engine(EngineError::Unavailable))))
                    if tokio::time::Instant::now() < until && !self.stopping() =>
                {
                    tokio::time::sleep(OWNER_RETRY).await;
                    node = self.heir(mount, sid).await.ok_or(e)??;
                    waited = true;
                }
                Ok(Asked::Answer(answer)) => return answer,
                // A session moved again before the registry of the node asked caught up may
                // take a hop more; the bound keeps a stale chain from bouncing a request
                // around.
                Ok(Asked::Moved(_)) if hops >= MAX_HOPS => {
                    return Err(EngineError::UnknownSid.into());
                }
                Ok(Asked::Moved(to)) => {
                    hops += 1;
                    node = to;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Who owns `sid` now that its owner could not be reached: the same node still, another node the
    /// registry gave the session to, or this node (started here:
    /// [`GatewayError::MovedHere`]). `None` when the registry does not record it: nothing
    /// to wait for.
    async fn heir(&self, mount: &str, sid: &str) -> Option<Result<NodeId, GatewayError>> {
        let cluster = self.inner.cluster.as_ref()?;
        Some(match cluster.registry.owner(sid)? {
            owner if owner == cluster.node => {
                self.adopt(mount, sid).await;
                Err(GatewayError::MovedHere)
            }
            owner => Ok(owner),
        })
    }

    /// One hop of [`Gateway::forward`].
    async fn ask(
        &self,
        node: NodeId,
        mount: &str,
        sid: &str,
        request: Bytes,
    ) -> Result<Asked, GatewayError> {
        let cluster = self.cluster(node)?;
        if node == cluster.node {
            // Named by the owner that moved the session here after this node routed the
            // request.
            return Err(GatewayError::MovedHere);
        }
        let link = cluster
            .peers
            .link(node, &cluster.link)
            .ok_or(LinkError::UnknownPeer(node))?;
        let deadline = self
            .engine(mount)
            .map(|e| e.config().ping_interval + e.config().ping_timeout)
            .unwrap_or_default()
            + FORWARD_MARGIN;
        // An owner that stopped answering without closing its connections (a paused process)
        // holds the call until the link's keepalive gives up; once the cluster has given the
        // session to an heir, go there instead.
        let mut takeovers = cluster.registry.takeovers();
        let given_away = async {
            while takeovers.changed().await.is_ok() {
                // Only a record naming another owner: a session not recorded (yet) has
                // no heir to go to.
                if cluster
                    .registry
                    .owner(sid)
                    .is_some_and(|owner| owner != node)
                {
                    return;
                }
            }
            std::future::pending().await
        };
        let reply = tokio::select! {
            reply = link.call(request, deadline) => reply?,
            () = given_away => return Err(LinkError::Broken(node).into()),
        };
        let undecodable = || LinkError::Refused {
            node,
            reason: "an undecodable reply".into(),
        };
        Ok(
            match PollingReply::decode(reply)
                .map_err(|_| undecodable())?
                .result
            {
                Some(polling_reply::Result::Body(body)) => Asked::Answer(Ok(body)),
                Some(polling_reply::Result::Error(code)) => {
                    Asked::Answer(Err(convert::error_from_pb(code).into()))
                }
                Some(polling_reply::Result::Moved(to)) => Asked::Moved(to),
                None => return Err(undecodable().into()),
            },
        )
    }

    /// Where `sid` went, if this node moved it away (waiting for a move in flight): the
    /// newer of this node's memory of the move and the registry's record.
    pub async fn moved_to(&self, sid: &str) -> Option<NodeId> {
        let cluster = self.inner.cluster.as_ref()?;
        let moved = self.inner.moves.settled(sid).await?;
        newest_owner(Some(moved), &cluster.registry, sid).filter(|owner| *owner != cluster.node)
    }

    /// The largest forwarded request or reply this node's links carry.
    fn max_forwarded_message(&self) -> usize {
        max_forwarded_message(&self.inner.engines)
    }

    /// Ask `node`, the owner, to accept the websocket request `req` of `mount`; on success,
    /// complete the upgrade and [`Relay::run`] it.
    pub async fn open_relay(
        &self,
        node: NodeId,
        mount: &str,
        req: &Request,
    ) -> Result<Relay, GatewayError> {
        let cluster = self.cluster(node)?;
        let write_deadline = self
            .engine(mount)
            .map(|e| e.config().ping_timeout)
            .unwrap_or(FORWARD_MARGIN);
        let relay = relay::open(&cluster.peers, node, mount, req, write_deadline).await?;
        self.inner.counters.relays.fetch_add(1, Ordering::Relaxed);
        Ok(relay)
    }

    fn cluster(&self, node: NodeId) -> Result<&Cluster, LinkError> {
        self.inner
            .cluster
            .as_ref()
            .ok_or(LinkError::UnknownPeer(node))
    }
}

/// The owner of `sid` by the highest epoch known here: the registry's record, or `moved`, a
/// move this node made that the registry does not show yet.
fn newest_owner(moved: Option<(NodeId, u64)>, registry: &Registry, sid: &str) -> Option<NodeId> {
    let recorded = registry.session(sid).map(|r| (r.owner, r.epoch));
    match (moved, recorded) {
        (Some((to, epoch)), Some((owner, recorded))) => {
            Some(if recorded >= epoch { owner } else { to })
        }
        (moved, recorded) => moved.or(recorded).map(|(node, _)| node),
    }
}

/// Opens the `Forward.Polling` stream of a forwarding link.
fn open_polling(
    channel: PeerChannel,
    frames: ReceiverStream<Frame>,
) -> BoxFuture<'static, Result<Streaming<Frame>, Status>> {
    Box::pin(async move {
        let replies = ForwardClient::new(channel).polling(frames).await?;
        Ok(replies.into_inner())
    })
}

/// The largest message a forwarding link must carry: a POST body at any mount's
/// `max_payload`, or a GET's answer at its bounds, with room for the fields around them.
fn max_forwarded_message(engines: &HashMap<String, Engine>) -> usize {
    engines
        .values()
        .map(|e| e.config().max_payload.max(e.config().max_poll_reply()))
        .max()
        .unwrap_or_default()
        .saturating_add(REQUEST_FIELDS)
}

/// Engines keyed by mount path, each path with its trailing slash (clients always add it).
fn by_mount(engines: impl IntoIterator<Item = (String, Engine)>) -> HashMap<String, Engine> {
    engines
        .into_iter()
        .map(|(path, engine)| {
            let path = if path.ends_with('/') {
                path
            } else {
                format!("{path}/")
            };
            (path, engine)
        })
        .collect()
}

/// The node id a sid names as its owner: the digits before the first `.`.
pub fn owner_hint(sid: &str) -> Option<NodeId> {
    let (node, rest) = sid.split_once('.')?;
    if rest.is_empty() || node.is_empty() || node.len() > 20 {
        return None;
    }
    node.parse().ok()
}
