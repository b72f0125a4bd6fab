//! Connection state recovery for one namespace: the state of recently disconnected sockets,
//! and a bounded log of the events sent since, each with an offset the client remembers.
//!
//! A returning client presents its private id (`pid`) and the last offset it saw. If both are
//! still known, it gets its socket back and the logged events after that offset that were
//! meant for it.
//!
//! In a cluster each node logs the broadcasts it delivers, its own and those of its peers (with
//! the offsets their origin gave them), so the log of the node a client was connected to holds
//! every offset that client can present.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Instant;

use rand::RngCore;

use super::config::RecoveryConfig;
use crate::protocol::sio::Encoded;
use crate::protocol::value::Value;

/// Which sockets an emit is for: those in any of `rooms` (all if empty), minus those in any of
/// `except`. Socket ids count as rooms.
#[derive(Debug, Clone, Default)]
pub(crate) struct Target {
    pub(crate) rooms: BTreeSet<String>,
    pub(crate) except: BTreeSet<String>,
}

impl Target {
    pub(crate) fn new(rooms: &[String], except: &[String]) -> Self {
        Target {
            rooms: rooms.iter().cloned().collect(),
            except: except.iter().cloned().collect(),
        }
    }

    fn matches(&self, rooms: &BTreeSet<String>) -> bool {
        (self.rooms.is_empty() || self.rooms.iter().any(|r| rooms.contains(r)))
            && !self.except.iter().any(|r| rooms.contains(r))
    }
}

/// What a socket leaves behind when it loses its connection.
#[derive(Debug, Clone)]
pub(crate) struct SavedSession {
    pub(crate) sid: String,
    pub(crate) pid: String,
    /// Rooms other than the socket's own.
    pub(crate) rooms: Vec<String>,
    pub(crate) data: Value,
}

struct Logged {
    offset: String,
    at: Instant,
    target: Target,
    packet: Encoded,
}

pub(crate) struct RecoveryStore {
    config: RecoveryConfig,
    sessions: HashMap<String, (SavedSession, Instant)>,
    /// pids in the order they were saved, for expiry; may hold pids already taken back.
    session_order: VecDeque<(String, Instant)>,
    packets: VecDeque<Logged>,
    /// Offsets are `<prefix>-<counter>`: the random prefix keeps offsets of an earlier process
    /// from matching ours.
    prefix: String,
    counter: u64,
}

impl RecoveryStore {
    pub(crate) fn new(config: RecoveryConfig) -> Self {
        let mut bytes = [0u8; 6];
        rand::thread_rng().fill_bytes(&mut bytes);
        RecoveryStore {
            config,
            sessions: HashMap::new(),
            session_order: VecDeque::new(),
            packets: VecDeque::new(),
            prefix: bytes.iter().map(|b| format!("{b:02x}")).collect(),
            counter: 0,
        }
    }

    /// Log a packet for replay: `encode` builds it with the offset it gets as its last
    /// argument. Returns the packet and the offset.
    pub(crate) fn log(
        &mut self,
        target: &Target,
        encode: impl FnOnce(&str) -> Encoded,
    ) -> (Encoded, String) {
        self.counter += 1;
        let offset = format!("{}-{}", self.prefix, self.counter);
        let packet = encode(&offset);
        self.record(offset.clone(), target.clone(), packet.clone());
        (packet, offset)
    }

    /// Log a packet that already carries its offset (one given by another node).
    pub(crate) fn record(&mut self, offset: String, target: Target, packet: Encoded) {
        let now = Instant::now();
        self.expire(now);
        self.packets.push_back(Logged {
            offset,
            at: now,
            target,
            packet,
        });
        while self.packets.len() > self.config.max_packets {
            self.packets.pop_front();
        }
    }

    /// Keep a disconnected socket's state for a later [`restore`](Self::restore).
    pub(crate) fn persist(&mut self, session: SavedSession) {
        let now = Instant::now();
        self.expire(now);
        self.session_order.push_back((session.pid.clone(), now));
        self.sessions.insert(session.pid.clone(), (session, now));
        while self.sessions.len() > self.config.max_sessions {
            match self.session_order.pop_front() {
                Some((pid, at)) => self.remove_if_saved_at(&pid, at),
                None => break,
            }
        }
    }

    /// Take back the session `pid` if it has not expired and `offset` is still in the log.
    pub(crate) fn restore(&mut self, pid: &str, offset: &str) -> Option<SavedSession> {
        self.expire(Instant::now());
        if !self.packets.iter().any(|p| p.offset == offset) {
            return None;
        }
        self.sessions.remove(pid).map(|(session, _)| session)
    }

    /// The logged packets after `offset` meant for a socket in `rooms`. Empty if the offset
    /// has left the log since the session was restored.
    pub(crate) fn missed_since(&self, offset: &str, rooms: &BTreeSet<String>) -> Vec<Encoded> {
        let Some(index) = self.packets.iter().position(|p| p.offset == offset) else {
            return Vec::new();
        };
        self.packets
            .iter()
            .skip(index + 1)
            .filter(|p| p.target.matches(rooms))
            .map(|p| p.packet.clone())
            .collect()
    }

    /// A fresh private id for a new socket.
    pub(crate) fn new_pid() -> String {
        super::client::random_id()
    }

    fn expire(&mut self, now: Instant) {
        let keep = self.config.max_disconnection_duration;
        while self
            .packets
            .front()
            .is_some_and(|p| now.duration_since(p.at) > keep)
        {
            self.packets.pop_front();
        }
        while let Some((pid, at)) = self.session_order.front().cloned() {
            if now.duration_since(at) <= keep {
                break;
            }
            self.session_order.pop_front();
            self.remove_if_saved_at(&pid, at);
        }
    }

    /// Remove `pid` unless it was saved again after `at`.
    fn remove_if_saved_at(&mut self, pid: &str, at: Instant) {
        if self
            .sessions
            .get(pid)
            .is_some_and(|(_, saved)| *saved == at)
        {
            self.sessions.remove(pid);
        }
    }
}
