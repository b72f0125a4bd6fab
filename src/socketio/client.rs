//! One Engine.IO session seen by Socket.IO: decodes its packets and routes them to the sockets
//! it holds, one per connected namespace.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use rand::RngCore;
use tokio::task::AbortHandle;

use super::ack::Ack;
use super::activity::Activity;
use super::args::Event;
use super::broadcast::BroadcastOperator;
use super::config::{Parser, SocketIoConfig};
use super::error::DisconnectReason;
use super::handler::run_inline;
use super::moving::{self, MovedSocket};
use super::namespace::{Joining, NamespaceInner, with_recovery};
use super::recovery::{Position, RecoveryStore, SavedSession};
use super::remote::SocketChange;
use super::socket::{Handshake, Socket, SocketParts, send_encoded};
use super::{SocketIo, lock};
use crate::engine::{CloseReason, Connection, Message, SessionHandler};
use crate::protocol::msgpack;
use crate::protocol::sio::{self, Decoder, Packet, PacketType};
use crate::protocol::value::Value;

pub(crate) struct Client {
    /// This client itself, for the tasks it starts (the engine holds the strong reference).
    me: std::sync::Weak<Client>,
    io: SocketIo,
    conn: Connection,
    state: Mutex<State>,
    /// Closes the session if no namespace is joined in time; aborted on the first join.
    connect_timer: Mutex<Option<AbortHandle>>,
    /// When the received offsets of this session's sockets were last reported to the cluster.
    checkpointed: Mutex<Option<Instant>>,
}

/// Received offsets of one session are reported to the cluster at most this often.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

struct State {
    decoder: Decoder,
    sockets: HashMap<String, Socket>,
    /// Namespaces whose CONNECT is being processed (middleware may be slow).
    connecting: HashSet<String>,
    closed: bool,
}

