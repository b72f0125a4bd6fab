//! The scenarios, each driving the demo app's events against one base address and bounded in
//! count and time:
//!
//! - `connect`: N sessions opened at concurrency C (each closed once connected);
//! - `echo`: C clients in a closed loop emitting `echo` with an ack for D seconds;
//! - `broadcast`: R receivers in one room, wherever the balancer put them, and a sender emitting
//!   sequence-numbered `broadcast`s; fan-out latency, losses and duplicates;
//! - `idle`: N sessions held open, and the servers' resident memory per session.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, Semaphore};

use super::client::{BenchError, Client, Target, Transport};
use super::stats::{Errors, Latencies, Report, rss_bytes};
use crate::protocol::value::Value;

/// Where the clients go, and from which source addresses.
#[derive(Debug, Clone)]
pub struct Load {
    /// The base target (its `source` is replaced per client when `sources` is not empty).
    pub target: Target,
    /// Source addresses handed to clients in turn, so IP-hash balancers spread them.
    pub sources: Vec<IpAddr>,
}

impl Load {
    /// The target of client number `i`.
    pub fn target(&self, i: usize, transport: Transport) -> Target {
        let mut target = self.target.clone();
        target.transport = transport;
        if !self.sources.is_empty() {
            target.source = Some(self.sources[i % self.sources.len()]);
        }
        target
    }

    /// 127.0.0.2 … 127.0.0.254, for [`Load::sources`].
    pub fn loopback_sources() -> Vec<IpAddr> {
        (2..=254u8)
            .map(|last| IpAddr::from([127, 0, 0, last]))
            .collect()
    }
}

/// The ack timeout of the scenarios.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// The room the broadcast scenario uses.
const ROOM: &str = "bench";

/// Open `n` sessions, at most `concurrency` at once; each is closed once connected. Stops
/// starting new ones after `limit`.
pub async fn connect(
    load: &Load,
    transport: Transport,
    n: usize,
    concurrency: usize,
    limit: Duration,
) -> Report {
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let totals = Arc::new(Mutex::new((Latencies::default(), Errors::default(), 0u64)));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            break;
        };
        if start.elapsed() > limit {
            break;
        }
        let target = load.target(i, transport);
        let totals = Arc::clone(&totals);
        tasks.push(tokio::spawn(async move {
            let began = Instant::now();
            let result = Client::connect(&target).await;
            let took = began.elapsed();
            let mut t = totals.lock().await;
            match result {
                Ok(client) => {
                    t.0.record(took);
                    t.2 += 1;
                    drop(t);
                    client.close().await;
                }
                Err(e) => t.1.add(&e),
            }
            drop(permit);
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = start.elapsed();
    let (latencies, errors, ok) = Arc::try_unwrap(totals)
        .map(Mutex::into_inner)
        .unwrap_or_default();
    Report::new(
        "connect",
        transport.as_str(),
        ok,
        elapsed,
        &latencies,
        errors,
    )
}

/// Connect `clients` clients, then for `duration` each emits `echo` with a `payload`-byte string
/// and waits for the ack before the next.
pub async fn echo(
    load: &Load,
    transport: Transport,
    clients: usize,
    payload: usize,
    duration: Duration,
) -> Report {
    let (connected, mut errors) = connect_all(load, transport, clients).await;
    let text = "x".repeat(payload);
    let start = Instant::now();
    let end = start + duration;
    let tasks: Vec<_> = connected
        .into_iter()
        .map(|client| {
            let text = text.clone();
            tokio::spawn(async move {
                let mut latencies = Latencies::default();
                let mut errors = Errors::default();
                while Instant::now() < end {
                    let began = Instant::now();
                    let args = vec![Value::from(text.as_str())];
                    match client.emit_with_ack("echo", args, ACK_TIMEOUT).await {
                        Ok(answer) if answer.first().and_then(Value::as_str) == Some(&text) => {
                            latencies.record(began.elapsed());
                        }
                        Ok(_) => errors.add(&BenchError::Protocol("wrong echo".to_owned())),
                        Err(e) => {
                            errors.add(&e);
                            break;
                        }
                    }
                }
                client.close().await;
                (latencies, errors)
            })
        })
        .collect();
    let mut latencies = Latencies::default();
    for task in tasks {
        if let Ok((l, e)) = task.await {
            latencies.merge(&l);
            errors.merge(&e);
        }
    }
    let elapsed = start.elapsed();
    let mut report = Report::new(
        "echo",
        transport.as_str(),
        latencies.len(),
        elapsed,
        &latencies,
        errors,
    );
    report.extra.insert("clients".to_owned(), clients as f64);
    report
        .extra
        .insert("payload_bytes".to_owned(), payload as f64);
    report
}

/// `receivers` clients join one room; a sender emits `messages` sequence-numbered `broadcast`s
/// to it, `interval` apart. Each delivery's latency counts; so do losses and duplicates.
pub async fn broadcast(
    load: &Load,
    transport: Transport,
    receivers: usize,
    messages: usize,
    interval: Duration,
) -> Report {
    let (connected, mut errors) = connect_all(load, transport, receivers + 1).await;
    let mut connected = connected.into_iter();
    let Some(sender) = connected.next() else {
        return Report::new(
            "broadcast",
            transport.as_str(),
            0,
            Duration::ZERO,
            &Latencies::default(),
            errors,
        );
    };
    let mut members = Vec::new();
    let mut nodes = std::collections::BTreeMap::<String, f64>::new();
    for client in connected {
        match client
            .emit_with_ack("join", vec![Value::from(ROOM)], ACK_TIMEOUT)
            .await
        {
            Ok(answer) => {
                let node = answer
                    .first()
                    .and_then(|a| a.get("node"))
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_owned();
                *nodes
                    .entry(format!("receivers_on_node_{node}"))
                    .or_default() += 1.0;
                members.push(client);
            }
            Err(e) => errors.add(&e),
        }
    }
    let clock = Instant::now();
    let last_send = interval * u32::try_from(messages).unwrap_or(u32::MAX);
    let listen_until = clock + last_send + Duration::from_secs(5);
    let listeners: Vec<_> = members
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move {
                let mut seen = vec![0u32; messages];
                let mut latencies = Latencies::default();
                let mut errors = Errors::default();
                let mut unique = 0;
                while unique < messages {
                    let left = listen_until.saturating_duration_since(Instant::now());
                    let (name, args) = match client.next_event(left).await {
                        Ok(event) => event,
                        Err(BenchError::Timeout) => break,
                        Err(e) => {
                            errors.add(&e);
                            break;
                        }
                    };
                    let payload = args.first();
                    let seq = payload.and_then(|p| p.get("seq")).and_then(Value::as_u64);
                    let sent = payload
                        .and_then(|p| p.get("sent_us"))
                        .and_then(Value::as_u64);
                    if let ("broadcast", Some(seq), Some(sent)) = (name.as_str(), seq, sent) {
                        let Some(slot) = usize::try_from(seq).ok().and_then(|i| seen.get_mut(i))
                        else {
                            continue;
                        };
                        *slot += 1;
                        if *slot == 1 {
                            unique += 1;
                            let now = u64::try_from(clock.elapsed().as_micros()).unwrap_or(0);
                            latencies.record(Duration::from_micros(now.saturating_sub(sent)));
                        }
                    }
                }
                let duplicates: u32 = seen.iter().map(|n| n.saturating_sub(1)).sum();
                client.close().await;
                (latencies, errors, unique, duplicates)
            })
        })
        .collect();
    let members_count = listeners.len();
    for seq in 0..messages {
        let due = clock + interval * u32::try_from(seq).unwrap_or(u32::MAX);
        tokio::time::sleep_until(due.into()).await;
        let sent_us = u64::try_from(clock.elapsed().as_micros()).unwrap_or(0);
        let mut message = indexmap::IndexMap::new();
        message.insert("room".to_owned(), Value::from(ROOM));
        message.insert("seq".to_owned(), Value::from(seq as u64));
        message.insert("sent_us".to_owned(), Value::from(sent_us));
        if let Err(e) = sender.emit("broadcast", vec![Value::Object(message)]).await {
            errors.add(&e);
            break;
        }
    }
    let mut latencies = Latencies::default();
    let (mut delivered, mut duplicates) = (0u64, 0u64);
    for listener in listeners {
        if let Ok((l, e, unique, dups)) = listener.await {
            latencies.merge(&l);
            errors.merge(&e);
            delivered += unique as u64;
            duplicates += u64::from(dups);
        }
    }
    let elapsed = clock.elapsed();
    sender.close().await;
    let expected = (members_count * messages) as u64;
    let mut report = Report::new(
        "broadcast",
        transport.as_str(),
        delivered,
        elapsed,
        &latencies,
        errors,
    );
    report
        .extra
        .insert("receivers".to_owned(), members_count as f64);
    report.extra.insert(
        "delivery_ratio".to_owned(),
        if expected == 0 {
            0.0
        } else {
            delivered as f64 / expected as f64
        },
    );
    report
        .extra
        .insert("lost".to_owned(), expected.saturating_sub(delivered) as f64);
    report
        .extra
        .insert("duplicates".to_owned(), duplicates as f64);
    report.extra.extend(nodes);
    report
}

