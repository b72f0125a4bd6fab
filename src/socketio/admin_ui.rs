//! The Socket.IO Admin UI's protocol (`@socket.io/admin-ui`, as its `instrument()` speaks it)
//! on an admin namespace of a server, so that the official UI shows the sockets, rooms and
//! servers of a whole cluster. Every node instruments its own server with its own server id;
//! what each node tells the UI is a broadcast to the admin namespace, which reaches the UI's
//! socket on whichever node it lives (the adapter carries it), and the UI's listing of sockets
//! is a cluster-wide `fetch_sockets`.
//!
//! Sent to the UI: `config` when it connects; `server_stats` every two seconds from each node,
//! with what its Engine.IO connections did meanwhile (`aggregatedEvents`). In development mode
//! also `all_sockets` when it connects, and `socket_connected`, `socket_updated`,
//! `socket_disconnected`, `room_joined`, `room_left`, `event_received` and `event_sent` as they
//! happen (each is a broadcast across the cluster: the mode for watching, not for heavy load).
//! Taken from it (unless read-only): `emit`, `join`, `leave` and `_disconnect`, applied
//! cluster-wide.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{Map, json};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;

use super::activity::Activity;
use super::remote::RemoteSocket;
use super::{ConnectError, Event, Handshake, Socket, SocketIo, Value};
use crate::engine::{CloseReason, Engine, Transport};
use crate::protocol::sio;

/// How often each node sends its `server_stats`, as the reference instrument does.
const STATS_EVERY: Duration = Duration::from_secs(2);
/// Changes waiting to be told to the UI; past it they are dropped (the UI catches up at its
/// next connection).
const QUEUE: usize = 10_000;
/// Password checks run at once on a node: bcrypt is slow on purpose, and a flood of logins
/// must not take every blocking thread.
const PASSWORD_CHECKS: usize = 2;
/// How long a session token lets the UI back in without its password (the reference's
/// session store keeps them a day).
const SESSION_MS: u64 = 24 * 3600 * 1000;

/// How a server is shown in the Admin UI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminUiConfig {
    /// The admin namespace the UI connects to (the UI's "namespace" option; `/admin` there by
    /// default).
    pub namespace: String,
    /// This node's name in the UI's server list; unique per node.
    pub server_id: String,
    /// The username the UI must give and the bcrypt hash of its password (as Node's
    /// `instrument()` takes them), or `None` to let any UI in.
    pub auth: Option<(String, String)>,
    /// Show, but take no commands (no emit, join, leave or disconnect).
    pub readonly: bool,
    /// How much the UI is told.
    pub mode: AdminUiMode,
}

/// How much the UI is told (the reference's `mode` option).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum AdminUiMode {
    /// Every socket, room change and event, as it happens, and each node's counts.
    #[default]
    Development,
    /// Each node's counts only.
    Production,
}

/// What a node counts of the Engine.IO connections of the instrumented server, for
/// `server_stats`: those open now, and totals since it started (the UI is sent what changed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineCounts {
    /// Connections open now.
    pub clients: usize,
    /// Of those, the ones on long-polling.
    pub polling: usize,
    /// Connections opened.
    pub opened: u64,
    /// Connections closed, by reason (`transport_close`, …); sessions that moved to another
    /// node are not counted (they live on).
    pub closed: Vec<(&'static str, u64)>,
    /// Messages received and sent.
    pub packets: (u64, u64),
    /// Bytes received and sent.
    pub bytes: (u64, u64),
}

impl EngineCounts {
    /// The counts of `engine` now.
    pub fn of(engine: &Engine) -> EngineCounts {
        let (polling, websocket) = engine.transport_counts();
        let metrics = engine.metrics();
        EngineCounts {
            clients: polling + websocket,
            polling,
            opened: metrics.opened,
            closed: metrics
                .closed
                .into_iter()
                .filter(|(reason, _)| *reason != CloseReason::Moved.as_str())
                .collect(),
            packets: (metrics.messages_received, metrics.messages_sent),
            bytes: (metrics.bytes_received, metrics.bytes_sent),
        }
    }
}

