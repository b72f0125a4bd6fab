//! Every option of a node under one name, from three sources merged by figment: a TOML file,
//! `NONSTICK_*` environment variables and command-line flags. `ping_interval` in the file is
//! `NONSTICK_PING_INTERVAL` in the environment and `--ping-interval` on the command line; a
//! flag beats the environment, which beats the file, which beats the default.
//!
//! The names are Node socket.io's options in snake case (`pingInterval` → `ping_interval`),
//! durations in milliseconds as there. Nested Node options are flattened with their parent's
//! name in front (`cors.origin` → `cors_origin`, `connectionStateRecovery` → `recovery_*`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::error::Kind;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::{Figment, Metadata, Source};
use serde::{Deserialize, Serialize};
use serde_json::Map;

use super::{Config, Cookie, Https, SameSite};
use crate::engine::EngineConfig;
use crate::logs::LogFormat;
use crate::rpc::Secret;
use crate::socketio::admin_ui::AdminUiMode;
use crate::socketio::{Parser, RecoveryConfig, SocketIoConfig};

/// Where `npm ci` in `web/` puts the browser client, relative to the repository root.
pub const DEFAULT_CLIENT_BUNDLE: &str = "web/node_modules/socket.io-client/dist/socket.io.min.js";

/// Where `npm ci` in `web/` puts the Admin UI's files, relative to the repository root.
pub const DEFAULT_ADMIN_UI: &str = "web/node_modules/@socket.io/admin-ui/ui/dist";

/// The prefix of the environment variables read as settings.
pub const ENV_PREFIX: &str = "NONSTICK_";

/// A transport clients may use (Node's `transports`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// HTTP long-polling.
    Polling,
    /// WebSocket.
    Websocket,
}

