//! Handshakes per client address per second, counted in one-second windows. The table holds
//! only the addresses seen in the current second, so it is bounded by the handshake rate
//! itself, and it is emptied when the second turns.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Instant;

use axum::http::HeaderMap;

/// The limit of one node (shared by its mounts).
pub(crate) struct HandshakeLimit {
    per_second: u32,
    /// Where the seconds are counted from.
    start: Instant,
    window: Mutex<Window>,
}

#[derive(Default)]
struct Window {
    second: u64,
    counts: HashMap<IpAddr, u32>,
}

impl HandshakeLimit {
    /// At most `per_second` handshakes per address in any one-second window.
    pub(crate) fn new(per_second: u32) -> HandshakeLimit {
        HandshakeLimit {
            per_second,
            start: Instant::now(),
            window: Mutex::new(Window::default()),
        }
    }

    /// Whether `client` may open one more session now (counting it if so).
    pub(crate) fn allow(&self, client: IpAddr) -> bool {
        self.allow_in(client, self.start.elapsed().as_secs())
    }

    fn allow_in(&self, client: IpAddr, second: u64) -> bool {
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if window.second != second {
            window.second = second;
            window.counts.clear();
        }
        let count = window.counts.entry(client).or_insert(0);
        if *count >= self.per_second {
            return false;
        }
        *count += 1;
        true
    }
}

/// The address of the client a request comes from: the last entry of `X-Forwarded-For` (the
/// address the nearest proxy saw) when `trust_forwarded_for` and there is one, else the
/// connection's peer.
pub(crate) fn client_address(
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
    trust_forwarded_for: bool,
) -> Option<IpAddr> {
    let forwarded = trust_forwarded_for
        .then(|| headers.get_all("x-forwarded-for").iter().next_back())
        .flatten()
        .and_then(|value| value.to_str().ok())
        .and_then(|list| list.rsplit(',').next())
        .and_then(|last| last.trim().parse().ok());
    forwarded.or(peer.map(|p| p.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_has_its_own_budget_per_second() {
        let limit = HandshakeLimit::new(2);
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        assert!(limit.allow_in(a, 7) && limit.allow_in(a, 7));
        assert!(!limit.allow_in(a, 7), "a third in the same second");
        assert!(limit.allow_in(b, 7), "another address");
        assert!(limit.allow_in(a, 8), "the next second");
        assert_eq!(limit.window.lock().map(|w| w.counts.len()).ok(), Some(1));
    }

    #[test]
    fn the_address_is_the_last_forwarded_one_when_trusted() {
        let mut headers = HeaderMap::new();
        let peer = Some(SocketAddr::from(([127, 0, 0, 1], 4000)));
        assert_eq!(
            client_address(&headers, peer, true),
            Some(IpAddr::from([127, 0, 0, 1]))
        );
        headers.insert(
            "x-forwarded-for",
            "1.2.3.4, 10.9.8.7".parse().expect("header"),
        );
        assert_eq!(
            client_address(&headers, peer, true),
            Some(IpAddr::from([10, 9, 8, 7]))
        );
        assert_eq!(
            client_address(&headers, peer, false),
            Some(IpAddr::from([127, 0, 0, 1]))
        );
        headers.insert("x-forwarded-for", "garbage".parse().expect("header"));
        assert_eq!(
            client_address(&headers, peer, true),
            Some(IpAddr::from([127, 0, 0, 1]))
        );
    }
}
