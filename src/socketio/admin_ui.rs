//! The Socket.IO Admin UI's protocol (`@socket.io/admin-ui`, as its `instrument()` speaks it)
//! on an admin namespace of a server, so that the official UI shows the sockets, rooms and
//! servers of a whole cluster. Every node instruments its own server with its own server id;
//! what each node tells the UI is a broadcast to the admin namespace, which reaches the UI's
//! socket on whichever node it lives (the adapter carries it), and the UI's listing of sockets
//! is a cluster-wide `fetch_sockets`.
//!
//! Sent to the UI: `config` and `all_sockets` when it connects; `server_stats` every two
//! seconds from each node; `socket_connected`, `socket_disconnected`, `room_joined` and
//! `room_left` as they happen. Taken from it (unless read-only): `join`, `leave` and
//! `_disconnect`, applied cluster-wide.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Map, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::activity::Activity;
use super::remote::RemoteSocket;
use super::{ConnectError, Event, Handshake, Socket, SocketIo, Value};
use crate::engine::Transport;

/// How often each node sends its `server_stats`, as the reference instrument does.
const STATS_EVERY: Duration = Duration::from_secs(2);
/// Changes waiting to be told to the UI; past it they are dropped (the UI catches up at its
/// next connection).
const QUEUE: usize = 10_000;

/// How a server is shown in the Admin UI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminUiConfig {
    /// The admin namespace the UI connects to (the UI's "namespace" option; `/admin` there by
    /// default).
    pub namespace: String,
    /// This node's name in the UI's server list; unique per node.
    pub server_id: String,
    /// The username and password the UI must give, or `None` to let any UI in.
    pub auth: Option<(String, String)>,
    /// Show, but take no commands (no join, leave or disconnect).
    pub readonly: bool,
}

/// What a node counts of its Engine.IO connections, for `server_stats`: all of them, and those
/// on polling.
pub type ClientCounts = Arc<dyn Fn() -> (usize, usize) + Send + Sync>;

