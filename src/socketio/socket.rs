//! A socket: one client connected to one namespace. The handle user code holds.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::SystemTime;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::ack::{AckFuture, AckResult};
use super::activity::Activity;
use super::args::{Args, Event};
use super::broadcast::BroadcastOperator;
use super::client::Client;
use super::config::Parser;
use super::error::{AckError, DisconnectReason, EmitError};
use super::handler::{DisconnectHandler, EventHandler, run_inline};
use super::moving::MovedSocket;
use super::namespace::{Namespace, NamespaceInner, with_recovery};
use super::recovery::{Logged, Position, SavedSession, with_offset};
use super::remote::{CLIENT_ID_CHARS, SocketChange, SocketDetails};
use super::{lock, read, write};
use crate::engine::{CloseReason, Connection, HandshakeInfo, Message, Transport};
use crate::protocol::msgpack;
use crate::protocol::sio::{self, Encoded, Packet};
use crate::protocol::value::Value;

/// What the client presented when it joined the namespace.
#[derive(Debug, Clone)]
pub struct Handshake {
    /// The CONNECT payload (the client's `auth` option); an empty object if none was sent.
    /// With connection state recovery on, `pid` and `offset` are removed from it.
    pub auth: Value,
    /// The Engine.IO opening request: query, headers, remote address.
    pub request: HandshakeInfo,
    /// When the socket joined.
    pub time: SystemTime,
}

/// One client connected to one namespace.
///
/// Cheap to clone; all clones are the same socket. Every socket is in a room named after its
/// own id, so `to(id)` reaches exactly it.
#[derive(Clone)]
pub struct Socket {
    pub(crate) inner: Arc<SocketInner>,
}

pub(crate) struct SocketInner {
    id: String,
    pid: Option<String>,
    pub(crate) ns: Arc<NamespaceInner>,
    pub(crate) conn: Connection,
    handshake: Handshake,
    recovered: bool,
    /// The client this socket belongs to, to leave its namespace table on a server-side
    /// disconnect. Weak: the client owns its sockets, not the other way round.
    client: Weak<Client>,
    connected: AtomicBool,
    events: RwLock<HashMap<String, EventHandler>>,
    on_disconnect: Mutex<Vec<DisconnectHandler>>,
    data: Mutex<Value>,
    /// Acks this socket owes us: ack id -> where the client's answer goes.
    pub(crate) pending_acks: Mutex<HashMap<u64, oneshot::Sender<AckResult>>>,
    /// Events that arrived before the connection handler registered its event handlers
    /// (possible when middleware suspended); `None` once they have been dispatched.
    early_events: Mutex<Option<Vec<Event>>>,
    /// What its client has been sent of the logged broadcasts.
    delivery: Mutex<Delivery>,
}

/// What a socket's client has been sent of the logged broadcasts (connection state recovery).
#[derive(Default)]
struct Delivery {
    /// For a socket that was recovered or moved here: what its client had been sent beyond
    /// this node's log when it joined. Logged broadcasts it covers are skipped (they reach
    /// this node late), the others carry it merged into their offset. `None` once this
    /// node's log covers it.
    seen: Option<Position>,
    /// The offset of the last logged packet queued for it.
    sent: Option<Arc<Position>>,
    /// `sent` as of the session's previous long-poll: the client has it once the next one
    /// arrives.
    polled: Option<Arc<Position>>,
    /// The last offset reported as received.
    reported: Option<Arc<Position>>,
}

/// Most events held for a socket whose connection handler has not started yet; a client that
/// sends more in that window is closed as a protocol violator.
const MAX_EARLY_EVENTS: usize = 1024;

pub(crate) struct SocketParts {
    pub(crate) id: String,
    pub(crate) pid: Option<String>,
    pub(crate) ns: Arc<NamespaceInner>,
    pub(crate) conn: Connection,
    pub(crate) handshake: Handshake,
    pub(crate) recovered: bool,
    pub(crate) client: Weak<Client>,
    pub(crate) data: Value,
}

