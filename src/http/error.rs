//! The one place where a refusal (an engine error, or an owner that cannot be reached) becomes
//! an HTTP response.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::engine::EngineError;
use crate::gateway::GatewayError;

/// A refusal on its way to the wire.
#[derive(Debug)]
pub enum HttpError {
    /// The engine (here or on the owner) refused the request.
    Engine(EngineError),
    /// The session's owner could not be asked. The client, like for any non-200 answer,
    /// reconnects.
    OwnerUnavailable,
    /// This cluster node serves nobody now: it is cut off from the cluster majority, or
    /// catching up with it (HTTP 503, which balancers retry on another backend).
    NotServing,
    /// A handshake past the client address's limit per second (HTTP 429, code 4).
    TooManyHandshakes,
}

impl From<EngineError> for HttpError {
    fn from(e: EngineError) -> Self {
        HttpError::Engine(e)
    }
}

impl From<GatewayError> for HttpError {
    fn from(e: GatewayError) -> Self {
        match e {
            GatewayError::Engine(e) => HttpError::Engine(e),
            GatewayError::Owner(_) => HttpError::OwnerUnavailable,
            // Served here by whoever asked; should it surface, the session is not here.
            GatewayError::MovedHere => HttpError::Engine(crate::engine::EngineError::UnknownSid),
        }
    }
}

/// Every kind of refusal, by the name `/metrics` gives it (`nonstick_errors_total{kind}`).
const KINDS: [&str; 16] = [
    "unknown_transport",
    "unknown_sid",
    "bad_handshake_method",
    "bad_request",
    "transport_mismatch",
    "duplicate_poll",
    "concurrent_post",
    "bad_packet",
    "binary_body",
    "forbidden",
    "unavailable",
    "unsupported_protocol_version",
    "payload_too_large",
    "owner_unavailable",
    "not_serving",
    "too_many_handshakes",
];

/// Refusals sent by this process, by kind (one process is one node).
static REFUSED: [AtomicU64; KINDS.len()] = [const { AtomicU64::new(0) }; KINDS.len()];

/// How many refusals of each kind this process sent, for `/metrics`.
pub fn refusals() -> Vec<(&'static str, u64)> {
    KINDS
        .iter()
        .zip(&REFUSED)
        .map(|(kind, n)| (*kind, n.load(Ordering::Relaxed)))
        .collect()
}

impl HttpError {
    /// Its index in [`KINDS`].
    fn kind(&self) -> usize {
        match self {
            HttpError::Engine(e) => match e {
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
                EngineError::Unavailable => 10,
                EngineError::UnsupportedProtocolVersion => 11,
                EngineError::PayloadTooLarge => 12,
            },
            HttpError::OwnerUnavailable => 13,
            HttpError::NotServing => 14,
            HttpError::TooManyHandshakes => 15,
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        REFUSED[self.kind()].fetch_add(1, Ordering::Relaxed);
        let (status, body) = match self {
            HttpError::Engine(e) => (
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
                match e.code() {
                    Some(code) => serde_json::json!({ "code": code, "message": e.to_string() }),
                    None => serde_json::json!({ "message": e.to_string() }),
                },
            ),
            HttpError::OwnerUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({ "code": 1, "message": "Session owner unavailable" }),
            ),
            HttpError::TooManyHandshakes => (
                StatusCode::TOO_MANY_REQUESTS,
                serde_json::json!({
                    "code": 4,
                    "message": "Too many handshakes from this address",
                }),
            ),
            HttpError::NotServing => (
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({
                    "code": 4,
                    "message": "Server unavailable: not in touch with the cluster majority",
                }),
            ),
        };
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }
}
