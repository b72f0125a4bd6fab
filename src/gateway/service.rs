//! The owner's side of forwarding: the `Forward` gRPC service. Each forwarded polling request
//! is served by this node's engine exactly as a local one (`rpc::link::serve` runs it and
//! carries the answer back). A `cancel` frame aborts it, which drops the engine call the way a
//! vanished HTTP client would: a parked GET then closes the session, as the aborted-GET rule
//! says. The end of the stream is not a vanished client but a vanished forwarding node: a
//! parked GET gives its slot back and the session waits for the client's retry.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::{SinkExt, Stream, StreamExt};
use prost::Message as _;
use tonic::{Request as GrpcRequest, Response, Status, Streaming};
use tracing::Instrument;

use super::Gateway;
use super::MigrateError;
use super::convert;
use super::migrate::Declined;
use super::relay::{RELAY_QUEUE, close_frame};
use crate::engine::MoveError;
use crate::engine::{EngineError, LinkError as WsLinkError, Method, Outbound, Via};
use crate::protocol::eio::Frame;
use crate::rpc::link::{self, Ended, Replies, Serve, Served};
use crate::rpc::pb::forward::forward_server::{Forward, ForwardServer};
use crate::rpc::pb::forward::{
    EngineRequest, HandoverRequest, MigrateReply, MigrateRequest, PollingReply, WsFrame,
    migrate_reply, polling_reply, ws_frame,
};
use crate::rpc::pb::link::Frame as LinkFrame;

type ReplyStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The `Forward` service of one node.
#[derive(Clone)]
pub struct ForwardService {
    gateway: Gateway,
}

impl ForwardService {
    /// The service, ready to be mounted on the node's gRPC server.
    pub fn server(gateway: Gateway) -> ForwardServer<ForwardService> {
        // A migrating session carries its whole queue and its application's state.
        let largest = gateway
            .max_forwarded_message()
            .saturating_add(super::migrate::APP_STATE_MARGIN);
        ForwardServer::new(ForwardService { gateway }).max_decoding_message_size(largest)
    }
}

/// Serves the forwarded polling requests of one stream with this node's engines.
struct Polling {
    gateway: Gateway,
    /// This stream, as the engine tells the ways a session's GETs come by apart.
    via: Via,
}

/// The stream ended (its node stopped or died): a long-poll answer it carried may never have
/// reached the client, and is sent again.
impl Drop for Polling {
    fn drop(&mut self) {
        for (_, engine) in self.gateway.mounts() {
            engine.answers_lost(self.via);
        }
    }
}

/// Numbers the incoming streams (polling links and websocket relays); 0 is the engine's own
/// HTTP front.
static STREAMS: AtomicU64 = AtomicU64::new(1);

/// The way of a new incoming stream.
fn next_via() -> Via {
    Via(STREAMS.fetch_add(1, Ordering::Relaxed))
}

impl Serve for Polling {
    fn serve(&self, request: Bytes, ended: Ended) -> Served {
        let Ok(request) = EngineRequest::decode(request) else {
            return Served::Now(Err("an undecodable engine request".into()));
        };
        let (gateway, via) = (self.gateway.clone(), self.via);
        Served::Later(Box::pin(async move {
            let result = serve_polling(&gateway, request, via, ended).await;
            Ok(PollingReply {
                result: Some(result),
            }
            .encode_to_vec()
            .into())
        }))
    }
}

/// Serve one forwarded request with the local engine.
async fn serve_polling(
    gateway: &Gateway,
    request: EngineRequest,
    via: Via,
    ended: Ended,
) -> polling_reply::Result {
    let (mount, req, body) = convert::request_from_pb(request);
    let span = tracing::debug_span!(
        "forwarded",
        node = gateway.node_id().unwrap_or_default(),
        request_id = req.request_id.as_deref().unwrap_or_default(),
        sid = req.sid.as_deref().unwrap_or_default(),
    );
    let result = serve_request(gateway, &mount, req, body, via, ended)
        .instrument(span.clone())
        .await;
    span.in_scope(|| tracing::debug!(answer = reply_kind(&result), "answered"));
    result
}

