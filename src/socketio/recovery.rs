//! Connection state recovery for one namespace: the state of recently disconnected sockets,
//! and a bounded log of the broadcasts sent since, for replay to clients that come back.
//!
//! Every node of a cluster logs every broadcast it delivers, its own and its peers'. A
//! broadcast is numbered by the store that made it (its [`Stamp`]: origin and counter), and an
//! origin's broadcasts reach each node in the order it numbered them, so what a node has
//! logged is, per origin, everything up to some counter: a [`Position`]. The offset a client
//! gets with each packet is the position of the delivering node's log just after that packet
//! (for a socket that was recovered, merged with what it had been sent before). The client
//! presents it when it comes back, on whichever node: that node replays every logged packet
//! the position does not cover, and skips the ones it does when they reach it late. Nothing
//! is lost in the hand-over and nothing is sent twice, whichever node the socket left and
//! whether that node is still alive.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use rand::RngCore;

use super::config::RecoveryConfig;
use crate::protocol::sio::{self, Encoded};
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

/// A logged broadcast's name: the store that numbered it and its number there. On the wire
/// between nodes: `origin-counter`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub(crate) origin: String,
    pub(crate) counter: u64,
}

impl Stamp {
    pub(crate) fn parse(text: &str) -> Option<Stamp> {
        let (origin, counter) = text.rsplit_once('-')?;
        Some(Stamp {
            origin: origin.to_owned(),
            counter: counter.parse().ok()?,
        })
    }
}

impl std::fmt::Display for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.origin, self.counter)
    }
}

/// Per origin, the counter up to which every broadcast is covered. The offset clients see:
/// `origin-counter` pairs joined by `.`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Position(BTreeMap<String, u64>);

/// Most origins an offset may name: a client's offset is input.
const MAX_ORIGINS: usize = 64;

impl Position {
    pub(crate) fn parse(text: &str) -> Option<Position> {
        let mut map = BTreeMap::new();
        for pair in text.split('.').filter(|_| !text.is_empty()) {
            let stamp = Stamp::parse(pair)?;
            if map.insert(stamp.origin, stamp.counter).is_some() || map.len() > MAX_ORIGINS {
                return None;
            }
        }
        Some(Position(map))
    }

    pub(crate) fn covers(&self, stamp: &Stamp) -> bool {
        self.0
            .get(&stamp.origin)
            .is_some_and(|c| *c >= stamp.counter)
    }

    fn counter(&self, origin: &str) -> u64 {
        self.0.get(origin).copied().unwrap_or(0)
    }

    /// Whether everything `other` covers, this covers too.
    pub(crate) fn dominates(&self, other: &Position) -> bool {
        other.0.iter().all(|(o, c)| self.counter(o) >= *c)
    }

    /// What either covers.
    pub(crate) fn merged(&self, other: &Position) -> Position {
        let mut map = self.0.clone();
        for (origin, counter) in &other.0 {
            let c = map.entry(origin.clone()).or_default();
            *c = (*c).max(*counter);
        }
        Position(map)
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (origin, counter)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{origin}-{counter}")?;
        }
        Ok(())
    }
}

