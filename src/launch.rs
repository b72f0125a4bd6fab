//! A local cluster for development, demos and benchmarks: N node processes (`nonstick node`
//! with a built-in app, or a program of one's own that takes [`crate::node::NodeArgs`]) on
//! loopback ports, each with its own registry directory and a shared random secret, behind the
//! embedded balancer. `nonstick cluster` is this plus a signal handler.

use std::ffi::OsString;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

use crate::app::AppKind;
use crate::balancer::{self, BalancerConfig, Mode, ProbeConfig, RunningBalancer};
use crate::config::Settings;

/// How long the nodes may take to answer `/healthz` with 200 (Raft election included).
const READY_WITHIN: Duration = Duration::from_secs(30);
/// How long a node may take to stop after SIGTERM before it is killed: a drain takes up to
/// `Config::drain_timeout` (10 s by default) plus `drain_linger` (3 s).
const STOP_WITHIN: Duration = Duration::from_secs(20);

/// What to start.
#[derive(Debug, Clone)]
pub struct LocalCluster {
    /// How many nodes.
    pub nodes: u64,
    /// The balancer's address (unused without a balancer).
    pub listen: SocketAddr,
    /// Where the nodes keep their registries (`node-<id>` below it); a temporary directory,
    /// removed at shutdown, when `None`.
    pub data_dir: Option<PathBuf>,
    /// How the balancer picks a node; `None` starts no balancer (benchmarks put a balancer
    /// process or nginx in front of [`RunningCluster::nodes`]).
    pub mode: Option<Mode>,
    /// What every node runs.
    pub program: Program,
    /// Settings every node runs with, handed to them in a settings file (`--config`); the
    /// launcher gives each its own id, addresses, peers and data directory on top.
    pub settings: Option<Settings>,
    /// More arguments for every node (server settings such as `--ping-interval 5000`, or a
    /// program's own flags).
    pub node_args: Vec<OsString>,
    /// Nodes log warnings and errors only, and print nothing on stdout (for benchmarks, whose
    /// output is the report).
    pub quiet: bool,
}

/// The program of the node processes.
#[derive(Debug, Clone)]
pub enum Program {
    /// `<exe> node --app <app>`: the nonstick binary at `exe` serving a built-in application.
    BuiltIn {
        /// The nonstick binary.
        exe: PathBuf,
        /// The application.
        app: AppKind,
    },
    /// A program of one's own whose command line is [`crate::node::NodeArgs`] (flattened at
    /// its top level).
    Own(PathBuf),
}

/// A running local cluster.
pub struct RunningCluster {
    balancer: Option<RunningBalancer>,
    children: Vec<Child>,
    nodes: Vec<SocketAddr>,
    /// A directory we created and remove at shutdown.
    temporary: Option<PathBuf>,
    spawner: Spawner,
}

/// How to start each node's process (again).
struct Spawner {
    program: Program,
    threads: String,
    quiet: bool,
    peers: String,
    root: PathBuf,
    node_args: Vec<OsString>,
    secret: String,
    http: Vec<SocketAddr>,
    grpc: Vec<SocketAddr>,
}

impl Spawner {
    /// Starts node `index` (0 for node 1) on its ports and data directory.
    fn spawn(&self, index: usize) -> io::Result<Child> {
        let id = (index + 1).to_string();
        let mut command = match &self.program {
            Program::BuiltIn { exe, app } => {
                let mut command = Command::new(exe);
                command
                    .args(["--threads", &self.threads, "node"])
                    .args(["--app", app.name()]);
                command
            }
            Program::Own(exe) => {
                // Read by `#[tokio::main]` runtimes.
                let mut command = Command::new(exe);
                command.env("TOKIO_WORKER_THREADS", &self.threads);
                command
            }
        };
        if self.quiet {
            command
                .env("RUST_LOG", "warn,openraft=off")
                .stdout(std::process::Stdio::null());
        }
        command
            .args(["--id", &id])
            .args(["--listen", &self.http[index].to_string()])
            .args(["--grpc", &self.grpc[index].to_string()])
            .args(["--peers", &self.peers])
            .arg("--data-dir")
            .arg(self.root.join(format!("node-{id}")))
            .args(&self.node_args)
            .env("NONSTICK_SECRET", &self.secret)
            .kill_on_drop(true);
        stop_with_this_process(&mut command);
        command.spawn()
    }
}

