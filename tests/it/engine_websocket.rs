//! Engine.IO over WebSocket against a running node: websocket-only sessions and the
//! polling -> websocket upgrade.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use nonstick::app::{AppKind, BuiltIn};

use crate::fixture::{
    TestNode, WAIT, Ws, get, open_polling, post, ws_closed, ws_connect, ws_next, ws_send, ws_text,
};

const EIO: &str = "/engine.io/";

#[tokio::test]
async fn websocket_only_session() {
    let node = TestNode::start(AppKind::ProtocolSuite).await;
    let mut ws = ws_connect(&node.ws_url(&format!("{EIO}?EIO=4&transport=websocket")))
        .await
        .unwrap();
    let open = ws_text(&mut ws).await;
    let json: serde_json::Value = serde_json::from_str(open.strip_prefix('0').unwrap()).unwrap();
    assert_eq!(json["upgrades"], serde_json::json!([]));
    ws_send(&mut ws, "4hello").await;
    assert_eq!(ws_text(&mut ws).await, "4hello");
    futures::SinkExt::send(&mut ws, Message::Binary(vec![1, 2, 3, 4].into()))
        .await
        .unwrap();
    assert_eq!(
        ws_next(&mut ws).await,
        Some(Message::Binary(vec![1, 2, 3, 4].into()))
    );
    // Heartbeat over the websocket.
    assert_eq!(ws_text(&mut ws).await, "2");
    ws_send(&mut ws, "3").await;
    // An invalid packet closes the socket.
    ws_send(&mut ws, "abc").await;
    ws_closed(&mut ws).await;
    node.stop().await;
}

#[tokio::test]
async fn websocket_refusals_happen_before_101() {
    let node = TestNode::start(AppKind::ProtocolSuite).await;
    for query in [
        "EIO=3&transport=websocket",
        "EIO=4&transport=abc",
        "EIO=4&transport=websocket&sid=nope",
    ] {
        assert!(
            ws_connect(&node.ws_url(&format!("{EIO}?{query}")))
                .await
                .is_err(),
            "{query}"
        );
    }
    node.stop().await;
}

#[tokio::test]
async fn websocket_message_over_the_limit_closes_with_1009() {
    let mut config = BuiltIn::base_config();
    let kind = AppKind::ProtocolSuite;
    config.engine.max_payload = 100;
    let node = TestNode::start_with(kind, config).await;
    let mut ws = ws_connect(&node.ws_url(&format!("{EIO}?EIO=4&transport=websocket")))
        .await
        .unwrap();
    ws_text(&mut ws).await;
    ws_send(&mut ws, &format!("4{}", "x".repeat(150))).await;
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(5), futures::StreamExt::next(&mut ws))
            .await
            .unwrap()
        {
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            _ => break None,
        }
    };
    assert_eq!(code, Some(1009));
    node.stop().await;
}

