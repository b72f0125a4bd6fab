//! Socket.IO v5 packets: the text form carried in Engine.IO messages, plus binary attachments.
//!
//! Wire form, in order: the type digit; for binary packets the attachment count and `-`; the
//! namespace followed by `,` unless it is `/`; the ack id as decimal digits; compact JSON.
//! For example `451-/admin,12["e",{"_placeholder":true,"num":0}]`, followed by one binary
//! Engine.IO message holding the buffer.
//!
//! Decoding follows the reference parser (`socket.io-parser`), including its leniencies, so
//! that packets the official clients send are accepted and everything else gets a typed error
//! the caller answers by closing the connection.

use bytes::Bytes;
use indexmap::IndexMap;

use super::value::Value;

/// Event names neither side may emit: Socket.IO uses them for its own events.
const RESERVED_EVENTS: [&str; 6] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// Whether `name` is reserved by Socket.IO (`connect`, `disconnect`, …) and so may not be
/// used as an event name.
pub fn is_reserved_event(name: &str) -> bool {
    RESERVED_EVENTS.contains(&name)
}

/// The most digits accepted in an ack id or attachment count: `u64::MAX` has 20.
const MAX_DIGITS: usize = 20;

/// The kind of a Socket.IO packet, with its wire digit in the docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketType {
    /// `0`: join a namespace (client), or accept the join (server).
    Connect,
    /// `1`: leave a namespace.
    Disconnect,
    /// `2`: an event with JSON arguments.
    Event,
    /// `3`: the answer to an event that asked for one.
    Ack,
    /// `4`: a refused join (server only).
    ConnectError,
    /// `5`: an event whose arguments contain binary attachments.
    BinaryEvent,
    /// `6`: an ack whose arguments contain binary attachments.
    BinaryAck,
}

impl PacketType {
    /// The wire digit.
    pub fn as_char(self) -> char {
        match self {
            PacketType::Connect => '0',
            PacketType::Disconnect => '1',
            PacketType::Event => '2',
            PacketType::Ack => '3',
            PacketType::ConnectError => '4',
            PacketType::BinaryEvent => '5',
            PacketType::BinaryAck => '6',
        }
    }

    /// The type for a wire digit, if it is one.
    pub fn from_char(c: char) -> Option<PacketType> {
        Some(match c {
            '0' => PacketType::Connect,
            '1' => PacketType::Disconnect,
            '2' => PacketType::Event,
            '3' => PacketType::Ack,
            '4' => PacketType::ConnectError,
            '5' => PacketType::BinaryEvent,
            '6' => PacketType::BinaryAck,
            _ => return None,
        })
    }

    /// Whether this is an event, binary or not.
    pub fn is_event(self) -> bool {
        matches!(self, PacketType::Event | PacketType::BinaryEvent)
    }

    /// Whether this is an ack, binary or not.
    pub fn is_ack(self) -> bool {
        matches!(self, PacketType::Ack | PacketType::BinaryAck)
    }

    fn is_binary(self) -> bool {
        matches!(self, PacketType::BinaryEvent | PacketType::BinaryAck)
    }
}

/// One Socket.IO packet, with its attachments already in place as [`Value::Binary`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// What the packet does. [`encode`] picks the binary or plain form of events and acks by
    /// looking at `data`, so `Event` and `BinaryEvent` (and the two acks) are interchangeable
    /// on the way out.
    pub kind: PacketType,
    /// The namespace: `/`, or a name that starts with `/` and holds no `,`.
    pub nsp: String,
    /// The ack id of an event that asks for an answer, or of the ack answering it.
    pub id: Option<u64>,
    /// The payload: the CONNECT auth or reply object, the event array `[name, args...]`, the ack
    /// arguments array, or the CONNECT_ERROR object.
    pub data: Option<Value>,
}

/// Events and acks become binary packets exactly when their arguments hold binary.
fn data_kind(plain: PacketType, binary: PacketType, data: &Value) -> PacketType {
    if data.has_binary() { binary } else { plain }
}

impl Packet {
    /// A CONNECT: the client's auth object, or the server's `{"sid": ...}` reply.
    pub fn connect(nsp: impl Into<String>, data: Option<Value>) -> Packet {
        Packet {
            kind: PacketType::Connect,
            nsp: nsp.into(),
            id: None,
            data,
        }
    }

