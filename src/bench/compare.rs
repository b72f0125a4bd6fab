//! A comparison in one run: start every setup, run the scenarios interleaved (each step on setup
//! A, then B, …, round after round) so that the machine's noise hits them alike, stop
//! everything, and report medians, ratios and the goals they are held against.

use std::time::Duration;

use serde::Serialize;

use super::client::{Target, Transport};
use super::cpu;
use super::scenario::{self, Load};
use super::setup::{Setup, SetupKind, Tools};
use super::stats::Report;

/// How big each scenario is.
#[derive(Debug, Clone, Serialize)]
pub struct Sizes {
    /// Sessions opened by `connect`.
    pub connect_sessions: usize,
    /// Handshakes under way at once in `connect`.
    pub connect_concurrency: usize,
    /// Clients of `echo`.
    pub echo_clients: usize,
    /// Bytes of the `echo` payload.
    pub echo_payload: usize,
    /// How long `echo` runs.
    pub echo_duration: Duration,
    /// Receivers of `broadcast`.
    pub broadcast_receivers: usize,
    /// Messages `broadcast` sends.
    pub broadcast_messages: usize,
    /// Time between two of them.
    pub broadcast_interval: Duration,
    /// Sessions `idle` holds.
    pub idle_sessions: usize,
    /// How long `idle` holds them before measuring.
    pub idle_hold: Duration,
}

impl Sizes {
    /// The sizes of the published report.
    pub fn standard() -> Sizes {
        Sizes {
            connect_sessions: 2000,
            connect_concurrency: 50,
            echo_clients: 50,
            echo_payload: 64,
            echo_duration: Duration::from_secs(10),
            broadcast_receivers: 100,
            broadcast_messages: 200,
            broadcast_interval: Duration::from_millis(20),
            idle_sessions: 5000,
            idle_hold: Duration::from_secs(5),
        }
    }

    /// Tiny sizes that exercise every code path in seconds (CI's smoke run).
    pub fn smoke() -> Sizes {
        Sizes {
            connect_sessions: 20,
            connect_concurrency: 5,
            echo_clients: 4,
            echo_payload: 16,
            echo_duration: Duration::from_millis(500),
            broadcast_receivers: 6,
            broadcast_messages: 10,
            broadcast_interval: Duration::from_millis(10),
            idle_sessions: 20,
            idle_hold: Duration::from_millis(200),
        }
    }
}

/// What to compare.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The setups, in report order.
    pub setups: Vec<SetupKind>,
    /// How many times each step runs on each setup.
    pub rounds: usize,
    /// Scenario sizes.
    pub sizes: Sizes,
    /// Where the programs are.
    pub tools: Tools,
    /// Spread clients over 127.0.0.2–127.0.0.254 (needed for IP-hash balancers to spread).
    pub spread_sources: bool,
}

/// One step of a round: a scenario on one transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Connect(Transport),
    Echo(Transport),
    Broadcast(Transport),
    Idle(Transport),
}

impl Step {
    fn key(self) -> String {
        let (name, transport) = match self {
            Step::Connect(t) => ("connect", t),
            Step::Echo(t) => ("echo", t),
            Step::Broadcast(t) => ("broadcast", t),
            Step::Idle(t) => ("idle", t),
        };
        format!("{name}/{}", transport.as_str())
    }

    async fn run(self, load: &Load, sizes: &Sizes, pids: &[u32]) -> Report {
        match self {
            Step::Connect(t) => {
                let limit = Duration::from_secs(120);
                let (n, c) = (sizes.connect_sessions, sizes.connect_concurrency);
                scenario::connect(load, t, n, c, limit).await
            }
            Step::Echo(t) => {
                let (c, p, d) = (sizes.echo_clients, sizes.echo_payload, sizes.echo_duration);
                scenario::echo(load, t, c, p, d).await
            }
            Step::Broadcast(t) => {
                let (r, m) = (sizes.broadcast_receivers, sizes.broadcast_messages);
                scenario::broadcast(load, t, r, m, sizes.broadcast_interval).await
            }
            Step::Idle(t) => {
                let (n, hold) = (sizes.idle_sessions, sizes.idle_hold);
                scenario::idle(load, t, n, hold, pids).await
            }
        }
    }
}