#[tokio::test]
async fn upgrade_releases_parked_get_then_switches() {
    let node = TestNode::start(AppKind::ProtocolSuite).await;
    let sid = open_polling(&node, EIO).await;
    let poll_url = node.url(&format!("{EIO}?EIO=4&transport=polling&sid={sid}"));
    let parked = tokio::spawn({
        let url = poll_url.clone();
        async move { get(&url).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut ws = ws_connect(&node.ws_url(&format!("{EIO}?EIO=4&transport=websocket&sid={sid}")))
        .await
        .unwrap();
    ws_send(&mut ws, "2probe").await;
    assert_eq!(ws_text(&mut ws).await, "3probe");
    let parked = parked.await.unwrap();
    assert_eq!((parked.status, parked.body.as_str()), (200, "6"));
    ws_send(&mut ws, "5").await;
    ws_send(&mut ws, "4hello").await;
    assert_eq!(ws_text(&mut ws).await, "4hello");

    // Polling requests for the upgraded sid are refused with code 3.
    let reply = get(&poll_url).await;
    assert_eq!(reply.status, 400);
    let json: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(json["code"], 3);
    assert_eq!(post(&poll_url, "4x").await.status, 400);

    // A second websocket for the same sid is closed at once.
    let mut extra = ws_connect(&node.ws_url(&format!("{EIO}?EIO=4&transport=websocket&sid={sid}")))
        .await
        .unwrap();
    ws_closed(&mut extra).await;

    // The upgraded session still works.
    ws_send(&mut ws, "4still").await;
    assert_eq!(ws_text(&mut ws).await, "4still");
    node.stop().await;
}

#[tokio::test]
async fn upgrade_aborted_by_unexpected_packet() {
    let node = TestNode::start(AppKind::ProtocolSuite).await;
    let sid = open_polling(&node, EIO).await;
    let poll_url = node.url(&format!("{EIO}?EIO=4&transport=polling&sid={sid}"));
    let mut ws = ws_connect(&node.ws_url(&format!("{EIO}?EIO=4&transport=websocket&sid={sid}")))
        .await
        .unwrap();
    ws_send(&mut ws, "4not-a-probe").await;
    ws_closed(&mut ws).await;
    // The polling session is untouched.
    assert_eq!(post(&poll_url, "4poll").await.status, 200);
    assert_eq!(get(&poll_url).await.body, "4poll");
    node.stop().await;
}

/// Opens a polling session and a probing websocket for it; returns the poll URL and the
/// websocket once `3probe` came back.
async fn probing(node: &TestNode) -> (String, Ws) {
    let sid = open_polling(node, EIO).await;
    let poll_url = node.url(&format!("{EIO}?EIO=4&transport=polling&sid={sid}"));
    let mut ws = ws_connect(&node.ws_url(&format!("{EIO}?EIO=4&transport=websocket&sid={sid}")))
        .await
        .unwrap();
    ws_send(&mut ws, "2probe").await;
    assert_eq!(ws_text(&mut ws).await, "3probe");
    (poll_url, ws)
}

#[tokio::test]
async fn get_during_probe_gets_noop_even_if_the_probe_then_fails() {
    let node = TestNode::start(AppKind::ProtocolSuite).await;
    let (poll_url, mut ws) = probing(&node).await;
    let poll = tokio::spawn({
        let url = poll_url.clone();
        async move { get(&url).await }
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    // The probe fails: the GET that arrived while it ran has its `6` already, rather
    // than staying parked until the next ping.
    ws_send(&mut ws, "4not-an-upgrade").await;
    ws_closed(&mut ws).await;
    let poll = poll.await.unwrap();
    assert_eq!((poll.status, poll.body.as_str()), (200, "6"));
    // The polling session carries on.
    assert_eq!(post(&poll_url, "4poll").await.status, 200);
    assert_eq!(get(&poll_url).await.body, "4poll");
    node.stop().await;
}

#[tokio::test]
async fn get_during_probe_gets_noop_when_the_upgrade_completes() {
    let node = TestNode::start(AppKind::ProtocolSuite).await;
    let (poll_url, mut ws) = probing(&node).await;
    let poll = tokio::spawn({
        let url = poll_url.clone();
        async move { get(&url).await }
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    ws_send(&mut ws, "5").await;
    let poll = poll.await.unwrap();
    assert_eq!((poll.status, poll.body.as_str()), (200, "6"));
    // Only polls after the upgrade are refused.
    let later = get(&poll_url).await;
    assert_eq!(later.status, 400);
    let json: serde_json::Value = serde_json::from_str(&later.body).unwrap();
    assert_eq!(json["code"], 3);
    ws_send(&mut ws, "4hello").await;
    assert_eq!(ws_text(&mut ws).await, "4hello");
    node.stop().await;
}

/// A session closed by the server after its probe was answered (here its heartbeat ran out:
/// the client, switching, never answered the ping queued on polling) keeps the probing
/// websocket until `5` and sends its close there: socket.io-client stops polling once told
/// its probe succeeded, and would never hear the close otherwise.
#[tokio::test]
async fn a_session_closed_after_its_probe_was_answered_sends_its_close_on_the_websocket() {
    let node = TestNode::start(AppKind::ProtocolSuite).await;
    let (_poll_url, mut ws) = probing(&node).await;
    // pingInterval (300 ms) and pingTimeout (200 ms) pass without a pong.
    tokio::time::sleep(Duration::from_millis(900)).await;
    ws_send(&mut ws, "5").await;
    assert_eq!(ws_text(&mut ws).await, "1");
    ws_closed(&mut ws).await;
    node.stop().await;
}

#[tokio::test]
async fn next_ping_comes_ping_interval_after_the_pong() {
    // The demo profile keeps the configured heartbeat (the protocol-suite one forces
    // 300/200 ms); its engine sends pings before any Socket.IO CONNECT.
    let mut config = BuiltIn::base_config();
    let kind = AppKind::Demo;
    // A pong deadline far beyond the test's waits: the second ping must not wait for it.
    config.engine.ping_interval = Duration::from_millis(100);
    config.engine.ping_timeout = Duration::from_secs(60);
    let node = TestNode::start_with(kind, config).await;
    let mut ws = ws_connect(&node.ws_url("/socket.io/?EIO=4&transport=websocket"))
        .await
        .unwrap();
    ws_text(&mut ws).await;
    for _ in 0..3 {
        assert_eq!(ws_text(&mut ws).await, "2");
        ws_send(&mut ws, "3").await;
    }
    node.stop().await;
}

/// A websocket frame from the client: masked with an all-zero key, so the payload goes
/// out as is.
fn client_text_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x81];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= usize::from(u16::MAX) => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(payload);
    frame
}

#[tokio::test]
async fn websocket_peer_that_stops_reading_is_dropped() {
    let node = TestNode::start(AppKind::ProtocolSuite).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    // A small receive window fills quickly.
    socket.set_recv_buffer_size(4096).unwrap();
    let mut raw = tokio::time::timeout(WAIT, socket.connect(node.addr()))
        .await
        .unwrap()
        .unwrap();
    let handshake = format!(
        "GET {EIO}?EIO=4&transport=websocket HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n",
        node.addr()
    );
    raw.write_all(handshake.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, raw.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        head.extend_from_slice(&buf[..n]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    // From here on nothing is read. Echoes of 64 KB messages fill the socket buffers
    // until the server's writes stall; it must give up on the link and drop it, which
    // shows here as a write error (the reset of a closed socket).
    let frame = client_text_frame(&[b'4'; 64 * 1024]);
    let mut dropped = false;
    for _ in 0..200 {
        match tokio::time::timeout(Duration::from_millis(500), raw.write_all(&frame)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                dropped = true;
                break;
            }
            Err(_) => break,
        }
    }
    let ping = client_text_frame(b"3");
    for _ in 0..50 {
        if dropped {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(Err(_)) =
            tokio::time::timeout(Duration::from_millis(100), raw.write_all(&ping)).await
        {
            dropped = true;
        }
    }
    assert!(dropped, "the server still holds the stalled websocket");
    // And the session is gone with it.
    assert_eq!(node.node().engines()[0].session_count(), 0);
    node.stop().await;
}
