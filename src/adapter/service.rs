//! The `Adapter` gRPC service: applies what peers send to this node's own sockets, through the
//! `*_local` methods of the Socket.IO servers mounted here.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use tonic::{Request, Response, Status};

use super::convert::{
    ack_to_pb, details_to_pb, recovered_to_pb, selection_from_pb, values_from_pb, values_to_pb,
};
use crate::protocol::sio::Encoded;
use crate::rpc::pb::adapter::adapter_server::{Adapter, AdapterServer};
use crate::rpc::pb::adapter::{
    AckReply, AckRequest, ActReply, ActRequest, BroadcastReply, BroadcastRequest, FetchReply,
    FetchRequest, RecoverReply, RecoverRequest, ServerEventReply, ServerEventRequest, act_request,
};
use crate::socketio::{RemoteAckRequest, RemoteAction, RemoteBroadcast, ServerEvent, SocketIo};

/// The longest a peer may ask this node to wait for acks: a bound on what a request can hold.
const MAX_ACK_WAIT: Duration = Duration::from_secs(600);

/// Hands what peers send to the local Socket.IO servers.
pub struct AdapterService {
    servers: HashMap<String, SocketIo>,
}

impl AdapterService {
    /// The service for these Socket.IO servers, by mount path.
    pub fn server(servers: HashMap<String, SocketIo>) -> AdapterServer<AdapterService> {
        AdapterServer::new(AdapterService { servers })
    }

    fn io(&self, mount: &str) -> Result<&SocketIo, Status> {
        self.servers
            .get(mount)
            .ok_or_else(|| Status::not_found("no Socket.IO server at that mount"))
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[tonic::async_trait]
impl Adapter for AdapterService {
    async fn broadcast(
        &self,
        request: Request<BroadcastRequest>,
    ) -> Result<Response<BroadcastReply>, Status> {
        let request = request.into_inner();
        let (mount, selection) = selection_from_pb(request.selection);
        let broadcast = RemoteBroadcast {
            selection,
            packet: Encoded {
                text: request.packet,
                attachments: request.attachments.into_iter().map(Bytes::from).collect(),
            },
            volatile: request.volatile,
            offset: Some(request.offset).filter(|o| !o.is_empty()),
        };
        let recipients = self.io(&mount)?.deliver_local(&broadcast);
        Ok(Response::new(BroadcastReply {
            recipients: count(recipients),
        }))
    }

    async fn act(&self, request: Request<ActRequest>) -> Result<Response<ActReply>, Status> {
        let request = request.into_inner();
        let (mount, selection) = selection_from_pb(request.selection);
        let action = match request.action {
            Some(act_request::Action::Join(room)) => RemoteAction::Join(room),
            Some(act_request::Action::Leave(room)) => RemoteAction::Leave(room),
            Some(act_request::Action::Disconnect(d)) => RemoteAction::Disconnect { close: d.close },
            None => return Err(Status::invalid_argument("no action")),
        };
        let sockets = self.io(&mount)?.act_local(&selection, &action);
        Ok(Response::new(ActReply {
            sockets: count(sockets),
        }))
    }

    async fn fetch(&self, request: Request<FetchRequest>) -> Result<Response<FetchReply>, Status> {
        let (mount, selection) = selection_from_pb(request.into_inner().selection);
        let sockets = self.io(&mount)?.fetch_local(&selection);
        Ok(Response::new(FetchReply {
            sockets: sockets.into_iter().map(details_to_pb).collect(),
        }))
    }

    async fn broadcast_with_ack(
        &self,
        request: Request<AckRequest>,
    ) -> Result<Response<AckReply>, Status> {
        let request = request.into_inner();
        let (mount, selection) = selection_from_pb(request.selection);
        let args = values_from_pb(request.args)
            .ok_or_else(|| Status::invalid_argument("undecodable arguments"))?;
        let answers = self
            .io(&mount)?
            .ack_local(RemoteAckRequest {
                selection,
                event: request.event,
                args,
                volatile: request.volatile,
                timeout: Duration::from_millis(request.timeout_ms).min(MAX_ACK_WAIT),
            })
            .await;
        Ok(Response::new(AckReply {
            acks: answers.into_iter().map(ack_to_pb).collect(),
        }))
    }

    async fn server_event(
        &self,
        request: Request<ServerEventRequest>,
    ) -> Result<Response<ServerEventReply>, Status> {
        let request = request.into_inner();
        let args = values_from_pb(request.args)
            .ok_or_else(|| Status::invalid_argument("undecodable arguments"))?;
        let event = ServerEvent {
            nsp: request.nsp,
            event: request.event,
            args,
        };
        let answer = self
            .io(&request.mount)?
            .server_event_local(event, request.want_ack);
        let mut reply = ServerEventReply::default();
        if let Some(answer) = answer {
            let wait = Duration::from_millis(request.timeout_ms).min(MAX_ACK_WAIT);
            match tokio::time::timeout(wait, answer).await {
                Ok(Ok(args)) => {
                    reply.acknowledged = true;
                    reply.args = Some(values_to_pb(args));
                }
                Ok(Err(_)) => {}
                Err(_) => reply.timed_out = true,
            }
        }
        Ok(Response::new(reply))
    }

    async fn recover(
        &self,
        request: Request<RecoverRequest>,
    ) -> Result<Response<RecoverReply>, Status> {
        let r = request.into_inner();
        let recovered = self.io(&r.mount)?.recover_local(&r.nsp, &r.pid, &r.offset);
        Ok(Response::new(recovered_to_pb(recovered)))
    }
}
