//! The `nonstick` command line: parse flags, set up tracing, call the library.

#[cfg(feature = "bench")]
mod bench;

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio::signal::unix::{Signal, SignalKind, signal};

use std::io;
use std::path::PathBuf;

use nonstick::app::BuiltIn;
use nonstick::balancer::{BalancerConfig, Mode, ProbeConfig, UnknownMode};
use nonstick::config::Settings;
use nonstick::config::flags::{self, AppFlags, ServerFlags};
use nonstick::launch::{self, LocalCluster, Program};
use nonstick::logs::{self, LogFormat};
use nonstick::node::{NodeArgs, NodeBuilder};
use nonstick::registry::admin::{MemberChange, administer};
use nonstick::rpc::{PeerTls, Peers};

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
    #[cfg(feature = "bench")]
    Bench(bench::Bench),
    /// Check a settings file, or show the settings a node would run with.
    Config(ConfigCommand),
}

/// Settings files and the merged settings.
#[derive(clap::Args)]
struct ConfigCommand {
    #[command(subcommand)]
    action: ConfigAction,
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Validate a TOML settings file: unknown names, wrong types and values out of range are
    /// reported with their key; exits with 1 on any.
    Check {
        /// The file.
        file: PathBuf,
    },
    /// Print the settings these flags, the environment and the --config file give, as a TOML
    /// file (the secret left out).
    Show(Box<Node>),
}

#[derive(clap::Args)]
struct Serve {
    /// Address to listen on [default: 127.0.0.1:3000].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Node id reported by /healthz (random by default).
    #[arg(long)]
    node_id: Option<String>,
    #[command(flatten)]
    server: ServerFlags,
    #[command(flatten)]
    app: AppFlags,
}

/// One node of a cluster (or, without --peers, a node of its own).
#[derive(clap::Args)]
struct Node {
    #[command(flatten)]
    node: NodeArgs,
    #[command(flatten)]
    app: AppFlags,
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
    #[command(flatten)]
    tls: PeerTlsArgs,
}

/// Mutual TLS to reach a cluster whose nodes use it.
#[derive(clap::Args)]
struct PeerTlsArgs {
    /// The CA of the nodes' certificates (PEM).
    #[arg(long, global = true, requires_all = ["peer_tls_cert", "peer_tls_key"])]
    peer_tls_ca: Option<PathBuf>,
    /// A certificate that CA signed (PEM).
    #[arg(long, global = true)]
    peer_tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, global = true)]
    peer_tls_key: Option<PathBuf>,
}

