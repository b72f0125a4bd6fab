//! The websocket transport over an abstract frame link: a `Stream` of inbound frames and
//! a `Sink` of outbound ones. The HTTP front adapts axum's socket to it; a peer node
//! could adapt a gRPC stream the same way.

use std::sync::Arc;

use futures::{Sink, SinkExt, Stream, StreamExt};
use tokio::time::Instant;

use super::app::{CloseReason, Transport};
use super::session::{FinalAnswer, Session, Upgrade};
use crate::protocol::eio::{self, Frame, Packet};

/// Websocket close code for a message over the size limit.
pub const CLOSE_TOO_LARGE: u16 = 1009;
/// Websocket close code for a normal close.
pub const CLOSE_NORMAL: u16 = 1000;
/// Websocket close code for a protocol violation.
pub const CLOSE_PROTOCOL: u16 = 1002;

/// What the engine writes to a websocket link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// One packet.
    Frame(Frame),
    /// Close the websocket with this code; nothing follows.
    Close(u16),
}

/// Why an inbound frame could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The message is larger than `maxPayload`.
    #[error("message too large")]
    TooLarge,
    /// The link broke.
    #[error("link failed: {0}")]
    Failed(String),
}

/// Runs an established websocket session until it ends.
pub(crate) async fn drive<Si, St>(session: Arc<Session>, mut sink: Si, mut stream: St)
where
    Si: Sink<Outbound> + Unpin + Send,
    St: Stream<Item = Result<Frame, LinkError>> + Unpin + Send,
{
    let reader = async {
        loop {
            let frame = match stream.next().await {
                None => return Some((CloseReason::TransportClose, FinalAnswer::Noop, None)),
                Some(Err(LinkError::TooLarge)) => {
                    return Some((
                        CloseReason::TransportError,
                        FinalAnswer::Close,
                        Some(CLOSE_TOO_LARGE),
                    ));
                }
                Some(Err(LinkError::Failed(_))) => {
                    return Some((CloseReason::TransportError, FinalAnswer::Close, None));
                }
                Some(Ok(frame)) => frame,
            };
            let _inbound = session.inbound.clone().lock_owned().await;
            match Packet::from_frame(frame) {
                Ok(packet) => session.handle_packet(packet),
                Err(_) => {
                    return Some((
                        CloseReason::ParseError,
                        FinalAnswer::Close,
                        Some(CLOSE_PROTOCOL),
                    ));
                }
            }
            if session.is_closed() {
                return None;
            }
        }
    };
    let writer = async {
        loop {
            let changed = session.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let (packets, closed) = {
                let mut st = session.lock();
                (Session::take_queue(&mut st), st.closed.is_some())
            };
            let count = packets.len();
            for packet in packets {
                if sink
                    .feed(Outbound::Frame(packet.into_frame()))
                    .await
                    .is_err()
                {
                    return false;
                }
            }
            if count > 0 && sink.flush().await.is_err() {
                return false;
            }
            if closed {
                return true;
            }
            changed.await;
        }
    };
    let end = tokio::select! {
        end = reader => end,
        _ = writer => None,
    };
    if let Some((reason, answer, code)) = end {
        session.close_with(reason, answer);
        if let Some(code) = code {
            let _ = sink.send(Outbound::Close(code)).await;
        }
    } else {
        // The session closed (server side, timeout, client `1`) or the writer failed.
        session.close_with(CloseReason::TransportError, FinalAnswer::Close);
        let _ = sink.send(Outbound::Close(CLOSE_NORMAL)).await;
    }
    let _ = sink.close().await;
}

/// Runs the probe of a polling session's upgrade. Returns `true` once `5` arrived and
/// the session switched to this websocket.
pub(crate) async fn probe<Si, St>(session: &Arc<Session>, sink: &mut Si, stream: &mut St) -> bool
where
    Si: Sink<Outbound> + Unpin + Send,
    St: Stream<Item = Result<Frame, LinkError>> + Unpin + Send,
{
    {
        let mut st = session.lock();
        if st.closed.is_some() || st.transport != Transport::Polling || st.upgrade != Upgrade::Idle
        {
            return false;
        }
        st.upgrade = Upgrade::Opening;
    }
    let deadline = Instant::now() + session.config.upgrade_timeout;
    let mut probed = false;
    let upgraded = loop {
        let changed = session.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if session.is_closed() {
            break false;
        }
        let frame = tokio::select! {
            frame = stream.next() => frame,
            _ = tokio::time::sleep_until(deadline) => break false,
            _ = &mut changed => continue,
        };
        let packet = match frame {
            Some(Ok(frame)) => Packet::from_frame(frame),
            _ => break false,
        };
        match packet {
            Ok(Packet::Ping { probe: true }) if !probed => {
                let pong = Packet::Pong { probe: true }.into_frame();
                if sink.send(Outbound::Frame(pong)).await.is_err() {
                    break false;
                }
                probed = true;
                {
                    let mut st = session.lock();
                    if st.closed.is_some() {
                        break false;
                    }
                    st.upgrade = Upgrade::Probing;
                    st.release_parked = st.poll_parked.is_some();
                }
                session.changed.notify_waiters();
            }
            Ok(Packet::Upgrade) if probed => {
                let mut st = session.lock();
                if st.closed.is_some() {
                    break false;
                }
                st.transport = Transport::Websocket;
                st.upgrade = Upgrade::Done;
                st.ws_attached = true;
                st.release_parked = false;
                break true;
            }
            _ => break false,
        }
    };
    if upgraded {
        session.changed.notify_waiters();
    } else {
        let mut st = session.lock();
        if st.upgrade != Upgrade::Done {
            st.upgrade = Upgrade::Idle;
            st.release_parked = false;
        }
    }
    upgraded
}

/// Encodes the open packet as the first websocket frame.
pub(crate) fn open_frame(open_json: String) -> Outbound {
    Outbound::Frame(eio::Packet::Open(open_json).into_frame())
}
