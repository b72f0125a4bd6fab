//! Broadcast operators: pick sockets by room (`to`, `except`) and emit to them, with or
//! without acks, or act on them (fetch, join, leave, disconnect) — on every node of a cluster
//! unless told `local()`.

use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::ack::BroadcastAckFuture;
use super::args::Args;
use super::error::EmitError;
use super::namespace::NamespaceInner;
use super::recovery::{Logged, Target};
use super::remote::{
    Adapter, RemoteAckRequest, RemoteAction, RemoteBroadcast, RemoteSocket, Selection,
};
use super::socket::{Socket, send_encoded};
use super::{lock, read};
use crate::protocol::sio::{self, Encoded, Packet};

pub(crate) fn check_event_name(event: &str) -> Result<(), EmitError> {
    if sio::is_reserved_event(event) {
        Err(EmitError::ReservedEvent(event.to_owned()))
    } else {
        Ok(())
    }
}

/// A selection of sockets in one namespace (or in every child of a dynamic group), built with
/// [`to`](Self::to), [`except`](Self::except) and flags, then used by an emit or an action.
#[derive(Clone)]
pub struct BroadcastOperator {
    ns: Arc<NamespaceInner>,
    target: Target,
    volatile: bool,
    local: bool,
    timeout: Option<Duration>,
}

impl BroadcastOperator {
    pub(crate) fn new(ns: Arc<NamespaceInner>) -> Self {
        BroadcastOperator {
            ns,
            target: Target::default(),
            volatile: false,
            local: false,
            timeout: None,
        }
    }

    /// Also target the sockets in `room` (rooms add up: a socket in any of them is targeted).
    pub fn to(mut self, room: impl Into<String>) -> Self {
        self.target.rooms.insert(room.into());
        self
    }

    /// Same as [`to`](Self::to).
    pub fn within(self, room: impl Into<String>) -> Self {
        self.to(room)
    }

    /// Leave out the sockets in `room` (or the socket with that id).
    pub fn except(mut self, room: impl Into<String>) -> Self {
        self.target.except.insert(room.into());
        self
    }

    /// Drop the packet for any recipient whose transport cannot take it right now.
    pub fn volatile(mut self) -> Self {
        self.volatile = true;
        self
    }

    /// Only sockets on this node. On a single node this changes nothing; in a cluster it skips
    /// the other nodes.
    pub fn local(mut self) -> Self {
        self.local = true;
        self
    }

    /// Whether [`local`](Self::local) was set.
    pub fn is_local(&self) -> bool {
        self.local
    }

    /// The timeout of [`emit_with_ack`](Self::emit_with_ack).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Emit `event` to the selected sockets. With connection state recovery on (and not
    /// volatile), the event gets an offset and is kept for replay to clients that return.
    pub fn emit(self, event: &str, args: impl Into<Args>) -> Result<(), EmitError> {
        check_event_name(event)?;
        let args = args.into().0;
        for ns in self.namespaces() {
            let mut broadcast = RemoteBroadcast {
                selection: self.selection(&ns),
                packet: sio::encode(&Packet::event(ns.name(), event, args.clone(), None)),
                volatile: self.volatile,
                stamp: None,
            };
            let adapter = self.adapter(&ns);
            match (&ns.recovery, self.volatile) {
                // Numbered, logged, delivered and passed on in one step under the log's lock:
                // this node's broadcasts reach its sockets and its peers in the order of their
                // numbers, which recovery positions rely on.
                (Some(store), false) => {
                    let mut store = lock(store);
                    let packet = broadcast.packet.clone();
                    let logged = store.log(self.target.clone(), packet, self.local);
                    deliver(&ns, &broadcast.selection, false, Outgoing::Logged(logged));
                    broadcast.stamp = Some(logged.stamp().to_string());
                    if let Some(adapter) = adapter {
                        adapter.broadcast(broadcast);
                    }
                }
                _ => {
                    let packet = Outgoing::Plain(&broadcast.packet);
                    deliver(&ns, &broadcast.selection, self.volatile, packet);
                    if let Some(adapter) = adapter {
                        adapter.broadcast(broadcast);
                    }
                }
            }
        }
        Ok(())
    }

