//! Engine.IO over HTTP long-polling against a running node (raw echo at `/engine.io/`).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use nonstick::app::{AppKind, BuiltIn};

use crate::fixture::{
    TestNode, WAIT, get, open_polling, post, request, request_with_headers, request_with_type,
};

const EIO: &str = "/engine.io/";

fn session_url(node: &TestNode, sid: &str) -> String {
    node.url(&format!("{EIO}?EIO=4&transport=polling&sid={sid}"))
}

#[tokio::test]
async fn handshake_fields() {
    let node = TestNode::start(AppKind::ProtocolSuite).await;
    let reply = get(&node.url(&format!("{EIO}?EIO=4&transport=polling&t=x1"))).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; charset=UTF-8")
    );
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let json: serde_json::Value = serde_json::from_str(&reply.body[1..]).unwrap();
    assert!(reply.body.starts_with('0'));
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(
        keys,
        [
            "sid",
            "upgrades",
            "pingInterval",
            "pingTimeout",
            "maxPayload"
        ]
    );
    assert_eq!(json["upgrades"], serde_json::json!(["websocket"]));
    assert_eq!(json["pingInterval"], 300);
    assert_eq!(json["pingTimeout"], 200);
    assert_eq!(json["maxPayload"], 1_000_000);
    assert!(json["sid"].as_str().unwrap().len() >= 20);
    node.stop().await;
}

#[tokio::test]
async fn handshake_errors() {
    let node = TestNode::start(AppKind::ProtocolSuite).await;
    let cases = [
        ("GET", format!("{EIO}?transport=polling"), 400, Some(5)),
        (
            "GET",
            format!("{EIO}?EIO=abc&transport=polling"),
            400,
            Some(5),
        ),
        (
            "GET",
            format!("{EIO}?EIO=3&transport=polling"),
            400,
            Some(5),
        ),
        ("GET", format!("{EIO}?EIO=4"), 400, Some(0)),
        ("GET", format!("{EIO}?EIO=4&transport=abc"), 400, Some(0)),
        (
            "GET",
            format!("{EIO}?EIO=4&transport=websocket"),
            400,
            Some(3),
        ),
        (
            "POST",
            format!("{EIO}?EIO=4&transport=polling"),
            400,
            Some(2),
        ),
        (
            "PUT",
            format!("{EIO}?EIO=4&transport=polling"),
            400,
            Some(2),
        ),
        (
            "GET",
            format!("{EIO}?EIO=4&transport=polling&sid=nope"),
            400,
            Some(1),
        ),
    ];
    for (method, path, status, code) in cases {
        let reply = request(method, &node.url(&path), "").await;
        assert_eq!(reply.status, status, "{method} {path}");
        assert_eq!(reply.header("content-type"), Some("application/json"));
        let json: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(
            json["code"].as_u64(),
            code.map(|c: u64| c),
            "{method} {path}"
        );
        assert!(json["message"].is_string());
    }
    node.stop().await;
}

#[tokio::test]
async fn healthz() {
    let mut config = BuiltIn::base_config();
    let kind = AppKind::ProtocolSuite;
    config.node_id = "n1".into();
    let node = TestNode::start_with(kind, config).await;
    let reply = get(&node.url("/healthz")).await;
    assert_eq!(reply.status, 200);
    let json: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(json, serde_json::json!({"ok": true, "node": "n1"}));
    node.stop().await;
}

#[tokio::test]
async fn metrics_count_sessions_messages_and_closes() {
    let node = TestNode::start(AppKind::ProtocolSuite).await;
    let sid = open_polling(&node, EIO).await;
    let url = session_url(&node, &sid);
    assert_eq!(post(&url, "4a\x1e4b").await.body, "ok");
    let metrics = get(&node.url("/metrics")).await;
    assert_eq!(metrics.status, 200);
    for line in [
        r#"nonstick_sessions{path="/engine.io/",transport="polling"} 1"#,
        r#"nonstick_sessions_opened_total{path="/engine.io/"} 1"#,
        r#"nonstick_messages_received_total{path="/engine.io/"} 2"#,
        r#"nonstick_messages_sent_total{path="/engine.io/"} 2"#,
        r#"nonstick_sessions{path="/socket.io/",transport="polling"} 0"#,
    ] {
        assert!(
            metrics.body.lines().any(|l| l == line),
            "{line} in:\n{}",
            metrics.body
        );
    }
    assert_eq!(post(&url, "1").await.body, "ok");
    let metrics = get(&node.url("/metrics")).await;
    let closed = r#"nonstick_sessions_closed_total{path="/engine.io/",reason="transport_close"} 1"#;
    assert!(
        metrics.body.lines().any(|l| l == closed),
        "{}",
        metrics.body
    );
    node.stop().await;
}

#[tokio::test]
async fn echo_text_and_binary() {
    let node = TestNode::start(AppKind::ProtocolSuite).await;
    let sid = open_polling(&node, EIO).await;
    let url = session_url(&node, &sid);
    let reply = post(&url, "4hello\x1ebAQIDBA==").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "ok"));
    assert_eq!(get(&url).await.body, "4hello\x1ebAQIDBA==");
    node.stop().await;
}

