//! The one place where a refusal (an engine error, or an owner that cannot be reached) becomes
//! an HTTP response.

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

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
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
