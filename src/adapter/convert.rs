//! The adapter's values to and from their protobuf form. Socket.IO values travel as the
//! arguments of an encoded ACK packet, so binary stays binary between nodes.

use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;

use crate::engine::{HandshakeInfo, Transport};
use crate::protocol::sio::{self, Encoded, Packet};
use crate::protocol::value::Value;
use crate::rpc::pb::adapter as pb;
use crate::socketio::{
    AckError, AckResponse, CLIENT_ID_CHARS, Handshake, Replayed, Selection, SocketDetails,
};

pub(crate) fn values_to_pb(args: Vec<Value>) -> pb::Values {
    let Encoded { text, attachments } = sio::encode(&Packet::ack("/", 0, args));
    pb::Values {
        text,
        attachments: attachments.into_iter().map(|a| a.to_vec()).collect(),
    }
}

/// `None` when the peer sent something that does not decode.
pub(crate) fn values_from_pb(values: Option<pb::Values>) -> Option<Vec<Value>> {
    let values = values?;
    let encoded = Encoded {
        text: values.text,
        attachments: values.attachments.into_iter().map(Bytes::from).collect(),
    };
    sio::decode(&encoded).ok().map(Packet::into_args)
}

pub(crate) fn value_to_pb(value: Value) -> pb::Values {
    values_to_pb(vec![value])
}

pub(crate) fn value_from_pb(values: Option<pb::Values>) -> Value {
    values_from_pb(values)
        .and_then(|args| args.into_iter().next())
        .unwrap_or(Value::Null)
}

pub(crate) fn selection_to_pb(mount: &str, selection: Selection) -> pb::Selection {
    pb::Selection {
        mount: mount.to_owned(),
        nsp: selection.nsp,
        rooms: selection.rooms,
        except: selection.except,
    }
}

/// The mount path and the selection.
pub(crate) fn selection_from_pb(selection: Option<pb::Selection>) -> (String, Selection) {
    let s = selection.unwrap_or_default();
    let selection = Selection {
        nsp: s.nsp,
        rooms: s.rooms,
        except: s.except,
    };
    (s.mount, selection)
}

pub(crate) fn replayed_to_pb(replayed: Option<Replayed>) -> pb::ReplayReply {
    let Some(replayed) = replayed else {
        return pb::ReplayReply::default();
    };
    pb::ReplayReply {
        found: true,
        missed: replayed
            .missed
            .into_iter()
            .map(|packet| pb::EncodedPacket {
                text: packet.text,
                attachments: packet.attachments.into_iter().map(|a| a.to_vec()).collect(),
            })
            .collect(),
        position: replayed.position,
    }
}

pub(crate) fn replayed_from_pb(reply: pb::ReplayReply) -> Option<Replayed> {
    reply.found.then(|| Replayed {
        missed: reply
            .missed
            .into_iter()
            .map(|packet| Encoded {
                text: packet.text,
                attachments: packet.attachments.into_iter().map(Bytes::from).collect(),
            })
            .collect(),
        position: reply.position,
    })
}

fn pairs_to_pb(pairs: Vec<(String, String)>) -> Vec<pb::Pair> {
    pairs
        .into_iter()
        .map(|(name, value)| pb::Pair { name, value })
        .collect()
}

fn pairs_from_pb(pairs: Vec<pb::Pair>) -> Vec<(String, String)> {
    pairs.into_iter().map(|p| (p.name, p.value)).collect()
}

pub(crate) fn details_to_pb(details: SocketDetails) -> pb::SocketDetails {
    let Handshake {
        auth,
        request,
        time,
    } = details.handshake;
    pb::SocketDetails {
        id: details.id,
        rooms: details.rooms.into_iter().collect(),
        data: Some(value_to_pb(details.data)),
        auth: Some(value_to_pb(auth)),
        query: pairs_to_pb(request.query),
        headers: pairs_to_pb(request.headers),
        remote_addr: request
            .remote_addr
            .map(|a| a.to_string())
            .unwrap_or_default(),
        joined_ms: time.duration_since(UNIX_EPOCH).map_or(0, millis),
        client: details.client,
        websocket: details.transport == Transport::Websocket,
    }
}

pub(crate) fn details_from_pb(details: pb::SocketDetails) -> SocketDetails {
    SocketDetails {
        id: details.id,
        rooms: details.rooms.into_iter().collect(),
        data: value_from_pb(details.data),
        handshake: Handshake {
            auth: value_from_pb(details.auth),
            request: HandshakeInfo {
                query: pairs_from_pb(details.query),
                headers: pairs_from_pb(details.headers),
                remote_addr: details.remote_addr.parse().ok(),
            },
            time: UNIX_EPOCH + Duration::from_millis(details.joined_ms),
        },
        client: details.client.chars().take(CLIENT_ID_CHARS).collect(),
        transport: match details.websocket {
            true => Transport::Websocket,
            false => Transport::Polling,
        },
    }
}

pub(crate) fn ack_to_pb(answer: AckResponse) -> pb::SocketAck {
    let result = match answer.result {
        Ok(args) => pb::socket_ack::Result::Args(values_to_pb(args)),
        Err(AckError::Timeout) => pb::socket_ack::Result::Error("timeout".to_owned()),
        Err(_) => pb::socket_ack::Result::Error("disconnected".to_owned()),
    };
    pb::SocketAck {
        socket_id: answer.socket_id,
        result: Some(result),
    }
}

pub(crate) fn ack_from_pb(answer: pb::SocketAck) -> AckResponse {
    let result = match answer.result {
        Some(pb::socket_ack::Result::Args(args)) => {
            values_from_pb(Some(args)).ok_or(AckError::Disconnected)
        }
        Some(pb::socket_ack::Result::Error(e)) if e == "timeout" => Err(AckError::Timeout),
        _ => Err(AckError::Disconnected),
    };
    AckResponse {
        socket_id: answer.socket_id,
        result,
    }
}

/// Milliseconds of a timeout, saturated.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
