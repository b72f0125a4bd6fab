//! Forwarding one client request to its backend: rewrite the target and the hop-by-hop
//! headers, stream the bodies, relay upgrades, and answer 502 when the backend is unreachable.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::{PathAndQuery, Scheme};
use hyper::upgrade::OnUpgrade;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::watch;

use super::body::{ProxyBody, Sniff};
use super::route::Router;
use super::sid::SidTable;
use super::{BalancerConfig, Mode};

/// Idle pooled backend connections are closed after this, so a balancer that went quiet does
/// not keep sockets open on the backends.
const POOL_IDLE: Duration = Duration::from_secs(30);

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const REQUEST_ID: HeaderName = HeaderName::from_static("x-nonstick-request-id");

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), so they are
/// never forwarded as they are.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// The forwarding state shared by all client connections of one balancer.
#[derive(Debug)]
pub(super) struct Proxy {
    router: Arc<Router>,
    /// Pooled keep-alive connections to the backends.
    client: Client<HttpConnector, BackendBody>,
    /// Request bodies up to this size are read whole, so the request can be sent again.
    max_replay_body: usize,
    /// Cloned into websocket relays so that stopping the balancer closes them.
    stopped: watch::Receiver<bool>,
    /// With an active probe, only the probe puts a backend back: a request pinned to a
    /// backend the probe calls unhealthy must not flip it up between two probes.
    probing: bool,
    /// See [`HealthConfig::response_timeout`](super::HealthConfig::response_timeout).
    response_timeout: Duration,
    /// Names this balancer's requests (`X-Nonstick-Request-Id`, see [`Proxy::name`]).
    ids: RequestIds,
}

/// Request ids unique to one balancer process: a random prefix and a counter.
#[derive(Debug)]
struct RequestIds {
    prefix: u64,
    next: AtomicU64,
}

impl Proxy {
    pub(super) fn new(config: &BalancerConfig, stopped: watch::Receiver<bool>) -> Proxy {
        let router = Router::new(
            &config.backends,
            config.mode,
            config.health.cooldown,
            SidTable::new(&config.sids),
        );
        Proxy {
            router: Arc::new(router),
            client: backend_client(config.health.connect_timeout),
            max_replay_body: config.max_replay_body,
            stopped,
            probing: config.health.probe.is_some(),
            response_timeout: config.health.response_timeout,
            ids: RequestIds {
                prefix: rand::random(),
                next: AtomicU64::new(0),
            },
        }
    }

