//! The `nonstick` command line: parse flags, set up tracing, call the library.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use std::io;
use std::path::PathBuf;

use nonstick::app::{AppKind, BuiltIn};
use nonstick::balancer::{BalancerConfig, Mode, ProbeConfig, UnknownMode};
use nonstick::launch::{self, LocalCluster, Program};
use nonstick::node::{NodeArgs, NodeBuilder, ServerArgs};
use nonstick::registry::admin::{MemberChange, administer};

#[derive(Parser)]
#[command(
    name = "nonstick",
    version,
    about = "Socket.IO server without sticky sessions"
)]
struct Cli {
    /// Worker threads of this process's runtime [default: one per CPU]. `nonstick cluster`
    /// gives each of its nodes an equal share of the CPUs.
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve an application on a single node until SIGINT or SIGTERM.
    Serve(Serve),
    /// Run one node of a cluster until SIGINT or SIGTERM.
    Node(Node),
    /// Run a local cluster (node processes and the balancer) until Ctrl-C.
    Cluster(Cluster),
    /// Run the embedded per-request balancer until SIGINT or SIGTERM.
    Balancer(Balancer),
    /// Read or change the membership of a running cluster.
    Member(Member),
    /// Drain a node of a running cluster and stop it (as SIGTERM does): its sessions move to
    /// the other nodes.
    Drain(Drain),
    /// Load-test a server, or compare setups in one run.
    Bench(Bench),
}

/// Load generation against the demo app.
#[derive(clap::Args)]
struct Bench {
    #[command(subcommand)]
    action: BenchAction,
}

#[derive(Subcommand)]
enum BenchAction {
    /// Open sessions at a given concurrency: connects/s and latency.
    Connect(BenchRun),
    /// Clients in a closed loop emitting `echo` with an ack: acks/s and round-trip times.
    Echo(BenchRun),
    /// Receivers in one room and a sender: fan-out latency, losses, duplicates.
    Broadcast(BenchRun),
    /// Idle sessions held open: the servers' resident memory per session.
    Idle(BenchRun),
    /// Start every setup, run the scenarios interleaved, print medians and ratios.
    Compare(BenchCompare),
}

/// One scenario against a running server.
#[derive(clap::Args)]
struct BenchRun {
    /// The server or balancer, e.g. http://127.0.0.1:8080 (loopback only).
    #[arg(long)]
    url: String,
    /// polling, websocket or upgrade.
    #[arg(long, default_value = "polling")]
    transport: nonstick::bench::Transport,
    /// Sessions (connect, idle).
    #[arg(long, default_value_t = 1000)]
    sessions: usize,
    /// Handshakes at once (connect) or clients (echo).
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Bytes of the echo payload.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Seconds the echo runs, or idle sessions are held.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Receivers of the broadcast.
    #[arg(long, default_value_t = 100)]
    receivers: usize,
    /// Messages of the broadcast.
    #[arg(long, default_value_t = 200)]
    messages: usize,
    /// Milliseconds between two broadcast messages.
    #[arg(long, default_value_t = 20)]
    interval_ms: u64,
    /// Spread clients over source addresses 127.0.0.2-127.0.0.254 (for IP-hash balancers).
    #[arg(long)]
    spread_sources: bool,
    /// Server process ids whose resident memory `idle` measures.
    #[arg(long, value_delimiter = ',')]
    pids: Vec<u32>,
}

/// A comparison of setups in one run.
#[derive(clap::Args)]
struct BenchCompare {
    /// Setups, in report order (default: all that can run here): nonstick-rr, nonstick-sticky,
    /// nonstick-nginx-rr, nonstick-nginx-hash, node-redis-nginx-hash, nonstick-single,
    /// node-single.
    #[arg(long, value_delimiter = ',')]
    setups: Vec<String>,
    /// Rounds of interleaved runs.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Tiny sizes (seconds in all): checks the harness, measures nothing.
    #[arg(long)]
    smoke: bool,
    /// Write report.md, results.json and the SVG charts here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The repository root (for the Node reference server).
    #[arg(long, default_value = ".")]
    repo: PathBuf,
}

#[derive(clap::Args)]
struct Serve {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Node id reported by /healthz (random by default).
    #[arg(long)]
    node_id: Option<String>,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    app: AppArgs,
}

/// One node of a cluster (or, without --peers, a node of its own).
#[derive(clap::Args)]
struct Node {
    #[command(flatten)]
    node: NodeArgs,
    #[command(flatten)]
    app: AppArgs,
}

