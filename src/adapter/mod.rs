//! The cross-node adapter: what a node does to a selection of sockets — broadcast, join or
//! leave rooms, disconnect, list them, broadcast with acks, take back a socket for recovery —
//! reaches the matching sockets of every node, and server-side emits reach the servers of every
//! node.
//!
//! The node that acts does its own sockets itself and sends the request to every other member
//! of the registry's membership over its adapter link to that member (`rpc::link`), where the
//! same selection runs against that node's sockets (`service`).
//!
//! - Broadcasts, actions and server-side emits need no answer. Each peer has one ordered queue
//!   and one sending task, which takes whatever has queued up as one batch and puts it on the
//!   link; a few batches may be on their way at once, and the peer applies them in order. So
//!   requests arrive at another node in the order they were made, and a join followed by a
//!   broadcast to that room reaches the joined sockets. Everything is bounded: a full queue
//!   drops new requests, a request older than [`AdapterConfig::max_age`] when its batch leaves
//!   is dropped instead of delivered late, and a batch not confirmed within
//!   [`AdapterConfig::deadline`] (or refused by a peer that cannot be reached) is given up.
//!   Each case is counted. Delivery is at most once, like a pub/sub adapter's.
//! - Listings, broadcasts with acks, server-side emits with acks and recovery look-ups ask
//!   every member at once, each with a deadline; a recovery look-up returns as soon as the
//!   member holding the session answers.
//!
//! It also keeps the registry's record of this node's sockets (namespace joins with socket ids
//! and pids, rooms, data) up to date: each change is queued as one registry command, in order,
//! without holding up the socket.

mod convert;
mod service;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use crate::protocol::sio::Encoded;
use crate::protocol::value::Value;
use crate::registry::{Command, NodeId, Registry};
use crate::rpc::link::{LinkConfig, LinkError, LinkKind, LinkSpec};
use crate::rpc::pb::adapter::adapter_client::AdapterClient;
use crate::rpc::pb::adapter::{
    AckRequest, ActRequest, AdapterReply, AdapterRequest, Batch, BroadcastRequest, Disconnect,
    FetchRequest, RecoverRequest, ServerEventRequest, Tell, act_request, adapter_reply,
    adapter_request, tell,
};
use crate::rpc::pb::link::Frame;
use crate::rpc::{PeerChannel, Peers};
use crate::socketio::{
    AckError, AckResponse, Adapter, Recovered, RemoteAckRequest, RemoteAction, RemoteBroadcast,
    Selection, ServerEvent, SocketChange, SocketDetails,
};
use convert::{
    ack_from_pb, details_from_pb, millis, recovered_from_pb, selection_to_pb, values_from_pb,
    values_to_pb,
};

pub use service::{AdapterServed, AdapterService};

/// Requests that may wait for one peer.
const PEER_QUEUE: usize = 4096;
/// Most requests in one batch.
const MAX_BATCH: usize = 256;
/// A batch stops growing past this many bytes (a larger request still travels alone).
const BATCH_BYTES: usize = 256 * 1024;
/// Batches on their way to one peer at once.
const MAX_IN_FLIGHT: usize = 8;
/// How long a listing or a recovery look-up waits for a peer.
const PEER_DEADLINE: Duration = Duration::from_secs(5);
/// How much longer than the emit's timeout a peer's ack report may take: the peer reports at
/// the timeout at the latest.
const ACK_REPORT_GRACE: Duration = Duration::from_secs(2);

/// Bounds of the adapter's traffic to each peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdapterConfig {
    /// A broadcast, action or server-side emit that waited this long for its peer is dropped
    /// (and counted) instead of delivered late.
    pub max_age: Duration,
    /// How long a batch may wait for the peer's confirmation before it is given up.
    pub deadline: Duration,
    /// The largest request or reply on an adapter link (a broadcast's packet with its
    /// attachments, a listing of many sockets).
    pub max_message: usize,
}

