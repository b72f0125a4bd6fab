//! Feeds arbitrary bytes to the msgpack Socket.IO decoder. Whatever decodes must encode and
//! decode again to the same packet.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nonstick::protocol::msgpack::{decode, encode};

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = decode(data) else { return };
    let again = decode(&encode(&packet));
    assert_eq!(again.as_ref(), Ok(&packet), "{data:02x?}");
});
