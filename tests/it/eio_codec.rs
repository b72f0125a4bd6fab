//! Properties of the Engine.IO codec: round trips, and no panic on arbitrary input.

use bytes::Bytes;
use proptest::prelude::*;

use nonstick::protocol::eio::{self, Frame, Packet};

const CASES: u32 = 100_000;

/// Short strings of any chars; cheaper to generate than a regex strategy.
fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..24).prop_map(String::from_iter)
}

fn packet() -> impl Strategy<Value = Packet> {
    prop_oneof![
        text().prop_map(Packet::Open),
        Just(Packet::Close),
        any::<bool>().prop_map(|probe| Packet::Ping { probe }),
        any::<bool>().prop_map(|probe| Packet::Pong { probe }),
        // Text never contains the payload separator in a polling payload.
        text()
            .prop_map(|s| s.replace('\x1e', ""))
            .prop_map(Packet::Text),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(|v| Packet::Binary(Bytes::from(v))),
        Just(Packet::Upgrade),
        Just(Packet::Noop),
    ]
}

fn packet_without_separator() -> impl Strategy<Value = Packet> {
    packet().prop_filter("no separator in open data", |p| match p {
        Packet::Open(s) => !s.contains('\x1e'),
        _ => true,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn packet_round_trip(p in packet()) {
        prop_assert_eq!(eio::decode_packet(&p.encode()), Ok(p.clone()));
        prop_assert_eq!(Packet::from_frame(p.clone().into_frame()), Ok(p));
    }

    #[test]
    fn payload_round_trip(ps in prop::collection::vec(packet_without_separator(), 1..8)) {
        let encoded = eio::encode_payload(&ps);
        prop_assert_eq!(eio::decode_payload(encoded.as_bytes()), Ok(ps));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = eio::decode_payload(&bytes);
        let _ = Packet::from_frame(Frame::Binary(Bytes::from(bytes)));
    }

    #[test]
    fn arbitrary_strings_never_panic(s in text()) {
        let _ = eio::decode_packet(&s);
        let _ = Packet::from_frame(Frame::Text(s.clone()));
        let _ = eio::payload_packets(&s).count();
    }
}

#[test]
fn wire_vectors() {
    assert_eq!(
        eio::decode_payload(b"4hello\x1ebAQIDBA==").unwrap(),
        vec![
            Packet::Text("hello".into()),
            Packet::Binary(vec![1, 2, 3, 4].into())
        ]
    );
    assert_eq!(Packet::Pong { probe: true }.encode(), "3probe");
    assert_eq!(
        Packet::Binary(vec![1, 2].into()).into_frame(),
        Frame::Binary(vec![1, 2].into())
    );
    assert!(matches!(
        eio::decode_payload(b"4a\x1eabc"),
        Err(eio::DecodeError::UnknownType('a'))
    ));
    assert!(eio::decode_payload(&[0xff, 0xfe]).is_err());
    assert!(eio::decode_packet("b!!!").is_err());
}
