//! Engine.IO and Socket.IO wire formats. Pure codecs: no I/O, no async, no clocks.

pub mod sio;
pub mod value;

pub use sio::{DecodeError as SioDecodeError, Decoder as SioDecoder, Packet as SioPacket};
pub use value::{Value, ValueError};
