//! Websockets whose session lives on another node: this node completes the HTTP upgrade and
//! relays Engine.IO frames to the owner over one bidirectional gRPC stream, where the owner's
//! engine runs the websocket exactly as a local one (probe, upgrade, heartbeats, close).
//!
//! The owner decides before the upgrade: the stream's first exchange is the upgrade request
//! and the owner's `accepted` or `refused`, so a refusal is still a plain HTTP error here.

use std::time::Duration;

use futures::channel::mpsc;
use futures::{Sink, SinkExt, Stream, StreamExt};

use super::{GatewayError, convert};
use crate::engine::{CLOSE_NORMAL, CLOSE_TOO_LARGE, LinkError as WsLinkError, Outbound, Request};
use crate::protocol::eio::Frame;
use crate::registry::NodeId;
use crate::rpc::link::LinkError;
use crate::rpc::pb::forward::forward_client::ForwardClient;
use crate::rpc::pb::forward::{WsFrame, ws_frame};
use crate::rpc::{CONNECT_TIMEOUT, Peers};

/// Frames that may wait in each direction of a relay.
pub(crate) const RELAY_QUEUE: usize = 64;

/// An accepted relay to the owner of a websocket's session.
pub struct Relay {
    to_owner: mpsc::Sender<WsFrame>,
    from_owner: tonic::Streaming<WsFrame>,
    /// Deadline of one write to the client, so a client that stops reading cannot pin the
    /// relay (the owner's own write deadline then closes the session).
    write_deadline: Duration,
}

/// Ask `owner` to accept the websocket request `req` of `mount`.
pub(crate) async fn open(
    peers: &Peers,
    owner: NodeId,
    mount: &str,
    req: &Request,
    write_deadline: Duration,
) -> Result<Relay, GatewayError> {
    let channel = peers.channel(owner).ok_or(LinkError::UnknownPeer(owner))?;
    let (mut to_owner, outbound) = mpsc::channel(RELAY_QUEUE);
    let open = WsFrame {
        kind: Some(ws_frame::Kind::Open(convert::request_to_pb(
            mount,
            req,
            bytes::Bytes::new(),
        ))),
    };
    to_owner
        .try_send(open)
        .map_err(|_| LinkError::Unreachable(owner))?;
    // The owner answers at once; an owner that cannot be reached fails within the connect
    // timeout instead of holding the client's upgrade.
    let answer = async {
        let mut from_owner = ForwardClient::new(channel)
            .websocket(outbound)
            .await
            .map_err(|_| LinkError::Unreachable(owner))?
            .into_inner();
        let first = from_owner.message().await;
        Ok::<_, LinkError>((from_owner, first))
    };
    let (from_owner, first) = tokio::time::timeout(CONNECT_TIMEOUT, answer)
        .await
        .map_err(|_| LinkError::Unreachable(owner))??;
    match first {
        Ok(Some(WsFrame {
            kind: Some(ws_frame::Kind::Accepted(_)),
        })) => Ok(Relay {
            to_owner,
            from_owner,
            write_deadline,
        }),
        Ok(Some(WsFrame {
            kind: Some(ws_frame::Kind::Refused(code)),
        })) => Err(GatewayError::Engine(convert::error_from_pb(code))),
        _ => Err(LinkError::Unreachable(owner).into()),
    }
}

impl Relay {
    /// Pump frames both ways between the client's websocket (`sink`, `stream`) and the owner,
    /// until either side closes.
    pub async fn run<Si, St>(self, mut sink: Si, mut stream: St)
    where
        Si: Sink<Outbound> + Unpin + Send,
        St: Stream<Item = Result<Frame, WsLinkError>> + Unpin + Send,
    {
        let Relay {
            mut to_owner,
            mut from_owner,
            write_deadline,
        } = self;
        let close_code = loop {
            tokio::select! {
                inbound = stream.next() => {
                    let frame = match inbound {
                        Some(Ok(Frame::Text(text))) => ws_frame::Kind::Text(text),
                        Some(Ok(Frame::Binary(data))) => ws_frame::Kind::Binary(data.to_vec()),
                        Some(Err(WsLinkError::TooLarge)) => {
                            let _ = to_owner
                                .send(close_frame(CLOSE_TOO_LARGE))
                                .await;
                            break Some(CLOSE_TOO_LARGE);
                        }
                        Some(Err(WsLinkError::Failed(_))) | None => {
                            let _ = to_owner.send(close_frame(CLOSE_NORMAL)).await;
                            break None;
                        }
                    };
                    if to_owner.send(WsFrame { kind: Some(frame) }).await.is_err() {
                        break Some(CLOSE_NORMAL);
                    }
                }
                outbound = from_owner.message() => {
                    let out = match outbound {
                        Ok(Some(WsFrame { kind: Some(ws_frame::Kind::Text(text)) })) => {
                            Outbound::Frame(Frame::Text(text))
                        }
                        Ok(Some(WsFrame { kind: Some(ws_frame::Kind::Binary(data)) })) => {
                            Outbound::Frame(Frame::Binary(data.into()))
                        }
                        Ok(Some(WsFrame { kind: Some(ws_frame::Kind::Close(code)) })) => {
                            break Some(u16::try_from(code).unwrap_or(CLOSE_NORMAL));
                        }
                        Ok(Some(_)) => continue,
                        Ok(None) | Err(_) => break Some(CLOSE_NORMAL),
                    };
                    let written = matches!(
                        tokio::time::timeout(write_deadline, sink.send(out)).await,
                        Ok(Ok(()))
                    );
                    if !written {
                        let _ = to_owner.send(close_frame(CLOSE_NORMAL)).await;
                        break None;
                    }
                }
            }
        };
        if let Some(code) = close_code {
            let _ = tokio::time::timeout(write_deadline, sink.send(Outbound::Close(code))).await;
        }
        let _ = tokio::time::timeout(write_deadline, sink.close()).await;
    }
}

pub(crate) fn close_frame(code: u16) -> WsFrame {
    WsFrame {
        kind: Some(ws_frame::Kind::Close(u32::from(code))),
    }
}
