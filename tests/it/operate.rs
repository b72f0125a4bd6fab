//! Operating nonstick as its users run it: the `nonstick` command's settings (a file, the
//! environment, flags), `nonstick config`, and how `nonstick cluster` hands its settings to
//! its nodes and stops them.

use std::process::Output;

use nonstick::app::{AppKind, BuiltIn};
use nonstick::rpc::Secret;
use nonstick::socketio::{Event, SocketIo, SocketIoConfig, Value};

use crate::fixture::{
    App, Launcher, TestCluster, TestNode, get, open_polling, post, request_with_headers,
    stops_listening,
};

const NONSTICK: &str = env!("CARGO_BIN_EXE_nonstick");

/// A settings file in a temporary directory, kept while the value lives.
struct SettingsFile {
    dir: tempfile::TempDir,
}

impl SettingsFile {
    fn new(text: &str) -> SettingsFile {
        let dir = tempfile::tempdir().expect("temporary directory");
        std::fs::write(dir.path().join("nonstick.toml"), text).expect("write settings");
        SettingsFile { dir }
    }

    fn path(&self) -> String {
        self.dir.path().join("nonstick.toml").display().to_string()
    }
}

async fn nonstick(args: &[&str], env: &[(&str, &str)]) -> Output {
    tokio::process::Command::new(NONSTICK)
        .args(args)
        .envs(env.iter().copied())
        .kill_on_drop(true)
        .output()
        .await
        .expect("run nonstick")
}

/// The value of `key` in the TOML `nonstick config show` printed.
fn shown(output: &Output, key: &str) -> String {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| {
            line.split_once(" = ")
                .filter(|(k, _)| *k == key)
                .map(|(_, v)| v.to_owned())
        })
        .unwrap_or_else(|| panic!("no {key} in {output:?}"))
}

