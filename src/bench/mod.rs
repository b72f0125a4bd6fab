//! The benchmark harness: a load generator with its own Engine.IO/Socket.IO client
//! (`bench::client`), scenarios that drive the demo app's events (`bench::scenario`), their
//! measurements (`bench::stats`), and the comparison of setups in one run (`bench::compare`).
//! Everything stays on loopback and is bounded in count and time.

pub mod client;
pub mod scenario;
pub mod stats;

pub use client::{BenchError, Client, Target, Transport};
pub use scenario::Load;
pub use stats::{Errors, Latencies, Report};