/// The steps of every round.
const ROUND: [Step; 5] = [
    Step::Connect(Transport::Polling),
    Step::Echo(Transport::Polling),
    Step::Echo(Transport::Websocket),
    Step::Echo(Transport::Upgrade),
    Step::Broadcast(Transport::Polling),
];
/// Run once per setup, before the rounds: on fresh processes, so that memory the earlier
/// scenarios freed (and allocators or the V8 heap kept) does not hide what sessions take.
const FIRST: Step = Step::Idle(Transport::Websocket);

/// The prefix of a report's CPU numbers: `cpu_us_per_op:<role>` is the CPU microseconds the
/// process in that role used per operation, `cpu_us_per_op:total` their sum.
const CPU: &str = "cpu_us_per_op:";
/// Websockets a cluster's nodes relayed to another node during a step (the upgrade's fallback).
const RELAYS: &str = "websocket_relays";
/// Sessions a cluster's nodes moved to their websocket's node during a step.
const PULLS: &str = "sessions_pulled";

/// One scenario run on one setup.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    /// The setup's name.
    pub setup: String,
    /// `scenario/transport`.
    pub key: String,
    /// The round (0-based).
    pub round: usize,
    /// What it measured.
    pub report: Report,
}

/// Everything a comparison measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Comparison {
    /// Every run, in the order they ran.
    pub measurements: Vec<Measurement>,
    /// Setups that could not run here, with the reason.
    pub skipped: Vec<(String, String)>,
    /// The setups that ran, in report order.
    pub setups: Vec<String>,
}

/// Run the comparison; `progress` gets a line per step.
pub async fn run(plan: &Plan, mut progress: impl FnMut(&str)) -> std::io::Result<Comparison> {
    let mut comparison = Comparison::default();
    let mut running = Vec::new();
    for kind in &plan.setups {
        if let Some(why) = plan.tools.missing_for(*kind) {
            progress(&format!("skipping {}: {why}", kind.name()));
            comparison.skipped.push((kind.name().to_owned(), why));
            continue;
        }
        match Setup::start(*kind, &plan.tools).await {
            Ok(setup) => {
                progress(&format!("started {} at {}", kind.name(), setup.addr));
                comparison.setups.push(kind.name().to_owned());
                running.push(setup);
            }
            Err(e) => {
                for setup in running {
                    setup.stop().await;
                }
                return Err(std::io::Error::other(format!(
                    "starting {}: {e}",
                    kind.name()
                )));
            }
        }
    }
    let load = |setup: &Setup| Load {
        target: Target {
            addr: setup.addr,
            path: "/socket.io/".to_owned(),
            transport: Transport::Polling,
            source: None,
            timeout: Duration::from_secs(10),
        },
        sources: if plan.spread_sources {
            Load::loopback_sources()
        } else {
            Vec::new()
        },
    };
    let mut record = |comparison: &mut Comparison, setup: &Setup, step: Step, round, report| {
        let m = Measurement {
            setup: setup.kind.name().to_owned(),
            key: step.key(),
            round,
            report,
        };
        progress(&format!("{:<22} r{round} {}", m.setup, m.report.line()));
        comparison.measurements.push(m);
    };
    for setup in &running {
        let report = FIRST.run(&load(setup), &plan.sizes, &setup.pids).await;
        record(&mut comparison, setup, FIRST, 0, report);
    }
    for round in 0..plan.rounds.max(1) {
        for step in ROUND {
            for setup in &running {
                let moves_before = setup.moves().await;
                let before = cpu::sample(&setup.processes);
                let mut report = step.run(&load(setup), &plan.sizes, &setup.pids).await;
                let after = cpu::sample(&setup.processes);
                for (role, us) in cpu::per_op(&setup.processes, &before, &after, report.ops) {
                    report.extra.insert(format!("{CPU}{role}"), us);
                }
                if let (Some(b), Some(a)) = (moves_before, setup.moves().await) {
                    report.extra.insert(RELAYS.to_owned(), a.relays - b.relays);
                    report.extra.insert(PULLS.to_owned(), a.pulls - b.pulls);
                }
                record(&mut comparison, setup, step, round, report);
            }
        }
    }
    for setup in running {
        setup.stop().await;
    }
    Ok(comparison)
}