/// Start the nodes and the balancer in front of them, if any; return once each node answers
/// `/healthz` with 200.
pub async fn start(plan: LocalCluster) -> io::Result<RunningCluster> {
    let (root, temporary) = match &plan.data_dir {
        Some(dir) => (dir.clone(), None),
        None => {
            let dir = std::env::temp_dir().join(format!(
                "nonstick-cluster-{}-{:08x}",
                std::process::id(),
                rand::random::<u32>()
            ));
            (dir.clone(), Some(dir))
        }
    };
    std::fs::create_dir_all(&root)?;
    let mut node_args = Vec::new();
    if let Some(settings) = &plan.settings {
        let file = root.join("settings.toml");
        std::fs::write(&file, settings.to_toml().map_err(io::Error::other)?)?;
        node_args.push(OsString::from("--config"));
        node_args.push(file.into_os_string());
    }
    node_args.extend(plan.node_args.iter().cloned());
    let secret = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
    let ids: Vec<u64> = (1..=plan.nodes).collect();
    let mut http = Vec::new();
    let mut grpc = Vec::new();
    for _ in &ids {
        http.push(free_port().await?);
        grpc.push(free_port().await?);
    }
    let peers = ids
        .iter()
        .zip(&grpc)
        .map(|(id, addr)| format!("{id}={addr}"))
        .collect::<Vec<_>>()
        .join(",");
    // The nodes share this machine: one runtime thread per CPU in each would have them
    // preempt one another (measured in docs/benchmarks.md), so each gets an equal share.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let spawner = Spawner {
        program: plan.program.clone(),
        threads: (cpus / ids.len().max(1)).max(1).to_string(),
        quiet: plan.quiet,
        peers,
        root: root.clone(),
        node_args,
        secret,
        http: http.clone(),
        grpc: grpc.clone(),
    };
    let mut children = Vec::new();
    for index in 0..ids.len() {
        children.push(spawner.spawn(index)?);
    }
    let mut cluster = RunningCluster {
        balancer: None,
        children,
        nodes: http,
        temporary,
        spawner,
    };
    for node in cluster.nodes.clone() {
        if let Err(e) = wait_ready(node).await {
            cluster.stop_nodes().await;
            return Err(e);
        }
    }
    if let Some(mode) = plan.mode {
        // A node that dies is left out at once and comes back once `/healthz` says so.
        let mut config = BalancerConfig::new(cluster.nodes.clone(), mode);
        config.health.probe = Some(ProbeConfig::default());
        let listener = TcpListener::bind(plan.listen).await?;
        cluster.balancer = Some(balancer::start(config, listener)?);
    }
    Ok(cluster)
}

impl RunningCluster {
    /// The balancer's address: the one clients use (`None` without a balancer).
    pub fn addr(&self) -> Option<SocketAddr> {
        self.balancer.as_ref().map(RunningBalancer::addr)
    }

    /// The nodes' HTTP addresses, node 1 first.
    pub fn nodes(&self) -> &[SocketAddr] {
        &self.nodes
    }

    /// The nodes' peer gRPC addresses, node 1 first (for `nonstick member` and `nonstick
    /// drain`).
    pub fn grpc_addrs(&self) -> &[SocketAddr] {
        &self.spawner.grpc
    }

    /// The cluster secret the nodes were given (in `NONSTICK_SECRET`), for admin commands.
    pub fn secret(&self) -> &str {
        &self.spawner.secret
    }

