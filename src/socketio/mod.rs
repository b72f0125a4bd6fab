//! Socket.IO v5 on top of the engine: namespaces, sockets, rooms, events, acks, middleware,
//! connection state recovery, and the public handler API.
//!
//! A [`SocketIo`] value is an [`engine::Application`](crate::engine::Application): each Engine.IO
//! session gets a client (`socketio::client`) that decodes Socket.IO packets and routes them to the sockets it
//! holds, one per connected namespace.
//!
//! ```no_run
//! use nonstick::socketio::{SocketIo, SocketIoConfig};
//!
//! let io = SocketIo::new(SocketIoConfig::default());
//! io.of("/").on_connect(|socket| async move {
//!     socket.on("echo", |socket, event| async move {
//!         match event.ack {
//!             Some(ack) => ack.send(event.args),
//!             None => { let _ = socket.emit("echo", event.args); }
//!         }
//!     });
//! });
//! ```

mod ack;
mod activity;
pub mod admin_ui;
mod args;
mod broadcast;
mod client;
mod config;
mod error;
mod handler;
mod moving;
mod namespace;
mod recovery;
mod remote;
mod socket;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

pub use ack::{Ack, AckFuture, AckResponse, BroadcastAckFuture};
pub use activity::{Activity, ActivityObserver};
pub use args::{Args, Event};
pub use broadcast::BroadcastOperator;
pub use config::{Parser, RecoveryConfig, SocketIoConfig};
pub use error::{AckError, ConnectError, DisconnectReason, EmitError};
pub use namespace::Namespace;
pub use remote::{
    Adapter, AdoptedSocket, CLIENT_ID_CHARS, Recovered, RemoteAckRequest, RemoteAction,
    RemoteBroadcast, RemoteSocket, Replayed, Selection, ServerEvent, SocketChange, SocketDetails,
};
pub use socket::{Handshake, Socket};

pub use crate::protocol::value::Value;

use crate::engine::{Application, Connection, HandshakeInfo, SessionHandler};
use broadcast::Outgoing;
use namespace::{Joining, NamespaceInner, with_recovery};
use recovery::{Position, Stamp, Target};

/// A Socket.IO server: the set of namespaces and their handlers.
///
/// Cheap to clone; every clone refers to the same server. Hand it to the engine as its
/// [`Application`] to serve it.
#[derive(Clone)]
pub struct SocketIo {
    inner: Arc<ServerInner>,
}

/// A predicate that accepts namespace names for a dynamic namespace group.
type Matcher = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// A predicate on Engine.IO handshakes.
type RequestFilter = Arc<dyn Fn(&HandshakeInfo) -> bool + Send + Sync>;

pub(crate) struct ServerInner {
    config: SocketIoConfig,
    /// Every namespace that exists now: the fixed ones, and the children of dynamic groups
    /// that currently have sockets.
    namespaces: RwLock<HashMap<String, Arc<NamespaceInner>>>,
    /// Dynamic groups in registration order; the first matcher that accepts a name wins.
    dynamic: RwLock<Vec<(Matcher, Arc<NamespaceInner>)>>,
    allow_request: RwLock<Option<RequestFilter>>,
    /// Carries operations on sockets to the other nodes of a cluster; `None` on a single node.
    adapter: RwLock<Option<Arc<dyn Adapter>>>,
    /// What the per-connection and per-socket limits refused.
    pub(crate) limited: Limited,
    /// Told of every change to the sockets ([`SocketIo::on_activity`]).
    observers: RwLock<Vec<ActivityObserver>>,
    /// Whether there are observers: looked at on every event, where the lock would cost.
    observed: AtomicBool,
}

impl ServerInner {
    /// Whether anything watches this server's activity.
    pub(crate) fn observed(&self) -> bool {
        self.observed.load(Ordering::Relaxed)
    }

    /// Tell the observers of `activity`.
    pub(crate) fn notify(&self, activity: Activity<'_>) {
        if !self.observed() {
            return;
        }
        let observers = read(&self.observers).clone();
        for observer in observers {
            observer(activity);
        }
    }
}

