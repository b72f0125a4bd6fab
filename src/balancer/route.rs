//! Choosing a backend for a request: the rotation, the client-address hash, the sid table,
//! and the per-backend "down until" marks that health checking sets.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hyper::http::uri::Authority;
use tokio::sync::Notify;
use tokio::sync::futures::Notified;

use super::Mode;
use super::sid::SidTable;

/// One backend and its health mark.
#[derive(Debug)]
pub(super) struct Backend {
    pub(super) addr: SocketAddr,
    /// `addr` as a URI authority, built once instead of per request.
    pub(super) authority: Authority,
    /// Milliseconds since [`Router::epoch`] until which the backend is left out of the
    /// rotation; 0 when it is up. An atomic so the request path never takes a lock.
    down_until: AtomicU64,
    /// Wakes the requests waiting on this backend when its health probe got no answer at all:
    /// a process that accepts connections but runs no more (stopped, hung) would hold them
    /// until the response timeout, longer than a client's heartbeat allows.
    silent: Notify,
}

/// The routing state shared by every connection of one balancer.
#[derive(Debug)]
pub(super) struct Router {
    backends: Vec<Backend>,
    mode: Mode,
    next: AtomicUsize,
    epoch: Instant,
    cooldown: Duration,
    pub(super) sids: SidTable,
}

impl Router {
    pub(super) fn new(
        addrs: &[SocketAddr],
        mode: Mode,
        cooldown: Duration,
        sids: SidTable,
    ) -> Router {
        let backends = addrs
            .iter()
            .map(|&addr| Backend {
                addr,
                authority: authority_of(addr),
                down_until: AtomicU64::new(0),
                silent: Notify::new(),
            })
            .collect();
        Router {
            backends,
            mode,
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
            cooldown,
            sids,
        }
    }

    pub(super) fn mode(&self) -> Mode {
        self.mode
    }

    pub(super) fn backends(&self) -> &[Backend] {
        &self.backends
    }

    pub(super) fn backend(&self, index: usize) -> &Backend {
        &self.backends[index]
    }

    /// The backend for a request from `client` carrying `sid` (if any).
    pub(super) fn pick(&self, client: IpAddr, sid: Option<&str>) -> usize {
        match self.mode {
            Mode::RoundRobin => self.rotate(),
            // A pinned session follows its backend even when it is marked down: any other
            // backend would not know the sid either, and the fast 502 tells the client to
            // start over just the same.
            Mode::StickySid => match sid.and_then(|sid| self.sids.get(sid)) {
                Some(index) if index < self.backends.len() => index,
                _ => self.rotate(),
            },
            Mode::StickyIp => self.first_up_from(ip_slot(client, self.backends.len())),
        }
    }

    /// The next backend in turn that is not marked down; when all are down, the next one in
    /// turn anyway, so a recovered backend is found and the client gets a quick 502 otherwise.
    fn rotate(&self) -> usize {
        let start = self.next.fetch_add(1, Ordering::Relaxed) % self.backends.len();
        self.first_up_from(start)
    }

    /// The backend to try after `index` failed: the next one in rotation order that is not
    /// marked down (or simply the next one when all are).
    pub(super) fn next_up_after(&self, index: usize) -> usize {
        let n = self.backends.len();
        let next = self.first_up_from((index + 1) % n);
        if next == index { (index + 1) % n } else { next }
    }

    fn first_up_from(&self, start: usize) -> usize {
        let n = self.backends.len();
        let mut now = None;
        for step in 0..n {
            let index = (start + step) % n;
            let until = self.backends[index].down_until.load(Ordering::Relaxed);
            if until == 0 || until <= *now.get_or_insert_with(|| self.now_ms()) {
                return index;
            }
        }
        start
    }

    /// Leaves `index` out of the rotation for the cooldown (or `at_least`, if longer).
    /// Returns whether it was up before.
    pub(super) fn mark_down(&self, index: usize, at_least: Duration) -> bool {
        let until = self.now_ms() + millis(self.cooldown.max(at_least)).max(1);
        let before = self.backends[index]
            .down_until
            .swap(until, Ordering::Relaxed);
        before == 0
    }

