//! The axum front: parse each request once, call the engine, map errors to the wire in one place.
//!
//! - [`router`] builds the routes, in any axum app state: one Engine.IO endpoint per mount of the
//!   [`Gateway`], the health check and the counters at their configured paths, and CORS around
//!   these routes (and no others) when configured.
//! - `request.rs` turns an HTTP request into the engine's typed request.
//! - `error.rs` holds the only `IntoResponse` for engine errors.
//! - `ws.rs` adapts axum's websocket to the engine's frame link.

mod error;
mod limit;
mod request;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::Instrument;

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Request as HttpRequest, State};
use axum::http::{HeaderMap, HeaderValue, Method as HttpMethod, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};

pub use error::{HttpError, refusals};

use bytes::Bytes;

use crate::config::Cookie;
use crate::engine::{Engine, EngineError, Method, Request, Via};
use crate::gateway::NodeId;
use crate::gateway::{Gateway, GatewayError, Route};
use limit::{HandshakeLimit, client_address};

/// Which origins get CORS headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// Every origin: `Access-Control-Allow-Origin: *`.
    Any,
    /// Only these origins, echoed back with `Vary: Origin`.
    List(Vec<String>),
}

/// CORS settings, as the reference server's `cors` option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    /// Allowed origins.
    pub origins: CorsOrigins,
    /// Send `Access-Control-Allow-Credentials: true`.
    pub credentials: bool,
}

/// Settings of the HTTP front.
#[derive(Clone, Default)]
pub struct HttpConfig {
    /// The node id reported by the health check.
    pub node_id: String,
    /// CORS, off when `None` (no CORS headers; `OPTIONS` goes to the engine and fails).
    pub cors: Option<Cors>,
    /// The sticky-session cookie set on polling handshakes, off when `None`.
    pub cookie: Option<Cookie>,
    /// A websocket for a session owned by another node takes the session with it (else it
    /// is relayed to the owner).
    pub move_on_upgrade: bool,
    /// Where the health check is served, if anywhere.
    pub health_path: Option<String>,
    /// Where the counters are served, if anywhere.
    pub metrics_path: Option<String>,
    /// Whether the node can serve (a cluster node: it reaches a Raft majority). The health
    /// check answers 503 while this says no; always healthy when `None`.
    pub healthy: Option<Health>,
    /// The text of the metrics page (served at `metrics_path`).
    pub metrics: Option<Metrics>,
    /// Most handshakes per second from one client address; 0 for no limit.
    pub max_handshakes_per_second: u32,
    /// A client's address is the last entry of `X-Forwarded-For` when there is one.
    pub trust_forwarded_for: bool,
}

/// A check of whether the node can serve, for `/healthz`.
pub type Health = Arc<dyn Fn() -> bool + Send + Sync>;

/// Writes the metrics page (Prometheus text format) when asked.
pub type Metrics = Arc<dyn Fn() -> String + Send + Sync>;

/// What each Engine.IO route needs.
#[derive(Clone)]
struct MountState {
    engine: Engine,
    /// Routes requests whose session lives on another node.
    gateway: Gateway,
    /// The mount path, as the gateway knows it.
    mount: Arc<str>,
    cookie: Option<Arc<Cookie>>,
    move_on_upgrade: bool,
    /// This node's id, naming the requests it forwards that came without an id.
    node: Arc<str>,
    /// The node's handshake rate limit, when there is one.
    handshakes: Option<Arc<HandshakeLimit>>,
    trust_forwarded_for: bool,
}

