//! What a scenario measures: latency histograms (HDR, microseconds), error counters by kind,
//! the resident memory of server processes, and the report a scenario run produces.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::client::BenchError;

/// Latencies from 1 µs to 5 minutes, three significant digits.
#[derive(Clone)]
pub struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        Latencies(
            Histogram::new_with_bounds(1, 300_000_000, 3)
                .expect("constant bounds that hdrhistogram accepts"),
        )
    }
}

impl Latencies {
    /// Record one latency (saturated at the upper bound).
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(micros.max(1));
    }

    /// Add the samples of `other`.
    pub fn merge(&mut self, other: &Latencies) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.0.add(&other.0);
    }

    /// How many samples.
    pub fn len(&self) -> u64 {
        self.0.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The summary in milliseconds.
    pub fn summary(&self) -> LatencySummary {
        let ms = |micros: u64| micros as f64 / 1000.0;
        if self.0.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: self.0.len(),
            p50_ms: ms(self.0.value_at_quantile(0.5)),
            p90_ms: ms(self.0.value_at_quantile(0.9)),
            p99_ms: ms(self.0.value_at_quantile(0.99)),
            max_ms: ms(self.0.max()),
            mean_ms: self.0.mean() / 1000.0,
        }
    }

    /// The latency at each of `quantiles`, in milliseconds (for distribution charts).
    pub fn quantiles_ms(&self, quantiles: &[f64]) -> Vec<f64> {
        quantiles
            .iter()
            .map(|q| self.0.value_at_quantile(*q) as f64 / 1000.0)
            .collect()
    }
}

/// Percentiles of a latency distribution, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

/// Errors by kind ([`BenchError::kind`]).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Errors(pub BTreeMap<String, u64>);

impl Errors {
    /// Count one error.
    pub fn add(&mut self, error: &BenchError) {
        *self.0.entry(error.kind().to_owned()).or_default() += 1;
    }

    /// Add the counts of `other`.
    pub fn merge(&mut self, other: &Errors) {
        for (kind, n) in &other.0 {
            *self.0.entry(kind.clone()).or_default() += n;
        }
    }

    /// How many `400 Session ID unknown` answers.
    pub fn session_id_unknown(&self) -> u64 {
        self.0.get("session_id_unknown").copied().unwrap_or(0)
    }

    /// All errors.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }
}

/// What one run of a scenario measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// `connect`, `echo`, `broadcast` or `idle`.
    pub scenario: String,
    /// The client transport.
    pub transport: String,
    /// Completed operations (connects, acks, deliveries, sessions held).
    pub ops: u64,
    /// The measured interval.
    pub secs: f64,
    /// Operations per second over the measured interval.
    pub rate: f64,
    /// Operation latencies.
    pub latency: LatencySummary,
    /// Latencies at [`CHART_QUANTILES`], for charts.
    pub quantiles_ms: Vec<f64>,
    /// Errors by kind.
    pub errors: Errors,
    /// Scenario-specific numbers (delivery ratio, losses, memory per session, …).
    pub extra: BTreeMap<String, f64>,
}

/// The quantiles a report keeps for latency-distribution charts.
pub const CHART_QUANTILES: &[f64] = &[
    0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 1.0,
];

impl Report {
    /// A report of `ops` operations over `elapsed` with these latencies and errors.
    pub fn new(
        scenario: &str,
        transport: &str,
        ops: u64,
        elapsed: Duration,
        latencies: &Latencies,
        errors: Errors,
    ) -> Report {
        let secs = elapsed.as_secs_f64();
        Report {
            scenario: scenario.to_owned(),
            transport: transport.to_owned(),
            ops,
            secs,
            rate: if secs > 0.0 { ops as f64 / secs } else { 0.0 },
            latency: latencies.summary(),
            quantiles_ms: if latencies.is_empty() {
                Vec::new()
            } else {
                latencies.quantiles_ms(CHART_QUANTILES)
            },
            errors,
            extra: BTreeMap::new(),
        }
    }

    /// One line for a terminal.
    pub fn line(&self) -> String {
        let mut line = format!(
            "{:<9} {:<9} {:>8} ops in {:>6.2} s = {:>9.1}/s  p50 {:>7.2} ms  p90 {:>7.2} ms  p99 {:>7.2} ms  max {:>8.2} ms",
            self.scenario,
            self.transport,
            self.ops,
            self.secs,
            self.rate,
            self.latency.p50_ms,
            self.latency.p90_ms,
            self.latency.p99_ms,
            self.latency.max_ms,
        );
        for (key, value) in &self.extra {
            line.push_str(&format!("  {key} {value:.3}"));
        }
        line.push_str(&format!("  errors {}", self.errors.total()));
        for (kind, n) in &self.errors.0 {
            line.push_str(&format!(" {kind}={n}"));
        }
        line
    }
}

/// The resident memory of process `pid` in bytes (Linux `/proc`), if it can be read.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
