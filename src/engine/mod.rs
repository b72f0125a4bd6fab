//! Engine.IO v4 sessions owned by this process.
//!
//! The engine's entry points take plain values (a typed [`Request`], body bytes, a
//! websocket frame link) and return plain values, so the HTTP front and, later, a peer
//! forwarding a request over gRPC call exactly the same functions. Nothing in here knows
//! about HTTP types or about other nodes.
//!
//! - [`Engine::open_polling`]: polling handshake, returns the open packet.
//! - [`Engine::poll`] / [`Engine::post`]: the two halves of long-polling.
//! - [`Engine::accept_websocket`] then [`Engine::run_websocket`]: websocket sessions and
//!   upgrades; the accept check runs before the HTTP 101 so refusals are plain 400s.

mod app;
mod config;
mod error;
mod metrics;
mod session;
mod ws;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures::{Sink, Stream};

pub use app::{
    Application, CloseReason, Connection, HandshakeInfo, Message, SendError, SessionHandler,
    Transport,
};
pub use config::EngineConfig;
pub use error::{EngineError, MoveError};
pub use metrics::EngineMetrics;
pub use ws::{CLOSE_NORMAL, CLOSE_PROTOCOL, CLOSE_TOO_LARGE, LinkError, Outbound};

use crate::protocol::eio::{Frame, Packet};
use session::Session;
pub use session::Via;

/// The HTTP method of a request, as far as Engine.IO cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET: handshake, long-poll, or websocket upgrade.
    Get,
    /// POST: packets from the client.
    Post,
    /// Anything else.
    Other,
}

/// The longest request id ([`Request::request_id`]) kept; a longer one is ignored.
pub const MAX_REQUEST_ID: usize = 128;

/// One Engine.IO request, parsed once by whoever received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The HTTP method.
    pub method: Method,
    /// The `transport` query parameter.
    pub transport: Option<String>,
    /// The `EIO` query parameter.
    pub eio: Option<String>,
    /// The `sid` query parameter.
    pub sid: Option<String>,
    /// The request asks for a websocket upgrade.
    pub websocket_upgrade: bool,
    /// The `Origin` header, if any.
    pub origin: Option<String>,
    /// The `Content-Type` header, if any (a POST declared as binary is refused).
    pub content_type: Option<String>,
    /// The id the balancer in front gave the request (`X-Nonstick-Request-Id`), the same on
    /// every attempt it makes: tells a GET or POST it sent again (its first attempt got no answer)
    /// from the client's next one.
    pub request_id: Option<String>,
    /// Query pairs, headers and peer address, kept for the application.
    pub info: HandshakeInfo,
}

/// What a successful polling handshake returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The new session id.
    pub sid: String,
    /// The response body: the encoded open packet.
    pub body: String,
}

/// The outcome of the websocket accept check, to be passed to [`Engine::run_websocket`]
/// once the websocket is established.
pub struct WsAccept {
    kind: WsKind,
}

enum WsKind {
    /// A websocket-only session: the handshake happens on the websocket.
    Open(HandshakeInfo),
    /// An upgrade of this polling session, by a websocket that came by this way.
    Upgrade(Arc<Session>, Via),
    /// Accepted at the HTTP level, then closed at once (an extra websocket for a sid
    /// that is already upgrading or upgraded).
    Refuse,
}

impl std::fmt::Debug for WsAccept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            WsKind::Open(_) => "open",
            WsKind::Upgrade(..) => "upgrade",
            WsKind::Refuse => "refuse",
        };
        f.debug_struct("WsAccept").field("kind", &kind).finish()
    }
}

/// A polling session on its way from one node to another ([`Engine::move_out`] →
/// [`Engine::move_in`]): what the client has not received yet, where its heartbeat stands, and
/// the state of the application on top.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionImage {
    /// The session id, unchanged by the move.
    pub sid: String,
    /// The opening request.
    pub handshake: HandshakeInfo,
    /// Packets queued for the client and not delivered yet (messages, and a ping not yet sent).
    pub queue: Vec<Packet>,
    /// Time left until the next ping, when none is awaiting its pong.
    pub next_ping_in: Option<Duration>,
    /// Time left for the pong of a ping already sent.
    pub pong_due_in: Option<Duration>,
    /// What the application's handler gave up ([`SessionHandler::on_move`]).
    pub app: Option<Vec<u8>>,
}

/// The Engine.IO server of one mount point: owns its sessions. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("sessions", &self.session_count())
            .finish()
    }
}