/// Builds the HTTP front for these mounts: their Engine.IO endpoints, the health check and the
/// counters, with CORS around them (and only them) when configured. Usable in any app state
/// `S`: every route carries its own.
pub fn router<S>(gateway: Gateway, config: HttpConfig) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let mut app = Router::new();
    if let Some(path) = &config.health_path {
        let node_id: Arc<str> = config.node_id.clone().into();
        let healthy = config.healthy.clone();
        app = app.route(
            path,
            get(move || {
                let ok = healthy.as_ref().is_none_or(|healthy| healthy());
                let body = serde_json::json!({ "ok": ok, "node": &*node_id });
                let status = if ok {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                async move { (status, axum::Json(body)) }
            }),
        );
    }
    if let (Some(path), Some(metrics)) = (&config.metrics_path, config.metrics.clone()) {
        app = app.route(
            path,
            get(move || {
                let text = metrics();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        text,
                    )
                }
            }),
        );
    }
    let handshakes = (config.max_handshakes_per_second > 0)
        .then(|| Arc::new(HandshakeLimit::new(config.max_handshakes_per_second)));
    for (path, engine) in gateway.mounts() {
        let state = MountState {
            engine,
            gateway: gateway.clone(),
            mount: path.clone().into(),
            cookie: config.cookie.clone().map(Arc::new),
            move_on_upgrade: config.move_on_upgrade,
            node: config.node_id.clone().into(),
            handshakes: handshakes.clone(),
            trust_forwarded_for: config.trust_forwarded_for,
        };
        let endpoint = any(engine_endpoint).with_state(state);
        app = app.route(&path, endpoint.clone());
        let bare = path.trim_end_matches('/');
        if !bare.is_empty() {
            // Clients always add the trailing slash; the bare path is served the same.
            app = app.route(bare, endpoint);
        }
    }
    match config.cors {
        Some(cors) => app.layer(middleware::from_fn_with_state(Arc::new(cors), cors_layer)),
        None => app,
    }
}

/// Every Engine.IO request of one mount: handshake, long-poll, POST, websocket. Takes the
/// request whole: extractors would copy its headers and extensions for every long-poll.
async fn engine_endpoint(State(state): State<MountState>, request: HttpRequest) -> Response {
    let (mut parts, body) = request.into_parts();
    let remote = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr);
    let req = request::parse(&parts.method, &parts.uri, &parts.headers, remote);
    if req.sid.is_none()
        && let Some(limit) = &state.handshakes
        && let Some(client) = client_address(&parts.headers, remote, state.trust_forwarded_for)
        && !limit.allow(client)
    {
        return HttpError::TooManyHandshakes.into_response();
    }
    let upgrade = if req.websocket_upgrade {
        WebSocketUpgrade::from_request_parts(&mut parts, &())
            .await
            .ok()
    } else {
        None
    };
    // Cut off from the cluster, this node may no longer own what it holds: nothing is
    // served, not even a handshake, until it is in touch again.
    if !state.gateway.serving() {
        return HttpError::NotServing.into_response();
    }
    let headers = &parts.headers;
    if let Some(sid) = &req.sid
        && let Route::Remote(owner) = state.gateway.route(&state.mount, sid).await
    {
        // A websocket for a polling session owned elsewhere: the session comes here, so the
        // upgrade and all that follows run with no hop. Relayed only when it cannot come.
        let pulled = upgrade.is_some()
            && state.move_on_upgrade
            && state.gateway.pull(owner, &state.mount, sid).await.is_ok();
        if !pulled {
            return forwarded(&state, owner, req, headers, upgrade, body).await;
        }
    }
    let engine = state.engine.clone();
    let max_payload = engine.config().max_payload;
    if let Some(upgrade) = upgrade {
        let accept = match engine.accept_websocket(&req, Via::LOCAL) {
            Ok(accept) => accept,
            Err(e) => return HttpError::from(e).into_response(),
        };
        return websocket_limits(upgrade, max_payload).on_upgrade(move |socket| async move {
            let (sink, stream) = ws::link(socket, max_payload);
            engine.run_websocket(accept, sink, stream).await;
        });
    }
    let result = match req.method {
        Method::Get if req.sid.is_none() => engine.open_polling(&req).map(|opened| {
            let mut response = polling_response(opened.body);
            if let Some(cookie) = &state.cookie
                && let Ok(value) = HeaderValue::from_str(&cookie.header(&opened.sid))
            {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }),
        Method::Get => match engine.poll(&req).await {
            Err(EngineError::UnknownSid) => match moved_away(&state, &req).await {
                Some(owner) => return forwarded(&state, owner, req, headers, None, body).await,
                None => Err(EngineError::UnknownSid),
            },
            result => result.map(polling_response),
        },
        Method::Post => {
            // Refusals that need no body (unknown sid, binary content type) come first,
            // so they cost no read of up to `max_payload` bytes.
            if let Err(e) = engine.check_post(&req) {
                if e == EngineError::UnknownSid
                    && let Some(owner) = moved_away(&state, &req).await
                {
                    return forwarded(&state, owner, req, headers, None, body).await;
                }
                return HttpError::from(e).into_response();
            }
            match read_body(headers, body, max_payload).await {
                Ok(bytes) => match engine.post(&req, bytes.clone()).await {
                    Err(EngineError::UnknownSid) => match moved_away(&state, &req).await {
                        Some(owner) => {
                            return answer(
                                state
                                    .gateway
                                    .forward(owner, &state.mount, &req, bytes)
                                    .await,
                                &req,
                            );
                        }
                        None => Err(EngineError::UnknownSid),
                    },
                    result => result.map(|()| ok_response()),
                },
                Err(e) => Err(e),
            }
        }
        Method::Other => Err(engine.check(&req).err().unwrap_or(EngineError::BadRequest)),
    };
    result.unwrap_or_else(|e| HttpError::from(e).into_response())
}