impl Default for AdapterConfig {
    /// Requests older than 5 s are dropped, batches are given up after 5 s, messages are at
    /// most 16 MiB.
    fn default() -> Self {
        AdapterConfig {
            max_age: Duration::from_secs(5),
            deadline: Duration::from_secs(5),
            max_message: 16 << 20,
        }
    }
}

/// Counters of the requests to peers that were not delivered.
#[derive(Debug, Default)]
struct Losses {
    /// Dropped because a peer's queue was full.
    queue_full: AtomicU64,
    /// Dropped because they waited longer than `max_age`.
    stale: AtomicU64,
    /// Sent in a batch that was not confirmed (peer unreachable, link broken, deadline
    /// passed); some may have been applied.
    unconfirmed: AtomicU64,
}

/// What the adapter of a node did not deliver, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdapterLosses {
    /// Broadcasts and actions dropped because a peer's queue was full.
    pub queue_full: u64,
    /// Dropped because they waited longer than [`AdapterConfig::max_age`].
    pub stale: u64,
    /// In batches a peer did not confirm (unreachable, link broken, deadline passed).
    pub unconfirmed: u64,
}

/// A request that needs no answer, in its peer's ordered queue, with when it was made.
struct Queued {
    tell: tell::Kind,
    at: Instant,
}

/// Sends this node's operations on sockets of one Socket.IO mount to the other nodes.
pub struct GrpcAdapter {
    node: NodeId,
    mount: String,
    peers: Peers,
    registry: Registry,
    config: AdapterConfig,
    link: LinkSpec,
    queues: Mutex<HashMap<NodeId, mpsc::Sender<Queued>>>,
    losses: Arc<Losses>,
}

impl GrpcAdapter {
    /// The adapter of node `node` for the Socket.IO server mounted at `mount`.
    pub fn new(
        node: NodeId,
        mount: &str,
        peers: Peers,
        registry: Registry,
        config: AdapterConfig,
    ) -> Self {
        GrpcAdapter {
            node,
            mount: mount.to_owned(),
            peers,
            registry,
            config,
            link: link_spec(&config),
            queues: Mutex::new(HashMap::new()),
            losses: Arc::default(),
        }
    }

    /// What was not delivered to peers so far.
    pub fn losses(&self) -> AdapterLosses {
        let l = &self.losses;
        AdapterLosses {
            queue_full: l.queue_full.load(Ordering::Relaxed),
            stale: l.stale.load(Ordering::Relaxed),
            unconfirmed: l.unconfirmed.load(Ordering::Relaxed),
        }
    }

    /// Every member of the membership but this node.
    fn others(&self) -> Vec<NodeId> {
        self.registry
            .membership()
            .into_iter()
            .map(|(id, _, _)| id)
            .filter(|id| *id != self.node)
            .collect()
    }

