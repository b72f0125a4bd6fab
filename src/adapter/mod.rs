//! The cross-node adapter: what a node does to a selection of sockets — broadcast, join or
//! leave rooms, disconnect, list them, broadcast with acks, take back a socket for recovery —
//! reaches the matching sockets of every node, and server-side emits reach the servers of every
//! node.
//!
//! The node that acts does its own sockets itself and sends the request to every other member
//! of the registry's membership, where the same selection runs against that node's sockets
//! (`service`). Broadcasts and actions need no answer: each peer has one ordered queue, so they
//! arrive at another node in the order they were made, and a join followed by a broadcast to
//! that room reaches the joined sockets. The queue is bounded: when a peer cannot keep up, new
//! requests for it are dropped and counted. Listings, acks, server-side emits with acks and
//! recovery look-ups ask every member at once and wait for each answer, with a deadline.
//!
//! It also keeps the registry's record of this node's sockets (namespace joins with socket ids
//! and pids, rooms, data) up to date: each change is queued as one registry command, in order,
//! without holding up the socket.

mod convert;
mod service;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tonic::{Response, Status};

use crate::protocol::sio::Encoded;
use crate::protocol::value::Value;
use crate::registry::{Command, NodeId, Registry};
use crate::rpc::pb::adapter::adapter_client::AdapterClient;
use crate::rpc::pb::adapter::{
    AckRequest, ActRequest, BroadcastRequest, Disconnect, FetchRequest, RecoverRequest,
    ServerEventRequest, act_request,
};
use crate::rpc::{PeerChannel, Peers};
use crate::socketio::{
    AckError, AckResponse, Adapter, Recovered, RemoteAckRequest, RemoteAction, RemoteBroadcast,
    Selection, ServerEvent, SocketChange, SocketDetails,
};
use convert::{
    ack_from_pb, details_from_pb, millis, recovered_from_pb, selection_to_pb, values_from_pb,
    values_to_pb,
};

pub use service::AdapterService;

/// Requests that may wait for one peer.
const PEER_QUEUE: usize = 4096;
/// How long a listing or a recovery look-up waits for a peer.
const PEER_DEADLINE: Duration = Duration::from_secs(5);
/// How much longer than the emit's timeout a peer's ack report may take: the peer reports at
/// the timeout at the latest.
const ACK_REPORT_GRACE: Duration = Duration::from_secs(2);

/// A request that needs no answer, in its peer's ordered queue.
#[derive(Clone)]
enum Call {
    Broadcast(BroadcastRequest),
    Act(ActRequest),
    ServerEvent(ServerEventRequest),
}

/// Sends this node's operations on sockets of one Socket.IO mount to the other nodes.
pub struct GrpcAdapter {
    node: NodeId,
    mount: String,
    peers: Peers,
    registry: Registry,
    queues: Mutex<HashMap<NodeId, mpsc::Sender<Call>>>,
    dropped: Arc<AtomicU64>,
}

impl GrpcAdapter {
    /// The adapter of node `node` for the Socket.IO server mounted at `mount`.
    pub fn new(node: NodeId, mount: &str, peers: Peers, registry: Registry) -> Self {
        GrpcAdapter {
            node,
            mount: mount.to_owned(),
            peers,
            registry,
            queues: Mutex::new(HashMap::new()),
            dropped: Arc::default(),
        }
    }

    /// Broadcasts and actions dropped because a peer's queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
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

