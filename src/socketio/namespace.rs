//! A namespace: its handlers, its sockets, and the room index over them.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use futures::future::BoxFuture;

use super::ack::BroadcastAckFuture;
use super::activity::Activity;
use super::args::{Args, Event};
use super::broadcast::BroadcastOperator;
use super::broadcast::check_event_name;
use super::config::{Parser, SocketIoConfig};
use super::error::AckError;
use super::error::{ConnectError, EmitError};
use super::handler::{ConnectHandler, Middleware, ServerEventHandler};
use super::recovery::RecoveryStore;
use super::remote::{RemoteSocket, ServerEvent};
use super::socket::Socket;
use super::{ServerInner, lock, read, write};
use crate::protocol::sio::Encoded;
use crate::protocol::value::Value;

/// A Socket.IO namespace (`/`, `/admin`, …), or a dynamic namespace group.
///
/// Cheap to clone. Obtained from [`SocketIo::of`](super::SocketIo::of) or
/// [`SocketIo::dynamic`](super::SocketIo::dynamic).
#[derive(Clone)]
pub struct Namespace {
    inner: Arc<NamespaceInner>,
}

/// Handlers are shared between a dynamic group and its children, so a handler registered on
/// the group after a child exists still applies to that child.
#[derive(Default)]
pub(crate) struct Handlers {
    pub(crate) middlewares: Vec<Middleware>,
    pub(crate) on_connect: Option<ConnectHandler>,
    /// Handlers of events from the other servers of a cluster, by event name.
    pub(crate) server_events: HashMap<String, ServerEventHandler>,
}

/// Sockets and rooms under one lock, so that the two indexes never disagree.
#[derive(Default)]
pub(crate) struct Members {
    pub(crate) sockets: HashMap<String, Socket>,
    /// room -> ids of the sockets in it
    pub(crate) rooms: HashMap<String, HashSet<String>>,
    /// socket id -> its rooms (its own id included)
    pub(crate) of_socket: HashMap<String, BTreeSet<String>>,
}

pub(crate) struct NamespaceInner {
    name: String,
    kind: Kind,
    handlers: Arc<RwLock<Handlers>>,
    pub(crate) members: RwLock<Members>,
    /// Ack ids for server-to-client acks. One counter per namespace, as the reference does, so a
    /// broadcast with acks can use the same id for every recipient.
    ack_ids: AtomicU64,
    /// Default wait for acks of emits from this namespace.
    pub(crate) ack_timeout: Duration,
    /// Most rooms a socket may be in, its own room aside.
    max_rooms: usize,
    /// How the server's packets are written.
    pub(crate) parser: Parser,
    pub(crate) recovery: Option<Mutex<RecoveryStore>>,
    /// The children of a dynamic group, for group-wide broadcasts.
    children: RwLock<Vec<Weak<NamespaceInner>>>,
    /// The server, for removing an empty dynamic child from the namespace table.
    server: Weak<ServerInner>,
    /// CONNECTs resolved to this namespace and not finished yet: an emptied dynamic child
    /// stays in the table while one is under way, so the socket does not join a namespace
    /// object the table no longer holds.
    joining: AtomicUsize,
}

/// A CONNECT under way for a namespace; see `NamespaceInner::joining`.
pub(crate) struct Joining(Arc<NamespaceInner>);

impl Joining {
    /// Count a CONNECT for `ns`. Called under the server's namespace table lock.
    pub(crate) fn new(ns: Arc<NamespaceInner>) -> Self {
        ns.joining.fetch_add(1, Ordering::AcqRel);
        Joining(ns)
    }

    pub(crate) fn namespace(&self) -> &Arc<NamespaceInner> {
        &self.0
    }
}

