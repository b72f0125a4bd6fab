//! The embedded per-request HTTP/WebSocket balancer: a small reverse proxy for local cluster
//! runs and for the sticky controls of the benchmarks.
//!
//! It picks a backend for every HTTP *request* (not every TCP connection), so consecutive
//! requests of one keep-alive client connection spread over the backends the way nginx
//! `upstream` round-robin does. Bodies stream both ways, a long-poll is held as long as the
//! backend holds it, and a client that goes away drops the backend request with it (the
//! engine relies on that to notice aborted long-polls). Upgrades (websockets) are relayed:
//! the `101` is passed back and the two upgraded connections are spliced byte for byte.
//!
//! - [`start`] runs a balancer on a listener and returns a [`RunningBalancer`].
//! - [`Mode`] chooses round-robin, sticky by Engine.IO `sid`, or sticky by client address.
//! - [`HealthConfig`] sets the passive check (a refusing backend is skipped for a while) and
//!   the optional active `/healthz` probe.

mod body;
mod health;
mod proxy;
mod route;
mod sid;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use self::proxy::Proxy;

/// How the balancer chooses a backend for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Every request goes to the next healthy backend in turn (no affinity).
    #[default]
    RoundRobin,
    /// A request carrying `?sid=` goes to the backend that answered the polling handshake
    /// which created that sid; anything else (handshakes, unknown sids) is round-robin.
    StickySid,
    /// A hash of the client's IP address picks the backend (like nginx `hash $remote_addr`);
    /// when that backend is marked down, the next healthy one after it is used.
    StickyIp,
}

impl Mode {
    /// The name used on command lines and in reports: `round-robin`, `sticky-sid`,
    /// `sticky-ip`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::RoundRobin => "round-robin",
            Mode::StickySid => "sticky-sid",
            Mode::StickyIp => "sticky-ip",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing a [`Mode`] from an unknown name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown balancer mode {0:?} (expected round-robin, sticky-sid or sticky-ip)")]
pub struct UnknownMode(pub String);

impl FromStr for Mode {
    type Err = UnknownMode;

    fn from_str(s: &str) -> Result<Mode, UnknownMode> {
        match s {
            "round-robin" => Ok(Mode::RoundRobin),
            "sticky-sid" => Ok(Mode::StickySid),
            "sticky-ip" => Ok(Mode::StickyIp),
            other => Err(UnknownMode(other.to_owned())),
        }
    }
}

/// Backend health checking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// How long a backend that refused a connection (or failed a probe) is left out of the
    /// rotation for requests that are not pinned to it.
    pub cooldown: Duration,
    /// Upper bound for opening a TCP connection to a backend; past it the request gets `502`
    /// and the backend is marked down like a refusing one.
    pub connect_timeout: Duration,
    /// Upper bound for a backend to start answering a request; past it the backend is taken
    /// as stopped (a frozen process accepts connections and answers nothing): marked down,
    /// and the request goes to the next backend like one whose connection broke. Must exceed
    /// the longest a backend holds a request on purpose: Engine.IO's `pingInterval` (25 s
    /// by default) for a long-poll.
    pub response_timeout: Duration,
    /// The optional active probe; `None` means passive checking only: a backend comes back
    /// when its cooldown is over or when a request to it succeeds. With a probe, a backend
    /// marked down (refused connection or failed probe) comes back only through a
    /// successful probe or the end of its mark.
    pub probe: Option<ProbeConfig>,
}

impl Default for HealthConfig {
    fn default() -> HealthConfig {
        HealthConfig {
            cooldown: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(30),
            probe: None,
        }
    }
}

/// The active probe: `GET <path>` on every backend, every `interval`. A `2xx` within
/// `timeout` marks the backend up, anything else marks it down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeConfig {
    /// Path and query probed, e.g. `/healthz`.
    pub path: String,
    /// Time between two rounds of probes.
    pub interval: Duration,
    /// Upper bound for one probe, connect included.
    pub timeout: Duration,
}

impl Default for ProbeConfig {
    fn default() -> ProbeConfig {
        ProbeConfig {
            path: "/healthz".to_owned(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
        }
    }
}

/// Bounds of the table that [`Mode::StickySid`] learns from handshakes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidTableConfig {
    /// The most sids remembered at once; when half of it is new since the last rotation, the
    /// older half is forgotten.
    pub capacity: usize,
    /// A sid not seen for between one and two of these is forgotten. Must exceed the
    /// servers' `pingInterval + pingTimeout`, the longest a live polling session stays silent.
    pub idle_ttl: Duration,
}