    /// Waits for node `index` (0 for node 1) to exit by itself (after a drain), at most
    /// `limit`.
    pub async fn exited(&mut self, index: usize, limit: Duration) -> io::Result<()> {
        let child = self
            .children
            .get_mut(index)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such node"))?;
        match tokio::time::timeout(limit, child.wait()).await {
            Ok(status) => status.map(|_| ()),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the node is still running",
            )),
        }
    }

    /// The nodes' process ids (for memory measurements).
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().filter_map(Child::id).collect()
    }

    /// Asks node `index` (0 for node 1) to stop the way a service manager does (SIGTERM: it
    /// drains, then exits) and waits for it to exit, killing it after a bounded wait.
    pub async fn terminate(&mut self, index: usize) -> io::Result<()> {
        let child = self
            .children
            .get_mut(index)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such node"))?;
        signal(child, Signal::Terminate);
        if tokio::time::timeout(STOP_WITHIN, child.wait())
            .await
            .is_err()
        {
            child.kill().await?;
        }
        Ok(())
    }

    /// Kills node `index` (0 for node 1) at once with SIGKILL, the way a crash ends it: no
    /// session is closed, no peer is told. [`RunningCluster::shutdown`] still cleans up.
    pub async fn kill(&mut self, index: usize) -> io::Result<()> {
        let child = self
            .children
            .get_mut(index)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such node"))?;
        child.kill().await
    }

    /// Stops node `index` (0 for node 1) without ending it (SIGSTOP), the way a long GC pause,
    /// a swapped-out or a suspended VM stops a process: its connections stay open, nothing
    /// answers. [`RunningCluster::resume`] lets it run again.
    pub fn pause(&self, index: usize) -> io::Result<()> {
        self.signal_node(index, Signal::Pause)
    }

    /// Lets node `index`, stopped by [`RunningCluster::pause`], run again (SIGCONT).
    pub fn resume(&self, index: usize) -> io::Result<()> {
        self.signal_node(index, Signal::Resume)
    }

    fn signal_node(&self, index: usize, what: Signal) -> io::Result<()> {
        let child = self
            .children
            .get(index)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such node"))?;
        signal(child, what);
        Ok(())
    }

    /// Starts node `index` (0 for node 1) again, on its ports and data directory, after it
    /// exited (or was killed); returns once it answers `/healthz` with 200.
    pub async fn restart(&mut self, index: usize) -> io::Result<()> {
        let child = self.spawner.spawn(index)?;
        let slot = self
            .children
            .get_mut(index)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such node"))?;
        *slot = child;
        wait_ready(self.nodes[index]).await
    }

    /// A rolling restart: each node in turn is stopped the way a deploy stops it (SIGTERM:
    /// it drains) and started again, the next one only once it is healthy.
    pub async fn roll(&mut self) -> io::Result<()> {
        for index in 0..self.children.len() {
            self.terminate(index).await?;
            self.restart(index).await?;
        }
        Ok(())
    }

    /// Stop the balancer, then every node (SIGTERM, then a kill after a bounded wait), and
    /// remove the temporary registry directory.
    pub async fn shutdown(mut self) -> io::Result<()> {
        self.stop_nodes().await;
        let result = match self.balancer.take() {
            Some(balancer) => balancer.shutdown().await,
            None => Ok(()),
        };
        if let Some(dir) = self.temporary.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
        result
    }

    async fn stop_nodes(&mut self) {
        stop_all(&mut self.children).await;
    }
}

/// Ask every child to stop at once (SIGINT: all of them stop, so none hands its sessions to
/// another), then wait for each, killing it after a bounded wait.
pub(crate) async fn stop_all(children: &mut [Child]) {
    for child in children.iter() {
        signal(child, Signal::Interrupt);
        // One paused (SIGSTOP) would keep the interrupt pending until it is killed.
        signal(child, Signal::Resume);
    }
    for child in children.iter_mut() {
        if tokio::time::timeout(STOP_WITHIN, child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
}

/// Have the node started by `command` stop (SIGINT: at once) when this process ends, however it
/// ends: killed with SIGKILL, it kills no child itself.
fn stop_with_this_process(command: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        let launcher = std::process::id();
        // SAFETY: the closure runs in the forked child before exec and calls only
        // async-signal-safe functions (prctl, getppid, _exit); it allocates nothing.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // This process ended before the request took effect: no signal will come.
                if u32::try_from(libc::getppid()).ok() != Some(launcher) {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = command;
}

/// A loopback port that was free a moment ago (the child binds it right after).
pub(crate) async fn free_port() -> io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0").await?.local_addr()
}

/// How a child is asked to stop.
#[derive(Clone, Copy)]
enum Signal {
    /// SIGINT: stop now.
    Interrupt,
    /// SIGTERM: drain, then stop.
    Terminate,
    /// SIGSTOP: run no more, hold every socket open.
    Pause,
    /// SIGCONT: run again.
    Resume,
}

/// Ask a child to stop.
fn signal(child: &Child, signal: Signal) {
    #[cfg(unix)]
    if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
        let number = match signal {
            Signal::Interrupt => libc::SIGINT,
            Signal::Terminate => libc::SIGTERM,
            Signal::Pause => libc::SIGSTOP,
            Signal::Resume => libc::SIGCONT,
        };
        // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped) has no memory
        // effects; at worst it fails with ESRCH.
        unsafe {
            libc::kill(pid, number);
        }
    }
    #[cfg(not(unix))]
    let _ = (child, signal);
}

/// Poll `GET /healthz` until it answers 200, at most [`READY_WITHIN`].
pub(crate) async fn wait_ready(node: SocketAddr) -> io::Result<()> {
    let until = tokio::time::Instant::now() + READY_WITHIN;
    loop {
        if healthy(node).await {
            return Ok(());
        }
        if tokio::time::Instant::now() > until {
            return Err(io::Error::other(format!(
                "node {node} was not ready within {READY_WITHIN:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn healthy(node: SocketAddr) -> bool {
    let probe = async {
        let mut stream = TcpStream::connect(node).await?;
        stream
            .write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        io::Result::Ok(head.ends_with(b"200"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), probe).await,
        Ok(Ok(true))
    )
}
