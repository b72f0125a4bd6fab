//! One Engine.IO session: its outbound queue, its transport slots (the parked long-poll,
//! the running POST, the websocket), its heartbeat and its single close.
//!
//! Locking rules: `state` is a std mutex held only for short, non-async bookkeeping and
//! never while the application runs. `inbound` is an async mutex held while packets are
//! handed to the application, so POST bodies and websocket frames of one session are
//! delivered one at a time, in order. `on_close` runs in its own task under `inbound`,
//! so it never overlaps `on_message` and never runs inside an engine lock.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::app::{CloseReason, HandshakeInfo, Message, SendError, SessionHandler, Transport};
use super::config::EngineConfig;
use super::error::{EngineError, MoveError};
use super::{LiveSlot, SessionImage, Shared};
use crate::protocol::eio::{self, Packet};

/// How long a long-poll that finds the slot taken by one that came another way waits for it
/// to be given back, or one that finds an upgrade probing waits for it to finish (see
/// [`Session::poll`]). The news of a dead forwarding node, or an upgrade's `5` relayed by
/// another node, normally arrives within a millisecond; this bounds how long a genuine second
/// GET is left waiting.
pub(crate) const SUPERSEDE_GRACE: std::time::Duration = std::time::Duration::from_millis(200);

/// The way a request came by: this process's own HTTP front, or one forwarding stream of a
/// peer (each with its own number). Two requests of a session that came by different ways may
/// see one way break before the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Via(pub u64);

impl Via {
    /// This process's own HTTP front.
    pub const LOCAL: Via = Via(0);
}

/// Where an upgrade to WebSocket stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Upgrade {
    /// No websocket has asked to take over.
    Idle,
    /// A websocket is open for this sid but has not probed yet.
    Opening,
    /// `3probe` was sent: every long-poll, parked or new, is answered at once (with the
    /// queued packets, or `6`), so the client can finish its pending requests and send `5`.
    Probing,
    /// `5` arrived: the websocket carries the session.
    Done,
}

/// What a long-poll gets when the session closes under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FinalAnswer {
    /// `6`: the client closed the session itself.
    Noop,
    /// `1`, dropping whatever was queued.
    Close,
    /// The queued packets, then `1` (server-initiated close).
    FlushThenClose,
}

/// Mutable session state, behind `Session::state`.
pub(crate) struct State {
    pub(crate) transport: Transport,
    pub(crate) closed: Option<CloseReason>,
    pub(crate) queue: VecDeque<Packet>,
    /// Messages in `queue` (pings and closes do not count against the bounds).
    queued_messages: usize,
    /// Payload bytes of the messages in `queue`.
    queued_bytes: usize,
    /// Id of the parked long-poll, if one is parked.
    pub(crate) poll_parked: Option<u64>,
    /// The way the parked long-poll came by.
    poll_via: Via,
    /// The request id of the parked long-poll.
    poll_request: Option<String>,
    /// The request id of the last POST taken: one sent again carries the same.
    last_post: Option<String>,
    next_poll_id: u64,
    post_active: bool,
    pub(crate) upgrade: Upgrade,
    /// The way the upgrading websocket came by.
    pub(crate) upgrade_via: Via,
    /// What the next (or parked) long-poll gets once the session is closed.
    pub(crate) final_payload: Option<Vec<Packet>>,
    /// Closed (by the server, or by a client `1` over POST) while no long-poll was parked: the session stays findable
    /// until one more GET collects `final_payload`, or the linger time ends.
    pub(crate) linger: bool,
    next_ping: Option<Instant>,
    pong_deadline: Option<Instant>,
    /// The last long-poll answer, while it may still be on its way to the client through
    /// another node (which may die with it): until the client's next GET arrives, which it
    /// sends only once it has the answer. With the way it went and its request id.
    unconfirmed: Option<Unconfirmed>,
    /// Closed for a move whose handler is still giving up its state: what the application
    /// sends meanwhile still joins the queue that moves (its recovery position, taken in that
    /// hand-over, counts it as sent).
    moving: bool,
    /// The parked long-poll is to be answered `6` now (see `Engine::release_polls`).
    release_poll: bool,
}

/// A close that happened under the state lock and whose effects must run outside it.
#[must_use]
pub(crate) struct Closing {
    reason: CloseReason,
    linger: bool,
}