    /// A DISCONNECT from one namespace.
    pub fn disconnect(nsp: impl Into<String>) -> Packet {
        Packet {
            kind: PacketType::Disconnect,
            nsp: nsp.into(),
            id: None,
            data: None,
        }
    }

    /// An event `[event_name, args...]`, asking for an ack when `id` is set. The kind is
    /// [`PacketType::BinaryEvent`] when the arguments hold binary.
    pub fn event(
        nsp: impl Into<String>,
        event_name: impl Into<String>,
        args: Vec<Value>,
        id: Option<u64>,
    ) -> Packet {
        let mut items = Vec::with_capacity(args.len() + 1);
        items.push(Value::String(event_name.into()));
        items.extend(args);
        let data = Value::Array(items);
        Packet {
            kind: data_kind(PacketType::Event, PacketType::BinaryEvent, &data),
            nsp: nsp.into(),
            id,
            data: Some(data),
        }
    }

    /// An ack answering event `id`. The kind is [`PacketType::BinaryAck`] when the arguments
    /// hold binary.
    pub fn ack(nsp: impl Into<String>, id: u64, args: Vec<Value>) -> Packet {
        let data = Value::Array(args);
        Packet {
            kind: data_kind(PacketType::Ack, PacketType::BinaryAck, &data),
            nsp: nsp.into(),
            id: Some(id),
            data: Some(data),
        }
    }

    /// A CONNECT_ERROR `{"message": ..., "data": ...}`; `data` is left out when `None`.
    pub fn connect_error(
        nsp: impl Into<String>,
        message: impl Into<String>,
        data: Option<Value>,
    ) -> Packet {
        let mut body = IndexMap::new();
        body.insert("message".to_owned(), Value::String(message.into()));
        if let Some(d) = data {
            body.insert("data".to_owned(), d);
        }
        Packet {
            kind: PacketType::ConnectError,
            nsp: nsp.into(),
            id: None,
            data: Some(Value::Object(body)),
        }
    }

    /// The event name of an event whose first element is a string. `None` for other packets,
    /// for the tolerated bare `42`, and for numeric event names (valid on the wire, read them
    /// from `data`).
    pub fn event_name(&self) -> Option<&str> {
        if !self.kind.is_event() {
            return None;
        }
        self.data
            .as_ref()
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str)
    }

    /// The arguments: after the name for events, all elements for acks, empty otherwise.
    pub fn args(&self) -> &[Value] {
        let items = match self.data.as_ref().and_then(Value::as_array) {
            Some(items) => items.as_slice(),
            None => return &[],
        };
        if self.kind.is_event() {
            items.get(1..).unwrap_or(&[])
        } else if self.kind.is_ack() {
            items
        } else {
            &[]
        }
    }

    /// Takes the arguments out, with the same rules as [`Packet::args`].
    pub fn into_args(self) -> Vec<Value> {
        let is_event = self.kind.is_event();
        if !is_event && !self.kind.is_ack() {
            return Vec::new();
        }
        match self.data {
            Some(Value::Array(mut items)) => {
                if is_event {
                    if items.is_empty() {
                        return items;
                    }
                    items.remove(0);
                }
                items
            }
            _ => Vec::new(),
        }
    }
}

/// The wire form of one packet: a text Engine.IO message, then one binary Engine.IO message
/// per attachment, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// The packet text (without the Engine.IO `4` prefix).
    pub text: String,
    /// The buffers the placeholders in `text` refer to, by index.
    pub attachments: Vec<Bytes>,
}

/// The encoded event packet `encoded` with the string `arg` added as its last argument, without
/// decoding it: a packet encoded once for many recipients gets each node's (or recipient's)
/// connection-state-recovery offset this way. `None` when `encoded` is not an event packet.
pub fn with_trailing_arg(encoded: &Encoded, arg: &str) -> Option<Encoded> {
    let text = &encoded.text;
    let is_event = matches!(text.as_bytes().first(), Some(b'2' | b'5'));
    let body = text.strip_suffix(']').filter(|_| is_event)?;
    let mut out = String::with_capacity(text.len() + arg.len() + 4);
    out.push_str(body);
    out.push(',');
    super::value::write_json_string(&mut out, arg);
    out.push(']');
    Some(Encoded {
        text: out,
        attachments: encoded.attachments.clone(),
    })
}

