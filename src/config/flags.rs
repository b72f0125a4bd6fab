//! The command-line side of [`Settings`](super::Settings): clap arguments named after the settings
//! (`ping_interval` is `--ping-interval`), every one optional so that only what was given
//! overrides the file and the environment. Flatten them into any clap command line.
//!
//! A switch takes an optional value: `--cookie` turns it on, `--cookie=false` off.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Serialize;
use serde_json::{Map, Value};

use super::SameSite;
use super::settings::Transport;
use crate::logs::LogFormat;
use crate::socketio::Parser;
use crate::socketio::admin_ui::AdminUiMode;

/// The flags that were given, as settings: every field of `flags` that is not `None`.
pub fn given(flags: &impl Serialize) -> Map<String, Value> {
    match serde_json::to_value(flags) {
        Ok(Value::Object(map)) => map.into_iter().filter(|(_, v)| !v.is_null()).collect(),
        _ => Map::new(),
    }
}

/// The server's settings: Node socket.io's options, nonstick's limits, how the node stops,
/// and the settings file they override.
#[derive(clap::Args, Debug, Clone, Default, Serialize)]
pub struct ServerFlags {
    /// TOML file of settings; flags and NONSTICK_* variables override it.
    #[arg(long, env = "NONSTICK_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Where Engine.IO / Socket.IO is served [default: /socket.io/].
    #[arg(long)]
    pub path: Option<String>,
    /// Milliseconds between two pings [default: 25000].
    #[arg(long, value_name = "MS")]
    pub ping_interval: Option<u64>,
    /// Milliseconds a client has to answer a ping [default: 20000].
    #[arg(long, value_name = "MS")]
    pub ping_timeout: Option<u64>,
    /// Milliseconds an upgrade may take [default: 10000].
    #[arg(long, value_name = "MS")]
    pub upgrade_timeout: Option<u64>,
    /// Largest accepted POST body or websocket message [default: 1000000].
    #[arg(long, value_name = "BYTES")]
    pub max_http_buffer_size: Option<usize>,
    /// Transports clients may use, comma separated [default: polling,websocket].
    #[arg(long, value_delimiter = ',')]
    pub transports: Option<Vec<Transport>>,
    /// Whether polling sessions may upgrade to websocket [default: true].
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub allow_upgrades: Option<bool>,
    /// Set the sticky-session cookie on polling handshakes [default: false].
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub cookie: Option<bool>,
    /// The cookie's name [default: io].
    #[arg(long)]
    pub cookie_name: Option<String>,
    /// The cookie's path [default: /].
    #[arg(long)]
    pub cookie_path: Option<String>,
    /// The cookie's HttpOnly attribute [default: true].
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub cookie_http_only: Option<bool>,
    /// The cookie's SameSite attribute [default: lax].
    #[arg(long)]
    pub cookie_same_site: Option<SameSite>,
    /// Allowed CORS origin, repeatable; `*` for any [default: none, `*` for the built-in apps].
    #[arg(long)]
    pub cors_origin: Option<Vec<String>>,
    /// Send Access-Control-Allow-Credentials: true [default: false].
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub cors_credentials: Option<bool>,
    /// Milliseconds a client may take to join a namespace [default: 45000].
    #[arg(long, value_name = "MS")]
    pub connect_timeout: Option<u64>,
    /// Connection state recovery [default: true].
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub recovery: Option<bool>,
    /// Milliseconds a disconnected socket can be recovered [default: 120000].
    #[arg(long, value_name = "MS")]
    pub recovery_max_disconnection_duration: Option<u64>,
    /// A recovered socket skips the namespace middleware [default: true].
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub recovery_skip_middlewares: Option<bool>,
    /// Most queued outbound messages per session [default: 10000].
    #[arg(long)]
    pub max_buffered_packets: Option<usize>,
    /// Most queued outbound bytes per session [default: 4 × max-http-buffer-size].
    #[arg(long, value_name = "BYTES")]
    pub max_buffered_bytes: Option<usize>,
    /// Most live sessions per mount [default: 100000].
    #[arg(long)]
    pub max_sessions: Option<usize>,
    /// Most binary attachments per packet [default: 10].
    #[arg(long)]
    pub max_attachments: Option<usize>,
    /// Most packets the recovery log keeps per namespace [default: 100000].
    #[arg(long)]
    pub recovery_max_packets: Option<usize>,
    /// Most disconnected sockets kept for recovery per namespace [default: 100000].
    #[arg(long)]
    pub recovery_max_sessions: Option<usize>,
    /// Milliseconds a server emit with an ack waits by default [default: 10000].
    #[arg(long, value_name = "MS")]
    pub ack_timeout: Option<u64>,
    /// How packets are written: `default` or `msgpack` (socket.io-msgpack-parser); clients
    /// must use the same [default: default].
    #[arg(long)]
    pub parser: Option<Parser>,
    /// Most namespaces one connection may join [default: 100].
    #[arg(long)]
    pub max_namespaces: Option<usize>,
    /// Most rooms one socket may be in [default: 1000].
    #[arg(long)]
    pub max_rooms: Option<usize>,
    /// Most handshakes per second from one client address; 0 for no limit [default: 0].
    #[arg(long)]
    pub max_handshakes_per_second: Option<u32>,
    /// A client's address is the last of X-Forwarded-For when there is one [default: true].
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub trust_forwarded_for: Option<bool>,
    /// Milliseconds a request for another node may wait before it is dropped [default: 5000].
    #[arg(long, value_name = "MS")]
    pub adapter_max_age: Option<u64>,
    /// A websocket for a session owned by another node takes the session [default: true].
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub move_on_upgrade: Option<bool>,
    /// Milliseconds a stopping node keeps moving its sessions away [default: 10000].
    #[arg(long, value_name = "MS")]
    pub drain_timeout: Option<u64>,
    /// Milliseconds a drained node goes on serving before it stops [default: 3000].
    #[arg(long, value_name = "MS")]
    pub drain_linger: Option<u64>,
    /// Milliseconds a graceful shutdown waits for open connections [default: 5000].
    #[arg(long, value_name = "MS")]
    pub shutdown_timeout: Option<u64>,
    /// Where the health check is served; empty for none [default: /healthz].
    #[arg(long)]
    pub health_path: Option<String>,
    /// Where the Prometheus metrics are served; empty for none [default: /metrics].
    #[arg(long)]
    pub metrics_path: Option<String>,
    /// HTTPS on the client port: the certificate chain (PEM).
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// HTTPS on the client port: the private key (PEM).
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// Logs as `text` or `json` lines [default: text].
    #[arg(long)]
    pub log_format: Option<LogFormat>,
}