    /// Emit `event` to the selected sockets with an ack request, and collect every answer (by
    /// default within [`SocketIoConfig::ack_timeout`](super::SocketIoConfig::ack_timeout)),
    /// from every node of a cluster.
    pub fn emit_with_ack(self, event: &str, args: impl Into<Args>) -> BroadcastAckFuture {
        let timeout = self.timeout.unwrap_or(self.ns.ack_timeout);
        let mut acks = BroadcastAckFuture::new(timeout);
        if check_event_name(event).is_err() {
            return acks;
        }
        let args = args.into().0;
        for ns in self.namespaces() {
            let id = ns.next_ack_id();
            let packet = Packet::event(ns.name(), event, args.clone(), Some(id));
            let encoded = sio::encode(&packet);
            let mut told = ns.observed().then(Vec::new);
            for socket in self.select(&ns) {
                if self.volatile && !socket.inner.conn.is_writable() {
                    continue;
                }
                let rx = socket.expect_ack(id);
                // A send that fails drops the socket's pending entry when the socket finishes,
                // so its answer resolves as "disconnected".
                let _ = send_encoded(&socket.inner.conn, ns.parser, encoded.clone());
                if let Some(told) = &mut told {
                    told.push(socket.id().to_owned());
                }
                acks.push(
                    socket.id().to_owned(),
                    rx,
                    Arc::downgrade(&socket.inner),
                    id,
                );
            }
            if let Some(told) = told {
                ns.sent(&told, &encoded);
            }
            if let Some(adapter) = self.adapter(&ns) {
                acks.push_remote(adapter.broadcast_with_ack(RemoteAckRequest {
                    selection: self.selection(&ns),
                    event: event.to_owned(),
                    args: args.clone(),
                    volatile: self.volatile,
                    timeout,
                }));
            }
        }
        acks
    }

    /// The selected sockets of every node (of this node only with [`local`](Self::local)), as
    /// they are now.
    pub fn fetch_sockets(&self) -> impl Future<Output = Vec<RemoteSocket>> + Send + use<> {
        let mut found = Vec::new();
        let mut remote = Vec::new();
        for ns in self.namespaces() {
            for socket in self.select(&ns) {
                found.push(RemoteSocket::new(socket.details(), ns.clone()));
            }
            if let Some(adapter) = self.adapter(&ns) {
                let listing = adapter.fetch(self.selection(&ns));
                remote.push(async move {
                    let details = listing.await;
                    details
                        .into_iter()
                        .map(|d| RemoteSocket::new(d, ns.clone()))
                        .collect::<Vec<_>>()
                });
            }
        }
        async move {
            for listed in futures::future::join_all(remote).await {
                found.extend(listed);
            }
            found
        }
    }

    /// The selected sockets connected to this node, as handles.
    pub fn sockets(&self) -> Vec<Socket> {
        self.namespaces()
            .iter()
            .flat_map(|ns| self.select(ns))
            .collect()
    }

    /// Make the selected sockets join `room`.
    pub fn sockets_join(&self, room: impl Into<String>) {
        self.act(RemoteAction::Join(room.into()));
    }

    /// Make the selected sockets leave `room`.
    pub fn sockets_leave(&self, room: &str) {
        self.act(RemoteAction::Leave(room.to_owned()));
    }

    /// Disconnect the selected sockets from their namespace; with `close`, close their whole
    /// Engine.IO connections instead.
    pub fn disconnect_sockets(&self, close: bool) {
        self.act(RemoteAction::Disconnect { close });
    }

    /// Apply `action` to the selected sockets here, and have the other nodes do the same.
    fn act(&self, action: RemoteAction) {
        for ns in self.namespaces() {
            apply(&self.select(&ns), &action);
            if let Some(adapter) = self.adapter(&ns) {
                adapter.act(self.selection(&ns), action.clone());
            }
        }
    }

    /// The cluster adapter, unless this operator is [`local`](Self::local).
    fn adapter(&self, ns: &NamespaceInner) -> Option<Arc<dyn Adapter>> {
        if self.local { None } else { ns.adapter() }
    }

