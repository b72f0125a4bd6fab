//! The node settings of the `nonstick node` command line, as clap arguments any program can
//! use: parse [`NodeArgs`] alone, or flatten it into a larger command line
//! (`#[command(flatten)] node: NodeArgs`), then [`NodeArgs::builder`].

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{Bind, ClusterConfig, NodeBuilder};
use crate::config::Config;
use crate::rpc::Secret;

/// One node: its HTTP address, its server settings and, with `--peers`, its place in a cluster.
/// Without `--peers` it is a node of its own.
#[derive(clap::Parser, Debug, Clone)]
pub struct NodeArgs {
    /// HTTP address (Engine.IO/Socket.IO, /healthz, /metrics, the program's own routes).
    #[arg(long, default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,
    /// This node's id (a positive integer, unique in the cluster).
    #[arg(long)]
    pub id: Option<u64>,
    /// Address of the peer gRPC server (forwarding, broadcasts, Raft).
    #[arg(long)]
    pub grpc: Option<SocketAddr>,
    /// Every member's gRPC address, this node included: `1=host:port,2=host:port,...`. Makes
    /// this a cluster node (then --id, --grpc and --data-dir are required).
    #[arg(long, value_parser = parse_peers, requires_all = ["id", "grpc", "data_dir"])]
    pub peers: Option<BTreeMap<u64, String>>,
    /// This node's gRPC address as the others reach it (default: its entry in --peers).
    #[arg(long, requires = "peers")]
    pub advertise: Option<String>,
    /// Directory of this node's registry (Raft log and state).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// File holding the cluster secret (else the NONSTICK_SECRET environment variable).
    #[arg(long, requires = "peers")]
    pub secret_file: Option<PathBuf>,
    /// Join a running cluster (add it with `nonstick member add`) instead of forming one.
    #[arg(long, requires = "peers")]
    pub join: bool,
    /// Broadcasts and other requests for another node that waited longer than this (in
    /// milliseconds) are dropped and counted instead of delivered late.
    #[arg(long, default_value_t = 5000)]
    pub adapter_max_age_ms: u64,
    /// Engine.IO and HTTP settings.
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Engine.IO and HTTP settings of a server, the reference server's options under their
/// command-line names.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ServerArgs {
    /// Set the `io` sticky-session cookie on polling handshakes.
    #[arg(long)]
    pub cookie: bool,
    /// Ping interval in milliseconds.
    #[arg(long)]
    pub ping_interval: Option<u64>,
    /// Ping timeout in milliseconds.
    #[arg(long)]
    pub ping_timeout: Option<u64>,
    /// Upgrade timeout in milliseconds.
    #[arg(long)]
    pub upgrade_timeout: Option<u64>,
    /// Largest accepted POST body or websocket message, in bytes.
    #[arg(long)]
    pub max_http_buffer_size: Option<usize>,
    /// Most queued outbound messages per session.
    #[arg(long)]
    pub max_buffered_packets: Option<usize>,
    /// Most queued outbound payload bytes per session (default 4 MB, or four times
    /// --max-http-buffer-size when that is given).
    #[arg(long)]
    pub max_buffered_bytes: Option<usize>,
    /// Most live sessions per mount.
    #[arg(long)]
    pub max_sessions: Option<usize>,
    /// Allowed CORS origin (repeatable; `*` for any).
    #[arg(long = "cors-origin")]
    pub cors_origins: Vec<String>,
    /// Send `Access-Control-Allow-Credentials: true`.
    #[arg(long)]
    pub cors_credentials: bool,
}

impl ServerArgs {
    /// `config` with the settings given here in place of its own.
    pub fn apply(&self, mut config: Config) -> Config {
        config.cookie |= self.cookie;
        let engine = &mut config.engine;
        if let Some(ms) = self.ping_interval {
            engine.ping_interval = Duration::from_millis(ms);
        }
        if let Some(ms) = self.ping_timeout {
            engine.ping_timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = self.upgrade_timeout {
            engine.upgrade_timeout = Duration::from_millis(ms);
        }
        if let Some(n) = self.max_http_buffer_size {
            engine.max_payload = n;
            engine.max_buffered_bytes = n.saturating_mul(4);
        }
        if let Some(n) = self.max_buffered_bytes {
            engine.max_buffered_bytes = n;
        }
        if let Some(n) = self.max_buffered_packets {
            engine.max_buffered_packets = n;
        }
        if let Some(n) = self.max_sessions {
            engine.max_sessions = n;
        }
        if !self.cors_origins.is_empty() {
            config.cors_origins = Some(self.cors_origins.clone());
        }
        config.cors_credentials |= self.cors_credentials;
        config
    }
}

impl NodeArgs {
    /// The server settings these arguments give, on top of `base` (for defaults a program
    /// wants other than [`Config::default`]).
    pub fn config(&self, base: Config) -> Config {
        let mut config = self.server.apply(base);
        if let Some(id) = self.id {
            config.node_id = id.to_string();
        }
        config.adapter.max_age = Duration::from_millis(self.adapter_max_age_ms);
        config
    }