impl PeerTlsArgs {
    /// A peer directory carrying the cluster secret of `secret_file` (or `NONSTICK_SECRET`),
    /// over mutual TLS when asked.
    fn peers(&self, secret_file: Option<&PathBuf>) -> io::Result<Peers> {
        let secret = nonstick::node::secret(secret_file)?;
        let tls = match (&self.peer_tls_ca, &self.peer_tls_cert, &self.peer_tls_key) {
            (Some(ca), Some(cert), Some(key)) => Some(PeerTls::load(ca, cert, key)?),
            _ => None,
        };
        Ok(Peers::with_tls(secret, tls))
    }
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
    #[command(flatten)]
    tls: PeerTlsArgs,
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
    /// Run this program as the nodes instead of `nonstick node --app …`: a program of one's
    /// own whose command line takes the node flags (nonstick::node::NodeArgs).
    #[arg(long, conflicts_with = "app")]
    program: Option<PathBuf>,
    /// Settings every node runs with (handed to them in a settings file).
    #[command(flatten)]
    server: ServerFlags,
    #[command(flatten)]
    app: AppFlags,
    /// More arguments for every node, after `--` (flags of one's own program).
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

fn parse_mode(name: &str) -> Result<Mode, String> {
    match name {
        "sticky" => Ok(Mode::StickySid),
        other => other.parse().map_err(|e: UnknownMode| e.to_string()),
    }
}

/// The settings of a command that serves a built-in application: its defaults
/// ([`BuiltIn::base_settings`]), the `--config` file, the environment, the `flags` given.
fn built_in_settings(
    server: &ServerFlags,
    flags: serde_json::Map<String, serde_json::Value>,
) -> io::Result<Settings> {
    let settings = Settings::load(BuiltIn::base_settings(), server.config.as_deref(), flags)?;
    BuiltIn::from_settings(&settings).map_err(io::Error::other)?;
    Ok(settings)
}

/// Serve the built-in application `settings` name on the node `builder` describes, the way a
/// program serves its own: its mounts on the node, its routes next to the node's router.
async fn serve_built_in(builder: NodeBuilder, settings: &Settings) -> io::Result<()> {
    let app = BuiltIn::from_settings(settings).map_err(io::Error::other)?;
    let mounts = app.mounts(builder.config());
    let node = builder.mounts(mounts).build().await?;
    let routes = app.routes(&node).merge(node.router());
    if let Some(addr) = node.http_addr() {
        println!("node {} listening on {addr}", node.config().node_id);
    }
    node.serve(routes).await
}

impl Serve {
    fn settings(&self) -> io::Result<Settings> {
        let mut flags = flags::given(&self.server);
        flags.extend(flags::given(&self.app));
        if let Some(listen) = self.listen {
            flags.insert("listen".to_owned(), listen.to_string().into());
        }
        built_in_settings(&self.server, flags)
    }
}

impl Node {
    fn settings(&self) -> io::Result<Settings> {
        let mut flags = self.node.given();
        flags.extend(flags::given(&self.app));
        built_in_settings(&self.node.server, flags)
    }
}

impl Cluster {
    fn settings(&self) -> io::Result<Settings> {
        let mut flags = flags::given(&self.server);
        flags.extend(flags::given(&self.app));
        built_in_settings(&self.server, flags)
    }
}

async fn serve(args: Serve, settings: Settings) -> io::Result<()> {
    let mut config = settings.config();
    if let Some(id) = &args.node_id {
        config.node_id = id.clone();
    }
    serve_built_in(NodeBuilder::new(config).listen(settings.listen), &settings).await
}

async fn node(settings: Settings) -> io::Result<()> {
    serve_built_in(NodeBuilder::from_settings(&settings)?, &settings).await
}

fn config(args: ConfigCommand) -> io::Result<()> {
    match args.action {
        ConfigAction::Check { file } => {
            let settings = Settings::from_file(BuiltIn::base_settings(), &file)?;
            BuiltIn::from_settings(&settings).map_err(io::Error::other)?;
            println!("{}: ok", file.display());
        }
        ConfigAction::Show(show) => {
            let settings = Node {
                node: show.node,
                app: show.app,
            }
            .settings()?;
            print!("{}", settings.to_toml().map_err(io::Error::other)?);
        }
    }
    Ok(())
}

async fn drain(args: Drain) -> io::Result<()> {
    let peers = args.tls.peers(args.secret_file.as_ref())?;
    nonstick::registry::admin::drain(&args.via, peers, args.node)
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
    let peers = args.tls.peers(args.secret_file.as_ref())?;
    let reply = administer(&via, peers, change)
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

async fn cluster(args: Cluster, settings: Settings) -> io::Result<()> {
    if settings.tls_cert.is_some() {
        return Err(io::Error::other(
            "tls_cert: the local cluster's balancer speaks plain HTTP to its nodes; run `nonstick node` with HTTPS behind a balancer of your own, or give the balancer in front the certificate",
        ));
    }
    // Listen before the first node starts: a stop that comes while they start must stop them
    // (their processes end with this one's), not end this process alone or go unheard.
    let mut stops = StopSignals::new()?;
    let mut hangups = signal(SignalKind::hangup())?;
    let program = match args.program {
        Some(path) => Program::Own(path),
        None => Program::BuiltIn {
            exe: std::env::current_exe()?,
            app: BuiltIn::from_settings(&settings)
                .map_err(io::Error::other)?
                .kind,
        },
    };
    let plan = LocalCluster {
        nodes: args.nodes,
        listen: args.listen,
        data_dir: args.data_dir,
        mode: Some(args.balancer),
        program,
        settings: Some(settings),
        node_args: args.node_args,
        quiet: false,
    };
    let mut running = tokio::select! {
        running = launch::start(plan) => running?,
        // Dropping the start kills the nodes it started.
        () = stops.recv() => return Ok(()),
    };
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
    loop {
        tokio::select! {
            () = stops.recv() => break,
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

/// SIGINT and SIGTERM, heard from the moment this is made.
struct StopSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl StopSignals {
    fn new() -> io::Result<StopSignals> {
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
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

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nonstick: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Settings first (they say how to log), then logs, then the runtime and the command.
fn run(cli: Cli) -> io::Result<()> {
    // openraft reports every election step at INFO and late vote replies at WARN, and an
    // initialize refused at ERROR: every member of a static list initializes, and all but the
    // first are refused. A benchmark's output is its report.
    let serving = "info,openraft=error,openraft::engine::engine_impl=off";
    let runtime = || runtime(cli.threads);
    match cli.command {
        Command::Serve(args) => {
            let settings = args.settings()?;
            logs::init(settings.log_format, serving);
            runtime()?.block_on(stopping_quietly(serve(args, settings)))
        }
        Command::Node(args) => {
            let settings = args.settings()?;
            logs::init(settings.log_format, serving);
            runtime()?.block_on(stopping_quietly(node(settings)))
        }
        Command::Cluster(args) => {
            let settings = args.settings()?;
            logs::init(settings.log_format, serving);
            runtime()?.block_on(stopping_quietly(cluster(args, settings)))
        }
        Command::Balancer(args) => {
            logs::init(LogFormat::Text, serving);
            runtime()?.block_on(stopping_quietly(balancer(args)))
        }
        Command::Member(args) => {
            logs::init(LogFormat::Text, serving);
            runtime()?.block_on(member(args))
        }
        Command::Drain(args) => {
            logs::init(LogFormat::Text, serving);
            runtime()?.block_on(drain(args))
        }
        #[cfg(feature = "bench")]
        Command::Bench(args) => {
            logs::init(LogFormat::Text, "warn,openraft=off");
            runtime()?.block_on(bench::run(args))
        }
        Command::Config(args) => config(args),
    }
}

/// `serving`, with the logs quiet about peers going away once a stop signal came.
async fn stopping_quietly(serving: impl Future<Output = io::Result<()>>) -> io::Result<()> {
    tokio::spawn(async {
        nonstick::node::shutdown_signal().await;
        logs::stopping();
    });
    serving.await
}

/// The runtime, with `threads` workers (one per CPU by default).
fn runtime(threads: Option<usize>) -> io::Result<tokio::runtime::Runtime> {
    // One thread means one scheduler with no other worker to steal from or wake: the
    // current-thread runtime does the same work without the cross-thread bookkeeping.
    let mut builder = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(threads) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(threads.max(1));
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    builder
        .enable_all()
        .build()
        .map_err(|e| io::Error::other(format!("cannot start the runtime: {e}")))
}