/// Encodes a packet.
///
/// Events and acks holding binary are written as BINARY_EVENT / BINARY_ACK, with each buffer
/// replaced by `{"_placeholder":true,"num":i}` numbered depth-first; events and acks without
/// binary are written as EVENT / ACK whatever `kind` says. Other packet types never carry
/// attachments: a buffer in them is written as an array of byte numbers. The namespace is
/// written as given (see [`Packet::nsp`] for what decodes back).
pub fn encode(p: &Packet) -> Encoded {
    let mut attachments = Vec::new();
    let kind = match (p.kind, &p.data) {
        (k, Some(d)) if k.is_event() => data_kind(PacketType::Event, PacketType::BinaryEvent, d),
        (k, Some(d)) if k.is_ack() => data_kind(PacketType::Ack, PacketType::BinaryAck, d),
        (PacketType::BinaryEvent, None) => PacketType::Event,
        (PacketType::BinaryAck, None) => PacketType::Ack,
        (k, _) => k,
    };
    let mut json = String::new();
    if let Some(data) = &p.data {
        let mut sink = kind.is_binary().then_some(&mut attachments);
        data.write_json(&mut json, &mut sink);
    }

    let mut text = String::with_capacity(json.len() + p.nsp.len() + 24);
    text.push(kind.as_char());
    if kind.is_binary() {
        text.push_str(&attachments.len().to_string());
        text.push('-');
    }
    if !p.nsp.is_empty() && p.nsp != "/" {
        text.push_str(&p.nsp);
        text.push(',');
    }
    if let Some(id) = p.id {
        text.push_str(&id.to_string());
    }
    text.push_str(&json);
    Encoded { text, attachments }
}

/// Decodes a whole packet from its encoded parts, as [`encode`] produced them (for packets that
/// travel between nodes). Missing or extra attachments are errors.
pub fn decode(encoded: &Encoded) -> Result<Packet, DecodeError> {
    let mut decoder = Decoder::for_client(encoded.attachments.len());
    let mut packet = decoder.feed_text(&encoded.text)?;
    for attachment in &encoded.attachments {
        packet = decoder.feed_binary(attachment.clone())?;
    }
    match (packet, decoder.pending) {
        (Some(packet), _) => Ok(packet),
        (None, Some(p)) => Err(DecodeError::AttachmentsPending {
            missing: p.expected - p.buffers.len(),
        }),
        (None, None) => Err(DecodeError::Empty),
    }
}

/// Why an incoming Socket.IO message was refused. Any of these means the peer broke the
/// protocol; the reference server closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The text message was empty.
    #[error("empty Socket.IO packet")]
    Empty,
    /// The first character is not a packet type digit.
    #[error("unknown Socket.IO packet type {0:?}")]
    UnknownType(char),
    /// A binary packet without a well-formed `<count>-` prefix.
    #[error("malformed attachment count in binary packet")]
    BadAttachmentCount,
    /// A binary packet announcing more attachments than allowed.
    #[error("binary packet announces {count} attachments, the limit is {max}")]
    TooManyAttachments {
        /// The announced count (saturated at `u64::MAX`).
        count: u64,
        /// The configured limit.
        max: usize,
    },
    /// The ack id does not fit in 64 bits.
    #[error("ack id is too large")]
    AckIdTooLarge,
    /// The payload is not JSON.
    #[error("Socket.IO payload is not valid JSON: {0}")]
    InvalidJson(String),
    /// The payload is JSON but not what this packet type allows.
    #[error("invalid payload for {kind:?} packet: {reason}")]
    InvalidPayload {
        /// The packet type.
        kind: PacketType,
        /// What was expected.
        reason: &'static str,
    },
    /// A CONNECT_ERROR packet received by a server.
    #[error("CONNECT_ERROR packets may only be sent by a server")]
    UnexpectedConnectError,
    /// A text packet arrived while attachments of a binary packet were still expected.
    #[error("text packet received while {missing} binary attachment(s) are still expected")]
    AttachmentsPending {
        /// How many attachments were still missing.
        missing: usize,
    },
    /// A binary message arrived while no binary packet was waiting for it.
    #[error("binary message received with no binary packet waiting for attachments")]
    UnexpectedBinary,
    /// A placeholder whose `num` is not the index of an attachment.
    #[error("attachment placeholder does not refer to one of the {count} attachments")]
    BadPlaceholder {
        /// How many attachments the packet announced.
        count: usize,
    },
}