impl Default for SidTableConfig {
    fn default() -> SidTableConfig {
        SidTableConfig {
            capacity: 100_000,
            idle_ttl: Duration::from_secs(300),
        }
    }
}

/// Everything a balancer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalancerConfig {
    /// The backends, in rotation order. Must not be empty.
    pub backends: Vec<SocketAddr>,
    /// How a backend is chosen for a request.
    pub mode: Mode,
    /// Passive and active health checking.
    pub health: HealthConfig,
    /// Bounds of the sid table of [`Mode::StickySid`] (unused by the other modes).
    pub sids: SidTableConfig,
    /// How long [`RunningBalancer::shutdown`] lets requests under way finish before it
    /// closes their connections.
    pub shutdown_grace: Duration,
    /// Request bodies that declare at most this many bytes are read whole before they are
    /// sent, so that a request whose backend refused the connection can go to the next one.
    /// Larger ones are streamed to one backend. Engine.IO POSTs are at most
    /// `maxHttpBufferSize` (1 MB by default).
    pub max_replay_body: usize,
}

impl BalancerConfig {
    /// A balancer over `backends` in `mode`, with default health, sid table and shutdown
    /// settings.
    pub fn new(backends: Vec<SocketAddr>, mode: Mode) -> BalancerConfig {
        BalancerConfig {
            backends,
            mode,
            health: HealthConfig::default(),
            sids: SidTableConfig::default(),
            shutdown_grace: Duration::from_secs(2),
            max_replay_body: 2 << 20,
        }
    }
}

/// A balancer serving on its listener. Stop it with [`RunningBalancer::shutdown`]; dropping
/// it stops it too, abruptly (connections and relayed websockets are closed).
#[derive(Debug)]
pub struct RunningBalancer {
    addr: SocketAddr,
    /// Sending `true` asks every task to stop; dropping the sender does the same, which is
    /// how dropping the balancer reaches the websocket relays and the probe.
    stop: watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
}

/// Starts a balancer on `listener` in front of `config.backends`. Must be called inside a
/// Tokio runtime. Fails with `InvalidInput` when there are no backends or the probe path is
/// not an absolute path, and when the listener has no local address.
pub fn start(config: BalancerConfig, listener: TcpListener) -> io::Result<RunningBalancer> {
    if config.backends.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a balancer needs at least one backend",
        ));
    }
    let probe = match &config.health.probe {
        Some(probe) => Some((probe.clone(), health::probe_path(probe)?)),
        None => None,
    };
    let addr = listener.local_addr()?;
    let (stop, stopped) = watch::channel(false);
    let proxy = Arc::new(Proxy::new(&config, stopped.clone()));
    if let Some((probe, path)) = probe {
        tokio::spawn(health::probe_loop(
            proxy.clone(),
            probe,
            path,
            stopped.clone(),
        ));
    }
    let server = tokio::spawn(accept_loop(listener, proxy, stopped, config.shutdown_grace));
    tracing::info!(%addr, mode = %config.mode, backends = ?config.backends, "balancer listening");
    Ok(RunningBalancer {
        addr,
        stop,
        server: Some(server),
    })
}

impl RunningBalancer {
    /// The address the balancer listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Graceful stop: stop accepting, close idle client connections, let requests under way
    /// finish for at most the configured grace, then close everything (websocket relays are
    /// closed at once).
    pub async fn shutdown(mut self) -> io::Result<()> {
        let _ = self.stop.send(true);
        match self.server.take() {
            Some(server) => server.await.map_err(io::Error::other),
            None => Ok(()),
        }
    }
}

impl Drop for RunningBalancer {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    mut stopped: watch::Receiver<bool>,
    grace: Duration,
) {
    // The connection tasks live in this set so that aborting this task (drop of the
    // balancer) aborts them too.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(serve_connection(stream, peer, proxy.clone(), stopped.clone()));
                }
                Err(e) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    tracing::warn!("balancer accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, drained).await.is_err() {
        tracing::debug!(
            open = connections.len(),
            "balancer grace over, closing connections"
        );
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    proxy: Arc<Proxy>,
    mut stopped: watch::Receiver<bool>,
) {
    // Small Engine.IO packets must not wait for Nagle.
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!("TCP_NODELAY failed: {e}");
    }
    let service = service_fn(move |request| {
        let proxy = proxy.clone();
        async move { Ok::<_, std::convert::Infallible>(proxy.handle(peer, request).await) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = stopped.changed() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, "balancer client connection ended: {e}");
    }
}
