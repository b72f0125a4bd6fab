//! Engine requests, errors and moving sessions to and from their protobuf form. The numbers of
//! [`error_to_pb`] are wire values: never renumber them.

use std::time::Duration;

use bytes::Bytes;

use crate::engine::{EngineError, HandshakeInfo, MAX_REQUEST_ID, Method, Request, SessionImage};
use crate::protocol::eio::Packet;
use crate::rpc::pb::forward as pb;

pub(crate) fn request_to_pb(mount: &str, req: &Request, body: Bytes) -> pb::EngineRequest {
    pb::EngineRequest {
        mount: mount.to_owned(),
        method: match req.method {
            Method::Get => pb::Method::Get,
            Method::Post => pb::Method::Post,
            Method::Other => pb::Method::Other,
        } as i32,
        sid: req.sid.clone().unwrap_or_default(),
        transport: req.transport.clone(),
        eio: req.eio.clone(),
        origin: req.origin.clone(),
        content_type: req.content_type.clone(),
        request_id: req.request_id.clone(),
        body,
        websocket_upgrade: req.websocket_upgrade,
    }
}

/// The engine request a forwarded one stands for, and its body. The handshake details stay on
/// the receiving node: a forwarded request always names an existing session.
pub(crate) fn request_from_pb(pb: pb::EngineRequest) -> (String, Request, Bytes) {
    let method = match pb::Method::try_from(pb.method) {
        Ok(pb::Method::Get) => Method::Get,
        Ok(pb::Method::Post) => Method::Post,
        _ => Method::Other,
    };
    let req = Request {
        method,
        transport: pb.transport,
        eio: pb.eio,
        sid: Some(pb.sid),
        websocket_upgrade: pb.websocket_upgrade,
        origin: pb.origin,
        content_type: pb.content_type,
        request_id: pb.request_id.filter(|id| id.len() <= MAX_REQUEST_ID),
        info: HandshakeInfo::default(),
    };
    (pb.mount, req, pb.body)
}

pub(crate) fn error_to_pb(e: &EngineError) -> u32 {
    match e {
        EngineError::UnknownTransport => 0,
        EngineError::UnknownSid => 1,
        EngineError::BadHandshakeMethod => 2,
        EngineError::BadRequest => 3,
        EngineError::TransportMismatch => 4,
        EngineError::DuplicatePoll => 5,
        EngineError::ConcurrentPost => 6,
        EngineError::BadPacket => 7,
        EngineError::BinaryBody => 8,
        EngineError::Forbidden => 9,
        EngineError::UnsupportedProtocolVersion => 10,
        EngineError::PayloadTooLarge => 11,
        EngineError::Unavailable => 12,
    }
}

pub(crate) fn error_from_pb(code: u32) -> EngineError {
    match code {
        0 => EngineError::UnknownTransport,
        1 => EngineError::UnknownSid,
        2 => EngineError::BadHandshakeMethod,
        4 => EngineError::TransportMismatch,
        5 => EngineError::DuplicatePoll,
        6 => EngineError::ConcurrentPost,
        7 => EngineError::BadPacket,
        8 => EngineError::BinaryBody,
        9 => EngineError::Forbidden,
        10 => EngineError::UnsupportedProtocolVersion,
        11 => EngineError::PayloadTooLarge,
        12 => EngineError::Unavailable,
        // 3, and anything a newer peer may send.
        _ => EngineError::BadRequest,
    }
}

pub(crate) fn image_to_pb(image: &SessionImage) -> pb::SessionImage {
    let pairs = |pairs: &[(String, String)]| {
        pairs
            .iter()
            .map(|(key, value)| pb::Pair {
                key: key.clone(),
                value: value.clone(),
            })
            .collect()
    };
    let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    pb::SessionImage {
        sid: image.sid.clone(),
        query: pairs(&image.handshake.query),
        headers: pairs(&image.handshake.headers),
        remote_addr: image.handshake.remote_addr.map(|a| a.to_string()),
        queue: image
            .queue
            .iter()
            .filter_map(|packet| {
                let kind = match packet {
                    Packet::Text(text) => pb::queued_packet::Kind::Text(text.clone()),
                    Packet::Binary(data) => pb::queued_packet::Kind::Binary(data.to_vec()),
                    Packet::Ping { probe: false } => pb::queued_packet::Kind::Ping(true),
                    // Only messages and pings wait in a queue.
                    _ => return None,
                };
                Some(pb::QueuedPacket { kind: Some(kind) })
            })
            .collect(),
        next_ping_in_us: image.next_ping_in.map(micros),
        pong_due_in_us: image.pong_due_in.map(micros),
        app: image.app.clone(),
    }
}

pub(crate) fn image_from_pb(pb: pb::SessionImage) -> SessionImage {
    let pairs = |pairs: Vec<pb::Pair>| pairs.into_iter().map(|p| (p.key, p.value)).collect();
    SessionImage {
        sid: pb.sid,
        handshake: HandshakeInfo {
            query: pairs(pb.query),
            headers: pairs(pb.headers),
            remote_addr: pb.remote_addr.and_then(|a| a.parse().ok()),
        },
        queue: pb
            .queue
            .into_iter()
            .filter_map(|packet| {
                Some(match packet.kind? {
                    pb::queued_packet::Kind::Text(text) => Packet::Text(text),
                    pb::queued_packet::Kind::Binary(data) => Packet::Binary(data.into()),
                    pb::queued_packet::Kind::Ping(_) => Packet::Ping { probe: false },
                })
            })
            .collect(),
        next_ping_in: pb.next_ping_in_us.map(Duration::from_micros),
        pong_due_in: pb.pong_due_in_us.map(Duration::from_micros),
        app: pb.app,
    }
}
