//! Wiring of one server process: build the engines and the HTTP front, run until shutdown.

use std::io;
use std::net::SocketAddr;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::app;
use crate::config::{AppKind, Config};
use crate::engine::Engine;
use crate::http::{self, Cors, CorsOrigins, HttpConfig, Mount, Page};
use crate::socketio::SocketIo;

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

/// Starts a node serving its configured built-in application on `listener`. Must be
/// called inside a Tokio runtime.
pub fn start(config: Config, listener: TcpListener) -> io::Result<RunningNode> {
    let mounts = app::mounts(config.app, &config);
    start_mounts(config, mounts, listener)
}

/// Starts a node serving the Socket.IO server `io` at `/socket.io/`, with the engine, HTTP
/// and shutdown settings of `config` (its `app` and the built-in app's settings are not
/// used). Must be called inside a Tokio runtime.
pub fn start_socketio(
    config: Config,
    io: SocketIo,
    listener: TcpListener,
) -> io::Result<RunningNode> {
    let mount = app::socketio_mount(config.engine.clone(), io);
    start_mounts(config, vec![mount], listener)
}

/// Serve `io` at `/socket.io/` on `listener` until SIGINT or SIGTERM, then shut down
/// gracefully. The shortest way to run a server from a program: reference defaults, no CORS,
/// no page, `/healthz` and `/metrics`.
pub async fn serve(listener: TcpListener, io: SocketIo) -> io::Result<()> {
    let config = Config {
        page: false,
        cors_origins: None,
        client_bundle: None,
        ..Config::new(AppKind::Demo)
    };
    let node = start_socketio(config, io, listener)?;
    shutdown_signal().await;
    node.shutdown().await
}

/// Resolves on SIGINT or SIGTERM (SIGINT only where there is no SIGTERM).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn start_mounts(
    config: Config,
    mounts: Vec<Mount>,
    listener: TcpListener,
) -> io::Result<RunningNode> {
    let addr = listener.local_addr()?;
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
            page: config.page.then(|| demo_page(&config)),
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

/// The demo chat page, with the browser client read from disk once. A missing bundle is not
/// fatal: the page then says how to install it.
fn demo_page(config: &Config) -> Page {
    let client_bundle = config.client_bundle.as_ref().and_then(|path| {
        std::fs::read(path)
            .inspect_err(|e| {
                tracing::warn!(
                    path = %path.display(),
                    "Socket.IO browser client not found ({e}); run `npm ci --prefix web`"
                );
            })
            .ok()
    });
    Page {
        html: include_str!("../web/chat.html"),
        client_bundle: client_bundle.map(Into::into),
    }
}
