//! The demo chat page and the browser client it loads, as ordinary axum routes next to the
//! node's router.

use std::path::Path;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use bytes::Bytes;

/// The chat page.
const HTML: &str = include_str!("../../web/chat.html");

/// `GET /` and `GET /socket.io/socket.io.min.js`, the paths the reference server uses. The
/// browser client is read from `client_bundle` once; a missing bundle is not fatal: the page
/// then says how to install it.
pub fn routes(client_bundle: Option<&Path>) -> Router {
    let bundle = client_bundle.and_then(|path| {
        std::fs::read(path)
            .inspect_err(|e| {
                tracing::warn!(
                    path = %path.display(),
                    "Socket.IO browser client not found ({e}); run `npm ci --prefix web`"
                );
            })
            .ok()
            .map(Bytes::from)
    });
    Router::new()
        .route("/", get(|| async { Html(HTML) }))
        .route(
            "/socket.io/socket.io.min.js",
            get(move || async move {
                match bundle {
                    Some(js) => (
                        StatusCode::OK,
                        [(
                            header::CONTENT_TYPE,
                            "application/javascript; charset=utf-8",
                        )],
                        js,
                    )
                        .into_response(),
                    None => (
                        StatusCode::NOT_FOUND,
                        "the Socket.IO browser client is not installed: run `npm ci --prefix web`",
                    )
                        .into_response(),
                }
            }),
        )
}