/// The instrument of one server; stops telling the UI when dropped.
pub struct AdminUi {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for AdminUi {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Serve the Admin UI's protocol on `io`'s admin namespace, with `clients` counting this
/// node's Engine.IO connections.
pub fn instrument(io: &SocketIo, config: AdminUiConfig, clients: ClientCounts) -> AdminUi {
    let config = Arc::new(config);
    let admin = io.of(&config.namespace);
    let auth = config.auth.clone();
    admin.middleware(move |socket: Socket| {
        let allowed = match &auth {
            None => true,
            Some((user, password)) => {
                let given = |key| socket.handshake().auth.get(key).and_then(Value::as_str);
                given("username") == Some(user.as_str())
                    && given("password") == Some(password.as_str())
            }
        };
        async move {
            match allowed {
                true => Ok(()),
                false => Err(ConnectError::new("invalid credentials")),
            }
        }
    });
    let server = io.clone();
    let on_connect = config.clone();
    admin.on_connect(move |socket: Socket| {
        let (io, config) = (server.clone(), on_connect.clone());
        async move { welcome(&io, &config, &socket).await }
    });

    let (changes, queued) = mpsc::channel(QUEUE);
    let watched = config.namespace.clone();
    io.on_activity(move |activity| {
        if let Some(change) = describe(activity, &watched) {
            let _ = changes.try_send(change);
        }
    });
    AdminUi {
        tasks: vec![
            tokio::spawn(tell(io.clone(), config.clone(), queued)),
            tokio::spawn(stats(io.clone(), config, clients)),
        ],
    }
}

/// The UI just connected to this node: what it may do, and every socket of the cluster.
async fn welcome(io: &SocketIo, config: &AdminUiConfig, socket: &Socket) {
    let mut features = vec!["AGGREGATED_EVENTS", "ALL_EVENTS"];
    if !config.readonly {
        features.extend([
            "DISCONNECT",
            "JOIN",
            "LEAVE",
            "MDISCONNECT",
            "MJOIN",
            "MLEAVE",
        ]);
        commands(io, socket);
    }
    let _ = socket.emit("config", json!({ "supportedFeatures": features }));
    let mut all = Vec::new();
    for nsp in io.namespaces() {
        if nsp == config.namespace {
            continue;
        }
        let ns = io.of(&nsp);
        let local: Vec<Socket> = ns.sockets();
        for remote in ns.fetch_sockets().await {
            all.push(match local.iter().find(|s| s.id() == remote.id()) {
                Some(socket) => serialize(socket),
                None => serialize_remote(&remote),
            });
        }
    }
    let _ = socket.emit("all_sockets", Value::from(serde_json::Value::Array(all)));
}

/// The UI's commands, applied to every node's sockets: `join`, `leave` (`nsp, room, filter?`)
/// and `_disconnect` (`nsp, close, filter?`), the filter a room or a socket id.
fn commands(io: &SocketIo, socket: &Socket) {
    let server = io.clone();
    socket.on("join", move |_, event: Event| {
        let io = server.clone();
        async move {
            if let [nsp, room, rest @ ..] = &event.args[..]
                && let (Some(nsp), Some(room)) = (nsp.as_str(), room.as_str())
            {
                selected(&io, nsp, rest.first()).sockets_join(room);
            }
        }
    });
    let server = io.clone();
    socket.on("leave", move |_, event: Event| {
        let io = server.clone();
        async move {
            if let [nsp, room, rest @ ..] = &event.args[..]
                && let (Some(nsp), Some(room)) = (nsp.as_str(), room.as_str())
            {
                selected(&io, nsp, rest.first()).sockets_leave(room);
            }
        }
    });
    let server = io.clone();
    socket.on("_disconnect", move |_, event: Event| {
        let io = server.clone();
        async move {
            if let [nsp, close, rest @ ..] = &event.args[..]
                && let Some(nsp) = nsp.as_str()
            {
                let close = matches!(close, Value::Bool(true));
                selected(&io, nsp, rest.first()).disconnect_sockets(close);
            }
        }
    });
}

/// The sockets of `nsp` a command names: those in room `filter` (a socket id is a room too),
/// or all of them.
fn selected(io: &SocketIo, nsp: &str, filter: Option<&Value>) -> super::BroadcastOperator {
    match filter.and_then(Value::as_str) {
        Some(room) => io.of(nsp).to(room),
        None => io.of(nsp).broadcast(),
    }
}

/// A change to tell the UI: the event and its arguments.
type Change = (&'static str, Vec<serde_json::Value>);

fn describe(activity: Activity<'_>, admin: &str) -> Option<Change> {
    let now = || json!(iso_now());
    Some(match activity {
        Activity::Connected(socket) if socket.ns() != admin => {
            ("socket_connected", vec![serialize(socket), now()])
        }
        Activity::Disconnected { nsp, id, reason } if nsp != admin => (
            "socket_disconnected",
            vec![json!(nsp), json!(id), json!(reason), now()],
        ),
        Activity::Joined { nsp, room, id } if nsp != admin => (
            "room_joined",
            vec![json!(nsp), json!(room), json!(id), now()],
        ),
        Activity::Left { nsp, room, id } if nsp != admin => {
            ("room_left", vec![json!(nsp), json!(room), json!(id), now()])
        }
        _ => return None,
    })
}

/// Tells every UI, on any node, of this node's changes, in the order they happened.
async fn tell(io: SocketIo, config: Arc<AdminUiConfig>, mut changes: mpsc::Receiver<Change>) {
    while let Some((event, args)) = changes.recv().await {
        let args: Vec<Value> = args.into_iter().map(Value::from).collect();
        let _ = io.of(&config.namespace).broadcast().emit(event, args);
    }
}

/// This node's `server_stats`, every [`STATS_EVERY`].
async fn stats(io: SocketIo, config: Arc<AdminUiConfig>, clients: ClientCounts) {
    let started = Instant::now();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned());
    let mut ticks = tokio::time::interval(STATS_EVERY);
    loop {
        ticks.tick().await;
        let (all, polling) = clients();
        let namespaces: Vec<_> = io
            .namespaces()
            .into_iter()
            .map(|name| {
                let count = io.of(&name).sockets().len();
                json!({ "name": name, "socketsCount": count })
            })
            .collect();
        let stats = json!({
            "serverId": config.server_id,
            "hostname": hostname,
            "pid": std::process::id(),
            "uptime": started.elapsed().as_secs_f64(),
            "clientsCount": all,
            "pollingClientsCount": polling,
            "aggregatedEvents": [],
            "namespaces": namespaces,
        });
        // Volatile: the next one replaces a lost one, and none is kept for recovery.
        let _ = io
            .of(&config.namespace)
            .broadcast()
            .volatile()
            .emit("server_stats", Value::from(stats));
    }
}

/// A socket held here, as the UI shows it.
fn serialize(socket: &Socket) -> serde_json::Value {
    let transport = match socket.transport() {
        Transport::Polling => "polling",
        Transport::Websocket => "websocket",
    };
    let client: String = socket.inner.conn.sid().chars().take(12).collect();
    shown(
        socket.id(),
        &client,
        transport,
        socket.ns(),
        &socket.data(),
        socket.rooms().iter(),
        socket.handshake(),
    )
}

/// A socket of another node: its client and transport are not listed, so the socket stands
/// for its own client, on the transport it most likely started on.
fn serialize_remote(socket: &RemoteSocket) -> serde_json::Value {
    let client: String = socket.id().chars().take(12).collect();
    shown(
        socket.id(),
        &client,
        "polling",
        socket.ns(),
        socket.data(),
        socket.rooms().iter(),
        socket.handshake(),
    )
}

fn shown<'a>(
    id: &str,
    client: &str,
    transport: &str,
    nsp: &str,
    data: &Value,
    rooms: impl Iterator<Item = &'a String>,
    handshake: &Handshake,
) -> serde_json::Value {
    let request = &handshake.request;
    let headers: Map<String, serde_json::Value> = request
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let query: Map<String, serde_json::Value> = request
        .query
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let address = request
        .header("x-forwarded-for")
        .and_then(|list| list.split(',').next())
        .map(|a| a.trim().to_owned())
        .or_else(|| request.remote_addr.map(|a| a.ip().to_string()))
        .unwrap_or_default();
    let issued = millis(handshake.time);
    json!({
        "id": id,
        "clientId": client,
        "transport": transport,
        "nsp": nsp,
        "data": data.to_json().unwrap_or(serde_json::Value::Null),
        "rooms": rooms.collect::<Vec<_>>(),
        "handshake": {
            "address": address,
            "headers": headers,
            "query": query,
            "issued": issued,
            "secure": false,
            "time": iso(issued),
            "url": "",
            "xdomain": request.header("origin").is_some(),
        }
    })
}

fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn iso_now() -> String {
    iso(millis(SystemTime::now()))
}

/// `ms` since the epoch as the ISO-8601 UTC text a JS `Date` serializes to.
fn iso(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_a_js_date_writes_them() {
        assert_eq!(iso(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(iso(1_796_463_226_857), "2026-12-05T09:33:46.857Z");
    }
}
