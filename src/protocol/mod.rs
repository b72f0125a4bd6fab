//! Engine.IO and Socket.IO wire formats. Pure codecs: no I/O, no async, no clocks.
//!
//! - [`eio`]: Engine.IO v4 packets, polling payloads and websocket frames.
//! - [`sio`]: Socket.IO v5 packets with binary attachments.
//! - [`value`]: [`Value`], JSON plus binary, the argument type of events and acks.

pub mod eio;
pub mod sio;
pub mod value;

pub use sio::{DecodeError as SioDecodeError, Decoder as SioDecoder, Packet as SioPacket};
pub use value::{Value, ValueError};