    /// Queue `tell` for every other member.
    fn send(&self, tell: tell::Kind) {
        let at = Instant::now();
        for peer in self.others() {
            let queued = Queued {
                tell: tell.clone(),
                at,
            };
            if self.queue(peer).try_send(queued).is_err() {
                self.losses.queue_full.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The ordered queue to `peer`, with its sending task started on first use.
    fn queue(&self, peer: NodeId) -> mpsc::Sender<Queued> {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        queues
            .entry(peer)
            .or_insert_with(|| {
                let (tx, rx) = mpsc::channel(PEER_QUEUE);
                let sender = Sender {
                    peer,
                    peers: self.peers.clone(),
                    link: self.link,
                    config: self.config,
                    losses: self.losses.clone(),
                };
                tokio::spawn(sender.run(rx));
                tx
            })
            .clone()
    }

    /// Ask every other member `request` at once, each within `deadline`: one answer per member,
    /// in no particular order (a member that cannot be reached, or answers with a refusal,
    /// counts as disconnected).
    fn ask_all(
        &self,
        request: adapter_request::Kind,
        deadline: Duration,
    ) -> FuturesUnordered<BoxFuture<'static, Result<adapter_reply::Kind, AckError>>> {
        let request: Bytes = AdapterRequest {
            kind: Some(request),
        }
        .encode_to_vec()
        .into();
        self.others()
            .into_iter()
            .map(|peer| {
                let link = self.peers.link(peer, &self.link);
                let request = request.clone();
                let ask: BoxFuture<'static, _> = Box::pin(async move {
                    let link = link.ok_or(AckError::Disconnected)?;
                    let reply = link.call(request, deadline).await.map_err(|e| {
                        tracing::debug!(peer, %e, "adapter request to peer failed");
                        match e {
                            LinkError::Timeout(_) => AckError::Timeout,
                            _ => AckError::Disconnected,
                        }
                    })?;
                    match AdapterReply::decode(reply) {
                        Ok(AdapterReply {
                            kind: Some(adapter_reply::Kind::Refused(reason)),
                        }) => {
                            tracing::debug!(peer, %reason, "adapter request refused");
                            Err(AckError::Disconnected)
                        }
                        Ok(AdapterReply { kind: Some(kind) }) => Ok(kind),
                        _ => Err(AckError::Disconnected),
                    }
                });
                ask
            })
            .collect()
    }

    fn server_event_request(
        &self,
        event: ServerEvent,
        ack: Option<Duration>,
    ) -> ServerEventRequest {
        ServerEventRequest {
            mount: self.mount.clone(),
            nsp: event.nsp,
            event: event.event,
            args: Some(values_to_pb(event.args)),
            want_ack: ack.is_some(),
            timeout_ms: ack.map_or(0, millis),
        }
    }
}

/// The link kind, opener and bounds of adapter links.
fn link_spec(config: &AdapterConfig) -> LinkSpec {
    LinkSpec {
        kind: LinkKind::Adapter,
        open: open_link,
        config: LinkConfig::new(config.max_message),
    }
}

/// Opens the `Adapter.Link` stream of an adapter link.
fn open_link(
    channel: PeerChannel,
    frames: ReceiverStream<Frame>,
) -> BoxFuture<'static, Result<Streaming<Frame>, Status>> {
    Box::pin(async move {
        let replies = AdapterClient::new(channel).link(frames).await?;
        Ok(replies.into_inner())
    })
}

/// The sending task of one peer's queue.
struct Sender {
    peer: NodeId,
    peers: Peers,
    link: LinkSpec,
    config: AdapterConfig,
    losses: Arc<Losses>,
}

impl Sender {
    /// Takes what has queued up as one batch, puts it on the link (in order, with at most
    /// [`MAX_IN_FLIGHT`] batches unconfirmed), until the adapter is dropped.
    async fn run(self, mut queue: mpsc::Receiver<Queued>) {
        let mut in_flight = FuturesUnordered::new();
        loop {
            let first = tokio::select! {
                next = queue.recv(), if in_flight.len() < MAX_IN_FLIGHT => match next {
                    Some(first) => first,
                    None => break,
                },
                Some(()) = in_flight.next(), if !in_flight.is_empty() => continue,
            };
            let batch = self.batch(first, &mut queue);
            if batch.is_empty() {
                continue;
            }
            if let Some(confirmed) = self.put(batch) {
                in_flight.push(confirmed);
            }
        }
        while in_flight.next().await.is_some() {}
    }

    /// `first` and whatever else waits, up to the batch bounds, without the requests that
    /// are too old to deliver.
    fn batch(&self, first: Queued, queue: &mut mpsc::Receiver<Queued>) -> Vec<Tell> {
        let now = Instant::now();
        let mut tells = Vec::new();
        let mut bytes = 0;
        let mut next = Some(first);
        while let Some(queued) = next.take() {
            if now.duration_since(queued.at) > self.config.max_age {
                self.losses.stale.fetch_add(1, Ordering::Relaxed);
            } else {
                let tell = Tell {
                    kind: Some(queued.tell),
                };
                bytes += tell.encoded_len();
                tells.push(tell);
            }
            if tells.len() < MAX_BATCH && bytes < BATCH_BYTES {
                next = queue.try_recv().ok();
            }
        }
        tells
    }