impl Drop for Joining {
    fn drop(&mut self) {
        self.0.joining.fetch_sub(1, Ordering::AcqRel);
        self.0.release_if_unused();
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Fixed,
    Group,
    Child,
}

impl NamespaceInner {
    fn build(
        name: String,
        kind: Kind,
        handlers: Arc<RwLock<Handlers>>,
        config: &SocketIoConfig,
        server: Weak<ServerInner>,
    ) -> Arc<Self> {
        Arc::new(NamespaceInner {
            name,
            kind,
            handlers,
            members: RwLock::new(Members::default()),
            ack_ids: AtomicU64::new(0),
            ack_timeout: config.ack_timeout,
            max_rooms: config.max_rooms,
            parser: config.parser,
            recovery: config
                .recovery
                .clone()
                .map(|c| Mutex::new(RecoveryStore::new(c))),
            children: RwLock::new(Vec::new()),
            server,
            joining: AtomicUsize::new(0),
        })
    }

    pub(crate) fn new(
        name: String,
        config: &SocketIoConfig,
        group: bool,
        server: Weak<ServerInner>,
    ) -> Arc<Self> {
        let kind = if group { Kind::Group } else { Kind::Fixed };
        Self::build(name, kind, Arc::default(), config, server)
    }

    /// A child namespace of this dynamic group, sharing its handlers.
    pub(crate) fn child(self: &Arc<Self>, name: String, config: &SocketIoConfig) -> Arc<Self> {
        let child = Self::build(
            name,
            Kind::Child,
            self.handlers.clone(),
            config,
            self.server.clone(),
        );
        let mut children = write(&self.children);
        children.retain(|c| c.strong_count() > 0);
        children.push(Arc::downgrade(&child));
        child
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn is_group(&self) -> bool {
        self.kind == Kind::Group
    }

    /// The live children of a group (empty for other namespaces).
    pub(crate) fn children(&self) -> Vec<Arc<NamespaceInner>> {
        read(&self.children)
            .iter()
            .filter_map(Weak::upgrade)
            .collect()
    }

    pub(crate) fn middlewares(&self) -> Vec<Middleware> {
        read(&self.handlers).middlewares.clone()
    }

    pub(crate) fn connect_handler(&self) -> Option<ConnectHandler> {
        read(&self.handlers).on_connect.clone()
    }

    pub(crate) fn server_event_handler(&self, event: &str) -> Option<ServerEventHandler> {
        read(&self.handlers).server_events.get(event).cloned()
    }

    /// The cluster adapter, if this server has one.
    pub(crate) fn adapter(&self) -> Option<Arc<dyn super::Adapter>> {
        let server = self.server.upgrade()?;
        read(&server.adapter).clone()
    }

    pub(crate) fn next_ack_id(&self) -> u64 {
        self.ack_ids.fetch_add(1, Ordering::Relaxed)
    }

    /// Add a connected socket, in its own room and in `rooms`.
    pub(crate) fn insert(&self, socket: &Socket, rooms: impl IntoIterator<Item = String>) {
        let mut m = write(&self.members);
        let id = socket.id().to_owned();
        m.sockets.insert(id.clone(), socket.clone());
        let mut own = BTreeSet::new();
        own.insert(id.clone());
        own.extend(rooms);
        for room in &own {
            m.rooms.entry(room.clone()).or_default().insert(id.clone());
        }
        m.of_socket.insert(id, own);
    }

    /// Remove a socket and its room memberships; returns the rooms it was in. An emptied
    /// dynamic child leaves the server's namespace table.
    pub(crate) fn remove(self: &Arc<Self>, id: &str) -> BTreeSet<String> {
        let rooms = {
            let mut m = write(&self.members);
            m.sockets.remove(id);
            let rooms = m.of_socket.remove(id).unwrap_or_default();
            for room in &rooms {
                leave_index(&mut m.rooms, room, id);
            }
            rooms
        };
        self.release_if_unused();
        rooms
    }

    /// Forget an emptied dynamic child, so that clients inventing namespace names cannot grow
    /// the namespace table without bound.
    pub(crate) fn release_if_unused(self: &Arc<Self>) {
        if self.kind == Kind::Child
            && self.is_unused()
            && let Some(server) = self.server.upgrade()
        {
            server.drop_namespace_if_empty(self);
        }
    }

    /// No sockets and no CONNECT under way.
    pub(crate) fn is_unused(&self) -> bool {
        self.joining.load(Ordering::Acquire) == 0 && read(&self.members).sockets.is_empty()
    }

    /// Add the socket `id` to `rooms`, as far as its room limit allows (the refused joins are
    /// counted); returns the rooms it was not in yet.
    pub(crate) fn join(&self, id: &str, rooms: &[String]) -> Vec<String> {
        let mut m = write(&self.members);
        let Some(set) = m.of_socket.get_mut(id) else {
            return Vec::new();
        };
        // The socket's own room (its id) does not count.
        let limit = self.max_rooms.saturating_add(usize::from(set.contains(id)));
        let mut refused = 0;
        let mut added = Vec::new();
        for room in rooms {
            if set.contains(room) {
                continue;
            }
            if set.len() >= limit && room != id {
                refused += 1;
                continue;
            }
            set.insert(room.clone());
            added.push(room.clone());
        }
        if refused > 0 {
            tracing::debug!(
                socket = id,
                refused,
                "rooms past the socket's limit not joined"
            );
            if let Some(server) = self.server.upgrade() {
                server.limited.rooms.fetch_add(refused, Ordering::Relaxed);
            }
        }
        for room in &added {
            m.rooms
                .entry(room.clone())
                .or_default()
                .insert(id.to_owned());
        }
        drop(m);
        for room in &added {
            self.notify(Activity::Joined {
                nsp: &self.name,
                room,
                id,
            });
        }
        added
    }

    /// Remove the socket `id` from `room`; returns whether it was in it.
    pub(crate) fn leave(&self, id: &str, room: &str) -> bool {
        let mut m = write(&self.members);
        let removed = m.of_socket.get_mut(id).is_some_and(|set| set.remove(room));
        if removed {
            leave_index(&mut m.rooms, room, id);
        }
        drop(m);
        if removed {
            self.notify(Activity::Left {
                nsp: &self.name,
                room,
                id,
            });
        }
        removed
    }

    /// Tell the server's activity observers of `activity`.
    pub(crate) fn notify(&self, activity: Activity<'_>) {
        if let Some(server) = self.server.upgrade() {
            server.notify(activity);
        }
    }

    /// Whether the server's activity is watched (see [`NamespaceInner::notify`]).
    pub(crate) fn observed(&self) -> bool {
        self.server
            .upgrade()
            .is_some_and(|server| server.observed())
    }

    /// Tell the server's activity observers that `packet` went to the sockets `ids`.
    pub(crate) fn sent(&self, ids: &[String], packet: &Encoded) {
        if !ids.is_empty() {
            self.notify(Activity::Sent {
                nsp: &self.name,
                ids,
                packet,
            });
        }
    }

    pub(crate) fn rooms_of(&self, id: &str) -> BTreeSet<String> {
        read(&self.members)
            .of_socket
            .get(id)
            .cloned()
            .unwrap_or_default()
    }
}

fn leave_index(rooms: &mut HashMap<String, HashSet<String>>, room: &str, id: &str) {
    if let Some(members) = rooms.get_mut(room) {
        members.remove(id);
        if members.is_empty() {
            rooms.remove(room);
        }
    }
}

impl Namespace {
    pub(crate) fn from_inner(inner: Arc<NamespaceInner>) -> Self {
        Namespace { inner }
    }

