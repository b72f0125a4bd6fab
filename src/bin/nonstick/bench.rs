//! `nonstick bench`: the benchmark harness's command line (built with the `bench` feature).

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;

/// Load generation against the demo app.
#[derive(clap::Args)]
pub struct Bench {
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

/// Runs `nonstick bench …`.
pub async fn run(args: Bench) -> io::Result<()> {
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