    /// Puts a batch on the link at once; returns the wait for its confirmation, which counts
    /// it as unconfirmed if it fails.
    fn put(&self, tells: Vec<Tell>) -> Option<BoxFuture<'static, ()>> {
        let count = tells.len() as u64;
        let batch = Batch {
            tells,
            sent_ms: unix_millis(),
            max_age_ms: millis(self.config.max_age),
        };
        let request: Bytes = AdapterRequest {
            kind: Some(adapter_request::Kind::Batch(batch)),
        }
        .encode_to_vec()
        .into();
        let sent = self
            .peers
            .link(self.peer, &self.link)
            .ok_or(LinkError::UnknownPeer(self.peer))
            .and_then(|link| link.send(request));
        let (peer, deadline, losses) = (self.peer, self.config.deadline, self.losses.clone());
        let reply = match sent {
            Ok(reply) => reply,
            Err(e) => {
                tracing::debug!(peer, %e, "adapter batch not sent");
                losses.unconfirmed.fetch_add(count, Ordering::Relaxed);
                return None;
            }
        };
        Some(Box::pin(async move {
            if let Err(e) = reply.wait(deadline).await {
                tracing::debug!(peer, %e, "adapter batch not confirmed");
                losses.unconfirmed.fetch_add(count, Ordering::Relaxed);
            }
        }))
    }
}

impl Adapter for GrpcAdapter {
    fn broadcast(&self, broadcast: RemoteBroadcast) {
        let Encoded { text, attachments } = broadcast.packet;
        self.send(tell::Kind::Broadcast(BroadcastRequest {
            selection: Some(selection_to_pb(&self.mount, broadcast.selection)),
            packet: text,
            attachments: attachments.into_iter().map(|a| a.to_vec()).collect(),
            volatile: broadcast.volatile,
            offset: broadcast.offset.unwrap_or_default(),
        }));
    }

    fn act(&self, selection: Selection, action: RemoteAction) {
        let action = match action {
            RemoteAction::Join(room) => act_request::Action::Join(room),
            RemoteAction::Leave(room) => act_request::Action::Leave(room),
            RemoteAction::Disconnect { close } => {
                act_request::Action::Disconnect(Disconnect { close })
            }
        };
        self.send(tell::Kind::Act(ActRequest {
            selection: Some(selection_to_pb(&self.mount, selection)),
            action: Some(action),
        }));
    }

