//! The cross-node adapter: broadcasts made on one node reach the matching sockets of every node.
//!
//! A broadcast is encoded once on the node that makes it, delivered to its local sockets there,
//! and sent to every other member of the registry's membership, where the same room selection
//! runs against that node's sockets. Each peer has one ordered queue, so broadcasts from one
//! node arrive at another in the order they were made. The queue is bounded: when a peer cannot
//! keep up, its oldest pending broadcasts are not waited for — new ones are dropped and counted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use crate::protocol::sio::Encoded;
use crate::registry::{NodeId, Registry};
use crate::rpc::Peers;
use crate::rpc::pb::adapter::adapter_client::AdapterClient;
use crate::rpc::pb::adapter::adapter_server::{Adapter, AdapterServer};
use crate::rpc::pb::adapter::{BroadcastReply, BroadcastRequest};
use crate::socketio::{Fanout, RemoteBroadcast, SocketIo};

/// Broadcasts that may wait for one peer.
const PEER_QUEUE: usize = 4096;

/// Sends this node's broadcasts of one Socket.IO mount to the other nodes.
pub struct GrpcFanout {
    node: NodeId,
    mount: String,
    peers: Peers,
    registry: Registry,
    queues: Mutex<HashMap<NodeId, mpsc::Sender<BroadcastRequest>>>,
    dropped: Arc<AtomicU64>,
}

impl GrpcFanout {
    /// The fanout of node `node` for the Socket.IO server mounted at `mount`.
    pub fn new(node: NodeId, mount: &str, peers: Peers, registry: Registry) -> Self {
        GrpcFanout {
            node,
            mount: mount.to_owned(),
            peers,
            registry,
            queues: Mutex::new(HashMap::new()),
            dropped: Arc::default(),
        }
    }

    /// Broadcasts dropped because a peer's queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The ordered queue to `peer`, with its sending task started on first use.
    fn queue(&self, peer: NodeId) -> mpsc::Sender<BroadcastRequest> {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        queues
            .entry(peer)
            .or_insert_with(|| {
                let (tx, mut rx) = mpsc::channel::<BroadcastRequest>(PEER_QUEUE);
                let peers = self.peers.clone();
                tokio::spawn(async move {
                    while let Some(request) = rx.recv().await {
                        let Some(channel) = peers.channel(peer) else {
                            continue;
                        };
                        if let Err(status) = AdapterClient::new(channel).broadcast(request).await {
                            tracing::debug!(peer, %status, "broadcast to peer failed");
                        }
                    }
                });
                tx
            })
            .clone()
    }
}

impl Fanout for GrpcFanout {
    fn broadcast(&self, broadcast: RemoteBroadcast) {
        let Encoded { text, attachments } = broadcast.packet;
        let request = BroadcastRequest {
            packet: text,
            attachments: attachments.into_iter().map(|a| a.to_vec()).collect(),
            rooms: broadcast.rooms,
            except: broadcast.except,
            volatile: broadcast.volatile,
            mount: self.mount.clone(),
            nsp: broadcast.nsp,
        };
        for (peer, _, _) in self.registry.membership() {
            if peer == self.node {
                continue;
            }
            if self.queue(peer).try_send(request.clone()).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The `Adapter` service: hands broadcasts from peers to the local Socket.IO servers.
pub struct AdapterService {
    servers: HashMap<String, SocketIo>,
}

impl AdapterService {
    /// The service for these Socket.IO servers, by mount path.
    pub fn server(servers: HashMap<String, SocketIo>) -> AdapterServer<AdapterService> {
        AdapterServer::new(AdapterService { servers })
    }
}

#[tonic::async_trait]
impl Adapter for AdapterService {
    async fn broadcast(
        &self,
        request: Request<BroadcastRequest>,
    ) -> Result<Response<BroadcastReply>, Status> {
        let request = request.into_inner();
        let Some(io) = self.servers.get(&request.mount) else {
            return Err(Status::not_found("no Socket.IO server at that mount"));
        };
        let broadcast = RemoteBroadcast {
            nsp: request.nsp,
            packet: Encoded {
                text: request.packet,
                attachments: request.attachments.into_iter().map(Into::into).collect(),
            },
            rooms: request.rooms,
            except: request.except,
            volatile: request.volatile,
        };
        let recipients = io.deliver_remote(&broadcast);
        Ok(Response::new(BroadcastReply {
            recipients: u32::try_from(recipients).unwrap_or(u32::MAX),
        }))
    }
}