/// Read or change the membership of a running cluster.
#[derive(clap::Args)]
struct Member {
    #[command(subcommand)]
    action: MemberAction,
    /// gRPC address of any member (changes are sent on to the leader).
    #[arg(long, global = true)]
    via: Option<String>,
    /// File holding the cluster secret (else the NONSTICK_SECRET environment variable).
    #[arg(long, global = true)]
    secret_file: Option<PathBuf>,
}

/// Drain a node of a running cluster and stop it.
#[derive(clap::Args)]
struct Drain {
    /// The node's id.
    #[arg(long)]
    node: u64,
    /// gRPC address of any member.
    #[arg(long)]
    via: String,
    /// File holding the cluster secret (else the NONSTICK_SECRET environment variable).
    #[arg(long)]
    secret_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum MemberAction {
    /// List the members, voters and learners, and the leader.
    List,
    /// Add a node (started with `nonstick node --join`) as a learner.
    Add {
        /// The new node's id.
        #[arg(long)]
        id: u64,
        /// Its gRPC address.
        #[arg(long)]
        addr: String,
    },
    /// Make a learner a voter.
    Promote {
        /// The node's id.
        #[arg(long)]
        id: u64,
    },
    /// Remove a node from the cluster.
    Remove {
        /// The node's id.
        #[arg(long)]
        id: u64,
    },
}

/// A local cluster: node processes behind the embedded balancer. SIGHUP restarts the nodes one
/// by one (each drains, starts again on its data directory and is healthy before the next): a
/// rolling deploy to watch on the chat page.
#[derive(clap::Args)]
struct Cluster {
    /// How many nodes.
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Address of the balancer, the one address clients use.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Keep the nodes' registries here (node-1, node-2, ...) instead of a temporary directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// How the balancer picks a node: `round-robin`, `sticky-sid` or `sticky-ip` (`sticky` is
    /// `sticky-sid`).
    #[arg(long, default_value = "round-robin", value_parser = parse_mode)]
    balancer: Mode,
    /// Application: `demo` or `protocol-suite`.
    #[arg(long, default_value = "demo", value_parser = parse_app)]
    app: AppKind,
    /// Run this program as the nodes instead of `nonstick node --app …`: a program of one's
    /// own whose command line takes the node flags (nonstick::node::NodeArgs).
    #[arg(long, conflicts_with = "app")]
    program: Option<PathBuf>,
    /// More arguments for every node, after `--` (e.g. `-- --ping-interval 5000`).
    #[arg(last = true)]
    node_args: Vec<std::ffi::OsString>,
}

/// The embedded balancer alone.
#[derive(clap::Args)]
struct Balancer {
    /// Address to listen on.
    #[arg(long)]
    listen: SocketAddr,
    /// Backend HTTP addresses, comma separated.
    #[arg(long, value_delimiter = ',', required = true)]
    backends: Vec<SocketAddr>,
    /// `round-robin`, `sticky-sid` or `sticky-ip`.
    #[arg(long, default_value = "round-robin", value_parser = parse_mode)]
    mode: Mode,
    /// Path probed on every backend each second; a backend that fails it is left out until
    /// it answers 2xx again.
    #[arg(long, default_value = "/healthz")]
    probe: String,
    /// No active probe: a backend that refused a connection is left out for a cooldown only.
    #[arg(long)]
    no_probe: bool,
}

/// Which built-in application, and its own settings.
#[derive(clap::Args)]
struct AppArgs {
    /// Application: `demo` or `protocol-suite`.
    #[arg(long, default_value = "demo", value_parser = parse_app)]
    app: AppKind,
    /// Turn connection state recovery off (it is on for the demo app).
    #[arg(long)]
    no_recovery: bool,
    /// The `auth.token` the demo's `/admin` namespace requires.
    #[arg(long)]
    admin_token: Option<String>,
    /// The Socket.IO browser client served to the demo page.
    #[arg(long, default_value = nonstick::app::DEFAULT_CLIENT_BUNDLE)]
    client_bundle: PathBuf,
}

impl AppArgs {
    fn built_in(&self) -> BuiltIn {
        let mut app = BuiltIn::new(self.app);
        if self.no_recovery {
            app.recovery = false;
        }
        if let Some(token) = &self.admin_token {
            app.admin_token = token.clone();
        }
        app.client_bundle = Some(self.client_bundle.clone());
        app
    }
}

fn parse_app(name: &str) -> Result<AppKind, String> {
    AppKind::parse(name).ok_or_else(|| format!("unknown app {name:?} (demo, protocol-suite)"))
}

fn parse_mode(name: &str) -> Result<Mode, String> {
    match name {
        "sticky" => Ok(Mode::StickySid),
        other => other.parse().map_err(|e: UnknownMode| e.to_string()),
    }
}

/// Serve a built-in application on the node `builder` describes, the way a program serves its
/// own: its mounts on the node, its routes next to the node's router.
async fn serve_built_in(builder: NodeBuilder, app: &AppArgs) -> io::Result<()> {
    let app = app.built_in();
    let mounts = app.mounts(builder.config());
    let node = builder.mounts(mounts).build().await?;
    let routes = app.routes().merge(node.router());
    if let Some(addr) = node.http_addr() {
        println!("node {} listening on {addr}", node.config().node_id);
    }
    node.serve(routes).await
}

async fn serve(args: Serve) -> io::Result<()> {
    let mut config = args.server.apply(BuiltIn::base_config());
    if let Some(id) = &args.node_id {
        config.node_id = id.clone();
    }
    serve_built_in(NodeBuilder::new(config).listen(args.listen), &args.app).await
}

async fn node(args: Node) -> io::Result<()> {
    let builder = args.node.builder_with(BuiltIn::base_config())?;
    serve_built_in(builder, &args.app).await
}

async fn drain(args: Drain) -> io::Result<()> {
    let secret = nonstick::node::secret(args.secret_file.as_ref())?;
    nonstick::registry::admin::drain(&args.via, secret, args.node)
        .await
        .map_err(|status| io::Error::other(status.message().to_owned()))?;
    println!(
        "node {} is draining; it stops once its sessions have moved",
        args.node
    );
    Ok(())
}

async fn member(args: Member) -> io::Result<()> {
    let via = args
        .via
        .ok_or_else(|| io::Error::other("--via HOST:PORT (a member's gRPC address) is required"))?;
    let change = match args.action {
        MemberAction::List => None,
        MemberAction::Add { id, addr } => Some(MemberChange::Add { id, addr }),
        MemberAction::Promote { id } => Some(MemberChange::Promote(id)),
        MemberAction::Remove { id } => Some(MemberChange::Remove(id)),
    };
    let secret = nonstick::node::secret(args.secret_file.as_ref())?;
    let reply = administer(&via, secret, change)
        .await
        .map_err(|status| io::Error::other(status.message().to_owned()))?;
    for m in &reply.members {
        let role = if m.voter { "voter" } else { "learner" };
        let leader = if reply.leader == Some(m.id) {
            " (leader)"
        } else {
            ""
        };
        println!("{} {} {role}{leader}", m.id, m.addr);
    }
    Ok(())
}

async fn cluster(args: Cluster) -> io::Result<()> {
    let program = match args.program {
        Some(path) => Program::Own(path),
        None => Program::BuiltIn {
            exe: std::env::current_exe()?,
            app: args.app,
        },
    };
    let plan = LocalCluster {
        nodes: args.nodes,
        listen: args.listen,
        data_dir: args.data_dir,
        mode: Some(args.balancer),
        program,
        node_args: args.node_args,
        quiet: false,
    };
    let mut running = launch::start(plan).await?;
    if let Some(addr) = running.addr() {
        println!(
            "cluster of {} nodes behind {addr} ({}): http://{addr}/",
            args.nodes, args.balancer
        );
    }
    println!(
        "SIGHUP (kill -HUP {}) restarts the nodes one by one",
        std::process::id()
    );
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let stop = nonstick::node::shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            Some(()) = hangups.recv() => {
                println!("rolling restart: each node drains, starts again, and is healthy before the next");
                match running.roll().await {
                    Ok(()) => println!("rolling restart done"),
                    Err(e) => eprintln!("rolling restart stopped: {e}"),
                }
            }
        }
    }
    running.shutdown().await
}

