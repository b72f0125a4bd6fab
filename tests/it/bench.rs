//! The benchmark harness, at tiny sizes so it cannot rot: a comparison of every setup in one
//! run (no timing asserted, only that each setup served every scenario correctly), the client's
//! upgrade path, and its count of `Session ID unknown` where a balancer spreads polling requests
//! over servers that are not a cluster.

use std::path::PathBuf;
use std::time::Duration;

use nonstick::app::AppKind;
use nonstick::bench::compare::{self, Plan, Sizes};
use nonstick::bench::setup::{SetupKind, Tools};
use nonstick::bench::{Load, Target, Transport, scenario};

use crate::fixture::{TestNode, round_robin};

fn load(addr: std::net::SocketAddr) -> Load {
    Load {
        target: Target {
            addr,
            path: "/socket.io/".to_owned(),
            transport: Transport::Polling,
            source: None,
            timeout: Duration::from_secs(10),
        },
        sources: Load::loopback_sources(),
    }
}

fn tool(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smoke_comparison_runs_every_scenario_on_every_setup() {
    let plan = Plan {
        setups: SetupKind::ALL.to_vec(),
        rounds: 1,
        sizes: Sizes::smoke(),
        tools: Tools {
            nonstick: PathBuf::from(env!("CARGO_BIN_EXE_nonstick")),
            node: tool("NONSTICK_NODE", "node"),
            repo: PathBuf::from(env!("CARGO_MANIFEST_DIR")),
            nginx: tool("NONSTICK_NGINX", "/usr/sbin/nginx"),
            redis: tool("NONSTICK_REDIS", "redis-server"),
        },
        spread_sources: true,
    };
    let comparison = compare::run(&plan, |line| eprintln!("{line}"))
        .await
        .expect("comparison");
    assert!(
        comparison.skipped.is_empty(),
        "setups that could not run (run `scripts/test --deps-only`): {:?}",
        comparison.skipped
    );
    let keys = [
        "connect/polling",
        "echo/polling",
        "echo/websocket",
        "broadcast/polling",
        "idle/websocket",
    ];
    for kind in SetupKind::ALL {
        for key in keys {
            let runs: Vec<_> = comparison
                .measurements
                .iter()
                .filter(|m| m.setup == kind.name() && m.key == key)
                .collect();
            assert_eq!(runs.len(), 1, "{} {key}", kind.name());
            let report = &runs[0].report;
            assert!(report.ops > 0, "{} {key}: {}", kind.name(), report.line());
            assert_eq!(
                report.extra.get("duplicates").copied().unwrap_or(0.0),
                0.0,
                "{} {key}: {}",
                kind.name(),
                report.line()
            );
            if kind.is_nonstick() {
                // Correctness, not speed: every request is served, every broadcast arrives.
                assert_eq!(
                    report.errors.total(),
                    0,
                    "{} {key}: {}",
                    kind.name(),
                    report.line()
                );
                assert_eq!(
                    report.extra.get("lost").copied().unwrap_or(0.0),
                    0.0,
                    "{} {key}: {}",
                    kind.name(),
                    report.line()
                );
            }
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    nonstick::bench::report::write(dir.path(), &plan, &comparison).expect("report");
    let report = std::fs::read_to_string(dir.path().join("report.md")).expect("report.md");
    assert!(report.contains("## Goals") && report.contains("nonstick-rr"));
    let chart =
        std::fs::read_to_string(dir.path().join("latency-echo-polling.svg")).expect("chart");
    assert!(chart.starts_with("<svg") && chart.contains("polyline"));
    assert!(dir.path().join("results.json").exists());
}

#[tokio::test]
async fn the_client_upgrades_polling_sessions_to_websocket() {
    let node = TestNode::start(AppKind::Demo).await;
    let report = scenario::echo(
        &load(node.addr()),
        Transport::Upgrade,
        3,
        32,
        Duration::from_millis(300),
    )
    .await;
    assert!(report.ops > 0, "{}", report.line());
    assert_eq!(report.errors.total(), 0, "{}", report.line());
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_id_unknown_is_counted_when_servers_are_not_a_cluster() {
    // Three independent servers behind a per-request round-robin balancer: what every other
    // Socket.IO server faces without sticky sessions.
    let nodes = [
        TestNode::start(AppKind::Demo).await,
        TestNode::start(AppKind::Demo).await,
        TestNode::start(AppKind::Demo).await,
    ];
    let balancer = round_robin(nodes.iter().map(TestNode::addr).collect()).await;
    let report = scenario::connect(
        &load(balancer.addr()),
        Transport::Polling,
        12,
        // One at a time: clients in lockstep with the rotation could each keep one backend.
        1,
        Duration::from_secs(30),
    )
    .await;
    assert!(
        report.errors.session_id_unknown() > 0,
        "expected Session ID unknown answers: {}",
        report.line()
    );
    balancer.shutdown().await.expect("balancer shutdown");
    for node in nodes {
        node.stop().await;
    }
}