/// A request whose session lives on `owner`: one hop there and back. A POST body is read (and
/// its size limit enforced) here, before the hop. The request crosses the hop with its id
/// (named here when it came with none), and both nodes log under it (at debug level: a span
/// `forward` here, `forwarded` on the owner), so one poll can be followed across nodes.
async fn forwarded(
    state: &MountState,
    owner: NodeId,
    mut req: Request,
    headers: &HeaderMap,
    upgrade: Option<WebSocketUpgrade>,
    body: Body,
) -> Response {
    if req.request_id.is_none() {
        static NAMED: AtomicU64 = AtomicU64::new(0);
        let n = NAMED.fetch_add(1, Ordering::Relaxed);
        req.request_id = Some(format!("{}.{n}", state.node));
    }
    let span = tracing::debug_span!(
        "forward",
        node = %state.node,
        owner,
        request_id = req.request_id.as_deref().unwrap_or_default(),
        sid = req.sid.as_deref().unwrap_or_default(),
    );
    let response = forward_to(state, owner, req, headers, upgrade, body)
        .instrument(span.clone())
        .await;
    span.in_scope(|| tracing::debug!(status = response.status().as_u16(), "answered"));
    response
}

async fn forward_to(
    state: &MountState,
    owner: NodeId,
    req: Request,
    headers: &HeaderMap,
    upgrade: Option<WebSocketUpgrade>,
    body: Body,
) -> Response {
    if let Some(upgrade) = upgrade {
        let relay = match state.gateway.open_relay(owner, &state.mount, &req).await {
            Ok(relay) => relay,
            Err(e) => return HttpError::from(e).into_response(),
        };
        let max_payload = state.engine.config().max_payload;
        return websocket_limits(upgrade, max_payload).on_upgrade(move |socket| async move {
            let (sink, stream) = ws::link(socket, max_payload);
            relay.run(sink, stream).await;
        });
    }
    let body = if req.method == Method::Post {
        match read_body(headers, body, state.engine.config().max_payload).await {
            Ok(bytes) => bytes,
            Err(e) => return HttpError::from(e).into_response(),
        }
    } else {
        Bytes::new()
    };
    match state
        .gateway
        .forward(owner, &state.mount, &req, body.clone())
        .await
    {
        Err(GatewayError::MovedHere) => served_here(&state.engine, &req, body).await,
        forwarded => answer(forwarded, &req),
    }
}

