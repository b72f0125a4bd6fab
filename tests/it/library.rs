//! The library API the way a program uses it: its own Socket.IO servers inside its own axum app
//! (routes with state, a fallback, middleware over everything), on one node and on cluster
//! nodes that forward through that app; and `examples/cluster.rs` run as three processes
//! behind the embedded round-robin balancer, driven by socket.io-client.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::routing::get;
use nonstick::app::BuiltIn;
use nonstick::balancer::Mode;
use nonstick::config::Config;
use nonstick::launch::{self, LocalCluster, Program};
use nonstick::node::{Mount, Node, NodeBuilder};
use nonstick::socketio::{Event, Socket, SocketIo, SocketIoConfig};
use serde_json::json;

use crate::fixture::{
    App, Script, TestCluster, TestNode, example, get as http_get, post, request_with_headers,
};

/// A Socket.IO server whose `/` namespace acks `hello` with the name of the node that ran the
/// handler, and whose connections get `welcome` with `greeting`.
fn hello_io(node: &str, greeting: &str) -> SocketIo {
    let io = SocketIo::new(SocketIoConfig::default());
    let (node, greeting) = (node.to_owned(), greeting.to_owned());
    io.of("/").on_connect(move |socket: Socket| {
        let node = node.clone();
        let _ = socket.emit("welcome", greeting.as_str());
        async move {
            socket.on("hello", move |_socket, event: Event| {
                let node = node.clone();
                async move {
                    if let Some(ack) = event.ack {
                        ack.send(json!({ "node": node }));
                    }
                }
            });
        }
    });
    io
}

/// A program's own axum app around the node's router: a route with its own state, its own
/// fallback, and a middleware over everything that counts requests and stamps responses.
fn own_app(node: &Node, hits: Arc<AtomicUsize>) -> Router {
    Router::new()
        .route(
            "/api/hello",
            get(|State(name): State<String>| async move { format!("hello from {name}") }),
        )
        .with_state(node.config().node_id.clone())
        .merge(node.router())
        .fallback(|| async { (StatusCode::NOT_FOUND, "the app's own fallback") })
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            let hits = hits.clone();
            async move {
                hits.fetch_add(1, Ordering::Relaxed);
                let mut response = next.run(request).await;
                response
                    .headers_mut()
                    .insert("x-app", HeaderValue::from_static("own"));
                response
            }
        }))
}

/// The packets of a polling payload.
fn packets(body: &str) -> Vec<&str> {
    body.split('\u{1e}').collect()
}

fn sid_of(open: &str) -> String {
    let json: serde_json::Value =
        serde_json::from_str(open.strip_prefix('0').expect("open packet")).expect("json");
    json["sid"].as_str().expect("sid").to_owned()
}