/// What a reply to a forwarded request is, for the log.
fn reply_kind(reply: &polling_reply::Result) -> &'static str {
    match reply {
        polling_reply::Result::Body(_) => "body",
        polling_reply::Result::Error(_) => "error",
        polling_reply::Result::Moved(_) => "moved",
    }
}

async fn serve_request(
    gateway: &Gateway,
    mount: &str,
    req: crate::engine::Request,
    body: Bytes,
    via: Via,
    ended: Ended,
) -> polling_reply::Result {
    let Some(engine) = gateway.engine(mount) else {
        return polling_reply::Result::Error(convert::error_to_pb(&EngineError::UnknownSid));
    };
    if !gateway.serving() {
        return polling_reply::Result::Error(convert::error_to_pb(&EngineError::Unavailable));
    }
    let sid = req.sid.clone().unwrap_or_default();
    if !engine.has_session(&sid) {
        gateway.adopt(mount, &sid).await;
        if let Some(to) = gateway.moved_to(&sid).await {
            return polling_reply::Result::Moved(to);
        }
    }
    let result = match req.method {
        // A GET given up because its forwarding node vanished answers nobody: its reply
        // is dropped with the stream.
        Method::Get => engine
            .poll_forwarded(&req, via, ended.wait())
            .await
            .map(Option::unwrap_or_default),
        Method::Post => match engine.check_post(&req) {
            Ok(()) => engine.post(&req, body).await.map(|()| "ok".to_owned()),
            Err(e) => Err(e),
        },
        Method::Other => Err(engine.check(&req).err().unwrap_or(EngineError::BadRequest)),
    };
    match result {
        Ok(body) => polling_reply::Result::Body(body),
        // Moved away while the request came: nothing of it was applied here.
        Err(EngineError::UnknownSid) => match gateway.moved_to(&sid).await {
            Some(to) => polling_reply::Result::Moved(to),
            None => polling_reply::Result::Error(convert::error_to_pb(&EngineError::UnknownSid)),
        },
        Err(e) => polling_reply::Result::Error(convert::error_to_pb(&e)),
    }
}

#[tonic::async_trait]
impl Forward for ForwardService {
    type PollingStream = Replies;
    type WebsocketStream = ReplyStream<WsFrame>;

    async fn polling(
        &self,
        request: GrpcRequest<Streaming<LinkFrame>>,
    ) -> Result<Response<Self::PollingStream>, Status> {
        let polling = Arc::new(Polling {
            gateway: self.gateway.clone(),
            via: next_via(),
        });
        let max_message = self.gateway.max_forwarded_message();
        Ok(Response::new(link::serve(
            polling,
            request.into_inner(),
            max_message,
        )))
    }

    async fn migrate(
        &self,
        request: GrpcRequest<MigrateRequest>,
    ) -> Result<Response<MigrateReply>, Status> {
        let request = request.into_inner();
        let image = request
            .session
            .map(convert::image_from_pb)
            .ok_or_else(|| Status::invalid_argument("a migration without its session"))?;
        let result = match self.gateway.accept_migration(&request.mount, image).await {
            Ok(epoch) => migrate_reply::Result::Epoch(epoch),
            Err(Declined::Refused(reason)) => migrate_reply::Result::Refused(reason),
            Err(Declined::Closed(reason)) => migrate_reply::Result::Closed(reason),
        };
        Ok(Response::new(MigrateReply {
            result: Some(result),
        }))
    }

    async fn handover(
        &self,
        request: GrpcRequest<HandoverRequest>,
    ) -> Result<Response<MigrateReply>, Status> {
        let request = request.into_inner();
        let result = match self
            .gateway
            .migrate(&request.mount, &request.sid, request.to)
            .await
        {
            Ok(epoch) => migrate_reply::Result::Epoch(epoch),
            Err(MigrateError::Move(MoveError::Busy)) => migrate_reply::Result::Busy(true),
            Err(e) => migrate_reply::Result::Refused(e.to_string()),
        };
        Ok(Response::new(MigrateReply {
            result: Some(result),
        }))
    }

