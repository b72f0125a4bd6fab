//! Built-in applications: the demo app of the app contract and the protocol-suite profile.
//! They are mounted through the public node API ([`crate::node::Mount`], [`crate::node::NodeBuilder`]),
//! exactly as a program mounts its own.

pub mod admin_page;
pub mod cluster_page;
pub mod demo;
pub mod echo;
pub mod page;
pub mod sio_suite;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::{Extension, Router};

use crate::config::{Config, Settings};
use crate::engine::EngineConfig;
use crate::node::{Mount, Node, SOCKETIO_PATH};
use crate::socketio::admin_ui::{self, AdminUiConfig, EngineCounts};
use crate::socketio::{SocketIo, SocketIoConfig};

pub use crate::config::settings::DEFAULT_CLIENT_BUNDLE;

/// Which built-in application a node serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppKind {
    /// The demo application of the app contract, Socket.IO at `/socket.io/`, and its chat
    /// page at `/`.
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

    /// The `--app` value.
    pub fn name(self) -> &'static str {
        match self {
            AppKind::Demo => "demo",
            AppKind::ProtocolSuite => "protocol-suite",
        }
    }
}

/// A built-in application and its own settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltIn {
    /// Which one.
    pub kind: AppKind,
    /// The `auth.token` the demo's `/admin` namespace requires.
    pub admin_token: String,
    /// Serve the demo chat page at `/` (on for the demo app).
    pub page: bool,
    /// The Socket.IO browser client (`socket.io.min.js` of the socket.io-client package)
    /// served at `/socket.io/socket.io.min.js` for the demo page; read once at start.
    pub client_bundle: Option<PathBuf>,
    /// The Socket.IO Admin UI on the demo's server (its `server_id` is set to the node's),
    /// and where the UI's files are, when on.
    pub admin_ui: Option<(AdminUiConfig, PathBuf)>,
}

impl BuiltIn {
    /// `kind` with its defaults.
    pub fn new(kind: AppKind) -> BuiltIn {
        BuiltIn {
            kind,
            admin_token: "secret".to_owned(),
            page: kind == AppKind::Demo,
            client_bundle: Some(PathBuf::from(DEFAULT_CLIENT_BUNDLE)),
            admin_ui: None,
        }
    }

    /// The server settings the built-in applications start from: the reference defaults,
    /// with CORS for any origin (the app contract allows any origin; the suites' browser
    /// runner needs it too) and connection state recovery on.
    pub fn base_config() -> Config {
        BuiltIn::base_settings().config()
    }

    /// [`Settings::default`] with the built-in applications' CORS: any origin.
    pub fn base_settings() -> Settings {
        Settings {
            cors_origin: vec!["*".to_owned()],
            ..Settings::default()
        }
    }

    /// The application `settings` name, with their token and client bundle.
    pub fn from_settings(settings: &Settings) -> Result<BuiltIn, String> {
        let kind = AppKind::parse(&settings.app).ok_or_else(|| {
            format!(
                "app: unknown application {:?} (demo, protocol-suite)",
                settings.app
            )
        })?;
        let admin_ui = settings.admin_ui.then(|| {
            let config = AdminUiConfig {
                namespace: settings.admin_ui_namespace.clone(),
                server_id: String::new(),
                auth: settings
                    .admin_ui_username
                    .clone()
                    .zip(settings.admin_ui_password.clone()),
                readonly: settings.admin_ui_readonly,
                mode: settings.admin_ui_mode,
            };
            (config, settings.admin_ui_dir.clone())
        });
        Ok(BuiltIn {
            admin_token: settings.admin_token.clone(),
            client_bundle: Some(settings.client_bundle.clone()),
            admin_ui,
            ..BuiltIn::new(kind)
        })
    }

    /// The application's mounts on a node with these settings (the demo reports
    /// `config.node_id` and serves at `config.path` with `config.socketio`; the protocol
    /// suite has the fixed paths and settings the suites expect: no recovery, whose `pid` and
    /// offsets its byte-exact checks would break).
    pub fn mounts(&self, config: &Config) -> Vec<Mount> {
        match self.kind {
            AppKind::ProtocolSuite => {
                // The official suites hardcode these heartbeat values.
                let engine = EngineConfig {
                    ping_interval: Duration::from_millis(300),
                    ping_timeout: Duration::from_millis(200),
                    ..config.engine.clone()
                };
                let io = SocketIo::new(SocketIoConfig {
                    connect_timeout: Duration::from_secs(1),
                    recovery: None,
                    ..SocketIoConfig::default()
                });
                sio_suite::register(&io);
                vec![
                    Mount::engine_io("/engine.io/", Arc::new(echo::Echo))
                        .with_engine(engine.clone()),
                    Mount::socketio(SOCKETIO_PATH, io).with_engine(engine),
                ]
            }
            AppKind::Demo => {
                let io = SocketIo::new(config.socketio.clone());
                cluster_page::register(&io, &config.node_id);
                demo::register(
                    &io,
                    &demo::DemoOptions {
                        node_id: config.node_id.clone(),
                        admin_token: self.admin_token.clone(),
                        ..demo::DemoOptions::default()
                    },
                );
                vec![Mount::socketio(&config.path, io)]
            }
        }
    }

    /// The application's own HTTP routes on `node`, to serve next to the node's router: the
    /// demo's chat page and cluster page, and the Admin UI, when on.
    pub fn routes(&self, node: &Node) -> Router {
        let Some(io) = node.socketio(&node.config().path) else {
            return Router::new();
        };
        let mut routes = Router::new();
        if self.page {
            routes = page::routes(self.client_bundle.as_deref())
                .merge(cluster_page::routes(node.observer(), io.clone()));
        }
        if let Some((config, dir)) = &self.admin_ui {
            let config = AdminUiConfig {
                server_id: node.config().node_id.clone(),
                ..config.clone()
            };
            let engine = node.engine(&node.config().path);
            let clients =
                Arc::new(move || engine.as_ref().map(EngineCounts::of).unwrap_or_default());
            let instrument = Arc::new(admin_ui::instrument(&io, config, clients));
            routes = routes
                .merge(admin_page::routes(dir))
                .layer(Extension(instrument));
        }
        routes
    }
}
