//! Engine.IO and Socket.IO wire formats. Pure codecs: no I/O, no async, no clocks.

pub mod eio;