/// A binary packet whose text has arrived, waiting for its attachments.
#[derive(Debug)]
struct Pending {
    packet: Packet,
    expected: usize,
    buffers: Vec<Bytes>,
}

/// Turns the Engine.IO messages of one connection into Socket.IO packets.
///
/// Stateful because a binary packet spans several messages: its text, then its attachments.
/// After an error the state is reset, though the caller is expected to close the connection.
#[derive(Debug)]
pub struct Decoder {
    max_attachments: usize,
    /// A server never receives CONNECT_ERROR; a client does.
    accept_connect_error: bool,
    pending: Option<Pending>,
}

impl Decoder {
    /// A decoder for packets sent by clients (the server side). The reference default for
    /// `max_attachments` is 10.
    pub fn new(max_attachments: usize) -> Self {
        Decoder {
            max_attachments,
            accept_connect_error: false,
            pending: None,
        }
    }

    /// A decoder for packets sent by a server (a client, as in tests): CONNECT_ERROR is
    /// accepted, with an object or string payload.
    pub fn for_client(max_attachments: usize) -> Self {
        Decoder {
            accept_connect_error: true,
            ..Decoder::new(max_attachments)
        }
    }

    /// Whether a binary packet is waiting for attachments.
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Feeds a text Engine.IO message. Returns the packet when it is complete, `None` when it
    /// announced attachments that have not arrived yet.
    pub fn feed_text(&mut self, s: &str) -> Result<Option<Packet>, DecodeError> {
        if let Some(p) = self.pending.take() {
            return Err(DecodeError::AttachmentsPending {
                missing: p.expected - p.buffers.len(),
            });
        }
        let (packet, attachments) = self.parse(s)?;
        match attachments {
            Some(expected) if expected > 0 => {
                self.pending = Some(Pending {
                    packet,
                    expected,
                    buffers: Vec::with_capacity(expected),
                });
                Ok(None)
            }
            // A binary packet announcing no attachments is complete at once; like the
            // reference, its placeholders (if any) are then out of range.
            Some(_) => finish(packet, &[]).map(Some),
            None => Ok(Some(packet)),
        }
    }

    /// Feeds a binary Engine.IO message: the next attachment of the waiting binary packet.
    /// Returns the packet once its last attachment has arrived.
    pub fn feed_binary(&mut self, b: Bytes) -> Result<Option<Packet>, DecodeError> {
        let Some(mut pending) = self.pending.take() else {
            return Err(DecodeError::UnexpectedBinary);
        };
        pending.buffers.push(b);
        if pending.buffers.len() < pending.expected {
            self.pending = Some(pending);
            return Ok(None);
        }
        finish(pending.packet, &pending.buffers).map(Some)
    }

    /// Parses the text form. Returns the packet and, for binary packets, the attachment count.
    fn parse(&self, s: &str) -> Result<(Packet, Option<usize>), DecodeError> {
        let mut rest = s;
        let first = rest.chars().next().ok_or(DecodeError::Empty)?;
        let kind = PacketType::from_char(first).ok_or(DecodeError::UnknownType(first))?;
        rest = &rest[first.len_utf8()..];

        let attachments = if kind.is_binary() {
            let dash = rest.find('-').ok_or(DecodeError::BadAttachmentCount)?;
            let digits = &rest[..dash];
            if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
                return Err(DecodeError::BadAttachmentCount);
            }
            // Compare before allocating anything sized by the count.
            let count = digits.parse::<u64>().unwrap_or(u64::MAX);
            match usize::try_from(count) {
                Ok(n) if n <= self.max_attachments => {
                    rest = &rest[dash + 1..];
                    Some(n)
                }
                _ => {
                    return Err(DecodeError::TooManyAttachments {
                        count,
                        max: self.max_attachments,
                    });
                }
            }
        } else {
            None
        };