async fn balancer(args: Balancer) -> io::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let mut config = BalancerConfig::new(args.backends, args.mode);
    if !args.no_probe {
        config.health.probe = Some(ProbeConfig {
            path: args.probe,
            ..ProbeConfig::default()
        });
    }
    let running = nonstick::balancer::start(config, listener)?;
    println!("balancer ({}) listening on {}", args.mode, running.addr());
    nonstick::node::shutdown_signal().await;
    running.shutdown().await
}

async fn bench(args: Bench) -> io::Result<()> {
    use nonstick::bench::scenario;
    let report = match args.action {
        BenchAction::Compare(compare) => return bench_compare(compare).await,
        BenchAction::Connect(run) => {
            let limit = Duration::from_secs(600);
            let load = bench_load(&run)?;
            scenario::connect(&load, run.transport, run.sessions, run.concurrency, limit).await
        }
        BenchAction::Echo(run) => {
            let (load, duration) = (bench_load(&run)?, run.duration());
            scenario::echo(&load, run.transport, run.concurrency, run.payload, duration).await
        }
        BenchAction::Broadcast(run) => {
            let interval = Duration::from_millis(run.interval_ms);
            let load = bench_load(&run)?;
            scenario::broadcast(&load, run.transport, run.receivers, run.messages, interval).await
        }
        BenchAction::Idle(run) => {
            let (load, duration) = (bench_load(&run)?, run.duration());
            scenario::idle(&load, run.transport, run.sessions, duration, &run.pids).await
        }
    };
    println!("{}", report.line());
    Ok(())
}