#[tokio::test]
async fn a_program_serves_its_mounts_inside_its_own_axum_app() {
    let hits = Arc::new(AtomicUsize::new(0));
    let config = Config {
        node_id: "solo".to_owned(),
        cors_origins: Some(vec!["https://allowed.example".to_owned()]),
        health_path: Some("/ops/health".to_owned()),
        metrics_path: None,
        ..Config::default()
    };
    let counted = hits.clone();
    let app = App::own(
        |builder| {
            builder
                .mount(Mount::socketio("/socket.io/", hello_io("solo", "main")))
                // Without its trailing slash: the mount adds it.
                .mount(Mount::socketio("/chat", hello_io("solo", "chat")))
        },
        move |node| own_app(node, counted.clone()),
    );
    let node = TestNode::start_app(&app, config).await;
    let origin = [("origin", "https://allowed.example")];

    // The program's route: its state, its middleware, and none of nonstick's CORS headers.
    let hello = request_with_headers("GET", &node.url("/api/hello"), &origin, "").await;
    assert_eq!(
        (hello.status, hello.body.as_str()),
        (200, "hello from solo")
    );
    assert_eq!(hello.header("x-app"), Some("own"));
    assert_eq!(hello.header("access-control-allow-origin"), None);

    // The Engine.IO endpoint: nonstick's CORS inside, the program's middleware around it.
    let url = node.url("/socket.io/?EIO=4&transport=polling");
    let open = request_with_headers("GET", &url, &origin, "").await;
    assert_eq!(open.status, 200, "{open:?}");
    assert_eq!(
        open.header("access-control-allow-origin"),
        Some("https://allowed.example")
    );
    assert_eq!(open.header("x-app"), Some("own"));

    // The second mount is its own Socket.IO server.
    let chat = |query: &str| node.url(&format!("/chat/?EIO=4&transport=polling{query}"));
    let sid = sid_of(&http_get(&chat("")).await.body);
    assert_eq!(post(&chat(&format!("&sid={sid}")), "40").await.body, "ok");
    let reply = http_get(&chat(&format!("&sid={sid}"))).await;
    let got = packets(&reply.body);
    assert!(got[0].starts_with("40{"), "{got:?}");
    assert_eq!(got.get(1), Some(&r#"42["welcome","chat"]"#), "{got:?}");

    // Health where configured, no counters; every other path is the program's.
    assert_eq!(http_get(&node.url("/ops/health")).await.status, 200);
    for path in ["/healthz", "/metrics", "/socket.io/x", "/nowhere"] {
        let reply = http_get(&node.url(path)).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (404, "the app's own fallback"),
            "{path}"
        );
    }
    assert!(hits.load(Ordering::Relaxed) >= 10);
    node.stop().await;
}

#[tokio::test]
async fn cluster_nodes_forward_through_the_programs_own_app() {
    let hits: Vec<Arc<AtomicUsize>> = (0..3).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let counters = hits.clone();
    let cluster = TestCluster::start_with(3, &[], move |id| {
        let counted = counters[(id - 1) as usize].clone();
        let app = App::own(
            |builder: NodeBuilder| {
                let node = builder.config().node_id.clone();
                builder
                    .socketio(hello_io(&node, "main"))
                    .mount(Mount::socketio("/chat/", hello_io(&node, "chat")))
            },
            move |node| own_app(node, counted.clone()),
        );
        (app, BuiltIn::base_config())
    })
    .await;
    let [a, b, c] = [&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]];
    let url = |node: &TestNode, sid: &str| {
        node.url(&format!("/socket.io/?EIO=4&transport=polling&sid={sid}"))
    };

    // Opened on node 1, then every request through another node's app.
    let sid = sid_of(
        &http_get(&a.url("/socket.io/?EIO=4&transport=polling"))
            .await
            .body,
    );
    assert!(sid.starts_with("1."), "{sid}");
    let before = hits[1].load(Ordering::Relaxed);
    assert_eq!(post(&url(b, &sid), "40").await.body, "ok");
    let connected = http_get(&url(c, &sid)).await;
    assert_eq!(connected.header("x-app"), Some("own"));
    let got = packets(&connected.body);
    assert!(got[0].starts_with("40{"), "{got:?}");
    assert_eq!(got.get(1), Some(&r#"42["welcome","main"]"#), "{got:?}");
    assert_eq!(post(&url(b, &sid), r#"421["hello"]"#).await.body, "ok");
    // The handler ran on the owner, node 1.
    assert_eq!(http_get(&url(c, &sid)).await.body, r#"431[{"node":"1"}]"#);
    assert!(hits[1].load(Ordering::Relaxed) >= before + 2);

    // The second mount's sessions are forwarded to their owner's server at that mount.
    let chat =
        |node: &TestNode, sid: &str| node.url(&format!("/chat/?EIO=4&transport=polling&sid={sid}"));
    let sid = sid_of(
        &http_get(&b.url("/chat/?EIO=4&transport=polling"))
            .await
            .body,
    );
    assert!(sid.starts_with("2."), "{sid}");
    assert_eq!(post(&chat(c, &sid), "40").await.body, "ok");
    let got = http_get(&chat(a, &sid)).await.body;
    assert_eq!(
        packets(&got).get(1),
        Some(&r#"42["welcome","chat"]"#),
        "{got}"
    );
    assert_eq!(post(&chat(a, &sid), r#"427["hello"]"#).await.body, "ok");
    assert_eq!(http_get(&chat(c, &sid)).await.body, r#"437[{"node":"2"}]"#);

    // The program's own route answers on every node.
    for (i, node) in cluster.nodes.iter().enumerate() {
        let reply = http_get(&node.url("/api/hello")).await;
        assert_eq!(
            (reply.status, reply.body),
            (200, format!("hello from {}", i + 1))
        );
        assert_eq!(http_get(&node.url("/healthz")).await.status, 200);
    }
    cluster.stop().await;
}

/// What `tests/clients/presence.mjs` reports.
#[derive(Debug, serde::Deserialize)]
struct PresenceReport {
    unnamed: serde_json::Value,
    clients: Vec<PresenceClient>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct PresenceClient {
    name: String,
    mode: String,
    transport: Option<String>,
    upgraded: bool,
    node: String,
    members: Vec<String>,
    heard: Vec<serde_json::Value>,
    disconnects: u32,
    connect_errors: u32,
}

/// The sorted names `c0 … c<n-1>`, sorted as the app sorts them (as strings).
fn names(n: usize) -> Vec<String> {
    let mut names: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
    names.sort();
    names
}

/// A reply of the example's `GET /rooms/{room}`.
async fn room(url: &str) -> serde_json::Value {
    let reply = http_get(url).await;
    assert_eq!(reply.status, 200, "{url}: {reply:?}");
    serde_json::from_str(&reply.body).expect("JSON")
}

#[tokio::test]
async fn the_cluster_example_runs_as_three_nodes_behind_round_robin() {
    let running = launch::start(LocalCluster {
        nodes: 3,
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: None,
        mode: Some(Mode::RoundRobin),
        program: Program::Own(example("cluster").await),
        settings: None,
        node_args: Vec::new(),
        quiet: true,
    })
    .await
    .expect("three example nodes");
    let front = format!("http://{}", running.addr().expect("a balancer"));

    let mut script = Script::start("presence.mjs", &["--url", &front, "--nodes", "3"]);
    let ready = script.line(Duration::from_secs(60)).await;
    let count: usize = ready
        .strip_prefix("ready ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not ready: {ready}"));

    // Every node's REST route, and the balancer's, lists everyone in the room, wherever they
    // are connected.
    for (i, node) in running.nodes().iter().enumerate() {
        let reply = room(&format!("http://{node}/rooms/lobby")).await;
        assert_eq!(reply["node"], (i + 1).to_string());
        assert_eq!(reply["members"], json!(names(count)), "node {}", i + 1);
    }
    assert_eq!(
        room(&format!("{front}/rooms/lobby")).await["members"],
        json!(names(count))
    );
    assert_eq!(
        room(&format!("{front}/rooms/empty")).await["members"],
        json!([])
    );

    script.send("go").await;
    let report: PresenceReport = script.report(Duration::from_secs(60)).await;

    assert_eq!(
        report.unnamed,
        json!({ "refused": true, "message": "a name is required" })
    );
    let clients = &report.clients;
    assert_eq!(clients.len(), count);
    let owners: std::collections::BTreeSet<&str> =
        clients.iter().map(|c| c.node.as_str()).collect();
    assert_eq!(owners, ["1", "2", "3"].into(), "{clients:?}");
    for (i, client) in clients.iter().enumerate() {
        // Its enter ack listed everyone who had entered before it, on every node.
        assert_eq!(client.members, names(i + 1), "{client:?}");
        let expected = if client.mode == "polling" {
            "polling"
        } else {
            assert!(client.upgraded, "{client:?}");
            "websocket"
        };
        assert_eq!(client.transport.as_deref(), Some(expected), "{client:?}");
        assert_eq!(
            (client.disconnects, client.connect_errors),
            (0, 0),
            "{client:?}"
        );
        // Every line said in the room, exactly once, from every client, whichever node it
        // was said on.
        let mut heard: Vec<String> = client
            .heard
            .iter()
            .map(|said| said["name"].as_str().unwrap_or_default().to_owned())
            .collect();
        heard.sort();
        assert_eq!(heard, names(count), "{client:?}");
        for said in &client.heard {
            let name = said["name"].as_str().unwrap_or_default();
            let speaker = clients.iter().find(|c| c.name == name).expect("a client");
            assert_eq!(said["text"], format!("hello from {name}"));
            assert_eq!(said["node"], speaker.node.as_str(), "said on its owner");
        }
    }
    // Not one request was answered "Session ID unknown".
    for node in running.nodes() {
        let metrics = http_get(&format!("http://{node}/metrics")).await.body;
        let unknown: u64 = metrics
            .lines()
            .filter(|l| l.starts_with("nonstick_unknown_sid_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        assert_eq!(unknown, 0, "node {node}:\n{metrics}");
    }
    running.shutdown().await.expect("shutdown");
}

#[test]
fn the_readme_shows_the_cluster_example_whole() {
    let example = include_str!("../../examples/cluster.rs");
    let code = example
        .lines()
        .skip_while(|line| line.starts_with("//!") || line.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        include_str!("../../README.md").contains(&code),
        "README's \"Run your own app as a cluster\" must show examples/cluster.rs as it is"
    );
}