    /// Gives the request an `X-Nonstick-Request-Id` unless it has one (a balancer in front of this
    /// one named it). Every attempt carries the same: a node tells from it a GET or POST sent again
    /// after a first attempt that got no answer, and neither loses the answer that attempt may have
    /// been given nor applies a POST twice.
    fn name(&self, headers: &mut HeaderMap) {
        if headers.contains_key(REQUEST_ID) {
            return;
        }
        let n = self.ids.next.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:016x}-{n:x}", self.ids.prefix);
        if let Ok(value) = HeaderValue::from_str(&id) {
            headers.insert(REQUEST_ID, value);
        }
    }

    pub(super) fn router(&self) -> &Router {
        &self.router
    }

    /// Forwards `request` from `peer` and returns the backend's answer (or a local 502).
    /// Dropping the returned future (the client went away) drops the backend request and
    /// closes its backend connection, which is how a backend learns of an aborted long-poll.
    ///
    /// A request that failed before any byte of an answer came back is tried on the next
    /// backend, as nginx's `proxy_next_upstream error timeout http_503` does: a refused
    /// connection, a backend that died or went silent (no answer to its health probe, or
    /// none within the response timeout) while holding it, a 503. A POST too, so Engine.IO
    /// packets are sent at least once (see the loop).
    pub(super) async fn handle(
        &self,
        peer: SocketAddr,
        mut request: Request<Incoming>,
    ) -> Response<ProxyBody> {
        if request.method() == Method::CONNECT {
            return local(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not supported\n");
        }
        let query = request.uri().query();
        let sid = query_value(query, "sid");
        let mut index = self.router.pick(peer.ip(), sid);
        let handshake = self.router.mode() == Mode::StickySid
            && sid.is_none()
            && request.method() == Method::GET
            && query_value(query, "transport") == Some("polling");

        let upgrade = upgrade_protocol(request.headers());
        let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut request));
        let (mut parts, body) = request.into_parts();
        let mut body = match Outgoing::read(&parts.headers, body, self.max_replay_body).await {
            Ok(body) => body,
            Err(response) => return response,
        };
        parts.version = Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers);
        if let Some(protocol) = upgrade {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, protocol);
        }
        forwarded_for(&mut parts.headers, peer.ip());
        self.name(&mut parts.headers);

        let backends = self.router.backends().len();
        let mut attempt = 1;
        let mut response = loop {
            let backend = self.router.backend(index);
            let target = backend_uri(&backend.authority, &parts.uri);
            let (this_try, next_try) = body.split();
            let mut outgoing = Request::new(this_try);
            *outgoing.method_mut() = parts.method.clone();
            *outgoing.uri_mut() = target;
            *outgoing.version_mut() = parts.version;
            *outgoing.headers_mut() = if next_try.is_some() && attempt < backends {
                parts.headers.clone()
            } else {
                std::mem::take(&mut parts.headers)
            };
            let silenced = self.router.silenced(index);
            let answer = tokio::time::timeout(self.response_timeout, self.client.request(outgoing));
            let result = tokio::select! {
                answer = answer => match answer {
                    Ok(result) => result.map_err(|e| e.to_string()),
                    Err(_) => Err(format!("no answer within {:?}", self.response_timeout)),
                },
                () = silenced => Err("its health probe got no answer".to_owned()),
            };
            // A backend that takes no new session (draining), serves nobody (cut off from its
            // cluster) or cannot reach a session's owner: another may. Left out until its
            // probe says it is healthy again. A POST too (see below).
            let unavailable = matches!(&result, Ok(r) if r.status() == StatusCode::SERVICE_UNAVAILABLE)
                && attempt < backends
                && next_try.is_some();
            let failure = match result {
                Ok(response) if !unavailable => break response,
                Ok(_) => "503".to_owned(),
                Err(e) => e,
            };
            // Nothing usable came back from this backend: it is gone or going (a refused
            // connect, a connection that closed under a parked request, a drain). Leave it
            // out until it is healthy again.
            if self.router.mark_down(index, Duration::ZERO) {
                tracing::warn!(backend = %backend.addr, "backend down: {failure}");
            }
            tracing::debug!(backend = %backend.addr, attempt, "request failed: {failure}");
            // A POST too: an Engine.IO backend that died with it may have applied it, but its
            // session went with it (the cluster starts it afresh elsewhere), and failing it
            // would end the client's session. At least once, rather than at most once.
            match next_try {
                Some(next) if attempt < backends => {
                    body = next;
                    attempt += 1;
                    index = self.router.next_up_after(index);
                }
                _ => {
                    return local(
                        StatusCode::BAD_GATEWAY,
                        format!("backend {} unreachable\n", backend.addr),
                    );
                }
            }
        };
        let backend = self.router.backend(index);
        if !self.probing && self.router.mark_up(index) {
            tracing::info!(backend = %backend.addr, "backend up");
        }

        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(client_upgrade) = client_upgrade else {
                return local(
                    StatusCode::BAD_GATEWAY,
                    "backend switched protocols unasked\n",
                );
            };
            let backend_upgrade = hyper::upgrade::on(&mut response);
            tokio::spawn(relay(client_upgrade, backend_upgrade, self.stopped.clone()));
            let (parts, _) = response.into_parts();
            return Response::from_parts(parts, ProxyBody::empty());
        }

        strip_hop_by_hop(response.headers_mut());
        let (parts, body) = response.into_parts();
        let sniff = (handshake && parts.status == StatusCode::OK)
            .then(|| Box::new(Sniff::new(self.router.clone(), index)));
        Response::from_parts(parts, ProxyBody::Backend { body, sniff })
    }
}

/// A request body on its way to a backend: one that can be sent again (none, or read whole
/// because it is small), or one streamed through, which goes to one backend only.
enum Outgoing {
    Replayable(Bytes),
    Streamed(Incoming),
}

impl Outgoing {
    /// Reads the body whole when it declares a length of at most `limit` (every Engine.IO
    /// POST does); a body without `Content-Length` or `Transfer-Encoding` is empty.
    async fn read(
        headers: &HeaderMap,
        body: Incoming,
        limit: usize,
    ) -> Result<Outgoing, Response<ProxyBody>> {
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let chunked = headers.contains_key(header::TRANSFER_ENCODING);
        match declared {
            None if !chunked => Ok(Outgoing::Replayable(Bytes::new())),
            Some(length) if length <= limit => match Limited::new(body, limit).collect().await {
                Ok(collected) => Ok(Outgoing::Replayable(collected.to_bytes())),
                Err(_) => Err(local(
                    StatusCode::BAD_REQUEST,
                    "the request body ended early\n",
                )),
            },
            _ => Ok(Outgoing::Streamed(body)),
        }
    }

