//! The Socket.IO state of a session that moves to another node: per namespace, the socket's
//! id, recovery id, rooms, data and handshake auth. Written on the old node when the engine
//! takes the session out (`SessionHandler::on_move`), read on the new one
//! (`Application::on_move_in`), where each socket is resumed as a recovered one.
//!
//! Values keep their binary parts: the state travels as one Socket.IO event packet (text plus
//! attachments), framed as JSON.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::remote::AdoptedSocket;
use crate::protocol::sio::{self, Encoded, Packet};
use crate::protocol::value::Value;

/// One socket handed over.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MovedSocket {
    pub(crate) nsp: String,
    pub(crate) id: String,
    pub(crate) pid: Option<String>,
    /// Rooms other than the socket's own.
    pub(crate) rooms: Vec<String>,
    pub(crate) data: Value,
    pub(crate) auth: Value,
    /// What the socket had been sent of the logged broadcasts when it left (a recovery
    /// position), when its namespace keeps a log.
    pub(crate) seen: Option<String>,
    /// For a socket taken over by a node whose log starts too late for `seen`: what another
    /// node's log replayed, and that log's position when it answered.
    pub(crate) replayed: Option<(Vec<Encoded>, String)>,
}

impl MovedSocket {
    /// A socket taken over from a lost node: what the cluster recorded of it. The auth its
    /// client sent went with the node.
    pub(crate) fn adopted(socket: AdoptedSocket) -> MovedSocket {
        MovedSocket {
            nsp: socket.nsp,
            id: socket.id,
            pid: socket.pid,
            rooms: socket.rooms,
            data: socket.data,
            auth: Value::Object(Default::default()),
            seen: socket.received,
            replayed: None,
        }
    }
}

/// The framing of the encoded packet.
#[derive(Serialize, Deserialize)]
struct Wire {
    text: String,
    attachments: Vec<Vec<u8>>,
}

const EVENT: &str = "moved";

/// The bytes `on_move` returns for these sockets.
pub(crate) fn encode(sockets: &[MovedSocket]) -> Vec<u8> {
    let items = sockets
        .iter()
        .map(|s| {
            let mut map = indexmap::IndexMap::new();
            map.insert("nsp".to_owned(), Value::from(s.nsp.as_str()));
            map.insert("id".to_owned(), Value::from(s.id.as_str()));
            map.insert(
                "pid".to_owned(),
                s.pid.as_deref().map_or(Value::Null, Value::from),
            );
            let rooms = s.rooms.iter().map(|r| Value::from(r.as_str())).collect();
            map.insert("rooms".to_owned(), Value::Array(rooms));
            map.insert("data".to_owned(), s.data.clone());
            map.insert("auth".to_owned(), s.auth.clone());
            map.insert(
                "seen".to_owned(),
                s.seen.as_deref().map_or(Value::Null, Value::from),
            );
            if let Some((packets, position)) = &s.replayed {
                let packets = packets.iter().map(packet_to_value).collect();
                map.insert("replayed".to_owned(), Value::Array(packets));
                map.insert("replayedTo".to_owned(), Value::from(position.as_str()));
            }
            Value::Object(map)
        })
        .collect();
    let encoded = sio::encode(&Packet::event("/", EVENT, vec![Value::Array(items)], None));
    let wire = Wire {
        text: encoded.text,
        attachments: encoded.attachments.iter().map(|b| b.to_vec()).collect(),
    };
    // Strings and byte vectors only: serializing cannot fail.
    serde_json::to_vec(&wire).unwrap_or_default()
}

/// The sockets in `bytes`, or `None` when they are not what [`encode`] writes.
pub(crate) fn decode(bytes: &[u8], max_attachments: usize) -> Option<Vec<MovedSocket>> {
    let wire: Wire = serde_json::from_slice(bytes).ok()?;
    if wire.attachments.len() > max_attachments {
        return None;
    }
    let encoded = Encoded {
        text: wire.text,
        attachments: wire.attachments.into_iter().map(Bytes::from).collect(),
    };
    let packet = sio::decode(&encoded).ok()?;
    if packet.event_name() != Some(EVENT) {
        return None;
    }
    let items = packet.into_args().into_iter().next()?;
    items
        .as_array()?
        .iter()
        .map(|item| {
            let text = |key: &str| item.get(key).and_then(Value::as_str).map(str::to_owned);
            Some(MovedSocket {
                nsp: text("nsp")?,
                id: text("id")?,
                pid: text("pid"),
                rooms: item
                    .get("rooms")?
                    .as_array()?
                    .iter()
                    .filter_map(|r| r.as_str().map(str::to_owned))
                    .collect(),
                data: item.get("data").cloned().unwrap_or(Value::Null),
                auth: item.get("auth").cloned().unwrap_or(Value::Null),
                seen: text("seen"),
                replayed: match (item.get("replayed"), text("replayedTo")) {
                    (Some(packets), Some(position)) => Some((
                        packets
                            .as_array()?
                            .iter()
                            .map(packet_from_value)
                            .collect::<Option<_>>()?,
                        position,
                    )),
                    _ => None,
                },
            })
        })
        .collect()
}

/// An encoded packet as a value: its text and its attachments.
fn packet_to_value(packet: &Encoded) -> Value {
    let attachments = packet.attachments.iter().cloned().map(Value::Binary);
    Value::Array(vec![
        Value::from(packet.text.as_str()),
        Value::Array(attachments.collect()),
    ])
}

fn packet_from_value(value: &Value) -> Option<Encoded> {
    let [text, attachments] = value.as_array()?.as_slice() else {
        return None;
    };
    Some(Encoded {
        text: text.as_str()?.to_owned(),
        attachments: attachments
            .as_array()?
            .iter()
            .map(|a| match a {
                Value::Binary(bytes) => Some(bytes.clone()),
                _ => None,
            })
            .collect::<Option<_>>()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_cross_with_their_binary_data() {
        let mut data = indexmap::IndexMap::new();
        data.insert("name".to_owned(), Value::from("ada"));
        data.insert(
            "avatar".to_owned(),
            Value::Binary(Bytes::from_static(b"\x00\x01\xff")),
        );
        let sockets = vec![
            MovedSocket {
                nsp: "/".to_owned(),
                id: "abc".to_owned(),
                pid: Some("p1".to_owned()),
                rooms: vec!["lobby".to_owned(), "x".to_owned()],
                data: Value::Object(data),
                auth: Value::Object(Default::default()),
                seen: Some("a1-3.b2-7".to_owned()),
                replayed: Some((
                    vec![sio::encode(&Packet::event(
                        "/",
                        "m",
                        vec![Value::Binary(Bytes::from_static(b"\x07"))],
                        None,
                    ))],
                    "a1-5.b2-7".to_owned(),
                )),
            },
            MovedSocket {
                nsp: "/admin".to_owned(),
                id: "def".to_owned(),
                pid: None,
                rooms: Vec::new(),
                data: Value::Null,
                auth: Value::Null,
                seen: None,
                replayed: None,
            },
        ];
        let bytes = encode(&sockets);
        assert_eq!(decode(&bytes, 10), Some(sockets));
        assert_eq!(decode(&bytes, 0), None, "attachments beyond the bound");
        assert_eq!(decode(b"not json", 10), None);
        assert_eq!(
            decode(b"{\"text\":\"2[\\\"x\\\"]\",\"attachments\":[]}", 10),
            None
        );
    }
}
