//! Adapts axum's websocket to the engine's frame link, enforcing the message size limit.

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::{Sink, SinkExt, Stream, StreamExt, future};

use crate::engine::{LinkError, Outbound};
use crate::protocol::eio::Frame;

/// Splits a websocket into the engine's outbound sink and inbound frame stream.
/// Messages over `max_payload` bytes come out as [`LinkError::TooLarge`], and the engine
/// answers them with close code 1009.
pub fn link(
    socket: WebSocket,
    max_payload: usize,
) -> (
    impl Sink<Outbound> + Unpin + Send,
    impl Stream<Item = Result<Frame, LinkError>> + Unpin + Send,
) {
    let (sink, stream) = socket.split();
    let sink = sink.with(|out: Outbound| {
        future::ready(Ok::<_, axum::Error>(match out {
            Outbound::Frame(Frame::Text(text)) => Message::Text(text.into()),
            Outbound::Frame(Frame::Binary(data)) => Message::Binary(data),
            Outbound::Close(code) => Message::Close(Some(CloseFrame {
                code,
                reason: "".into(),
            })),
        }))
    });
    let stream = stream.filter_map(move |msg| {
        future::ready(match msg {
            Ok(Message::Text(text)) if text.len() > max_payload => Some(Err(LinkError::TooLarge)),
            Ok(Message::Binary(data)) if data.len() > max_payload => Some(Err(LinkError::TooLarge)),
            Ok(Message::Text(text)) => Some(Ok(Frame::Text(text.as_str().to_owned()))),
            Ok(Message::Binary(data)) => Some(Ok(Frame::Binary(data))),
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Close(_)) => None,
            Err(e) => Some(Err(LinkError::Failed(e.to_string()))),
        })
    });
    (sink, stream)
}
