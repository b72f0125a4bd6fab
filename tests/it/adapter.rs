//! The cross-node adapter on three cluster nodes, each client connected straight to a different
//! node: listings, joins, leaves and disconnects made on one node reach the sockets of the
//! others; a broadcast with acks collects the answers of every node; a socket that lost its
//! connection on one node is recovered on another with the events it missed. Every node's
//! registry records the sockets of all of them.

use std::time::Duration;

use nonstick::app::{AppKind, BuiltIn};
use nonstick::registry::SessionRecord;
use nonstick::socketio::{AckError, Event, SocketIo};
use serde_json::json;

use crate::fixture::{App, SioClient, TestCluster, WAIT, connect_reply, get};

/// The next event of `/`: its ack id and its JSON array (name first).
async fn event(client: &mut SioClient) -> (Option<u64>, serde_json::Value) {
    let text = client.text().await;
    let body = text
        .strip_prefix("42")
        .unwrap_or_else(|| panic!("expected an event of /, got {text}"));
    let digits = body.chars().take_while(char::is_ascii_digit).count();
    let json = serde_json::from_str(&body[digits..]).expect("event payload is JSON");
    (body[..digits].parse().ok(), json)
}

/// One client per node, connected straight to it with `&tag=c<i>`, past its welcome.
async fn client_per_node(cluster: &TestCluster) -> Vec<(SioClient, String)> {
    let mut clients = Vec::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        let (mut client, sid) = SioClient::connected_at(node.addr(), &format!("&tag=c{i}")).await;
        let (_, welcome) = event(&mut client).await;
        assert_eq!(welcome[0], "welcome");
        assert_eq!(welcome[1]["node"], (i + 1).to_string(), "owned by its node");
        clients.push((client, sid));
    }
    clients
}

fn io(cluster: &TestCluster, i: usize) -> SocketIo {
    cluster.nodes[i]
        .node()
        .socketio("/socket.io/")
        .expect("a Socket.IO server at /socket.io/")
}