#[tokio::test]
async fn settings_come_from_the_file_then_the_environment_then_flags() {
    let file = SettingsFile::new("ping_interval = 1\nping_timeout = 2\nupgrade_timeout = 3\n");
    let env = [
        ("NONSTICK_PING_TIMEOUT", "20"),
        ("NONSTICK_UPGRADE_TIMEOUT", "30"),
        ("NONSTICK_TRANSPORTS", "websocket"),
        // Not a setting: the tests' own variables share the prefix and are not read.
        ("NONSTICK_PYTHON", "python3"),
    ];
    let flags = [
        "config",
        "show",
        "--config",
        &file.path(),
        "--upgrade-timeout",
        "300",
    ];
    let output = nonstick(&flags, &env).await;
    assert!(output.status.success(), "{output:?}");
    assert_eq!(shown(&output, "ping_interval"), "1");
    assert_eq!(shown(&output, "ping_timeout"), "20");
    assert_eq!(shown(&output, "upgrade_timeout"), "300");
    assert_eq!(shown(&output, "transports"), r#"["websocket"]"#);
    // The same file through NONSTICK_CONFIG.
    let mut env = env.to_vec();
    let path = file.path();
    env.push(("NONSTICK_CONFIG", &path));
    let output = nonstick(&["config", "show"], &env).await;
    assert_eq!(shown(&output, "ping_interval"), "1");
    // The secret is never shown.
    env.push((
        "NONSTICK_SECRET",
        "a-cluster-secret-of-some-length-and-more",
    ));
    let output = nonstick(&["config", "show"], &env).await;
    assert!(!String::from_utf8_lossy(&output.stdout).contains("secret-of"));
}

#[tokio::test]
async fn config_check_names_each_bad_setting_and_its_file() {
    let good = SettingsFile::new("ping_interval = 5000\ncors_origin = \"*\"\napp = \"demo\"\n");
    let output = nonstick(&["config", "check", &good.path()], &[]).await;
    assert!(output.status.success(), "{output:?}");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/nonstick.toml");
    let output = nonstick(&["config", "check", example], &[]).await;
    assert!(output.status.success(), "{output:?}");

    let unknown = SettingsFile::new("ping_intervall = 5000\n");
    let output = nonstick(&["config", "check", &unknown.path()], &[]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("`ping_intervall` is no setting"),
        "{stderr}"
    );
    assert!(stderr.contains("nonstick.toml"), "{stderr}");

    let typed = SettingsFile::new("ping_timeout = \"soon\"\n");
    let output = nonstick(&["config", "check", &typed.path()], &[]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("ping_timeout: invalid type"), "{stderr}");

    let ranges = SettingsFile::new(
        "ping_timeout = 0\ntransports = []\ncookie_same_site = \"lax\"\npeers = \"1=127.0.0.1:5001\"\napp = \"chat\"\nadmin_ui_username = \"admin\"\nadmin_ui_password = \"plain\"\n",
    );
    let output = nonstick(&["config", "check", &ranges.path()], &[]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    for problem in [
        "ping_timeout: must be above 0",
        "transports: name at least one",
        "peers: a cluster node needs id",
        "admin_ui_password: must be a bcrypt hash",
    ] {
        assert!(stderr.contains(problem), "{problem:?} not in {stderr}");
    }

    let output = nonstick(&["config", "check", "no-such-file.toml"], &[]).await;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no-such-file.toml"));
}

/// `nonstick cluster` runs its nodes with the settings it was given (file, environment and
/// flags merged), and Ctrl-C stops all of them with no error lines.
#[tokio::test]
async fn the_cluster_command_hands_its_settings_to_its_nodes_and_stops_them_quietly() {
    let file = SettingsFile::new("max_http_buffer_size = 5000\nping_interval = 9999\n");
    let path = file.path();
    let flags = [
        "--nodes",
        "2",
        "--config",
        &path,
        "--ping-interval",
        "1234",
        "--cookie",
        "--cookie-name",
        "sticky",
        "--cookie-same-site",
        "strict",
        "--recovery=false",
    ];
    let mut launcher = Launcher::start(&flags, &[("NONSTICK_PING_TIMEOUT", "4321")]);
    let addr = launcher.ready().await;
    assert_eq!(launcher.nodes.len(), 2, "{:#?}", launcher.seen);
    for _ in 0..2 {
        // Round robin: each node answers one handshake.
        let url = format!("http://{addr}/socket.io/?EIO=4&transport=polling");
        let open = get(&url).await;
        let handshake: serde_json::Value = serde_json::from_str(&open.body[1..]).expect("json");
        assert_eq!(handshake["pingInterval"], 1234);
        assert_eq!(handshake["pingTimeout"], 4321);
        assert_eq!(handshake["maxPayload"], 5000);
        let sid = handshake["sid"].as_str().expect("sid");
        let cookie = open.header("set-cookie").expect("a cookie");
        assert_eq!(
            cookie,
            format!("sticky={sid}; Path=/; HttpOnly; SameSite=Strict")
        );
        let session = format!("{url}&sid={sid}");
        assert_eq!(post(&session, "40").await.body, "ok");
        let connected = get(&session).await.body;
        assert!(connected.starts_with("40{\"sid\""), "{connected}");
        assert!(!connected.contains("pid"), "recovery is off: {connected}");
    }

    launcher.signal(libc::SIGINT);
    let after = launcher.exit().await;
    for node in launcher.nodes.clone() {
        assert!(stops_listening(node).await, "node {node} still listens");
    }
    let noisy: Vec<_> = after
        .iter()
        .filter(|line| line.contains("ERROR") || line.contains("WARN"))
        .collect();
    assert!(noisy.is_empty(), "lines while stopping: {noisy:#?}");
}

/// A launcher that dies without a word (SIGKILL) takes its nodes with it.
#[tokio::test]
async fn the_nodes_of_a_killed_cluster_command_stop_with_it() {
    let mut launcher = Launcher::start(&["--nodes", "2"], &[]);
    launcher.ready().await;
    launcher.signal(libc::SIGKILL);
    for node in launcher.nodes.clone() {
        assert!(
            stops_listening(node).await,
            "node {node} outlived its launcher"
        );
    }
}

/// A SIGTERM that comes while the nodes start (they are listening, the launcher has not yet
/// seen them healthy) stops the launcher and every node.
#[tokio::test]
async fn a_stop_during_start_up_stops_every_node() {
    let mut launcher = Launcher::start(&["--nodes", "2"], &[]);
    launcher.until("listening on").await;
    launcher.until("listening on").await;
    assert_eq!(launcher.node_pids().len(), 2);
    launcher.signal(libc::SIGTERM);
    launcher.exit().await;
    for node in launcher.nodes.clone() {
        assert!(
            stops_listening(node).await,
            "node {node} outlived its launcher"
        );
    }
}

/// With JSON logs at debug level, a forwarded request is logged under its request id by the
/// node it reached and by the owner that served it.
#[tokio::test]
async fn a_forwarded_request_is_logged_under_one_id_on_both_nodes() {
    let filter = "warn,nonstick::http=debug,nonstick::gateway::service=debug";
    let args = ["--nodes", "2", "--log-format", "json"];
    let mut launcher = Launcher::start_logging(&args, &[], Some(filter));
    let addr = launcher.ready().await;
    let url = format!("http://{addr}/socket.io/?EIO=4&transport=polling");
    let open = get(&url).await;
    let handshake: serde_json::Value = serde_json::from_str(&open.body[1..]).expect("json");
    let session = format!("{url}&sid={}", handshake["sid"].as_str().expect("sid"));
    // Round robin over two nodes: one of any two requests in a row lands on the other node.
    let ids = ["trace-post", "trace-get"];
    let connect = [("x-nonstick-request-id", ids[0])];
    assert_eq!(
        request_with_headers("POST", &session, &connect, "40")
            .await
            .body,
        "ok"
    );
    let poll = [("x-nonstick-request-id", ids[1])];
    let connected = request_with_headers("GET", &session, &poll, "").await.body;
    assert!(connected.starts_with("40"), "{connected}");

    launcher.signal(libc::SIGINT);
    launcher.exit().await;
    let logged: Vec<serde_json::Value> = launcher
        .seen
        .iter()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let nodes_of = |id: &str| {
        let mut nodes: Vec<String> = logged
            .iter()
            .filter_map(|line| line["spans"].as_array())
            .flatten()
            .filter(|span| span["request_id"] == id)
            .map(|span| span["node"].to_string().trim_matches('"').to_owned())
            .collect();
        nodes.sort();
        nodes.dedup();
        nodes
    };
    let hopped: Vec<_> = ids.iter().map(|id| nodes_of(id)).collect();
    assert!(
        hopped.iter().any(|nodes| nodes.len() == 2),
        "no request logged on two nodes: {hopped:?} in {logged:#?}"
    );
}

/// The value of the sample `name` (with its labels, as written) on a metrics page.
fn sample(page: &str, name: &str) -> f64 {
    page.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{page}"))
}

/// `/metrics` shows what operating a cluster needs: the forwarding hop and its latency, Raft's
/// leader and commit latency, sockets per namespace, sessions per transport, refusals by kind,
/// the process's memory.
#[tokio::test]
async fn metrics_show_the_hop_raft_sockets_and_refusals() {
    let cluster = TestCluster::start(3, AppKind::Demo).await;
    let (owner, other) = (&cluster.nodes[0], &cluster.nodes[1]);
    let sid = open_polling(owner, "/socket.io/").await;
    // Connected to "/" through another node: a forwarded POST, then a forwarded GET.
    let through_other = other.url(&format!("/socket.io/?EIO=4&transport=polling&sid={sid}"));
    assert_eq!(post(&through_other, "40").await.body, "ok");
    assert!(get(&through_other).await.body.starts_with("40"));
    let unknown = other.url("/socket.io/?EIO=4&transport=polling&sid=nobody");
    assert_eq!(get(&unknown).await.status, 400);

    let forwarder = get(&other.url("/metrics")).await.body;
    assert_eq!(
        sample(
            &forwarder,
            r#"nonstick_forward_seconds_count{method="post"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &forwarder,
            r#"nonstick_forward_seconds_count{method="get"}"#
        ),
        1.0
    );
    assert!(sample(&forwarder, r#"nonstick_errors_total{kind="unknown_sid"}"#) >= 1.0);
    assert!(sample(&forwarder, "process_resident_memory_bytes") > 0.0);
    let page = get(&owner.url("/metrics")).await.body;
    assert_eq!(
        sample(
            &page,
            r#"nonstick_sessions{path="/socket.io/",transport="polling"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &page,
            r#"nonstick_sockets{path="/socket.io/",namespace="/"}"#
        ),
        1.0
    );
    let mut leaders = 0.0;
    let mut commits = 0.0;
    let mut pages = String::new();
    for node in &cluster.nodes {
        let page = get(&node.url("/metrics")).await.body;
        pages.push_str(&page);
        leaders += sample(&page, "nonstick_raft_is_leader");
        commits += sample(
            &page,
            r#"nonstick_raft_commit_seconds_count{registry="sessions"}"#,
        );
        assert!(sample(&page, "nonstick_raft_term") >= 1.0);
        assert!(sample(&page, "nonstick_registry_sessions") >= 0.0);
    }
    assert_eq!(leaders, 1.0);
    assert!(commits >= 1.0, "the session's birth was committed");
    // Every metric the Grafana dashboard of deploy/ plots is on the pages.
    let dashboard = include_str!("../../deploy/grafana/nonstick.json");
    let mut plotted: Vec<&str> = dashboard
        .match_indices("nonstick_")
        .chain(dashboard.match_indices("process_"))
        .map(|(at, _)| {
            let rest = &dashboard[at..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect();
    plotted.sort_unstable();
    plotted.dedup();
    assert!(plotted.len() >= 15, "{plotted:?}");
    for name in plotted {
        let shown = pages.lines().any(|line| {
            line.starts_with(&format!("{name}{{")) || line.starts_with(&format!("{name} "))
        });
        assert!(shown, "the dashboard plots {name}, which no node shows");
    }
    cluster.stop().await;
}

/// Handshakes past an address's rate are refused with 429 and code 4, counted; other
/// addresses go on.
#[tokio::test]
async fn handshakes_past_an_address_rate_are_refused_and_other_addresses_go_on() {
    let mut config = BuiltIn::base_config();
    config.max_handshakes_per_second = 3;
    let node = TestNode::start_with(AppKind::Demo, config).await;
    let url = node.url("/socket.io/?EIO=4&transport=polling");
    let from = |addr: &'static str| [("x-forwarded-for", addr)];
    let mut refused = 0;
    let started = std::time::Instant::now();
    for _ in 0..12 {
        let reply = request_with_headers("GET", &url, &from("10.0.0.1"), "").await;
        match reply.status {
            200 => {}
            429 => {
                let body: serde_json::Value = serde_json::from_str(&reply.body).expect("json");
                assert_eq!(body["code"], 4, "{}", reply.body);
                refused += 1;
            }
            other => panic!("{other}: {}", reply.body),
        }
    }
    // At most three pass in each one-second window the twelve spanned.
    let windows = started.elapsed().as_secs() + 2;
    assert!(
        refused > 0 && 12 - refused <= 3 * windows,
        "{refused} refused"
    );
    let other = request_with_headers("GET", &url, &from("10.0.0.2"), "").await;
    assert_eq!(other.status, 200, "{}", other.body);
    let page = get(&node.url("/metrics")).await.body;
    let counted = sample(
        &page,
        r#"nonstick_limited_total{limit="handshakes_per_second"}"#,
    );
    assert!(
        counted >= refused as f64,
        "{counted} counted, {refused} refused"
    );
    node.stop().await;
}

/// A connection past its namespaces gets CONNECT_ERROR for the one too many and keeps the
/// others; a socket past its rooms is not put in the ones too many. Both are counted.
#[tokio::test]
async fn namespaces_and_rooms_past_their_limits_are_refused_and_counted() {
    let io = SocketIo::new(SocketIoConfig {
        max_namespaces: 2,
        max_rooms: 3,
        ..SocketIoConfig::default()
    });
    io.dynamic(|_| true).on_connect(|socket| async move {
        for room in ["a", "b", "c", "d", "e"] {
            socket.join(room);
        }
        socket.on("rooms", |socket, event: Event| async move {
            if let Some(ack) = event.ack {
                ack.send(Value::from(socket.rooms().len() as u64));
            }
        });
    });
    let node = TestNode::serve(io).await;
    let sid = open_polling(&node, "/socket.io/").await;
    let url = node.url(&format!("/socket.io/?EIO=4&transport=polling&sid={sid}"));
    assert_eq!(
        post(&url, "40/one,\u{1e}40/two,\u{1e}40/three,").await.body,
        "ok"
    );
    let mut answers = String::new();
    while answers.matches('4').count() < 3 {
        answers.push_str(&get(&url).await.body);
        answers.push('\u{1e}');
    }
    assert!(answers.contains("40/one,{"), "{answers}");
    assert!(answers.contains("40/two,{"), "{answers}");
    assert!(
        answers.contains(r#"44/three,{"message":"Too many namespaces"}"#),
        "{answers}"
    );
    assert_eq!(post(&url, r#"42/one,7["rooms"]"#).await.body, "ok");
    // Its own room and three of the five.
    assert_eq!(get(&url).await.body, "43/one,7[4]");
    let page = get(&node.url("/metrics")).await.body;
    let limited = |limit: &str| {
        sample(
            &page,
            &format!(r#"nonstick_limited_total{{limit="{limit}"}}"#),
        )
    };
    assert_eq!(limited("namespaces_per_client"), 1.0);
    assert_eq!(
        limited("rooms_per_socket"),
        4.0,
        "two refused per socket, two sockets"
    );
    node.stop().await;
}

/// In the middle of a secret rotation, nodes that send the old secret and nodes that send the
/// new one serve each other's sessions: each accepts the other's as its previous or next.
#[tokio::test]
async fn nodes_midway_through_a_secret_rotation_serve_each_others_sessions() {
    const OLD: &str = "old-cluster-secret-0123456789abcdef";
    const NEW: &str = "new-cluster-secret-0123456789abcdef";
    let peer = |id: u64| {
        let (sends, accepts) = if id == 1 { (OLD, NEW) } else { (NEW, OLD) };
        let secret = Secret::new(sends).and_then(|s| s.accepting(accepts));
        (secret.expect("secret"), None)
    };
    let app = |_| (App::built_in(AppKind::Demo), BuiltIn::base_config());
    let cluster = TestCluster::start_with_peers(3, &[], app, peer).await;
    for (owner, other) in [(0, 1), (1, 0), (2, 0)] {
        cluster.serves_across(owner, other).await;
    }
    cluster.stop().await;
}