/// A 20-character random id (120 bits), URL-safe, like the reference's ids.
pub(crate) fn random_id() -> String {
    let mut bytes = [0u8; 15];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl Client {
    pub(crate) fn start(io: SocketIo, conn: Connection) -> Arc<Self> {
        let client = Arc::new_cyclic(|me| Client {
            me: me.clone(),
            state: Mutex::new(State {
                decoder: Decoder::new(io.config().max_attachments),
                sockets: HashMap::new(),
                connecting: HashSet::new(),
                closed: false,
            }),
            io,
            conn,
            connect_timer: Mutex::new(None),
            checkpointed: Mutex::new(None),
        });
        let weak = Arc::downgrade(&client);
        let timeout = client.config().connect_timeout;
        let timer = tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            if let Some(client) = weak.upgrade() {
                let idle = lock(&client.state).sockets.is_empty();
                if idle {
                    client.conn.close(CloseReason::ServerClose);
                }
            }
        });
        *lock(&client.connect_timer) = Some(timer.abort_handle());
        client
    }

    pub(crate) fn config(&self) -> &SocketIoConfig {
        self.io.config()
    }

    /// How this server writes its packets.
    fn parser(&self) -> Parser {
        self.config().parser
    }

    /// Drop the socket of `nsp` from this client (a server-side namespace disconnect).
    pub(crate) fn forget(&self, nsp: &str) {
        lock(&self.state).sockets.remove(nsp);
    }

    fn dispatch(self: &Arc<Self>, packet: Packet) {
        match packet.kind {
            PacketType::Connect => self.on_connect_packet(packet),
            PacketType::Disconnect => {
                let socket = lock(&self.state).sockets.remove(&packet.nsp);
                match socket {
                    Some(socket) => socket.finish(DisconnectReason::ClientNamespaceDisconnect),
                    None => self.violation(),
                }
            }
            PacketType::Event | PacketType::BinaryEvent => {
                let Some(socket) = self.socket(&packet.nsp) else {
                    return self.violation();
                };
                let ack = packet
                    .id
                    .map(|id| Ack::new(self.conn.clone(), self.parser(), packet.nsp.clone(), id));
                let name = event_name(&packet);
                let args = packet.into_args();
                socket.dispatch(Event { name, args, ack });
            }
            PacketType::Ack | PacketType::BinaryAck => {
                let Some(socket) = self.socket(&packet.nsp) else {
                    return self.violation();
                };
                if let Some(id) = packet.id {
                    socket.resolve_ack(id, packet.into_args());
                }
            }
            // The decoder refuses CONNECT_ERROR from a client; treat it as the violation it is.
            PacketType::ConnectError => self.violation(),
        }
    }

    fn socket(&self, nsp: &str) -> Option<Socket> {
        lock(&self.state).sockets.get(nsp).cloned()
    }

    /// A packet that is valid on its own but not here (an event for a namespace not joined, a
    /// second CONNECT): the reference closes the connection.
    fn violation(&self) {
        self.conn.close(CloseReason::ParseError);
    }

    fn on_connect_packet(self: &Arc<Self>, packet: Packet) {
        let nsp = packet.nsp;
        {
            let mut st = lock(&self.state);
            if st.closed {
                return;
            }
            if st.sockets.contains_key(&nsp) || st.connecting.contains(&nsp) {
                drop(st);
                return self.violation();
            }
            if st.sockets.len() + st.connecting.len() >= self.config().max_namespaces {
                drop(st);
                self.io
                    .inner
                    .limited
                    .namespaces
                    .fetch_add(1, Ordering::Relaxed);
                let refusal = Packet::connect_error(&nsp, "Too many namespaces", None);
                let _ = send_encoded(&self.conn, self.parser(), sio::encode(&refusal));
                return;
            }
            st.connecting.insert(nsp.clone());
        }
        let Some(joining) = self.io.resolve(&nsp) else {
            lock(&self.state).connecting.remove(&nsp);
            let refusal = Packet::connect_error(&nsp, "Invalid namespace", None);
            let _ = send_encoded(&self.conn, self.parser(), sio::encode(&refusal));
            return;
        };
        let auth = match packet.data {
            Some(auth @ Value::Object(_)) => auth,
            _ => Value::Object(Default::default()),
        };
        run_inline(self.clone().connect(joining, auth));
    }

    /// Join `ns`: recover or create the socket, run middleware, register it, answer CONNECT,
    /// replay missed events, then run the connection handler.
    async fn connect(self: Arc<Self>, joining: Joining, mut auth: Value) {
        let ns = joining.namespace().clone();
        let nsp = ns.name().to_owned();
        let restored = self.try_restore(&ns, &mut auth).await;
        let recovered = restored.is_some();
        let (id, pid, rooms, data, restore) = match restored {
            Some((session, restore)) => (
                session.sid,
                Some(session.pid),
                session.rooms,
                session.data,
                Some(restore),
            ),
            None => (
                random_id(),
                ns.recovery.is_some().then(RecoveryStore::new_pid),
                Vec::new(),
                Value::Null,
                None,
            ),
        };
        let socket = Socket::new(SocketParts {
            id,
            pid,
            ns: ns.clone(),
            conn: self.conn.clone(),
            handshake: Handshake {
                auth,
                request: self.conn.handshake().clone(),
                time: SystemTime::now(),
            },
            recovered,
            client: Arc::downgrade(&self),
            data,
        });

        let skip = recovered
            && self
                .config()
                .recovery
                .as_ref()
                .is_some_and(|r| r.skip_middlewares);
        if !skip {
            for middleware in ns.middlewares() {
                if let Err(refusal) = middleware(socket.clone()).await {
                    lock(&self.state).connecting.remove(&nsp);
                    let packet = Packet::connect_error(&nsp, &refusal.message, refusal.data);
                    let _ = send_encoded(&self.conn, self.parser(), sio::encode(&packet));
                    return;
                }
            }
        }
        if !self.join(&ns, &socket, rooms, restore, true) {
            lock(&self.state).connecting.remove(&nsp);
            return;
        }
        drop(joining);
        self.io.inner.notify(Activity::Connected(&socket));
        self.run_handlers(&ns, &socket);
        // Only now may the session move: the socket it would take along is complete.
        lock(&self.state).connecting.remove(&nsp);
    }

    /// A socket that just joined: the session stops waiting for a first namespace, the
    /// connection handler runs, then the events that arrived since the join and waited for the
    /// handler to register its event handlers.
    fn run_handlers(&self, ns: &NamespaceInner, socket: &Socket) {
        if let Some(timer) = lock(&self.connect_timer).take() {
            timer.abort();
        }
        if let Some(handler) = ns.connect_handler() {
            run_inline(handler(socket.clone()));
        }
        socket.ready();
    }

    /// Make `socket` a member of `ns` and answer the CONNECT (when `answer`; a socket that
    /// moved here was answered on its former node), as one step: under the namespace's
    /// recovery lock, so that a logged broadcast is either in the replay or sent live, never
    /// lost or sent twice, and under the client lock, so that `on_close` either sees the
    /// socket connected (and finishes it) or ran before (and the socket never joins). A
    /// recovered or moved socket is replayed what it missed. Returns false when the
    /// connection is gone.
    fn join(
        &self,
        ns: &NamespaceInner,
        socket: &Socket,
        rooms: Vec<String>,
        restore: Option<Restore>,
        answer: bool,
    ) -> bool {
        let nsp = ns.name();
        let store = ns.recovery.as_ref().map(lock);
        let mut st = lock(&self.state);
        if st.closed {
            return false;
        }
        if answer {
            let mut reply = indexmap::IndexMap::new();
            reply.insert("sid".to_owned(), Value::from(socket.id()));
            if let Some(pid) = socket.pid() {
                reply.insert("pid".to_owned(), Value::from(pid));
            }
            let reply = Packet::connect(nsp, Some(Value::Object(reply)));
            if send_encoded(&self.conn, self.parser(), sio::encode(&reply)).is_err() {
                return false;
            }
        }
        let missed = match (&store, restore) {
            (Some(store), Some(restore)) => {
                let mut all_rooms: BTreeSet<String> = rooms.iter().cloned().collect();
                all_rooms.insert(socket.id().to_owned());
                // What another node replayed covers its log as of its answer; this node's
                // log adds what came after.
                let (mut missed, seen) = match restore.peer {
                    Some((packets, position)) => (packets, restore.seen.merged(&position)),
                    None => (Vec::new(), restore.seen),
                };
                missed.extend(store.missed_since(&seen, &all_rooms));
                if !store.position().dominates(&seen) {
                    socket.set_seen(seen);
                }
                missed
            }
            _ => Vec::new(),
        };
        for packet in missed {
            let _ = send_encoded(&self.conn, self.parser(), packet);
        }
        st.sockets.insert(nsp.to_owned(), socket.clone());
        ns.insert(socket, rooms.iter().cloned());
        socket.set_connected();
        socket.report(|session, nsp| SocketChange::Joined {
            session,
            nsp,
            socket_id: socket.id().to_owned(),
            pid: socket.pid().map(str::to_owned),
            rooms,
            data: socket.data(),
        });
        true
    }

    /// A socket of a session that moved here from another node: back in its namespace and
    /// rooms with its id, pid and data, seen by the application as recovered (the connection
    /// handler runs again, middleware does not: the client did not connect again). A
    /// namespace this node does not serve gets a DISCONNECT.
    pub(crate) fn resume(self: &Arc<Self>, moved: MovedSocket) {
        let Some(joining) = self.io.resolve(&moved.nsp) else {
            let _ = send_encoded(
                &self.conn,
                self.parser(),
                sio::encode(&Packet::disconnect(&moved.nsp)),
            );
            return;
        };
        let ns = joining.namespace().clone();
        let socket = Socket::new(SocketParts {
            id: moved.id,
            pid: moved.pid,
            ns: ns.clone(),
            conn: self.conn.clone(),
            handshake: Handshake {
                auth: moved.auth,
                request: self.conn.handshake().clone(),
                time: SystemTime::now(),
            },
            recovered: true,
            client: Arc::downgrade(self),
            data: moved.data,
        });
        let peer = moved
            .replayed
            .and_then(|(missed, position)| Some((missed, Position::parse(&position)?)));
        let restore = moved
            .seen
            .as_deref()
            .and_then(Position::parse)
            .map(|seen| Restore { seen, peer });
        if !self.join(&ns, &socket, moved.rooms, restore, false) {
            return;
        }
        drop(joining);
        self.io.inner.notify(Activity::Connected(&socket));
        // An observer that knew the socket on its former node (the Admin UI keeps the first
        // it heard of) learns its new transport.
        self.io.inner.notify(Activity::Updated(&socket));
        self.run_handlers(&ns, &socket);
    }

    /// The session leaves this node (closed or moved): no more joins, no connect timer; its
    /// sockets, taken out, for the caller to finish or hand over.
    fn end(&self) -> Vec<Socket> {
        let sockets = {
            let mut st = lock(&self.state);
            st.closed = true;
            st.connecting.clear();
            st.sockets.drain().map(|(_, s)| s).collect()
        };
        if let Some(timer) = lock(&self.connect_timer).take() {
            timer.abort();
        }
        sockets
    }

    /// Recovery: if the CONNECT carries a `pid` whose state is still saved (on this node, or
    /// in a cluster's record) and an `offset` from which this node can replay everything the
    /// client missed, take that state back. Both fields are removed from the auth the
    /// application sees.
    async fn try_restore(
        &self,
        ns: &Arc<NamespaceInner>,
        auth: &mut Value,
    ) -> Option<(SavedSession, Restore)> {
        let window = self.config().recovery.as_ref()?.max_disconnection_duration;
        let Value::Object(map) = auth else {
            return None;
        };
        let pid = map.shift_remove("pid");
        let offset = map.shift_remove("offset");
        let (Some(Value::String(pid)), Some(Value::String(offset))) = (pid, offset) else {
            return None;
        };
        let seen = Position::parse(&offset)?;
        let Some(adapter) = ns.adapter() else {
            let session = with_recovery(ns, |store| store.restore(&pid, &seen)).flatten()?;
            return Some((session, Restore { seen, peer: None }));
        };
        let Some(recovered) = adapter.recover(ns.name(), &pid, window).await else {
            tracing::debug!(pid, "no saved state to recover");
            return None;
        };
        if recovered.was_connected {
            BroadcastOperator::new(ns.clone())
                .to(recovered.sid.clone())
                .disconnect_sockets(false);
        }
        let peer = if with_recovery(ns, |store| store.can_replay(&seen))? {
            None
        } else {
            // This node started too late to have all the client missed: a node whose log
            // goes back far enough replays it, or the client gets a fresh socket.
            let mut rooms = recovered.rooms.clone();
            rooms.push(recovered.sid.clone());
            let Some(replayed) = adapter.replay(ns.name(), &offset, rooms).await else {
                tracing::debug!(pid, offset, "no node can replay what the client missed");
                return None;
            };
            Some((replayed.missed, Position::parse(&replayed.position)?))
        };
        let session = SavedSession {
            sid: recovered.sid,
            pid,
            rooms: recovered.rooms,
            data: recovered.data,
        };
        Some((session, Restore { seen, peer }))
    }
}

