//! Turns an HTTP request into the engine's typed [`Request`], once.

use std::net::SocketAddr;

use axum::extract::Query;
use axum::http::{HeaderMap, Method as HttpMethod, Uri, header};

use crate::engine::{HandshakeInfo, Method, Request};

/// Parses method, query and headers into an engine request. A malformed query string
/// counts as an empty one, so the engine answers it with its own error code.
pub fn parse(
    method: &HttpMethod,
    uri: &Uri,
    headers: &HeaderMap,
    remote_addr: Option<SocketAddr>,
) -> Request {
    let query: Vec<(String, String)> = Query::try_from_uri(uri)
        .map(|Query(pairs)| pairs)
        .unwrap_or_default();
    let first = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let websocket_upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let origin = headers
        .get(header::ORIGIN)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    Request {
        method: match *method {
            HttpMethod::GET => Method::Get,
            HttpMethod::POST => Method::Post,
            _ => Method::Other,
        },
        transport: first("transport"),
        eio: first("EIO"),
        sid: first("sid"),
        websocket_upgrade,
        origin,
        content_type,
        info: HandshakeInfo {
            headers: headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            query,
            remote_addr,
        },
    }
}