/// Every setting of a node. `Default` gives the reference server's defaults, except where a
/// field says otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    // --- Node socket.io's server options ---
    /// Where Engine.IO / Socket.IO is served (`path`).
    pub path: String,
    /// Milliseconds between two pings (`pingInterval`).
    pub ping_interval: u64,
    /// Milliseconds a client has to answer a ping (`pingTimeout`).
    pub ping_timeout: u64,
    /// Milliseconds an upgrade may take (`upgradeTimeout`).
    pub upgrade_timeout: u64,
    /// Largest accepted POST body or websocket message, in bytes (`maxHttpBufferSize`).
    pub max_http_buffer_size: usize,
    /// The transports clients may use (`transports`).
    #[serde(deserialize_with = "one_or_many")]
    pub transports: Vec<Transport>,
    /// Whether polling sessions may upgrade to websocket (`allowUpgrades`).
    pub allow_upgrades: bool,
    /// Set a sticky-session cookie on polling handshakes (`cookie`; off by default).
    pub cookie: bool,
    /// The cookie's name (`cookie.name`).
    pub cookie_name: String,
    /// The cookie's path (`cookie.path`).
    pub cookie_path: String,
    /// The cookie's `HttpOnly` attribute (`cookie.httpOnly`).
    pub cookie_http_only: bool,
    /// The cookie's `SameSite` attribute: `lax`, `strict` or `none` (`cookie.sameSite`).
    pub cookie_same_site: SameSite,
    /// Allowed CORS origins, `*` for any; none (the default) sends no CORS headers
    /// (`cors.origin`).
    #[serde(deserialize_with = "one_or_many")]
    pub cors_origin: Vec<String>,
    /// Send `Access-Control-Allow-Credentials: true` (`cors.credentials`).
    pub cors_credentials: bool,
    /// Milliseconds a client may take to join a namespace (`connectTimeout`).
    pub connect_timeout: u64,
    /// Connection state recovery (`connectionStateRecovery`). On by default here (off in Node):
    /// it is what brings a websocket client's socket back after its node died. With it on,
    /// every event carries its recovery offset as a last argument, as in Node.
    pub recovery: bool,
    /// Milliseconds a disconnected socket's state and missed packets are kept
    /// (`connectionStateRecovery.maxDisconnectionDuration`).
    pub recovery_max_disconnection_duration: u64,
    /// A recovered socket skips the namespace middleware
    /// (`connectionStateRecovery.skipMiddlewares`).
    pub recovery_skip_middlewares: bool,

    // --- nonstick's own limits ---
    /// Most queued outbound messages per session.
    pub max_buffered_packets: usize,
    /// Most queued outbound payload bytes per session (default: four times
    /// `max_http_buffer_size`).
    pub max_buffered_bytes: Option<usize>,
    /// Most live sessions per mount; handshakes past it are refused.
    pub max_sessions: usize,
    /// Most binary attachments one packet may announce.
    pub max_attachments: usize,
    /// Most packets the recovery log keeps per namespace.
    pub recovery_max_packets: usize,
    /// Most disconnected sockets kept for recovery per namespace.
    pub recovery_max_sessions: usize,
    /// Milliseconds a server emit with an ack waits when it names no timeout.
    pub ack_timeout: u64,
    /// How packets are written: `default` (socket.io-parser) or `msgpack`
    /// (socket.io-msgpack-parser); the clients must use the same (Node's `parser`).
    pub parser: Parser,
    /// Most namespaces one connection may join.
    pub max_namespaces: usize,
    /// Most rooms one socket may be in.
    pub max_rooms: usize,
    /// Most handshakes per second from one client address (0: no limit).
    pub max_handshakes_per_second: u32,
    /// A client's address is the last of `X-Forwarded-For` (what the nearest proxy saw), when
    /// there is one: for nodes behind a balancer.
    pub trust_forwarded_for: bool,

    // --- the node ---
    /// HTTP address (Engine.IO/Socket.IO, /healthz, /metrics, the program's own routes).
    pub listen: SocketAddr,
    /// This node's id (a positive integer, unique in the cluster).
    pub id: Option<u64>,
    /// Address of the peer gRPC server (forwarding, broadcasts, Raft).
    pub grpc: Option<SocketAddr>,
    /// Every member's gRPC address, this node included: `1=host:port,2=host:port,...`. Makes
    /// this a cluster node (then `id`, `grpc` and `data_dir` are required).
    pub peers: Option<String>,
    /// This node's gRPC address as the others reach it (default: its entry in `peers`).
    pub advertise: Option<String>,
    /// Directory of this node's registry (Raft log and state).
    pub data_dir: Option<PathBuf>,
    /// The cluster secret (better from the environment, `NONSTICK_SECRET`, or a file).
    pub secret: Option<String>,
    /// File holding the cluster secret.
    pub secret_file: Option<PathBuf>,
    /// The secret being rotated out, still accepted from the other nodes (never sent):
    /// `NONSTICK_PREVIOUS_SECRET` or a file.
    pub previous_secret: Option<String>,
    /// File holding the previous secret.
    pub previous_secret_file: Option<PathBuf>,
    /// HTTPS on the client port: the certificate chain (PEM), with `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// HTTPS on the client port: the private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Mutual TLS between nodes: the CA that signs every node's certificate (PEM), with
    /// `peer_tls_cert` and `peer_tls_key`.
    pub peer_tls_ca: Option<PathBuf>,
    /// Mutual TLS between nodes: this node's certificate (PEM).
    pub peer_tls_cert: Option<PathBuf>,
    /// Mutual TLS between nodes: this node's private key (PEM).
    pub peer_tls_key: Option<PathBuf>,
    /// Join a running cluster (add it with `nonstick member add`) instead of forming one.
    pub join: bool,
    /// Milliseconds a broadcast or other request for another node may wait before it is
    /// dropped and counted instead of delivered late.
    pub adapter_max_age: u64,
    /// A websocket for a session owned by another node takes the session with it.
    pub move_on_upgrade: bool,
    /// Milliseconds a stopping node keeps moving its polling sessions to the others.
    pub drain_timeout: u64,
    /// Milliseconds a drained node goes on serving before it stops.
    pub drain_linger: u64,
    /// Milliseconds a graceful shutdown waits for open connections.
    pub shutdown_timeout: u64,
    /// Where the health check is served (empty: not served).
    pub health_path: String,
    /// Where the Prometheus metrics are served (empty: not served).
    pub metrics_path: String,
    /// How the `nonstick` command writes its logs: `text` or `json`.
    pub log_format: LogFormat,

    // --- the built-in application (`nonstick serve`, `node`, `cluster`) ---
    /// `demo` or `protocol-suite`.
    pub app: String,
    /// The `auth.token` the demo's `/admin` namespace requires.
    pub admin_token: String,
    /// The Socket.IO browser client served to the demo page.
    pub client_bundle: PathBuf,
    /// Speak the Socket.IO Admin UI's protocol, and serve the UI at `/admin-ui/`.
    pub admin_ui: bool,
    /// The admin namespace the UI connects to (Node's is `/admin`, which the demo app uses).
    pub admin_ui_namespace: String,
    /// The username the UI must give (none: any UI gets in).
    pub admin_ui_username: Option<String>,
    /// The bcrypt hash of the password the UI must give with `admin_ui_username` (as Node's
    /// `instrument()` takes it).
    pub admin_ui_password: Option<String>,
    /// Show, but take no commands from the UI.
    pub admin_ui_readonly: bool,
    /// `development`: the UI is told of every socket, room change and event; `production`:
    /// only of each node's counts (the reference's `mode`).
    pub admin_ui_mode: AdminUiMode,
    /// Where the UI's files are (`ui/dist` of the `@socket.io/admin-ui` npm package).
    pub admin_ui_dir: PathBuf,
}

