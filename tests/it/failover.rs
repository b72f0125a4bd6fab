//! A node killed with SIGKILL, the way a crash ends it, while clients are connected: the
//! clients owned by the other nodes notice nothing, behind the embedded balancer and behind
//! nginx, and the owner of a session whose GET was parked through the dead node keeps the
//! session for the client's next GET.
//!
//! The nodes are processes (`nonstick node`, started by `launch`), so the kill is real.

use std::path::PathBuf;
use std::time::Duration;

use nonstick::launch::RunningCluster;

use crate::fixture::{Script, WAIT, get, post};

async fn cluster(mode: Option<nonstick::balancer::Mode>) -> RunningCluster {
    crate::fixture::demo_processes(mode).await
}

/// The owner sees the stream from a node that died end without a cancel: a GET parked through
/// that node is not a client that went away, so the session stays and the client's next GET,
/// through another node, parks again and gets what is sent next.
#[tokio::test]
async fn a_get_parked_through_a_killed_node_leaves_its_session_alive() {
    let mut running = cluster(None).await;
    let nodes = running.nodes().to_vec();
    let url = |node: usize, sid: &str| {
        format!(
            "http://{}/socket.io/?EIO=4&transport=polling&sid={sid}",
            nodes[node]
        )
    };
    let open = get(&format!(
        "http://{}/socket.io/?EIO=4&transport=polling",
        nodes[0]
    ))
    .await;
    let json: serde_json::Value =
        serde_json::from_str(open.body.trim_start_matches('0')).expect("open packet");
    let sid = json["sid"].as_str().expect("sid").to_owned();
    assert!(sid.starts_with("1."), "{sid}");

    let parked = tokio::spawn(get_within(url(1, &sid), Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    running.kill(1).await.expect("kill node 2");
    // The client saw its GET fail (the balancer in front would have retried it elsewhere).
    assert!(parked.await.expect("task").is_none());
    tokio::time::sleep(Duration::from_millis(300)).await;

    let again = tokio::spawn(get_within(url(2, &sid), Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(post(&url(2, &sid), "40").await.status, 200);
    let reply = again.await.expect("task").expect("answered");
    assert_eq!(reply.0, 200, "{reply:?}");
    assert!(reply.1.starts_with("40{"), "{reply:?}");
    running.shutdown().await.expect("shutdown");
}

/// GET `url`; `None` if the connection failed or broke, else the status and body.
async fn get_within(url: String, limit: Duration) -> Option<(u16, String)> {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client: Client<_, Empty<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let request = async {
        let response = client.get(url.parse().ok()?).await.ok()?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.ok()?.to_bytes();
        Some((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(limit, request).await.ok().flatten()
}

/// What `tests/clients/failover.mjs` reports of one client.
#[derive(Debug, serde::Deserialize)]
struct ClientReport {
    transport: String,
    first: String,
    last: String,
    disconnects: u32,
    recovered: u32,
    acked: u32,
}

const ACKS: u32 = 10;

/// Connects the crowd of `failover.mjs` through `front`, kills node 2 (`kill -9`) while every
/// polling client has a GET parked, lets every client make its echo round trips, and checks
/// that the clients of the living nodes noticed nothing, that node 2's polling clients carried
/// on with the same session on another node (the cluster took them over), and that its
/// websocket clients reconnected to a living node and got their socket back.
async fn kill_a_node_under(front: &str, running: &mut RunningCluster) {
    let acks = ACKS.to_string();
    let mut script = Script::start("failover.mjs", &["--url", front, "--acks", &acks]);
    assert_eq!(script.line(Duration::from_secs(30)).await, "ready");
    // Every polling client has its GET parked somewhere now; a third of them through node 2.
    tokio::time::sleep(Duration::from_millis(300)).await;
    running.kill(1).await.expect("kill node 2");
    script.send("go").await;
    let clients: Vec<ClientReport> = script.report(Duration::from_secs(70)).await;
    let survivors: Vec<_> = clients.iter().filter(|c| c.first != "2").collect();
    assert!(
        survivors.len() >= 4,
        "too few clients on nodes 1 and 3: {clients:?}"
    );
    for client in &survivors {
        assert_eq!(
            (client.disconnects, client.acked),
            (0, ACKS),
            "a client of a living node noticed the kill: {client:?}"
        );
    }
    let orphans: Vec<_> = clients.iter().filter(|c| c.first == "2").collect();
    for client in &orphans {
        assert_ne!(client.last, "2", "served by a living node: {client:?}");
        if client.transport == "polling" {
            assert_eq!(
                (client.disconnects, client.acked),
                (0, ACKS),
                "a polling client of the dead node noticed the kill: {client:?}"
            );
        } else {
            // The one emit that was on the dead transport when it broke is lost with it.
            assert!(client.disconnects >= 1, "{client:?}");
            assert!(client.acked >= ACKS - 1, "{client:?}");
            assert_eq!(client.recovered, client.disconnects, "{client:?}");
        }
    }
    let kinds: Vec<_> = orphans.iter().map(|c| c.transport.as_str()).collect();
    assert!(
        kinds.contains(&"polling") && kinds.contains(&"websocket"),
        "{clients:?}"
    );
    let transports: Vec<_> = survivors.iter().map(|c| c.transport.as_str()).collect();
    assert!(transports.contains(&"polling") && transports.contains(&"websocket"));
}

#[tokio::test]
async fn a_killed_nodes_clients_carry_on_behind_the_embedded_balancer() {
    let mut running = cluster(Some(nonstick::balancer::Mode::RoundRobin)).await;
    let front = format!("http://{}", running.addr().expect("a balancer"));
    kill_a_node_under(&front, &mut running).await;
    running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_killed_nodes_clients_carry_on_behind_nginx() {
    let nginx = std::env::var_os("NONSTICK_NGINX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/nginx"));
    assert!(nginx.exists(), "run `scripts/test --deps-only` first");
    let mut running = cluster(None).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, addr) =
        nonstick::bench::setup::nginx(&nginx, dir.path(), running.nodes(), false)
            .await
            .expect("start nginx");
    kill_a_node_under(&format!("http://{addr}"), &mut running).await;
    let _ = tokio::time::timeout(WAIT, child.kill()).await;
    running.shutdown().await.expect("shutdown");
}
