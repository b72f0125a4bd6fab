//! Socket.IO packet codec and `Value`: the exact wire vectors of the official v5 test suite,
//! the reference parser's validity rules, and properties (round trip, no panic on any input).

use bytes::Bytes;
use indexmap::IndexMap;
use nonstick::protocol::sio::{
    DecodeError, Decoder, Encoded, Packet, PacketType, encode, with_trailing_arg,
};
use nonstick::protocol::value::Value;
use proptest::collection::vec;
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

const PH0: &str = r#"{"_placeholder":true,"num":0}"#;
const PH1: &str = r#"{"_placeholder":true,"num":1}"#;

fn v(j: serde_json::Value) -> Value {
    Value::from(j)
}

/// Feeds the text and then every attachment; the packet must appear exactly at the end.
fn decode_all(dec: &mut Decoder, e: &Encoded) -> Result<Option<Packet>, DecodeError> {
    let mut out = dec.feed_text(&e.text)?;
    for a in &e.attachments {
        if out.is_some() {
            return Ok(None);
        }
        out = dec.feed_binary(a.clone())?;
    }
    Ok(out)
}

fn decode_one(s: &str) -> Result<Option<Packet>, DecodeError> {
    Decoder::new(10).feed_text(s)
}

fn decoded(s: &str) -> Packet {
    match decode_one(s) {
        Ok(Some(p)) => p,
        other => panic!("{s:?} should decode, got {other:?}"),
    }
}

// ---- decoding: the official suite's client packets ----