impl Default for Settings {
    fn default() -> Settings {
        let config = Config::default();
        let engine = EngineConfig::default();
        let socketio = SocketIoConfig::default();
        let recovery = RecoveryConfig::default();
        let cookie = Cookie::default();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Settings {
            path: config.path,
            ping_interval: ms(engine.ping_interval),
            ping_timeout: ms(engine.ping_timeout),
            upgrade_timeout: ms(engine.upgrade_timeout),
            max_http_buffer_size: engine.max_payload,
            transports: vec![Transport::Polling, Transport::Websocket],
            allow_upgrades: engine.allow_upgrades,
            cookie: false,
            cookie_name: cookie.name,
            cookie_path: cookie.path,
            cookie_http_only: cookie.http_only,
            cookie_same_site: cookie.same_site,
            cors_origin: Vec::new(),
            cors_credentials: false,
            connect_timeout: ms(socketio.connect_timeout),
            recovery: true,
            recovery_max_disconnection_duration: ms(recovery.max_disconnection_duration),
            recovery_skip_middlewares: recovery.skip_middlewares,
            max_buffered_packets: engine.max_buffered_packets,
            max_buffered_bytes: None,
            max_sessions: engine.max_sessions,
            max_attachments: socketio.max_attachments,
            recovery_max_packets: recovery.max_packets,
            recovery_max_sessions: recovery.max_sessions,
            ack_timeout: ms(socketio.ack_timeout),
            parser: socketio.parser,
            max_namespaces: socketio.max_namespaces,
            max_rooms: socketio.max_rooms,
            max_handshakes_per_second: config.max_handshakes_per_second,
            trust_forwarded_for: config.trust_forwarded_for,
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            id: None,
            grpc: None,
            peers: None,
            advertise: None,
            data_dir: None,
            secret: None,
            secret_file: None,
            previous_secret: None,
            previous_secret_file: None,
            tls_cert: None,
            tls_key: None,
            peer_tls_ca: None,
            peer_tls_cert: None,
            peer_tls_key: None,
            join: false,
            adapter_max_age: ms(config.adapter.max_age),
            move_on_upgrade: config.move_on_upgrade,
            drain_timeout: ms(config.drain_timeout),
            drain_linger: ms(config.drain_linger),
            shutdown_timeout: ms(config.shutdown_timeout),
            health_path: config.health_path.unwrap_or_default(),
            metrics_path: config.metrics_path.unwrap_or_default(),
            log_format: LogFormat::Text,
            app: "demo".to_owned(),
            admin_token: "secret".to_owned(),
            client_bundle: PathBuf::from(DEFAULT_CLIENT_BUNDLE),
            admin_ui: false,
            admin_ui_namespace: "/admin-ui".to_owned(),
            admin_ui_username: None,
            admin_ui_password: None,
            admin_ui_readonly: false,
            admin_ui_mode: AdminUiMode::Development,
            admin_ui_dir: PathBuf::from(DEFAULT_ADMIN_UI),
        }
    }
}

