//! Engine.IO and Socket.IO wire formats. Pure codecs: no I/O, no async, no clocks.

pub mod sio;
pub mod value;

// The Socket.IO codec's types are reached as `sio::Packet`, `sio::Decoder`, ...: the Engine.IO
// codec has types of the same names.
pub use value::{Value, ValueError};