    /// The cluster settings, when these arguments make a cluster node (`--peers`). Reads the
    /// secret from `--secret-file` or `NONSTICK_SECRET`.
    pub fn cluster(&self) -> io::Result<Option<ClusterConfig>> {
        let Some(peers) = &self.peers else {
            return Ok(None);
        };
        let missing = |flag: &str| io::Error::other(format!("a cluster node needs {flag}"));
        let node_id = self.id.ok_or_else(|| missing("--id"))?;
        let grpc = self.grpc.ok_or_else(|| missing("--grpc"))?;
        let data_dir = self.data_dir.clone().ok_or_else(|| missing("--data-dir"))?;
        let mut peers = peers.clone();
        if let Some(advertise) = &self.advertise {
            peers.insert(node_id, advertise.clone());
        }
        if !peers.contains_key(&node_id) {
            return Err(io::Error::other(format!(
                "--peers has no entry for this node ({node_id}) and no --advertise was given"
            )));
        }
        Ok(Some(ClusterConfig {
            node_id,
            grpc: Bind::Addr(grpc),
            peers,
            data_dir,
            secret: secret(self.secret_file.as_ref())?,
            join: self.join,
        }))
    }

    /// A builder with these settings on top of [`Config::default`], listening on `--listen`,
    /// a cluster node when `--peers` is given. Mount the program's applications on it.
    pub fn builder(&self) -> io::Result<NodeBuilder> {
        self.builder_with(Config::default())
    }

    /// [`NodeArgs::builder`] on top of `base` instead of [`Config::default`].
    pub fn builder_with(&self, base: Config) -> io::Result<NodeBuilder> {
        let builder = NodeBuilder::new(self.config(base)).listen(self.listen);
        Ok(match self.cluster()? {
            Some(cluster) => builder.cluster(cluster),
            None => builder,
        })
    }
}

/// The cluster secret from `file`, else from `NONSTICK_SECRET`; surrounding white space
/// ignored.
pub fn secret(file: Option<&PathBuf>) -> io::Result<Secret> {
    let secret = match file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?,
        None => std::env::var("NONSTICK_SECRET").map_err(|_| {
            io::Error::other("no cluster secret: give --secret-file or set NONSTICK_SECRET")
        })?,
    };
    Secret::new(secret.trim()).map_err(io::Error::other)
}

/// `1=host:port,2=host:port` to a map of node ids to addresses.
fn parse_peers(list: &str) -> Result<BTreeMap<u64, String>, String> {
    list.split(',')
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let (id, addr) = entry
                .split_once('=')
                .ok_or_else(|| format!("{entry:?} is not ID=HOST:PORT"))?;
            let id = id
                .trim()
                .parse::<u64>()
                .map_err(|_| format!("{id:?} is not a node id"))?;
            Ok((id, addr.trim().to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn cluster_flags_make_a_cluster_node() {
        let args = NodeArgs::try_parse_from([
            "app",
            "--id",
            "2",
            "--listen",
            "127.0.0.1:4002",
            "--grpc",
            "127.0.0.1:5002",
            "--peers",
            "1=127.0.0.1:5001,2=127.0.0.1:5002",
            "--data-dir",
            "data",
            "--ping-interval",
            "700",
        ])
        .expect("parse");
        let config = args.config(Config::default());
        assert_eq!(config.node_id, "2");
        assert_eq!(config.engine.ping_interval, Duration::from_millis(700));
        let peers = args.peers.as_ref().expect("peers");
        assert_eq!(peers.get(&1).map(String::as_str), Some("127.0.0.1:5001"));
    }

    #[test]
    fn no_peers_is_a_node_of_its_own() {
        let args = NodeArgs::try_parse_from(["app", "--listen", "127.0.0.1:0"]).expect("parse");
        assert!(args.cluster().expect("no secret needed").is_none());
    }

    #[test]
    fn peers_need_the_rest_of_the_cluster_flags() {
        let err = NodeArgs::try_parse_from(["app", "--peers", "1=127.0.0.1:5001"])
            .expect_err("--id, --grpc and --data-dir are missing");
        let text = err.to_string();
        assert!(text.contains("--id") && text.contains("--grpc") && text.contains("--data-dir"));
        assert!(NodeArgs::try_parse_from(["app", "--peers", "x"]).is_err());
        assert!(NodeArgs::try_parse_from(["app", "--join"]).is_err());
    }
}
