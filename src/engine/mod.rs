//! Engine.IO v4 sessions owned by this process.
//!
//! The engine's entry points take plain values (query fields, body bytes, a websocket
//! link) and return plain values, so the HTTP front and, later, a peer forwarding a
//! request over gRPC call exactly the same functions. Nothing in here knows about HTTP
//! types or about other nodes.

mod app;

pub use app::{Application, CloseReason, Connection, Message, SendError, SessionHandler};
