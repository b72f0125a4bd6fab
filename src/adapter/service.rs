//! The serving side of the adapter's links: applies what a peer asks to this node's own
//! sockets, through the `*_local` methods of the Socket.IO servers mounted here.
//!
//! Batches, listings and recovery look-ups are answered on the spot, so they are applied in
//! the order the peer made them; broadcasts with acks and server-side emits with acks wait
//! for their answers in tasks of their own. A batch that arrives later than its maximum age
//! (it waited behind a stalled link) is dropped and counted instead of applied late.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use prost::Message as _;
use tonic::{Request, Response, Status, Streaming};

use super::Checkpoints;
use super::convert::{
    ack_to_pb, details_to_pb, replayed_to_pb, selection_from_pb, values_from_pb, values_to_pb,
};
use crate::protocol::sio::Encoded;
use crate::registry::unix_millis;
use crate::rpc::link::{self, Ended, Replies, Serve, Served};
use crate::rpc::pb::adapter::adapter_server::{Adapter, AdapterServer};
use crate::rpc::pb::adapter::{
    AckReply, AckRequest, ActRequest, AdapterReply, AdapterRequest, Batch, BroadcastRequest,
    CheckpointsReply, Delivered, FetchReply, ServerEventReply, ServerEventRequest, act_request,
    adapter_reply, adapter_request, tell,
};
use crate::rpc::pb::link::Frame;
use crate::socketio::{RemoteAckRequest, RemoteAction, RemoteBroadcast, ServerEvent, SocketIo};

/// The longest a peer may ask this node to wait for acks: a bound on what a request can hold.
const MAX_ACK_WAIT: Duration = Duration::from_secs(600);

/// The `Adapter` gRPC service: one link per peer.
pub struct AdapterService {
    servers: Arc<Servers>,
    max_message: usize,
}

/// What the adapter service counts, for `/metrics`. Cheap to clone.
#[derive(Clone)]
pub struct AdapterServed {
    servers: Arc<Servers>,
}

impl AdapterServed {
    /// Requests from peers dropped because their batch arrived later than its maximum age.
    pub fn expired(&self) -> u64 {
        self.servers.expired.load(Ordering::Relaxed)
    }
}

impl AdapterService {
    /// The service for these Socket.IO servers, by mount path, accepting requests of at most
    /// `max_message` bytes, and its counters.
    pub fn server(
        servers: HashMap<String, SocketIo>,
        checkpoints: Checkpoints,
        max_message: usize,
    ) -> (AdapterServer<AdapterService>, AdapterServed) {
        let servers = Arc::new(Servers {
            by_mount: servers,
            checkpoints,
            expired: AtomicU64::new(0),
        });
        let served = AdapterServed {
            servers: servers.clone(),
        };
        let service = AdapterService {
            servers,
            max_message,
        };
        (AdapterServer::new(service), served)
    }
}

#[tonic::async_trait]
impl Adapter for AdapterService {
    type LinkStream = Replies;

    async fn link(
        &self,
        request: Request<Streaming<Frame>>,
    ) -> Result<Response<Self::LinkStream>, Status> {
        let stream = Arc::new(Stream {
            servers: self.servers.clone(),
            fastest: AtomicI64::new(i64::MAX),
        });
        Ok(Response::new(link::serve(
            stream,
            request.into_inner(),
            self.max_message,
        )))
    }
}

/// The local Socket.IO servers, by mount path.
struct Servers {
    by_mount: HashMap<String, SocketIo>,
    checkpoints: Checkpoints,
    /// Requests of batches that arrived too late.
    expired: AtomicU64,
}

/// The requests of one peer's link.
struct Stream {
    servers: Arc<Servers>,
    /// The shortest time from a batch's sending (by the peer's clock) to its arrival (by
    /// ours) seen on this link, in milliseconds: the clocks' offset plus the link's fastest
    /// delivery. A batch that took much longer than that waited behind a stalled link.
    fastest: AtomicI64,
}

impl Stream {
    /// Whether `batch` arrived later than its maximum age allows.
    fn expired(&self, batch: &Batch) -> bool {
        let now = i64::try_from(unix_millis()).unwrap_or(i64::MAX);
        let sent = i64::try_from(batch.sent_ms).unwrap_or(i64::MAX);
        let took = now.saturating_sub(sent);
        let fastest = self.fastest.fetch_min(took, Ordering::Relaxed).min(took);
        let late = took.saturating_sub(fastest);
        late > i64::try_from(batch.max_age_ms).unwrap_or(i64::MAX)
    }
}

impl Serve for Stream {
    fn serve(&self, request: Bytes, _ended: Ended) -> Served {
        let Ok(AdapterRequest { kind: Some(kind) }) = AdapterRequest::decode(request) else {
            return Served::Now(Err("an undecodable adapter request".into()));
        };
        let servers = &self.servers;
        let reply = match kind {
            adapter_request::Kind::Batch(batch) if self.expired(&batch) => {
                let dropped = batch.tells.len() as u64;
                servers.expired.fetch_add(dropped, Ordering::Relaxed);
                Ok(adapter_reply::Kind::Delivered(Delivered {
                    applied: 0,
                    expired: true,
                }))
            }
            adapter_request::Kind::Batch(batch) => {
                let applied = batch
                    .tells
                    .into_iter()
                    .filter_map(|t| t.kind)
                    .map(|tell| servers.tell(tell))
                    .filter(|applied| *applied)
                    .count();
                Ok(adapter_reply::Kind::Delivered(Delivered {
                    applied: count(applied),
                    expired: false,
                }))
            }
            adapter_request::Kind::Fetch(fetch) => {
                let (mount, selection) = selection_from_pb(fetch.selection);
                servers.io(&mount).map(|io| {
                    let sockets = io.fetch_local(&selection);
                    adapter_reply::Kind::Fetch(FetchReply {
                        sockets: sockets.into_iter().map(details_to_pb).collect(),
                    })
                })
            }
            adapter_request::Kind::Checkpoints(r) => {
                Ok(adapter_reply::Kind::Checkpoints(CheckpointsReply {
                    received: servers.checkpoints.get(&r.session),
                }))
            }
            adapter_request::Kind::Replay(r) => servers.io(&r.mount).map(|io| {
                let replayed = io.replay_local(&r.nsp, &r.seen, &r.rooms);
                adapter_reply::Kind::Replay(replayed_to_pb(replayed))
            }),
            adapter_request::Kind::Ack(ack) => return later(servers.ack(ack)),
            adapter_request::Kind::ServerEvent(event) => {
                return later(servers.server_event(event));
            }
        };
        Served::Now(Ok(encode(reply)))
    }
}

