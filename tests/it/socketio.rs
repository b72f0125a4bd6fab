//! Socket.IO semantics over a real websocket, with raw packets: binary events and acks, acks
//! from the server, broadcasts with acks, middleware refusals, dynamic namespaces, connection
//! state recovery, packet order, and the packets that close a connection.

use std::time::Duration;

use nonstick::socketio::{ConnectError, Event, RecoveryConfig, SocketIo, SocketIoConfig, Value};
use serde_json::json;

use crate::fixture::{Frame, SioClient as Client, TestNode, WAIT, connect_reply, get};

fn echo_app(config: SocketIoConfig) -> SocketIo {
    let io = SocketIo::new(config);
    io.of("/").on_connect(|socket| async move {
        socket.on("echo", |socket, event: Event| async move {
            match event.ack {
                Some(ack) => ack.send(event.args),
                None => {
                    let _ = socket.emit("echo", event.args);
                }
            }
        });
    });
    io
}

#[tokio::test]
async fn binary_event_and_binary_ack_keep_their_attachments() {
    let node = TestNode::serve(echo_app(SocketIoConfig::default())).await;
    let (mut c, _) = Client::connected(&node).await;

    c.send(r#"451-["echo",{"_placeholder":true,"num":0}]"#)
        .await;
    c.send_binary(&[1, 2, 3]).await;
    assert_eq!(
        c.text().await,
        r#"451-["echo",{"_placeholder":true,"num":0}]"#
    );
    assert_eq!(c.frame().await, Frame::Binary(vec![1, 2, 3]));

    c.send(r#"452-7["echo",{"a":{"_placeholder":true,"num":0}},{"_placeholder":true,"num":1}]"#)
        .await;
    c.send_binary(&[9]).await;
    c.send_binary(&[8, 7]).await;
    assert_eq!(
        c.text().await,
        r#"462-7[{"a":{"_placeholder":true,"num":0}},{"_placeholder":true,"num":1}]"#
    );
    assert_eq!(c.frame().await, Frame::Binary(vec![9]));
    assert_eq!(c.frame().await, Frame::Binary(vec![8, 7]));
    node.stop().await;
}

#[tokio::test]
async fn events_are_answered_in_the_order_they_arrive() {
    let node = TestNode::serve(echo_app(SocketIoConfig::default())).await;
    let (mut c, _) = Client::connected(&node).await;
    for i in 0..300 {
        c.send(&format!(r#"42["echo",{i}]"#)).await;
    }
    for i in 0..300 {
        assert_eq!(c.text().await, format!(r#"42["echo",{i}]"#));
    }
    node.stop().await;
}

#[tokio::test]
async fn server_acks_reach_the_handler_that_asked() {
    let io = SocketIo::new(SocketIoConfig::default());
    io.of("/").on_connect(|socket| async move {
        let answer = socket
            .emit_with_ack("question", json!("why?"))
            .timeout(WAIT)
            .await;
        let reply = match answer {
            Ok(args) => Value::Array(args),
            Err(e) => Value::from(e.to_string()),
        };
        let _ = socket.emit("answer", reply);
    });
    let node = TestNode::serve(io).await;
    let (mut c, _) = Client::connected(&node).await;
    let question = c.text().await;
    let id = question
        .strip_prefix("42")
        .and_then(|rest| rest.strip_suffix(r#"["question","why?"]"#))
        .unwrap_or_else(|| panic!("unexpected packet {question}"));
    c.send(&format!(r#"43{id}["because",42]"#)).await;
    assert_eq!(c.text().await, r#"42["answer",["because",42]]"#);
    node.stop().await;
}

#[tokio::test]
async fn broadcast_with_acks_collects_each_answer_and_times_out_the_silent() {
    let io = SocketIo::new(SocketIoConfig::default());
    io.of("/").on_connect(|socket| async move {
        socket.join("r");
        socket.on("poll-room", |socket, event: Event| async move {
            let answers = socket
                .to("r")
                .timeout(Duration::from_millis(300))
                .emit_with_ack("vote", ())
                .await;
            let ok = answers.iter().filter(|a| a.result.is_ok()).count();
            let late = answers.len() - ok;
            if let Some(ack) = event.ack {
                ack.send(json!({ "ok": ok, "late": late }));
            }
        });
    });
    let node = TestNode::serve(io).await;
    let (mut asker, _) = Client::connected(&node).await;
    let (mut yes, _) = Client::connected(&node).await;
    let (mut silent, _) = Client::connected(&node).await;

    asker.send(r#"421["poll-room"]"#).await;
    let vote = yes.text().await;
    let id = vote
        .strip_prefix("42")
        .and_then(|rest| rest.strip_suffix(r#"["vote"]"#))
        .unwrap_or_else(|| panic!("unexpected packet {vote}"));
    yes.send(&format!(r#"43{id}["yes"]"#)).await;
    // The silent one receives the question too, but never answers.
    assert!(silent.text().await.ends_with(r#"["vote"]"#));
    assert_eq!(asker.text().await, r#"431[{"ok":1,"late":1}]"#);
    node.stop().await;
}

#[tokio::test]
async fn middleware_refusal_sends_connect_error_and_keeps_the_connection() {
    let io = echo_app(SocketIoConfig::default());
    io.of("/secure").middleware(|socket| {
        let token = socket.handshake().auth.get("token").cloned();
        async move {
            if token == Some(Value::from("ok")) {
                Ok(())
            } else {
                Err(ConnectError::new("nope").with_data(json!({ "retry": false })))
            }
        }
    });
    let node = TestNode::serve(io).await;
    let mut c = Client::open(&node).await;
    c.send("40/secure,").await;
    assert_eq!(
        c.text().await,
        r#"44/secure,{"message":"nope","data":{"retry":false}}"#
    );
    c.send(r#"40/secure,{"token":"ok"}"#).await;
    let reply = c.text().await;
    assert!(connect_reply(&reply, "40/secure,")["sid"].is_string());
    c.send("40").await;
    assert!(connect_reply(&c.text().await, "40")["sid"].is_string());
    node.stop().await;
}

#[tokio::test]
async fn dynamic_namespaces_are_created_on_demand_and_dropped_when_empty() {
    let io = SocketIo::new(SocketIoConfig::default());
    io.dynamic(|name| name.starts_with("/room-"))
        .on_connect(|socket| async move {
            let name = socket.ns().to_owned();
            let _ = socket.emit("hello", name);
        });
    let node = TestNode::serve(io.clone()).await;
    let mut c = Client::open(&node).await;

    c.send("40/room-7,").await;
    assert!(connect_reply(&c.text().await, "40/room-7,")["sid"].is_string());
    assert_eq!(c.text().await, r#"42/room-7,["hello","/room-7"]"#);
    assert!(io.namespaces().contains(&"/room-7".to_owned()));

    c.send("40/other,").await;
    assert_eq!(
        c.text().await,
        r#"44/other,{"message":"Invalid namespace"}"#
    );

    c.send("41/room-7,").await;
    // The DISCONNECT has no answer; a round trip on another namespace orders the check after it.
    c.send("40/room-8,").await;
    assert!(connect_reply(&c.text().await, "40/room-8,")["sid"].is_string());
    assert!(!io.namespaces().contains(&"/room-7".to_owned()));
    node.stop().await;
}

#[tokio::test]
async fn recovery_restores_the_socket_and_replays_what_it_missed() {
    let io = SocketIo::new(SocketIoConfig {
        recovery: Some(RecoveryConfig::default()),
        ..SocketIoConfig::default()
    });
    io.of("/").on_connect(|socket| async move {
        let _ = socket.emit("state", json!({ "recovered": socket.recovered() }));
        socket.on("join", |socket, event: Event| async move {
            if let Some(room) = event.arg(0).and_then(Value::as_str) {
                socket.join(room);
            }
            if let Some(ack) = event.ack {
                ack.send(());
            }
        });
        socket.on("tell", |socket, event: Event| async move {
            let _ = socket.to("news").emit("news", event.args);
        });
    });
    let node = TestNode::serve(io).await;

    let mut a = Client::open(&node).await;
    a.send("40").await;
    let reply = connect_reply(&a.text().await, "40");
    let (sid, pid) = (reply["sid"].clone(), reply["pid"].clone());
    assert!(pid.is_string(), "recovery adds a pid: {reply}");
    let state = a.text().await;
    assert!(
        state.starts_with(r#"42["state",{"recovered":false},""#),
        "{state}"
    );
    a.send(r#"421["join","news"]"#).await;
    assert_eq!(a.text().await, "431[]");

    let (mut b, _) = Client::connected(&node).await;
    let _state_b = b.text().await;
    b.send(r#"42["tell","first"]"#).await;
    let first = a.text().await;
    let offset: serde_json::Value =
        serde_json::from_str(first.strip_prefix("42").unwrap_or(&first)).expect("event JSON");
    assert_eq!(offset[1], "first");
    let offset = offset[2].clone();

    drop(a);
    // Let the server notice the closed websocket before the next emit.
    tokio::time::sleep(Duration::from_millis(100)).await;
    b.send(r#"42["tell","while away"]"#).await;

    let mut again = Client::open(&node).await;
    again
        .send(&format!("40{}", json!({ "pid": pid, "offset": offset })))
        .await;
    let reply = connect_reply(&again.text().await, "40");
    assert_eq!(reply["sid"], sid, "same socket id after recovery");
    assert_eq!(reply["pid"], pid);
    let missed = again.text().await;
    assert!(missed.starts_with(r#"42["news","while away","#), "{missed}");
    let state = again.text().await;
    assert!(
        state.starts_with(r#"42["state",{"recovered":true},""#),
        "{state}"
    );

    // An unknown pid gets a fresh socket.
    let mut stranger = Client::open(&node).await;
    stranger
        .send(&format!("40{}", json!({ "pid": "nope", "offset": offset })))
        .await;
    let reply = connect_reply(&stranger.text().await, "40");
    assert_ne!(reply["sid"], sid);
    node.stop().await;
}

#[tokio::test]
async fn idle_sessions_are_closed_after_the_connect_timeout() {
    let io = echo_app(SocketIoConfig {
        connect_timeout: Duration::from_millis(200),
        ..SocketIoConfig::default()
    });
    let node = TestNode::serve(io).await;
    let mut c = Client::open(&node).await;
    assert!(c.closed().await, "no CONNECT: the session must be closed");
    node.stop().await;
}

#[tokio::test]
async fn invalid_packets_close_the_connection() {
    let node = TestNode::serve(echo_app(SocketIoConfig::default())).await;
    for bad in [
        "4abc",
        "42{}",
        r#"42abc["x"]"#,
        r#"42["connect"]"#,
        "45",
        "40",
    ] {
        let (mut c, _) = Client::connected(&node).await;
        c.send(bad).await;
        assert!(c.closed().await, "{bad:?} must close the connection");
    }
    // An event for a namespace the client has not joined closes too.
    let (mut c, _) = Client::connected(&node).await;
    c.send(r#"42/other,["echo"]"#).await;
    assert!(c.closed().await);
    node.stop().await;
}

#[tokio::test]
async fn allow_request_refuses_handshakes_with_403_code_4() {
    let io = echo_app(SocketIoConfig::default());
    io.allow_request(|req| req.query_value("team") == Some("blue"));
    let node = TestNode::serve(io).await;
    let refused = get(&node.url("/socket.io/?EIO=4&transport=polling&team=red")).await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.body, r#"{"code":4,"message":"Forbidden"}"#);
    let allowed = get(&node.url("/socket.io/?EIO=4&transport=polling&team=blue")).await;
    assert_eq!(allowed.status, 200);
    assert!(allowed.body.starts_with("0{"));
    node.stop().await;
}

#[tokio::test]
async fn a_client_gone_during_slow_middleware_never_joins() {
    let io = SocketIo::new(SocketIoConfig::default());
    let (passed_tx, mut passed) = tokio::sync::mpsc::unbounded_channel();
    io.of("/slow").middleware(move |_socket| {
        let passed_tx = passed_tx.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let _ = passed_tx.send(());
            Ok(())
        }
    });
    let node = TestNode::serve(io.clone()).await;
    let mut c = Client::open(&node).await;
    c.send("40/slow,").await;
    drop(c);
    tokio::time::timeout(WAIT, passed.recv())
        .await
        .expect("middleware ran");
    // The middleware finished after the connection was gone: the socket must not be left in
    // the namespace.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(io.of("/slow").sockets().is_empty());
    node.stop().await;
}

#[tokio::test]
async fn refused_dynamic_namespaces_do_not_stay_in_the_table() {
    let io = SocketIo::new(SocketIoConfig::default());
    io.dynamic(|name| name.starts_with("/t-"))
        .middleware(|_socket| async { Err(ConnectError::new("closed")) });
    let node = TestNode::serve(io.clone()).await;
    let mut c = Client::open(&node).await;
    for i in 0..20 {
        c.send(&format!("40/t-{i},")).await;
        assert_eq!(
            c.text().await,
            format!(r#"44/t-{i},{{"message":"closed"}}"#)
        );
    }
    assert_eq!(io.namespaces(), Vec::<String>::new());
    node.stop().await;
}