/// How the instrument reads a node's [`EngineCounts`].
pub type ClientCounts = Arc<dyn Fn() -> EngineCounts + Send + Sync>;

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
    let checks = Arc::new(Semaphore::new(PASSWORD_CHECKS));
    admin.middleware(move |socket: Socket| {
        let (auth, checks) = (auth.clone(), checks.clone());
        async move {
            match auth {
                Some((user, hash)) if !logged_in(&socket, &user, &hash, &checks).await => {
                    Err(ConnectError::new("invalid credentials"))
                }
                _ => Ok(()),
            }
        }
    });
    let server = io.clone();
    let on_connect = config.clone();
    admin.on_connect(move |socket: Socket| {
        let (io, config) = (server.clone(), on_connect.clone());
        async move { welcome(&io, &config, &socket).await }
    });

    let mut tasks = vec![tokio::spawn(stats(io.clone(), config.clone(), clients))];
    if config.mode == AdminUiMode::Development {
        let (changes, queued) = mpsc::channel(QUEUE);
        let watched = config.namespace.clone();
        io.on_activity(move |activity| {
            for change in describe(activity, &watched) {
                if changes.try_send(change).is_err() {
                    break;
                }
            }
        });
        tasks.push(tokio::spawn(tell(io.clone(), config, queued)));
    }
    AdminUi { tasks }
}

/// Whether the UI gave `user` and a password of bcrypt hash `hash`, or a session token made
/// with that hash ([`session_token`]).
async fn logged_in(socket: &Socket, user: &str, hash: &str, checks: &Semaphore) -> bool {
    let given = |key| socket.handshake().auth.get(key).and_then(Value::as_str);
    if given("sessionId").is_some_and(|token| token_valid(hash, token, unix_ms())) {
        return true;
    }
    let (Some(given_user), Some(password)) = (given("username"), given("password")) else {
        return false;
    };
    if given_user != user {
        return false;
    }
    let Ok(_permit) = checks.acquire().await else {
        return false;
    };
    let (password, hash) = (password.to_owned(), hash.to_owned());
    tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
        .await
        .unwrap_or(false)
}

/// A token that lets the UI back in for [`SESSION_MS`] (sent as `session`; the UI gives it as
/// `auth.sessionId` when it reconnects): its expiry and a nonce, signed with the password's
/// hash, so that every node accepts the tokens of the others without sharing a store.
fn session_token(hash: &str, now_ms: u64) -> String {
    let mut nonce = [0u8; 16];
    // The nonce only makes two tokens of one millisecond differ; the signature guards them.
    let _ = SystemRandom::new().fill(&mut nonce);
    let nonce = URL_SAFE_NO_PAD.encode(nonce);
    let signed = format!("{}.{nonce}", now_ms.saturating_add(SESSION_MS));
    let tag = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, hash.as_bytes()),
        signed.as_bytes(),
    );
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag))
}

/// Whether `token` is a [`session_token`] of `hash` that has not expired at `now_ms`.
fn token_valid(hash: &str, token: &str, now_ms: u64) -> bool {
    let Some((signed, tag)) = token.rsplit_once('.') else {
        return false;
    };
    let Some(expires) = signed.split('.').next().and_then(|e| e.parse::<u64>().ok()) else {
        return false;
    };
    let Ok(tag) = URL_SAFE_NO_PAD.decode(tag) else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, hash.as_bytes());
    now_ms < expires && hmac::verify(&key, signed.as_bytes(), &tag).is_ok()
}

fn unix_ms() -> u64 {
    millis(SystemTime::now())
}

