//! The shared test fixture: nodes on 127.0.0.1:0, a small HTTP client, websocket helpers.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use axum::Router;
use nonstick::app::{AppKind, BuiltIn};
use nonstick::config::Config;
use nonstick::node::{self, Node, NodeBuilder, RunningNode};
use nonstick::socketio::SocketIo;

/// Upper bound for any single wait in a test, so a broken server fails instead of hanging.
pub const WAIT: Duration = Duration::from_secs(5);

/// What a test node serves: its mounts, and the HTTP app around the node's router.
pub struct App {
    mount: Box<dyn Fn(NodeBuilder) -> NodeBuilder>,
    routes: Box<dyn Fn(&Node) -> Router>,
}

impl App {
    /// A built-in application, mounted as the binary mounts it.
    pub fn built_in(kind: AppKind) -> App {
        App::built_in_as(BuiltIn::new(kind))
    }

    /// A built-in application with these settings of its own.
    pub fn built_in_as(app: BuiltIn) -> App {
        let routes = app.clone();
        App {
            mount: Box::new(move |builder| {
                let mounts = app.mounts(builder.config());
                builder.mounts(mounts)
            }),
            routes: Box::new(move |node| routes.routes(node).merge(node.router())),
        }
    }

    /// The test's own: `mount` adds its mounts, `routes` builds the whole HTTP app.
    pub fn own(
        mount: impl Fn(NodeBuilder) -> NodeBuilder + 'static,
        routes: impl Fn(&Node) -> Router + 'static,
    ) -> App {
        App {
            mount: Box::new(mount),
            routes: Box::new(routes),
        }
    }

    /// Build `builder` with this app's mounts and serve its routes.
    async fn start(&self, builder: NodeBuilder) -> RunningNode {
        let node = (self.mount)(builder).build().await.expect("build node");
        let routes = (self.routes)(&node);
        node.start(routes).expect("serve node")
    }
}

/// A node serving on a free loopback port; stopped on drop or by [`TestNode::stop`].
pub struct TestNode {
    node: Option<RunningNode>,
    addr: SocketAddr,
}

impl TestNode {
    /// Starts a node serving `kind` with the binary's defaults.
    pub async fn start(kind: AppKind) -> TestNode {
        TestNode::start_with(kind, BuiltIn::base_config()).await
    }

    /// Starts a node serving `kind` with these settings.
    pub async fn start_with(kind: AppKind, config: Config) -> TestNode {
        TestNode::start_app(&App::built_in(kind), config).await
    }

    /// Starts a node serving a Socket.IO server built by the test at `/socket.io/`.
    pub async fn serve(io: SocketIo) -> TestNode {
        let app = App::own(move |b| b.socketio(io.clone()), |node| node.router());
        TestNode::start_app(&app, BuiltIn::base_config()).await
    }

    /// Starts the node `builder` describes (listener included), serving `kind`.
    pub async fn start_built(kind: AppKind, builder: NodeBuilder) -> TestNode {
        TestNode::running(App::built_in(kind).start(builder).await)
    }

    /// Starts a node serving `app` with these settings.
    pub async fn start_app(app: &App, config: Config) -> TestNode {
        let builder = NodeBuilder::new(config).listen(bind().await);
        TestNode::running(app.start(builder).await)
    }

    pub fn running(node: RunningNode) -> TestNode {
        let addr = node.addr();
        TestNode {
            node: Some(node),
            addr,
        }
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr><path_and_query>`.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.addr, path_and_query)
    }

    /// `ws://<addr><path_and_query>`.
    pub fn ws_url(&self, path_and_query: &str) -> String {
        format!("ws://{}{}", self.addr, path_and_query)
    }

    /// The node itself.
    pub fn node(&self) -> &Node {
        self.node.as_ref().expect("node running").node()
    }

    /// The Socket.IO server at `/socket.io/`.
    pub fn socketio(&self) -> SocketIo {
        self.node()
            .socketio("/socket.io/")
            .expect("a Socket.IO mount")
    }

    /// Graceful stop.
    pub async fn stop(mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown().await.expect("graceful shutdown");
        }
    }
}

