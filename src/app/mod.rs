//! Built-in applications: the demo app of the app contract and the protocol-suite profile.

pub mod echo;

use std::sync::Arc;
use std::time::Duration;

pub use crate::config::AppKind;
use crate::config::Config;
use crate::engine::{Engine, EngineConfig};
use crate::http::Mount;

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
            // TODO(socketio): also mount the Socket.IO test application of the suite at
            // `/socket.io/` once `crate::socketio` provides it.
            vec![Mount {
                path: "/engine.io/".to_owned(),
                engine: Engine::new(engine_config, Arc::new(echo::Echo)),
            }]
        }
        // TODO(socketio): mount the demo application (`app::demo`) at `/socket.io/`.
        AppKind::Demo => Vec::new(),
    }
}