    fn fetch(&self, selection: Selection) -> BoxFuture<'static, Vec<SocketDetails>> {
        let request = adapter_request::Kind::Fetch(FetchRequest {
            selection: Some(selection_to_pb(&self.mount, selection)),
        });
        let replies = self.ask_all(request, PEER_DEADLINE);
        Box::pin(async move {
            replies
                .filter_map(|reply| async move {
                    match reply {
                        Ok(adapter_reply::Kind::Fetch(fetched)) => Some(fetched.sockets),
                        _ => None,
                    }
                })
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .flatten()
                .map(details_from_pb)
                .collect()
        })
    }

    fn broadcast_with_ack(
        &self,
        request: RemoteAckRequest,
    ) -> BoxFuture<'static, Vec<AckResponse>> {
        let timeout = request.timeout;
        let request = adapter_request::Kind::Ack(AckRequest {
            selection: Some(selection_to_pb(&self.mount, request.selection)),
            event: request.event,
            args: Some(values_to_pb(request.args)),
            volatile: request.volatile,
            timeout_ms: millis(timeout),
        });
        let replies = self.ask_all(request, timeout + ACK_REPORT_GRACE);
        Box::pin(async move {
            replies
                .filter_map(|reply| async move {
                    match reply {
                        Ok(adapter_reply::Kind::Ack(acks)) => Some(acks.acks),
                        _ => None,
                    }
                })
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .flatten()
                .map(ack_from_pb)
                .collect()
        })
    }

    fn recover(&self, nsp: &str, pid: &str, offset: &str) -> BoxFuture<'static, Option<Recovered>> {
        let request = adapter_request::Kind::Recover(RecoverRequest {
            mount: self.mount.clone(),
            nsp: nsp.to_owned(),
            pid: pid.to_owned(),
            offset: offset.to_owned(),
        });
        let mut replies = self.ask_all(request, PEER_DEADLINE);
        // A pid is held by one node at most: the first that has it is the one, and the others
        // are not waited for.
        Box::pin(async move {
            while let Some(reply) = replies.next().await {
                if let Ok(adapter_reply::Kind::Recover(found)) = reply
                    && let Some(recovered) = recovered_from_pb(found)
                {
                    return Some(recovered);
                }
            }
            None
        })
    }

    fn server_emit(&self, event: ServerEvent) {
        self.send(tell::Kind::ServerEvent(
            self.server_event_request(event, None),
        ));
    }

    fn server_emit_with_ack(
        &self,
        event: ServerEvent,
        timeout: Duration,
    ) -> BoxFuture<'static, Vec<Result<Vec<Value>, AckError>>> {
        let request =
            adapter_request::Kind::ServerEvent(self.server_event_request(event, Some(timeout)));
        let replies = self.ask_all(request, timeout + ACK_REPORT_GRACE);
        Box::pin(async move {
            replies
                .map(|reply| match reply? {
                    adapter_reply::Kind::ServerEvent(reply) => {
                        match (reply.acknowledged, reply.timed_out) {
                            (true, _) => values_from_pb(reply.args).ok_or(AckError::Unanswered),
                            (false, true) => Err(AckError::Timeout),
                            (false, false) => Err(AckError::Unanswered),
                        }
                    }
                    _ => Err(AckError::Disconnected),
                })
                .collect()
                .await
        })
    }

    fn changed(&self, change: SocketChange) {
        self.registry.record(change_to_command(change));
    }
}

/// Milliseconds since the Unix epoch (0 for a clock before it).
fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, millis)
}

/// The registry command that records a change of a socket.
fn change_to_command(change: SocketChange) -> Command {
    // The registry keeps JSON; binary in socket data is kept as arrays of byte values.
    let json = |data: &Value| serde_json::to_value(data).unwrap_or_default();
    match change {
        SocketChange::Joined {
            session,
            nsp,
            socket_id,
            pid,
            rooms,
            data,
        } => {
            let mut commands = vec![Command::JoinNamespace {
                sid: session.clone(),
                nsp: nsp.clone(),
                socket_id,
                pid,
            }];
            if !rooms.is_empty() {
                commands.push(Command::JoinRooms {
                    sid: session.clone(),
                    nsp: nsp.clone(),
                    rooms,
                });
            }
            if !data.is_null() {
                commands.push(Command::SetData {
                    sid: session,
                    nsp,
                    data: json(&data),
                });
            }
            match commands.len() {
                1 => commands.remove(0),
                _ => Command::Batch(commands),
            }
        }
        SocketChange::Left { session, nsp } => Command::LeaveNamespace { sid: session, nsp },
        SocketChange::JoinedRooms {
            session,
            nsp,
            rooms,
        } => Command::JoinRooms {
            sid: session,
            nsp,
            rooms,
        },
        SocketChange::LeftRoom { session, nsp, room } => Command::LeaveRooms {
            sid: session,
            nsp,
            rooms: vec![room],
        },
        SocketChange::Data { session, nsp, data } => Command::SetData {
            sid: session,
            nsp,
            data: json(&data),
        },
    }
}
