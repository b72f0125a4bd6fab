//! Feeds arbitrary Engine.IO messages to the Socket.IO decoder.
//!
//! The input is split on 0x1e into messages; a message starting with `b` is binary (the rest
//! of it), any other is text (lossily decoded as UTF-8). Whatever decodes must encode and
//! decode again to a packet of the same kind, namespace and id.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use nonstick::protocol::sio::{Decoder, PacketType, encode};

fn plain(kind: PacketType) -> PacketType {
    match kind {
        PacketType::BinaryEvent => PacketType::Event,
        PacketType::BinaryAck => PacketType::Ack,
        k => k,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut dec = Decoder::new(4);
    for msg in data.split(|&b| b == 0x1e) {
        let out = match msg.split_first() {
            Some((b'b', rest)) => dec.feed_binary(Bytes::copy_from_slice(rest)),
            _ => dec.feed_text(&String::from_utf8_lossy(msg)),
        };
        let Ok(Some(p)) = out else { continue };
        let e = encode(&p);
        let mut again = Decoder::new(usize::MAX);
        let mut back = again.feed_text(&e.text);
        for a in e.attachments {
            back = again.feed_binary(a);
        }
        match back {
            Ok(Some(q)) => {
                assert_eq!(plain(q.kind), plain(p.kind), "{}", e.text);
                assert_eq!((&q.nsp, q.id), (&p.nsp, p.id), "{}", e.text);
            }
            other => panic!("re-encoded packet {:?} did not decode: {other:?}", e.text),
        }
    }
});