/// Where this node is and, with `--peers`, its place in a cluster. Without `--peers` it is a
/// node of its own.
#[derive(clap::Args, Debug, Clone, Default, Serialize)]
pub struct NodeFlags {
    /// HTTP address (Engine.IO/Socket.IO, /healthz, /metrics, the program's own routes)
    /// [default: 127.0.0.1:3000].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// This node's id (a positive integer, unique in the cluster).
    #[arg(long)]
    pub id: Option<u64>,
    /// Address of the peer gRPC server (forwarding, broadcasts, Raft).
    #[arg(long)]
    pub grpc: Option<SocketAddr>,
    /// Every member's gRPC address, this node included: `1=host:port,2=host:port,...`. Makes
    /// this a cluster node (then --id, --grpc and --data-dir are required).
    #[arg(long)]
    pub peers: Option<String>,
    /// This node's gRPC address as the others reach it (default: its entry in --peers).
    #[arg(long)]
    pub advertise: Option<String>,
    /// Directory of this node's registry (Raft log and state).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// File holding the cluster secret (else the NONSTICK_SECRET environment variable).
    #[arg(long)]
    pub secret_file: Option<PathBuf>,
    /// File holding the secret being rotated out, still accepted from the other nodes (else
    /// NONSTICK_PREVIOUS_SECRET).
    #[arg(long)]
    pub previous_secret_file: Option<PathBuf>,
    /// Mutual TLS between nodes: the CA of every node's certificate (PEM).
    #[arg(long, requires_all = ["peer_tls_cert", "peer_tls_key"])]
    pub peer_tls_ca: Option<PathBuf>,
    /// Mutual TLS between nodes: this node's certificate (PEM).
    #[arg(long)]
    pub peer_tls_cert: Option<PathBuf>,
    /// Mutual TLS between nodes: this node's private key (PEM).
    #[arg(long)]
    pub peer_tls_key: Option<PathBuf>,
    /// Join a running cluster (add it with `nonstick member add`) instead of forming one.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub join: Option<bool>,
}

/// Which built-in application `nonstick` serves, and its own settings.
#[derive(clap::Args, Debug, Clone, Default, Serialize)]
pub struct AppFlags {
    /// Application: `demo` or `protocol-suite` [default: demo].
    #[arg(long)]
    pub app: Option<String>,
    /// The `auth.token` the demo's `/admin` namespace requires [default: secret].
    #[arg(long)]
    pub admin_token: Option<String>,
    /// The Socket.IO browser client served to the demo page.
    #[arg(long)]
    pub client_bundle: Option<PathBuf>,
    /// Speak the Socket.IO Admin UI's protocol and serve the UI at /admin-ui/ [default: false].
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub admin_ui: Option<bool>,
    /// The admin namespace the UI connects to [default: /admin-ui].
    #[arg(long)]
    pub admin_ui_namespace: Option<String>,
    /// The username the UI must give, with admin_ui_password (the bcrypt hash of its password)
    /// in the settings file or NONSTICK_ADMIN_UI_PASSWORD [default: none].
    #[arg(long)]
    pub admin_ui_username: Option<String>,
    /// Take no commands from the UI [default: false].
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub admin_ui_readonly: Option<bool>,
    /// development: every socket, room change and event; production: counts only
    /// [default: development].
    #[arg(long)]
    pub admin_ui_mode: Option<AdminUiMode>,
    /// Where the UI's files are [default: those `npm ci --prefix web` installs].
    #[arg(long)]
    pub admin_ui_dir: Option<PathBuf>,
}