/// Why settings cannot be used: a source that cannot be read, a name that is no setting, a
/// value of the wrong type or out of range, settings that contradict each other. One line per
/// problem, each naming its setting and, when it came from one, its source.
#[derive(Debug, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct SettingsError {
    /// The problems found.
    pub problems: Vec<String>,
}

impl From<figment::Error> for SettingsError {
    fn from(error: figment::Error) -> SettingsError {
        let problems = error
            .into_iter()
            .map(|e| {
                let from = match &e.metadata {
                    Some(Metadata {
                        source: Some(Source::File(path)),
                        ..
                    }) => path.display().to_string(),
                    Some(metadata) => metadata.name.to_string(),
                    None => "the settings".to_owned(),
                };
                let what = match &e.kind {
                    Kind::UnknownField(name, _) => {
                        format!("`{name}` is no setting (`nonstick config show` lists them)")
                    }
                    kind => kind.to_string().trim().to_owned(),
                };
                match e.path.join(".") {
                    key if key.is_empty() => format!("{from}: {what}"),
                    key => format!("{key}: {what} (in {from})"),
                }
            })
            .collect();
        SettingsError { problems }
    }
}

impl From<SettingsError> for std::io::Error {
    fn from(e: SettingsError) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string())
    }
}

impl Settings {
    /// `defaults`, then `file` (TOML, when given), then the `NONSTICK_*` environment variables
    /// that name a setting, then `flags` (the flags given, by setting name: see
    /// [`super::flags::given`]); validated.
    pub fn load(
        defaults: Settings,
        file: Option<&Path>,
        flags: Map<String, serde_json::Value>,
    ) -> Result<Settings, SettingsError> {
        Settings::figment(defaults, file)
            .merge(Settings::environment())
            .merge(Serialized::defaults(flags))
            .extract()
            .map_err(SettingsError::from)
            .and_then(Settings::validated)
    }

    /// The settings of `file` alone on top of `defaults` (`nonstick config check`).
    pub fn from_file(defaults: Settings, file: &Path) -> Result<Settings, SettingsError> {
        Settings::figment(defaults, Some(file))
            .extract()
            .map_err(SettingsError::from)
            .and_then(Settings::validated)
    }

    fn figment(defaults: Settings, file: Option<&Path>) -> Figment {
        let figment = Figment::from(Serialized::defaults(defaults));
        match file {
            Some(file) => figment.merge(Toml::file_exact(file)),
            None => figment,
        }
    }

    /// `NONSTICK_<NAME>` for every setting's name, and no other variable: the tools around
    /// nonstick (its tests, its scripts) use the same prefix for their own variables.
    fn environment() -> Env {
        let names = Settings::names();
        Env::prefixed(ENV_PREFIX).filter(move |key| names.iter().any(|name| key == name))
    }

