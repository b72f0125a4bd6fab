//! The embedded balancer in front of tiny axum backends that answer with their own index:
//! per-request round-robin on one keep-alive connection, sticky modes, websocket relay,
//! long-polls, client aborts, dead backends, the active probe, and real nodes behind it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{Message as AxumMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use nonstick::app::AppKind;
use nonstick::balancer::{self, BalancerConfig, Mode, ProbeConfig, RunningBalancer};

use crate::fixture::{self, TestNode, WAIT, ws_connect, ws_send, ws_text};

/// What a backend tells the test about requests to `/abort`.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Started,
    Dropped,
}

#[derive(Clone)]
struct BackendState {
    index: usize,
    sessions: Arc<AtomicUsize>,
    healthy: Arc<AtomicBool>,
    seen: mpsc::UnboundedSender<Seen>,
}

/// An axum server that reports its index; stopped on drop.
struct Backend {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    healthy: Arc<AtomicBool>,
    seen: mpsc::UnboundedReceiver<Seen>,
    task: JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn backend(index: usize) -> Backend {
    let (seen_tx, seen) = mpsc::unbounded_channel();
    let healthy = Arc::new(AtomicBool::new(true));
    let state = BackendState {
        index,
        sessions: Arc::new(AtomicUsize::new(0)),
        healthy: healthy.clone(),
        seen: seen_tx,
    };
    let app = Router::new()
        .route("/who", get(who))
        .route("/xff", get(xff))
        .route("/hold", get(hold))
        .route("/abort", get(abort))
        .route("/len", post(len))
        .route("/big", get(big))
        .route("/ws", get(ws))
        .route("/healthz", get(healthz))
        .route("/socket.io/", get(eio_get).post(eio_post))
        .with_state(state);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    let listener = listener.tap_io(move |_| {
        counter.fetch_add(1, Ordering::Relaxed);
    });
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Backend {
        addr,
        connections,
        healthy,
        seen,
        task,
    }
}

async fn backends(n: usize) -> Vec<Backend> {
    let mut all = Vec::new();
    for i in 0..n {
        all.push(backend(i).await);
    }
    all
}

async fn who(State(s): State<BackendState>) -> String {
    s.index.to_string()
}

async fn xff(headers: HeaderMap) -> String {
    let value = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned()
    };
    format!("{} {}", value("x-forwarded-for"), value("keep-alive"))
}

async fn hold(State(s): State<BackendState>) -> String {
    tokio::time::sleep(Duration::from_secs(1)).await;
    format!("held {}", s.index)
}

/// Reports when the handler future is dropped, i.e. when the server saw the client leave.
struct DropSignal(mpsc::UnboundedSender<Seen>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.send(Seen::Dropped);
    }
}

async fn abort(State(s): State<BackendState>) -> &'static str {
    let _ = s.seen.send(Seen::Started);
    let _guard = DropSignal(s.seen.clone());
    tokio::time::sleep(Duration::from_secs(60)).await;
    "too late"
}

/// Counts the upload as it streams in (no extractor limit, no buffering).
async fn len(body: axum::body::Body) -> String {
    let mut stream = body.into_data_stream();
    let mut total = 0;
    while let Some(Ok(chunk)) = stream.next().await {
        total += chunk.len();
    }
    total.to_string()
}

async fn big() -> Vec<u8> {
    vec![b'x'; BIG]
}

const BIG: usize = 4 * 1024 * 1024;

async fn ws(State(s): State<BackendState>, upgrade: WebSocketUpgrade) -> impl IntoResponse {
    upgrade.on_upgrade(move |socket| echo(socket, s.index))
}

async fn echo(mut socket: WebSocket, index: usize) {
    while let Some(Ok(msg)) = socket.recv().await {
        let reply = match msg {
            AxumMessage::Text(t) => AxumMessage::Text(format!("{index}:{}", t.as_str()).into()),
            AxumMessage::Binary(b) => AxumMessage::Binary(b),
            AxumMessage::Close(_) => break,
            _ => continue,
        };
        if socket.send(reply).await.is_err() {
            break;
        }
    }
}