/// One live session.
pub(crate) struct Session {
    pub(crate) sid: Arc<str>,
    pub(crate) handshake: HandshakeInfo,
    pub(crate) config: Arc<EngineConfig>,
    shared: Weak<Shared>,
    state: Mutex<State>,
    /// Wakes the parked long-poll and the websocket writer after any change of `state`.
    pub(crate) changed: Notify,
    /// Wakes the heartbeat task when its timers change: a pong re-arms the ping timer, a
    /// close ends the task.
    heartbeat_wake: Notify,
    /// Counts this session against `max_sessions` while it is registered; websocket
    /// transports hold a clone until their link is gone (see [`LiveSlot`]).
    live: Mutex<Option<Arc<LiveSlot>>>,
    /// Serializes delivery to the handler (see the module comment).
    pub(crate) inbound: Arc<tokio::sync::Mutex<()>>,
    /// Taken out after `on_close`, which breaks the session -> handler -> connection cycle.
    handler: Mutex<Option<Arc<dyn SessionHandler>>>,
    runtime: tokio::runtime::Handle,
}

impl Session {
    pub(crate) fn new(
        sid: Arc<str>,
        transport: Transport,
        handshake: HandshakeInfo,
        config: Arc<EngineConfig>,
        shared: Weak<Shared>,
        live: Arc<LiveSlot>,
        runtime: tokio::runtime::Handle,
    ) -> Session {
        let now = Instant::now();
        let state = State {
            transport,
            closed: None,
            queue: VecDeque::new(),
            queued_messages: 0,
            queued_bytes: 0,
            poll_parked: None,
            poll_via: Via::LOCAL,
            poll_request: None,
            last_post: None,
            next_poll_id: 0,
            post_active: false,
            upgrade: Upgrade::Idle,
            upgrade_via: Via::LOCAL,
            final_payload: None,
            linger: false,
            // Timers start when the session is created, before the open packet is sent.
            next_ping: Some(now + config.ping_interval),
            pong_deadline: None,
            unconfirmed: None,
            moving: false,
            release_poll: false,
        };
        Session {
            sid,
            handshake,
            config,
            shared,
            state: Mutex::new(state),
            changed: Notify::new(),
            heartbeat_wake: Notify::new(),
            live: Mutex::new(Some(live)),
            inbound: Arc::new(tokio::sync::Mutex::new(())),
            handler: Mutex::new(None),
            runtime,
        }
    }

