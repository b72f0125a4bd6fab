//! Counters of one engine, for the `/metrics` endpoint and the benchmarks. Relaxed atomics:
//! each counter is monotonic on its own and nothing is derived from two of them at once.

use std::sync::atomic::{AtomicU64, Ordering};

use super::app::CloseReason;

/// Every close reason, in a fixed order (the index into `Counters::closed`).
const REASONS: [CloseReason; 8] = [
    CloseReason::TransportClose,
    CloseReason::TransportError,
    CloseReason::PingTimeout,
    CloseReason::ParseError,
    CloseReason::ServerClose,
    CloseReason::ServerShutdown,
    CloseReason::QueueOverflow,
    CloseReason::Moved,
];

#[derive(Default)]
pub(crate) struct Counters {
    opened: AtomicU64,
    closed: [AtomicU64; REASONS.len()],
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    unknown_sid: AtomicU64,
}

impl Counters {
    pub(crate) fn opened(&self) {
        self.opened.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn closed(&self, reason: &CloseReason) {
        if let Some(i) = REASONS.iter().position(|r| r == reason) {
            self.closed[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn unknown_sid(&self) {
        self.unknown_sid.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn received(&self, bytes: usize) {
        self.messages_in.fetch_add(1, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn sent(&self, n: usize, bytes: usize) {
        self.messages_out.fetch_add(n as u64, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, sessions: usize) -> EngineMetrics {
        EngineMetrics {
            sessions,
            opened: self.opened.load(Ordering::Relaxed),
            closed: REASONS
                .iter()
                .zip(&self.closed)
                .map(|(r, n)| (r.as_str(), n.load(Ordering::Relaxed)))
                .collect(),
            messages_received: self.messages_in.load(Ordering::Relaxed),
            messages_sent: self.messages_out.load(Ordering::Relaxed),
            bytes_received: self.bytes_in.load(Ordering::Relaxed),
            bytes_sent: self.bytes_out.load(Ordering::Relaxed),
            unknown_sid: self.unknown_sid.load(Ordering::Relaxed),
        }
    }
}

/// A snapshot of an engine's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineMetrics {
    /// Sessions open now.
    pub sessions: usize,
    /// Sessions opened since start.
    pub opened: u64,
    /// Sessions closed since start, by [`CloseReason::as_str`].
    pub closed: Vec<(&'static str, u64)>,
    /// Messages handed to the application.
    pub messages_received: u64,
    /// Messages queued by the application.
    pub messages_sent: u64,
    /// Bytes of the messages received (text as UTF-8, binary as is).
    pub bytes_received: u64,
    /// Bytes of the messages queued.
    pub bytes_sent: u64,
    /// Requests answered "Session ID unknown" (code 1). In a cluster each such answer is
    /// counted once, by the engine that gave it.
    pub unknown_sid: u64,
}
