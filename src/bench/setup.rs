//! The setups a comparison starts and stops itself, all on loopback ports: nonstick clusters
//! behind the embedded balancer or nginx, a single nonstick node, and the Node socket.io
//! baselines (one process, or three behind nginx `hash $remote_addr` sharing a Redis adapter).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::cpu::Process;
use crate::app::AppKind;
use crate::balancer::Mode;
use crate::launch::{self, LocalCluster, Program, RunningCluster, free_port, stop_all, wait_ready};

/// A setup of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupKind {
    /// nonstick, 3 nodes, embedded balancer round-robin: the product.
    RoundRobin,
    /// nonstick, 3 nodes, embedded balancer sticky by sid: isolates the cost of forwarding.
    Sticky,
    /// nonstick, 3 nodes, nginx round-robin.
    NginxRoundRobin,
    /// nonstick, 3 nodes, nginx `hash $remote_addr`.
    NginxHash,
    /// Node socket.io ×3 with the Redis adapter behind nginx `hash $remote_addr`: what users
    /// run today.
    NodeCluster,
    /// One nonstick node.
    Single,
    /// One Node socket.io process.
    NodeSingle,
}

impl SetupKind {
    /// Every setup, in report order.
    pub const ALL: [SetupKind; 7] = [
        SetupKind::RoundRobin,
        SetupKind::Sticky,
        SetupKind::NginxRoundRobin,
        SetupKind::NginxHash,
        SetupKind::NodeCluster,
        SetupKind::Single,
        SetupKind::NodeSingle,
    ];

    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            SetupKind::RoundRobin => "nonstick-rr",
            SetupKind::Sticky => "nonstick-sticky",
            SetupKind::NginxRoundRobin => "nonstick-nginx-rr",
            SetupKind::NginxHash => "nonstick-nginx-hash",
            SetupKind::NodeCluster => "node-redis-nginx-hash",
            SetupKind::Single => "nonstick-single",
            SetupKind::NodeSingle => "node-single",
        }
    }

    /// The setup called `name`.
    pub fn parse(name: &str) -> Option<SetupKind> {
        SetupKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether this is a nonstick setup (which must answer no `Session ID unknown`).
    pub fn is_nonstick(self) -> bool {
        !matches!(self, SetupKind::NodeCluster | SetupKind::NodeSingle)
    }
}

/// Where the programs a setup needs are.
#[derive(Debug, Clone)]
pub struct Tools {
    /// The `nonstick` binary.
    pub nonstick: PathBuf,
    /// `node` (Node 20+), for the Node baselines.
    pub node: PathBuf,
    /// The repository root (for `tests/clients/reference-server.mjs` and its `node_modules`).
    pub repo: PathBuf,
    /// `nginx`.
    pub nginx: PathBuf,
    /// `redis-server`.
    pub redis: PathBuf,
}

impl Tools {
    /// Why `kind` cannot run here, if it cannot.
    pub fn missing_for(&self, kind: SetupKind) -> Option<String> {
        let needs_nginx = matches!(
            kind,
            SetupKind::NginxRoundRobin | SetupKind::NginxHash | SetupKind::NodeCluster
        );
        let needs_node = matches!(kind, SetupKind::NodeCluster | SetupKind::NodeSingle);
        let reference = self.repo.join("tests/clients/node_modules/socket.io");
        if needs_nginx && !runs(&self.nginx) {
            return Some(format!("nginx not found at {}", self.nginx.display()));
        }
        if needs_node && (!runs(&self.node) || !reference.exists()) {
            return Some("node or tests/clients/node_modules missing (npm ci)".to_owned());
        }
        if kind == SetupKind::NodeCluster && !runs(&self.redis) {
            return Some(format!(
                "redis-server not found at {}",
                self.redis.display()
            ));
        }
        None
    }
}

