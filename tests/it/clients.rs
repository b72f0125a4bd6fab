//! The official clients against the demo app on a real node: socket.io-client 4.8 from Node
//! (polling only, websocket only, default upgrade), python-socketio (polling, websocket), and
//! the chat page in headless Chromium (default and polling only); and the same clients through
//! a round-robin balancer in front of three cluster nodes.
//!
//! The batteries live in `tests/clients/`; each prints `ok - …` / `not ok - …` lines and exits
//! non-zero if any check failed. `scripts/test` installs what they need and sets
//! `NONSTICK_NODE`, `NONSTICK_PYTHON` and `NONSTICK_CHROMIUM`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nonstick::app::{AppKind, BuiltIn};
use nonstick::config::Config;
use nonstick::socketio::Parser;
use tokio::process::Command;

use nonstick::balancer::RunningBalancer;

use crate::fixture::{App, TestCluster, TestNode, round_robin};

/// A battery ends by itself within about a minute; this only guards against a stuck process.
const BATTERY_LIMIT: Duration = Duration::from_secs(120);

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn node_bin() -> String {
    std::env::var("NONSTICK_NODE").unwrap_or_else(|_| "node".to_owned())
}

fn python_bin() -> PathBuf {
    std::env::var_os("NONSTICK_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv/bin/python"))
}

/// Fail with a clear message, rather than a confusing one from the battery, when the test
/// dependencies were not installed.
fn require(path: &Path) {
    assert!(
        path.exists(),
        "{} is missing: run `scripts/test --deps-only` (or `scripts/test`) first",
        path.display()
    );
}

/// Run one battery against the server at `url` and fail the test with its output unless every
/// check passed.
async fn battery(url: &str, program: &Path, args: &[&str]) {
    battery_with_env(url, program, args, &[]).await;
}

async fn battery_with_env(url: &str, program: &Path, args: &[&str], env: &[(&str, &str)]) {
    let mut command = Command::new(program);
    command
        .args(args)
        .envs(env.iter().copied())
        .args(["--url", url])
        .current_dir(repo())
        .kill_on_drop(true);
    let output = tokio::time::timeout(BATTERY_LIMIT, command.output())
        .await
        .unwrap_or_else(|_| panic!("{} {args:?} did not finish", program.display()))
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{args:?} against {url} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        stdout.lines().any(|l| l.contains(" passed, 0 failed")) && stdout.contains("ok - "),
        "{args:?}: no passing summary in:\n{stdout}"
    );
}

async fn js_battery(script: &str, args: &[&str]) {
    js_battery_with(BuiltIn::base_config(), script, args).await;
}

async fn js_battery_with(config: Config, script: &str, args: &[&str]) {
    require(&repo().join("tests/clients/node_modules"));
    require(&repo().join("web/node_modules"));
    let node = TestNode::start_with(AppKind::Demo, config).await;
    run_js(&node.url(""), script, args).await;
    node.stop().await;
}

async fn run_js(url: &str, script: &str, args: &[&str]) {
    run_js_with_env(url, script, args, &[]).await;
}

/// A battery of `tests/clients` run by Node against `url`, with `env` set for it.
pub async fn run_js_with_env(url: &str, script: &str, args: &[&str], env: &[(&str, &str)]) {
    require(&repo().join("tests/clients/node_modules"));
    let script = format!("tests/clients/{script}");
    let mut all = vec![script.as_str()];
    all.extend_from_slice(args);
    battery_with_env(url, Path::new(&node_bin()), &all, env).await;
}

/// Three cluster nodes behind the embedded balancer choosing a node per request.
async fn balanced_cluster(app: BuiltIn, config: Config) -> (TestCluster, RunningBalancer) {
    let cluster =
        TestCluster::start_with(3, &[], |_| (App::built_in_as(app.clone()), config.clone())).await;
    let balancer = round_robin(cluster.nodes.iter().map(|n| n.addr()).collect()).await;
    (cluster, balancer)
}

async fn cluster_js_battery(script: &str, args: &[&str]) {
    cluster_js_battery_with(BuiltIn::base_config(), script, args).await;
}