    /// The namespace name (empty for a dynamic group).
    pub fn name(&self) -> &str {
        self.inner.name()
    }

    /// Run `handler` for every socket that joins this namespace, after the middleware accepted
    /// it and the CONNECT reply went out. Replaces an earlier handler.
    pub fn on_connect<F, Fut>(&self, handler: F) -> &Self
    where
        F: Fn(Socket) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        write(&self.inner.handlers).on_connect = Some(Arc::new(move |s| Box::pin(handler(s))));
        self
    }

    /// Add a middleware. Middleware runs in registration order before a socket joins; the first
    /// error refuses the CONNECT with a CONNECT_ERROR carrying the error's message and data.
    /// The socket it receives is not connected yet: it can read the handshake and set data.
    pub fn middleware<F, Fut>(&self, middleware: F) -> &Self
    where
        F: Fn(Socket) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), ConnectError>> + Send + 'static,
    {
        write(&self.inner.handlers)
            .middlewares
            .push(Arc::new(move |s| Box::pin(middleware(s))));
        self
    }

    /// A broadcast to every socket of this namespace.
    pub fn broadcast(&self) -> BroadcastOperator {
        BroadcastOperator::new(self.inner.clone())
    }

    /// A broadcast to the sockets in `room`.
    pub fn to(&self, room: impl Into<String>) -> BroadcastOperator {
        self.broadcast().to(room)
    }