    async fn websocket(
        &self,
        request: GrpcRequest<Streaming<WsFrame>>,
    ) -> Result<Response<Self::WebsocketStream>, Status> {
        let mut inbound = request.into_inner();
        let Some(WsFrame {
            kind: Some(ws_frame::Kind::Open(open)),
        }) = inbound.message().await?
        else {
            return Err(Status::invalid_argument(
                "a relay starts with its upgrade request",
            ));
        };
        let (mount, req, _) = convert::request_from_pb(open);
        let engine = self.gateway.engine(&mount).cloned();
        let accept = engine
            .as_ref()
            .ok_or(EngineError::UnknownSid)
            .and_then(|engine| engine.accept_websocket(&req, next_via()));
        let (mut out, replies) = futures::channel::mpsc::channel(RELAY_QUEUE);
        let (engine, accept) = match (engine, accept) {
            (Some(engine), Ok(accept)) => (engine, accept),
            (_, Err(e)) => return Ok(refusal(&e)),
            (None, Ok(_)) => return Ok(refusal(&EngineError::UnknownSid)),
        };
        let _ = out.try_send(Ok(WsFrame {
            kind: Some(ws_frame::Kind::Accepted(true)),
        }));
        let max_payload = engine.config().max_payload;
        let sink = out.clone().with(|o: Outbound| {
            futures::future::ready(Ok::<_, futures::channel::mpsc::SendError>(Ok(match o {
                Outbound::Frame(Frame::Text(text)) => WsFrame {
                    kind: Some(ws_frame::Kind::Text(text)),
                },
                Outbound::Frame(Frame::Binary(data)) => WsFrame {
                    kind: Some(ws_frame::Kind::Binary(data.to_vec())),
                },
                Outbound::Close(code) => close_frame(code),
            })))
        });
        // The relay's frames, until it says close or the stream ends. The size limit is
        // enforced here too: a forwarded frame is checked like a local one.
        let frames = inbound
            .take_while(|frame| {
                futures::future::ready(!matches!(
                    frame,
                    Ok(WsFrame {
                        kind: Some(ws_frame::Kind::Close(_))
                    })
                ))
            })
            .filter_map(move |frame| {
                futures::future::ready(match frame {
                    Ok(WsFrame {
                        kind: Some(ws_frame::Kind::Text(text)),
                    }) if text.len() > max_payload => Some(Err(WsLinkError::TooLarge)),
                    Ok(WsFrame {
                        kind: Some(ws_frame::Kind::Binary(data)),
                    }) if data.len() > max_payload => Some(Err(WsLinkError::TooLarge)),
                    Ok(WsFrame {
                        kind: Some(ws_frame::Kind::Text(text)),
                    }) => Some(Ok(Frame::Text(text))),
                    Ok(WsFrame {
                        kind: Some(ws_frame::Kind::Binary(data)),
                    }) => Some(Ok(Frame::Binary(data.into()))),
                    Ok(_) => None,
                    Err(status) => Some(Err(WsLinkError::Failed(status.to_string()))),
                })
            });
        tokio::spawn(async move {
            engine
                .run_websocket(accept, Box::pin(sink), Box::pin(frames))
                .await;
        });
        Ok(Response::new(Box::pin(replies)))
    }
}

/// The whole answer to a relay the engine refused: one `refused` frame.
fn refusal(e: &EngineError) -> Response<ReplyStream<WsFrame>> {
    let frame = WsFrame {
        kind: Some(ws_frame::Kind::Refused(convert::error_to_pb(e))),
    };
    Response::new(Box::pin(futures::stream::once(futures::future::ready(Ok(
        frame,
    )))))
}