impl Socket {
    pub(crate) fn new(parts: SocketParts) -> Self {
        Socket {
            inner: Arc::new(SocketInner {
                id: parts.id,
                pid: parts.pid,
                ns: parts.ns,
                conn: parts.conn,
                handshake: parts.handshake,
                recovered: parts.recovered,
                client: parts.client,
                connected: AtomicBool::new(false),
                events: RwLock::new(HashMap::new()),
                on_disconnect: Mutex::new(Vec::new()),
                data: Mutex::new(parts.data),
                pending_acks: Mutex::new(HashMap::new()),
                early_events: Mutex::new(Some(Vec::new())),
                delivery: Mutex::new(Delivery::default()),
            }),
        }
    }

    /// The socket id (distinct from the Engine.IO session id).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The private session id used by connection state recovery, when it is on.
    pub fn pid(&self) -> Option<&str> {
        self.inner.pid.as_deref()
    }

    /// The name of the namespace this socket belongs to.
    pub fn ns(&self) -> &str {
        self.inner.ns.name()
    }

    /// The namespace this socket belongs to, e.g. to broadcast to a room sender included.
    pub fn namespace(&self) -> Namespace {
        Namespace::from_inner(self.inner.ns.clone())
    }

    /// What the client presented when it joined.
    pub fn handshake(&self) -> &Handshake {
        &self.inner.handshake
    }

    /// True when this socket was restored by connection state recovery: same id, rooms and
    /// data as before the client lost its connection, and the missed events were replayed.
    pub fn recovered(&self) -> bool {
        self.inner.recovered
    }

    /// True until the socket leaves its namespace.
    pub fn connected(&self) -> bool {
        self.inner.connected.load(Ordering::Acquire)
    }

    /// The Engine.IO transport carrying this socket now.
    pub fn transport(&self) -> Transport {
        self.inner.conn.transport()
    }

    /// Register the handler for `event`, replacing an earlier one.
    pub fn on<F, Fut>(&self, event: impl Into<String>, handler: F)
    where
        F: Fn(Socket, Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let handler: EventHandler = Arc::new(move |s, e| Box::pin(handler(s, e)));
        write(&self.inner.events).insert(event.into(), handler);
    }

