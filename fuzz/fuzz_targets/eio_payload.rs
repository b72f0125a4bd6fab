//! Feeds arbitrary bytes to the Engine.IO polling payload decoder. Whatever decodes must
//! encode and decode again to the same packets.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nonstick::protocol::eio::{decode_payload, encode_payload};

fuzz_target!(|data: &[u8]| {
    let Ok(packets) = decode_payload(data) else {
        return;
    };
    let text = encode_payload(&packets);
    match decode_payload(text.as_bytes()) {
        Ok(again) => assert_eq!(again, packets, "{text:?}"),
        Err(e) => panic!("re-encoded payload {text:?} did not decode: {e}"),
    }
});