/// What the limits of a server refused (see [`SocketIoConfig::max_namespaces`] and
/// [`SocketIoConfig::max_rooms`]).
#[derive(Debug, Default)]
pub(crate) struct Limited {
    pub(crate) namespaces: AtomicU64,
    pub(crate) rooms: AtomicU64,
}

/// How often a server's limits refused something.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitedCounts {
    /// CONNECTs past [`SocketIoConfig::max_namespaces`].
    pub namespaces: u64,
    /// Room joins past [`SocketIoConfig::max_rooms`].
    pub rooms: u64,
}

impl SocketIo {
    /// A server with the given settings and no namespaces.
    pub fn new(config: SocketIoConfig) -> Self {
        SocketIo {
            inner: Arc::new(ServerInner {
                config,
                namespaces: RwLock::new(HashMap::new()),
                dynamic: RwLock::new(Vec::new()),
                allow_request: RwLock::new(None),
                adapter: RwLock::new(None),
                limited: Limited::default(),
                observers: RwLock::new(Vec::new()),
                observed: AtomicBool::new(false),
            }),
        }
    }

    /// The server's settings.
    pub fn config(&self) -> &SocketIoConfig {
        &self.inner.config
    }

    /// Have `observer` told of every [`Activity`] of this node's sockets: joining and leaving
    /// namespaces and rooms, updates, and the events they receive and are sent.
    pub fn on_activity(&self, observer: impl Fn(Activity<'_>) + Send + Sync + 'static) {
        write(&self.inner.observers).push(Arc::new(observer));
        self.inner.observed.store(true, Ordering::Relaxed);
    }

    /// How often this server's limits refused something.
    pub fn limited(&self) -> LimitedCounts {
        LimitedCounts {
            namespaces: self.inner.limited.namespaces.load(Ordering::Relaxed),
            rooms: self.inner.limited.rooms.load(Ordering::Relaxed),
        }
    }

    /// The namespace `name`, created if it does not exist yet (like `io.of(name)` in Node).
    ///
    /// A name without a leading `/` gets one.
    pub fn of(&self, name: &str) -> Namespace {
        let name = normalize(name);
        let mut map = write(&self.inner.namespaces);
        let inner = map
            .entry(name.clone())
            .or_insert_with(|| {
                NamespaceInner::new(name, &self.inner.config, false, Arc::downgrade(&self.inner))
            })
            .clone();
        Namespace::from_inner(inner)
    }

    /// A dynamic namespace group: every name the `matcher` accepts becomes a namespace with the
    /// handlers and middleware registered on the returned group, created on the first CONNECT
    /// and removed again when its last socket leaves.
    ///
    /// Emitting on the group reaches the sockets of every child namespace.
    pub fn dynamic<F>(&self, matcher: F) -> Namespace
    where
        F: Fn(&str) -> bool + Send + Sync + 'static,
    {
        let group = NamespaceInner::new(
            String::new(),
            &self.inner.config,
            true,
            Arc::downgrade(&self.inner),
        );
        write(&self.inner.dynamic).push((Arc::new(matcher), group.clone()));
        Namespace::from_inner(group)
    }

    /// Decide which Engine.IO handshakes may open a session (the reference's `allowRequest`),
    /// e.g. by `Origin` header or remote address. A refused handshake gets HTTP 403 with
    /// Engine.IO error code 4. Replaces an earlier filter.
    pub fn allow_request<F>(&self, filter: F)
    where
        F: Fn(&HandshakeInfo) -> bool + Send + Sync + 'static,
    {
        *write(&self.inner.allow_request) = Some(Arc::new(filter));
    }

    /// Make broadcasts and the other operations on selections of sockets (except `local()`
    /// ones) also reach the sockets of other nodes, through `adapter`. Installed by a cluster
    /// node; the other nodes answer with the `*_local` methods below.
    pub fn set_adapter(&self, adapter: Arc<dyn Adapter>) {
        *write(&self.inner.adapter) = Some(adapter);
    }

    pub(crate) fn adapter(&self) -> Option<Arc<dyn Adapter>> {
        read(&self.inner.adapter).clone()
    }

    /// Deliver a broadcast made on another node to the matching sockets of this one (and keep
    /// it for connection state recovery when it carries an offset); returns how many sockets it
    /// was sent to.
    pub fn deliver_local(&self, broadcast: &RemoteBroadcast) -> usize {
        let Some(ns) = self.existing(&broadcast.selection.nsp) else {
            return 0;
        };
        let selection = &broadcast.selection;
        let stamp = broadcast.stamp.as_deref().and_then(Stamp::parse);
        match (stamp, &ns.recovery, broadcast.volatile) {
            (Some(stamp), Some(store), false) => {
                let target = Target::new(&selection.rooms, &selection.except);
                let mut store = lock(store);
                let logged = store.record(stamp, target, broadcast.packet.clone());
                broadcast::deliver(&ns, selection, false, Outgoing::Logged(logged))
            }
            _ => {
                let packet = Outgoing::Plain(&broadcast.packet);
                broadcast::deliver(&ns, selection, broadcast.volatile, packet)
            }
        }
    }

    /// Apply another node's action to the selected sockets of this one; returns how many.
    pub fn act_local(&self, selection: &Selection, action: &RemoteAction) -> usize {
        self.existing(&selection.nsp).map_or(0, |ns| {
            broadcast::apply(
                &BroadcastOperator::for_peer(ns, selection).sockets(),
                action,
            )
        })
    }

    /// Describe the selected sockets of this node, for another node's listing.
    pub fn fetch_local(&self, selection: &Selection) -> Vec<SocketDetails> {
        self.existing(&selection.nsp).map_or_else(Vec::new, |ns| {
            BroadcastOperator::for_peer(ns, selection)
                .sockets()
                .iter()
                .map(Socket::details)
                .collect()
        })
    }

    /// Emit another node's broadcast with acks to the selected sockets of this node.
    pub fn ack_local(&self, request: RemoteAckRequest) -> BroadcastAckFuture {
        match self.existing(&request.selection.nsp) {
            Some(ns) => {
                let mut op =
                    BroadcastOperator::for_peer(ns, &request.selection).timeout(request.timeout);
                if request.volatile {
                    op = op.volatile();
                }
                op.emit_with_ack(&request.event, request.args)
            }
            None => BroadcastAckFuture::new(request.timeout),
        }
    }

    /// The logged packets of `nsp` a client with recovery offset `seen` missed, for a socket
    /// in `rooms` (its own id included), with this node's log position; `None` when this
    /// node's log does not cover them.
    pub fn replay_local(&self, nsp: &str, seen: &str, rooms: &[String]) -> Option<Replayed> {
        let ns = self.existing(nsp)?;
        let seen = Position::parse(seen)?;
        let rooms = rooms.iter().cloned().collect();
        with_recovery(&ns, |store| match store.gap(&seen) {
            Some(gap) => {
                tracing::debug!(nsp, %seen, gap, "cannot replay for another node");
                None
            }
            None => Some(Replayed {
                missed: store.missed_since(&seen, &rooms),
                position: store.position().to_string(),
            }),
        })
        .flatten()
    }

    /// Run this node's handler of another server's event; returns where its acknowledgement
    /// will come from when `ack` is asked for and a handler exists.
    pub fn server_event_local(
        &self,
        event: ServerEvent,
        ack: bool,
    ) -> Option<tokio::sync::oneshot::Receiver<Vec<Value>>> {
        let handler = self
            .existing(&event.nsp)?
            .server_event_handler(&event.event)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        handler::run_inline(handler(Event {
            name: event.event,
            args: event.args,
            ack: ack.then(|| Ack::to_server(tx)),
        }));
        ack.then_some(rx)
    }

    /// The namespace `name` if it exists now (never creates one).
    fn existing(&self, name: &str) -> Option<Arc<NamespaceInner>> {
        read(&self.inner.namespaces).get(name).cloned()
    }

    /// The names of the namespaces that exist now (fixed ones, and dynamic children that have
    /// sockets), sorted.
    pub fn namespaces(&self) -> Vec<String> {
        let mut names: Vec<String> = read(&self.inner.namespaces).keys().cloned().collect();
        names.sort();
        names
    }

    /// Broadcast to the sockets of the main namespace `/` in `room`.
    pub fn to(&self, room: impl Into<String>) -> BroadcastOperator {
        self.of("/").to(room)
    }

    /// Emit `event` to every socket of the main namespace `/`.
    pub fn emit(&self, event: &str, args: impl Into<Args>) -> Result<(), EmitError> {
        self.of("/").emit(event, args)
    }

    /// Find the namespace a CONNECT for `name` should join: a fixed one, or a child of the
    /// first dynamic group that accepts the name (created on demand). The CONNECT counts as
    /// under way until the returned guard is dropped.
    pub(crate) fn resolve(&self, name: &str) -> Option<Joining> {
        if let Some(ns) = read(&self.inner.namespaces).get(name) {
            return Some(Joining::new(ns.clone()));
        }
        // The matchers are user code: call them without holding our lock.
        let groups = read(&self.inner.dynamic).clone();
        let group = groups
            .into_iter()
            .find(|(matcher, _)| matcher(name))
            .map(|(_, group)| group)?;
        let mut map = write(&self.inner.namespaces);
        let child = map
            .entry(name.to_owned())
            .or_insert_with(|| group.child(name.to_owned(), &self.inner.config));
        Some(Joining::new(child.clone()))
    }
}

impl Application for SocketIo {
    fn allow_request(&self, request: &HandshakeInfo) -> bool {
        let filter = read(&self.inner.allow_request).clone();
        filter.is_none_or(|allowed| allowed(request))
    }