    /// The body for this attempt, and the one for a further attempt if there can be one.
    fn split(self) -> (BackendBody, Option<Outgoing>) {
        match self {
            Outgoing::Replayable(bytes) => (
                Either::Left(Full::new(bytes.clone())),
                Some(Outgoing::Replayable(bytes)),
            ),
            Outgoing::Streamed(body) => (Either::Right(body), None),
        }
    }
}

/// What the balancer sends to a backend.
type BackendBody = Either<Full<Bytes>, Incoming>;

fn backend_client(connect_timeout: Duration) -> Client<HttpConnector, BackendBody> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE)
        .pool_timer(TokioTimer::new())
        .build(connector)
}

/// Splices the two upgraded connections until either side closes or the balancer stops.
async fn relay(client: OnUpgrade, backend: OnUpgrade, mut stopped: watch::Receiver<bool>) {
    let splice = async {
        let (client, backend) = tokio::try_join!(client, backend)?;
        let mut client = TokioIo::new(client);
        let mut backend = TokioIo::new(backend);
        tokio::io::copy_bidirectional(&mut client, &mut backend).await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    };
    tokio::select! {
        result = splice => {
            if let Err(e) = result {
                tracing::debug!("upgraded relay ended: {e}");
            }
        }
        _ = stopped.changed() => {}
    }
}

/// A 502 or 405 made here.
fn local(status: StatusCode, text: impl Into<bytes::Bytes>) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::local(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The raw value of `key` in a query string (no percent-decoding: Engine.IO sids and
/// transport names never need it).
fn query_value<'q>(query: Option<&'q str>, key: &str) -> Option<&'q str> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key && !v.is_empty()).then_some(v)
    })
}

/// The `Upgrade` protocol when the request asks to switch (`Connection: upgrade` and an
/// `Upgrade` header).
fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if asks {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    }
}

fn backend_uri(authority: &hyper::http::uri::Authority, uri: &Uri) -> Uri {
    let path = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut parts = hyper::http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(authority.clone());
    parts.path_and_query = Some(path);
    // Scheme, authority and path are all present and valid, which is all `from_parts` checks.
    Uri::from_parts(parts).unwrap_or_default()
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        // Headers listed in `Connection` are hop-by-hop as well.
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Appends the client address to `X-Forwarded-For`, keeping what earlier proxies wrote.
fn forwarded_for(headers: &mut HeaderMap, client: IpAddr) {
    let mut value = String::new();
    for earlier in headers.get_all(&X_FORWARDED_FOR) {
        if let Ok(text) = earlier.to_str() {
            let text = text.trim();
            if !text.is_empty() {
                value.push_str(text);
                value.push_str(", ");
            }
        }
    }
    value.push_str(&client.to_canonical().to_string());
    if let Ok(value) = HeaderValue::try_from(value) {
        headers.insert(X_FORWARDED_FOR, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values() {
        let q = Some("EIO=4&transport=polling&sid=ab-c_d&t=x");
        assert_eq!(query_value(q, "sid"), Some("ab-c_d"));
        assert_eq!(query_value(q, "transport"), Some("polling"));
        assert_eq!(query_value(q, "missing"), None);
        assert_eq!(query_value(Some("sid=&x"), "sid"), None);
        assert_eq!(query_value(None, "sid"), None);
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-trace"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-trace", HeaderValue::from_static("1"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::CONTENT_TYPE));
    }

    #[test]
    fn upgrade_needs_both_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert_eq!(upgrade_protocol(&h), None);
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert_eq!(
            upgrade_protocol(&h),
            Some(HeaderValue::from_static("websocket"))
        );
    }

    #[test]
    fn forwarded_for_appends() {
        let mut h = HeaderMap::new();
        forwarded_for(&mut h, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(h[&X_FORWARDED_FOR], "127.0.0.1");
        forwarded_for(&mut h, "::ffff:10.0.0.2".parse().unwrap());
        assert_eq!(h[&X_FORWARDED_FOR], "127.0.0.1, 10.0.0.2");
    }

    #[test]
    fn backend_uri_keeps_path_and_query() {
        let authority = hyper::http::uri::Authority::from_static("127.0.0.1:9");
        let uri: Uri = "/socket.io/?EIO=4&sid=x".parse().unwrap();
        assert_eq!(
            backend_uri(&authority, &uri).to_string(),
            "http://127.0.0.1:9/socket.io/?EIO=4&sid=x"
        );
    }
}