async fn bind() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0")
}

/// A response, body as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends one request and reads the whole body as text.
pub async fn request(method: &str, url: &str, body: &str) -> Reply {
    request_with_type(method, url, "text/plain;charset=UTF-8", body).await
}

/// Sends one request with this `Content-Type` and reads the whole body as text.
pub async fn request_with_type(method: &str, url: &str, content_type: &str, body: &str) -> Reply {
    request_with_headers(method, url, &[("content-type", content_type)], body).await
}

/// Sends one request with these headers and reads the whole body as text.
pub async fn request_with_headers(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut req = hyper::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("valid request");
    let response = tokio::time::timeout(WAIT, client().request(req))
        .await
        .expect("response in time")
        .expect("request sent");
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body read")
        .to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// GET, body as text.
pub async fn get(url: &str) -> Reply {
    request("GET", url, "").await
}

/// POST a text body.
pub async fn post(url: &str, body: &str) -> Reply {
    request("POST", url, body).await
}

/// Opens a polling session on `path` (e.g. `/engine.io/`) and returns its sid.
pub async fn open_polling(node: &TestNode, path: &str) -> String {
    let reply = get(&node.url(&format!("{path}?EIO=4&transport=polling"))).await;
    assert_eq!(reply.status, 200, "handshake: {}", reply.body);
    let json: serde_json::Value =
        serde_json::from_str(reply.body.strip_prefix('0').expect("open packet")).expect("json");
    json["sid"].as_str().expect("sid").to_owned()
}

/// A websocket client.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Connects a websocket; `Err` when the server refused the upgrade.
pub async fn ws_connect(url: &str) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("websocket connect in time")
        .map(|(ws, _)| ws)
}

/// The next text or binary message; `None` once the socket is closed.
pub async fn ws_next(ws: &mut Ws) -> Option<Message> {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("websocket message in time");
        match msg {
            Some(Ok(Message::Text(t))) => return Some(Message::Text(t)),
            Some(Ok(Message::Binary(b))) => return Some(Message::Binary(b)),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => continue,
        }
    }
}