    /// The names of every setting.
    pub fn names() -> Vec<String> {
        match serde_json::to_value(Settings::default()) {
            Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// The settings as a TOML file would hold them, without the secret (for `nonstick
    /// cluster`, which hands its settings to its nodes in a file and its secret in their
    /// environment).
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        let mut table = BTreeMap::new();
        if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(self) {
            for (key, value) in map {
                let secret = matches!(key.as_str(), "secret" | "previous_secret");
                if !secret && !value.is_null() {
                    table.insert(key, value);
                }
            }
        }
        toml::to_string(&table)
    }

    /// `self` if every value is in range, else every problem found.
    fn validated(self) -> Result<Settings, SettingsError> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, problem: &str| {
            if !ok {
                problems.push(problem.to_owned());
            }
        };
        check(
            self.path.starts_with('/'),
            "path: must start with a slash (as `/socket.io/`)",
        );
        check(self.ping_interval > 0, "ping_interval: must be above 0");
        check(self.ping_timeout > 0, "ping_timeout: must be above 0");
        check(self.upgrade_timeout > 0, "upgrade_timeout: must be above 0");
        check(self.connect_timeout > 0, "connect_timeout: must be above 0");
        check(
            self.max_http_buffer_size > 0,
            "max_http_buffer_size: must be above 0",
        );
        check(
            !self.transports.is_empty(),
            "transports: name at least one of polling, websocket",
        );
        check(
            self.max_buffered_packets > 0,
            "max_buffered_packets: must be above 0",
        );
        check(
            self.max_buffered_bytes != Some(0),
            "max_buffered_bytes: must be above 0",
        );
        check(self.max_sessions > 0, "max_sessions: must be above 0");
        check(self.max_namespaces > 0, "max_namespaces: must be above 0");
        check(
            !self.cookie_name.is_empty() && self.cookie_name.bytes().all(is_cookie_name_byte),
            "cookie_name: must be a cookie name (letters, digits, `-`, `_`, `.`)",
        );
        check(
            self.cookie_path.starts_with('/')
                && self
                    .cookie_path
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b';'),
            "cookie_path: must be a path starting with a slash",
        );
        check(self.id != Some(0), "id: node ids start at 1");
        check(
            self.health_path.is_empty() || self.health_path.starts_with('/'),
            "health_path: must start with a slash, or be empty to serve none",
        );
        check(
            self.metrics_path.is_empty() || self.metrics_path.starts_with('/'),
            "metrics_path: must start with a slash, or be empty to serve none",
        );
        let given = |paths: &[&Option<PathBuf>]| paths.iter().filter(|p| p.is_some()).count();
        if !matches!(given(&[&self.tls_cert, &self.tls_key]), 0 | 2) {
            problems.push("tls_cert, tls_key: give both, or neither".to_owned());
        }
        let peer_tls = [&self.peer_tls_ca, &self.peer_tls_cert, &self.peer_tls_key];
        if !matches!(given(&peer_tls), 0 | 3) {
            problems.push(
                "peer_tls_ca, peer_tls_cert, peer_tls_key: give all three, or none".to_owned(),
            );
        }
        for (name, secret) in [
            ("secret", &self.secret),
            ("previous_secret", &self.previous_secret),
        ] {
            if let Some(Err(e)) = secret.as_deref().map(|s| Secret::new(s.trim())) {
                problems.push(format!("{name}: {e}"));
            }
        }
        if self.admin_ui_username.is_some() != self.admin_ui_password.is_some() {
            problems.push("admin_ui_username, admin_ui_password: give both, or neither".to_owned());
        }
        if let Some(hash) = &self.admin_ui_password
            && hash.parse::<bcrypt::HashParts>().is_err()
        {
            problems.push(
                "admin_ui_password: must be a bcrypt hash of the password (`$2b$…`), as Node's \
                 instrument() takes it"
                    .to_owned(),
            );
        }
        if let Some(peers) = &self.peers {
            match parse_peers(peers) {
                Err(e) => problems.push(format!("peers: {e}")),
                Ok(map) => {
                    for (name, missing) in [
                        ("id", self.id.is_none()),
                        ("grpc", self.grpc.is_none()),
                        ("data_dir", self.data_dir.is_none()),
                    ] {
                        if missing {
                            problems.push(format!("peers: a cluster node needs {name} as well"));
                        }
                    }
                    if let Some(id) = self.id
                        && !map.contains_key(&id)
                        && self.advertise.is_none()
                    {
                        problems.push(format!(
                            "peers: no entry for this node ({id}) and no advertise address"
                        ));
                    }
                }
            }
        } else {
            for (name, given) in [("advertise", self.advertise.is_some()), ("join", self.join)] {
                if given {
                    problems.push(format!("{name}: only a cluster node (with peers) takes it"));
                }
            }
        }
        if problems.is_empty() {
            Ok(self)
        } else {
            Err(SettingsError { problems })
        }
    }

    /// The Engine.IO settings.
    pub fn engine(&self) -> EngineConfig {
        let max_payload = self.max_http_buffer_size;
        EngineConfig {
            ping_interval: Duration::from_millis(self.ping_interval),
            ping_timeout: Duration::from_millis(self.ping_timeout),
            upgrade_timeout: Duration::from_millis(self.upgrade_timeout),
            max_payload,
            max_buffered_packets: self.max_buffered_packets,
            max_buffered_bytes: self
                .max_buffered_bytes
                .unwrap_or_else(|| max_payload.saturating_mul(4)),
            polling: self.transports.contains(&Transport::Polling),
            websocket: self.transports.contains(&Transport::Websocket),
            allow_upgrades: self.allow_upgrades,
            max_sessions: self.max_sessions,
            sid_prefix: String::new(),
        }
    }

    /// The Socket.IO settings.
    pub fn socketio(&self) -> SocketIoConfig {
        SocketIoConfig {
            connect_timeout: Duration::from_millis(self.connect_timeout),
            max_attachments: self.max_attachments,
            ack_timeout: Duration::from_millis(self.ack_timeout),
            max_namespaces: self.max_namespaces,
            max_rooms: self.max_rooms,
            parser: self.parser,
            recovery: self.recovery.then(|| RecoveryConfig {
                max_disconnection_duration: Duration::from_millis(
                    self.recovery_max_disconnection_duration,
                ),
                skip_middlewares: self.recovery_skip_middlewares,
                max_packets: self.recovery_max_packets,
                max_sessions: self.recovery_max_sessions,
            }),
        }
    }

    /// The server settings of one node.
    pub fn config(&self) -> Config {
        let defaults = Config::default();
        let path = |p: &str| (!p.is_empty()).then(|| p.to_owned());
        Config {
            node_id: self.id.map_or(defaults.node_id, |id| id.to_string()),
            path: self.path.clone(),
            engine: self.engine(),
            socketio: self.socketio(),
            https: match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => Some(Https {
                    cert: cert.clone(),
                    key: key.clone(),
                }),
                _ => None,
            },
            cookie: self.cookie.then(|| Cookie {
                name: self.cookie_name.clone(),
                path: self.cookie_path.clone(),
                http_only: self.cookie_http_only,
                same_site: self.cookie_same_site,
            }),
            cors_origins: (!self.cors_origin.is_empty()).then(|| self.cors_origin.clone()),
            cors_credentials: self.cors_credentials,
            max_handshakes_per_second: self.max_handshakes_per_second,
            trust_forwarded_for: self.trust_forwarded_for,
            health_path: path(&self.health_path),
            metrics_path: path(&self.metrics_path),
            shutdown_timeout: Duration::from_millis(self.shutdown_timeout),
            move_on_upgrade: self.move_on_upgrade,
            drain_timeout: Duration::from_millis(self.drain_timeout),
            drain_linger: Duration::from_millis(self.drain_linger),
            adapter: crate::adapter::AdapterConfig {
                max_age: Duration::from_millis(self.adapter_max_age),
                ..defaults.adapter
            },
        }
    }

    /// The members named by `peers`, when this is a cluster node.
    pub fn peer_map(&self) -> Option<Result<BTreeMap<u64, String>, String>> {
        self.peers.as_deref().map(parse_peers)
    }
}

/// A list, or one value alone (`NONSTICK_TRANSPORTS=websocket`, `cors_origin = "*"`).
fn one_or_many<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany<T> {
        Many(Vec<T>),
        One(T),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::Many(list) => list,
        OneOrMany::One(one) => vec![one],
    })
}

fn is_cookie_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
}

/// `1=host:port,2=host:port` to a map of node ids to addresses.
pub fn parse_peers(list: &str) -> Result<BTreeMap<u64, String>, String> {
    let peers: BTreeMap<u64, String> = list
        .split(',')
        .filter(|entry| !entry.trim().is_empty())
        .map(|entry| {
            let (id, addr) = entry
                .split_once('=')
                .ok_or_else(|| format!("{entry:?} is not ID=HOST:PORT"))?;
            let id = id
                .trim()
                .parse::<u64>()
                .map_err(|_| format!("{id:?} is not a node id"))?;
            Ok((id, addr.trim().to_owned()))
        })
        .collect::<Result<_, String>>()?;
    if peers.is_empty() {
        return Err("names no member".to_owned());
    }
    Ok(peers)
}
