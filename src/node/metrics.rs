//! The node's `/metrics` page (Prometheus text format, written by prometheus-client): the
//! counters and gauges of its engines, Socket.IO servers, gateway, registry and adapters, read
//! when Prometheus scrapes, and the latency histograms the data path records (the forwarding
//! hop, Raft commits). Nothing here runs per request.

use std::fmt::Error;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry as Metrics, Unit};

use crate::adapter::{AdapterServed, GrpcAdapter};
use crate::gateway::Gateway;
use crate::http;
use crate::registry::{Registry, Role};
use crate::socketio::SocketIo;

/// What the cluster side of a node counts.
#[derive(Clone)]
pub(super) struct ClusterSources {
    pub(super) registry: Registry,
    pub(super) adapters: Vec<Arc<GrpcAdapter>>,
    pub(super) served: AdapterServed,
}

/// Everything a node's page reads.
#[derive(Clone)]
pub(super) struct Sources {
    pub(super) gateway: Gateway,
    pub(super) servers: Vec<(String, SocketIo)>,
    pub(super) cluster: Option<ClusterSources>,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources").finish_non_exhaustive()
    }
}

/// The page of a node reading `sources`.
pub(super) fn page(sources: Sources) -> http::Metrics {
    let mut metrics = Metrics::default();
    metrics.register_collector(Box::new(sources));
    let metrics = Arc::new(metrics);
    Arc::new(move || {
        let mut text = String::new();
        // Writing to a String fails only if an encoder reports an error, which ours do not.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &metrics);
        text
    })
}

/// One metric family at a time, on top of prometheus-client's encoder.
struct Page<'a> {
    encoder: DescriptorEncoder<'a>,
}