/// The UI just connected to this node: its session token, what it may do, and every socket of
/// the cluster.
async fn welcome(io: &SocketIo, config: &AdminUiConfig, socket: &Socket) {
    if let Some((_, hash)) = &config.auth {
        let _ = socket.emit("session", session_token(hash, unix_ms()));
    }
    let mut features = vec!["AGGREGATED_EVENTS"];
    let development = config.mode == AdminUiMode::Development;
    if development {
        features.push("ALL_EVENTS");
    }
    if !config.readonly {
        features.extend([
            "EMIT",
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
    if !development {
        return;
    }
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

/// The UI's commands, applied to every node's sockets: `emit` (`nsp, filter, event, args…`),
/// `join`, `leave` (`nsp, room, filter?`) and `_disconnect` (`nsp, close, filter?`), the
/// filter a room or a socket id.
fn commands(io: &SocketIo, socket: &Socket) {
    let server = io.clone();
    socket.on("emit", move |_, event: Event| {
        let io = server.clone();
        async move {
            if let [nsp, filter, name, args @ ..] = &event.args[..]
                && let (Some(nsp), Some(name)) = (nsp.as_str(), name.as_str())
            {
                let _ = selected(&io, nsp, Some(filter)).emit(name, args.to_vec());
            }
        }
    });
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
type Change = (&'static str, Vec<Value>);

/// What the UI is told of `activity` (nothing of the admin namespace's own).
fn describe(activity: Activity<'_>, admin: &str) -> Vec<Change> {
    let now = || json!(iso_now());
    let change = |event, args: Vec<serde_json::Value>| {
        vec![(event, args.into_iter().map(Value::from).collect())]
    };
    match activity {
        Activity::Connected(socket) if socket.ns() != admin => {
            change("socket_connected", vec![serialize(socket), now()])
        }
        Activity::Updated(socket) if socket.ns() != admin => {
            let update = json!({
                "id": socket.id(),
                "nsp": socket.ns(),
                "transport": socket.transport().as_str(),
                "data": socket.data().to_json().unwrap_or(serde_json::Value::Null),
            });
            change("socket_updated", vec![update])
        }
        // The event's arguments as they are: binary ones stay binary.
        Activity::Received(socket, event) if socket.ns() != admin => {
            let mut args = vec![Value::from(event.name.as_str())];
            args.extend(event.args.iter().cloned());
            let said = vec![
                socket.ns().into(),
                socket.id().into(),
                args.into(),
                iso_now().into(),
            ];
            vec![("event_received", said)]
        }
        Activity::Sent { nsp, ids, packet } if nsp != admin => {
            let Ok(packet) = sio::decode(packet) else {
                return Vec::new();
            };
            let Some(name) = packet.event_name() else {
                return Vec::new();
            };
            let mut args = vec![Value::from(name)];
            args.extend(packet.args().iter().cloned());
            let args = Value::from(args);
            ids.iter()
                .map(|id| {
                    let said = vec![
                        nsp.into(),
                        id.as_str().into(),
                        args.clone(),
                        iso_now().into(),
                    ];
                    ("event_sent", said)
                })
                .collect()
        }
        Activity::Disconnected { nsp, id, reason } if nsp != admin => change(
            "socket_disconnected",
            vec![json!(nsp), json!(id), json!(reason), now()],
        ),
        Activity::Joined { nsp, room, id } if nsp != admin => change(
            "room_joined",
            vec![json!(nsp), json!(room), json!(id), now()],
        ),
        Activity::Left { nsp, room, id } if nsp != admin => {
            change("room_left", vec![json!(nsp), json!(room), json!(id), now()])
        }
        _ => Vec::new(),
    }
}

/// Tells every UI, on any node, of this node's changes, in the order they happened.
async fn tell(io: SocketIo, config: Arc<AdminUiConfig>, mut changes: mpsc::Receiver<Change>) {
    while let Some((event, args)) = changes.recv().await {
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
    let mut before = clients();
    loop {
        ticks.tick().await;
        let now = clients();
        let aggregated = aggregated(&before, &now, millis(SystemTime::now()));
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
            "clientsCount": now.clients,
            "pollingClientsCount": now.polling,
            "aggregatedEvents": aggregated,
            "namespaces": namespaces,
        });
        // Not volatile: that would drop it for a UI on long-polling between two polls, and
        // the counts in it are told once.
        let _ = io
            .of(&config.namespace)
            .broadcast()
            .emit("server_stats", Value::from(stats));
        before = now;
    }
}

/// The UI's `aggregatedEvents` for what changed from `before` to `now`, all stamped with the
/// second of `at_ms`: connections, disconnections by reason, packets and bytes each way.
fn aggregated(before: &EngineCounts, now: &EngineCounts, at_ms: u64) -> Vec<serde_json::Value> {
    let timestamp = at_ms - at_ms % 1000;
    let entry = |kind: &str, sub: Option<String>, count: u64| {
        (count > 0).then(|| {
            let mut entry = json!({ "timestamp": timestamp, "type": kind, "count": count });
            if let Some(sub) = sub {
                entry["subType"] = json!(sub);
            }
            entry
        })
    };
    let closed = now.closed.iter().map(|(reason, n)| {
        let earlier = before.closed.iter().find(|(r, _)| r == reason);
        let count = n.saturating_sub(earlier.map_or(0, |(_, n)| *n));
        // The reference's reasons are Engine.IO's own words: "transport close", …
        entry("rawDisconnection", Some(reason.replace('_', " ")), count)
    });
    [
        entry(
            "rawConnection",
            None,
            now.opened.saturating_sub(before.opened),
        ),
        entry(
            "packetsIn",
            None,
            now.packets.0.saturating_sub(before.packets.0),
        ),
        entry(
            "packetsOut",
            None,
            now.packets.1.saturating_sub(before.packets.1),
        ),
        entry("bytesIn", None, now.bytes.0.saturating_sub(before.bytes.0)),
        entry("bytesOut", None, now.bytes.1.saturating_sub(before.bytes.1)),
    ]
    .into_iter()
    .chain(closed)
    .flatten()
    .collect()
}

/// A socket held here, as the UI shows it.
fn serialize(socket: &Socket) -> serde_json::Value {
    shown(
        socket.id(),
        &socket.client_id(),
        socket.transport(),
        socket.ns(),
        &socket.data(),
        socket.rooms().iter(),
        socket.handshake(),
    )
}

/// A socket of another node, as the UI shows it.
fn serialize_remote(socket: &RemoteSocket) -> serde_json::Value {
    shown(
        socket.id(),
        socket.client(),
        socket.transport(),
        socket.ns(),
        socket.data(),
        socket.rooms().iter(),
        socket.handshake(),
    )
}

fn shown<'a>(
    id: &str,
    client: &str,
    transport: Transport,
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
        "transport": transport.as_str(),
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
    iso(unix_ms())
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
    fn aggregated_events_are_what_changed_in_the_second_they_were_counted() {
        let before = EngineCounts {
            opened: 3,
            closed: vec![("transport_close", 1), ("ping_timeout", 0)],
            packets: (10, 20),
            bytes: (100, 200),
            ..EngineCounts::default()
        };
        let now = EngineCounts {
            opened: 5,
            closed: vec![("transport_close", 1), ("ping_timeout", 2)],
            packets: (11, 20),
            bytes: (150, 200),
            ..EngineCounts::default()
        };
        let events = aggregated(&before, &now, 1_700_000_000_456);
        let at = 1_700_000_000_000_u64;
        assert_eq!(
            events,
            vec![
                json!({ "timestamp": at, "type": "rawConnection", "count": 2 }),
                json!({ "timestamp": at, "type": "packetsIn", "count": 1 }),
                json!({ "timestamp": at, "type": "bytesIn", "count": 50 }),
                json!({
                    "timestamp": at,
                    "type": "rawDisconnection",
                    "subType": "ping timeout",
                    "count": 2
                }),
            ]
        );
        assert!(aggregated(&now, &now, 0).is_empty());
    }

    #[test]
    fn a_session_token_holds_until_it_expires_and_only_for_its_hash() {
        let (hash, now) = ("$2b$04$abcdefghijklmnopqrstuu", 1_000);
        let token = session_token(hash, now);
        assert!(token_valid(hash, &token, now));
        assert!(token_valid(hash, &token, now + SESSION_MS - 1));
        assert!(!token_valid(hash, &token, now + SESSION_MS));
        assert!(!token_valid("$2b$04$another-hash", &token, now));
        let (signed, tag) = token.rsplit_once('.').expect("signed");
        let later = signed.replacen(&(now + SESSION_MS).to_string(), "99999999999999", 1);
        assert!(!token_valid(hash, &format!("{later}.{tag}"), now));
        for broken in ["", ".", "x.y.z", "1.2.!!", &token[..token.len() - 1]] {
            assert!(!token_valid(hash, broken, now), "{broken:?}");
        }
        assert_ne!(session_token(hash, now), token);
    }

    #[test]
    fn times_read_as_a_js_date_writes_them() {
        assert_eq!(iso(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(iso(1_796_463_226_857), "2026-12-05T09:33:46.857Z");
    }
}