async fn healthz(State(s): State<BackendState>) -> StatusCode {
    if s.healthy.load(Ordering::Relaxed) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// A polling handshake makes a sid naming this backend; a request with a sid says who
/// answered it.
async fn eio_get(
    State(s): State<BackendState>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> String {
    match q.get("sid") {
        Some(_) => s.index.to_string(),
        None => {
            let n = s.sessions.fetch_add(1, Ordering::Relaxed);
            format!(
                r#"0{{"sid":"b{}s{n}","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}}"#,
                s.index
            )
        }
    }
}

async fn eio_post(State(s): State<BackendState>, body: String) -> String {
    format!("{}:{body}", s.index)
}

async fn start(backends: &[Backend], config: impl FnOnce(&mut BalancerConfig)) -> RunningBalancer {
    let mut cfg = BalancerConfig::new(backends.iter().map(|b| b.addr).collect(), Mode::RoundRobin);
    config(&mut cfg);
    start_over(cfg).await
}

async fn start_over(config: BalancerConfig) -> RunningBalancer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    balancer::start(config, listener).expect("start balancer")
}

/// One keep-alive HTTP/1.1 client connection: every request goes over the same socket.
struct Conn {
    send: SendRequest<Full<Bytes>>,
    host: String,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (send, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(connection);
        Conn {
            send,
            host: addr.to_string(),
        }
    }

    async fn request(&mut self, method: &str, path: &str, body: Bytes) -> (u16, Bytes) {
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host)
            .header("connection", "keep-alive")
            .header("keep-alive", "timeout=5")
            .body(Full::new(body))
            .expect("request");
        let exchange = async {
            self.send.ready().await.expect("connection still open");
            let response = self.send.send_request(req).await.expect("response");
            let status = response.status().as_u16();
            let body = response.into_body().collect().await.expect("body");
            (status, body.to_bytes())
        };
        tokio::time::timeout(WAIT, exchange)
            .await
            .expect("answer in time")
    }

    async fn get(&mut self, path: &str) -> (u16, String) {
        let (status, body) = self.request("GET", path, Bytes::new()).await;
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    async fn post(&mut self, path: &str, body: &str) -> (u16, String) {
        let (status, body) = self
            .request("POST", path, Bytes::from(body.to_owned()))
            .await;
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

#[tokio::test]
async fn round_robin_per_request_on_one_keep_alive_connection() {
    let backends = backends(3).await;
    let lb = start(&backends, |_| {}).await;
    let mut conn = Conn::open(lb.addr()).await;
    let mut answers = Vec::new();
    for _ in 0..6 {
        let (status, body) = conn.get("/who").await;
        assert_eq!(status, 200);
        answers.push(body);
    }
    assert_eq!(answers, ["0", "1", "2", "0", "1", "2"]);
    // The client address is added and hop-by-hop headers stay behind.
    let (_, body) = conn.get("/xff").await;
    assert_eq!(body, "127.0.0.1 -");
    lb.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn backend_connections_are_pooled() {
    let backends = backends(3).await;
    let lb = start(&backends, |_| {}).await;
    let mut conn = Conn::open(lb.addr()).await;
    for _ in 0..30 {
        assert_eq!(conn.get("/who").await.0, 200);
    }
    let opened: usize = backends
        .iter()
        .map(|b| b.connections.load(Ordering::Relaxed))
        .sum();
    assert!(
        opened <= 6,
        "30 requests opened {opened} backend connections"
    );
}

#[tokio::test]
async fn large_bodies_pass_both_ways() {
    let backends = backends(2).await;
    let lb = start(&backends, |_| {}).await;
    let mut conn = Conn::open(lb.addr()).await;
    let upload = Bytes::from(vec![b'y'; BIG]);
    let (status, body) = conn.request("POST", "/len", upload).await;
    assert_eq!((status, body), (200, Bytes::from(BIG.to_string())));
    let (status, body) = conn.request("GET", "/big", Bytes::new()).await;
    assert_eq!(status, 200);
    assert_eq!(body.len(), BIG);
}

#[tokio::test]
async fn sticky_sid_keeps_a_session_on_its_backend() {
    let backends = backends(3).await;
    let lb = start(&backends, |c| c.mode = Mode::StickySid).await;
    let mut conn = Conn::open(lb.addr()).await;
    let mut sids = Vec::new();
    for _ in 0..3 {
        let (status, body) = conn.get("/socket.io/?EIO=4&transport=polling").await;
        assert_eq!(status, 200);
        let json: serde_json::Value =
            serde_json::from_str(body.strip_prefix('0').expect("open packet")).expect("json");
        sids.push(json["sid"].as_str().expect("sid").to_owned());
    }
    // Handshakes themselves rotate.
    let creators: Vec<String> = sids.iter().map(|s| s[1..2].to_owned()).collect();
    assert_eq!(creators, ["0", "1", "2"]);
    for _ in 0..3 {
        for (sid, creator) in sids.iter().zip(&creators) {
            let path = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
            assert_eq!(conn.get(&path).await, (200, creator.clone()));
            assert_eq!(
                conn.post(&path, "4hi").await,
                (200, format!("{creator}:4hi"))
            );
        }
    }
    // Requests without a known sid still rotate.
    let others: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(conn.get("/who").await.1);
        }
        v
    };
    let mut sorted = others.clone();
    sorted.sort();
    assert_eq!(sorted, ["0", "1", "2"], "{others:?}");
}

#[tokio::test]
async fn sticky_ip_keeps_a_client_on_one_backend() {
    let backends = backends(3).await;
    let lb = start(&backends, |c| c.mode = Mode::StickyIp).await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        let mut conn = Conn::open(lb.addr()).await;
        for _ in 0..3 {
            let (status, body) = conn.get("/who").await;
            assert_eq!(status, 200);
            seen.push(body);
        }
    }
    assert!(seen.iter().all(|b| *b == seen[0]), "{seen:?}");
}

#[tokio::test]
async fn websocket_passes_through() {
    let backends = backends(3).await;
    let lb = start(&backends, |_| {}).await;
    let url = format!("ws://{}/ws", lb.addr());
    for expected in ["0", "1"] {
        let mut ws = ws_connect(&url)
            .await
            .expect("websocket through the balancer");
        ws_send(&mut ws, "hello").await;
        assert_eq!(ws_text(&mut ws).await, format!("{expected}:hello"));
        let binary = Message::Binary(Bytes::from_static(&[0, 1, 2, 255]));
        futures::SinkExt::send(&mut ws, binary.clone())
            .await
            .expect("send binary");
        let echoed = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("in time")
            .expect("open")
            .expect("frame");
        assert_eq!(echoed, binary);
        ws_send(&mut ws, "again").await;
        assert_eq!(ws_text(&mut ws).await, format!("{expected}:again"));
        ws.close(None).await.expect("close");
    }
}

#[tokio::test]
async fn long_poll_is_held_as_long_as_the_backend_holds_it() {
    let backends = backends(2).await;
    let lb = start(&backends, |_| {}).await;
    let mut conn = Conn::open(lb.addr()).await;
    assert_eq!(conn.get("/hold").await, (200, "held 0".to_owned()));
    // The connection is still usable afterwards and rotation went on.
    assert_eq!(conn.get("/who").await, (200, "1".to_owned()));
}

#[tokio::test]
async fn client_abort_drops_the_backend_request() {
    let mut backends = backends(1).await;
    let lb = start(&backends, |_| {}).await;
    let mut stream = TcpStream::connect(lb.addr()).await.expect("connect");
    stream
        .write_all(b"GET /abort HTTP/1.1\r\nhost: lb\r\n\r\n")
        .await
        .expect("write");
    let seen = &mut backends[0].seen;
    let first = tokio::time::timeout(WAIT, seen.recv())
        .await
        .expect("in time");
    assert_eq!(first, Some(Seen::Started));
    drop(stream);
    let second = tokio::time::timeout(WAIT, seen.recv())
        .await
        .expect("backend sees the request dropped");
    assert_eq!(second, Some(Seen::Dropped));
}

/// An address nothing listens on.
async fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr")
}