/// The next text message, panicking on anything else.
pub async fn ws_text(ws: &mut Ws) -> String {
    match ws_next(ws).await {
        Some(Message::Text(t)) => t.to_string(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// Sends a text frame.
pub async fn ws_send(ws: &mut Ws, text: &str) {
    ws.send(Message::Text(text.into())).await.expect("send");
}

/// Waits until the server closes the socket (text frames before the close are skipped).
pub async fn ws_closed(ws: &mut Ws) {
    while ws_next(ws).await.is_some() {}
}

/// The embedded balancer, round-robin per request, in front of `backends` on a free port.
pub async fn round_robin(backends: Vec<SocketAddr>) -> nonstick::balancer::RunningBalancer {
    use nonstick::balancer::{BalancerConfig, Mode};
    let config = BalancerConfig::new(backends, Mode::RoundRobin);
    nonstick::balancer::start(config, bind().await).expect("start balancer")
}

/// The cluster secret of test clusters.
pub const CLUSTER_SECRET: &str = "test-cluster-secret-of-thirty-two-chars";

/// N cluster nodes in this process, each with its own sled directory, HTTP and gRPC on
/// 127.0.0.1:0, all serving `kind`. Stopped on drop or by [`TestCluster::stop`].
pub struct TestCluster {
    /// The nodes that run, by id (node 1 first; unreachable members have no entry).
    pub nodes: Vec<TestNode>,
    /// Every member's gRPC address.
    pub peers: std::collections::BTreeMap<u64, String>,
    /// Kept until the nodes are stopped: their registries live in it.
    _dirs: tempfile::TempDir,
    /// The addresses of the unreachable members.
    _holes: Vec<BlackHole>,
    /// The proxies in front of the members that run behind one, by id.
    pub freezers: std::collections::BTreeMap<u64, Freezer>,
    /// The proxies such a member reaches the others through, by its id.
    outbound: std::collections::BTreeMap<u64, Vec<Freezer>>,
}

/// How the other members reach a member of a [`TestCluster`], when not directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Not started; its address drops every packet ([`BlackHole`]).
    BlackHole,
    /// Started, and reached through a [`Freezer`] the test can freeze; it reaches the others
    /// through freezers too ([`TestCluster::cut_off`]).
    Freezer,
}

impl TestCluster {
    pub async fn start(n: u64, kind: AppKind) -> TestCluster {
        TestCluster::start_with(n, &[], |_| (App::built_in(kind), BuiltIn::base_config())).await
    }

    /// Members `1..=n`, serving `app(id)`'s app with its settings; the members listed in
    /// `paths` are reached the way it says.
    pub async fn start_with(
        n: u64,
        paths: &[(u64, Path)],
        app: impl Fn(u64) -> (App, Config),
    ) -> TestCluster {
        let peer = |_| {
            let secret = nonstick::rpc::Secret::new(CLUSTER_SECRET).expect("secret");
            (secret, None)
        };
        TestCluster::start_with_peers(n, paths, app, peer).await
    }

    /// [`TestCluster::start_with`], each member with the cluster secret and the mutual TLS
    /// settings `peer(id)` gives.
    pub async fn start_with_peers(
        n: u64,
        paths: &[(u64, Path)],
        app: impl Fn(u64) -> (App, Config),
        peer: impl Fn(u64) -> (nonstick::rpc::Secret, Option<nonstick::rpc::PeerTls>),
    ) -> TestCluster {
        let path = |id| paths.iter().find(|(p, _)| *p == id).map(|(_, path)| *path);
        let dirs = tempfile::tempdir().expect("tempdir");
        let mut grpc = Vec::new();
        let mut holes = Vec::new();
        let mut freezers = std::collections::BTreeMap::new();
        let mut peers = std::collections::BTreeMap::new();
        let mut direct = std::collections::BTreeMap::new();
        for id in 1..=n {
            if path(id) == Some(Path::BlackHole) {
                let hole = BlackHole::new().await;
                peers.insert(id, hole.addr().to_string());
                holes.push(hole);
                continue;
            }
            let listener = bind().await;
            let addr = listener.local_addr().expect("addr");
            direct.insert(id, addr);
            if path(id) == Some(Path::Freezer) {
                let freezer = Freezer::new(addr).await;
                peers.insert(id, freezer.addr().to_string());
                freezers.insert(id, freezer);
            } else {
                peers.insert(id, addr.to_string());
            }
            grpc.push((id, listener));
        }
        let mut nodes = Vec::new();
        let mut outbound = std::collections::BTreeMap::new();
        for (id, grpc) in grpc {
            let mut own_peers = peers.clone();
            if path(id) == Some(Path::Freezer) {
                let mut proxies = Vec::new();
                for (other, addr) in own_peers.iter_mut().filter(|(other, _)| **other != id) {
                    // Past the other's own freezer, if it has one: each is cut off alone.
                    let Some(target) = direct.get(other) else {
                        continue;
                    };
                    let freezer = Freezer::new(*target).await;
                    *addr = freezer.addr().to_string();
                    proxies.push(freezer);
                }
                outbound.insert(id, proxies);
            }
            let (secret, tls) = peer(id);
            let cluster = node::ClusterConfig {
                node_id: id,
                grpc: grpc.into(),
                peers: own_peers,
                data_dir: dirs.path().join(format!("node-{id}")),
                secret,
                tls,
                // The cluster is formed by a member reached directly: the addresses its
                // membership records are the ones everybody uses.
                join: path(id) == Some(Path::Freezer),
            };
            let (app, config) = app(id);
            let builder = NodeBuilder::new(config)
                .listen(bind().await)
                .cluster(cluster);
            nodes.push(TestNode::running(app.start(builder).await));
        }
        let cluster = TestCluster {
            nodes,
            peers,
            _dirs: dirs,
            _holes: holes,
            freezers,
            outbound,
        };
        cluster.wait_for_leader().await;
        cluster
    }

    /// Cuts member `id` (started with [`Path::Freezer`]) off from the others, both ways:
    /// its peer connections freeze. Its client port stays reachable.
    pub fn cut_off(&self, id: u64) {
        self.freezers[&id].freeze();
        self.outbound[&id].iter().for_each(Freezer::freeze);
    }

    /// Undoes [`TestCluster::cut_off`].
    pub fn reconnect(&self, id: u64) {
        self.freezers[&id].thaw();
        self.outbound[&id].iter().for_each(Freezer::thaw);
    }

    /// Where node `id` keeps its registry.
    pub fn data_dir(&self, id: u64) -> std::path::PathBuf {
        self._dirs.path().join(format!("node-{id}"))
    }

    /// Wait until every node knows the same leader.
    async fn wait_for_leader(&self) {
        let until = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let leaders: Vec<_> = self
                .nodes
                .iter()
                .map(|n| n.node().registry().and_then(|r| r.leader()))
                .collect();
            if leaders[0].is_some() && leaders.iter().all(|l| *l == leaders[0]) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "no common leader: {leaders:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A session opened on node `owner` (an index) connects to `/` through node `other`:
    /// the request crosses from one to the other and back.
    pub async fn serves_across(&self, owner: usize, other: usize) {
        let sid = open_polling(&self.nodes[owner], "/socket.io/").await;
        let url = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
        let through = self.nodes[other].url(&url);
        let (from, to) = (owner + 1, other + 1);
        assert_eq!(
            post(&through, "40").await.body,
            "ok",
            "node {to} for node {from}"
        );
        let connected = get(&through).await.body;
        assert!(
            connected.starts_with("40"),
            "node {to} for node {from}: {connected}"
        );
    }

    pub async fn stop(self) {
        for node in self.nodes {
            node.stop().await;
        }
    }
}

/// A loopback address that drops every connection attempt, like a host that is down or
/// firewalled: a listener with a backlog of 0 whose one queued connection is never accepted,
/// so the kernel drops every further SYN and connects hang until their own timeout.
pub struct BlackHole {
    _listener: tokio::net::TcpListener,
    _filler: std::net::TcpStream,
    addr: SocketAddr,
}

impl BlackHole {
    pub async fn new() -> BlackHole {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        let listener = socket.listen(0).expect("listen");
        let addr = listener.local_addr().expect("addr");
        let filler = std::net::TcpStream::connect_timeout(&addr, WAIT).expect("fill the backlog");
        BlackHole {
            _listener: listener,
            _filler: filler,
            addr,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// A TCP proxy in front of a node's peer address that the test can freeze: while frozen it
/// moves no byte either way, like a peer that stopped (SIGSTOP, a stuck host), and the
/// connections stay open; thawed, it passes on what waited.
pub struct Freezer {
    addr: SocketAddr,
    frozen: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Freezer {
    pub async fn new(target: SocketAddr) -> Freezer {
        let listener = bind().await;
        let addr = listener.local_addr().expect("addr");
        let (frozen, watch) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = TcpStream::connect(target).await else {
                    continue;
                };
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                connections.spawn(pass(ri, wo, watch.clone()));
                connections.spawn(pass(ro, wi, watch.clone()));
            }
        });
        Freezer { addr, frozen, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    pub fn thaw(&self) {
        self.frozen.send_replace(false);
    }
}

impl Drop for Freezer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `from` to `to`, neither reading nor writing while frozen.
async fn pass(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if frozen.wait_for(|f| !*f).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if frozen.wait_for(|f| !*f).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A websocket-only Engine.IO client that speaks raw Socket.IO packets.
pub struct SioClient {
    pub ws: Ws,
    /// The Engine.IO session id from the open packet.
    pub session: String,
}

#[derive(Debug, PartialEq)]
pub enum Frame {
    Text(String),
    Binary(Vec<u8>),
}

impl SioClient {
    pub async fn open(node: &TestNode) -> SioClient {
        SioClient::open_at(node.addr(), "").await
    }

    /// Open a websocket session at `addr`, with `query` (e.g. `&tag=a`) added to the URL.
    pub async fn open_at(addr: SocketAddr, query: &str) -> SioClient {
        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket{query}");
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("websocket connect timed out")
            .expect("websocket connect failed");
        let mut client = SioClient {
            ws,
            session: String::new(),
        };
        let open = client.text().await;
        let open: serde_json::Value = open
            .strip_prefix('0')
            .and_then(|json| serde_json::from_str(json).ok())
            .unwrap_or_else(|| panic!("expected an open packet, got {open}"));
        client.session = open["sid"]
            .as_str()
            .expect("open packet has a sid")
            .to_owned();
        client
    }

    /// Open and join `/`, returning the socket id.
    pub async fn connected(node: &TestNode) -> (SioClient, String) {
        SioClient::connected_at(node.addr(), "").await
    }

    /// Open at `addr` with `query` and join `/`, returning the socket id.
    pub async fn connected_at(addr: SocketAddr, query: &str) -> (SioClient, String) {
        let (client, reply) = SioClient::joined_at(addr, query).await;
        let sid = reply["sid"].as_str().expect("sid is a string").to_owned();
        (client, sid)
    }

    /// Open at `addr` with `query` and join `/`, returning the CONNECT reply (`sid`, `pid`).
    pub async fn joined_at(addr: SocketAddr, query: &str) -> (SioClient, serde_json::Value) {
        let mut client = SioClient::open_at(addr, query).await;
        client.send("40").await;
        let reply = client.text().await;
        (client, connect_reply(&reply, "40"))
    }

    /// Send one Engine.IO message frame, e.g. `40` or `42["event"]`.
    pub async fn send(&mut self, packet: &str) {
        self.ws
            .send(Message::Text(packet.to_owned().into()))
            .await
            .expect("send");
    }

    pub async fn send_binary(&mut self, bytes: &[u8]) {
        self.ws
            .send(Message::Binary(bytes.to_vec().into()))
            .await
            .expect("send binary");
    }

    /// The next Socket.IO frame, answering pings on the way.
    pub async fn frame(&mut self) -> Frame {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("no frame in time")
                .expect("connection ended")
                .expect("websocket error");
            match msg {
                Message::Text(text) if text.as_str() == "2" => {
                    self.ws.send(Message::Text("3".into())).await.expect("pong");
                }
                Message::Text(text) => {
                    return Frame::Text(text.as_str().to_owned());
                }
                Message::Binary(bytes) => return Frame::Binary(bytes.to_vec()),
                Message::Close(_) => panic!("connection closed while waiting for a frame"),
                _ => {}
            }
        }
    }

    pub async fn text(&mut self) -> String {
        match self.frame().await {
            Frame::Text(text) => text,
            other => panic!("expected text, got {other:?}"),
        }
    }

    /// Wait until the server closes the connection; true if it did within the bound.
    pub async fn closed(&mut self) -> bool {
        let until = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(until, self.ws.next()).await {
                Err(_) => return false,
                Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return true,
                Ok(Some(Ok(_))) => {}
            }
        }
    }
}

/// Parse the JSON of a CONNECT reply `prefix{...}`.
pub fn connect_reply(packet: &str, prefix: &str) -> serde_json::Value {
    let body = packet
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("expected {prefix}…, got {packet}"));
    serde_json::from_str(body).expect("connect reply is JSON")
}

/// Bytes in the files below `path`.
pub fn dir_size(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// The executable of the package's example `name`, built (or found up to date) by cargo.
/// `cargo test` builds the examples already; a run of the integration tests alone
/// (`cargo test --test it`) builds it here.
pub async fn example(name: &str) -> std::path::PathBuf {
    let output = tokio::process::Command::new(env!("CARGO"))
        .args([
            "build",
            "--locked",
            "--message-format",
            "json",
            "--example",
            name,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .kill_on_drop(true)
        .output()
        .await
        .expect("run cargo");
    assert!(
        output.status.success(),
        "cargo build --example {name} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|message| {
            message["reason"] == "compiler-artifact" && message["target"]["name"] == name
        })
        .and_then(|message| message["executable"].as_str().map(Into::into))
        .unwrap_or_else(|| panic!("cargo named no executable for example {name}"))
}

/// A script of `tests/clients` run by Node that talks in lines: it prints what it has to say
/// on stdout, one line each, and reads its cues from stdin. Killed when dropped.
pub struct Script {
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    stdin: tokio::process::ChildStdin,
}

impl Script {
    /// Starts `tests/clients/<name>` with `args` (Node from `NONSTICK_NODE`, else `node`).
    pub fn start(name: &str, args: &[&str]) -> Script {
        use tokio::io::AsyncBufReadExt;
        let clients = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
        assert!(
            clients.join("node_modules").exists(),
            "run `scripts/test --deps-only` first"
        );
        let node = std::env::var("NONSTICK_NODE").unwrap_or_else(|_| "node".to_owned());
        let mut child = tokio::process::Command::new(node)
            .arg(clients.join(name))
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let stdin = child.stdin.take().expect("stdin");
        Script {
            child,
            lines: tokio::io::BufReader::new(stdout).lines(),
            stdin,
        }
    }

    /// The next line it prints, within `limit`.
    pub async fn line(&mut self, limit: Duration) -> String {
        tokio::time::timeout(limit, self.lines.next_line())
            .await
            .expect("a line in time")
            .expect("read")
            .expect("a line, not the end of its output")
    }

    /// Writes `line` to its stdin.
    pub async fn send(&mut self, line: &str) {
        use tokio::io::AsyncWriteExt;
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write to the script");
    }

    /// Its next line, `report <JSON>`, parsed; then waits for it to end.
    pub async fn report<T: serde::de::DeserializeOwned>(&mut self, limit: Duration) -> T {
        let line = self.line(limit).await;
        let _ = self.child.wait().await;
        let json = line
            .strip_prefix("report ")
            .unwrap_or_else(|| panic!("not a report: {line}"));
        serde_json::from_str(json).unwrap_or_else(|e| panic!("report {json}: {e}"))
    }
}

/// Three `nonstick` node processes of the demo app, behind the embedded balancer in `mode`
/// (none: the test reaches the nodes itself). Their logs are shown when `NODE_LOGS` is set.
pub async fn demo_processes(
    mode: Option<nonstick::balancer::Mode>,
) -> nonstick::launch::RunningCluster {
    demo_processes_with(mode, &[]).await
}

/// [`demo_processes`], with more arguments for every node (`--ping-interval 5000`, …).
pub async fn demo_processes_with(
    mode: Option<nonstick::balancer::Mode>,
    node_args: &[&str],
) -> nonstick::launch::RunningCluster {
    let plan = nonstick::launch::LocalCluster {
        nodes: 3,
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: None,
        mode,
        program: nonstick::launch::Program::BuiltIn {
            exe: env!("CARGO_BIN_EXE_nonstick").into(),
            app: AppKind::Demo,
        },
        settings: None,
        node_args: node_args.iter().map(Into::into).collect(),
        quiet: std::env::var_os("NODE_LOGS").is_none(),
    };
    nonstick::launch::start(plan).await.expect("cluster")
}

/// A `nonstick cluster` process, as the README starts it, its output read line by line:
/// stdout (the launcher's and its nodes' lines) and stderr (their logs) together. Killed when
/// dropped, and so are the node processes it had started when last asked
/// ([`Launcher::node_pids`]), should a test have failed because they outlived it.
pub struct Launcher {
    pub child: tokio::process::Child,
    pids: Vec<i32>,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    /// Every line read so far.
    pub seen: Vec<String>,
    /// The nodes' HTTP addresses, as they printed them so far.
    pub nodes: Vec<SocketAddr>,
}

impl Launcher {
    /// Starts `nonstick cluster --listen 127.0.0.1:0` with `args` and `env`, its logs at their
    /// default level.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Launcher {
        Launcher::start_logging(args, env, None)
    }

    /// [`Launcher::start`], with logs filtered by `rust_log` (as `RUST_LOG`).
    pub fn start_logging(args: &[&str], env: &[(&str, &str)], rust_log: Option<&str>) -> Launcher {
        use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_nonstick"));
        match rust_log {
            Some(filter) => command.env("RUST_LOG", filter),
            None => command.env_remove("RUST_LOG"),
        };
        let mut child = command
            .args(["cluster", "--listen", "127.0.0.1:0"])
            .args(args)
            .envs(env.iter().copied())
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start nonstick cluster");
        let (send, lines) = tokio::sync::mpsc::unbounded_channel();
        fn pump(
            from: impl AsyncRead + Unpin + Send + 'static,
            to: tokio::sync::mpsc::UnboundedSender<String>,
        ) {
            tokio::spawn(async move {
                let mut lines = BufReader::new(from).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if to.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        pump(child.stdout.take().expect("stdout"), send.clone());
        pump(child.stderr.take().expect("stderr"), send);
        Launcher {
            child,
            pids: Vec::new(),
            lines,
            seen: Vec::new(),
            nodes: Vec::new(),
        }
    }

    /// The process ids of its children (its nodes), from /proc; remembered for the drop.
    pub fn node_pids(&mut self) -> Vec<i32> {
        let Some(launcher) = self.child.id() else {
            return Vec::new();
        };
        let entries = std::fs::read_dir("/proc").expect("/proc");
        let children: Vec<i32> = entries
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                // The parent is the field after the name, which is in parentheses.
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|stat| {
                        let rest = stat.rsplit_once(')')?.1.to_owned();
                        rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                    })
                    == Some(launcher)
            })
            .collect();
        self.pids.extend(&children);
        children
    }

    /// Reads lines until one contains `text` (within 60 s: nodes of a debug build start
    /// slowly on a busy machine); returns it.
    pub async fn until(&mut self, text: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.recv())
                .await
                .unwrap_or_else(|_| panic!("no line with {text:?} in time; saw {:#?}", self.seen))
                .unwrap_or_else(|| panic!("output ended before {text:?}; saw {:#?}", self.seen));
            if let Some(addr) = line
                .split_once(" listening on ")
                .filter(|(head, _)| head.starts_with("node "))
                .and_then(|(_, addr)| addr.trim().parse().ok())
            {
                self.nodes.push(addr);
            }
            self.seen.push(line.clone());
            if line.contains(text) {
                return line;
            }
        }
    }

    /// Waits for the cluster to be up; returns the balancer's address.
    pub async fn ready(&mut self) -> SocketAddr {
        let line = self.until("cluster of").await;
        self.node_pids();
        line.split_once(" behind ")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
    }

    /// Sends `signal` to the launcher alone (not to its nodes).
    pub fn signal(&self, signal: i32) {
        let pid = self.child.id().expect("running") as i32;
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        unsafe {
            libc::kill(pid, signal);
        }
    }

    /// Waits (at most 30 s) for the launcher to exit, reading the rest of the output; returns
    /// the lines that came after the ones already seen.
    pub async fn exit(&mut self) -> Vec<String> {
        let before = self.seen.len();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while let Ok(Some(line)) = tokio::time::timeout_at(deadline, self.lines.recv()).await {
            self.seen.push(line);
        }
        tokio::time::timeout_at(deadline, self.child.wait())
            .await
            .expect("the launcher exits")
            .expect("wait");
        self.seen[before..].to_vec()
    }
}

/// Whether something accepts connections at `addr`, asked for at most 20 s: `false` once
/// nothing does.
pub async fn stops_listening(addr: SocketAddr) -> bool {
    for _ in 0..200 {
        if TcpStream::connect(addr).await.is_err() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

impl Drop for Launcher {
    fn drop(&mut self) {
        for pid in &self.pids {
            // Still a node of ours, not a process that reused the pid.
            let ours = std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                String::from_utf8_lossy(&cmdline).contains("nonstick-cluster-")
            });
            if ours {
                // SAFETY: kill(2) has no memory effects.
                unsafe {
                    libc::kill(*pid, libc::SIGKILL);
                }
            }
        }
    }
}
