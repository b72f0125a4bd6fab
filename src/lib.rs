//! nonstick: a Socket.IO server that runs as a cluster without sticky sessions.
//!
//! Layout (see `ARCHITECTURE.md` for the rules between these modules):
//! - [`protocol`]: Engine.IO and Socket.IO packets to and from bytes. Pure: no I/O, no async.
//! - [`engine`]: Engine.IO sessions owned by this process: handshake, polling, websocket,
//!   upgrade, heartbeats, bounded outbound queues. Transport-agnostic entry points.
//! - [`socketio`]: namespaces, sockets, rooms, events, acks, middleware, recovery; the public
//!   handler API.
//! - [`http`]: axum routes that parse requests once and call the engine.
//! - [`app`]: the built-in applications (the demo app and the protocol-suite profile).
//! - [`registry`]: the Raft-replicated session registry (openraft on sled).
//! - [`rpc`]: peer gRPC plumbing: generated protobuf code, cluster secret, peer channels, server.
//! - [`node`], [`config`]: wiring and settings of one server process.
//! - [`balancer`]: the embedded per-request HTTP/WebSocket balancer for local clusters and
//!   benchmark controls.
#![warn(missing_docs)]

pub mod adapter;
pub mod app;
pub mod balancer;
#[cfg(feature = "bench")]
pub mod bench;
pub mod config;
pub mod engine;
pub mod gateway;
pub mod http;
pub mod launch;
pub mod logs;
pub mod node;
pub mod protocol;
pub mod registry;
pub mod rpc;
pub mod socketio;

pub use node::{Node, NodeArgs, NodeBuilder, serve};