impl Servers {
    fn io(&self, mount: &str) -> Result<&SocketIo, String> {
        self.by_mount
            .get(mount)
            .ok_or_else(|| format!("no Socket.IO server at {mount}"))
    }

    /// Applies one request of a batch; whether it could be.
    fn tell(&self, tell: tell::Kind) -> bool {
        match tell {
            tell::Kind::Broadcast(request) => self.broadcast(request).is_ok(),
            tell::Kind::Act(request) => self.act(request).is_ok(),
            tell::Kind::ServerEvent(request) => self.server_event_now(request).is_ok(),
            tell::Kind::Checkpoint(c) => {
                self.checkpoints.put(c.session, c.nsp, c.received);
                true
            }
        }
    }

    fn broadcast(&self, request: BroadcastRequest) -> Result<usize, String> {
        let (mount, selection) = selection_from_pb(request.selection);
        let broadcast = RemoteBroadcast {
            selection,
            packet: Encoded {
                text: request.packet,
                attachments: request.attachments.into_iter().map(Bytes::from).collect(),
            },
            volatile: request.volatile,
            stamp: Some(request.stamp).filter(|o| !o.is_empty()),
        };
        Ok(self.io(&mount)?.deliver_local(&broadcast))
    }

    fn act(&self, request: ActRequest) -> Result<usize, String> {
        let (mount, selection) = selection_from_pb(request.selection);
        let action = match request.action {
            Some(act_request::Action::Join(room)) => RemoteAction::Join(room),
            Some(act_request::Action::Leave(room)) => RemoteAction::Leave(room),
            Some(act_request::Action::Disconnect(d)) => RemoteAction::Disconnect { close: d.close },
            None => return Err("no action".into()),
        };
        Ok(self.io(&mount)?.act_local(&selection, &action))
    }

    fn server_event_now(&self, request: ServerEventRequest) -> Result<(), String> {
        let (mount, event) = server_event_of(request)?;
        self.io(&mount)?.server_event_local(event, false);
        Ok(())
    }

    fn ack(&self, request: AckRequest) -> Result<BoxFuture<'static, adapter_reply::Kind>, String> {
        let (mount, selection) = selection_from_pb(request.selection);
        let args = values_from_pb(request.args).ok_or("undecodable arguments")?;
        let answers = self.io(&mount)?.ack_local(RemoteAckRequest {
            selection,
            event: request.event,
            args,
            volatile: request.volatile,
            timeout: Duration::from_millis(request.timeout_ms).min(MAX_ACK_WAIT),
        });
        Ok(Box::pin(async move {
            adapter_reply::Kind::Ack(AckReply {
                acks: answers.await.into_iter().map(ack_to_pb).collect(),
            })
        }))
    }

    fn server_event(
        &self,
        request: ServerEventRequest,
    ) -> Result<BoxFuture<'static, adapter_reply::Kind>, String> {
        let wait = Duration::from_millis(request.timeout_ms).min(MAX_ACK_WAIT);
        let (mount, event) = server_event_of(request)?;
        let answer = self.io(&mount)?.server_event_local(event, true);
        Ok(Box::pin(async move {
            let mut reply = ServerEventReply::default();
            if let Some(answer) = answer {
                match tokio::time::timeout(wait, answer).await {
                    Ok(Ok(args)) => {
                        reply.acknowledged = true;
                        reply.args = Some(values_to_pb(args));
                    }
                    Ok(Err(_)) => {}
                    Err(_) => reply.timed_out = true,
                }
            }
            adapter_reply::Kind::ServerEvent(reply)
        }))
    }
}

/// A request answered once `answer` completes (or at once, with its refusal).
fn later(answer: Result<BoxFuture<'static, adapter_reply::Kind>, String>) -> Served {
    match answer {
        Ok(answer) => Served::Later(Box::pin(async move { Ok(encode(Ok(answer.await))) })),
        Err(reason) => Served::Now(Ok(encode(Err(reason)))),
    }
}

/// The mount path and the event of a server-side emit.
fn server_event_of(request: ServerEventRequest) -> Result<(String, ServerEvent), String> {
    let args = values_from_pb(request.args).ok_or("undecodable arguments")?;
    let event = ServerEvent {
        nsp: request.nsp,
        event: request.event,
        args,
    };
    Ok((request.mount, event))
}

fn encode(reply: Result<adapter_reply::Kind, String>) -> Bytes {
    let kind = reply.unwrap_or_else(adapter_reply::Kind::Refused);
    AdapterReply { kind: Some(kind) }.encode_to_vec().into()
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