/// The CPU µs per operation of the process in `role` (`total`: all of them); NaN when not
/// measured.
fn cpu_of(report: &Report, role: &str) -> f64 {
    report
        .extra
        .get(&format!("{CPU}{role}"))
        .copied()
        .unwrap_or(f64::NAN)
}

/// The CPU µs per operation of the nodes (`node1`, `node2`, …) together.
fn nodes_cpu(report: &Report) -> f64 {
    report
        .extra
        .iter()
        .filter(|(k, _)| {
            k.strip_prefix(CPU)
                .is_some_and(|role| role.starts_with("node"))
        })
        .map(|(_, us)| us)
        .sum()
}

/// A goal of the report: a ratio (or count) and the bound it must meet.
#[derive(Debug, Clone, Serialize)]
pub struct Goal {
    /// What is compared.
    pub name: String,
    /// The bound, as text (`≥ 0.8`).
    pub bound: String,
    /// The measured value, when both sides ran.
    pub value: Option<f64>,
    /// Whether the value meets the bound.
    pub met: Option<bool>,
}

impl Comparison {
    /// The median over rounds of `metric` for `setup` and step `key` (runs where it is NaN,
    /// not measured, left out).
    pub fn median(&self, setup: &str, key: &str, metric: impl Fn(&Report) -> f64) -> Option<f64> {
        let mut values: Vec<f64> = self
            .measurements
            .iter()
            .filter(|m| m.setup == setup && m.key == key)
            .map(|m| metric(&m.report))
            .filter(|v| !v.is_nan())
            .collect();
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        Some(values[values.len() / 2])
    }

    /// `Session ID unknown` answers seen by the clients of `setup`, over all runs.
    pub fn session_id_unknown(&self, setup: &str) -> u64 {
        self.measurements
            .iter()
            .filter(|m| m.setup == setup)
            .map(|m| m.report.errors.session_id_unknown())
            .sum()
    }

