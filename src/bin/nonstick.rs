//! The `nonstick` command line: parse flags, set up tracing, call the library.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use nonstick::config::{AppKind, Config};

#[derive(Parser)]
#[command(
    name = "nonstick",
    version,
    about = "Socket.IO server without sticky sessions"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve an application over HTTP until SIGINT or SIGTERM.
    Serve(Serve),
}

#[derive(clap::Args)]
struct Serve {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Application: `demo` or `protocol-suite`.
    #[arg(long, default_value = "demo", value_parser = parse_app)]
    app: AppKind,
    /// Node id reported by /healthz (random by default).
    #[arg(long)]
    node_id: Option<String>,
    /// Set the `io` sticky-session cookie on polling handshakes.
    #[arg(long)]
    cookie: bool,
    /// Ping interval in milliseconds.
    #[arg(long)]
    ping_interval: Option<u64>,
    /// Ping timeout in milliseconds.
    #[arg(long)]
    ping_timeout: Option<u64>,
    /// Upgrade timeout in milliseconds.
    #[arg(long)]
    upgrade_timeout: Option<u64>,
    /// Largest accepted POST body or websocket message, in bytes.
    #[arg(long)]
    max_http_buffer_size: Option<usize>,
    /// Most queued outbound messages per session.
    #[arg(long)]
    max_buffered_packets: Option<usize>,
    /// Most queued outbound payload bytes per session (default 4 MB, or four times
    /// --max-http-buffer-size when that is given).
    #[arg(long)]
    max_buffered_bytes: Option<usize>,
    /// Most live sessions per mount.
    #[arg(long)]
    max_sessions: Option<usize>,
    /// Allowed CORS origin (repeatable; `*` for any).
    #[arg(long = "cors-origin")]
    cors_origins: Vec<String>,
    /// Send `Access-Control-Allow-Credentials: true`.
    #[arg(long)]
    cors_credentials: bool,
    /// Turn connection state recovery off (it is on for the demo app).
    #[arg(long)]
    no_recovery: bool,
    /// The `auth.token` the demo's `/admin` namespace requires.
    #[arg(long)]
    admin_token: Option<String>,
    /// The Socket.IO browser client served to the demo page.
    #[arg(long, default_value = nonstick::config::DEFAULT_CLIENT_BUNDLE)]
    client_bundle: std::path::PathBuf,
}

fn parse_app(name: &str) -> Result<AppKind, String> {
    AppKind::parse(name).ok_or_else(|| format!("unknown app {name:?} (demo, protocol-suite)"))
}

fn config(args: &Serve) -> Config {
    let mut config = Config::new(args.app);
    if let Some(id) = &args.node_id {
        config.node_id = id.clone();
    }
    config.cookie = args.cookie;
    let engine = &mut config.engine;
    if let Some(ms) = args.ping_interval {
        engine.ping_interval = Duration::from_millis(ms);
    }
    if let Some(ms) = args.ping_timeout {
        engine.ping_timeout = Duration::from_millis(ms);
    }
    if let Some(ms) = args.upgrade_timeout {
        engine.upgrade_timeout = Duration::from_millis(ms);
    }
    if let Some(n) = args.max_http_buffer_size {
        engine.max_payload = n;
        engine.max_buffered_bytes = n.saturating_mul(4);
    }
    if let Some(n) = args.max_buffered_bytes {
        engine.max_buffered_bytes = n;
    }
    if let Some(n) = args.max_buffered_packets {
        engine.max_buffered_packets = n;
    }
    if let Some(n) = args.max_sessions {
        engine.max_sessions = n;
    }
    if !args.cors_origins.is_empty() {
        config.cors_origins = Some(args.cors_origins.clone());
    }
    config.cors_credentials = args.cors_credentials;
    if args.no_recovery {
        config.recovery = false;
    }
    if let Some(token) = &args.admin_token {
        config.admin_token = token.clone();
    }
    config.client_bundle = Some(args.client_bundle.clone());
    config
}

async fn serve(args: Serve) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let node = nonstick::node::start(config(&args), listener)?;
    println!("listening on {}", node.addr());
    nonstick::node::shutdown_signal().await;
    node.shutdown().await
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nonstick: {e}");
            ExitCode::FAILURE
        }
    }
}