/// A backend that dies under every request: it reads the request, then closes the connection
/// without a byte of answer (like a node killed while it held the request).
async fn vanishing_addr() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
        }
    });
    (addr, task)
}

#[tokio::test]
async fn a_refused_connection_is_tried_on_the_next_backend_then_skipped() {
    let live = backends(2).await;
    let addrs = vec![dead_addr().await, live[0].addr, live[1].addr];
    let mut config = BalancerConfig::new(addrs, Mode::RoundRobin);
    config.health.cooldown = Duration::from_secs(60);
    let lb = start_over(config).await;
    let mut conn = Conn::open(lb.addr()).await;
    // The first request goes to the dead backend and on to the next one; a POST's body is
    // sent again with it.
    assert_eq!(conn.post("/len", "hello").await, (200, "5".to_owned()));
    let mut answers = Vec::new();
    for _ in 0..6 {
        let (status, body) = conn.get("/who").await;
        assert_eq!(status, 200, "{body}");
        answers.push(body);
    }
    assert!(answers.contains(&"0".to_owned()) && answers.contains(&"1".to_owned()));
    lb.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_request_whose_backend_dies_is_tried_on_the_next() {
    let live = backends(1).await;
    let (vanishing, _task) = vanishing_addr().await;
    let config = || {
        let mut config = BalancerConfig::new(vec![vanishing, live[0].addr], Mode::RoundRobin);
        config.health.cooldown = Duration::from_secs(60);
        config
    };
    // A GET may be sent again: nothing came back from the first backend.
    let lb = start_over(config()).await;
    let mut conn = Conn::open(lb.addr()).await;
    assert_eq!(conn.get("/who").await, (200, "0".to_owned()));
    lb.shutdown().await.expect("shutdown");
    // A POST too (an Engine.IO session's node that died with it is taken over elsewhere):
    // at least once.
    let lb = start_over(config()).await;
    let mut conn = Conn::open(lb.addr()).await;
    assert_eq!(conn.post("/len", "hello").await, (200, "5".to_owned()));
    // The failing backend is out of the rotation now.
    for _ in 0..4 {
        assert_eq!(conn.post("/len", "hello").await, (200, "5".to_owned()));
    }
    lb.shutdown().await.expect("shutdown");
}

/// A backend that reads requests and never answers, like a stopped (SIGSTOP) process whose
/// kernel still accepts connections; each connection is held open.
async fn frozen_addr() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
            held.push(stream);
        }
    });
    (addr, task)
}