    /// Register a handler that runs once when the socket leaves its namespace.
    pub fn on_disconnect<F, Fut>(&self, handler: F)
    where
        F: Fn(Socket, DisconnectReason) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        lock(&self.inner.on_disconnect).push(Arc::new(move |s, r| Box::pin(handler(s, r))));
    }

    /// Emit `event` to this client.
    pub fn emit(&self, event: &str, args: impl Into<Args>) -> Result<(), EmitError> {
        if !self.connected() {
            return Err(EmitError::Disconnected);
        }
        self.own_room().emit(event, args)
    }

    /// Emit `event` to this client and wait for its acknowledgement (by default for
    /// [`SocketIoConfig::ack_timeout`](super::SocketIoConfig::ack_timeout); see
    /// [`AckFuture::timeout`]).
    pub fn emit_with_ack(&self, event: &str, args: impl Into<Args>) -> AckFuture {
        let timeout = self.inner.ns.ack_timeout;
        let result = self.send_with_ack(event, args.into());
        AckFuture::new(result, timeout)
    }

    /// Emit to this client only if its transport can take the packet right now; otherwise drop
    /// it. For data that is useless when late.
    pub fn volatile(&self) -> BroadcastOperator {
        self.own_room().volatile()
    }

    /// A broadcast to the sockets in `room`, this socket excluded.
    pub fn to(&self, room: impl Into<String>) -> BroadcastOperator {
        self.broadcast().to(room)
    }

    /// A broadcast to every other socket of the namespace.
    pub fn broadcast(&self) -> BroadcastOperator {
        BroadcastOperator::new(self.inner.ns.clone()).except(self.id())
    }

    /// Join `room` (no-op if already in it).
    pub fn join(&self, room: impl Into<String>) {
        let rooms = self.inner.ns.join(self.id(), &[room.into()]);
        if !rooms.is_empty() {
            self.report(|session, nsp| SocketChange::JoinedRooms {
                session,
                nsp,
                rooms,
            });
        }
    }

    /// Leave `room` (no-op if not in it).
    pub fn leave(&self, room: &str) {
        if self.inner.ns.leave(self.id(), room) {
            self.report(|session, nsp| SocketChange::LeftRoom {
                session,
                nsp,
                room: room.to_owned(),
            });
        }
    }

    /// The rooms this socket is in, its own id included.
    pub fn rooms(&self) -> BTreeSet<String> {
        self.inner.ns.rooms_of(self.id())
    }

    /// The application data attached to this socket (restored by recovery).
    pub fn data(&self) -> Value {
        lock(&self.inner.data).clone()
    }

    /// This socket as other nodes see it in a listing.
    pub(crate) fn details(&self) -> SocketDetails {
        SocketDetails {
            id: self.inner.id.clone(),
            rooms: self.rooms(),
            data: self.data(),
            handshake: self.inner.handshake.clone(),
            client: self.client_id(),
            transport: self.transport(),
        }
    }

    /// Its client, as listings show it ([`SocketDetails::client`]).
    pub(crate) fn client_id(&self) -> String {
        self.inner
            .conn
            .sid()
            .chars()
            .take(CLIENT_ID_CHARS)
            .collect()
    }

    /// Replace the application data attached to this socket.
    pub fn set_data(&self, data: impl Into<Value>) {
        let data = data.into();
        *lock(&self.inner.data) = data.clone();
        // Before the socket joins, its data goes into the record of the join.
        if self.connected() {
            self.inner.ns.notify(Activity::Updated(self));
            self.report(|session, nsp| SocketChange::Data { session, nsp, data });
        }
    }

    /// Tell the cluster (if any) about a change of this socket, named by its session and
    /// namespace.
    /// Set what the client had been sent beyond this node's log (see `Delivery::seen`).
    pub(crate) fn set_seen(&self, seen: Position) {
        lock(&self.inner.delivery).seen = Some(seen);
    }

    /// The packet this socket gets for the logged broadcast `logged`, whose packet for a
    /// client that has been sent just this node's log is `plain`; `None` when the client had
    /// it already.
    pub(crate) fn logged_packet(&self, logged: &Logged, plain: &Encoded) -> Option<Encoded> {
        let mut delivery = lock(&self.inner.delivery);
        let (packet, offset) = match delivery.seen.as_ref() {
            None => (plain.clone(), logged.position.clone()),
            Some(covered) if covered.covers(logged.stamp()) => return None,
            Some(covered) => {
                let merged = Arc::new(logged.position.merged(covered));
                if logged.position.dominates(covered) {
                    delivery.seen = None;
                }
                (with_offset(&logged.bare, &merged), merged)
            }
        };
        delivery.sent = Some(offset);
        Some(packet)
    }

    /// The session's long-poll arrived: what the previous one carried has been received.
    /// With `report`, returns the offset of the last logged packet known received, when it
    /// changed since it was last returned.
    pub(crate) fn polled(&self, report: bool) -> Option<Arc<Position>> {
        let mut delivery = lock(&self.inner.delivery);
        let sent = delivery.sent.clone();
        let received = std::mem::replace(&mut delivery.polled, sent)?;
        if !report
            || delivery
                .reported
                .as_ref()
                .is_some_and(|r| Arc::ptr_eq(r, &received))
        {
            return None;
        }
        delivery.reported = Some(received.clone());
        Some(received)
    }

    pub(crate) fn report(&self, change: impl FnOnce(String, String) -> SocketChange) {
        if let Some(adapter) = self.inner.ns.adapter() {
            adapter.changed(change(
                self.inner.conn.sid().to_owned(),
                self.ns().to_owned(),
            ));
        }
    }

    /// Leave the namespace from the server side: the client gets a DISCONNECT packet and does
    /// not reconnect by itself. The Engine.IO connection stays open for other namespaces.
    pub fn disconnect(&self) {
        if !self.connected() {
            return;
        }
        let packet = sio::encode(&Packet::disconnect(self.ns()));
        let _ = send_encoded(&self.inner.conn, self.inner.ns.parser, packet);
        if let Some(client) = self.inner.client.upgrade() {
            client.forget(self.ns());
        }
        self.finish(DisconnectReason::ServerNamespaceDisconnect);
    }

    /// Close the whole Engine.IO connection without a DISCONNECT packet. The client sees a
    /// transport close and reconnects by itself (and recovers, if recovery is on).
    pub fn close_transport(&self) {
        self.inner.conn.close(CloseReason::ServerClose);
    }

    /// This socket alone. Local: the socket lives on this node, so no other node has anything
    /// to deliver.
    fn own_room(&self) -> BroadcastOperator {
        BroadcastOperator::new(self.inner.ns.clone())
            .to(self.id())
            .local()
    }

    /// Send an event with a fresh ack id and register where the answer goes.
    fn send_with_ack(
        &self,
        event: &str,
        args: Args,
    ) -> Result<(u64, oneshot::Receiver<AckResult>, Weak<SocketInner>), AckError> {
        if !self.connected() {
            return Err(EmitError::Disconnected.into());
        }
        super::broadcast::check_event_name(event)?;
        let id = self.inner.ns.next_ack_id();
        let rx = self.expect_ack(id);
        let packet = sio::encode(&Packet::event(self.ns(), event, args.0, Some(id)));
        let told = self.inner.ns.observed().then(|| packet.clone());
        if send_encoded(&self.inner.conn, self.inner.ns.parser, packet).is_err() {
            lock(&self.inner.pending_acks).remove(&id);
            return Err(EmitError::Disconnected.into());
        }
        if let Some(packet) = told {
            self.inner
                .ns
                .sent(std::slice::from_ref(&self.inner.id), &packet);
        }
        Ok((id, rx, Arc::downgrade(&self.inner)))
    }

    /// Register a pending ack under `id`.
    pub(crate) fn expect_ack(&self, id: u64) -> oneshot::Receiver<AckResult> {
        let (tx, rx) = oneshot::channel();
        lock(&self.inner.pending_acks).insert(id, tx);
        rx
    }

    /// An event arrived from the client: run its handler, in order with other packets. Before
    /// the connection handler has started, the event waits for [`Socket::ready`].
    pub(crate) fn dispatch(&self, event: Event) {
        {
            let mut early = lock(&self.inner.early_events);
            if let Some(queue) = early.as_mut() {
                if queue.len() < MAX_EARLY_EVENTS {
                    queue.push(event);
                } else {
                    drop(early);
                    self.inner.conn.close(CloseReason::ParseError);
                }
                return;
            }
        }
        self.run_event(event);
    }

    /// The connection handler has started: dispatch the events that waited for it, in order,
    /// then let later events through directly.
    pub(crate) fn ready(&self) {
        loop {
            let batch = {
                let mut early = lock(&self.inner.early_events);
                match early.as_mut() {
                    Some(queue) if !queue.is_empty() => std::mem::take(queue),
                    _ => {
                        *early = None;
                        return;
                    }
                }
            };
            for event in batch {
                self.run_event(event);
            }
        }
    }

    fn run_event(&self, event: Event) {
        self.inner.ns.notify(Activity::Received(self, &event));
        let handler = read(&self.inner.events).get(&event.name).cloned();
        if let Some(handler) = handler {
            run_inline(handler(self.clone(), event));
        }
    }

    /// An ACK arrived from the client. Acks for unknown ids are ignored, like the reference.
    pub(crate) fn resolve_ack(&self, id: u64, args: Vec<Value>) {
        if let Some(tx) = lock(&self.inner.pending_acks).remove(&id) {
            let _ = tx.send(Ok(args));
        }
    }

    /// Mark the socket connected; called once it is in its namespace.
    pub(crate) fn set_connected(&self) {
        self.inner.connected.store(true, Ordering::Release);
    }

    /// The session moves to another node: leave the namespace here without telling the
    /// cluster (the socket lives on there) and without running disconnect handlers; fail the
    /// acks it owes with [`AckError::Moved`]. Returns what the other node needs to resume it;
    /// `None` if it had already left.
    pub(crate) fn hand_over(&self) -> Option<MovedSocket> {
        if !self.inner.connected.swap(false, Ordering::AcqRel) {
            return None;
        }
        // Out of the namespace and its position taken in one step under the log's lock, which
        // every logged delivery holds: the position covers exactly what the socket was sent.
        let (rooms, seen) = match &self.inner.ns.recovery {
            Some(store) => {
                let store = lock(store);
                let rooms = self.inner.ns.remove(self.id());
                let seen = match lock(&self.inner.delivery).seen.take() {
                    Some(own) => store.position().merged(&own),
                    None => store.position(),
                };
                (rooms, Some(seen.to_string()))
            }
            None => (self.inner.ns.remove(self.id()), None),
        };
        let pending: Vec<_> = lock(&self.inner.pending_acks).drain().collect();
        for (_, tx) in pending {
            let _ = tx.send(Err(AckError::Moved));
        }
        lock(&self.inner.on_disconnect).clear();
        write(&self.inner.events).clear();
        Some(MovedSocket {
            nsp: self.ns().to_owned(),
            id: self.inner.id.clone(),
            pid: self.inner.pid.clone(),
            rooms: rooms.into_iter().filter(|r| r != &self.inner.id).collect(),
            data: self.data(),
            auth: self.inner.handshake.auth.clone(),
            seen,
            replayed: None,
        })
    }

    /// Leave the namespace: drop memberships, fail pending acks, keep the state for recovery
    /// when the reason allows it, then run the disconnect handlers. Runs at most once.
    pub(crate) fn finish(&self, reason: DisconnectReason) {
        if !self.inner.connected.swap(false, Ordering::AcqRel) {
            return;
        }
        let rooms = self.inner.ns.remove(self.id());
        self.inner.ns.notify(Activity::Disconnected {
            nsp: self.ns(),
            id: self.id(),
            reason: reason.as_str(),
        });
        let saved = reason.is_recoverable() && self.inner.pid.is_some();
        self.report(|session, nsp| SocketChange::Left {
            session,
            nsp,
            saved,
        });
        let pending: Vec<_> = lock(&self.inner.pending_acks).drain().collect();
        for (_, tx) in pending {
            let _ = tx.send(Err(AckError::Disconnected));
        }
        // In a cluster the replicated record keeps the state (see `Left::saved`), so that any
        // node can hand it back, even after this one is gone.
        if saved
            && self.inner.ns.adapter().is_none()
            && let Some(pid) = &self.inner.pid
        {
            let saved = SavedSession {
                sid: self.inner.id.clone(),
                pid: pid.clone(),
                rooms: rooms.into_iter().filter(|r| r != &self.inner.id).collect(),
                data: self.data(),
            };
            with_recovery(&self.inner.ns, |store| store.persist(saved));
        }
        // Taken out, not cloned: handlers that captured this socket would otherwise keep it,
        // and its connection, alive in a reference cycle.
        let handlers = std::mem::take(&mut *lock(&self.inner.on_disconnect));
        write(&self.inner.events).clear();
        for handler in handlers {
            run_inline(handler(self.clone(), reason));
        }
    }
}

