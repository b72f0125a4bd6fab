//! The one place where an [`EngineError`] becomes an HTTP response.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::engine::EngineError;

/// An engine refusal on its way to the wire.
#[derive(Debug)]
pub struct HttpError(pub EngineError);

impl From<EngineError> for HttpError {
    fn from(e: EngineError) -> Self {
        HttpError(e)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::BAD_REQUEST);
        let body = match self.0.code() {
            Some(code) => serde_json::json!({ "code": code, "message": self.0.to_string() }),
            None => serde_json::json!({ "message": self.0.to_string() }),
        };
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }
}