impl Page<'_> {
    /// A counter (`_total` is added to `name`) with one sample per label set.
    fn counters<L: EncodeLabelSet>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (L, u64)>,
    ) -> Result<(), Error> {
        let mut family = self
            .encoder
            .encode_descriptor(name, help, None, MetricType::Counter)?;
        for (labels, value) in samples {
            ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }

    /// A gauge with one sample per label set.
    fn gauges<L: EncodeLabelSet>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (L, i64)>,
    ) -> Result<(), Error> {
        let mut family = self
            .encoder
            .encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (labels, value) in samples {
            ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) -> Result<(), Error> {
        let counter = ConstCounter::new(value);
        counter.encode(
            self.encoder
                .encode_descriptor(name, help, None, MetricType::Counter)?,
        )
    }

    fn gauge(&mut self, name: &str, help: &str, value: i64) -> Result<(), Error> {
        let gauge = ConstGauge::new(value);
        gauge.encode(
            self.encoder
                .encode_descriptor(name, help, None, MetricType::Gauge)?,
        )
    }

    /// Histograms in seconds with one set of buckets per label set.
    fn seconds<L: EncodeLabelSet>(
        &mut self,
        name: &str,
        help: &str,
        histograms: impl IntoIterator<Item = (L, Histogram)>,
    ) -> Result<(), Error> {
        let mut family = self.encoder.encode_descriptor(
            name,
            help,
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (labels, histogram) in histograms {
            histogram.encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Collector for Sources {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), Error> {
        let mut page = Page { encoder };
        self.engines(&mut page)?;
        self.sockets(&mut page)?;
        self.gateway(&mut page)?;
        let refusals = http::refusals();
        let handshakes = refusals
            .iter()
            .find(|(kind, _)| *kind == "too_many_handshakes")
            .map_or(0, |(_, n)| *n);
        page.counters(
            "nonstick_errors",
            "Requests refused, by kind (the Engine.IO error, or why a cluster node could not serve).",
            refusals.into_iter().map(|(kind, n)| ([("kind", kind)], n)),
        )?;
        let limited = self.servers.iter().map(|(_, io)| io.limited());
        let (namespaces, rooms) = limited.fold((0, 0), |(n, r), l| (n + l.namespaces, r + l.rooms));
        page.counters(
            "nonstick_limited",
            "What the abuse limits refused: handshakes past an address's rate, CONNECTs past a connection's namespaces, joins past a socket's rooms.",
            [
                ([("limit", "handshakes_per_second")], handshakes),
                ([("limit", "namespaces_per_client")], namespaces),
                ([("limit", "rooms_per_socket")], rooms),
            ],
        )?;
        if let Some(cluster) = &self.cluster {
            cluster.encode(&mut page)?;
        }
        if let Some(rss) = resident_bytes() {
            page.gauge(
                "process_resident_memory_bytes",
                "Resident memory of this process.",
                rss,
            )?;
        }
        Ok(())
    }
}

impl Sources {
    fn engines(&self, page: &mut Page) -> Result<(), Error> {
        let engines: Vec<_> = self
            .gateway
            .mounts()
            .into_iter()
            .map(|(path, engine)| {
                let counts = engine.transport_counts();
                (path, engine.metrics(), counts)
            })
            .collect();
        let per_path = |f: fn(&crate::engine::EngineMetrics) -> u64| {
            engines
                .iter()
                .map(move |(path, m, _)| ([("path", path.as_str())], f(m)))
        };
        page.gauges(
            "nonstick_sessions",
            "Engine.IO sessions open now, by transport (an upgrading session counts as polling).",
            engines.iter().flat_map(|(path, _, (polling, websocket))| {
                [
                    (
                        [("path", path.as_str()), ("transport", "polling")],
                        count(*polling),
                    ),
                    (
                        [("path", path.as_str()), ("transport", "websocket")],
                        count(*websocket),
                    ),
                ]
            }),
        )?;
        page.counters(
            "nonstick_sessions_opened",
            "Engine.IO sessions opened.",
            per_path(|m| m.opened),
        )?;
        page.counters(
            "nonstick_sessions_closed",
            "Engine.IO sessions closed, by reason.",
            engines.iter().flat_map(|(path, m, _)| {
                m.closed
                    .iter()
                    .map(move |(reason, n)| ([("path", path.as_str()), ("reason", *reason)], *n))
            }),
        )?;
        page.counters(
            "nonstick_messages_received",
            "Engine.IO messages handed to the application.",
            per_path(|m| m.messages_received),
        )?;
        page.counters(
            "nonstick_messages_sent",
            "Engine.IO messages queued by the application.",
            per_path(|m| m.messages_sent),
        )?;
        page.counters(
            "nonstick_message_bytes_received",
            "Bytes of the Engine.IO messages handed to the application.",
            per_path(|m| m.bytes_received),
        )?;
        page.counters(
            "nonstick_message_bytes_sent",
            "Bytes of the Engine.IO messages queued by the application.",
            per_path(|m| m.bytes_sent),
        )?;
        page.counters(
            "nonstick_unknown_sid",
            "Requests answered \"Session ID unknown\" by this node's engine.",
            per_path(|m| m.unknown_sid),
        )
    }

    fn sockets(&self, page: &mut Page) -> Result<(), Error> {
        let sockets: Vec<(&str, String, usize)> = self
            .servers
            .iter()
            .flat_map(|(path, io)| {
                io.namespaces().into_iter().map(move |namespace| {
                    let n = io.of(&namespace).sockets().len();
                    (path.as_str(), namespace, n)
                })
            })
            .collect();
        page.gauges(
            "nonstick_sockets",
            "Socket.IO sockets connected to this node, by namespace.",
            sockets
                .iter()
                .map(|(path, ns, n)| ([("path", *path), ("namespace", ns.as_str())], count(*n))),
        )
    }

    fn gateway(&self, page: &mut Page) -> Result<(), Error> {
        let hops = self.gateway.hops();
        page.seconds(
            "nonstick_forward",
            "Polling requests forwarded to their session's owner: time to the answer (a GET's includes its long-poll), by method.",
            [
                ([("method", "get")], hops.get.clone()),
                ([("method", "post")], hops.post.clone()),
            ],
        )?;
        let moves = self.gateway.counts();
        for (name, help, value) in [
            (
                "nonstick_websocket_relays",
                "Websockets relayed to the node owning their session (when the session could not move here).",
                moves.relays,
            ),
            (
                "nonstick_sessions_pulled",
                "Polling sessions moved here from their owner because their websocket arrived here.",
                moves.pulls,
            ),
            (
                "nonstick_sessions_moved_out",
                "Sessions this node moved to another node.",
                moves.moved_out,
            ),
            (
                "nonstick_sessions_moved_in",
                "Sessions another node moved here.",
                moves.moved_in,
            ),
            (
                "nonstick_sessions_taken_over",
                "Polling sessions of a lost node started here from the registry.",
                moves.taken_over,
            ),
        ] {
            page.counter(name, help, value)?;
        }
        Ok(())
    }
}

impl ClusterSources {
    fn encode(&self, page: &mut Page) -> Result<(), Error> {
        let status = self.registry.status();
        let index = |i: Option<u64>| i64::try_from(i.unwrap_or(0)).unwrap_or(i64::MAX);
        let last_log = index(status.last_log_index);
        let applied = index(status.applied_index);
        for (name, help, value) in [
            (
                "nonstick_raft_term",
                "The current Raft term.",
                index(Some(status.term)),
            ),
            (
                "nonstick_raft_leader",
                "The id of the Raft leader this node knows of (0: none).",
                index(status.leader),
            ),
            (
                "nonstick_raft_is_leader",
                "1 while this node is the Raft leader.",
                i64::from(status.role == Role::Leader),
            ),
            (
                "nonstick_raft_last_log_index",
                "Index of the last entry of this node's Raft log.",
                last_log,
            ),
            (
                "nonstick_raft_applied_index",
                "Index of the last Raft entry applied to this node's registry.",
                applied,
            ),
            (
                "nonstick_raft_applied_lag",
                "Raft entries in this node's log not yet applied to its registry.",
                last_log.saturating_sub(applied),
            ),
            (
                "nonstick_registry_sessions",
                "Sessions recorded in the registry (all nodes').",
                count(status.sessions),
            ),
            (
                "nonstick_registry_saved_sockets",
                "Sockets saved in the registry for connection state recovery.",
                count(status.saved_sockets),
            ),
            (
                "nonstick_adapter_queued",
                "Broadcasts and actions waiting in the queues to the other nodes.",
                count(self.adapters.iter().map(|a| a.queued()).sum()),
            ),
        ] {
            page.gauge(name, help, value)?;
        }
        page.seconds(
            "nonstick_raft_commit",
            "Registry writes committed from this node (through the leader when it is another).",
            [(
                [("registry", "sessions")],
                self.registry.commit_latency().clone(),
            )],
        )?;
        let losses = |f: fn(crate::adapter::AdapterLosses) -> u64| {
            self.adapters.iter().map(|a| f(a.losses())).sum::<u64>()
        };
        for (name, help, value) in [
            (
                "nonstick_adapter_dropped",
                "Broadcasts and actions not sent to a peer whose queue was full.",
                losses(|l| l.queue_full),
            ),
            (
                "nonstick_adapter_stale",
                "Broadcasts and actions dropped after waiting longer than their maximum age for a peer.",
                losses(|l| l.stale),
            ),
            (
                "nonstick_adapter_expired",
                "Broadcasts and actions from peers dropped on arrival: their batch came later than its maximum age.",
                self.served.expired(),
            ),
            (
                "nonstick_adapter_unconfirmed",
                "Broadcasts and actions in batches a peer did not confirm (unreachable, link broken, deadline passed).",
                losses(|l| l.unconfirmed),
            ),
            (
                "nonstick_registry_records_dropped",
                "Socket and session records not written: the registry's write queue was full.",
                self.registry.dropped_records(),
            ),
            (
                "nonstick_registry_records_failed",
                "Socket and session records given up after failing to commit several times.",
                self.registry.failed_records(),
            ),
        ] {
            page.counter(name, help, value)?;
        }
        Ok(())
    }
}

/// This process's resident memory, from `/proc/self/statm` (Linux).
fn resident_bytes() -> Option<i64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: i64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no memory effects.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages.saturating_mul(page))
}