/// A request that went looking for its session's owner and found the session had moved to
/// this node: served by this node's engine after all.
async fn served_here(engine: &Engine, req: &Request, body: Bytes) -> Response {
    let result = match req.method {
        Method::Get => engine.poll(req).await.map(polling_response),
        Method::Post => engine.post(req, body).await.map(|()| ok_response()),
        Method::Other => Err(engine.check(req).err().unwrap_or(EngineError::BadRequest)),
    };
    result.unwrap_or_else(|e| HttpError::from(e).into_response())
}

/// The response to a forwarded request of `req`'s method.
fn answer(forwarded: Result<String, GatewayError>, req: &Request) -> Response {
    match forwarded {
        Ok(text) if req.method == Method::Post => {
            debug_assert_eq!(text, "ok");
            ok_response()
        }
        Ok(payload) => polling_response(payload),
        Err(e) => HttpError::from(e).into_response(),
    }
}

/// The node a session this node's engine no longer knows moved to, if it moved from here
/// while the request came in.
async fn moved_away(state: &MountState, req: &Request) -> Option<NodeId> {
    state.gateway.moved_to(req.sid.as_deref()?).await
}

/// Let slightly larger messages through than `max_payload`, so the link can answer them with
/// close code 1009 rather than a bare error. The read buffer is the chunk each read fills, and
/// every websocket holds one: tungstenite's 128 KiB default would be most of an idle
/// session's memory.
fn websocket_limits(upgrade: WebSocketUpgrade, max_payload: usize) -> WebSocketUpgrade {
    let wire_limit = max_payload.saturating_mul(2).max(max_payload + 1024);
    upgrade
        .max_message_size(wire_limit)
        .max_frame_size(wire_limit)
        .read_buffer_size(WEBSOCKET_READ_CHUNK)
}

/// Bytes a websocket reads at a time (messages larger than this are assembled from several).
/// Every open websocket keeps a buffer of this size; 1 KiB holds a typical Socket.IO event
/// whole and costs a large binary message one read per KiB.
const WEBSOCKET_READ_CHUNK: usize = 1024;

/// A POST body, refused with 413 past `max_payload` (by its declared length before reading
/// anything, or while reading).
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    max_payload: usize,
) -> Result<Bytes, EngineError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max_payload) {
        return Err(EngineError::PayloadTooLarge);
    }
    axum::body::to_bytes(body, max_payload)
        .await
        .map_err(|_| EngineError::PayloadTooLarge)
}

fn polling_response(body: String) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/plain; charset=UTF-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

fn ok_response() -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/html"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        "ok",
    )
        .into_response()
}

/// CORS as the reference's `cors` middleware does it: preflights answered with 204,
/// headers added to every other response, disallowed origins served without them.
async fn cors_layer(State(cors): State<Arc<Cors>>, req: HttpRequest, next: Next) -> Response {
    let origin = req.headers().get(header::ORIGIN).cloned();
    let allow_origin = match &cors.origins {
        CorsOrigins::Any => Some(HeaderValue::from_static("*")),
        CorsOrigins::List(list) => origin
            .as_ref()
            .filter(|o| {
                list.iter()
                    .any(|allowed| allowed.as_bytes() == o.as_bytes())
            })
            .cloned(),
    };
    let preflight = req.method() == HttpMethod::OPTIONS;
    let request_headers = req
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned();
    let mut response = if preflight {
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET,HEAD,PUT,PATCH,POST,DELETE"),
        );
        if let Some(requested) = request_headers {
            headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested);
        }
        response
    } else {
        next.run(req).await
    };
    let headers = response.headers_mut();
    if let Some(value) = allow_origin {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        if cors.credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }
    if matches!(cors.origins, CorsOrigins::List(_)) {
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}
