//! Engine.IO v4 packets: the text form of one packet, the polling payload (packets joined
//! by the record separator `0x1e`, binary as `b` + base64), and the websocket frame form
//! (one packet per frame, a binary frame being a binary message).
//!
//! Pure code: no I/O, no async. Every decoder returns a typed [`DecodeError`] on bad
//! input and never panics.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;

/// The separator between packets of a polling payload.
pub const SEPARATOR: char = '\x1e';

/// The data a ping or pong carries during an upgrade probe.
const PROBE: &str = "probe";

/// One Engine.IO v4 packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// `0`: the handshake, carrying its JSON document verbatim.
    Open(String),
    /// `1`: close the session. Any data after the type is ignored when decoding.
    Close,
    /// `2`: heartbeat request, or an upgrade probe when `probe` is set.
    Ping {
        /// `2probe` rather than `2`.
        probe: bool,
    },
    /// `3`: heartbeat answer, or the answer to an upgrade probe when `probe` is set.
    Pong {
        /// `3probe` rather than `3`.
        probe: bool,
    },
    /// `4`: a text message.
    Text(String),
    /// A binary message (`b` + base64 in polling payloads, a binary websocket frame).
    Binary(Bytes),
    /// `5`: switch the session to the probed transport.
    Upgrade,
    /// `6`: no operation; releases a pending long-poll.
    Noop,
}

/// Why bytes are not a valid Engine.IO packet or payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A packet (or a whole payload) with no bytes at all.
    #[error("empty packet")]
    Empty,
    /// The first character is not a packet type (`0`-`6`) nor `b`.
    #[error("unknown packet type {0:?}")]
    UnknownType(char),
    /// The base64 of a binary packet does not decode.
    #[error("invalid base64 in binary packet")]
    InvalidBase64,
    /// A polling payload is not UTF-8 text.
    #[error("payload is not valid UTF-8")]
    InvalidUtf8,
}

/// One websocket frame carrying one packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A text frame: type digit followed by data.
    Text(String),
    /// A binary frame: the whole frame is a binary message.
    Binary(Bytes),
}

impl Packet {
    /// The type digit of the text form; `None` for binary messages, which have none.
    fn type_char(&self) -> Option<char> {
        Some(match self {
            Packet::Open(_) => '0',
            Packet::Close => '1',
            Packet::Ping { .. } => '2',
            Packet::Pong { .. } => '3',
            Packet::Text(_) => '4',
            Packet::Binary(_) => return None,
            Packet::Upgrade => '5',
            Packet::Noop => '6',
        })
    }

    /// Appends the polling-payload form of this packet (binary as `b` + base64) to `out`.
    pub fn encode_into(&self, out: &mut String) {
        match self {
            Packet::Binary(data) => {
                out.push('b');
                BASE64.encode_string(data, out);
            }
            other => {
                // Every non-binary packet has a type digit.
                if let Some(c) = other.type_char() {
                    out.push(c);
                }
                match other {
                    Packet::Open(data) | Packet::Text(data) => out.push_str(data),
                    Packet::Ping { probe: true } | Packet::Pong { probe: true } => {
                        out.push_str(PROBE)
                    }
                    _ => {}
                }
            }
        }
    }

    /// The text form of this packet (binary as `b` + base64).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        self.encode_into(&mut out);
        out
    }

    /// The websocket frame for this packet: binary messages become binary frames.
    pub fn into_frame(self) -> Frame {
        match self {
            Packet::Binary(data) => Frame::Binary(data),
            other => Frame::Text(other.encode()),
        }
    }

    /// Decodes a packet from a websocket frame.
    pub fn from_frame(frame: Frame) -> Result<Packet, DecodeError> {
        match frame {
            Frame::Text(text) => decode_packet(&text),
            Frame::Binary(data) => Ok(Packet::Binary(data)),
        }
    }
}

/// Decodes the text form of one packet (as found in a polling payload or a text frame).
pub fn decode_packet(text: &str) -> Result<Packet, DecodeError> {
    let mut chars = text.chars();
    let kind = chars.next().ok_or(DecodeError::Empty)?;
    let data = chars.as_str();
    Ok(match kind {
        '0' => Packet::Open(data.to_owned()),
        '1' => Packet::Close,
        '2' => Packet::Ping {
            probe: data == PROBE,
        },
        '3' => Packet::Pong {
            probe: data == PROBE,
        },
        '4' => Packet::Text(data.to_owned()),
        '5' => Packet::Upgrade,
        '6' => Packet::Noop,
        'b' => Packet::Binary(
            BASE64
                .decode(data)
                .map_err(|_| DecodeError::InvalidBase64)?
                .into(),
        ),
        other => return Err(DecodeError::UnknownType(other)),
    })
}

/// Encodes packets as one polling payload. An empty slice gives an empty string, which
/// is not a valid payload: the engine never sends one.
pub fn encode_payload(packets: &[Packet]) -> String {
    let mut out = String::new();
    for (i, packet) in packets.iter().enumerate() {
        if i > 0 {
            out.push(SEPARATOR);
        }
        packet.encode_into(&mut out);
    }
    out
}

/// Iterates over the packets of a polling payload, in order. A bad packet yields its
/// error and the packets after it are still offered; callers that must stop at the
/// first error (the engine does) simply stop iterating.
pub fn payload_packets(payload: &str) -> impl Iterator<Item = Result<Packet, DecodeError>> + '_ {
    payload.split(SEPARATOR).map(decode_packet)
}

/// The text of a polling payload (the body of a POST): payloads are UTF-8.
pub fn payload_text(body: &[u8]) -> Result<&str, DecodeError> {
    std::str::from_utf8(body).map_err(|_| DecodeError::InvalidUtf8)
}

/// Decodes a whole polling payload (the body of a POST). Fails on the first bad packet;
/// an empty body is [`DecodeError::Empty`]. The engine reads POST bodies with the same
/// two steps, [`payload_text`] then [`payload_packets`], acting on each packet as it goes.
pub fn decode_payload(body: &[u8]) -> Result<Vec<Packet>, DecodeError> {
    payload_packets(payload_text(body)?).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_examples() {
        let packets = vec![
            Packet::Text("hello".into()),
            Packet::Binary(vec![1, 2, 3, 4].into()),
        ];
        assert_eq!(encode_payload(&packets), "4hello\x1ebAQIDBA==");
        assert_eq!(decode_payload(b"4hello\x1ebAQIDBA==").unwrap(), packets);
        assert_eq!(
            decode_packet("2probe").unwrap(),
            Packet::Ping { probe: true }
        );
        assert_eq!(decode_packet("abc"), Err(DecodeError::UnknownType('a')));
        assert_eq!(decode_payload(b""), Err(DecodeError::Empty));
    }
}