async fn cluster_js_battery_with(config: Config, script: &str, args: &[&str]) {
    cluster_js_battery_of(BuiltIn::new(AppKind::Demo), config, script, args).await;
}

async fn cluster_js_battery_of(app: BuiltIn, config: Config, script: &str, args: &[&str]) {
    require(&repo().join("tests/clients/node_modules"));
    require(&repo().join("web/node_modules"));
    let (cluster, balancer) = balanced_cluster(app, config).await;
    run_js(&format!("http://{}", balancer.addr()), script, args).await;
    balancer.shutdown().await.expect("balancer shutdown");
    // The point of the cluster: behind a balancer with no affinity, no request of any client
    // was answered "Session ID unknown".
    for node in &cluster.nodes {
        let unknown: u64 = node
            .node()
            .engines()
            .iter()
            .map(|e| e.metrics().unknown_sid)
            .sum();
        assert_eq!(
            unknown,
            0,
            "node {} answered Session ID unknown",
            node.addr()
        );
    }
    cluster.stop().await;
}

async fn python_battery(transport: &str) {
    let python = python_bin();
    require(&python);
    let node = TestNode::start(AppKind::Demo).await;
    let args = [
        "tests/clients/python/sio_client.py",
        "--transport",
        transport,
    ];
    battery(&node.url(""), &python, &args).await;
    node.stop().await;
}

#[tokio::test]
async fn socket_io_client_over_polling() {
    js_battery("sio-client.mjs", &["--transports", "polling"]).await;
}

#[tokio::test]
async fn socket_io_client_over_websocket() {
    js_battery("sio-client.mjs", &["--transports", "websocket"]).await;
}

#[tokio::test]
async fn socket_io_client_with_upgrade() {
    js_battery("sio-client.mjs", &["--transports", "default"]).await;
}

/// A server and its clients set up with socket.io-msgpack-parser: every packet one msgpack
/// binary message.
fn msgpack_config() -> Config {
    let mut config = BuiltIn::base_config();
    config.socketio.parser = Parser::Msgpack;
    config
}

#[tokio::test]
async fn socket_io_client_with_the_msgpack_parser() {
    let args = ["--transports", "default", "--parser", "msgpack"];
    js_battery_with(msgpack_config(), "sio-client.mjs", &args).await;
}

#[tokio::test]
async fn socket_io_client_with_the_msgpack_parser_over_polling_through_a_round_robin_cluster() {
    let args = [
        "--transports",
        "polling",
        "--cluster",
        "--parser",
        "msgpack",
    ];
    cluster_js_battery_with(msgpack_config(), "sio-client.mjs", &args).await;
}

#[tokio::test]
async fn python_socketio_over_polling() {
    python_battery("polling").await;
}

#[tokio::test]
async fn python_socketio_over_websocket() {
    python_battery("websocket").await;
}

#[tokio::test]
async fn chat_page_in_chromium() {
    js_battery("chat-page.mjs", &[]).await;
}

#[tokio::test]
async fn chat_page_in_chromium_over_polling() {
    js_battery("chat-page.mjs", &["--transports", "polling"]).await;
}

#[tokio::test]
async fn socket_io_client_over_polling_through_a_round_robin_cluster() {
    cluster_js_battery("sio-client.mjs", &["--transports", "polling", "--cluster"]).await;
}

#[tokio::test]
async fn socket_io_client_with_upgrade_through_a_round_robin_cluster() {
    cluster_js_battery("sio-client.mjs", &["--transports", "default", "--cluster"]).await;
}

/// The cluster page in Chromium, its socket on polling through round robin: every node, the
/// leader, the sessions, the forwarded requests.
#[tokio::test]
async fn cluster_page_in_chromium_through_a_round_robin_cluster() {
    let args = ["--nodes", "3", "--transports", "polling"];
    cluster_js_battery("cluster-page.mjs", &args).await;
}