#[tokio::test]
async fn batched_post_comes_back_in_one_get() {
    let node = TestNode::start(AppKind::ProtocolSuite).await;
    let sid = open_polling(&node, EIO).await;
    let url = session_url(&node, &sid);
    assert_eq!(post(&url, "4test1\x1e4test2\x1e4test3").await.status, 200);
    assert_eq!(get(&url).await.body, "4test1\x1e4test2\x1e4test3");
    node.stop().await;
}

/// A GET or POST with the `X-Nonstick-Request-Id` of the one before is that request sent again by a
/// balancer whose first attempt got no answer: the GET gets the answer the first attempt may have
/// lost, the POST is not applied twice. A new id is a new request.
#[tokio::test]
async fn a_request_sent_again_with_its_id_loses_no_answer_and_applies_once() {
    let node = TestNode::start(AppKind::ProtocolSuite).await;
    let sid = open_polling(&node, EIO).await;
    let url = session_url(&node, &sid);
    let with_id = async |method: &str, id: &str, body: &str| {
        let headers = [
            ("content-type", "text/plain;charset=UTF-8"),
            ("x-nonstick-request-id", id),
        ];
        request_with_headers(method, &url, &headers, body).await
    };
    assert_eq!(with_id("POST", "p1", "4one").await.body, "ok");
    assert_eq!(with_id("POST", "p1", "4one").await.body, "ok");
    assert_eq!(with_id("GET", "g1", "").await.body, "4one");
    assert_eq!(
        with_id("GET", "g1", "").await.body,
        "4one",
        "the answer to a GET sent again"
    );
    assert_eq!(with_id("POST", "p2", "4two").await.body, "ok");
    assert_eq!(
        with_id("GET", "g2", "").await.body,
        "4two",
        "a new GET gets only what is new"
    );
    node.stop().await;
}

#[tokio::test]
async fn duplicate_get_closes_the_session() {
    let node = TestNode::start(AppKind::ProtocolSuite).await;
    let sid = open_polling(&node, EIO).await;
    let url = session_url(&node, &sid);
    let first = tokio::spawn({
        let url = url.clone();
        async move { get(&url).await }
    });
    // Give the first GET time to reach the server and park.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = get(&url).await;
    assert_eq!(second.status, 400);
    let first = first.await.unwrap();
    assert_eq!((first.status, first.body.as_str()), (200, "1"));
    assert_eq!(get(&url).await.status, 400);
    node.stop().await;
}

#[tokio::test]
async fn aborted_get_closes_the_session() {
    let node = TestNode::start(AppKind::ProtocolSuite).await;
    let sid = open_polling(&node, EIO).await;
    let mut raw = tokio::net::TcpStream::connect(node.addr()).await.unwrap();
    let request = format!(
        "GET {EIO}?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: {}\r\n\r\n",
        node.addr()
    );
    raw.write_all(request.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(raw);
    // The close is noticed asynchronously; poll for it, bounded.
    let mut status = 0;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if node.node().engines()[0].session_count() == 0 {
            status = get(&session_url(&node, &sid)).await.status;
            break;
        }
    }
    assert_eq!(status, 400);
    node.stop().await;
}

#[tokio::test]
async fn invalid_packet_processes_earlier_packets_then_closes() {
    let node = TestNode::start(AppKind::ProtocolSuite).await;
    let sid = open_polling(&node, EIO).await;
    let url = session_url(&node, &sid);
    let reply = post(&url, "4before\x1eabc\x1e4after").await;
    assert_eq!(reply.status, 400);
    let json: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(json["code"], 3);
    assert_eq!(get(&url).await.status, 400);
    node.stop().await;
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let mut config = BuiltIn::base_config();
    let kind = AppKind::ProtocolSuite;
    config.engine.max_payload = 100;
    let node = TestNode::start_with(kind, config).await;
    let sid = open_polling(&node, EIO).await;
    let url = session_url(&node, &sid);
    let big = format!("4{}", "x".repeat(200));
    assert_eq!(post(&url, &big).await.status, 413);
    // The session survives a 413, as in the reference server.
    assert_eq!(post(&url, "4small").await.status, 200);
    assert_eq!(get(&url).await.body, "4small");
    node.stop().await;
}

#[tokio::test]
async fn ping_pong_then_timeout() {
    let node = TestNode::start(AppKind::ProtocolSuite).await;
    let sid = open_polling(&node, EIO).await;
    let url = session_url(&node, &sid);
    for _ in 0..2 {
        assert_eq!(get(&url).await.body, "2");
        assert_eq!(post(&url, "3").await.status, 200);
    }
    assert_eq!(get(&url).await.body, "2");
    // No pong: pingTimeout (200 ms) later the session is gone.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(get(&url).await.status, 400);
    node.stop().await;
}

