//! Built-in applications: the demo app of the app contract and the protocol-suite profile.

pub mod demo;
pub mod echo;
pub mod sio_suite;

use std::sync::Arc;
use std::time::Duration;

pub use crate::config::AppKind;
use crate::config::Config;
use crate::engine::{Engine, EngineConfig};
use crate::http::Mount;
use crate::socketio::{RecoveryConfig, SocketIo, SocketIoConfig};

/// Where Socket.IO is served, as in the reference server.
pub const SOCKETIO_PATH: &str = "/socket.io/";

/// The Engine.IO mounts of an application. Must be called inside a Tokio runtime.
pub fn mounts(kind: AppKind, config: &Config) -> Vec<Mount> {
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
                Mount {
                    path: "/engine.io/".to_owned(),
                    engine: Engine::new(engine_config.clone(), Arc::new(echo::Echo)),
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

/// Mount a Socket.IO server at [`SOCKETIO_PATH`]. Must be called inside a Tokio runtime.
pub fn socketio_mount(engine: EngineConfig, io: SocketIo) -> Mount {
    Mount {
        path: SOCKETIO_PATH.to_owned(),
        engine: Engine::new(engine, Arc::new(io)),
    }
}