    /// Locks the state. A poisoned lock only means a panic elsewhere; the state itself
    /// is kept consistent by short critical sections, so carry on with it.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_handler(&self, handler: Arc<dyn SessionHandler>) {
        let mut slot = self.handler.lock().unwrap_or_else(|e| e.into_inner());
        *slot = Some(handler);
    }

    /// A share of this session's place under `max_sessions`, for a transport whose link
    /// may outlive the session; `None` once the session is unregistered.
    pub(crate) fn live_slot(&self) -> Option<Arc<LiveSlot>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn handler(&self) -> Option<Arc<dyn SessionHandler>> {
        self.handler
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed.is_some()
    }

    pub(crate) fn transport(&self) -> Transport {
        self.lock().transport
    }

    pub(crate) fn is_writable(&self) -> bool {
        let st = self.lock();
        if st.closed.is_some() {
            return false;
        }
        match st.transport {
            // A parked poll is about to be answered with `6` while the upgrade probes.
            Transport::Polling => st.poll_parked.is_some() && st.upgrade != Upgrade::Probing,
            Transport::Websocket => true,
        }
    }

    /// Queues messages contiguously, or none of them.
    pub(crate) fn send(self: &Arc<Self>, msgs: Vec<Message>) -> Result<(), SendError> {
        let mut st = self.lock();
        if st.closed.is_some() && !st.moving {
            return Err(SendError::Closed);
        }
        let bytes = msgs
            .iter()
            .map(|m| match m {
                Message::Text(s) => s.len(),
                Message::Binary(b) => b.len(),
            })
            .fold(0usize, usize::saturating_add);
        if st.queued_messages.saturating_add(msgs.len()) > self.config.max_buffered_packets
            || st.queued_bytes.saturating_add(bytes) > self.config.max_buffered_bytes
        {
            let closing =
                self.close_locked(&mut st, CloseReason::QueueOverflow, FinalAnswer::Close);
            drop(st);
            self.finish_close(closing);
            return Err(SendError::QueueFull);
        }
        st.queued_messages += msgs.len();
        st.queued_bytes += bytes;
        if let Some(shared) = self.shared.upgrade() {
            shared.counters.sent(msgs.len(), bytes);
        }
        st.queue.extend(msgs.into_iter().map(|m| match m {
            Message::Text(s) => Packet::Text(s),
            Message::Binary(b) => Packet::Binary(b),
        }));
        drop(st);
        self.changed.notify_waiters();
        Ok(())
    }

    /// The node that forwarded this session's long-polls over `via` is gone: an answer still
    /// unconfirmed on that way is queued again, in front, for the client's next GET. The
    /// client may have received it already (then it gets it twice), but it is not lost.
    pub(crate) fn answer_lost(&self, via: Via) {
        let mut st = self.lock();
        if st.closed.is_some() || st.upgrade == Upgrade::Done {
            return;
        }
        let Some(lost) = st.unconfirmed.take_if(|u| u.via == via) else {
            return;
        };
        Self::queue_again(&mut st, lost.packets);
        drop(st);
        self.changed.notify_waiters();
    }

    /// Puts `packets`, an answer that may not have reached the client, back in front of the
    /// queue.
    fn queue_again(st: &mut State, packets: Vec<Packet>) {
        for packet in packets.into_iter().rev() {
            if let Packet::Text(text) = &packet {
                st.queued_messages += 1;
                st.queued_bytes += text.len();
            } else if let Packet::Binary(bytes) = &packet {
                st.queued_messages += 1;
                st.queued_bytes += bytes.len();
            }
            st.queue.push_front(packet);
        }
    }

    /// Takes every queued packet, for a transport that is about to write them.
    pub(crate) fn take_queue(st: &mut State) -> Vec<Packet> {
        st.queued_messages = 0;
        st.queued_bytes = 0;
        st.queue.drain(..).collect()
    }

    /// Server-side close (application or shutdown): queued packets are still delivered.
    pub(crate) fn close(self: &Arc<Self>, reason: CloseReason) {
        let mut st = self.lock();
        let closing = self.close_locked(&mut st, reason, FinalAnswer::FlushThenClose);
        drop(st);
        self.finish_close(closing);
    }

    /// Closes with an explicit answer for a long-poll (client close, protocol errors).
    pub(crate) fn close_with(self: &Arc<Self>, reason: CloseReason, answer: FinalAnswer) {
        let mut st = self.lock();
        let closing = self.close_locked(&mut st, reason, answer);
        drop(st);
        self.finish_close(closing);
    }

    /// Marks the session closed; returns what `finish_close` must do once the lock is released.
    pub(crate) fn close_locked(
        &self,
        st: &mut State,
        reason: CloseReason,
        answer: FinalAnswer,
    ) -> Option<Closing> {
        if st.closed.is_some() {
            return None;
        }
        st.closed = Some(reason.clone());
        st.next_ping = None;
        st.pong_deadline = None;
        let mut linger = false;
        if answer != FinalAnswer::FlushThenClose {
            Self::take_queue(st);
        }
        if st.transport == Transport::Polling {
            let mut packets = Self::take_queue(st);
            packets.push(match answer {
                FinalAnswer::Noop => Packet::Noop,
                FinalAnswer::Close | FinalAnswer::FlushThenClose => Packet::Close,
            });
            st.final_payload = Some(packets);
            // With no parked long-poll, the next GET collects the final answer: queued
            // packets and `1` after a server close, or `6` after a client close (its GET
            // and its close POST are often sent together and may be served in any order).
            linger = answer != FinalAnswer::Close && st.poll_parked.is_none();
            st.linger = linger;
        }
        Some(Closing { reason, linger })
    }

    /// The effects of a close, run without the state lock: wake everyone, forget the
    /// sid (now, or after the linger time), and deliver `on_close` once.
    pub(crate) fn finish_close(self: &Arc<Self>, closing: Option<Closing>) {
        let Some(Closing { reason, linger }) = closing else {
            return;
        };
        self.changed.notify_waiters();
        self.heartbeat_wake.notify_waiters();
        if let Some(shared) = self.shared.upgrade() {
            shared.counters.closed(&reason);
        }
        if linger {
            let session = Arc::clone(self);
            let wait = self.config.ping_interval + self.config.ping_timeout;
            self.runtime.spawn(async move {
                tokio::time::sleep(wait).await;
                session.unregister();
            });
        } else {
            self.unregister();
        }
        let session = Arc::clone(self);
        self.runtime.spawn(async move {
            let _inbound = session.inbound.clone().lock_owned().await;
            let handler = session
                .handler
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(handler) = handler {
                handler.on_close(reason);
            }
        });
    }

    /// Answers a parked long-poll `6`, so that the client polls again.
    pub(crate) fn release_poll(&self) {
        let mut st = self.lock();
        if st.poll_parked.is_some() {
            st.release_poll = true;
            drop(st);
            self.changed.notify_waiters();
        }
    }

    /// Takes the session out of this node for a move: only a polling session with no upgrade
    /// and no POST in progress. Holds `inbound`, so no message is being handed to the
    /// application; the handler gives up its state through `on_move` instead of `on_close`. A
    /// parked long-poll is answered `6`: the client polls again and its next GET finds the
    /// session wherever it moved. Requests arriving here afterwards find no session.
    pub(crate) async fn move_out(self: &Arc<Self>) -> Result<SessionImage, MoveError> {
        let _inbound = self.inbound.clone().lock_owned().await;
        if self.handler().is_some_and(|h| !h.movable()) {
            return Err(MoveError::Busy);
        }
        let (next_ping_in, pong_due_in) = {
            let mut st = self.lock();
            if st.closed.is_some() {
                return Err(MoveError::UnknownSid);
            }
            if st.transport != Transport::Polling || st.upgrade != Upgrade::Idle {
                return Err(MoveError::NotPolling);
            }
            if st.post_active {
                return Err(MoveError::Busy);
            }
            let now = Instant::now();
            st.closed = Some(CloseReason::Moved);
            let next_ping_in = st.next_ping.take().map(|at| at - now.min(at));
            let pong_due_in = st.pong_deadline.take().map(|at| at - now.min(at));
            st.final_payload = Some(vec![Packet::Noop]);
            st.moving = true;
            (next_ping_in, pong_due_in)
        };
        self.changed.notify_waiters();
        self.heartbeat_wake.notify_waiters();
        if let Some(shared) = self.shared.upgrade() {
            shared.counters.closed(&CloseReason::Moved);
        }
        self.unregister();
        let handler = self
            .handler
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let app = handler.and_then(|h| h.on_move());
        // Taken after the handler let go: whatever it was sent until then moves too.
        let queue = {
            let mut st = self.lock();
            st.moving = false;
            Self::take_queue(&mut st)
        };
        Ok(SessionImage {
            sid: self.sid.to_string(),
            handshake: self.handshake.clone(),
            queue,
            next_ping_in,
            pong_due_in,
            app,
        })
    }

    /// Gives a session that moved here the queue and heartbeat it had on its former node.
    /// Fails, changing nothing, when the queue exceeds this node's bounds.
    pub(crate) fn resume(
        &self,
        queue: Vec<Packet>,
        next_ping_in: Option<std::time::Duration>,
        pong_due_in: Option<std::time::Duration>,
    ) -> Result<(), MoveError> {
        let messages = queue
            .iter()
            .filter(|p| matches!(p, Packet::Text(_) | Packet::Binary(_)))
            .count();
        let bytes = queue
            .iter()
            .map(|p| match p {
                Packet::Text(s) => s.len(),
                Packet::Binary(b) => b.len(),
                _ => 0,
            })
            .fold(0usize, usize::saturating_add);
        if messages > self.config.max_buffered_packets || bytes > self.config.max_buffered_bytes {
            return Err(MoveError::Full);
        }
        let now = Instant::now();
        let mut st = self.lock();
        st.queue.extend(queue);
        st.queued_messages = messages;
        st.queued_bytes = bytes;
        st.next_ping = next_ping_in.map(|d| now + d);
        st.pong_deadline = pong_due_in.map(|d| now + d);
        if st.next_ping.is_none() && st.pong_deadline.is_none() {
            st.next_ping = Some(now + self.config.ping_interval);
        }
        Ok(())
    }

    pub(crate) fn unregister(self: &Arc<Self>) {
        if let Some(shared) = self.shared.upgrade() {
            shared.remove(self);
        }
        // Only a websocket link still running holds the place now.
        self.live.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Closes the session if its pong deadline has passed. Deadlines have no grace:
    /// the official suite checks them to within a few milliseconds.
    pub(crate) fn expire_locked(&self, st: &mut State, now: Instant) -> Option<Closing> {
        match st.pong_deadline {
            Some(deadline) if now >= deadline => {
                self.close_locked(st, CloseReason::PingTimeout, FinalAnswer::Close)
            }
            _ => None,
        }
    }

    /// Sends pings and enforces pong deadlines until the session closes.
    pub(crate) async fn heartbeat(self: Arc<Self>) {
        loop {
            let wake = self.heartbeat_wake.notified();
            tokio::pin!(wake);
            wake.as_mut().enable();
            let wake_at = {
                let st = self.lock();
                if st.closed.is_some() {
                    return;
                }
                match (st.pong_deadline, st.next_ping) {
                    (Some(deadline), _) => deadline,
                    (None, Some(ping)) => ping,
                    (None, None) => return,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep_until(wake_at) => {}
                // Closed (seen at the top of the loop) or a pong re-armed the timer.
                _ = &mut wake => continue,
            }
            let now = Instant::now();
            let mut st = self.lock();
            if let Some(closing) = self.expire_locked(&mut st, now) {
                drop(st);
                self.finish_close(Some(closing));
                return;
            }
            if let (None, Some(ping_at)) = (st.pong_deadline, st.next_ping)
                && now >= ping_at
            {
                st.queue.push_back(Packet::Ping { probe: false });
                // Counted from when the ping was due, so a late timer never extends it.
                st.pong_deadline = Some(ping_at + self.config.ping_timeout);
                st.next_ping = None;
                drop(st);
                self.changed.notify_waiters();
            }
        }
    }

    /// Checks the heartbeat and that the session is alive and still on `transport`.
    fn enter(self: &Arc<Self>, transport: Transport) -> Result<MutexGuard<'_, State>, EngineError> {
        let mut st = self.lock();
        if let Some(closing) = self.expire_locked(&mut st, Instant::now()) {
            drop(st);
            self.finish_close(Some(closing));
            return Err(EngineError::UnknownSid);
        }
        if st.closed.is_none() && (st.transport != transport || st.upgrade == Upgrade::Done) {
            return Err(EngineError::TransportMismatch);
        }
        Ok(st)
    }

    /// A long-poll that came by `via`: waits for packets and returns them as one payload. If
    /// `gone` resolves first, the poll gives its slot back without closing the session and
    /// returns `None`.
    ///
    /// A second GET closes the session, as the protocol says, with one exception: when the
    /// parked GET came by another way, it may be a GET whose way broke unnoticed so far (its
    /// forwarding node just died, and the client's retry came through another node faster
    /// than the news). Such a GET waits up to [`SUPERSEDE_GRACE`] for the slot to be given
    /// back before the rule applies. A GET that arrives, by another way than the websocket, while
    /// an upgrade probes waits as long for the upgrade's `5`, which may be on its way over
    /// another node.
    ///
    /// A GET with the request id of an earlier one is that GET sent again by the balancer,
    /// whose first attempt got no answer: the answer it may have been given is queued again,
    /// and a first attempt still parked (by a way that no longer answers) gives up its slot
    /// at once.
    pub(crate) async fn poll(
        self: &Arc<Self>,
        via: Via,
        request_id: Option<&str>,
        gone: impl Future<Output = ()>,
    ) -> Result<Option<String>, EngineError> {
        if let Some(handler) = self.handler() {
            handler.on_poll();
        }
        // Set the first time this GET has to wait, so the common case reads no clock.
        let mut grace_until = None;
        let id = loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            {
                let mut st = self.enter(Transport::Polling)?;
                // The client polls again only once it has the previous answer; the balancer
                // sends the same GET again when it got none.
                if let Some(lost) = st.unconfirmed.take()
                    && request_id.is_some()
                    && lost.request.as_deref() == request_id
                {
                    Self::queue_again(&mut st, lost.packets);
                }
                if st.closed.is_some() {
                    if st.linger
                        && let Some(packets) = st.final_payload.take()
                    {
                        st.linger = false;
                        drop(st);
                        self.unregister();
                        return Ok(Some(eio::encode_payload(&packets)));
                    }
                    return Err(EngineError::UnknownSid);
                }
                // Came by another way than a parked GET, or than the websocket of an
                // upgrade that probes (the client stops polling before it sends `5`, so this
                // GET most likely raced that `5` through another node): wait a moment for
                // the other way to finish. By the same way, the protocol's answers hold at
                // once: a second GET closes the session, a GET during the probe gets `6`.
                let contested = (st.poll_parked.is_some() && st.poll_via != via)
                    || (st.upgrade == Upgrade::Probing && st.upgrade_via != via);
                if st.poll_parked.is_some()
                    && request_id.is_some()
                    && st.poll_request.as_deref() == request_id
                {
                    // This GET sent again: the balancer gave up on the first attempt, which
                    // nobody will read. It takes the slot at once (the first one, if it ever
                    // runs again, answers `6` to nobody).
                    let id = st.next_poll_id;
                    st.next_poll_id += 1;
                    st.poll_parked = Some(id);
                    st.poll_via = via;
                    self.changed.notify_waiters();
                    break id;
                }
                let now = contested.then(Instant::now);
                let within_grace =
                    now.is_some_and(|now| now < *grace_until.get_or_insert(now + SUPERSEDE_GRACE));
                if within_grace {
                    // Registered under the state lock: a change made after this check wakes it.
                    changed.as_mut().enable();
                } else if st.poll_parked.is_none() {
                    let id = st.next_poll_id;
                    st.next_poll_id += 1;
                    st.poll_parked = Some(id);
                    st.poll_via = via;
                    st.poll_request = request_id.map(str::to_owned);
                    break id;
                } else {
                    let closing =
                        self.close_locked(&mut st, CloseReason::TransportError, FinalAnswer::Close);
                    drop(st);
                    self.finish_close(closing);
                    return Err(EngineError::DuplicatePoll);
                }
            }
            // Only a GET within its grace gets here, so the grace is set.
            let until = grace_until.unwrap_or_else(Instant::now);
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        };
        let mut guard = PollGuard {
            session: self,
            id,
            armed: true,
        };
        tokio::pin!(gone);
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut st = self.lock();
                if st.poll_parked != Some(id) {
                    // Superseded by the same GET sent again through another way.
                    guard.armed = false;
                    return Ok(Some(eio::encode_payload(&[Packet::Noop])));
                }
                if let Some(closing) = self.expire_locked(&mut st, Instant::now()) {
                    drop(st);
                    self.finish_close(Some(closing));
                    continue;
                }
                if st.closed.is_some() {
                    guard.release(&mut st);
                    let packets = st
                        .final_payload
                        .take()
                        .unwrap_or_else(|| vec![Packet::Close]);
                    return Ok(Some(eio::encode_payload(&packets)));
                }
                if st.upgrade == Upgrade::Done {
                    // Parked before `5`: the queue now belongs to the websocket. Later
                    // polls are refused in `enter`.
                    guard.release(&mut st);
                    return Ok(Some(eio::encode_payload(&[Packet::Noop])));
                }
                if !st.queue.is_empty() {
                    guard.release(&mut st);
                    let packets = Self::take_queue(&mut st);
                    let answer = eio::encode_payload(&packets);
                    if via != Via::LOCAL || request_id.is_some() {
                        st.unconfirmed = Some(Unconfirmed {
                            via,
                            request: request_id.map(str::to_owned),
                            packets,
                        });
                    }
                    return Ok(Some(answer));
                }
                if st.upgrade == Upgrade::Probing || std::mem::take(&mut st.release_poll) {
                    // The client finishes its pending requests before it sends `5`; or it
                    // is to poll again, perhaps through another node.
                    guard.release(&mut st);
                    return Ok(Some(eio::encode_payload(&[Packet::Noop])));
                }
            }
            tokio::select! {
                _ = changed => {}
                _ = &mut gone => {
                    // Nobody will read an answer, but the client did not go away: what is
                    // queued stays for its next GET, which may be waiting for the slot.
                    guard.release(&mut self.lock());
                    self.changed.notify_waiters();
                    return Ok(None);
                }
            }
        }
    }

    /// A POST: hands every packet of the body to the application, in order, before returning.
    /// A POST with the request id of the last one taken is that POST sent again by the
    /// balancer (its first attempt got no answer): it was applied, and is answered `ok` again
    /// without being applied twice.
    pub(crate) async fn post(
        self: &Arc<Self>,
        request_id: Option<&str>,
        body: Bytes,
    ) -> Result<(), EngineError> {
        {
            let mut st = self.enter(Transport::Polling)?;
            if st.closed.is_some() {
                return Err(EngineError::UnknownSid);
            }
            if request_id.is_some() && st.last_post.as_deref() == request_id {
                return Ok(());
            }
            st.last_post = request_id.map(str::to_owned);
            if st.post_active {
                let closing =
                    self.close_locked(&mut st, CloseReason::TransportError, FinalAnswer::Close);
                drop(st);
                self.finish_close(closing);
                return Err(EngineError::ConcurrentPost);
            }
            st.post_active = true;
        }
        let _post = PostGuard { session: self };
        let _inbound = self.inbound.clone().lock_owned().await;
        let Ok(text) = eio::payload_text(&body) else {
            self.close_with(CloseReason::ParseError, FinalAnswer::Close);
            return Err(EngineError::BadPacket);
        };
        for item in eio::payload_packets(text) {
            if self.is_closed() {
                break;
            }
            match item {
                Ok(packet) => self.handle_packet(packet),
                Err(_) => {
                    self.close_with(CloseReason::ParseError, FinalAnswer::Close);
                    return Err(EngineError::BadPacket);
                }
            }
        }
        Ok(())
    }

    /// Acts on one packet from the client. Called with `inbound` held.
    pub(crate) fn handle_packet(self: &Arc<Self>, packet: Packet) {
        match packet {
            Packet::Text(text) => self.deliver(Message::Text(text)),
            Packet::Binary(data) => self.deliver(Message::Binary(data)),
            Packet::Pong { probe: false } => {
                let mut st = self.lock();
                // Only a pong that answers the outstanding ping counts: unsolicited ones
                // must not postpone pings forever.
                if st.closed.is_none() && st.pong_deadline.is_some() {
                    st.pong_deadline = None;
                    st.next_ping = Some(Instant::now() + self.config.ping_interval);
                    drop(st);
                    self.heartbeat_wake.notify_waiters();
                }
            }
            Packet::Close => self.close_with(CloseReason::TransportClose, FinalAnswer::Noop),
            // In v4 only the server pings: a ping from the client is a protocol violation.
            Packet::Ping { .. } => self.close_with(CloseReason::TransportError, FinalAnswer::Close),
            Packet::Open(_) | Packet::Pong { probe: true } | Packet::Upgrade | Packet::Noop => {}
        }
    }

    /// Tells the handler that the upgrade completed, in order with the messages.
    pub(crate) async fn upgraded(&self) {
        let _inbound = self.inbound.clone().lock_owned().await;
        if let Some(handler) = self.handler() {
            handler.on_upgrade();
        }
    }

    fn deliver(&self, msg: Message) {
        if let Some(shared) = self.shared.upgrade() {
            let bytes = match &msg {
                Message::Text(text) => text.len(),
                Message::Binary(bytes) => bytes.len(),
            };
            shared.counters.received(bytes);
        }
        if let Some(handler) = self.handler() {
            handler.on_message(msg);
        }
    }
}

/// A long-poll answer that may not have reached the client yet.
struct Unconfirmed {
    /// The way it went.
    via: Via,
    /// The request id of the GET it answered.
    request: Option<String>,
    packets: Vec<Packet>,
}

/// Owns the one-parked-poll slot while a long-poll waits. Dropped while still armed
/// (the client went away and the HTTP stack dropped the request), it closes the session.
struct PollGuard<'a> {
    session: &'a Arc<Session>,
    id: u64,
    armed: bool,
}

impl PollGuard<'_> {
    fn release(&mut self, st: &mut State) {
        self.armed = false;
        if st.poll_parked == Some(self.id) {
            st.poll_parked = None;
        }
    }
}

impl Drop for PollGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut st = self.session.lock();
        if st.poll_parked != Some(self.id) {
            return;
        }
        st.poll_parked = None;
        let closing =
            self.session
                .close_locked(&mut st, CloseReason::TransportError, FinalAnswer::Close);
        drop(st);
        self.session.finish_close(closing);
    }
}

/// Owns the one-running-POST slot.
struct PostGuard<'a> {
    session: &'a Arc<Session>,
}

impl Drop for PostGuard<'_> {
    fn drop(&mut self) {
        self.session.lock().post_active = false;
    }
}
