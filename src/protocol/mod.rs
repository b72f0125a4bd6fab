//! Engine.IO and Socket.IO wire formats. Pure codecs: no I/O, no async, no clocks.
//!
//! - [`eio`]: Engine.IO v4 packets, polling payloads and websocket frames.
//! - [`sio`]: Socket.IO v5 packets with binary attachments.
//! - [`value`]: [`Value`], JSON plus binary, the argument type of events and acks.

pub mod eio;
pub mod msgpack;
pub mod sio;
pub mod value;

// The Socket.IO codec's types are reached as `sio::Packet`, `sio::Decoder`, ...: the Engine.IO
// codec has types of the same names.
pub use value::{Value, ValueError};
