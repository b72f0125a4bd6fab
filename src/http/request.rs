//! Turns an HTTP request into the engine's typed [`Request`], once.

use std::net::SocketAddr;

use axum::http::{HeaderMap, Method as HttpMethod, Uri, header};

use crate::engine::{HandshakeInfo, MAX_REQUEST_ID, Method, Request};

/// The header a balancer names a request by, the same on each attempt (nginx: `proxy_set_header
/// X-Nonstick-Request-Id $request_id`; the embedded balancer sets it). Not `X-Request-Id`:
/// clients and proxies set that one for tracing, some to one value per connection, and a POST
/// that repeats the last one's id is not applied.
const REQUEST_ID: &str = "x-nonstick-request-id";

/// Parses method, query and headers into an engine request. The query is decoded like a
/// form (`+` is a space, bad escapes are kept as they are), so a malformed one still reaches
/// the engine, which answers it with its own error code.
///
/// Only a handshake (a request without a sid) keeps the query pairs and headers for the
/// application: every later request of a session needs just the few fields the engine reads,
/// and copying the rest would cost each long-poll a dozen allocations.
pub fn parse(
    method: &HttpMethod,
    uri: &Uri,
    headers: &HeaderMap,
    remote_addr: Option<SocketAddr>,
) -> Request {
    let pairs = || form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes());
    let first = |name: &str| {
        pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    let sid = first("sid");
    let websocket_upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let text = |name| {
        headers
            .get(name)
            .map(|v: &header::HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let info = if sid.is_none() {
        HandshakeInfo {
            query: pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
            headers: headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            remote_addr,
        }
    } else {
        HandshakeInfo::default()
    };
    Request {
        method: match *method {
            HttpMethod::GET => Method::Get,
            HttpMethod::POST => Method::Post,
            _ => Method::Other,
        },
        transport: first("transport"),
        eio: first("EIO"),
        sid,
        websocket_upgrade,
        origin: text(header::ORIGIN),
        content_type: text(header::CONTENT_TYPE),
        request_id: headers
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|id| !id.is_empty() && id.len() <= MAX_REQUEST_ID)
            .map(str::to_owned),
        info,
    }
}
