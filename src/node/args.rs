//! The node settings of the `nonstick node` command line, as clap arguments any program can
//! use: parse [`NodeArgs`] alone, or flatten it into a larger command line
//! (`#[command(flatten)] node: NodeArgs`), then [`NodeArgs::builder`]. The same settings come
//! from a TOML file (`--config`) and `NONSTICK_*` variables ([`Settings`]).

use std::io;
use std::path::PathBuf;

use serde_json::{Map, Value};

use super::{Bind, ClusterConfig, NodeBuilder};
use crate::config::flags::{self, NodeFlags, ServerFlags};
use crate::config::{Settings, SettingsError};
use crate::rpc::{PeerTls, Secret};

/// One node: its HTTP address, its server settings and, with `--peers`, its place in a cluster
/// (see [`Settings`] for every flag; each one is also a `NONSTICK_*` variable and a key of
/// the `--config` file). Without `--peers` it is a node of its own.
#[derive(clap::Parser, Debug, Clone, Default)]
pub struct NodeArgs {
    /// Where the node is and its place in a cluster.
    #[command(flatten)]
    pub node: NodeFlags,
    /// Engine.IO, Socket.IO and HTTP settings, and the settings file.
    #[command(flatten)]
    pub server: ServerFlags,
}

impl NodeArgs {
    /// The flags given, by setting name.
    pub fn given(&self) -> Map<String, Value> {
        let mut flags = flags::given(&self.node);
        flags.extend(flags::given(&self.server));
        flags
    }

    /// The settings: the defaults, the `--config` file, the environment, these flags.
    pub fn settings(&self) -> Result<Settings, SettingsError> {
        Settings::load(
            Settings::default(),
            self.server.config.as_deref(),
            self.given(),
        )
    }

    /// A builder with [`NodeArgs::settings`], listening on `--listen`, a cluster node when
    /// `--peers` is given. Mount the program's applications on it; its
    /// [`NodeBuilder::config`] holds the Socket.IO settings (`config().socketio`) for the
    /// program's `SocketIo`.
    pub fn builder(&self) -> io::Result<NodeBuilder> {
        NodeBuilder::from_settings(&self.settings()?)
    }
}

impl NodeBuilder {
    /// A builder for the node `settings` describe: their [`Config`](crate::config::Config),
    /// listening on `listen`, a cluster node when they name `peers` (the secret then comes from
    /// `secret_file`, `secret` or `NONSTICK_SECRET`).
    pub fn from_settings(settings: &Settings) -> io::Result<NodeBuilder> {
        let builder = NodeBuilder::new(settings.config()).listen(settings.listen);
        Ok(match cluster(settings)? {
            Some(cluster) => builder.cluster(cluster),
            None => builder,
        })
    }
}

/// The cluster settings, when `settings` make a cluster node (`peers`).
fn cluster(settings: &Settings) -> io::Result<Option<ClusterConfig>> {
    let Some(peers) = settings.peer_map() else {
        return Ok(None);
    };
    let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidInput, e);
    let mut peers = peers.map_err(|e| invalid(format!("peers: {e}")))?;
    let missing = |name: &str| invalid(format!("a cluster node needs {name}"));
    let node_id = settings.id.ok_or_else(|| missing("an id"))?;
    let grpc = settings.grpc.ok_or_else(|| missing("a grpc address"))?;
    let data_dir = settings
        .data_dir
        .clone()
        .ok_or_else(|| missing("a data_dir"))?;
    if let Some(advertise) = &settings.advertise {
        peers.insert(node_id, advertise.clone());
    }
    if !peers.contains_key(&node_id) {
        return Err(invalid(format!(
            "peers has no entry for this node ({node_id}) and no advertise address was given"
        )));
    }
    let secret = match &settings.secret {
        Some(secret) if settings.secret_file.is_none() => {
            Secret::new(secret.trim()).map_err(io::Error::other)?
        }
        _ => self::secret(settings.secret_file.as_ref())?,
    };
    let previous = match (&settings.previous_secret_file, &settings.previous_secret) {
        (Some(path), _) => Some(read_secret(path)?),
        (None, Some(secret)) => Some(secret.clone()),
        (None, None) => None,
    };
    let secret = match previous {
        Some(previous) => secret
            .accepting(previous.trim())
            .map_err(|e| io::Error::other(format!("previous secret: {e}")))?,
        None => secret,
    };
    let tls = match (
        &settings.peer_tls_ca,
        &settings.peer_tls_cert,
        &settings.peer_tls_key,
    ) {
        (Some(ca), Some(cert), Some(key)) => Some(PeerTls::load(ca, cert, key)?),
        _ => None,
    };
    Ok(Some(ClusterConfig {
        tls,
        node_id,
        grpc: Bind::Addr(grpc),
        peers,
        data_dir,
        secret,
        join: settings.join,
    }))
}

/// The cluster secret from `file`, else from `NONSTICK_SECRET`; surrounding white space
/// ignored.
pub fn secret(file: Option<&PathBuf>) -> io::Result<Secret> {
    let secret = match file {
        Some(path) => read_secret(path)?,
        None => std::env::var("NONSTICK_SECRET").map_err(|_| {
            io::Error::other("no cluster secret: give --secret-file or set NONSTICK_SECRET")
        })?,
    };
    Secret::new(secret.trim()).map_err(io::Error::other)
}

/// A secret file's text.
fn read_secret(path: &PathBuf) -> io::Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::time::Duration;

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
            "--recovery=false",
            "--cookie",
        ])
        .expect("parse");
        let settings = args.settings().expect("valid");
        let config = settings.config();
        assert_eq!(config.node_id, "2");
        assert_eq!(config.engine.ping_interval, Duration::from_millis(700));
        assert_eq!(config.socketio.recovery, None);
        assert_eq!(config.cookie.map(|c| c.name), Some("io".to_owned()));
        let peers = settings.peer_map().expect("peers").expect("parsed");
        assert_eq!(peers.get(&1).map(String::as_str), Some("127.0.0.1:5001"));
    }

    #[test]
    fn no_peers_is_a_node_of_its_own() {
        let args = NodeArgs::try_parse_from(["app", "--listen", "127.0.0.1:0"]).expect("parse");
        let settings = args.settings().expect("valid");
        assert!(cluster(&settings).expect("no secret needed").is_none());
        assert!(settings.config().socketio.recovery.is_some());
    }

    #[test]
    fn peers_need_the_rest_of_the_cluster_flags() {
        let args = NodeArgs::try_parse_from(["app", "--peers", "1=127.0.0.1:5001"]).expect("parse");
        let text = args
            .settings()
            .expect_err("id, grpc, data_dir missing")
            .to_string();
        assert!(text.contains("id") && text.contains("grpc") && text.contains("data_dir"));
        let args = NodeArgs::try_parse_from(["app", "--peers", "x"]).expect("parse");
        assert!(args.settings().is_err());
        let args = NodeArgs::try_parse_from(["app", "--join"]).expect("parse");
        assert!(args.settings().is_err());
    }
}
