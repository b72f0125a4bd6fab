//! The owner's side of forwarding: the `Forward` gRPC service. Each forwarded request is served
//! by this node's engine exactly as a local one, in a task of its own; a `cancel` frame, or the
//! end of the stream, aborts the task, which drops the engine call the way a vanished HTTP
//! client would (a parked GET then closes the session, as the aborted-GET rule says).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures::{SinkExt, Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request as GrpcRequest, Response, Status, Streaming};

use super::Gateway;
use super::convert;
use super::relay::{RELAY_QUEUE, close_frame};
use crate::engine::{EngineError, LinkError as WsLinkError, Method, Outbound};
use crate::protocol::eio::Frame;
use crate::rpc::pb::forward::forward_server::{Forward, ForwardServer};
use crate::rpc::pb::forward::{
    PollingFrame, PollingReply, WsFrame, polling_frame, polling_reply, ws_frame,
};

/// Replies that may wait for the stream to the forwarding node to take them.
const REPLY_QUEUE: usize = 4096;

type ReplyStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The `Forward` service of one node.
#[derive(Clone)]
pub struct ForwardService {
    gateway: Gateway,
}

impl ForwardService {
    /// The service, ready to be mounted on the node's gRPC server.
    pub fn server(gateway: Gateway) -> ForwardServer<ForwardService> {
        ForwardServer::new(ForwardService { gateway })
    }

    /// Serve one forwarded request with the local engine.
    async fn serve(&self, frame: crate::rpc::pb::forward::EngineRequest) -> polling_reply::Result {
        let (mount, req, body) = convert::request_from_pb(frame);
        let Some(engine) = self.gateway.engine(&mount) else {
            return polling_reply::Result::Error(convert::error_to_pb(&EngineError::UnknownSid));
        };
        let result = match req.method {
            Method::Get => engine.poll(&req).await,
            Method::Post => match engine.check_post(&req) {
                Ok(()) => engine.post(&req, body).await.map(|()| "ok".to_owned()),
                Err(e) => Err(e),
            },
            Method::Other => Err(engine.check(&req).err().unwrap_or(EngineError::BadRequest)),
        };
        match result {
            Ok(body) => polling_reply::Result::Body(body),
            Err(e) => polling_reply::Result::Error(convert::error_to_pb(&e)),
        }
    }
}

#[tonic::async_trait]
impl Forward for ForwardService {
    type PollingStream = ReplyStream<PollingReply>;
    type WebsocketStream = ReplyStream<WsFrame>;

    async fn polling(
        &self,
        request: GrpcRequest<Streaming<PollingFrame>>,
    ) -> Result<Response<Self::PollingStream>, Status> {
        let mut frames = request.into_inner();
        let (replies, rx) = mpsc::channel(REPLY_QUEUE);
        let service = self.clone();
        tokio::spawn(async move {
            let running: Arc<Mutex<HashMap<u64, AbortHandle>>> = Arc::default();
            while let Ok(Some(frame)) = frames.message().await {
                match frame.kind {
                    Some(polling_frame::Kind::Request(request)) => {
                        let (service, replies, running2) =
                            (service.clone(), replies.clone(), running.clone());
                        let id = frame.id;
                        let task = tokio::spawn(async move {
                            let result = service.serve(request).await;
                            lock(&running2).remove(&id);
                            let reply = PollingReply {
                                id,
                                result: Some(result),
                            };
                            let _ = replies.send(Ok(reply)).await;
                        });
                        lock(&running).insert(id, task.abort_handle());
                    }
                    Some(polling_frame::Kind::Cancel(_)) => {
                        if let Some(task) = lock(&running).remove(&frame.id) {
                            task.abort();
                        }
                    }
                    None => {}
                }
            }
            // The forwarding node is gone or restarted its stream: nobody waits for these.
            for (_, task) in lock(&running).drain() {
                task.abort();
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
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
            .and_then(|engine| engine.accept_websocket(&req));
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