    /// Resolves once the health probe finds `index` silent (see [`went_silent`]); only
    /// probes made after this call count.
    ///
    /// [`went_silent`]: Router::went_silent
    pub(super) fn silenced(&self, index: usize) -> Notified<'_> {
        self.backends[index].silent.notified()
    }

    /// The health probe of `index` got no answer: the requests it holds are given up on.
    pub(super) fn went_silent(&self, index: usize) {
        self.backends[index].silent.notify_waiters();
    }

    /// Puts `index` back into the rotation. Returns whether it was marked down before.
    pub(super) fn mark_up(&self, index: usize) -> bool {
        let mark = &self.backends[index].down_until;
        // A load first keeps the common path (already up) free of cache-line writes.
        mark.load(Ordering::Relaxed) != 0 && mark.swap(0, Ordering::Relaxed) != 0
    }

    fn now_ms(&self) -> u64 {
        millis(self.epoch.elapsed())
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn authority_of(addr: SocketAddr) -> Authority {
    // A SocketAddr always prints as a valid authority (`1.2.3.4:5`, `[::1]:5`).
    Authority::try_from(addr.to_string()).unwrap_or_else(|_| Authority::from_static("127.0.0.1"))
}

/// The backend slot of a client address: FNV-1a over the address octets, so the mapping is
/// the same in every build and every run (a seeded hasher would reshuffle clients on restart).
pub(super) fn ip_slot(ip: IpAddr, backends: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for &b in bytes {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
    match ip.to_canonical() {
        IpAddr::V4(v4) => feed(&v4.octets()),
        IpAddr::V6(v6) => feed(&v6.octets()),
    }
    // `backends` is at least 1 (checked by `start`); the modulo result fits in usize.
    usize::try_from(hash % backends.max(1) as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancer::SidTableConfig;
    use std::net::Ipv4Addr;

    fn router(mode: Mode) -> Router {
        let addrs: Vec<SocketAddr> = (1..=3)
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .collect();
        Router::new(
            &addrs,
            mode,
            Duration::from_secs(60),
            SidTable::new(&SidTableConfig::default()),
        )
    }

    #[test]
    fn rotation_skips_a_backend_marked_down() {
        let r = router(Mode::RoundRobin);
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert_eq!(
            (0..6).map(|_| r.pick(ip, None)).collect::<Vec<_>>(),
            [0, 1, 2, 0, 1, 2]
        );
        assert!(r.mark_down(1, Duration::ZERO));
        assert!(!(0..9).map(|_| r.pick(ip, None)).any(|i| i == 1));
        assert!(r.mark_up(1));
        assert!((0..3).map(|_| r.pick(ip, None)).any(|i| i == 1));
    }

    #[test]
    fn all_down_still_rotates() {
        let r = router(Mode::RoundRobin);
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        for i in 0..3 {
            r.mark_down(i, Duration::ZERO);
        }
        let picked: Vec<_> = (0..3).map(|_| r.pick(ip, None)).collect();
        assert_eq!(picked, [0, 1, 2]);
    }

    #[test]
    fn ip_hash_is_stable_and_spreads() {
        let mut hits = [0usize; 3];
        for a in 0..=255u8 {
            for b in [1u8, 77, 200] {
                let ip = IpAddr::V4(Ipv4Addr::new(10, b, a, 7));
                let slot = ip_slot(ip, 3);
                assert_eq!(slot, ip_slot(ip, 3));
                hits[slot] += 1;
            }
        }
        // 768 addresses over 3 slots: each gets a fair share.
        assert!(hits.iter().all(|&h| h > 150), "{hits:?}");
        let mapped: IpAddr = "::ffff:10.1.2.7".parse().unwrap();
        assert_eq!(
            ip_slot(mapped, 3),
            ip_slot(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 7)), 3)
        );
    }

    #[test]
    fn sticky_ip_moves_past_a_down_backend() {
        let r = router(Mode::StickyIp);
        let ip = IpAddr::V4(Ipv4Addr::new(192, 168, 3, 4));
        let home = r.pick(ip, None);
        assert_eq!(r.pick(ip, None), home);
        r.mark_down(home, Duration::ZERO);
        assert_eq!(r.pick(ip, None), (home + 1) % 3);
    }

    #[test]
    fn sticky_sid_follows_the_table() {
        let r = router(Mode::StickySid);
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        r.sids.insert("abc", 2);
        for _ in 0..5 {
            assert_eq!(r.pick(ip, Some("abc")), 2);
        }
        assert_eq!(r.pick(ip, Some("unknown")), 0);
        assert_eq!(r.pick(ip, Some("unknown")), 1);
    }
}
