//! The benchmark harness: a load generator with its own Engine.IO/Socket.IO client
//! (`bench::client`), scenarios that drive the demo app's events (`bench::scenario`), their
//! measurements (`bench::stats`, and the processes' CPU time per operation in `bench::cpu`),
//! and the comparison of setups in one run (`bench::compare`).
//! Everything stays on loopback and is bounded in count and time.

pub mod client;
pub mod compare;
pub mod cpu;
pub mod report;
pub mod scenario;
pub mod setup;
pub mod stats;

pub use client::{BenchError, Client, Target, Transport};
pub use scenario::Load;
pub use stats::{Errors, Latencies, Report};

/// The socket address of a loopback URL (`http://127.0.0.1:8080`, or just `127.0.0.1:8080`):
/// the load generator only ever talks to this machine.
pub fn loopback_addr(url: &str) -> Result<std::net::SocketAddr, String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("ws://"))
        .unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or(rest);
    let addr: std::net::SocketAddr = authority
        .parse()
        .map_err(|_| format!("expected http://IP:PORT, got {url:?}"))?;
    if addr.ip().is_loopback() {
        Ok(addr)
    } else {
        Err(format!("{addr} is not a loopback address"))
    }
}
