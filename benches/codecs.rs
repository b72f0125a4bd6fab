//! Micro-benchmarks of the pure codecs in `nonstick::protocol`: Engine.IO packets and polling
//! payloads, Socket.IO packets with and without binary attachments in the default and msgpack
//! forms, and `Value` conversions.
//!
//! Ids read as `<layer>/<operation>/<case>`, for example `sio/encode/event-3-binary`, so the same
//! case can be followed across encode and decode. Every fixture is checked once before it is
//! measured (a round trip must give it back), which makes `cargo bench --bench codecs -- --test`
//! a smoke test of the codecs as well as of the benchmarks.
//!
//! Run: `cargo bench --bench codecs` (all), `cargo bench --bench codecs -- sio/` (one layer),
//! `cargo bench --bench codecs -- --quick` (short measurement). `cargo test --bench codecs` runs
//! every benchmark once like `-- --test` does, but in the dev profile the tests already build.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use nonstick::protocol::{Value, eio, msgpack, sio};
use serde::{Deserialize, Serialize};

/// The attachment limit the server uses by default (the reference server's default too).
const MAX_ATTACHMENTS: usize = 10;

/// The size of each binary buffer: a small image thumbnail or a file chunk.
const BUFFER_LEN: usize = 1024;

/// A buffer whose bytes are not all equal, so base64 has real work to do.
fn buffer(seed: u8) -> Bytes {
    (0..BUFFER_LEN)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

/// A JSON document shaped like a typical application payload: a few levels deep, with
/// strings, numbers, booleans, nulls, arrays and objects.
fn nested_json() -> serde_json::Value {
    serde_json::json!({
        "room": "general",
        "user": { "id": 1042, "name": "ada", "roles": ["admin", "ops"], "away": false },
        "message": {
            "text": "the deploy finished, dashboards are green",
            "mentions": [17, 23, 99],
            "reply_to": null,
            "meta": { "client": "web", "version": "4.8.1", "latency_ms": 12.5 }
        },
        "history": [
            { "at": 1_700_000_000u64, "kind": "join" },
            { "at": 1_700_000_042u64, "kind": "typing" }
        ]
    })
}

/// An event carrying three buffers, nested so that the depth-first numbering of placeholders
/// has some work to do.
fn three_buffer_event() -> sio::Packet {
    sio::Packet::event(
        "/",
        "upload",
        vec![Value::from(vec![
            Value::Binary(buffer(1)),
            Value::from(vec![Value::Binary(buffer(2)), Value::Binary(buffer(3))]),
        ])],
        None,
    )
}

/// The Socket.IO events measured by the `sio/*` groups, by id.
fn sio_cases() -> Vec<(&'static str, sio::Packet)> {
    vec![
        (
            "event-small",
            sio::Packet::event("/", "chat", vec!["hello".into(), 42.into()], None),
        ),
        (
            "event-nested",
            sio::Packet::event("/", "state", vec![Value::from(nested_json())], None),
        ),
        (
            "event-1-binary",
            sio::Packet::event(
                "/",
                "upload",
                vec!["avatar.png".into(), Value::Binary(buffer(1))],
                None,
            ),
        ),
        ("event-3-binary", three_buffer_event()),
        (
            "event-nsp-ack",
            sio::Packet::event(
                "/chat",
                "message",
                vec!["hello".into(), 42.into()],
                Some(1234),
            ),
        ),
    ]
}

/// The total wire size of an encoded Socket.IO packet, for throughput figures.
fn encoded_len(encoded: &sio::Encoded) -> u64 {
    let attachments: usize = encoded.attachments.iter().map(Bytes::len).sum();
    (encoded.text.len() + attachments) as u64
}

/// Feeds an encoded packet to a server-side decoder, as the Engine.IO messages would arrive.
fn feed(
    decoder: &mut sio::Decoder,
    encoded: &sio::Encoded,
) -> Result<Option<sio::Packet>, sio::DecodeError> {
    let mut packet = decoder.feed_text(&encoded.text)?;
    for attachment in &encoded.attachments {
        // A clone of `Bytes` only bumps a reference count, as the transport's handoff does.
        packet = decoder.feed_binary(attachment.clone())?;
    }
    Ok(packet)
}

fn sio_benches(c: &mut Criterion) {
    let cases: Vec<(&str, sio::Packet, sio::Encoded)> = sio_cases()
        .into_iter()
        .map(|(id, packet)| {
            let encoded = sio::encode(&packet);
            assert_eq!(sio::decode(&encoded), Ok(packet.clone()), "{id}: decode");
            let mut decoder = sio::Decoder::new(MAX_ATTACHMENTS);
            assert_eq!(
                feed(&mut decoder, &encoded),
                Ok(Some(packet.clone())),
                "{id}: feed"
            );
            (id, packet, encoded)
        })
        .collect();

    let mut group = c.benchmark_group("sio/encode");
    for (id, packet, encoded) in &cases {
        group.throughput(Throughput::Bytes(encoded_len(encoded)));
        group.bench_function(*id, |b| b.iter(|| sio::encode(black_box(packet))));
    }
    group.finish();

    // One decoder per connection, reused across packets: that is how the server holds it.
    let mut group = c.benchmark_group("sio/decoder");
    for (id, _, encoded) in &cases {
        group.throughput(Throughput::Bytes(encoded_len(encoded)));
        let mut decoder = sio::Decoder::new(MAX_ATTACHMENTS);
        group.bench_function(*id, |b| b.iter(|| feed(&mut decoder, black_box(encoded))));
    }
    group.finish();

    let mut group = c.benchmark_group("sio/decode");
    for (id, _, encoded) in &cases {
        group.throughput(Throughput::Bytes(encoded_len(encoded)));
        group.bench_function(*id, |b| b.iter(|| sio::decode(black_box(encoded))));
    }
    group.finish();
}

/// The msgpack parser's codec, and what a msgpack connection costs per packet sent: the server
/// builds, logs and carries packets in the default form, and writes them the msgpack way for each
/// msgpack recipient (`msgpack/transcode`: decode the default form, encode msgpack), where a
/// default recipient gets a clone of the encoded packet (`msgpack/transcode-baseline`).
fn msgpack_benches(c: &mut Criterion) {
    let cases: Vec<(&str, sio::Packet, sio::Encoded, Vec<u8>)> = sio_cases()
        .into_iter()
        .map(|(id, packet)| {
            let bytes = msgpack::encode(&packet);
            // msgpack carries binary inline: its packets have no binary kinds, the rest is equal.
            let decoded = msgpack::decode(&bytes).expect("msgpack decodes");
            assert_eq!(decoded.args(), packet.args(), "{id}: msgpack");
            assert_eq!(decoded.event_name(), packet.event_name(), "{id}: msgpack");
            (id, packet.clone(), sio::encode(&packet), bytes)
        })
        .collect();

    let mut group = c.benchmark_group("msgpack/encode");
    for (id, packet, _, bytes) in &cases {
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(*id, |b| b.iter(|| msgpack::encode(black_box(packet))));
    }
    group.finish();

    let mut group = c.benchmark_group("msgpack/decode");
    for (id, _, _, bytes) in &cases {
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(*id, |b| b.iter(|| msgpack::decode(black_box(bytes))));
    }
    group.finish();

    let mut group = c.benchmark_group("msgpack/transcode");
    for (id, _, encoded, _) in &cases {
        group.bench_function(*id, |b| {
            b.iter(|| sio::decode(black_box(encoded)).map(|p| msgpack::encode(&p)))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("msgpack/transcode-baseline");
    for (id, _, encoded, _) in &cases {
        group.bench_function(*id, |b| b.iter(|| black_box(encoded).clone()));
    }
    group.finish();
}

/// A small Socket.IO event as it travels inside an Engine.IO message.
fn small_message() -> eio::Packet {
    eio::Packet::Text(r#"2["chat","hello",42]"#.to_owned())
}

/// The Engine.IO packets and payloads measured by the `eio/*` groups, by id.
fn eio_cases() -> Vec<(&'static str, Vec<eio::Packet>)> {
    let texts = |n: usize| (0..n).map(|_| small_message()).collect::<Vec<_>>();
    // A binary event over polling: its text, then each attachment as a base64 packet.
    let encoded = sio::encode(&three_buffer_event());
    let mut binary_event = vec![eio::Packet::Text(encoded.text)];
    binary_event.extend(encoded.attachments.into_iter().map(eio::Packet::Binary));
    vec![
        ("payload-1-text", texts(1)),
        ("payload-10-text", texts(10)),
        ("payload-100-text", texts(100)),
        ("payload-3-binary", binary_event),
    ]
}

fn eio_benches(c: &mut Criterion) {
    let single = [
        ("packet-text", small_message()),
        ("packet-binary", eio::Packet::Binary(buffer(1))),
    ];
    let single: Vec<(&str, eio::Packet, String)> = single
        .into_iter()
        .map(|(id, packet)| {
            let text = packet.encode();
            assert_eq!(eio::decode_packet(&text), Ok(packet.clone()), "{id}");
            (id, packet, text)
        })
        .collect();
    let payloads: Vec<(&str, Vec<eio::Packet>, String)> = eio_cases()
        .into_iter()
        .map(|(id, packets)| {
            let text = eio::encode_payload(&packets);
            assert_eq!(
                eio::decode_payload(text.as_bytes()),
                Ok(packets.clone()),
                "{id}"
            );
            (id, packets, text)
        })
        .collect();

    let mut group = c.benchmark_group("eio/encode");
    for (id, packet, text) in &single {
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(*id, |b| b.iter(|| black_box(packet).encode()));
    }
    for (id, packets, text) in &payloads {
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(*id, |b| b.iter(|| eio::encode_payload(black_box(packets))));
    }
    group.finish();

    let mut group = c.benchmark_group("eio/decode");
    for (id, _, text) in &single {
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(*id, |b| b.iter(|| eio::decode_packet(black_box(text))));
    }
    for (id, _, text) in &payloads {
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(*id, |b| {
            b.iter(|| eio::decode_payload(black_box(text.as_bytes())))
        });
    }
    group.finish();
}

/// A typical typed event argument, as handlers take and return it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ChatMessage {
    room: String,
    user: u64,
    text: String,
    mentions: Vec<u64>,
    urgent: bool,
}

fn value_benches(c: &mut Criterion) {
    let small = serde_json::json!(["hello", 42, true]);
    let nested = nested_json();
    let message = ChatMessage {
        room: "general".to_owned(),
        user: 1042,
        text: "the deploy finished, dashboards are green".to_owned(),
        mentions: vec![17, 23, 99],
        urgent: false,
    };
    let message_value = Value::from_serialize(&message).expect("the fixture struct converts");
    assert_eq!(
        message_value.deserialize_into::<ChatMessage>().ok(),
        Some(message.clone())
    );

    let documents: Vec<(&str, serde_json::Value, Value)> = [("small", small), ("nested", nested)]
        .into_iter()
        .map(|(id, json)| {
            let value = Value::from(json.clone());
            assert_eq!(value.to_json().as_ref(), Some(&json), "{id}");
            (id, json, value)
        })
        .collect();

    let mut group = c.benchmark_group("value");
    for (id, json, _) in &documents {
        // The conversion consumes its input: clone outside the measured time.
        group.bench_function(format!("from-json/{id}"), |b| {
            b.iter_batched(|| json.clone(), Value::from, BatchSize::SmallInput)
        });
    }
    for (id, _, value) in &documents {
        group.bench_function(format!("to-json/{id}"), |b| {
            b.iter(|| black_box(value).to_json())
        });
    }
    group.bench_function("from-serialize/struct", |b| {
        b.iter(|| Value::from_serialize(black_box(&message)))
    });
    group.bench_function("deserialize-into/struct", |b| {
        b.iter(|| black_box(&message_value).deserialize_into::<ChatMessage>())
    });
    group.finish();
}

criterion_group!(
    benches,
    eio_benches,
    sio_benches,
    msgpack_benches,
    value_benches
);
criterion_main!(benches);
