//! Settings of one server process, whatever application it serves: [`Config`] as the library
//! takes it, and [`Settings`], every option under one name as files, the environment and the
//! command line give it.

pub mod flags;
pub mod settings;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::adapter::AdapterConfig;
use crate::engine::EngineConfig;
use crate::socketio::SocketIoConfig;
pub use settings::{Settings, SettingsError};

/// The server settings of one node: Engine.IO defaults of its mounts, the HTTP front, shutdown
/// and, on a cluster node, the bounds of what it sends to the other nodes. The application
/// (its namespaces, handlers and Socket.IO settings) is the program's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// This node's name, reported by `/healthz` (a cluster node's is its numeric id).
    pub node_id: String,
    /// Where [`crate::node::NodeBuilder::socketio`] serves Socket.IO (`/socket.io/`).
    pub path: String,
    /// Engine.IO settings of every mount that brings none of its own.
    pub engine: EngineConfig,
    /// Socket.IO settings for the program's [`crate::socketio::SocketIo`] servers (the
    /// program passes them on: `SocketIo::new(config.socketio.clone())`).
    pub socketio: SocketIoConfig,
    /// HTTPS on the client port, when set (else plain HTTP).
    pub https: Option<Https>,
    /// A sticky-session cookie set on polling handshakes (a cluster needs none; an external
    /// balancer that wants one can use it).
    pub cookie: Option<Cookie>,
    /// CORS origins of the Engine.IO endpoints: `None` for no CORS, `["*"]` for any origin.
    pub cors_origins: Option<Vec<String>>,
    /// Send `Access-Control-Allow-Credentials: true` with CORS headers.
    pub cors_credentials: bool,
    /// Most handshakes per second from one client address; 0 for no limit.
    pub max_handshakes_per_second: u32,
    /// Take a client's address from the last entry of `X-Forwarded-For` when there is one
    /// (the address the nearest proxy saw), else from the connection.
    pub trust_forwarded_for: bool,
    /// Where the health check is served (`None`: not served). 200 while the node can serve;
    /// 503 on a cluster node that cannot reach a Raft majority.
    pub health_path: Option<String>,
    /// Where the Prometheus counters are served (`None`: not served).
    pub metrics_path: Option<String>,
    /// How long a graceful shutdown waits for open connections before it drops them.
    pub shutdown_timeout: Duration,
    /// On a cluster node: a websocket for a polling session owned by another node takes the
    /// session with it (the owner migrates it here, so the upgrade and all that follows run
    /// with no hop). Off, or when the session cannot come, the websocket is relayed to the
    /// owner.
    pub move_on_upgrade: bool,
    /// On a cluster node that stops (SIGTERM, [`crate::node::Node::drain`]): how long it keeps
    /// moving its polling sessions to the other nodes before it gives up on the rest.
    pub drain_timeout: Duration,
    /// How long a drained node goes on serving before it stops: long enough for balancers'
    /// health checks to see it unhealthy and stop sending it requests, and for the nodes its
    /// websocket clients reconnect to to look their sockets up here.
    pub drain_linger: Duration,
    /// On a cluster node: bounds of the broadcasts and other requests sent to the other
    /// nodes.
    pub adapter: AdapterConfig,
}

impl Default for Config {
    /// The reference server's defaults: a random node name, reference engine settings, no
    /// cookie, no CORS; `/healthz` and `/metrics`.
    fn default() -> Config {
        Config {
            node_id: format!("node-{:08x}", rand::random::<u32>()),
            path: "/socket.io/".to_owned(),
            engine: EngineConfig::default(),
            socketio: SocketIoConfig::default(),
            https: None,
            cookie: None,
            cors_origins: None,
            cors_credentials: false,
            max_handshakes_per_second: 0,
            trust_forwarded_for: true,
            health_path: Some("/healthz".to_owned()),
            metrics_path: Some("/metrics".to_owned()),
            shutdown_timeout: Duration::from_secs(5),
            move_on_upgrade: true,
            drain_timeout: Duration::from_secs(10),
            drain_linger: Duration::from_secs(3),
            adapter: AdapterConfig::default(),
        }
    }
}

/// The PEM files of the client port's certificate chain and private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Https {
    /// The certificate chain, the node's own certificate first.
    pub cert: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The sticky-session cookie, as the reference server sets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cookie {
    /// Its name (`io`).
    pub name: String,
    /// Its `Path` (`/`).
    pub path: String,
    /// Whether it is `HttpOnly` (yes).
    pub http_only: bool,
    /// Its `SameSite` (`Lax`).
    pub same_site: SameSite,
}

impl Default for Cookie {
    fn default() -> Cookie {
        Cookie {
            name: "io".to_owned(),
            path: "/".to_owned(),
            http_only: true,
            same_site: SameSite::Lax,
        }
    }
}

impl Cookie {
    /// The `Set-Cookie` value naming session `sid`.
    pub fn header(&self, sid: &str) -> String {
        let http_only = if self.http_only { "; HttpOnly" } else { "" };
        let same_site = match self.same_site {
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
            // Browsers drop a `SameSite=None` cookie that is not `Secure`.
            SameSite::None => "None; Secure",
        };
        format!(
            "{}={sid}; Path={}{http_only}; SameSite={same_site}",
            self.name, self.path
        )
    }
}

/// The `SameSite` attribute of the cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SameSite {
    /// Sent with top-level navigations from other sites.
    Lax,
    /// Sent to its own site only.
    Strict,
    /// Sent with every request (and marked `Secure`).
    None,
}