    /// Queue `call` for every other member.
    fn send(&self, call: Call) {
        for peer in self.others() {
            if self.queue(peer).try_send(call.clone()).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The ordered queue to `peer`, with its sending task started on first use.
    fn queue(&self, peer: NodeId) -> mpsc::Sender<Call> {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        queues
            .entry(peer)
            .or_insert_with(|| {
                let (tx, mut rx) = mpsc::channel::<Call>(PEER_QUEUE);
                let peers = self.peers.clone();
                tokio::spawn(async move {
                    while let Some(call) = rx.recv().await {
                        let Some(channel) = peers.channel(peer) else {
                            continue;
                        };
                        let mut client = AdapterClient::new(channel);
                        let sent = match call {
                            Call::Broadcast(request) => client.broadcast(request).await.map(drop),
                            Call::Act(request) => client.act(request).await.map(drop),
                            Call::ServerEvent(request) => {
                                client.server_event(request).await.map(drop)
                            }
                        };
                        if let Err(status) = sent {
                            tracing::debug!(peer, %status, "adapter call to peer failed");
                        }
                    }
                });
                tx
            })
            .clone()
    }

    /// Make `call` to every other member at once: one result per member, within `deadline`
    /// (a member that cannot be reached counts as disconnected).
    fn ask_all<T, F, Fut>(
        &self,
        deadline: Duration,
        call: F,
    ) -> BoxFuture<'static, Vec<Result<T, AckError>>>
    where
        T: Send + 'static,
        F: Fn(AdapterClient<PeerChannel>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>> + Send + 'static,
    {
        let asks: Vec<_> = self
            .others()
            .into_iter()
            .map(|peer| {
                let answer = self
                    .peers
                    .channel(peer)
                    .map(|channel| call(AdapterClient::new(channel)));
                async move {
                    let Some(answer) = answer else {
                        return Err(AckError::Disconnected);
                    };
                    match tokio::time::timeout(deadline, answer).await {
                        Ok(Ok(reply)) => Ok(reply.into_inner()),
                        Ok(Err(status)) => {
                            tracing::debug!(peer, %status, "adapter request to peer failed");
                            Err(AckError::Disconnected)
                        }
                        Err(_) => {
                            tracing::debug!(peer, "adapter request to peer timed out");
                            Err(AckError::Timeout)
                        }
                    }
                }
            })
            .collect();
        Box::pin(futures::future::join_all(asks))
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

impl Adapter for GrpcAdapter {
    fn broadcast(&self, broadcast: RemoteBroadcast) {
        let Encoded { text, attachments } = broadcast.packet;
        self.send(Call::Broadcast(BroadcastRequest {
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
        self.send(Call::Act(ActRequest {
            selection: Some(selection_to_pb(&self.mount, selection)),
            action: Some(action),
        }));
    }

    fn fetch(&self, selection: Selection) -> BoxFuture<'static, Vec<SocketDetails>> {
        let request = FetchRequest {
            selection: Some(selection_to_pb(&self.mount, selection)),
        };
        let replies = self.ask_all(PEER_DEADLINE, move |mut client| {
            let request = request.clone();
            async move { client.fetch(request).await }
        });
        Box::pin(async move {
            replies
                .await
                .into_iter()
                .flatten()
                .flat_map(|reply| reply.sockets)
                .map(details_from_pb)
                .collect()
        })
    }

    fn broadcast_with_ack(
        &self,
        request: RemoteAckRequest,
    ) -> BoxFuture<'static, Vec<AckResponse>> {
        let timeout = request.timeout;
        let request = AckRequest {
            selection: Some(selection_to_pb(&self.mount, request.selection)),
            event: request.event,
            args: Some(values_to_pb(request.args)),
            volatile: request.volatile,
            timeout_ms: millis(timeout),
        };
        let replies = self.ask_all(timeout + ACK_REPORT_GRACE, move |mut client| {
            let request = request.clone();
            async move { client.broadcast_with_ack(request).await }
        });
        Box::pin(async move {
            replies
                .await
                .into_iter()
                .flatten()
                .flat_map(|reply| reply.acks)
                .map(ack_from_pb)
                .collect()
        })
    }

    fn recover(&self, nsp: &str, pid: &str, offset: &str) -> BoxFuture<'static, Option<Recovered>> {
        let request = RecoverRequest {
            mount: self.mount.clone(),
            nsp: nsp.to_owned(),
            pid: pid.to_owned(),
            offset: offset.to_owned(),
        };
        let replies = self.ask_all(PEER_DEADLINE, move |mut client| {
            let request = request.clone();
            async move { client.recover(request).await }
        });
        // A pid is held by one node at most: the first that found it is the one.
        Box::pin(async move {
            replies
                .await
                .into_iter()
                .flatten()
                .find_map(recovered_from_pb)
        })
    }

    fn server_emit(&self, event: ServerEvent) {
        self.send(Call::ServerEvent(self.server_event_request(event, None)));
    }

    fn server_emit_with_ack(
        &self,
        event: ServerEvent,
        timeout: Duration,
    ) -> BoxFuture<'static, Vec<Result<Vec<Value>, AckError>>> {
        let request = self.server_event_request(event, Some(timeout));
        let replies = self.ask_all(timeout + ACK_REPORT_GRACE, move |mut client| {
            let request = request.clone();
            async move { client.server_event(request).await }
        });
        Box::pin(async move {
            replies
                .await
                .into_iter()
                .map(|reply| {
                    let reply = reply?;
                    match (reply.acknowledged, reply.timed_out) {
                        (true, _) => values_from_pb(reply.args).ok_or(AckError::Unanswered),
                        (false, true) => Err(AckError::Timeout),
                        (false, false) => Err(AckError::Unanswered),
                    }
                })
                .collect()
        })
    }

    fn changed(&self, change: SocketChange) {
        self.registry.record(change_to_command(change));
    }
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