/// Whether `program` can be started (`--version`).
fn runs(program: &Path) -> bool {
    std::process::Command::new(program)
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// A running setup: the address clients use and the server processes to measure.
pub struct Setup {
    /// Which setup.
    pub kind: SetupKind,
    /// The address clients connect to.
    pub addr: SocketAddr,
    /// The Socket.IO server processes (not the balancer), for memory measurements.
    pub pids: Vec<u32>,
    /// Every process of the setup with its role, for CPU time per operation.
    pub processes: Vec<Process>,
    cluster: Option<RunningCluster>,
    children: Vec<Child>,
    _dir: Option<tempfile::TempDir>,
}

impl Setup {
    /// Start `kind`.
    pub async fn start(kind: SetupKind, tools: &Tools) -> std::io::Result<Setup> {
        match kind {
            SetupKind::RoundRobin | SetupKind::Sticky => {
                let mode = if kind == SetupKind::Sticky {
                    Mode::StickySid
                } else {
                    Mode::RoundRobin
                };
                let cluster = nonstick_cluster(tools).await?;
                let (balancer, addr) = balancer(tools, cluster.nodes(), mode).await?;
                let mut processes = nodes(&cluster.pids());
                processes.extend(process("balancer", &balancer));
                Ok(Setup {
                    kind,
                    addr,
                    pids: cluster.pids(),
                    processes,
                    cluster: Some(cluster),
                    children: vec![balancer],
                    _dir: None,
                })
            }
            SetupKind::NginxRoundRobin | SetupKind::NginxHash => {
                let cluster = nonstick_cluster(tools).await?;
                let dir = tempfile::tempdir()?;
                let hash = kind == SetupKind::NginxHash;
                let (nginx, addr) = nginx(&tools.nginx, dir.path(), cluster.nodes(), hash).await?;
                let mut processes = nodes(&cluster.pids());
                processes.extend(process("nginx", &nginx));
                Ok(Setup {
                    kind,
                    addr,
                    pids: cluster.pids(),
                    processes,
                    cluster: Some(cluster),
                    children: vec![nginx],
                    _dir: Some(dir),
                })
            }
            SetupKind::Single => {
                let addr = free_port().await?;
                let child = Command::new(&tools.nonstick)
                    .args(["serve", "--listen", &addr.to_string(), "--app", "demo"])
                    .env("RUST_LOG", "warn")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .kill_on_drop(true)
                    .spawn()?;
                // Stopped on drop (kill_on_drop) if it never gets ready.
                let setup = Setup::one_process(kind, addr, child);
                wait_ready(addr).await?;
                Ok(setup)
            }
            SetupKind::NodeSingle => {
                let (child, addr) = reference_server(tools, "node", None).await?;
                Ok(Setup::one_process(kind, addr, child))
            }
            SetupKind::NodeCluster => {
                let dir = tempfile::tempdir()?;
                let redis_addr = free_port().await?;
                let redis = Command::new(&tools.redis)
                    .args(["--port", &redis_addr.port().to_string()])
                    .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                    .args(["--daemonize", "no"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .kill_on_drop(true)
                    .spawn()?;
                let mut processes: Vec<Process> = process("redis", &redis).into_iter().collect();
                let mut children = vec![redis];
                wait_listening(redis_addr).await?;
                let url = format!("redis://{redis_addr}");
                let mut nodes = Vec::new();
                let mut pids = Vec::new();
                for id in 1..=3 {
                    let (child, addr) =
                        reference_server(tools, &id.to_string(), Some(&url)).await?;
                    pids.extend(child.id());
                    nodes.push(addr);
                    children.push(child);
                }
                let (nginx, addr) = nginx(&tools.nginx, dir.path(), &nodes, true).await?;
                processes.splice(0..0, self::nodes(&pids));
                processes.extend(process("nginx", &nginx));
                children.push(nginx);
                Ok(Setup {
                    kind,
                    addr,
                    pids,
                    processes,
                    cluster: None,
                    children,
                    _dir: Some(dir),
                })
            }
        }
    }

    fn one_process(kind: SetupKind, addr: SocketAddr, child: Child) -> Setup {
        Setup {
            kind,
            addr,
            pids: child.id().into_iter().collect(),
            processes: process("server", &child).into_iter().collect(),
            cluster: None,
            children: vec![child],
            _dir: None,
        }
    }

    /// The nonstick nodes' counters of how sessions met their websockets, summed over the
    /// nodes (`relays`: websockets relayed to another node's session, `pulls`: sessions that
    /// moved to their websocket's node); `None` for a setup without nonstick nodes or when a
    /// node's `/metrics` did not answer.
    pub async fn moves(&self) -> Option<Moves> {
        let cluster = self.cluster.as_ref()?;
        let mut sum = Moves::default();
        for node in cluster.nodes() {
            let text = metrics_text(*node).await?;
            sum.relays += counter(&text, "nonstick_websocket_relays_total")?;
            sum.pulls += counter(&text, "nonstick_sessions_pulled_total")?;
        }
        Some(sum)
    }

    /// Stop every process of the setup (SIGTERM, then a kill after a bounded wait).
    pub async fn stop(mut self) {
        stop_all(&mut self.children).await;
        if let Some(cluster) = self.cluster.take() {
            let _ = cluster.shutdown().await;
        }
    }
}

/// How sessions met their websockets on a cluster (see [`Setup::moves`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Moves {
    /// Websockets relayed to the node owning their session.
    pub relays: f64,
    /// Sessions moved to the node their websocket arrived at.
    pub pulls: f64,
}

/// A node's `/metrics` page, or `None` when it does not answer within a second.
async fn metrics_text(addr: SocketAddr) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut body = Vec::new();
        stream.take(1 << 20).read_to_end(&mut body).await.ok()?;
        String::from_utf8(body).ok()
    };
    tokio::time::timeout(Duration::from_secs(1), fetch)
        .await
        .ok()
        .flatten()
}