#[test]
fn connect_packets() {
    assert_eq!(decoded("0"), Packet::connect("/", None));
    assert_eq!(
        decoded(r#"0{"token":"123"}"#),
        Packet::connect("/", Some(v(json!({"token": "123"}))))
    );
    assert_eq!(decoded("0/custom,"), Packet::connect("/custom", None));
    assert_eq!(
        decoded(r#"0/custom,{"token":"abc"}"#),
        Packet::connect("/custom", Some(v(json!({"token": "abc"}))))
    );
    // No comma: the namespace runs to the end of the text.
    assert_eq!(decoded("0/random"), Packet::connect("/random", None));
    assert_eq!(decoded("0/custom").nsp, "/custom");
}

#[test]
fn disconnect_packets() {
    assert_eq!(decoded("1"), Packet::disconnect("/"));
    assert_eq!(decoded("1/custom"), Packet::disconnect("/custom"));
    assert_eq!(decoded("1/custom,"), Packet::disconnect("/custom"));
}

#[test]
fn event_packets() {
    let p = decoded(r#"2["message",1,"2",{"3":[true]}]"#);
    assert_eq!(p.kind, PacketType::Event);
    assert_eq!(p.event_name(), Some("message"));
    assert_eq!(
        p.args(),
        &[v(json!(1)), v(json!("2")), v(json!({"3": [true]}))]
    );
    assert_eq!(p.id, None);

    let p = decoded(r#"2456["message-with-ack",1,"2",{"3":[false]}]"#);
    assert_eq!(p.id, Some(456));
    assert_eq!(p.event_name(), Some("message-with-ack"));
    assert_eq!(p.clone().into_args().len(), 3);

    let p = decoded(r#"2/custom,7["a"]"#);
    assert_eq!((p.nsp.as_str(), p.id), ("/custom", Some(7)));
    assert!(p.args().is_empty());

    // Numeric event names are valid on the wire.
    let p = decoded("2[42,true]");
    assert_eq!(p.event_name(), None);
    assert_eq!(p.args(), &[Value::Bool(true)]);

    // A bare `2` is tolerated like the reference does.
    let p = decoded("2");
    assert_eq!((p.kind, p.data.as_ref()), (PacketType::Event, None));
    assert_eq!(p.event_name(), None);
    assert!(p.args().is_empty());
}

#[test]
fn binary_event_with_two_attachments() {
    let mut dec = Decoder::new(10);
    let text = format!(r#"52-["message",{PH0},{PH1}]"#);
    assert_eq!(dec.feed_text(&text), Ok(None));
    assert!(dec.is_pending());
    assert_eq!(dec.feed_binary(Bytes::from_static(&[1, 2, 3])), Ok(None));
    let p = dec
        .feed_binary(Bytes::from_static(&[4, 5]))
        .unwrap()
        .unwrap();
    assert_eq!(p.kind, PacketType::BinaryEvent);
    assert_eq!(p.event_name(), Some("message"));
    assert_eq!(
        p.args(),
        &[Value::from(vec![1u8, 2, 3]), Value::from(vec![4u8, 5])]
    );
    assert!(!dec.is_pending());
    assert_eq!(p, Packet::event("/", "message", p.args().to_vec(), None));
}

#[test]
fn binary_event_with_ack_id() {
    let mut dec = Decoder::new(10);
    let text = format!(r#"52-789["message-with-ack",{PH0},{PH1}]"#);
    assert_eq!(dec.feed_text(&text), Ok(None));
    assert_eq!(dec.feed_binary(Bytes::from_static(b"a")), Ok(None));
    let p = dec.feed_binary(Bytes::from_static(b"b")).unwrap().unwrap();
    assert_eq!(p.id, Some(789));
    assert_eq!(p.args()[1].as_bytes(), Some(&Bytes::from_static(b"b")));
}

#[test]
fn binary_with_namespace_and_nested_placeholder() {
    let mut dec = Decoder::new(10);
    let text = format!(r#"51-/admin,12["e",{{"x":[{PH0}]}}]"#);
    assert_eq!(dec.feed_text(&text), Ok(None));
    let p = dec.feed_binary(Bytes::from_static(b"z")).unwrap().unwrap();
    assert_eq!((p.nsp.as_str(), p.id), ("/admin", Some(12)));
    assert_eq!(
        p.args()[0].get("x").and_then(Value::as_array).unwrap()[0],
        Value::from(&b"z"[..])
    );
}

#[test]
fn ack_packets() {
    let p = decoded(r#"3456[1,"2",{"3":[false]}]"#);
    assert_eq!(
        p,
        Packet::ack(
            "/",
            456,
            vec![v(json!(1)), v(json!("2")), v(json!({"3": [false]}))]
        )
    );
    assert_eq!(p.args().len(), 3);
    assert_eq!(decoded("3/x,1[]"), Packet::ack("/x", 1, vec![]));
}

// ---- decoding: what closes the connection ----

fn invalid(s: &str) -> DecodeError {
    match decode_one(s) {
        Err(e) => e,
        Ok(p) => panic!("{s:?} should be refused, got {p:?}"),
    }
}

#[test]
fn refused_packets() {
    assert_eq!(invalid(""), DecodeError::Empty);
    assert_eq!(invalid("abc"), DecodeError::UnknownType('a'));
    assert_eq!(invalid("7"), DecodeError::UnknownType('7'));
    assert!(matches!(invalid("2{}"), DecodeError::InvalidPayload { .. }));
    assert!(matches!(
        invalid(r#"2abc["message"]"#),
        DecodeError::InvalidJson(_)
    ));
    assert!(matches!(invalid("2[]"), DecodeError::InvalidPayload { .. }));
    assert!(matches!(
        invalid("2[null]"),
        DecodeError::InvalidPayload { .. }
    ));
    assert!(matches!(invalid("2[1"), DecodeError::InvalidJson(_)));
    for reserved in [
        "connect",
        "connect_error",
        "disconnect",
        "disconnecting",
        "newListener",
        "removeListener",
    ] {
        assert!(matches!(
            invalid(&format!(r#"2["{reserved}",1]"#)),
            DecodeError::InvalidPayload { .. }
        ));
    }
    assert!(matches!(invalid("0[]"), DecodeError::InvalidPayload { .. }));
    assert!(matches!(
        invalid(r#"0"x""#),
        DecodeError::InvalidPayload { .. }
    ));
    assert!(matches!(invalid("1{}"), DecodeError::InvalidPayload { .. }));
    assert!(matches!(invalid("3{}"), DecodeError::InvalidPayload { .. }));
    assert_eq!(
        invalid(r#"4{"message":"no"}"#),
        DecodeError::UnexpectedConnectError
    );
    assert_eq!(invalid("4"), DecodeError::UnexpectedConnectError);
}

#[test]
fn ack_id_bounds() {
    assert_eq!(decoded("218446744073709551615[\"a\"]").id, Some(u64::MAX));
    assert_eq!(
        invalid("218446744073709551616[\"a\"]"),
        DecodeError::AckIdTooLarge
    );
    let long = format!("3{}[]", "9".repeat(10_000));
    assert_eq!(invalid(&long), DecodeError::AckIdTooLarge);
}

#[test]
fn attachment_rules() {
    assert_eq!(
        invalid(r#"511-["a"]"#),
        DecodeError::TooManyAttachments { count: 11, max: 10 }
    );
    let huge = format!(r#"5{}-["a"]"#, "9".repeat(50));
    assert!(matches!(
        invalid(&huge),
        DecodeError::TooManyAttachments { max: 10, .. }
    ));
    assert_eq!(invalid(r#"5-["a"]"#), DecodeError::BadAttachmentCount);
    assert_eq!(invalid(r#"5x-["a"]"#), DecodeError::BadAttachmentCount);
    assert_eq!(invalid(r#"5["a"]"#), DecodeError::BadAttachmentCount);

    // Binary with nothing pending.
    let mut dec = Decoder::new(10);
    assert_eq!(
        dec.feed_binary(Bytes::from_static(b"x")),
        Err(DecodeError::UnexpectedBinary)
    );

    // Text while attachments are pending; the decoder is usable again afterwards.
    assert_eq!(dec.feed_text(&format!(r#"52-["a",{PH0},{PH1}]"#)), Ok(None));
    assert_eq!(dec.feed_binary(Bytes::new()), Ok(None));
    assert_eq!(
        dec.feed_text(r#"2["a"]"#),
        Err(DecodeError::AttachmentsPending { missing: 1 })
    );
    assert!(!dec.is_pending());
    assert!(dec.feed_text(r#"2["a"]"#).unwrap().is_some());

    // Placeholder index out of range, negative, or not a number.
    for ph in [
        r#"{"_placeholder":true,"num":1}"#,
        r#"{"_placeholder":true,"num":-1}"#,
        r#"{"_placeholder":true,"num":"0"}"#,
        r#"{"_placeholder":true}"#,
    ] {
        let mut dec = Decoder::new(10);
        assert_eq!(dec.feed_text(&format!(r#"51-["a",{ph}]"#)), Ok(None));
        assert_eq!(
            dec.feed_binary(Bytes::new()),
            Err(DecodeError::BadPlaceholder { count: 1 })
        );
        assert!(!dec.is_pending());
    }

    // Zero attachments: complete at once.
    let p = decoded(r#"50-["a",1]"#);
    assert_eq!(
        (p.kind, p.args()),
        (PacketType::BinaryEvent, &[v(json!(1))][..])
    );

    // The limit is configurable.
    assert!(matches!(
        Decoder::new(1).feed_text(r#"52-["a"]"#),
        Err(DecodeError::TooManyAttachments { count: 2, max: 1 })
    ));
}

#[test]
fn client_side_decoder_accepts_connect_error() {
    let mut dec = Decoder::for_client(10);
    let p = dec
        .feed_text(r#"4/random,{"message":"Invalid namespace"}"#)
        .unwrap()
        .unwrap();
    assert_eq!(
        p,
        Packet::connect_error("/random", "Invalid namespace", None)
    );
    assert!(dec.feed_text(r#"4"legacy""#).unwrap().is_some());
    assert!(matches!(
        dec.feed_text("4[1]"),
        Err(DecodeError::InvalidPayload { .. })
    ));
}

#[test]
fn errors_have_log_friendly_messages() {
    assert_eq!(
        DecodeError::TooManyAttachments { count: 11, max: 10 }.to_string(),
        "binary packet announces 11 attachments, the limit is 10"
    );
    assert_eq!(
        invalid(r#"2["connect"]"#).to_string(),
        "invalid payload for Event packet: reserved event name"
    );
}

// ---- encoding: the official suite's server packets ----

#[test]
fn encode_text_packets() {
    let enc = |p: Packet| {
        let e = encode(&p);
        assert!(e.attachments.is_empty());
        e.text
    };
    assert_eq!(
        enc(Packet::connect("/", Some(v(json!({"sid": "abc"}))))),
        r#"0{"sid":"abc"}"#
    );
    assert_eq!(
        enc(Packet::connect("/custom", Some(v(json!({"sid": "x"}))))),
        r#"0/custom,{"sid":"x"}"#
    );
    assert_eq!(
        enc(Packet::connect_error("/random", "Invalid namespace", None)),
        r#"4/random,{"message":"Invalid namespace"}"#
    );
    assert_eq!(
        enc(Packet::connect_error(
            "/admin",
            "unauthorized",
            Some(v(json!({"why": 1})))
        )),
        r#"4/admin,{"message":"unauthorized","data":{"why":1}}"#
    );
    assert_eq!(enc(Packet::disconnect("/")), "1");
    assert_eq!(enc(Packet::disconnect("/custom")), "1/custom,");
    assert_eq!(
        enc(Packet::event(
            "/",
            "message-back",
            vec![v(json!(1)), v(json!("2")), v(json!({"3": [true]}))],
            None
        )),
        r#"2["message-back",1,"2",{"3":[true]}]"#
    );
    assert_eq!(
        enc(Packet::event("/custom", "auth", vec![v(json!({}))], None)),
        r#"2/custom,["auth",{}]"#
    );
    assert_eq!(
        enc(Packet::ack(
            "/",
            456,
            vec![v(json!(1)), v(json!("2")), v(json!({"3": [false]}))]
        )),
        r#"3456[1,"2",{"3":[false]}]"#
    );
    assert_eq!(
        enc(Packet::event("/a", "e", vec![], Some(3))),
        r#"2/a,3["e"]"#
    );
}

#[test]
fn encode_binary_packets() {
    let b0 = Value::from(vec![1u8, 2, 3, 4]);
    let b1 = Value::from(Bytes::from_static(b"\xff"));
    let e = encode(&Packet::event(
        "/",
        "message-back",
        vec![b0.clone(), b1.clone()],
        None,
    ));
    assert_eq!(e.text, format!(r#"52-["message-back",{PH0},{PH1}]"#));
    assert_eq!(
        e.attachments,
        vec![
            Bytes::from_static(&[1, 2, 3, 4]),
            Bytes::from_static(b"\xff")
        ]
    );

    let e = encode(&Packet::ack("/", 789, vec![b0.clone(), b1.clone()]));
    assert_eq!(e.text, format!("62-789[{PH0},{PH1}]"));
    assert_eq!(e.attachments.len(), 2);

    // Depth-first numbering, in array and key order.
    let nested = Value::Array(vec![
        Value::Object(IndexMap::from([
            ("z".to_owned(), Value::from(&b"0"[..])),
            (
                "a".to_owned(),
                Value::Array(vec![Value::from(&b"1"[..]), Value::from(&b"2"[..])]),
            ),
        ])),
        Value::from(&b"3"[..]),
    ]);
    let e = encode(&Packet::event("/n", "e", vec![nested], Some(1)));
    assert_eq!(
        e.text,
        r#"54-/n,1["e",[{"z":{"_placeholder":true,"num":0},"a":[{"_placeholder":true,"num":1},{"_placeholder":true,"num":2}]},{"_placeholder":true,"num":3}]]"#
    );
    let order: Vec<&[u8]> = e.attachments.iter().map(|b| b.as_ref()).collect();
    assert_eq!(order, [b"0", b"1", b"2", b"3"]);

    // The kind follows the data, whatever the packet says.
    let mut p = Packet::event("/", "e", vec![Value::Null], None);
    p.kind = PacketType::BinaryEvent;
    assert_eq!(encode(&p).text, r#"2["e",null]"#);
    p.kind = PacketType::Event;
    p.data = Some(Value::Array(vec!["e".into(), b0]));
    assert_eq!(encode(&p).text, format!(r#"51-["e",{PH0}]"#));
}

#[test]
fn encode_json_details() {
    let text = |val: Value| encode(&Packet::ack("/", 0, vec![val])).text;
    assert_eq!(text(Value::from(1.5)), "30[1.5]");
    assert_eq!(text(Value::from(2.0)), "30[2.0]");
    assert_eq!(text(Value::from(-7i64)), "30[-7]");
    assert_eq!(text(Value::from(u64::MAX)), "30[18446744073709551615]");
    assert_eq!(text(Value::from(f64::NAN)), "30[null]");
    assert_eq!(
        text(Value::from("é😀 \"q\" \\ \n\t\u{1}\u{7f}")),
        "30[\"é😀 \\\"q\\\" \\\\ \\n\\t\\u0001\u{7f}\"]"
    );
    // Key order is kept, even when not sorted.
    assert_eq!(
        text(v(json!({"b": 1, "a": {"d": 2, "c": 3}}))),
        r#"30[{"b":1,"a":{"d":2,"c":3}}]"#
    );
    // Decoding keeps integers as integers and key order too.
    let p = decoded(r#"3[{"b":1,"a":2.50,"c":-0}]"#);
    assert_eq!(encode(&p).text, r#"3[{"b":1,"a":2.5,"c":-0.0}]"#);
}

// ---- Value ----

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Message {
    room: String,
    count: u32,
    tags: Vec<String>,
    extra: Option<bool>,
    kind: Kind,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Kind {
    Plain,
    Sized(u8),
    Pair(i8, i8),
    Named { x: f64 },
}

#[test]
fn value_serde_conversions() {
    let m = Message {
        room: "r".into(),
        count: 3,
        tags: vec!["a".into()],
        extra: None,
        kind: Kind::Named { x: 0.5 },
    };
    let val = Value::from_serialize(&m).unwrap();
    assert_eq!(
        val.to_string(),
        r#"{"room":"r","count":3,"tags":["a"],"extra":null,"kind":{"Named":{"x":0.5}}}"#
    );
    assert_eq!(val.deserialize_into::<Message>().unwrap(), m);
    for kind in [Kind::Plain, Kind::Sized(9), Kind::Pair(-1, 2)] {
        let val = Value::from_serialize(&kind).unwrap();
        assert_eq!(
            val.to_json(),
            Some(serde_json::to_value(&kind).unwrap()),
            "{kind:?}"
        );
        assert_eq!(val.deserialize_into::<Kind>().unwrap(), kind);
    }
    assert!(val.deserialize_into::<Vec<u8>>().is_err());

    // Binary survives from_serialize of a Value, and deserializes as a byte array.
    let bin = Value::Array(vec![Value::from(vec![1u8, 2]), Value::from("x")]);
    assert_eq!(Value::from_serialize(&bin).unwrap(), bin);
    let (bytes, s): (Vec<u8>, String) = bin.deserialize_into().unwrap();
    assert_eq!((bytes, s.as_str()), (vec![1, 2], "x"));
    assert_eq!(bin.to_json(), None);
    assert!(bin.has_binary());
    assert_eq!(bin.to_string(), r#"[[1,2],"x"]"#);

    // Map keys: strings and numbers work, others are refused with an error.
    let map = std::collections::BTreeMap::from([(1, "a")]);
    assert_eq!(
        Value::from_serialize(&map).unwrap().to_string(),
        r#"{"1":"a"}"#
    );
    let bad = std::collections::BTreeMap::from([(vec![1], 1)]);
    assert!(Value::from_serialize(&bad).is_err());
    assert!(Value::from_serialize(&u128::MAX).is_err());
}

#[test]
fn value_accessors_and_conversions() {
    let val = v(json!({"s": "x", "n": 5, "f": 1.5, "b": true, "a": [null], "o": {}}));
    assert_eq!(val.get("s").and_then(Value::as_str), Some("x"));
    assert_eq!(val.get("n").and_then(Value::as_u64), Some(5));
    assert_eq!(val.get("n").and_then(Value::as_i64), Some(5));
    assert_eq!(val.get("f").and_then(Value::as_f64), Some(1.5));
    assert_eq!(val.get("b").and_then(Value::as_bool), Some(true));
    assert!(val.get("a").and_then(Value::as_array).unwrap()[0].is_null());
    assert!(val.get("o").and_then(Value::as_object).unwrap().is_empty());
    assert_eq!(val.get("missing"), None);
    assert_eq!(Value::from("x").get("s"), None);
    assert_eq!(Value::from(true), Value::Bool(true));
    assert_eq!(Value::from(3u8).as_u64(), Some(3));
    assert_eq!(Value::from(-3isize).as_i64(), Some(-3));
    assert_eq!(Value::from(String::from("y")).as_str(), Some("y"));
    assert_eq!(
        Value::from(vec![Value::Null]).as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(Value::from(f32::INFINITY), Value::Null);
    assert_eq!(
        val.to_json(),
        Some(json!({"s": "x", "n": 5, "f": 1.5, "b": true, "a": [null], "o": {}}))
    );
    // serde round trip through serde_json text.
    let back: Value = serde_json::from_str(&val.to_string()).unwrap();
    assert_eq!(back, val);
    assert_eq!(serde_json::to_string(&val).unwrap(), val.to_string());
}

// ---- properties ----

/// Short strings of any characters. Cheaper to generate than a regex strategy, which matters
/// at 100_000 cases.
fn arb_string(max: usize) -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..=max).prop_map(String::from_iter)
}

fn arb_key() -> impl Strategy<Value = String> {
    arb_string(5).prop_filter("placeholder key", |k| k != "_placeholder")
}

fn arb_value(binary: bool) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // Short decimals: serde_json (without `float_roundtrip`) reads these back exactly.
        (any::<i32>(), 0i32..6).prop_map(|(m, e)| Value::from(f64::from(m) / 10f64.powi(e))),
        arb_string(8).prop_map(Value::String),
        vec(any::<u8>(), 0..6).prop_map(move |b| if binary { Value::from(b) } else { Value::Null }),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            vec((arb_key(), inner), 0..4).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn arb_nsp() -> impl Strategy<Value = String> {
    const CHARS: &[char] = &['a', 'Z', '0', '9', '_', '.', '/', '~', 'é', '-'];
    prop_oneof![
        Just("/".to_owned()),
        vec(prop::sample::select(CHARS), 0..8).prop_map(|c| format!("/{}", String::from_iter(c))),
    ]
}

fn arb_event_name() -> impl Strategy<Value = String> {
    arb_string(10).prop_filter("reserved", |n| {
        ![
            "connect",
            "connect_error",
            "disconnect",
            "disconnecting",
            "newListener",
            "removeListener",
        ]
        .contains(&n.as_str())
    })
}

/// Packets a client may send (decoded by the server-side decoder).
fn arb_client_packet() -> BoxedStrategy<Packet> {
    let args = || vec(arb_value(true), 0..3);
    prop_oneof![
        (
            arb_nsp(),
            proptest::option::of(
                vec((arb_key(), arb_value(false)), 0..4)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect()))
            )
        )
            .prop_map(|(n, d)| Packet::connect(n, d)),
        arb_nsp().prop_map(Packet::disconnect),
        (
            arb_nsp(),
            arb_event_name(),
            args(),
            proptest::option::of(any::<u64>())
        )
            .prop_map(|(n, e, a, id)| Packet::event(n, e, a, id)),
        (arb_nsp(), any::<i32>(), args()).prop_map(|(n, name, a)| {
            let mut p = Packet::event(n, "", a, None);
            if let Some(items) = p.data.as_mut().and_then(Value::as_array_mut) {
                items[0] = Value::from(name);
            }
            p
        }),
        (arb_nsp(), any::<u64>(), args()).prop_map(|(n, id, a)| Packet::ack(n, id, a)),
    ]
    .boxed()
}

/// The required properties run 100_000 cases; the extra ones fewer, to keep the whole file
/// within a few seconds on a debug build.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Decoded packets re-encode to the same text; `kind` is compared after the encoder's choice
/// of binary or plain form.
fn normalized(mut p: Packet) -> Packet {
    p.kind = match (p.kind, p.data.as_ref().is_some_and(Value::has_binary)) {
        (PacketType::BinaryEvent, false) => PacketType::Event,
        (PacketType::BinaryAck, false) => PacketType::Ack,
        (k, _) => k,
    };
    p
}

proptest! {
    #![proptest_config(config(100_000))]

    #[test]
    fn prop_round_trip(p in arb_client_packet()) {
        let e = encode(&p);
        let mut dec = Decoder::new(usize::MAX);
        let back = decode_all(&mut dec, &e);
        prop_assert_eq!(back.as_ref(), Ok(&Some(p.clone())), "text {:?}", e.text);
        prop_assert!(!dec.is_pending());
        // Object equality ignores order: the text must match too.
        let again = encode(back.as_ref().unwrap().as_ref().unwrap());
        prop_assert_eq!(again, e);
    }

    #[test]
    fn prop_any_text_never_panics(s in arb_text()) {
        let mut dec = Decoder::new(3);
        if let Ok(Some(p)) = dec.feed_text(&s) {
            check_reencodes(p)?;
        }
        if dec.is_pending() {
            let _ = dec.feed_binary(Bytes::from_static(b"x"));
        }
    }

    #[test]
    fn prop_any_message_sequence_never_panics(msgs in vec(arb_message(), 1..5)) {
        let mut dec = Decoder::new(3);
        for m in msgs {
            let out = match m {
                Msg::Text(s) => dec.feed_text(&s),
                Msg::Binary(b) => dec.feed_binary(Bytes::from(b)),
            };
            if let Ok(Some(p)) = out {
                check_reencodes(p)?;
            }
        }
    }
}

proptest! {
    #![proptest_config(config(20_000))]

    #[test]
    fn prop_a_trailing_argument_is_added_without_decoding(
        nsp in arb_nsp(),
        args in vec(arb_value(true), 0..4),
        arg in arb_string(12),
    ) {
        let p = Packet::event(nsp.clone(), "e", args.clone(), None);
        let with = with_trailing_arg(&encode(&p), &arg).expect("an event packet");
        let mut longer = args;
        longer.push(Value::from(arg.as_str()));
        prop_assert_eq!(with, encode(&Packet::event(nsp.clone(), "e", longer, None)));
        prop_assert_eq!(with_trailing_arg(&encode(&Packet::disconnect(nsp)), &arg), None);
    }

    #[test]
    fn prop_server_packets_round_trip(
        nsp in arb_nsp(),
        msg in arb_string(12),
        data in proptest::option::of(arb_value(false)),
        sid in arb_string(20),
    ) {
        let mut dec = Decoder::for_client(10);
        for p in [
            Packet::connect_error(nsp.clone(), msg.clone(), data.clone()),
            Packet::connect(nsp.clone(), Some(Value::from(serde_json::json!({"sid": sid})))),
            Packet::disconnect(nsp.clone()),
        ] {
            let e = encode(&p);
            prop_assert_eq!(decode_all(&mut dec, &e), Ok(Some(p)));
        }
    }

    #[test]
    fn prop_display_matches_serde_json(val in arb_value(false)) {
        let json = val.to_json().unwrap();
        prop_assert_eq!(val.to_string(), serde_json::to_string(&json).unwrap());
        prop_assert_eq!(Value::from(json), val.clone());
        prop_assert_eq!(Value::from_serialize(&val).unwrap(), val.clone());
        prop_assert_eq!(val.deserialize_into::<Value>().unwrap(), val);
    }

    #[test]
    fn prop_edited_encodings_never_panic(text in arb_edited_encoding(), bins in vec(arb_bytes(), 0..3)) {
        let mut dec = Decoder::new(3);
        let mut out = dec.feed_text(&text);
        for b in bins {
            out = dec.feed_binary(Bytes::from(b));
        }
        if let Ok(Some(p)) = out {
            check_reencodes(p)?;
        }
    }
}

/// Whatever decodes must survive a re-encode: same packet, up to the binary/plain choice
/// and float rounding.
fn check_reencodes(p: Packet) -> Result<(), TestCaseError> {
    let p = normalized(p);
    let e = encode(&p);
    let back = decode_all(&mut Decoder::new(usize::MAX), &e).map(|o| o.map(normalized));
    let same = match &back {
        Ok(Some(q)) => {
            (q.kind, &q.nsp, q.id) == (p.kind, &p.nsp, p.id)
                && match (&q.data, &p.data) {
                    (Some(a), Some(b)) => nearly_equal(a, b),
                    (a, b) => a == b,
                }
        }
        _ => false,
    };
    prop_assert!(same, "{:?} re-decoded as {:?}", p, back);
    Ok(())
}

/// Equality, except that floats may differ in the last bits: serde_json without its
/// `float_roundtrip` feature reads some long decimals (more than 17 digits, or integers past
/// `u64`) to a neighbour of the correctly rounded value.
fn nearly_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => (x - y).abs() <= 4.0 * f64::EPSILON * x.abs().max(y.abs()),
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| nearly_equal(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((kx, vx), (ky, vy))| kx == ky && nearly_equal(vx, vy))
        }
        _ => a == b,
    }
}

/// Pieces of the wire syntax. Joined at random they reach far deeper into the parser than
/// random text does, and cost little to generate.
const TOKENS: &[&str] = &[
    "0",
    "1",
    "2",
    "3",
    "4",
    "5",
    "6",
    "9",
    "10",
    "-",
    "/",
    "/nsp",
    ",",
    "[",
    "]",
    "{",
    "}",
    ":",
    "\"",
    "\"e\"",
    "\"connect\"",
    "\"_placeholder\"",
    "\"num\"",
    "true",
    "false",
    "null",
    "-1",
    "1.5",
    "1e400",
    "18446744073709551616",
    "\\",
    "\\u0000",
    "é",
    " ",
    "\u{0}",
];

fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => vec(prop::sample::select(TOKENS), 0..20).prop_map(|t| t.concat()),
        1 => any::<String>(),
    ]
}

fn arb_bytes() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..8)
}

#[derive(Debug, Clone)]
enum Msg {
    Text(String),
    Binary(Vec<u8>),
}

fn arb_message() -> impl Strategy<Value = Msg> {
    prop_oneof![
        2 => arb_text().prop_map(Msg::Text),
        1 => arb_bytes().prop_map(Msg::Binary),
    ]
}

/// A valid encoding cut short, or with a few characters inserted.
fn arb_edited_encoding() -> impl Strategy<Value = String> {
    (
        arb_client_packet(),
        any::<prop::sample::Index>(),
        arb_string(3),
        0..3u8,
    )
        .prop_map(|(p, at, insert, op)| {
            let text = encode(&p).text;
            let mut cut = at.index(text.len() + 1);
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            let (head, tail) = text.split_at(cut);
            match op {
                0 => head.to_owned(),
                1 => format!("{head}{insert}{tail}"),
                _ => format!("{head}{insert}"),
            }
        })
}

/// Packets as `socket.io-msgpack-parser` carries them: what a client sends comes back the same
/// through the msgpack encoding, and no input makes the decoder panic.
mod msgpack {
    use super::*;
    use nonstick::protocol::msgpack;

    /// What the msgpack form keeps of a packet: no binary-packet types (binary is inline).
    fn plain(mut p: Packet) -> Packet {
        p.kind = match p.kind {
            PacketType::BinaryEvent => PacketType::Event,
            PacketType::BinaryAck => PacketType::Ack,
            k => k,
        };
        p
    }

    proptest! {
        #![proptest_config(config(20_000))]

        #[test]
        fn prop_client_packets_round_trip(p in arb_client_packet()) {
            let bytes = msgpack::encode(&p);
            prop_assert_eq!(msgpack::decode(&bytes), Ok(plain(p)));
        }

        #[test]
        fn prop_any_bytes_never_panic(bytes in vec(any::<u8>(), 0..64)) {
            if let Ok(p) = msgpack::decode(&bytes) {
                prop_assert_eq!(msgpack::decode(&msgpack::encode(&p)), Ok(p));
            }
        }

        #[test]
        fn prop_edited_packets_never_panic(
            p in arb_client_packet(),
            at in any::<usize>(),
            byte in any::<u8>(),
        ) {
            let mut bytes = msgpack::encode(&p);
            let at = at % bytes.len();
            bytes[at] = byte;
            let _ = msgpack::decode(&bytes);
            bytes.truncate(at);
            let _ = msgpack::decode(&bytes);
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowing_the_stack() {
        // {type: 2, nsp: "/", data: [[[[...]]]]} nested far past the bound.
        let mut bytes = b"\x83\xa4type\x02\xa3nsp\xa1/\xa4data".to_vec();
        bytes.extend(std::iter::repeat_n(0x91u8, 100_000));
        bytes.push(0xc0);
        assert!(msgpack::decode(&bytes).is_err());
    }
}