/// `bare` (a broadcast encoded without offset) with `position` as its last argument.
pub(crate) fn with_offset(bare: &Encoded, position: &Position) -> Encoded {
    sio::with_trailing_arg(bare, &position.to_string()).unwrap_or_else(|| bare.clone())
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

/// A logged broadcast: the packet without offset, and this log's position just after it.
pub(crate) struct Logged {
    stamp: Stamp,
    at: Instant,
    target: Target,
    pub(crate) bare: Encoded,
    pub(crate) position: Arc<Position>,
}

impl Logged {
    pub(crate) fn stamp(&self) -> &Stamp {
        &self.stamp
    }

    /// The packet as sent to a client that has been sent `seen` beyond this log.
    pub(crate) fn packet_for(&self, seen: Option<&Position>) -> Encoded {
        match seen {
            Some(seen) => with_offset(&self.bare, &self.position.merged(seen)),
            None => with_offset(&self.bare, &self.position),
        }
    }
}

/// What the log holds of one origin.
struct Head {
    /// The first counter this store logged: it never saw the ones before.
    first: u64,
    /// The highest counter logged.
    last: u64,
    /// When it was logged.
    at: Instant,
    /// The highest counter dropped from the log (expired or over the count bound): a client
    /// not covered up to it cannot be replayed everything it missed.
    dropped: u64,
}

pub(crate) struct RecoveryStore {
    config: RecoveryConfig,
    sessions: HashMap<String, (SavedSession, Instant)>,
    /// pids in the order they were saved, for expiry; may hold pids already taken back.
    session_order: VecDeque<(String, Instant)>,
    packets: VecDeque<Logged>,
    heads: HashMap<String, Head>,
    /// This store's origin name: random, so that the counters of an earlier process or of
    /// another node never pass for ours.
    origin: String,
    counter: u64,
    local_counter: u64,
}

/// Marks the stream of a node's local broadcasts in positions.
const LOCAL: char = '~';

impl RecoveryStore {
    pub(crate) fn new(config: RecoveryConfig) -> Self {
        let mut bytes = [0u8; 5];
        rand::thread_rng().fill_bytes(&mut bytes);
        RecoveryStore {
            config,
            sessions: HashMap::new(),
            session_order: VecDeque::new(),
            packets: VecDeque::new(),
            heads: HashMap::new(),
            origin: bytes.iter().map(|b| format!("{b:02x}")).collect(),
            counter: 0,
            local_counter: 0,
        }
    }

    /// Number and log a broadcast of this node. A `local` one (sent to this node's sockets
    /// only, `socket.emit` included) is numbered in a stream of its own (`~origin`), which the
    /// other nodes never hear of and do not require: only this node can replay it.
    pub(crate) fn log(&mut self, target: Target, bare: Encoded, local: bool) -> &Logged {
        let (origin, counter) = if local {
            self.local_counter += 1;
            (format!("{LOCAL}{}", self.origin), self.local_counter)
        } else {
            self.counter += 1;
            (self.origin.clone(), self.counter)
        };
        self.record(Stamp { origin, counter }, target, bare)
    }

    /// Log a broadcast numbered by `stamp` (this node's or a peer's).
    pub(crate) fn record(&mut self, stamp: Stamp, target: Target, bare: Encoded) -> &Logged {
        let now = Instant::now();
        self.expire(now);
        let head = self.heads.entry(stamp.origin.clone()).or_insert(Head {
            first: stamp.counter,
            last: 0,
            at: now,
            dropped: 0,
        });
        head.last = head.last.max(stamp.counter);
        head.at = now;
        // Room for this one first: the log always holds at least the packet being delivered.
        while self.packets.len() >= self.config.max_packets.max(1) {
            self.drop_oldest();
        }
        let position = Arc::new(self.position());
        self.packets.push_back(Logged {
            stamp,
            at: now,
            target,
            bare,
            position,
        });
        &self.packets[self.packets.len() - 1]
    }

    /// Where the log stands: what a socket that has been sent everything logged so far is
    /// covered up to.
    pub(crate) fn position(&self) -> Position {
        Position(
            self.heads
                .iter()
                .map(|(origin, head)| (origin.clone(), head.last))
                .collect(),
        )
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

    /// Take back the session `pid` if it has not expired and everything it missed since
    /// `seen` is still logged.
    pub(crate) fn restore(&mut self, pid: &str, seen: &Position) -> Option<SavedSession> {
        self.expire(Instant::now());
        if !self.can_replay(seen) {
            return None;
        }
        self.sessions.remove(pid).map(|(session, _)| session)
    }

    /// Whether the log holds every packet not covered by `seen`: for each origin, it has
    /// logged everything after `seen`'s counter (it heard the origin from before that point
    /// and dropped nothing since). An origin `seen` names that this log never heard of (one
    /// this process started too late for) makes it unsure; another node's local stream does
    /// not (it is not for this node to replay).
    pub(crate) fn can_replay(&self, seen: &Position) -> bool {
        self.gap(seen).is_none()
    }

    /// Why this log cannot replay what a client with `seen` missed (for logs): the first
    /// origin it lacks packets of.
    pub(crate) fn gap(&self, seen: &Position) -> Option<String> {
        let known = |origin: &String| {
            origin.starts_with(LOCAL) || self.heads.contains_key(origin) || *origin == self.origin
        };
        if let Some(origin) = seen.0.keys().find(|o| !known(o)) {
            return Some(format!("never heard of origin {origin}"));
        }
        self.heads.iter().find_map(|(origin, head)| {
            let covered = seen.counter(origin);
            (head.dropped > covered || head.first > covered + 1).then(|| {
                format!(
                    "origin {origin}: logged from {} (dropped up to {}), the client has up to {covered}",
                    head.first, head.dropped
                )
            })
        })
    }

    /// The logged packets `seen` does not cover that are meant for a socket in `rooms`, each
    /// with the offset of a client that has been sent `seen` and them.
    pub(crate) fn missed_since(&self, seen: &Position, rooms: &BTreeSet<String>) -> Vec<Encoded> {
        self.packets
            .iter()
            .filter(|p| !seen.covers(&p.stamp) && p.target.matches(rooms))
            .map(|p| p.packet_for(Some(seen)))
            .collect()
    }

    /// A fresh private id for a new socket.
    pub(crate) fn new_pid() -> String {
        super::client::random_id()
    }

    fn drop_oldest(&mut self) {
        if let Some(p) = self.packets.pop_front()
            && let Some(head) = self.heads.get_mut(&p.stamp.origin)
        {
            head.dropped = head.dropped.max(p.stamp.counter);
        }
    }

    fn expire(&mut self, now: Instant) {
        let keep = self.config.max_disconnection_duration;
        while self
            .packets
            .front()
            .is_some_and(|p| now.duration_since(p.at) > keep)
        {
            self.drop_oldest();
        }
        // An origin stays in positions for twice the window after its last packet, so that a
        // client that was sent one of them is still covered for it when it comes back.
        self.heads
            .retain(|_, head| now.duration_since(head.at) <= keep * 2);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::sio::Packet;

    fn store(max_packets: usize) -> RecoveryStore {
        RecoveryStore::new(RecoveryConfig {
            max_packets,
            ..RecoveryConfig::default()
        })
    }

    fn bare(name: &str) -> Encoded {
        sio::encode(&Packet::event("/", "m", vec![Value::from(name)], None))
    }

    /// What each packet of `log` (name, offset) is, as a client receives it.
    fn names(packets: &[Encoded]) -> Vec<(String, String)> {
        packets
            .iter()
            .map(|p| {
                let args = sio::decode(p).unwrap().into_args();
                let text = |i: usize| args[i].as_str().unwrap().to_owned();
                (text(0), text(1))
            })
            .collect()
    }

    #[test]
    fn offsets_parse_back_and_reject_junk() {
        let p = Position::parse("ab-3.cd-10").unwrap();
        assert_eq!(Position::parse(&p.to_string()), Some(p.clone()));
        assert!(p.covers(&Stamp::parse("cd-10").unwrap()));
        assert!(!p.covers(&Stamp::parse("cd-11").unwrap()));
        assert!(!p.covers(&Stamp::parse("ef-1").unwrap()));
        assert_eq!(Position::parse(""), Some(Position::default()));
        for junk in ["ab", "ab-x", "ab-1.ab-2", "ab-1..cd-2", "."] {
            assert_eq!(Position::parse(junk), None, "{junk:?}");
        }
        let many: Vec<String> = (0..=MAX_ORIGINS).map(|i| format!("o{i}-1")).collect();
        assert_eq!(Position::parse(&many.join(".")), None);
    }

    /// Two nodes get two origins' broadcasts in different orders; a client that saw part of
    /// one node's log is replayed exactly the rest from the other's.
    #[test]
    fn another_nodes_log_replays_exactly_what_was_missed() {
        let (mut a, mut b) = (store(100), store(100));
        let target = Target::default();
        let a1 = a.log(target.clone(), bare("a1"), false).stamp().clone();
        let a2 = a.log(target.clone(), bare("a2"), false).stamp().clone();
        let b1 = b.log(target.clone(), bare("b1"), false).stamp().clone();
        let b2 = b.log(target.clone(), bare("b2"), false).stamp().clone();
        // Node a's log: a1 a2 b1 b2; node b's: b1 b2 a1, and a2 still on its way.
        a.record(b1, target.clone(), bare("b1"));
        let seen = a.position(); // the client had a1 a2 b1
        a.record(b2, target.clone(), bare("b2"));
        b.record(a1, target.clone(), bare("a1"));
        let rooms = BTreeSet::new();
        assert!(b.can_replay(&seen));
        let missed = b.missed_since(&seen, &rooms);
        let got = names(&missed);
        assert_eq!(got.iter().map(|g| g.0.as_str()).collect::<Vec<_>>(), ["b2"]);
        // The offset it gets covers what it saw on node a and what node b replayed.
        let offset = Position::parse(&got[0].1).unwrap();
        assert!(offset.dominates(&seen) && offset.dominates(&b.position()));
        // a2 reaches node b late: the client had it.
        assert!(seen.covers(&a2));
    }

    #[test]
    fn a_client_whose_missed_packets_were_dropped_cannot_be_replayed() {
        let mut s = store(2);
        let t = Target::default();
        s.log(t.clone(), bare("1"), false);
        let seen = s.position();
        s.log(t.clone(), bare("2"), false);
        assert!(s.can_replay(&seen));
        s.log(t.clone(), bare("3"), false);
        s.log(t, bare("4"), false);
        assert!(!s.can_replay(&seen), "2 was dropped");
        assert!(s.can_replay(&Position::parse(&format!("{}-2", s.origin)).unwrap()));
        assert!(!s.can_replay(&Position::default()));
    }

    #[test]
    fn a_log_that_started_late_cannot_replay() {
        let (mut old, mut fresh) = (store(10), store(10));
        let t = Target::default();
        let stamp =
            |s: &mut RecoveryStore, name| s.log(t.clone(), bare(name), false).stamp().clone();
        stamp(&mut old, "1");
        let seen = old.position();
        assert!(!fresh.can_replay(&seen), "it never heard of that origin");
        let second = stamp(&mut old, "2");
        let third = stamp(&mut old, "3");
        fresh.record(third, t.clone(), bare("3"));
        assert!(!fresh.can_replay(&seen), "it missed 2");
        let mut joined = store(10);
        joined.record(second, t.clone(), bare("2"));
        assert!(joined.can_replay(&seen));
    }

    #[test]
    fn replay_follows_rooms() {
        let mut s = store(10);
        let seen = s.position();
        s.log(Target::new(&["r".into()], &[]), bare("to-r"), false);
        s.log(Target::new(&[], &["r".into()]), bare("not-r"), false);
        let in_r: BTreeSet<String> = ["r".to_owned()].into();
        let got = names(&s.missed_since(&seen, &in_r));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "to-r");
    }
}