    /// A broadcast to every socket except those in `room`.
    pub fn except(&self, room: impl Into<String>) -> BroadcastOperator {
        self.broadcast().except(room)
    }

    /// Emit `event` to every socket of the namespace.
    pub fn emit(&self, event: &str, args: impl Into<Args>) -> Result<(), EmitError> {
        self.broadcast().emit(event, args)
    }

    /// Emit `event` to every socket and collect their acknowledgements.
    pub fn emit_with_ack(&self, event: &str, args: impl Into<Args>) -> BroadcastAckFuture {
        self.broadcast().emit_with_ack(event, args)
    }

    /// The sockets connected to this namespace, on every node of a cluster.
    pub fn fetch_sockets(&self) -> impl Future<Output = Vec<RemoteSocket>> + Send + use<> {
        self.broadcast().fetch_sockets()
    }

    /// The sockets connected to this namespace on this node, as handles.
    pub fn sockets(&self) -> Vec<Socket> {
        self.broadcast().sockets()
    }

    /// Run `handler` for `event` when another server of the cluster emits it with
    /// [`server_side_emit`](Self::server_side_emit) (Node's `io.on(event)` for server-side
    /// emits). The handler's [`Event::ack`] is set when the emitter waits for an answer.
    /// Replaces an earlier handler of the same event.
    pub fn on_server_event<F, Fut>(&self, event: impl Into<String>, handler: F) -> &Self
    where
        F: Fn(Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        write(&self.inner.handlers)
            .server_events
            .insert(event.into(), Arc::new(move |e| Box::pin(handler(e))));
        self
    }

    /// Emit `event` to the other servers of the cluster (not to clients, and not to this
    /// server); their [`on_server_event`](Self::on_server_event) handlers run. Nothing happens
    /// on a single node.
    pub fn server_side_emit(&self, event: &str, args: impl Into<Args>) -> Result<(), EmitError> {
        check_event_name(event)?;
        if let Some(adapter) = self.inner.adapter() {
            adapter.server_emit(self.server_event(event, args));
        }
        Ok(())
    }

    /// [`server_side_emit`](Self::server_side_emit) and collect one answer per other member
    /// of the cluster, each within `timeout`: its acknowledgement, or why there is none. Empty
    /// on a single node.
    pub fn server_side_emit_with_ack(
        &self,
        event: &str,
        args: impl Into<Args>,
        timeout: Duration,
    ) -> BoxFuture<'static, Vec<Result<Vec<Value>, AckError>>> {
        match (check_event_name(event), self.inner.adapter()) {
            (Ok(()), Some(adapter)) => {
                adapter.server_emit_with_ack(self.server_event(event, args), timeout)
            }
            _ => Box::pin(async { Vec::new() }),
        }
    }

    fn server_event(&self, event: &str, args: impl Into<Args>) -> ServerEvent {
        ServerEvent {
            nsp: self.inner.name().to_owned(),
            event: event.to_owned(),
            args: args.into().0,
        }
    }

    /// The socket with this id, if it is connected here.
    pub fn socket(&self, id: &str) -> Option<Socket> {
        read(&self.inner.members).sockets.get(id).cloned()
    }
}

impl ServerInner {
    /// Forget an emptied dynamic child namespace, unless a new socket joined it meanwhile.
    pub(crate) fn drop_namespace_if_empty(&self, ns: &Arc<NamespaceInner>) {
        let mut map = write(&self.namespaces);
        if ns.is_unused() && map.get(ns.name()).is_some_and(|cur| Arc::ptr_eq(cur, ns)) {
            map.remove(ns.name());
        }
    }
}

/// A recovery store lock helper shared by emitters and the connect path.
pub(crate) fn with_recovery<R>(
    ns: &NamespaceInner,
    f: impl FnOnce(&mut RecoveryStore) -> R,
) -> Option<R> {
    ns.recovery.as_ref().map(|store| f(&mut lock(store)))
}
