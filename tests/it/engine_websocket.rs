//! Engine.IO over WebSocket against a running node: websocket-only sessions and the
//! polling -> websocket upgrade.

use std::time::Duration;

use tokio_tungstenite::tungstenite::Message;

use nonstick::config::{AppKind, Config};

use crate::fixture::{
    TestNode, get, open_polling, post, ws_closed, ws_connect, ws_next, ws_send, ws_text,
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
    let mut config = Config::new(AppKind::ProtocolSuite);
    config.engine.max_payload = 100;
    let node = TestNode::start_with(config).await;
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