/// State shared by every clone of an [`Engine`] and, weakly, by its sessions.
pub(crate) struct Shared {
    config: Arc<EngineConfig>,
    app: Arc<dyn Application>,
    sessions: Mutex<HashMap<Arc<str>, Arc<Session>>>,
    shutting_down: AtomicBool,
    /// Sessions that count against `max_sessions`: registered, or unregistered but with
    /// a websocket link that has not ended yet (see [`LiveSlot`]).
    live: AtomicUsize,
    runtime: tokio::runtime::Handle,
    pub(crate) counters: metrics::Counters,
}

/// One place under `max_sessions`. The session holds it while registered and each of its
/// websocket links holds a clone while it runs, so a closed session whose link is still
/// being torn down keeps counting; the place is freed when the last holder drops it.
pub(crate) struct LiveSlot {
    shared: Weak<Shared>,
}

impl Drop for LiveSlot {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.upgrade() {
            shared.live.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Shared {
    fn sessions(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a new session must be refused.
    fn at_capacity(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
            || self.live.load(Ordering::Acquire) >= self.config.max_sessions
    }

    /// Forgets a session, if the map still holds this very session.
    pub(crate) fn remove(&self, session: &Arc<Session>) {
        let mut sessions = self.sessions();
        if sessions
            .get(&session.sid)
            .is_some_and(|s| Arc::ptr_eq(s, session))
        {
            sessions.remove(&session.sid);
        }
    }
}

/// Where a verified request goes.
enum Route {
    Open(Transport),
    Session(Arc<Session>, Transport),
}

impl Engine {
    /// Creates an engine. Must be called inside a Tokio runtime: session timers and
    /// `on_close` deliveries run on it.
    pub fn new(config: EngineConfig, app: Arc<dyn Application>) -> Engine {
        Engine {
            shared: Arc::new(Shared {
                config: Arc::new(config),
                app,
                sessions: Mutex::new(HashMap::new()),
                shutting_down: AtomicBool::new(false),
                live: AtomicUsize::new(0),
                runtime: tokio::runtime::Handle::current(),
                counters: metrics::Counters::default(),
            }),
        }
    }

    /// The settings of this engine.
    pub fn config(&self) -> &EngineConfig {
        &self.shared.config
    }

    /// Whether this engine holds a session with this sid (a closed one whose last long-poll
    /// is still due included).
    pub fn has_session(&self, sid: &str) -> bool {
        self.shared.sessions().contains_key(sid)
    }

    /// Registered sessions (closed ones whose last long-poll is still due included).
    pub fn session_count(&self) -> usize {
        self.shared.sessions().len()
    }

    /// The sids of the live sessions carried by `transport` (an upgrading session counts as
    /// polling until its upgrade completes).
    pub fn sids(&self, transport: Transport) -> Vec<String> {
        let sessions: Vec<_> = self.shared.sessions().values().cloned().collect();
        sessions
            .into_iter()
            .filter(|s| !s.is_closed() && s.transport() == transport)
            .map(|s| s.sid.to_string())
            .collect()
    }

    /// How many live sessions each transport carries: `(polling, websocket)` (an upgrading
    /// session counts as polling until its upgrade completes).
    pub fn transport_counts(&self) -> (usize, usize) {
        let mut counts = (0, 0);
        for session in self.shared.sessions().values().filter(|s| !s.is_closed()) {
            match session.transport() {
                Transport::Polling => counts.0 += 1,
                Transport::Websocket => counts.1 += 1,
            }
        }
        counts
    }

    /// The node that forwarded long-polls over `via` is gone (its stream ended): the answers
    /// it may not have delivered are queued again (see `Session::answer_lost`).
    pub fn answers_lost(&self, via: Via) {
        let sessions: Vec<_> = self.shared.sessions().values().cloned().collect();
        for session in sessions {
            session.answer_lost(via);
        }
    }

    /// Answers every parked long-poll `6`: their clients poll again, through whichever node
    /// the balancer picks (this one stopped serving, say).
    pub fn release_polls(&self) {
        let sessions: Vec<_> = self.shared.sessions().values().cloned().collect();
        for session in sessions {
            session.release_poll();
        }
    }

    /// Closes the session `sid` from the server side, as [`Connection::close`] would.
    pub fn close(&self, sid: &str, reason: CloseReason) {
        if let Some(session) = self.session(sid) {
            session.close(reason);
        }
    }

    /// A snapshot of this engine's counters.
    pub fn metrics(&self) -> EngineMetrics {
        self.shared.counters.snapshot(self.session_count())
    }

    fn session(&self, sid: &str) -> Option<Arc<Session>> {
        self.shared.sessions().get(sid).cloned()
    }

    /// Checks a request in the order of the reference server, so error codes match.
    fn verify(&self, req: &Request) -> Result<Route, EngineError> {
        let config = &self.shared.config;
        let transport = req
            .transport
            .as_deref()
            .and_then(Transport::parse)
            .filter(|t| match t {
                Transport::Polling => config.polling,
                Transport::Websocket => config.websocket,
            })
            .ok_or(EngineError::UnknownTransport)?;
        if req.origin.as_deref().is_some_and(has_invalid_header_char) {
            return Err(EngineError::BadRequest);
        }
        if let Some(sid) = &req.sid {
            let Some(session) = self.session(sid) else {
                self.shared.counters.unknown_sid();
                return Err(EngineError::UnknownSid);
            };
            if !req.websocket_upgrade && transport != session.transport() {
                return Err(EngineError::TransportMismatch);
            }
            return Ok(Route::Session(session, transport));
        }
        if req.method != Method::Get {
            return Err(EngineError::BadHandshakeMethod);
        }
        if transport == Transport::Websocket && !req.websocket_upgrade {
            return Err(EngineError::BadRequest);
        }
        if !self.shared.app.allow_request(&req.info) {
            return Err(EngineError::Forbidden);
        }
        if req.eio.as_deref() != Some("4") {
            return Err(EngineError::UnsupportedProtocolVersion);
        }
        if self.shared.shutting_down.load(Ordering::Acquire) {
            return Err(EngineError::Unavailable);
        }
        Ok(Route::Open(transport))
    }

    /// Checks a request without acting on it; the error a request with no valid
    /// action (e.g. a PUT) should get.
    pub fn check(&self, req: &Request) -> Result<(), EngineError> {
        self.verify(req).map(|_| ())
    }

    /// A session counted under `max_sessions`, not registered yet; `None` at capacity.
    /// Called under the map lock, so concurrent handshakes cannot overshoot the limit.
    fn admit(&self, sid: Arc<str>, transport: Transport, info: HandshakeInfo) -> Option<Session> {
        let shared = &self.shared;
        if shared.at_capacity() {
            return None;
        }
        shared.live.fetch_add(1, Ordering::AcqRel);
        let live = Arc::new(LiveSlot {
            shared: Arc::downgrade(shared),
        });
        Some(Session::new(
            sid,
            transport,
            info,
            Arc::clone(&shared.config),
            Arc::downgrade(shared),
            live,
            shared.runtime.clone(),
        ))
    }

    /// Creates a session, starts its timers and calls `Application::on_open`.
    fn create(
        &self,
        transport: Transport,
        info: HandshakeInfo,
    ) -> Result<(Arc<Session>, String), EngineError> {
        let shared = &self.shared;
        let session = {
            let mut sessions = shared.sessions();
            let sid: Arc<str> = loop {
                let sid = new_sid(&shared.config.sid_prefix);
                if !sessions.contains_key(sid.as_str()) {
                    break sid.into();
                }
            };
            let session = Arc::new(
                self.admit(Arc::clone(&sid), transport, info)
                    .ok_or(EngineError::Forbidden)?,
            );
            sessions.insert(sid, Arc::clone(&session));
            session
        };
        shared.counters.opened();
        // Held through on_open so an early close cannot deliver on_close before the
        // handler exists. Nobody else knows the session yet, so this never waits.
        let inbound = session.inbound.clone().try_lock_owned();
        shared.runtime.spawn(Arc::clone(&session).heartbeat());
        let handler = shared.app.on_open(Connection {
            session: Arc::clone(&session),
        });
        session.set_handler(handler);
        drop(inbound);
        let open = serde_json::json!({
            "sid": &*session.sid,
            "upgrades": if transport == Transport::Polling
                && shared.config.websocket
                && shared.config.allow_upgrades
            {
                vec!["websocket"]
            } else {
                vec![]
            },
            "pingInterval": duration_ms(shared.config.ping_interval),
            "pingTimeout": duration_ms(shared.config.ping_timeout),
            "maxPayload": shared.config.max_payload,
        });
        Ok((session, open.to_string()))
    }

    /// Polling handshake: verifies the request, creates the session (timers start
    /// before this returns) and returns the open packet.
    pub fn open_polling(&self, req: &Request) -> Result<Opened, EngineError> {
        match self.verify(req)? {
            Route::Open(Transport::Polling) => {
                let (session, open) = self.create(Transport::Polling, req.info.clone())?;
                Ok(Opened {
                    sid: session.sid.to_string(),
                    body: Packet::Open(open).encode(),
                })
            }
            Route::Open(Transport::Websocket) | Route::Session(..) => Err(EngineError::BadRequest),
        }
    }

    /// A long-poll GET: waits until packets are queued and returns them as one payload.
    ///
    /// One parked GET per session: a second one closes the session (the first gets `1`).
    /// If this future is dropped before it completes (the client went away), the
    /// session closes.
    pub async fn poll(&self, req: &Request) -> Result<String, EngineError> {
        // A local client's GET has no other way to vanish than being dropped.
        let polled = self
            .poll_forwarded(req, Via::LOCAL, std::future::pending())
            .await?;
        Ok(polled.unwrap_or_default())
    }

    /// A long-poll forwarded by another node over `via`: [`Engine::poll`], except that when
    /// `gone` resolves first (the forwarding node vanished without a word about the client),
    /// the poll gives its slot back and the session lives on, so the client's retried GET
    /// parks again through any node. Returns `None` then. Dropping the future is still a
    /// client that went away.
    pub async fn poll_forwarded(
        &self,
        req: &Request,
        via: Via,
        gone: impl Future<Output = ()>,
    ) -> Result<Option<String>, EngineError> {
        match self.verify(req)? {
            Route::Session(session, Transport::Polling) if !req.websocket_upgrade => {
                session.poll(via, req.request_id.as_deref(), gone).await
            }
            _ => Err(EngineError::BadRequest),
        }
    }

    /// The checks of a POST that need no body: run it before reading the body, so a
    /// refused POST costs no read. A body declared as `application/octet-stream` (never
    /// sent by v4 clients) closes the session.
    pub fn check_post(&self, req: &Request) -> Result<(), EngineError> {
        self.post_session(req).map(|_| ())
    }

    fn post_session(&self, req: &Request) -> Result<Arc<Session>, EngineError> {
        let Route::Session(session, Transport::Polling) = self.verify(req)? else {
            return Err(EngineError::BadRequest);
        };
        if req.content_type.as_deref().is_some_and(is_binary_content) {
            session.close_with(CloseReason::TransportError, session::FinalAnswer::Close);
            return Err(EngineError::BinaryBody);
        }
        Ok(session)
    }

    /// A POST: hands every packet of the body to the application, in order, before it
    /// returns. An invalid packet closes the session after the packets before it.
    pub async fn post(&self, req: &Request, body: Bytes) -> Result<(), EngineError> {
        let session = self.post_session(req)?;
        if body.len() > self.shared.config.max_payload {
            return Err(EngineError::PayloadTooLarge);
        }
        session.post(req.request_id.as_deref(), body).await
    }

    /// The check to run before answering a websocket upgrade with 101, for a websocket that
    /// comes by `via` (this node's front, or a relay from another node). An error means the
    /// upgrade must be refused with a plain HTTP error.
    pub fn accept_websocket(&self, req: &Request, via: Via) -> Result<WsAccept, EngineError> {
        if !req.websocket_upgrade {
            return Err(EngineError::BadRequest);
        }
        let kind = match self.verify(req)? {
            Route::Open(Transport::Websocket) => {
                if self.shared.at_capacity() {
                    return Err(EngineError::Forbidden);
                }
                WsKind::Open(req.info.clone())
            }
            Route::Open(Transport::Polling) => return Err(EngineError::BadRequest),
            Route::Session(session, Transport::Websocket)
                if self.shared.config.allow_upgrades
                    && session.transport() == Transport::Polling =>
            {
                WsKind::Upgrade(session, via)
            }
            Route::Session(..) => WsKind::Refuse,
        };
        Ok(WsAccept { kind })
    }

    /// Runs an accepted websocket until it ends: a websocket-only session (the open
    /// packet is its first frame), or an upgrade probe followed by the upgraded session.
    pub async fn run_websocket<Si, St>(&self, accept: WsAccept, mut sink: Si, mut stream: St)
    where
        Si: Sink<Outbound> + Unpin + Send,
        St: Stream<Item = Result<Frame, LinkError>> + Unpin + Send,
    {
        let limit = self.shared.config.ping_timeout;
        // The steps around `drive` are boxed: a task is as large as its largest state for as
        // long as it lives, and an idle session's task lives for hours.
        match accept.kind {
            WsKind::Open(info) => {
                let Ok((session, open)) = self.create(Transport::Websocket, info) else {
                    Box::pin(ws::end_link(&mut sink, CLOSE_NORMAL, limit)).await;
                    return;
                };
                if !Box::pin(ws::write(&mut sink, ws::open_frame(open), limit)).await {
                    session.close_with(CloseReason::TransportError, session::FinalAnswer::Close);
                    return;
                }
                ws::drive(session, sink, stream).await;
            }
            WsKind::Upgrade(session, via) => {
                if Box::pin(ws::probe(&session, via, &mut sink, &mut stream)).await {
                    ws::drive(session, sink, stream).await;
                } else {
                    Box::pin(ws::end_link(&mut sink, CLOSE_NORMAL, limit)).await;
                }
            }
            WsKind::Refuse => Box::pin(ws::end_link(&mut sink, CLOSE_NORMAL, limit)).await,
        }
    }

    /// Takes the polling session `sid` out of this engine, for [`Engine::move_in`] on another
    /// node: its undelivered packets, its heartbeat, and its application's state (the
    /// handler's [`SessionHandler::on_move`], called instead of `on_close`). A parked long-poll
    /// is answered `6`; later requests for the sid find nothing here. Refused while the session
    /// is on a websocket or upgrading ([`MoveError::NotPolling`]), or while a POST is being
    /// delivered ([`MoveError::Busy`]).
    pub async fn move_out(&self, sid: &str) -> Result<SessionImage, MoveError> {
        let session = self.session(sid).ok_or(MoveError::UnknownSid)?;
        session.move_out().await
    }

    /// What the application resumes `sid` with when this node takes it over from a node that
    /// was lost ([`Application::adoption`]).
    pub fn adoption(&self, sid: &str) -> futures::future::BoxFuture<'static, Option<Vec<u8>>> {
        self.shared.app.adoption(sid)
    }

    /// Resumes a session that left another node ([`Engine::move_out`]): same sid, the packets
    /// it had not delivered, its heartbeat where it stood, and its application's state handed
    /// to [`Application::on_move_in`]. The client goes on polling as if nothing happened.
    pub fn move_in(&self, image: SessionImage) -> Result<(), MoveError> {
        let shared = &self.shared;
        let session = {
            let mut sessions = shared.sessions();
            if sessions.contains_key(image.sid.as_str()) {
                return Err(MoveError::Exists);
            }
            let sid: Arc<str> = image.sid.as_str().into();
            let session = self
                .admit(Arc::clone(&sid), Transport::Polling, image.handshake)
                .ok_or(MoveError::Full)?;
            session.resume(image.queue, image.next_ping_in, image.pong_due_in)?;
            let session = Arc::new(session);
            sessions.insert(sid, Arc::clone(&session));
            session
        };
        // As in `create`: no close can reach the handler before it exists.
        let inbound = session.inbound.clone().try_lock_owned();
        shared.runtime.spawn(Arc::clone(&session).heartbeat());
        let handler = shared.app.on_move_in(
            Connection {
                session: Arc::clone(&session),
            },
            image.app,
        );
        session.set_handler(handler);
        drop(inbound);
        Ok(())
    }

    /// Refuses new sessions from now on (code 4, as at the session limit); the live ones go on.
    /// A draining node does this: its clients are to open their sessions elsewhere.
    pub fn refuse_new_sessions(&self) {
        self.shared.shutting_down.store(true, Ordering::Release);
    }

    /// Closes every session with [`CloseReason::ServerShutdown`] and refuses new ones.
    pub fn shutdown(&self) {
        self.shared.shutting_down.store(true, Ordering::Release);
        let sessions: Vec<_> = self.shared.sessions().values().cloned().collect();
        for session in sessions {
            session.close(CloseReason::ServerShutdown);
        }
    }
}

/// A new session id: 128 bits from the thread-local CSPRNG, URL-safe base64.
fn new_sid(prefix: &str) -> String {
    let bytes: [u8; 16] = rand::random();
    let mut sid = prefix.to_owned();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(bytes, &mut sid);
    sid
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Whether a `Content-Type` value is `application/octet-stream` (parameters ignored).
fn is_binary_content(value: &str) -> bool {
    value.split(';').next().is_some_and(|media| {
        media
            .trim()
            .eq_ignore_ascii_case("application/octet-stream")
    })
}

/// The reference server refuses an `Origin` with characters outside tab, visible ASCII
/// and obs-text.
fn has_invalid_header_char(value: &str) -> bool {
    value
        .chars()
        .any(|c| !(c == '\t' || (' '..='~').contains(&c) || ('\u{80}'..='\u{ff}').contains(&c)))
}
