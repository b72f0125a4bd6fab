//! Socket.IO packets in the encoding of `socket.io-msgpack-parser`: each packet is one msgpack
//! map (`type`, `nsp`, `data`, `id`), sent as one binary Engine.IO message, binary values inline
//! as msgpack `bin` (no attachments, no BINARY_EVENT). Pure: no I/O, no async.
//!
//! What clients send, and so what is accepted: keys in any order, unknown keys (the client's
//! `options`) skipped; binary as `bin`, or as ext type 0 (a Node `ArrayBuffer`, as notepack.io
//! 2 writes it); JS `undefined` as fixext 1 of type 0 (`d4 00 00`), read as absent. What is
//! written: only the keys that have a value (never nil for `data` or `id`: the JS client
//! refuses that), integers in their smallest form, binary as `bin`.

use bytes::Bytes;
use indexmap::IndexMap;
use rmpv::Value as Msg;
use serde_json::Number;

use super::sio::{Packet, PacketType};
use super::value::Value;

/// The deepest nesting a decoded packet may have (a bound on the decoder's recursion).
pub const MAX_DEPTH: usize = 128;

/// Why a binary message is not a msgpack Socket.IO packet. The reference server closes the
/// connection on any of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not msgpack, nested too deep, or followed by more bytes.
    #[error("not a msgpack packet: {0}")]
    Malformed(String),
    /// Not a map, or no integer `type` from 0 to 4.
    #[error("invalid packet type")]
    Type,
    /// No string `nsp`.
    #[error("invalid namespace")]
    Namespace,
    /// `data` is not what the packet type allows.
    #[error("invalid payload")]
    Payload,
    /// `id` is not a non-negative integer.
    #[error("invalid packet id")]
    Id,
    /// A string that is not UTF-8, or a map key that is not a string.
    #[error("invalid value: {0}")]
    Value(&'static str),
}

/// The packet as one msgpack message.
pub fn encode(packet: &Packet) -> Vec<u8> {
    let kind = match packet.kind {
        PacketType::BinaryEvent => PacketType::Event,
        PacketType::BinaryAck => PacketType::Ack,
        kind => kind,
    };
    let mut map = vec![
        (Msg::from("type"), Msg::from(type_number(kind))),
        (Msg::from("nsp"), Msg::from(packet.nsp.as_str())),
    ];
    if let Some(data) = &packet.data {
        map.push((Msg::from("data"), to_msg(data)));
    }
    if let Some(id) = packet.id {
        map.push((Msg::from("id"), Msg::from(id)));
    }
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut out, &Msg::Map(map));
    out
}

/// The packet a client sent as one binary message. A client may not send CONNECT_ERROR.
pub fn decode(bytes: &[u8]) -> Result<Packet, DecodeError> {
    let mut rest = bytes;
    let msg = rmpv::decode::read_value_with_max_depth(&mut rest, MAX_DEPTH)
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::Malformed(format!(
            "{} bytes after the packet",
            rest.len()
        )));
    }
    let Msg::Map(entries) = msg else {
        return Err(DecodeError::Type);
    };
    let (mut kind, mut nsp, mut data, mut id) = (None, None, None, None);
    for (key, value) in entries {
        match key.as_str() {
            Some("type") => kind = Some(value),
            Some("nsp") => nsp = Some(value),
            Some("data") => data = Some(value).filter(|v| !is_undefined(v)),
            Some("id") => id = Some(value).filter(|v| !is_undefined(v)),
            _ => {}
        }
    }
    let kind = match kind.as_ref().and_then(Msg::as_u64) {
        Some(0) => PacketType::Connect,
        Some(1) => PacketType::Disconnect,
        Some(2) => PacketType::Event,
        Some(3) => PacketType::Ack,
        _ => return Err(DecodeError::Type),
    };
    let nsp = match nsp {
        Some(Msg::String(s)) => s.into_str().ok_or(DecodeError::Namespace)?,
        _ => return Err(DecodeError::Namespace),
    };
    let data = data.map(from_msg).transpose()?;
    let valid = match kind {
        PacketType::Connect => matches!(data, None | Some(Value::Object(_))),
        PacketType::Disconnect => data.is_none(),
        _ => matches!(data, Some(Value::Array(_))),
    };
    if !valid {
        return Err(DecodeError::Payload);
    }
    let id = match id {
        None => None,
        Some(id) => Some(id.as_u64().ok_or(DecodeError::Id)?),
    };
    Ok(Packet {
        kind,
        nsp,
        id,
        data,
    })
}

fn type_number(kind: PacketType) -> u8 {
    match kind {
        PacketType::Connect => 0,
        PacketType::Disconnect => 1,
        PacketType::Event | PacketType::BinaryEvent => 2,
        PacketType::Ack | PacketType::BinaryAck => 3,
        PacketType::ConnectError => 4,
    }
}

/// notepack.io 2's `undefined`: fixext 1 of type 0.
fn is_undefined(msg: &Msg) -> bool {
    matches!(msg, Msg::Ext(0, bytes) if bytes.len() == 1)
}

fn to_msg(value: &Value) -> Msg {
    match value {
        Value::Null => Msg::Nil,
        Value::Bool(b) => Msg::Boolean(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => Msg::from(u),
            (_, Some(i), _) => Msg::from(i),
            (_, _, Some(f)) => Msg::F64(f),
            _ => Msg::Nil,
        },
        Value::String(s) => Msg::from(s.as_str()),
        Value::Binary(b) => Msg::Binary(b.to_vec()),
        Value::Array(items) => Msg::Array(items.iter().map(to_msg).collect()),
        Value::Object(map) => Msg::Map(
            map.iter()
                .map(|(k, v)| (Msg::from(k.as_str()), to_msg(v)))
                .collect(),
        ),
    }
}

