//! The websocket transport over an abstract frame link: a `Stream` of inbound frames and
//! a `Sink` of outbound ones. The HTTP front adapts axum's socket to it; a peer node
//! could adapt a gRPC stream the same way.
//!
//! Every write to a link, the final close included, has a deadline of `pingTimeout`: a
//! peer that stops reading fills the socket buffers and would otherwise hold the task,
//! its socket and its session's place under `max_sessions` forever. A peer that reads
//! nothing for that long would miss its ping anyway.

use std::sync::Arc;
use std::time::Duration;

use futures::{Sink, SinkExt, Stream, StreamExt};
use tokio::time::Instant;

use super::app::{CloseReason, Transport};
use super::session::{FinalAnswer, Session, Upgrade, Via};
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

/// Writes one item within `limit`; `false` if the link failed or stalled.
pub(crate) async fn write<Si>(sink: &mut Si, item: Outbound, limit: Duration) -> bool
where
    Si: Sink<Outbound> + Unpin,
{
    matches!(
        tokio::time::timeout(limit, sink.send(item)).await,
        Ok(Ok(()))
    )
}

/// Sends a close frame and closes the link, each within `limit`. The caller drops the
/// link afterwards whatever happened.
pub(crate) async fn end_link<Si>(sink: &mut Si, code: u16, limit: Duration)
where
    Si: Sink<Outbound> + Unpin,
{
    if write(sink, Outbound::Close(code), limit).await {
        let _ = tokio::time::timeout(limit, sink.close()).await;
    }
}

/// Runs an established websocket session until it ends. Returns once the session is
/// closed and the link is closed or given up on.
pub(crate) async fn drive<Si, St>(session: Arc<Session>, mut sink: Si, mut stream: St)
where
    Si: Sink<Outbound> + Unpin + Send,
    St: Stream<Item = Result<Frame, LinkError>> + Unpin + Send,
{
    // Keeps the session counted under `max_sessions` until the link is gone.
    let _live = session.live_slot();
    let limit = session.config.ping_timeout;
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
            // Boxed: the write's state exists only while writing, not in every idle session.
            if !packets.is_empty() && !Box::pin(write_all(&mut sink, packets, limit)).await {
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
    let code = match end {
        Some((reason, answer, code)) => {
            session.close_with(reason, answer);
            code
        }
        None => {
            // The session closed (server side, timeout, client `1`) or the writer failed
            // or stalled.
            session.close_with(CloseReason::TransportError, FinalAnswer::Close);
            Some(CLOSE_NORMAL)
        }
    };
    Box::pin(finish_link(&mut sink, code, limit)).await;
}

/// Feeds `packets` to the link and flushes them, each step within `limit`.
async fn write_all<Si>(sink: &mut Si, packets: Vec<Packet>, limit: Duration) -> bool
where
    Si: Sink<Outbound> + Unpin,
{
    for packet in packets {
        let fed =
            tokio::time::timeout(limit, sink.feed(Outbound::Frame(packet.into_frame()))).await;
        if !matches!(fed, Ok(Ok(()))) {
            return false;
        }
    }
    matches!(tokio::time::timeout(limit, sink.flush()).await, Ok(Ok(())))
}

/// Closes the link at the end of a session: with a close frame carrying `code`, or (when the
/// peer already closed or broke it) just the link.
async fn finish_link<Si>(sink: &mut Si, code: Option<u16>, limit: Duration)
where
    Si: Sink<Outbound> + Unpin,
{
    match code {
        Some(code) => end_link(sink, code, limit).await,
        None => {
            let _ = tokio::time::timeout(limit, sink.close()).await;
        }
    }
}

/// Runs the probe of a polling session's upgrade. Returns `true` once `5` arrived and
/// the session switched to this websocket.
///
/// A session closed after the probe was answered still waits here for `5`: a client told
/// that its probe succeeded stops polling (socket.io-client pauses its polling and, should the
/// probe then close, never resumes it), so this websocket is the only way its close can
/// still reach it. The final answer goes here once `5` comes.
pub(crate) async fn probe<Si, St>(
    session: &Arc<Session>,
    via: Via,
    sink: &mut Si,
    stream: &mut St,
) -> bool
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
        st.upgrade_via = via;
    }
    let deadline = Instant::now() + session.config.upgrade_timeout;
    let mut probed = false;
    let upgraded = loop {
        let changed = session.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if session.is_closed() && !probed {
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
                let pong = Outbound::Frame(Packet::Pong { probe: true }.into_frame());
                if !write(sink, pong, session.config.ping_timeout).await {
                    break false;
                }
                probed = true;
                {
                    let mut st = session.lock();
                    if st.closed.is_none() {
                        st.upgrade = Upgrade::Probing;
                    }
                }
                session.changed.notify_waiters();
            }
            Ok(Packet::Upgrade) if probed => {
                let Some(last) = switch_or_final_answer(session) else {
                    break true;
                };
                write_all(sink, last, session.config.ping_timeout).await;
                break false;
            }
            _ => break false,
        }
    };
    if upgraded {
        session.changed.notify_waiters();
        session.upgraded().await;
    } else {
        let mut st = session.lock();
        if st.upgrade != Upgrade::Done {
            st.upgrade = Upgrade::Idle;
        }
    }
    upgraded
}

/// On `5`: switches an open session to the websocket (`None`), or takes the last packets of
/// one closed while its upgrade probed, from a GET that has not collected them (the session
/// then no longer lingers for one).
fn switch_or_final_answer(session: &Arc<Session>) -> Option<Vec<Packet>> {
    let (last, lingering) = {
        let mut st = session.lock();
        if st.closed.is_none() {
            st.transport = Transport::Websocket;
            st.upgrade = Upgrade::Done;
            return None;
        }
        let last = st
            .final_payload
            .take()
            .unwrap_or_else(|| vec![Packet::Close]);
        (last, std::mem::take(&mut st.linger))
    };
    if lingering {
        session.unregister();
    }
    Some(last)
}

/// Encodes the open packet as the first websocket frame.
pub(crate) fn open_frame(open_json: String) -> Outbound {
    Outbound::Frame(eio::Packet::Open(open_json).into_frame())
}