/// Queue an encoded packet: the text part, then its binary attachments, contiguously.
pub(crate) fn send_encoded(
    conn: &Connection,
    parser: Parser,
    encoded: sio::Encoded,
) -> Result<(), EmitError> {
    // Packets are built, logged for recovery and carried between nodes in the default form;
    // a msgpack connection gets them written its way at the last step.
    if parser == Parser::Msgpack {
        let packet = match sio::decode(&encoded) {
            Ok(packet) => packet,
            Err(error) => {
                tracing::warn!(%error, "a packet of this server does not decode; not sent");
                return Ok(());
            }
        };
        let bytes = Bytes::from(msgpack::encode(&packet));
        return conn
            .send(Message::Binary(bytes))
            .map_err(|_| EmitError::Disconnected);
    }
    let result = if encoded.attachments.is_empty() {
        conn.send(Message::Text(encoded.text))
    } else {
        let mut msgs = Vec::with_capacity(1 + encoded.attachments.len());
        msgs.push(Message::Text(encoded.text));
        msgs.extend(encoded.attachments.into_iter().map(Message::Binary));
        conn.send_all(msgs)
    };
    result.map_err(|_| EmitError::Disconnected)
}

impl fmt::Debug for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Socket")
            .field("id", &self.inner.id)
            .field("ns", &self.inner.ns.name())
            .field("connected", &self.connected())
            .finish()
    }
}