#[tokio::test]
async fn client_close_releases_parked_get_with_noop() {
    let node = TestNode::start(AppKind::ProtocolSuite).await;
    let sid = open_polling(&node, EIO).await;
    let url = session_url(&node, &sid);
    let parked = tokio::spawn({
        let url = url.clone();
        async move { get(&url).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(post(&url, "1").await.status, 200);
    let parked = parked.await.unwrap();
    assert_eq!((parked.status, parked.body.as_str()), (200, "6"));
    assert_eq!(get(&url).await.status, 400);
    node.stop().await;
}

#[tokio::test]
async fn shutdown_answers_parked_get_with_close() {
    let node = TestNode::start(AppKind::ProtocolSuite).await;
    let sid = open_polling(&node, EIO).await;
    let url = session_url(&node, &sid);
    let parked = tokio::spawn(async move { get(&url).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    node.stop().await;
    let parked = parked.await.unwrap();
    assert_eq!((parked.status, parked.body.as_str()), (200, "1"));
}

#[tokio::test]
async fn cookie_and_cors() {
    let mut config = BuiltIn::base_config();
    let kind = AppKind::ProtocolSuite;
    config.cookie = Some(nonstick::config::Cookie::default());
    let node = TestNode::start_with(kind, config).await;
    let reply = get(&node.url(&format!("{EIO}?EIO=4&transport=polling"))).await;
    let sid = serde_json::from_str::<serde_json::Value>(&reply.body[1..]).unwrap()["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        reply.header("set-cookie"),
        Some(format!("io={sid}; Path=/; HttpOnly; SameSite=Lax").as_str())
    );
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    let preflight = request("OPTIONS", &node.url(EIO), "").await;
    assert_eq!(preflight.status, 204);
    assert_eq!(
        preflight.header("access-control-allow-methods"),
        Some("GET,HEAD,PUT,PATCH,POST,DELETE")
    );
    node.stop().await;
}

#[tokio::test]
async fn queued_bytes_over_the_limit_close_the_session() {
    let mut config = BuiltIn::base_config();
    let kind = AppKind::ProtocolSuite;
    config.engine.max_buffered_bytes = 1000;
    let node = TestNode::start_with(kind, config).await;
    let sid = open_polling(&node, EIO).await;
    let url = session_url(&node, &sid);
    // Two echoes of 401 bytes fit.
    let small = format!("4{}", "s".repeat(400));
    assert_eq!(post(&url, &format!("{small}\x1e{small}")).await.status, 200);
    assert_eq!(get(&url).await.body, format!("{small}\x1e{small}"));
    // Two echoes of 601 bytes, never fetched, are over 1000 bytes: far below the
    // message count bound, the byte bound closes the session.
    let big = format!("4{}", "b".repeat(600));
    post(&url, &format!("{big}\x1e{big}")).await;
    assert_eq!(get(&url).await.status, 400);
    let metrics = get(&node.url("/metrics")).await.body;
    let closed = r#"nonstick_sessions_closed_total{path="/engine.io/",reason="queue_overflow"} 1"#;
    assert!(metrics.lines().any(|l| l == closed), "{metrics}");
    node.stop().await;
}

#[tokio::test]
async fn unsolicited_pongs_do_not_postpone_pings() {
    let node = TestNode::start(AppKind::ProtocolSuite).await;
    let sid = open_polling(&node, EIO).await;
    let url = session_url(&node, &sid);
    let mut parked = tokio::spawn({
        let url = url.clone();
        async move { get(&url).await }
    });
    // Pongs every 100 ms, before any ping was sent (pingInterval is 300 ms): the ping
    // must come anyway, and the parked GET must return it.
    let mut reply = None;
    for _ in 0..50 {
        assert_eq!(post(&url, "3").await.status, 200);
        if let Ok(done) = tokio::time::timeout(Duration::from_millis(100), &mut parked).await {
            reply = Some(done.unwrap());
            break;
        }
    }
    let reply = reply.expect("a ping despite unsolicited pongs");
    assert_eq!((reply.status, reply.body.as_str()), (200, "2"));
    node.stop().await;
}

#[tokio::test]
async fn binary_content_type_post_is_refused_and_closes() {
    let node = TestNode::start(AppKind::ProtocolSuite).await;
    let sid = open_polling(&node, EIO).await;
    let url = session_url(&node, &sid);
    let reply = request_with_type("POST", &url, "application/octet-stream", "4hello").await;
    assert_eq!(reply.status, 400);
    let json: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(json["code"], 3);
    assert_eq!(get(&url).await.status, 400);
    node.stop().await;
}

#[tokio::test]
async fn post_for_unknown_sid_is_refused_before_its_body() {
    let node = TestNode::start(AppKind::ProtocolSuite).await;
    let mut raw = tokio::net::TcpStream::connect(node.addr()).await.unwrap();
    // Headers announce a body that never comes: the refusal must not wait for it.
    let request = format!(
        "POST {EIO}?EIO=4&transport=polling&sid=nope HTTP/1.1\r\nHost: {}\r\n\
         Content-Type: text/plain\r\nContent-Length: 100000\r\n\r\n",
        node.addr()
    );
    raw.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, raw.read(&mut buf))
            .await
            .expect("an answer without the body")
            .unwrap();
        assert!(n > 0, "connection closed without an answer");
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    node.stop().await;
}