/// What a recovered or moved socket is replayed when it joins.
struct Restore {
    /// The client's recovery offset: what it was sent.
    seen: Position,
    /// What another node's log replayed (this one started too late), and that log's position
    /// when it answered.
    peer: Option<(Vec<sio::Encoded>, Position)>,
}

/// The name of an event packet; a numeric name (the protocol allows it) as its decimal text.
fn event_name(packet: &Packet) -> String {
    match packet.event_name() {
        Some(name) => name.to_owned(),
        None => packet
            .data
            .as_ref()
            .and_then(Value::as_array)
            .and_then(|items| items.first())
            .map(Value::to_string)
            .unwrap_or_default(),
    }
}

impl Client {
    /// The Engine.IO session id.
    pub(crate) fn sid(&self) -> &str {
        self.conn.sid()
    }
}

impl SessionHandler for Client {
    /// In a cluster, reports (at most every [`CHECKPOINT_EVERY`]) what this polling client has
    /// received of the logged broadcasts: a node that takes the session over when this one is
    /// lost replays from there.
    fn on_poll(&self) {
        let Some(adapter) = self.io.adapter() else {
            return;
        };
        let report = {
            let mut last = lock(&self.checkpointed);
            let now = Instant::now();
            let due = last.is_none_or(|at| now.duration_since(at) >= CHECKPOINT_EVERY);
            if due {
                *last = Some(now);
            }
            due
        };
        let received: Vec<(String, String)> = lock(&self.state)
            .sockets
            .iter()
            .filter_map(|(nsp, socket)| Some((nsp.clone(), socket.polled(report)?.to_string())))
            .collect();
        for (nsp, offset) in received {
            adapter.checkpoint(self.sid(), &nsp, offset);
        }
    }

