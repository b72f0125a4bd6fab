//! Settings of one engine (one mount point), with the reference server's defaults.

use std::time::Duration;

/// Engine.IO settings. `Default` gives the reference server's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Time between two pings (`pingInterval`).
    pub ping_interval: Duration,
    /// How long the client has to answer a ping (`pingTimeout`).
    pub ping_timeout: Duration,
    /// How long an upgrade may take between the websocket opening and `5` (`upgradeTimeout`).
    pub upgrade_timeout: Duration,
    /// Largest accepted POST body or websocket message, in bytes (`maxHttpBufferSize`,
    /// announced as `maxPayload`).
    pub max_payload: usize,
    /// Most messages a session may have waiting for a transport. Past it the session
    /// closes with `QueueOverflow`.
    pub max_buffered_packets: usize,
    /// Most payload bytes (text length or binary size, before any base64) a session may
    /// have waiting for a transport, enforced together with `max_buffered_packets`. Past
    /// it the session closes with `QueueOverflow`. The default, 4 MB, is four maximum
    /// payloads: a client that stops fetching costs at most that much memory. A single
    /// message larger than this closes the session, so raise it for large emits.
    pub max_buffered_bytes: usize,
    /// Whether HTTP long-polling is enabled.
    pub polling: bool,
    /// Whether WebSocket is enabled.
    pub websocket: bool,
    /// Whether polling sessions may upgrade to WebSocket.
    pub allow_upgrades: bool,
    /// Most live sessions in this engine; handshakes past it are refused (code 4).
    pub max_sessions: usize,
    /// Put in front of every new sid, before its 128 random bits. A cluster node sets it to
    /// `"<node id>."` so that any node can route a brand-new session to its owner.
    pub sid_prefix: String,
}

impl EngineConfig {
    /// The longest polling payload a GET can be answered with: the whole bounded queue, binary
    /// messages as base64, each packet with its type character, separator and base64 padding,
    /// plus the packets no bound counts (a ping, then a close or noop). A node that forwards
    /// GETs must accept replies this large.
    pub fn max_poll_reply(&self) -> usize {
        const PER_PACKET: usize = 6;
        const UNCOUNTED: usize = 64;
        self.max_buffered_bytes
            .div_ceil(3)
            .saturating_mul(4)
            .saturating_add(self.max_buffered_packets.saturating_mul(PER_PACKET))
            .saturating_add(UNCOUNTED)
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            ping_interval: Duration::from_millis(25_000),
            ping_timeout: Duration::from_millis(20_000),
            upgrade_timeout: Duration::from_millis(10_000),
            max_payload: 1_000_000,
            max_buffered_packets: 10_000,
            max_buffered_bytes: 4_000_000,
            polling: true,
            websocket: true,
            allow_upgrades: true,
            max_sessions: 100_000,
            sid_prefix: String::new(),
        }
    }
}