        // A namespace only if the next character is `/`; it runs to the first `,` (consumed)
        // or to the end, so `40/custom` is a CONNECT to `/custom`.
        let nsp = if rest.starts_with('/') {
            match rest.find(',') {
                Some(comma) => {
                    let nsp = &rest[..comma];
                    rest = &rest[comma + 1..];
                    nsp
                }
                None => std::mem::take(&mut rest),
            }
        } else {
            "/"
        };

        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let id = if digits == 0 {
            None
        } else if digits > MAX_DIGITS {
            return Err(DecodeError::AckIdTooLarge);
        } else {
            let id = rest[..digits]
                .parse::<u64>()
                .map_err(|_| DecodeError::AckIdTooLarge)?;
            rest = &rest[digits..];
            Some(id)
        };

        let data = if rest.is_empty() {
            None
        } else {
            Some(
                serde_json::from_str::<Value>(rest)
                    .map_err(|e| DecodeError::InvalidJson(e.to_string()))?,
            )
        };
        self.check_payload(kind, data.as_ref())?;

        let packet = Packet {
            kind,
            nsp: nsp.to_owned(),
            id,
            data,
        };
        Ok((packet, attachments))
    }

    /// The reference validity rules. A missing payload is accepted for every type except
    /// CONNECT_ERROR on a server, as the reference does (for example a bare `42`).
    fn check_payload(&self, kind: PacketType, data: Option<&Value>) -> Result<(), DecodeError> {
        if kind == PacketType::ConnectError && !self.accept_connect_error {
            return Err(DecodeError::UnexpectedConnectError);
        }
        let Some(data) = data else {
            return Ok(());
        };
        let invalid = |reason| Err(DecodeError::InvalidPayload { kind, reason });
        match kind {
            PacketType::Connect if data.as_object().is_none() => {
                invalid("expected an object or nothing")
            }
            PacketType::Disconnect => invalid("expected no payload"),
            PacketType::ConnectError if data.as_object().is_none() && data.as_str().is_none() => {
                invalid("expected an object or a string")
            }
            PacketType::Event | PacketType::BinaryEvent => match data.as_array() {
                Some(items) => match items.first() {
                    Some(Value::Number(_)) => Ok(()),
                    Some(Value::String(name)) if !RESERVED_EVENTS.contains(&name.as_str()) => {
                        Ok(())
                    }
                    Some(Value::String(_)) => invalid("reserved event name"),
                    _ => invalid("expected an array starting with the event name"),
                },
                None => invalid("expected an array starting with the event name"),
            },
            PacketType::Ack | PacketType::BinaryAck if data.as_array().is_none() => {
                invalid("expected an array")
            }
            _ => Ok(()),
        }
    }
}

/// Puts the attachments in place of their placeholders.
fn finish(mut packet: Packet, buffers: &[Bytes]) -> Result<Packet, DecodeError> {
    if let Some(data) = packet.data.as_mut() {
        fill_placeholders(data, buffers)?;
    }
    Ok(packet)
}

/// Like the reference, any object whose `_placeholder` is `true` is a placeholder, and its
/// `num` must be the index of an attachment. The depth is bounded by serde_json's recursion
/// limit on the parsed text.
fn fill_placeholders(v: &mut Value, buffers: &[Bytes]) -> Result<(), DecodeError> {
    match v {
        Value::Object(o) if o.get("_placeholder") == Some(&Value::Bool(true)) => {
            let buffer = o
                .get("num")
                .and_then(Value::as_u64)
                .and_then(|n| usize::try_from(n).ok())
                .and_then(|n| buffers.get(n))
                .ok_or(DecodeError::BadPlaceholder {
                    count: buffers.len(),
                })?;
            *v = Value::Binary(buffer.clone());
        }
        Value::Object(o) => {
            for item in o.values_mut() {
                fill_placeholders(item, buffers)?;
            }
        }
        Value::Array(a) => {
            for item in a {
                fill_placeholders(item, buffers)?;
            }
        }
        _ => {}
    }
    Ok(())
}
