//! Built-in applications: the demo app of the app contract and the protocol-suite profile.

pub mod demo;
pub mod echo;
pub mod sio_suite;

use std::sync::Arc;
use std::time::Duration;

pub use crate::config::AppKind;
use crate::config::Config;
use crate::engine::{Application, EngineConfig};
use crate::socketio::{RecoveryConfig, SocketIo, SocketIoConfig};

/// One application to serve at a path, with the Engine.IO settings of its mount.
#[derive(Clone)]
pub struct AppMount {
    /// The path, with its trailing slash (e.g. `/socket.io/`).
    pub path: String,
    /// Engine.IO settings of this mount.
    pub engine: EngineConfig,
    /// What runs on top of the engine.
    pub app: Arc<dyn Application>,
    /// The Socket.IO server, when `app` is one (a cluster connects it to the other nodes).
    pub socketio: Option<SocketIo>,
}

/// Where Socket.IO is served, as in the reference server.
pub const SOCKETIO_PATH: &str = "/socket.io/";

/// The mounts of a built-in application.
pub fn mounts(kind: AppKind, config: &Config) -> Vec<AppMount> {
    match kind {
        AppKind::ProtocolSuite => {
            // The official suites hardcode these heartbeat values.
            let engine_config = EngineConfig {
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
                AppMount {
                    path: "/engine.io/".to_owned(),
                    engine: engine_config.clone(),
                    app: Arc::new(echo::Echo),
                    socketio: None,
                },
                socketio_mount(engine_config, io),
            ]
        }
        AppKind::Demo => {
            let io = SocketIo::new(socketio_config(config));
            demo::register(
                &io,
                &demo::DemoOptions {
                    node_id: config.node_id.clone(),
                    admin_token: config.admin_token.clone(),
                    ..demo::DemoOptions::default()
                },
            );
            vec![socketio_mount(config.engine.clone(), io)]
        }
    }
}

/// The Socket.IO settings a node's config implies.
pub fn socketio_config(config: &Config) -> SocketIoConfig {
    SocketIoConfig {
        recovery: config.recovery.then(RecoveryConfig::default),
        ..SocketIoConfig::default()
    }
}

/// A Socket.IO server at [`SOCKETIO_PATH`].
pub fn socketio_mount(engine: EngineConfig, io: SocketIo) -> AppMount {
    AppMount {
        path: SOCKETIO_PATH.to_owned(),
        engine,
        app: Arc::new(io.clone()),
        socketio: Some(io),
    }
}