/// Ask node `i` for the ids of the sockets in `room` until they are `expected` (actions reach
/// other nodes asynchronously).
async fn wait_for_room(cluster: &TestCluster, i: usize, room: &str, expected: &[&String]) {
    let mut expected: Vec<String> = expected.iter().map(|s| (*s).clone()).collect();
    expected.sort();
    let until = tokio::time::Instant::now() + WAIT;
    loop {
        let mut ids: Vec<String> = io(cluster, i)
            .to(room)
            .fetch_sockets()
            .await
            .iter()
            .map(|s| s.id().to_owned())
            .collect();
        ids.sort();
        if ids == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "room {room} seen from node {}: {ids:?}, expected {expected:?}",
            i + 1
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wait until node `i` has noticed that the client of socket `sid` went away.
async fn wait_until_gone(cluster: &TestCluster, i: usize, sid: &str) {
    let until = tokio::time::Instant::now() + WAIT;
    while io(cluster, i).of("/").socket(sid).is_some() {
        assert!(
            tokio::time::Instant::now() < until,
            "node {} kept the lost socket",
            i + 1
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Read the registry of node `i` until the record of `session` passes `check`.
async fn wait_for_record(
    cluster: &TestCluster,
    i: usize,
    session: &str,
    check: impl Fn(Option<SessionRecord>) -> bool,
) {
    let registry = cluster.nodes[i].node().registry().expect("a cluster node");
    let until = tokio::time::Instant::now() + WAIT;
    while !check(registry.session(session)) {
        assert!(
            tokio::time::Instant::now() < until,
            "registry of node {}: {:?}",
            i + 1,
            registry.session(session)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn fetch_join_leave_and_disconnect_reach_every_node() {
    let cluster = TestCluster::start(3, AppKind::Demo).await;
    let mut clients = client_per_node(&cluster).await;
    let sids: Vec<String> = clients.iter().map(|(_, sid)| sid.clone()).collect();

    // Node 1 lists all three, with what each client presented.
    let listed = io(&cluster, 0).of("/").fetch_sockets().await;
    assert_eq!(listed.len(), 3, "{listed:?}");
    for (i, sid) in sids.iter().enumerate() {
        let socket = listed
            .iter()
            .find(|s| s.id() == sid)
            .unwrap_or_else(|| panic!("socket {sid} of node {} not listed", i + 1));
        let tag = format!("c{i}");
        assert_eq!(socket.handshake().request.query_value("tag"), Some(&*tag));
        assert!(socket.rooms().contains(sid), "a socket is in its own room");
    }

    // A join made on node 1, then a broadcast from node 1 to that room: the join reaches each
    // node before the broadcast does.
    io(&cluster, 0).of("/").broadcast().sockets_join("club");
    io(&cluster, 0)
        .to("club")
        .emit("hello", json!("club"))
        .expect("emit");
    for (client, _) in &mut clients {
        let (_, hello) = event(client).await;
        assert_eq!((&hello[0], &hello[1]), (&json!("hello"), &json!("club")));
    }
    wait_for_room(&cluster, 1, "club", &[&sids[0], &sids[1], &sids[2]]).await;

    // The registry of any node records each socket: namespace, socket id, pid, rooms.
    let session = clients[2].0.session.clone();
    let recorded = |rooms: &[&str]| {
        let rooms: std::collections::BTreeSet<String> =
            rooms.iter().map(|r| (*r).to_owned()).collect();
        let sid = sids[2].clone();
        move |record: Option<SessionRecord>| {
            record
                .and_then(|r| r.namespaces.get("/").cloned())
                .is_some_and(|socket| {
                    socket.socket_id == sid && socket.pid.is_some() && socket.rooms == rooms
                })
        }
    };
    wait_for_record(&cluster, 1, &session, recorded(&["club"])).await;

    // Node 2 makes the socket of node 3 leave.
    io(&cluster, 1)
        .of("/")
        .to(sids[2].clone())
        .sockets_leave("club");
    wait_for_room(&cluster, 0, "club", &[&sids[0], &sids[1]]).await;
    wait_for_record(&cluster, 0, &session, recorded(&[])).await;

    // A listed socket acts wherever it is: node 3 disconnects the socket of node 1.
    let remote = io(&cluster, 2)
        .of("/")
        .fetch_sockets()
        .await
        .into_iter()
        .find(|s| s.id() == sids[0])
        .expect("node 3 lists the socket of node 1");
    remote.disconnect(false);
    assert_eq!(clients[0].0.text().await, "41", "a DISCONNECT packet");
    wait_for_room(&cluster, 2, "club", &[&sids[1]]).await;

    // Nothing was dropped for want of queue room, and /metrics says so.
    for node in &cluster.nodes {
        let metrics = get(&node.url("/metrics")).await.body;
        for counter in [
            "nonstick_adapter_dropped_total 0",
            "nonstick_registry_records_dropped_total 0",
        ] {
            assert!(metrics.contains(counter), "{counter} missing:\n{metrics}");
        }
    }
    cluster.stop().await;
}

#[tokio::test]
async fn broadcast_with_acks_collects_every_node() {
    let cluster = TestCluster::start(3, AppKind::Demo).await;
    let clients = client_per_node(&cluster).await;
    let sids: Vec<String> = clients.iter().map(|(_, sid)| sid.clone()).collect();

    // The clients of nodes 1 and 2 answer; the one of node 3 stays silent.
    let mut answering = Vec::new();
    for (i, (mut client, _)) in clients.into_iter().enumerate() {
        answering.push(tokio::spawn(async move {
            let (id, question) = event(&mut client).await;
            assert_eq!(
                question,
                json!(["question", "?"]),
                "no offset on an emit with acks"
            );
            let id = id.expect("an ack id");
            if i < 2 {
                client.send(&format!(r#"43{id}["from c{i}"]"#)).await;
            }
            client
        }));
    }
    let answers = io(&cluster, 0)
        .of("/")
        .broadcast()
        .timeout(Duration::from_millis(1500))
        .emit_with_ack("question", json!("?"))
        .await;
    assert_eq!(answers.len(), 3, "one answer per socket: {answers:?}");
    for (i, sid) in sids.iter().enumerate() {
        let answer = answers
            .iter()
            .find(|a| &a.socket_id == sid)
            .unwrap_or_else(|| panic!("no answer for the socket of node {}", i + 1));
        if i < 2 {
            let args = answer.result.as_ref().expect("answered");
            assert_eq!(args[0].as_str(), Some(&*format!("from c{i}")));
        } else {
            assert_eq!(answer.result, Err(AckError::Timeout));
        }
    }
    for task in answering {
        drop(task.await.expect("client task"));
    }
    cluster.stop().await;
}

#[tokio::test]
async fn a_socket_lost_on_one_node_is_recovered_on_another() {
    let cluster = TestCluster::start(3, AppKind::Demo).await;
    let (mut lost, reply) = SioClient::joined_at(cluster.nodes[0].addr(), "").await;
    let sid = reply["sid"].as_str().expect("sid").to_owned();
    let pid = reply["pid"]
        .as_str()
        .expect("recovery is on: a pid")
        .to_owned();
    let (_, welcome) = event(&mut lost).await;
    let offset = welcome[2]
        .as_str()
        .expect("welcome carries an offset")
        .to_owned();
    lost.send(r#"420["join","news"]"#).await;
    assert!(lost.text().await.starts_with("430"), "join acknowledged");

    // A witness in the same room on node 1 tells when node 1 has delivered (and logged) a
    // broadcast made elsewhere.
    let (mut witness, _) = SioClient::connected_at(cluster.nodes[0].addr(), "").await;
    event(&mut witness).await;
    witness.send(r#"420["join","news"]"#).await;
    assert!(witness.text().await.starts_with("430"));

    drop(lost);
    wait_until_gone(&cluster, 0, &sid).await;
    io(&cluster, 1)
        .to("news")
        .emit("missed", json!(7))
        .expect("emit");
    assert_eq!(event(&mut witness).await.1[0], "missed");

    // The client comes back on node 3 with its pid and last offset.
    let mut back = SioClient::open_at(cluster.nodes[2].addr(), "").await;
    back.send(&format!(r#"40{{"pid":"{pid}","offset":"{offset}"}}"#))
        .await;
    let reply = connect_reply(&back.text().await, "40");
    assert_eq!(reply["sid"], sid, "same socket id");
    assert_eq!(reply["pid"], pid, "same pid");
    let (_, missed) = event(&mut back).await;
    assert_eq!((&missed[0], &missed[1]), (&json!("missed"), &json!(7)));
    let (_, welcome) = event(&mut back).await;
    assert_eq!(welcome[1]["node"], "3", "now owned by node 3");

    let socket = io(&cluster, 2)
        .of("/")
        .socket(&sid)
        .expect("socket on node 3");
    assert!(socket.recovered());
    assert!(socket.rooms().contains("news"), "rooms restored");
    // Node 1 handed it over: a second attempt finds nothing.
    assert!(io(&cluster, 0).of("/").socket(&sid).is_none());
    cluster.stop().await;
}

#[tokio::test]
async fn server_side_emits_reach_the_other_servers() {
    let cluster = TestCluster::start(3, AppKind::Demo).await;
    // Node 2 answers; node 3 records what it got and does not acknowledge.
    io(&cluster, 1)
        .of("/")
        .on_server_event("census", |event: Event| async move {
            if let Some(ack) = event.ack {
                ack.send(json!({ "node": 2, "asked": event.args[0].as_str() }));
            }
        });
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    io(&cluster, 2)
        .of("/")
        .on_server_event("census", move |event: Event| {
            let seen = seen_tx.clone();
            async move {
                let _ = seen.send((event.args, event.ack.is_some()));
            }
        });

    io(&cluster, 0)
        .of("/")
        .server_side_emit("census", json!("plain"))
        .expect("emit");
    let (args, asked_for_ack) = tokio::time::timeout(WAIT, seen.recv())
        .await
        .expect("node 3 got the event in time")
        .expect("event");
    assert_eq!((args[0].as_str(), asked_for_ack), (Some("plain"), false));

    let answers = io(&cluster, 0)
        .of("/")
        .server_side_emit_with_ack("census", json!("count"), Duration::from_millis(500))
        .await;
    assert_eq!(answers.len(), 2, "one answer per other member: {answers:?}");
    let answered: Vec<_> = answers.iter().filter_map(|a| a.as_ref().ok()).collect();
    assert_eq!(answered.len(), 1, "{answers:?}");
    assert_eq!(answered[0][0].get("node").and_then(|n| n.as_u64()), Some(2));
    assert!(
        answers.contains(&Err(AckError::Unanswered)),
        "node 3 dropped its ack: {answers:?}"
    );
    let (args, asked_for_ack) = seen.recv().await.expect("event");
    assert_eq!((args[0].as_str(), asked_for_ack), (Some("count"), true));

    // The emitting server's own handlers do not run, and a single node has nobody to ask.
    let alone = SocketIo::new(Default::default());
    let none = alone
        .of("/")
        .server_side_emit_with_ack("census", (), Duration::from_millis(100))
        .await;
    assert!(none.is_empty());
    cluster.stop().await;
}

/// A peer that stops answering (its traffic frozen, the connection open) holds up nothing:
/// broadcasts keep reaching the other node, and what waits for the frozen peer past its
/// maximum age is dropped and counted rather than delivered when the peer comes back; then
/// delivery to it resumes.
#[tokio::test]
async fn a_frozen_peer_holds_up_nothing_and_is_not_flooded_when_it_returns() {
    use crate::fixture::Path;

    const TICKS: u64 = 100;
    let cluster = TestCluster::start_with(3, &[(3, Path::Freezer)], |_| {
        let mut config = BuiltIn::base_config();
        config.adapter.max_age = Duration::from_millis(300);
        config.adapter.deadline = Duration::from_secs(1);
        (App::built_in(AppKind::Demo), config)
    })
    .await;
    let mut clients = client_per_node(&cluster).await;
    let (_, mut second, mut third) = {
        let mut it = clients.drain(..).map(|(client, _)| client);
        (it.next(), it.next().expect("2"), it.next().expect("3"))
    };
    // The links from node 1 are up before the freeze.
    io(&cluster, 0).emit("tick", json!(-1)).expect("emit");
    assert_eq!(event(&mut second).await.1[1], json!(-1));
    assert_eq!(event(&mut third).await.1[1], json!(-1));

    cluster.freezers[&3].freeze();
    for n in 0..TICKS {
        io(&cluster, 0).emit("tick", json!(n)).expect("emit");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for n in 0..TICKS {
        let (_, tick) = event(&mut second).await;
        assert_eq!((&tick[0], &tick[1]), (&json!("tick"), &json!(n)));
    }

    // Past the batches' deadline, then the peer comes back.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.freezers[&3].thaw();
    io(&cluster, 0).emit("tick", json!("after")).expect("emit");
    let mut late = 0;
    loop {
        let (_, tick) = event(&mut third).await;
        if tick[1] == json!("after") {
            break;
        }
        late += 1;
    }
    let counter = |metrics: &str, name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics"))
    };
    let sender = get(&cluster.nodes[0].url("/metrics")).await.body;
    let receiver = get(&cluster.nodes[2].url("/metrics")).await.body;
    let stale = counter(&sender, "nonstick_adapter_stale_total");
    let unconfirmed = counter(&sender, "nonstick_adapter_unconfirmed_total");
    let expired = counter(&receiver, "nonstick_adapter_expired_total");
    // Queued too long: dropped on node 1. Already on their way when the link froze: dropped
    // on arrival at node 3. Nothing from the frozen time is delivered.
    assert_eq!(late, 0, "node 3 got {late} ticks late");
    assert!(stale > 0, "{sender}");
    assert!(unconfirmed > 0, "{sender}");
    assert_eq!(stale + expired, TICKS, "stale {stale}, expired {expired}");
    cluster.stop().await;
}
