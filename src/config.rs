//! Settings of one server process.

use std::path::PathBuf;
use std::time::Duration;

use crate::adapter::AdapterConfig;
use crate::engine::EngineConfig;

/// Where `npm ci` in `web/` puts the browser client, relative to the repository root.
pub const DEFAULT_CLIENT_BUNDLE: &str = "web/node_modules/socket.io-client/dist/socket.io.min.js";

/// Which built-in application a node serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppKind {
    /// The demo application of the app contract, Socket.IO at `/socket.io/`.
    Demo,
    /// What the official protocol suites expect: raw Engine.IO echo at `/engine.io/`
    /// and the Socket.IO test application at `/socket.io/`, 300/200 ms heartbeats.
    ProtocolSuite,
}

impl AppKind {
    /// Parses the `--app` value.
    pub fn parse(name: &str) -> Option<AppKind> {
        match name {
            "demo" => Some(AppKind::Demo),
            "protocol-suite" => Some(AppKind::ProtocolSuite),
            _ => None,
        }
    }
}

/// Everything one node needs to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// This node's id, reported by `/healthz`.
    pub node_id: String,
    /// The application to serve.
    pub app: AppKind,
    /// Engine settings of the application's mounts (the protocol-suite profile
    /// overrides the heartbeat to 300/200 ms).
    pub engine: EngineConfig,
    /// Set the `io` sticky-session cookie on polling handshakes.
    pub cookie: bool,
    /// CORS origins: `None` for no CORS, `["*"]` for any origin.
    pub cors_origins: Option<Vec<String>>,
    /// Send `Access-Control-Allow-Credentials: true` with CORS headers.
    pub cors_credentials: bool,
    /// How long a graceful shutdown waits for open connections before it drops them.
    pub shutdown_timeout: Duration,
    /// Connection state recovery for the Socket.IO application (on for the demo, off for
    /// the protocol suite, whose byte-exact checks a `pid` and offsets would break).
    pub recovery: bool,
    /// The `auth.token` the demo's `/admin` namespace requires.
    pub admin_token: String,
    /// Serve the demo chat page at `/` (on for the demo app).
    pub page: bool,
    /// The Socket.IO browser client (`socket.io.min.js` of the socket.io-client package)
    /// served at `/socket.io/socket.io.min.js` for the demo page; read once at start.
    pub client_bundle: Option<PathBuf>,
    /// On a cluster node: bounds of the broadcasts and other requests sent to the other
    /// nodes.
    pub adapter: AdapterConfig,
}

impl Config {
    /// Defaults for `app`: a random node id, reference engine settings, no cookie, CORS for
    /// any origin.
    pub fn new(app: AppKind) -> Config {
        Config {
            node_id: format!("node-{:08x}", rand::random::<u32>()),
            app,
            engine: EngineConfig::default(),
            cookie: false,
            // The app contract allows any origin for the demo; the suites' browser runner
            // needs `*` too.
            cors_origins: Some(vec!["*".to_owned()]),
            cors_credentials: false,
            shutdown_timeout: Duration::from_secs(5),
            recovery: app == AppKind::Demo,
            admin_token: "secret".to_owned(),
            page: app == AppKind::Demo,
            client_bundle: Some(PathBuf::from(DEFAULT_CLIENT_BUNDLE)),
            adapter: AdapterConfig::default(),
        }
    }
}
