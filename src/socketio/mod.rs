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

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

pub use ack::{Ack, AckFuture, AckResponse, BroadcastAckFuture};
pub use args::{Args, Event};
pub use broadcast::BroadcastOperator;
pub use config::{RecoveryConfig, SocketIoConfig};
pub use error::{AckError, ConnectError, DisconnectReason, EmitError};
pub use namespace::Namespace;
pub use remote::{
    Adapter, Recovered, RemoteAckRequest, RemoteAction, RemoteBroadcast, RemoteSocket, Selection,
    ServerEvent, SocketChange, SocketDetails,
};
pub use socket::{Handshake, Socket};

pub use crate::protocol::value::Value;

use crate::engine::{Application, Connection, HandshakeInfo, SessionHandler};
use namespace::{Joining, NamespaceInner, with_recovery};
use recovery::Target;

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
            }),
        }
    }

    /// The server's settings.
    pub fn config(&self) -> &SocketIoConfig {
        &self.inner.config
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

    /// Deliver a broadcast made on another node to the matching sockets of this one (and keep
    /// it for connection state recovery when it carries an offset); returns how many sockets it
    /// was sent to.
    pub fn deliver_local(&self, broadcast: &RemoteBroadcast) -> usize {
        let Some(ns) = self.existing(&broadcast.selection.nsp) else {
            return 0;
        };
        if let (Some(offset), false) = (&broadcast.offset, broadcast.volatile) {
            let selection = &broadcast.selection;
            let target = Target::new(&selection.rooms, &selection.except);
            with_recovery(&ns, |store| {
                store.record(offset.clone(), target, broadcast.packet.clone())
            });
        }
        broadcast::deliver_encoded(&ns, broadcast)
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

    /// Hand over the saved state of a disconnected socket of this node to the node its client
    /// came back to, with the packets it missed since `offset`.
    pub fn recover_local(&self, nsp: &str, pid: &str, offset: &str) -> Option<Recovered> {
        let ns = self.existing(nsp)?;
        with_recovery(&ns, |store| {
            let session = store.restore(pid, offset)?;
            let mut rooms: BTreeSet<String> = session.rooms.iter().cloned().collect();
            rooms.insert(session.sid.clone());
            let missed = store.missed_since(offset, &rooms);
            Some(Recovered {
                sid: session.sid,
                rooms: session.rooms,
                data: session.data,
                missed,
            })
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
        let sockets = state.and_then(|bytes| moving::decode(&bytes, max_attachments));
        for socket in sockets.unwrap_or_default() {
            client.resume(socket);
        }
        client
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