#[tokio::test]
async fn a_backend_that_never_answers_is_given_up_after_the_response_timeout() {
    let live = backends(1).await;
    let (frozen, _task) = frozen_addr().await;
    let mut config = BalancerConfig::new(vec![frozen, live[0].addr], Mode::RoundRobin);
    config.health.cooldown = Duration::from_secs(60);
    config.health.response_timeout = Duration::from_millis(300);
    let lb = start_over(config).await;
    let mut conn = Conn::open(lb.addr()).await;
    let answer = tokio::time::timeout(Duration::from_secs(10), conn.post("/len", "hello")).await;
    assert_eq!(answer.expect("an answer"), (200, "5".to_owned()));
    // Out of the rotation now: no request waits for it again.
    for _ in 0..4 {
        assert_eq!(conn.get("/who").await, (200, "0".to_owned()));
    }
    lb.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn failed_probe_takes_a_backend_out_until_it_recovers() {
    let backends = backends(3).await;
    backends[1].healthy.store(false, Ordering::Relaxed);
    let lb = start(&backends, |c| {
        c.health.probe = Some(ProbeConfig {
            interval: Duration::from_millis(20),
            ..ProbeConfig::default()
        });
    })
    .await;
    let mut conn = Conn::open(lb.addr()).await;
    let mut excluded = false;
    for _ in 0..100 {
        let mut round = Vec::new();
        for _ in 0..6 {
            round.push(conn.get("/who").await.1);
        }
        if round.iter().all(|b| b != "1") {
            excluded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(excluded, "an unhealthy backend leaves the rotation");
    backends[1].healthy.store(true, Ordering::Relaxed);
    let mut back = false;
    for _ in 0..100 {
        if conn.get("/who").await.1 == "1" {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(back, "a recovered backend rejoins the rotation");
}

#[tokio::test]
async fn shutdown_stops_listening() {
    let backends = backends(1).await;
    let lb = start(&backends, |_| {}).await;
    let addr = lb.addr();
    let mut conn = Conn::open(addr).await;
    assert_eq!(conn.get("/who").await.0, 200);
    tokio::time::timeout(WAIT, lb.shutdown())
        .await
        .expect("shutdown in time")
        .expect("shutdown");
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn dropping_stops_relayed_websockets() {
    let backends = backends(1).await;
    let lb = start(&backends, |_| {}).await;
    let mut ws = ws_connect(&format!("ws://{}/ws", lb.addr()))
        .await
        .expect("websocket");
    ws_send(&mut ws, "x").await;
    assert_eq!(ws_text(&mut ws).await, "0:x");
    drop(lb);
    let end = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("closed in time");
    assert!(!matches!(end, Some(Ok(Message::Text(_)))), "{end:?}");
}

#[test]
fn config_errors() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let empty = BalancerConfig::new(Vec::new(), Mode::RoundRobin);
        let err = balancer::start(empty, bind().await).expect_err("no backends");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        let mut bad_probe = BalancerConfig::new(vec![dead_addr().await], Mode::StickyIp);
        bad_probe.health.probe = Some(ProbeConfig {
            path: "healthz".to_owned(),
            ..ProbeConfig::default()
        });
        let err = balancer::start(bad_probe, bind().await).expect_err("relative path");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    });
    assert_eq!("sticky-sid".parse::<Mode>(), Ok(Mode::StickySid));
    assert_eq!(Mode::StickyIp.to_string(), "sticky-ip");
    assert!("sticky".parse::<Mode>().is_err());
}

async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.expect("bind")
}

/// Real nodes behind the balancer in sticky-sid mode: a polling session keeps working, which
/// needs every request of it to reach the node that owns it.
#[tokio::test]
async fn sticky_sid_in_front_of_real_nodes() {
    let nodes = [
        TestNode::start(AppKind::Demo).await,
        TestNode::start(AppKind::Demo).await,
        TestNode::start(AppKind::Demo).await,
    ];
    let config = BalancerConfig::new(nodes.iter().map(|n| n.addr()).collect(), Mode::StickySid);
    let lb = start_over(config).await;
    let base = format!("http://{}/socket.io/?EIO=4&transport=polling", lb.addr());
    for _ in 0..3 {
        let open = fixture::get(&base).await;
        assert_eq!(open.status, 200, "{}", open.body);
        let json: serde_json::Value =
            serde_json::from_str(open.body.strip_prefix('0').expect("open packet")).expect("json");
        let sid = json["sid"].as_str().expect("sid");
        let url = format!("{base}&sid={sid}");
        // Socket.IO CONNECT to the main namespace, then read the answer: both must reach
        // the owner or they get 400 "Session ID unknown".
        let posted = fixture::post(&url, "40").await;
        assert_eq!(posted.status, 200, "{}", posted.body);
        let polled = fixture::get(&url).await;
        assert_eq!(polled.status, 200, "{}", polled.body);
        assert!(polled.body.starts_with("40"), "{}", polled.body);
    }
}

/// A raw request whose answer is read until the backend closes: checks that the balancer
/// speaks plain HTTP/1.1 to clients that are not hyper.
#[tokio::test]
async fn raw_http_client() {
    let backends = backends(1).await;
    let lb = start(&backends, |_| {}).await;
    let mut stream = TcpStream::connect(lb.addr()).await.expect("connect");
    stream
        .write_all(b"GET /who HTTP/1.1\r\nhost: lb\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("in time")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\n0"), "{answer}");
}

/// An Engine.IO websocket session through the relay to a real node: open packet, then a
/// ping answered by the client and the Socket.IO CONNECT answered by the server.
#[tokio::test]
async fn engine_websocket_through_the_balancer() {
    let node = TestNode::start(AppKind::Demo).await;
    let lb = start_over(BalancerConfig::new(vec![node.addr()], Mode::RoundRobin)).await;
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", lb.addr());
    let mut ws = ws_connect(&url)
        .await
        .expect("websocket through the balancer");
    let open = ws_text(&mut ws).await;
    assert!(open.starts_with("0{\"sid\":"), "{open}");
    ws_send(&mut ws, "40").await;
    let connected = ws_text(&mut ws).await;
    assert!(connected.starts_with("40"), "{connected}");
}