impl BenchRun {
    /// `--duration`, bounded to an hour.
    fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration.clamp(0.0, 3600.0))
    }
}

/// The load generator's settings for one scenario run.
fn bench_load(run: &BenchRun) -> io::Result<nonstick::bench::Load> {
    use nonstick::bench::{self, Load, Target};
    let addr = bench::loopback_addr(&run.url).map_err(io::Error::other)?;
    Ok(Load {
        target: Target {
            addr,
            path: "/socket.io/".to_owned(),
            transport: run.transport,
            source: None,
            timeout: Duration::from_secs(10),
        },
        sources: if run.spread_sources {
            Load::loopback_sources()
        } else {
            Vec::new()
        },
    })
}

async fn bench_compare(args: BenchCompare) -> io::Result<()> {
    use nonstick::bench::compare::{self, Plan, Sizes};
    use nonstick::bench::setup::{SetupKind, Tools};
    let setups = if args.setups.is_empty() {
        SetupKind::ALL.to_vec()
    } else {
        args.setups
            .iter()
            .map(|name| {
                SetupKind::parse(name)
                    .ok_or_else(|| io::Error::other(format!("unknown setup {name}")))
            })
            .collect::<io::Result<_>>()?
    };
    let env_or = |var: &str, default: &str| {
        std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from)
    };
    let plan = Plan {
        setups,
        rounds: args.rounds,
        sizes: if args.smoke {
            Sizes::smoke()
        } else {
            Sizes::standard()
        },
        tools: Tools {
            nonstick: std::env::current_exe()?,
            node: env_or("NONSTICK_NODE", "node"),
            repo: args.repo,
            nginx: env_or("NONSTICK_NGINX", "/usr/sbin/nginx"),
            redis: env_or("NONSTICK_REDIS", "redis-server"),
        },
        spread_sources: true,
    };
    // Ctrl-C drops the run, and with it every process it started (they are killed on drop).
    let comparison = tokio::select! {
        result = compare::run(&plan, |line| eprintln!("{line}")) => result?,
        () = nonstick::node::shutdown_signal() => return Err(io::Error::other("interrupted")),
    };
    println!("{}\n{}", comparison.table(), comparison.goals_table());
    if let Some(dir) = args.out {
        nonstick::bench::report::write(&dir, &plan, &comparison)?;
        println!("report written to {}", dir.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // openraft reports every election step at INFO and late vote replies at WARN. A benchmark's
    // output is its report.
    let default_filter = match cli.command {
        Command::Bench(_) => "warn,openraft=error",
        _ => "info,openraft=error",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    // One thread means one scheduler with no other worker to steal from or wake: the
    // current-thread runtime does the same work without the cross-thread bookkeeping.
    let mut builder = match cli.threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(threads) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(threads.max(1));
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args)),
        Command::Node(args) => runtime.block_on(node(args)),
        Command::Cluster(args) => runtime.block_on(cluster(args)),
        Command::Balancer(args) => runtime.block_on(balancer(args)),
        Command::Member(args) => runtime.block_on(member(args)),
        Command::Drain(args) => runtime.block_on(drain(args)),
        Command::Bench(args) => runtime.block_on(bench(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nonstick: {e}");
            ExitCode::FAILURE
        }
    }
}