/// Hold `sessions` sessions open for `hold`, and measure how much the resident memory of the
/// server processes `pids` grew, per session.
pub async fn idle(
    load: &Load,
    transport: Transport,
    sessions: usize,
    hold: Duration,
    pids: &[u32],
) -> Report {
    let before: u64 = pids.iter().filter_map(|p| rss_bytes(*p)).sum();
    let start = Instant::now();
    let (connected, errors) = connect_all(load, transport, sessions).await;
    tokio::time::sleep(hold).await;
    let after: u64 = pids.iter().filter_map(|p| rss_bytes(*p)).sum();
    let held = connected.len() as u64;
    let elapsed = start.elapsed();
    futures::future::join_all(connected.into_iter().map(Client::close)).await;
    let mut report = Report::new(
        "idle",
        transport.as_str(),
        held,
        elapsed,
        &Latencies::default(),
        errors,
    );
    if !pids.is_empty() && held > 0 {
        report.extra.insert(
            "rss_bytes_per_session".to_owned(),
            after.saturating_sub(before) as f64 / held as f64,
        );
        report
            .extra
            .insert("rss_bytes_total".to_owned(), after as f64);
    }
    report
}

/// Connect `n` clients, 64 at a time; the connected ones and the errors of the others.
async fn connect_all(load: &Load, transport: Transport, n: usize) -> (Vec<Client>, Errors) {
    let permits = Arc::new(Semaphore::new(64));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let target = load.target(i, transport);
            let permits = Arc::clone(&permits);
            tokio::spawn(async move {
                let _permit = permits.acquire_owned().await;
                Client::connect(&target).await
            })
        })
        .collect();
    let mut clients = Vec::new();
    let mut errors = Errors::default();
    for task in tasks {
        match task.await {
            Ok(Ok(client)) => clients.push(client),
            Ok(Err(e)) => errors.add(&e),
            Err(_) => errors.add(&BenchError::Closed),
        }
    }
    (clients, errors)
}