    /// This operator's selection in `ns`, as other nodes take it.
    fn selection(&self, ns: &NamespaceInner) -> Selection {
        Selection {
            nsp: ns.name().to_owned(),
            rooms: self.target.rooms.iter().cloned().collect(),
            except: self.target.except.iter().cloned().collect(),
        }
    }

    fn namespaces(&self) -> Vec<Arc<NamespaceInner>> {
        if self.ns.is_group() {
            self.ns.children()
        } else {
            vec![self.ns.clone()]
        }
    }

    /// The connected sockets of `ns` this operator selects.
    fn select(&self, ns: &NamespaceInner) -> Vec<Socket> {
        select(ns, &self.target.rooms, &self.target.except)
    }

    /// The operator a peer's request stands for: its selection in `ns`, on this node only.
    pub(crate) fn for_peer(ns: Arc<NamespaceInner>, selection: &Selection) -> Self {
        let mut op = BroadcastOperator::new(ns).local();
        op.target = Target::new(&selection.rooms, &selection.except);
        op
    }
}

/// The connected sockets of `ns` in any of `rooms` (all if empty), minus those in `except`.
fn select<'a>(
    ns: &NamespaceInner,
    rooms: impl IntoIterator<Item = &'a String>,
    except: impl IntoIterator<Item = &'a String>,
) -> Vec<Socket> {
    let m = read(&ns.members);
    let excluded: HashSet<&String> = except
        .into_iter()
        .filter_map(|room| m.rooms.get(room))
        .flatten()
        .collect();
    let mut rooms = rooms.into_iter().peekable();
    let ids: BTreeSet<&String> = if rooms.peek().is_none() {
        m.sockets.keys().collect()
    } else {
        rooms
            .filter_map(|room| m.rooms.get(room))
            .flatten()
            .collect()
    };
    ids.into_iter()
        .filter(|id| !excluded.contains(id))
        .filter_map(|id| m.sockets.get(id).cloned())
        .collect()
}

/// Apply an action to these sockets; returns how many.
pub(crate) fn apply(sockets: &[Socket], action: &RemoteAction) -> usize {
    for socket in sockets {
        match action {
            RemoteAction::Join(room) => socket.join(room.clone()),
            RemoteAction::Leave(room) => socket.leave(room),
            RemoteAction::Disconnect { close: true } => socket.close_transport(),
            RemoteAction::Disconnect { close: false } => socket.disconnect(),
        }
    }
    sockets.len()
}

/// A broadcast as a node delivers it to its sockets.
pub(crate) enum Outgoing<'a> {
    /// The same packet for every socket.
    Plain(&'a Encoded),
    /// Logged for recovery: each socket gets it with its offset, or not at all if its client
    /// had it already (see `Socket::logged_packet`).
    Logged(&'a Logged),
}

/// Send a broadcast to the sockets of `ns` that `selection` picks; returns how many it went to.
/// A logged broadcast is delivered under the log's lock (the caller holds it).
pub(crate) fn deliver(
    ns: &NamespaceInner,
    selection: &Selection,
    volatile: bool,
    outgoing: Outgoing<'_>,
) -> usize {
    let plain = match outgoing {
        Outgoing::Plain(packet) => packet.clone(),
        Outgoing::Logged(logged) => logged.packet_for(None),
    };
    let mut sent = 0;
    // Only when watched: most servers never pay for the list.
    let mut told = ns.observed().then(Vec::new);
    for socket in select(ns, &selection.rooms, &selection.except) {
        if volatile && !socket.inner.conn.is_writable() {
            continue;
        }
        let packet = match outgoing {
            Outgoing::Plain(_) => Some(plain.clone()),
            Outgoing::Logged(logged) => socket.logged_packet(logged, &plain),
        };
        if let Some(packet) = packet
            && send_encoded(&socket.inner.conn, ns.parser, packet).is_ok()
        {
            sent += 1;
            if let Some(told) = &mut told {
                told.push(socket.id().to_owned());
            }
        }
    }
    if let Some(told) = told {
        ns.sent(&told, &plain);
    }
    sent
}