    /// The keys of the steps that ran, in order.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = Vec::new();
        for m in &self.measurements {
            if !keys.contains(&m.key) {
                keys.push(m.key.clone());
            }
        }
        keys
    }

    /// The goals of the report, measured.
    pub fn goals(&self) -> Vec<Goal> {
        let rr = SetupKind::RoundRobin.name();
        let sticky = SetupKind::Sticky.name();
        let node = SetupKind::NodeCluster.name();
        let rate = |r: &Report| r.rate;
        let p99 = |r: &Report| r.latency.p99_ms;
        let p50 = |r: &Report| r.latency.p50_ms;
        let per_session = |r: &Report| r.extra.get("rss_bytes_per_session").copied().unwrap_or(0.0);
        let ratio = |a: &str, b: &str, key: &str, metric: &dyn Fn(&Report) -> f64| {
            let (a, b) = (self.median(a, key, metric)?, self.median(b, key, metric)?);
            (b > 0.0).then(|| a / b)
        };
        let at_least = |x: f64| move |v: f64| v >= x;
        let at_most = |x: f64| move |v: f64| v <= x;
        let goal = |name: &str, bound: &str, value: Option<f64>, ok: &dyn Fn(f64) -> bool| Goal {
            name: name.to_owned(),
            bound: bound.to_owned(),
            value,
            met: value.map(ok),
        };
        let unknown: Option<f64> = {
            let nonstick: Vec<&String> = self
                .setups
                .iter()
                .filter(|s| SetupKind::parse(s).is_some_and(SetupKind::is_nonstick))
                .collect();
            (!nonstick.is_empty()).then(|| {
                nonstick
                    .iter()
                    .map(|s| self.session_id_unknown(s))
                    .sum::<u64>() as f64
            })
        };
        let memory = ratio(
            SetupKind::Single.name(),
            SetupKind::NodeSingle.name(),
            "idle/websocket",
            &per_session,
        );
        let echo = "echo/polling";
        let upgraded = "echo/upgrade";
        let cpu = |setup: &str, role: &str| self.median(setup, echo, |r| cpu_of(r, role));
        let nodes = |setup: &str| self.median(setup, echo, nodes_cpu);
        // Each polling echo is two requests (the POST of the emit, the GET of its ack), and
        // per-request round-robin over three nodes lands two in three on a node that does not
        // own the session.
        let forwarded_per_echo = 2.0 * 2.0 / 3.0;
        let per_forward = nodes(rr)
            .zip(nodes(sticky))
            .map(|(rr, sticky)| (rr - sticky) / forwarded_per_echo);
        let balancer_vs_nginx = cpu(rr, "balancer")
            .zip(cpu(SetupKind::NginxRoundRobin.name(), "nginx"))
            .and_then(|(ours, nginx)| (nginx > 0.0).then(|| ours / nginx));
        vec![
            goal(
                "CPU µs per polling echo, round-robin setup (balancer + nodes)",
                "≤ 90",
                cpu(rr, "total"),
                &at_most(90.0),
            ),
            goal(
                "node CPU µs per sticky polling echo",
                "≤ 40",
                nodes(sticky),
                &at_most(40.0),
            ),
            goal(
                "extra node CPU µs per forwarded request",
                "≤ 15",
                per_forward,
                &at_most(15.0),
            ),
            goal(
                "embedded balancer CPU per request ÷ nginx's",
                "≤ 1",
                balancer_vs_nginx,
                &at_most(1.0),
            ),
            goal(
                "polling echo acks/s, round-robin ÷ own sticky",
                "≥ 0.9",
                ratio(rr, sticky, "echo/polling", &rate),
                &at_least(0.9),
            ),
            goal(
                "upgraded echo acks/s, round-robin ÷ own sticky",
                "≥ 0.9",
                ratio(rr, sticky, upgraded, &rate),
                &at_least(0.9),
            ),
            goal(
                "websockets relayed across nodes in upgraded echo, round-robin",
                "0",
                self.median(rr, upgraded, |r| {
                    r.extra.get(RELAYS).copied().unwrap_or(f64::NAN)
                }),
                &|v| v == 0.0,
            ),
            goal(
                "polling echo RTT p99, round-robin ÷ own sticky",
                "≤ 1.5",
                ratio(rr, sticky, "echo/polling", &p99),
                &at_most(1.5),
            ),
            goal(
                "connect p50 latency, round-robin ÷ own sticky",
                "≤ 1.5",
                ratio(rr, sticky, "connect/polling", &p50),
                &at_most(1.5),
            ),
            goal(
                "`Session ID unknown`, any nonstick setup",
                "0",
                unknown,
                &|v| v == 0.0,
            ),
            goal(
                "polling echo acks/s, nonstick round-robin ÷ Node sticky",
                "≥ 3",
                ratio(rr, node, "echo/polling", &rate),
                &at_least(3.0),
            ),
            goal(
                "websocket echo acks/s, nonstick round-robin ÷ Node sticky",
                "≥ 2",
                ratio(rr, node, "echo/websocket", &rate),
                &at_least(2.0),
            ),
            goal(
                "connects/s (polling), nonstick round-robin ÷ Node sticky",
                "≥ 3",
                ratio(rr, node, "connect/polling", &rate),
                &at_least(3.0),
            ),
            goal(
                "resident memory per idle websocket session, nonstick ÷ Node (one process each)",
                "≤ 0.25",
                memory,
                &at_most(0.25),
            ),
        ]
    }

    /// The medians per setup and step, as a Markdown table.
    pub fn table(&self) -> String {
        let mut out = String::from(
            "| setup | scenario | ops/s | p50 ms | p90 ms | p99 ms | max ms | errors | Session ID unknown | CPU µs/op | notes |\n\
             |---|---|---:|---:|---:|---:|---:|---:|---:|---|---|\n",
        );
        for key in self.keys() {
            for setup in &self.setups {
                let Some(rate) = self.median(setup, &key, |r| r.rate) else {
                    continue;
                };
                let med = |f: fn(&Report) -> f64| self.median(setup, &key, f).unwrap_or(0.0);
                let errors: u64 = self
                    .measurements
                    .iter()
                    .filter(|m| &m.setup == setup && m.key == key)
                    .map(|m| m.report.errors.total())
                    .sum();
                let unknown: u64 = self
                    .measurements
                    .iter()
                    .filter(|m| &m.setup == setup && m.key == key)
                    .map(|m| m.report.errors.session_id_unknown())
                    .sum();
                let notes = self.notes(setup, &key);
                let cpu = self.cpu_note(setup, &key);
                out.push_str(&format!(
                    "| {setup} | {key} | {rate:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {errors} | {unknown} | {cpu} | {notes} |\n",
                    med(|r| r.latency.p50_ms),
                    med(|r| r.latency.p90_ms),
                    med(|r| r.latency.p99_ms),
                    med(|r| r.latency.max_ms),
                ));
            }
        }
        out
    }

    /// The median CPU µs per operation of the setup's processes: the total, then each process
    /// (`total (node1 27, node2 27, node3 28, balancer 55)`); empty when not measured.
    fn cpu_note(&self, setup: &str, key: &str) -> String {
        let Some(m) = self
            .measurements
            .iter()
            .find(|m| m.setup == setup && m.key == key)
        else {
            return String::new();
        };
        let roles: Vec<&str> = m
            .report
            .extra
            .keys()
            .filter_map(|k| k.strip_prefix(CPU))
            .filter(|role| *role != "total")
            .collect();
        let Some(total) = self.median(setup, key, |r| cpu_of(r, "total")) else {
            return String::new();
        };
        let parts: Vec<String> = roles
            .iter()
            .filter_map(|role| {
                let us = self.median(setup, key, |r| cpu_of(r, role))?;
                Some(format!("{role} {us:.0}"))
            })
            .collect();
        format!("{total:.0} ({})", parts.join(", "))
    }

    /// Scenario-specific medians (delivery ratio, memory per session) for the table.
    fn notes(&self, setup: &str, key: &str) -> String {
        let extra = |name: &str| {
            self.median(setup, key, |r| {
                r.extra.get(name).copied().unwrap_or(f64::NAN)
            })
            .filter(|v| !v.is_nan())
        };
        let mut notes = Vec::new();
        if let Some(ratio) = extra("delivery_ratio") {
            notes.push(format!("delivered {:.2} %", ratio * 100.0));
        }
        if let Some(dups) = extra("duplicates").filter(|d| *d > 0.0) {
            notes.push(format!("{dups} duplicates"));
        }
        if key.ends_with("/upgrade")
            && let (Some(pulls), Some(relays)) = (extra(PULLS), extra(RELAYS))
        {
            notes.push(format!("{pulls} sessions moved, {relays} relayed"));
        }
        if let Some(bytes) = extra("rss_bytes_per_session") {
            notes.push(format!("{:.1} KiB RSS per session", bytes / 1024.0));
        }
        notes.join(", ")
    }

    /// The goals as a Markdown table.
    pub fn goals_table(&self) -> String {
        let mut out = String::from("| ratio | goal | measured | met |\n|---|---|---:|---|\n");
        for goal in self.goals() {
            let value = goal
                .value
                .map_or_else(|| "not run".to_owned(), |v| format!("{v:.2}"));
            let met = match goal.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "–",
            };
            out.push_str(&format!(
                "| {} | {} | {value} | {met} |\n",
                goal.name, goal.bound
            ));
        }
        out
    }
}