/// The official Socket.IO Admin UI, served by the demo, shows the servers, sockets and rooms of
/// all three nodes through round robin.
#[tokio::test]
async fn admin_ui_in_chromium_shows_every_node_through_a_round_robin_cluster() {
    let settings = nonstick::config::Settings {
        admin_ui: true,
        ..BuiltIn::base_settings()
    };
    let app = BuiltIn::from_settings(&settings).expect("settings");
    let args = ["--nodes", "3"];
    cluster_js_battery_of(app, BuiltIn::base_config(), "admin-ui.mjs", &args).await;
}

/// The Admin UI's login through round robin: the password checked against its bcrypt hash,
/// and the session token it brings accepted by every node.
#[tokio::test]
async fn admin_ui_login_and_its_session_token_hold_on_every_node() {
    let password = "correct horse battery";
    let settings = nonstick::config::Settings {
        admin_ui: true,
        admin_ui_username: Some("admin".to_owned()),
        // The cheapest cost bcrypt allows: the test checks the login, not bcrypt.
        admin_ui_password: Some(bcrypt::hash(password, 4).expect("bcrypt hash")),
        ..BuiltIn::base_settings()
    };
    let app = BuiltIn::from_settings(&settings).expect("settings");
    let args = [
        "--nodes",
        "3",
        "--username",
        "admin",
        "--password",
        password,
    ];
    cluster_js_battery_of(app, BuiltIn::base_config(), "admin-ui-login.mjs", &args).await;
}

#[tokio::test]
async fn chat_page_over_polling_through_a_round_robin_cluster() {
    cluster_js_battery("chat-page.mjs", &["--transports", "polling"]).await;
}

#[tokio::test]
async fn python_socketio_over_polling_through_a_round_robin_cluster() {
    let python = python_bin();
    require(&python);
    let demo = BuiltIn::new(AppKind::Demo);
    let (cluster, balancer) = balanced_cluster(demo, BuiltIn::base_config()).await;
    let args = [
        "tests/clients/python/sio_client.py",
        "--transport",
        "polling",
    ];
    battery(&format!("http://{}", balancer.addr()), &python, &args).await;
    balancer.shutdown().await.expect("balancer shutdown");
    cluster.stop().await;
}

/// nginx with a plain round-robin `upstream` over the nodes (no `ip_hash`, no `hash`, no
/// sticky), started on a free loopback port and stopped by the test.
struct Nginx {
    child: tokio::process::Child,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Nginx {
    async fn start(backends: &[std::net::SocketAddr]) -> Nginx {
        let nginx = std::env::var_os("NONSTICK_NGINX")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/sbin/nginx"));
        require(&nginx);
        let dir = tempfile::tempdir().expect("tempdir");
        let (child, addr) = nonstick::bench::setup::nginx(&nginx, dir.path(), backends, false)
            .await
            .expect("start nginx");
        Nginx {
            child,
            addr,
            _dir: dir,
        }
    }

    /// A fast shutdown by the master (SIGTERM), which also ends its workers; killed if it takes
    /// too long.
    async fn stop(mut self) {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: kill(2) on the nginx master we started and have not reaped.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// The battery through nginx round-robin, with upgrade and without. With upgrade it also
/// checks that a server-side close while socket.io-client is still upgrading, its polling
/// requests and its probe passing different nodes, reaches the client at once (20 closes): a
/// close that came after the probe was answered, while the client paused its polling to
/// switch, used to close the probe and leave the client waiting for its heartbeat (about one
/// close in 40 on a loaded machine).
#[tokio::test]
async fn socket_io_client_over_polling_through_nginx_round_robin() {
    require(&repo().join("tests/clients/node_modules"));
    let cluster = TestCluster::start(3, AppKind::Demo).await;
    let backends: Vec<_> = cluster.nodes.iter().map(|n| n.addr()).collect();
    let nginx = Nginx::start(&backends).await;
    for transports in ["polling", "default"] {
        run_js(
            &format!("http://{}", nginx.addr),
            "sio-client.mjs",
            &[
                "--transports",
                transports,
                "--cluster",
                "--upgrade-closes",
                "20",
            ],
        )
        .await;
    }
    nginx.stop().await;
    cluster.stop().await;
}