    fn on_open(&self, conn: Connection) -> Arc<dyn SessionHandler> {
        client::Client::start(self.clone(), conn)
    }

    /// Resumes the sockets the session had on its former node, each as a recovered socket
    /// (same id, rooms and data; the connection handler runs again). State that is not a
    /// Socket.IO session's leaves the session with no namespace, as if just opened.
    fn on_move_in(&self, conn: Connection, state: Option<Vec<u8>>) -> Arc<dyn SessionHandler> {
        let client = client::Client::start(self.clone(), conn);
        let max_attachments = self.config().max_attachments;
        let sockets = match state {
            Some(bytes) => moving::decode(&bytes, max_attachments).unwrap_or_default(),
            None => Vec::new(),
        };
        for socket in sockets {
            client.resume(socket);
        }
        client
    }

    /// Taken over from a node that was lost: the sockets the cluster recorded, each with
    /// what another node's log replays when this one started too late to.
    fn adoption(&self, sid: &str) -> futures::future::BoxFuture<'static, Option<Vec<u8>>> {
        let (io, sid) = (self.clone(), sid.to_owned());
        Box::pin(async move {
            let adapter = io.adapter()?;
            let mut sockets = Vec::new();
            for adopted in adapter.adopt(&sid).await {
                let mut socket = moving::MovedSocket::adopted(adopted);
                socket.replayed = io.replayed_for(&adapter, &socket).await;
                sockets.push(socket);
            }
            Some(moving::encode(&sockets))
        })
    }
}

impl SocketIo {
    /// What another node's log replays to `socket` when this node's log does not cover what
    /// its client missed.
    async fn replayed_for(
        &self,
        adapter: &Arc<dyn Adapter>,
        socket: &moving::MovedSocket,
    ) -> Option<(Vec<crate::protocol::sio::Encoded>, String)> {
        let ns = self.existing(&socket.nsp)?;
        let seen = socket.seen.as_deref()?;
        let position = Position::parse(seen)?;
        if with_recovery(&ns, |store| store.can_replay(&position))? {
            return None;
        }
        let mut rooms = socket.rooms.clone();
        rooms.push(socket.id.clone());
        let replayed = adapter.replay(&socket.nsp, seen, rooms).await?;
        Some((replayed.missed, replayed.position))
    }
}

fn normalize(name: &str) -> String {
    if name.starts_with('/') {
        name.to_owned()
    } else {
        format!("/{name}")
    }
}

/// Read-lock a std lock, ignoring poisoning: the data behind these locks stays consistent
/// across a panicking user handler because handlers never run while a lock is held.
pub(crate) fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

/// Write-lock counterpart of [`read`].
pub(crate) fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

/// Lock a std mutex, ignoring poisoning (see [`read`]).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