/// The value of the sample `name` (without labels) in a Prometheus text page.
fn counter(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

/// The server processes `pids` as `node1`, `node2`, … .
fn nodes(pids: &[u32]) -> Vec<Process> {
    (1..)
        .zip(pids)
        .map(|(i, pid)| Process {
            role: format!("node{i}"),
            pid: *pid,
        })
        .collect()
}

/// `child` in the role `role`, if it still runs.
fn process(role: &str, child: &Child) -> Option<Process> {
    child.id().map(|pid| Process {
        role: role.to_owned(),
        pid,
    })
}

/// Three nodes without a balancer: each setup puts its own in front.
async fn nonstick_cluster(tools: &Tools) -> std::io::Result<RunningCluster> {
    launch::start(LocalCluster {
        nodes: 3,
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: None,
        mode: None,
        program: Program::BuiltIn {
            exe: tools.nonstick.clone(),
            app: AppKind::Demo,
        },
        settings: None,
        node_args: Vec::new(),
        quiet: true,
    })
    .await
}

/// Start the embedded balancer as a process of its own (`nonstick balancer`), in front of
/// `backends`. Like nginx in the other setups, it gets one thread and its own process: run
/// inside the harness it would share the load generator's runtime.
async fn balancer(
    tools: &Tools,
    backends: &[SocketAddr],
    mode: Mode,
) -> std::io::Result<(Child, SocketAddr)> {
    let addr = free_port().await?;
    let backends = backends
        .iter()
        .map(SocketAddr::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let child = Command::new(&tools.nonstick)
        .args(["--threads", "1", "balancer", "--listen", &addr.to_string()])
        .args(["--backends", &backends, "--mode", mode.as_str()])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    wait_listening(addr).await?;
    Ok((child, addr))
}

/// Start `tests/clients/reference-server.mjs` and read the port it prints.
async fn reference_server(
    tools: &Tools,
    node_id: &str,
    redis: Option<&str>,
) -> std::io::Result<(Child, SocketAddr)> {
    let mut command = Command::new(&tools.node);
    command
        .arg(tools.repo.join("tests/clients/reference-server.mjs"))
        .args(["--port", "0", "--node-id", node_id]);
    if let Some(url) = redis {
        command.args(["--redis", url]);
    }
    // The server exits when its stdin closes: a harness that dies cannot leak it.
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| std::io::Error::other("no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .map_err(|_| std::io::Error::other("reference server did not start in time"))??
        .unwrap_or_default();
    let port: u16 = line
        .strip_prefix("LISTENING ")
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("unexpected first line {line:?}")))?;
    Ok((child, SocketAddr::from(([127, 0, 0, 1], port))))
}

/// Start `program` (nginx) in front of `backends`, round-robin or `hash $remote_addr
/// consistent`, with the websocket headers and proxy timeouts above pingInterval + pingTimeout;
/// its files live in `dir`. The caller stops the returned child.
pub async fn nginx(
    program: &Path,
    dir: &Path,
    backends: &[SocketAddr],
    hash: bool,
) -> std::io::Result<(Child, SocketAddr)> {
    let addr = free_port().await?;
    let conf = nginx_conf(dir, addr, backends, hash);
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let child = Command::new(program)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf_path)
        .args(["-g", "daemon off;"])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    wait_listening(addr).await?;
    Ok((child, addr))
}

/// The configuration of a foreground nginx whose files all live in `dir`.
pub fn nginx_conf(dir: &Path, listen: SocketAddr, backends: &[SocketAddr], hash: bool) -> String {
    let servers: String = backends
        .iter()
        .map(|b| format!("    server {b} max_fails=1 fail_timeout=5s;\n"))
        .collect();
    let balance = if hash {
        "    hash $remote_addr consistent;\n"
    } else {
        ""
    };
    let d = dir.display();
    format!(
        "master_process off;\nworker_rlimit_nofile 40000;\nerror_log {d}/error.log;\n\
         pid {d}/nginx.pid;\nevents {{ worker_connections 16384; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n\
           proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
           uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
           map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}\n\
           upstream backends {{\n{balance}{servers}    keepalive 64;\n  }}\n\
           server {{\n    listen {listen};\n    location / {{\n\
             proxy_pass http://backends;\n      proxy_http_version 1.1;\n\
             proxy_set_header Upgrade $http_upgrade;\n\
             proxy_set_header Connection $connection_upgrade;\n\
             proxy_set_header X-Nonstick-Request-Id $request_id;\n\
             proxy_read_timeout 75s;\n      proxy_send_timeout 75s;\n\
             proxy_buffering off;\n      client_max_body_size 2m;\n\
             proxy_next_upstream error timeout;\n    }}\n  }}\n}}\n"
    )
}

/// Wait until something accepts connections at `addr` (at most 10 s).
async fn wait_listening(addr: SocketAddr) -> std::io::Result<()> {
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if tokio::time::Instant::now() > until {
            return Err(std::io::Error::other(format!("nothing listens on {addr}")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