fn from_msg(msg: Msg) -> Result<Value, DecodeError> {
    Ok(match msg {
        Msg::Nil => Value::Null,
        Msg::Boolean(b) => Value::Bool(b),
        Msg::Integer(i) => match (i.as_u64(), i.as_i64()) {
            (Some(u), _) => Value::Number(Number::from(u)),
            (_, Some(i)) => Value::Number(Number::from(i)),
            _ => Value::Null,
        },
        Msg::F32(f) => float(f64::from(f)),
        Msg::F64(f) => float(f),
        Msg::String(s) => Value::String(s.into_str().ok_or(DecodeError::Value("a string"))?),
        Msg::Binary(b) => Value::Binary(Bytes::from(b)),
        Msg::Array(items) => {
            Value::Array(items.into_iter().map(from_msg).collect::<Result<_, _>>()?)
        }
        Msg::Map(entries) => {
            let mut map = IndexMap::with_capacity(entries.len());
            for (key, value) in entries {
                let Msg::String(key) = key else {
                    return Err(DecodeError::Value("a map key"));
                };
                let key = key.into_str().ok_or(DecodeError::Value("a map key"))?;
                if !is_undefined(&value) {
                    map.insert(key, from_msg(value)?);
                }
            }
            Value::Object(map)
        }
        // `undefined` inside an array.
        Msg::Ext(0, bytes) if bytes.len() == 1 => Value::Null,
        // A Node `ArrayBuffer` or typed array, as notepack.io 2 writes it.
        Msg::Ext(0, bytes) => Value::Binary(Bytes::from(bytes)),
        // A date (ext -1, msgpack's timestamp), or an extension nobody sends here.
        Msg::Ext(..) => Value::Null,
    })
}

/// A JSON number, or null for what JSON cannot hold (NaN, infinities), as serde_json does.
fn float(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn the_js_clients_packets_decode() {
        // {type: 0, data: undefined, nsp: "/"}: a CONNECT without auth, as notepack.io 2 writes it.
        let connect =
            decode(&unhex("83a47479706500a464617461d40000a36e7370a12f")).expect("connect");
        assert_eq!(connect, Packet::connect("/", None));
        // {type: 2, data: ["echo", <Buffer 01 02>], options: {compress: true}, id: 7, nsp: "/chat"}
        let event = decode(&unhex(
            "85a47479706502a46461746192a46563686fc4020102a76f7074696f6e7381a8636f6d7072657373c3a2696407a36e7370a52f63686174",
        ))
        .expect("event");
        assert_eq!(event.kind, PacketType::Event);
        assert_eq!(event.nsp, "/chat");
        assert_eq!(event.id, Some(7));
        assert_eq!(
            event.data,
            Some(Value::Array(vec![
                Value::from("echo"),
                Value::Binary(Bytes::from_static(&[1, 2]))
            ]))
        );
        // A Node ArrayBuffer arrives as ext type 0.
        let array_buffer = decode(&unhex(
            "83a47479706502a46461746192a46563686fc702000102a36e7370a12f",
        ))
        .expect("event");
        assert_eq!(
            array_buffer.args(),
            [Value::Binary(Bytes::from_static(&[1, 2]))]
        );
        // ["n", 1.5, -3, 2 ** 40, "é", null, {a: undefined, b: true}]
        let numbers = decode(&unhex(
            "83a47479706502a46461746197a16ecb3ff8000000000000fdcf0000010000000000a2c3a9c082a161d40000a162c3a36e7370a12f",
        ))
        .expect("event");
        assert_eq!(
            Value::Array(numbers.args().to_vec()),
            Value::from_serialize(
                &serde_json::json!([1.5, -3, 1u64 << 40, "é", null, {"b": true}])
            )
            .expect("value")
        );
    }

    #[test]
    fn packets_are_written_as_the_js_client_reads_them() {
        assert_eq!(
            hex(&encode(&Packet::disconnect("/"))),
            "82a47479706501a36e7370a12f"
        );
        let ack = Packet::ack("/", 1, vec![Value::from(2u64)]);
        assert_eq!(
            hex(&encode(&ack)),
            "84a47479706503a36e7370a12fa46461746191".to_owned() + "02a2696401"
        );
    }

    #[test]
    fn what_a_client_may_not_send_is_refused() {
        let refusals = [
            ("", "empty"),
            ("c0", "nil"),
            ("81a47479706505", "type 5"),
            ("81a47479706500", "no nsp"),
            ("82a47479706502a36e7370a12f", "an event without data"),
            (
                "83a47479706501a36e7370a12fa464617461c0",
                "DISCONNECT with nil data",
            ),
            (
                "83a47479706504a36e7370a12fa46461746181a16d",
                "CONNECT_ERROR from a client",
            ),
            ("83a47479706503a36e7370a12fa464617461c0", "ACK data nil"),
            (
                "84a47479706502a36e7370a12fa46461746190a26964ff",
                "negative id",
            ),
            ("82a47479706501a36e7370a12f00", "a byte after the packet"),
        ];
        for (bytes, what) in refusals {
            assert!(decode(&unhex(bytes)).is_err(), "{what} was accepted");
        }
    }
}
