//! The sid → backend table of sticky-sid mode, and reading the sid out of the first bytes of a
//! polling handshake answer (`0{"sid":"…",…}`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::SidTableConfig;

/// How many bytes of a handshake answer are looked at for the sid. An open packet is a few
/// hundred bytes; anything longer is not a handshake we understand and passes untouched.
pub(super) const SNIFF_LIMIT: usize = 512;

/// The longest sid remembered; longer ones are not Engine.IO sids and are ignored.
const MAX_SID_LEN: usize = 128;

/// A bounded sid → backend map with idle expiry, kept as two generations: lookups and inserts
/// go to the current one, a hit in the previous one is moved forward, and the previous one is
/// thrown away whole when the current one is `idle_ttl` old or holds half the capacity. That
/// gives O(1) work per request, at most `capacity` entries, and no sweeps.
#[derive(Debug)]
pub(super) struct SidTable {
    generations: Mutex<Generations>,
    half: usize,
    idle_ttl: Duration,
}

#[derive(Debug)]
struct Generations {
    current: HashMap<Box<str>, usize>,
    previous: HashMap<Box<str>, usize>,
    started: Instant,
}

impl SidTable {
    pub(super) fn new(config: &SidTableConfig) -> SidTable {
        SidTable {
            generations: Mutex::new(Generations {
                current: HashMap::new(),
                previous: HashMap::new(),
                started: Instant::now(),
            }),
            half: (config.capacity / 2).max(1),
            idle_ttl: config.idle_ttl,
        }
    }

    /// The backend that created `sid`, if it is remembered.
    pub(super) fn get(&self, sid: &str) -> Option<usize> {
        let mut g = self.lock();
        self.rotate_if_due(&mut g);
        if let Some(&backend) = g.current.get(sid) {
            return Some(backend);
        }
        let backend = g.previous.remove(sid)?;
        g.current.insert(sid.into(), backend);
        Some(backend)
    }

    /// Remembers that `backend` created `sid`.
    pub(super) fn insert(&self, sid: &str, backend: usize) {
        let mut g = self.lock();
        self.rotate_if_due(&mut g);
        g.current.insert(sid.into(), backend);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        let g = self.lock();
        g.current.len() + g.previous.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        // The map stays consistent even if a holder panicked: every critical section is a
        // single insert/remove.
        self.generations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn rotate_if_due(&self, g: &mut Generations) {
        if g.current.len() >= self.half || g.started.elapsed() >= self.idle_ttl {
            g.previous = std::mem::take(&mut g.current);
            g.started = Instant::now();
        }
    }
}

/// The sid of an Engine.IO open packet at the start of `prefix`, if `prefix` holds enough of
/// it. `None` both for "not an open packet" and "not enough bytes yet"; the caller stops
/// looking after [`SNIFF_LIMIT`] bytes.
pub(super) fn open_packet_sid(prefix: &[u8]) -> Option<&str> {
    let json = prefix.strip_prefix(b"0{")?;
    const KEY: &[u8] = b"\"sid\":\"";
    let start = json.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let rest = &json[start..];
    let len = rest.iter().position(|&b| b == b'"')?;
    let sid = &rest[..len];
    let plain = sid
        .iter()
        .all(|&b| b.is_ascii_graphic() && b != b'\\' && b != b'"');
    if sid.is_empty() || sid.len() > MAX_SID_LEN || !plain {
        return None;
    }
    std::str::from_utf8(sid).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_sid_of_an_open_packet() {
        let open =
            br#"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000}"#;
        assert_eq!(open_packet_sid(open), Some("lv_VI97HAXpY6yYWAAAC"));
        let later = br#"0{"upgrades":[],"sid":"abc","maxPayload":1}"#;
        assert_eq!(open_packet_sid(later), Some("abc"));
    }

    #[test]
    fn ignores_what_is_not_an_open_packet() {
        assert_eq!(open_packet_sid(b""), None);
        assert_eq!(open_packet_sid(br#"0{"sid":"abc"#), None, "cut short");
        assert_eq!(open_packet_sid(br#"4{"sid":"abc"}"#), None);
        assert_eq!(open_packet_sid(br#"0{"sid":""}"#), None);
        assert_eq!(open_packet_sid(br#"0{"sid":"a\"b"}"#), None);
        assert_eq!(open_packet_sid(b"0{\"sid\":\"a b\"}"), None);
        let long = format!(r#"0{{"sid":"{}"}}"#, "x".repeat(MAX_SID_LEN + 1));
        assert_eq!(open_packet_sid(long.as_bytes()), None);
    }

    #[test]
    fn table_is_bounded_and_keeps_recent_entries() {
        let table = SidTable::new(&SidTableConfig {
            capacity: 10,
            idle_ttl: Duration::from_secs(3600),
        });
        for i in 0..100 {
            table.insert(&format!("s{i}"), i % 3);
            assert!(table.len() <= 10);
        }
        assert_eq!(table.get("s99"), Some(0));
        assert_eq!(table.get("s0"), None);
    }

    #[test]
    fn a_hit_in_the_previous_generation_survives_rotation() {
        let table = SidTable::new(&SidTableConfig {
            capacity: 4,
            idle_ttl: Duration::from_secs(3600),
        });
        table.insert("keep", 1);
        table.insert("a", 0);
        // "keep" and "a" now sit in the previous generation after the next rotation.
        table.insert("b", 0);
        assert_eq!(table.get("keep"), Some(1));
        table.insert("c", 0);
        assert_eq!(table.get("keep"), Some(1));
        assert_eq!(table.get("a"), None);
    }

    #[test]
    fn idle_entries_expire() {
        let table = SidTable::new(&SidTableConfig {
            capacity: 100,
            idle_ttl: Duration::ZERO,
        });
        table.insert("gone", 1);
        // Every access rotates with a zero ttl: two rotations forget an unused entry.
        let _ = table.get("other");
        assert_eq!(table.get("gone"), None);
    }
}
