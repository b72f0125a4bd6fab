//! Wiring of one server process: build the engines and the HTTP front, run until shutdown.

use std::io;
use std::net::SocketAddr;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::app;
use crate::config::Config;
use crate::engine::Engine;
use crate::http::{self, Cors, CorsOrigins, HttpConfig};

/// A node serving HTTP on its listener. Stop it with [`RunningNode::shutdown`]; dropping
/// it stops it too, abruptly.
#[derive(Debug)]
pub struct RunningNode {
    addr: SocketAddr,
    engines: Vec<Engine>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<io::Result<()>>>,
    shutdown_timeout: std::time::Duration,
}

/// Starts a node on `listener`. Must be called inside a Tokio runtime.
pub fn start(config: Config, listener: TcpListener) -> io::Result<RunningNode> {
    let addr = listener.local_addr()?;
    let mounts = app::mounts(config.app, &config);
    let engines = mounts.iter().map(|m| m.engine.clone()).collect();
    let cors = config.cors_origins.as_ref().map(|origins| Cors {
        origins: if origins.iter().any(|o| o == "*") {
            CorsOrigins::Any
        } else {
            CorsOrigins::List(origins.clone())
        },
        credentials: config.cors_credentials,
    });
    let router = http::router(
        mounts,
        HttpConfig {
            node_id: config.node_id.clone(),
            cors,
            cookie: config.cookie.then(|| "io".to_owned()),
        },
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let listener = listener.tap_io(|tcp| {
        // Small Engine.IO packets must not wait for Nagle.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY failed: {e}");
        }
    });
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    let server = tokio::spawn(async move {
        axum::serve(listener, service)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    tracing::info!(%addr, node = %config.node_id, "listening");
    Ok(RunningNode {
        addr,
        engines,
        stop: Some(stop),
        server: Some(server),
        shutdown_timeout: config.shutdown_timeout,
    })
}

impl RunningNode {
    /// The address the node listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The engines of the node's mounts.
    pub fn engines(&self) -> &[Engine] {
        &self.engines
    }

    /// Graceful stop: stop accepting, close every session (parked long-polls get `1`,
    /// websockets are closed), then wait a bounded time for connections to finish.
    pub async fn shutdown(mut self) -> io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        for engine in &self.engines {
            engine.shutdown();
        }
        let Some(mut server) = self.server.take() else {
            return Ok(());
        };
        match tokio::time::timeout(self.shutdown_timeout, &mut server).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(io::Error::other(join)),
            Err(_) => {
                server.abort();
                Ok(())
            }
        }
    }
}

impl Drop for RunningNode {
    fn drop(&mut self) {
        for engine in &self.engines {
            engine.shutdown();
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}