    /// The Admin UI shows the socket's transport: its observers hear of the upgrade.
    fn on_upgrade(&self) {
        if !self.io.inner.observed() {
            return;
        }
        let sockets: Vec<Socket> = lock(&self.state).sockets.values().cloned().collect();
        for socket in &sockets {
            self.io.inner.notify(Activity::Updated(socket));
        }
    }

    fn on_message(&self, msg: Message) {
        let decoded = match (self.parser(), msg) {
            (Parser::Default, Message::Text(text)) => lock(&self.state)
                .decoder
                .feed_text(&text)
                .map_err(|e| e.to_string()),
            (Parser::Default, Message::Binary(bytes)) => lock(&self.state)
                .decoder
                .feed_binary(bytes)
                .map_err(|e| e.to_string()),
            (Parser::Msgpack, Message::Binary(bytes)) => {
                msgpack::decode(&bytes).map(Some).map_err(|e| e.to_string())
            }
            (Parser::Msgpack, Message::Text(_)) => {
                Err("a text message to a msgpack server (a client with the default parser?)".into())
            }
        };
        match decoded {
            Ok(Some(packet)) => {
                if let Some(me) = self.me.upgrade() {
                    me.dispatch(packet);
                }
            }
            Ok(None) => {}
            Err(error) => {
                tracing::debug!(sid = self.conn.sid(), %error, "invalid Socket.IO packet");
                self.violation();
            }
        }
    }

    /// Not while a namespace connection runs (its middleware, a recovery look-up): the
    /// client waits for its answer, which only this node can give.
    fn movable(&self) -> bool {
        lock(&self.state).connecting.is_empty()
    }

    fn on_move(&self) -> Option<Vec<u8>> {
        let sockets = self.end();
        let moved: Vec<MovedSocket> = sockets.iter().filter_map(Socket::hand_over).collect();
        Some(moving::encode(&moved))
    }

    fn on_close(&self, reason: CloseReason) {
        let sockets = self.end();
        let reason = DisconnectReason::from(&reason);
        for socket in sockets {
            socket.finish(reason);
        }
    }
}
