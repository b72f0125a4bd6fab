//! The logs of a `nonstick` process: `tracing` events on stderr, as text or as JSON lines,
//! filtered by `RUST_LOG`; and quiet about peers going away once the process stops.
//!
//! When a cluster stops, every node sees the others vanish a moment before it stops itself:
//! Raft replication fails, leases lapse, the balancer's probes fail. Those lines say nothing
//! about a fault, so once [`stopping`] is called only the node's own lines about its stop
//! (`nonstick::node`) and the command line's pass.

use std::sync::OnceLock;

use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// How log lines are written.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines, coloured on a terminal.
    #[default]
    Text,
    /// One JSON object per line, with the fields of the event and of its spans (such as a
    /// forwarded request's `request_id`), for log collectors.
    Json,
}

/// How the filter of the installed subscriber is replaced when the process stops.
static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// What passes once the process stops: the node's own lines about its stop.
const STOPPING: &str = "off,nonstick::node=info";

/// This process is stopping: from now on, drop what peers going away make the cluster's
/// modules and openraft say. (A filter swapped once, rather than one asked at every event, so
/// that disabled events cost nothing while the process runs.)
pub fn stopping() {
    if let Some(filter) = FILTER.get() {
        let _ = filter.reload(EnvFilter::new(STOPPING));
    }
}

/// Install the process's subscriber: `format` on stderr, `RUST_LOG` or else `default_filter`.
/// Does nothing when one is installed already.
pub fn init(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match format {
        LogFormat::Text => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(false)
                    .with_span_list(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    if installed.is_ok() {
        let _ = FILTER.set(handle);
    }
}
