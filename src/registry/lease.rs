//! Whether this node may serve its sessions: a lease held while the Raft majority is heard.
//!
//! The leader takes over the sessions of a member it has had no answer from for
//! `takeover_after`. A member cut off from the majority must stop serving them before that
//! happens, or a session would have two serving owners: so it serves only while it hears the
//! majority (a follower: an append from the leader; the leader: a quorum acknowledgement)
//! within a lease shorter than `takeover_after`. A lease that lapsed stays broken even once
//! the majority is heard again, until the node has caught up with everything the majority
//! committed meanwhile (a take-over of its sessions, say) and let go of what it no longer
//! owns ([`Registry::renew_lease`](super::Registry::renew_lease)).

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub(crate) struct ServingLease {
    length: Duration,
    state: Mutex<State>,
}

struct State {
    /// When the leader was last heard, as a follower. Until the first time, the node holds
    /// nothing the others could take over (an earlier process's sessions are taken back
    /// first), so it serves.
    heard: Option<Instant>,
    /// Lapsed since the node last caught up.
    broken: bool,
    /// How many times it lapsed: a catch-up that began before the latest lapse renews nothing.
    lapses: u64,
}

impl ServingLease {
    pub(crate) fn new(length: Duration) -> Self {
        ServingLease {
            length,
            state: Mutex::new(State {
                heard: None,
                broken: false,
                lapses: 0,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An append from the current leader was accepted. After a gap longer than the lease,
    /// the lease is broken (the node may have missed a take-over).
    pub(crate) fn heard_leader(&self) {
        let now = Instant::now();
        let mut st = self.state();
        if st
            .heard
            .is_some_and(|at| now.duration_since(at) > self.length)
        {
            st.lapse();
        }
        st.heard = Some(now);
    }

    /// Whether the node holds the lease; `quorum_ack`: as the leader, how long ago a majority
    /// last acknowledged it (`None` when it is not the leader). A lapse breaks it.
    pub(crate) fn held(&self, quorum_ack: Option<Duration>) -> bool {
        let mut st = self.state();
        let fresh = match quorum_ack {
            Some(ago) => ago < self.length,
            None => st.heard.is_none_or(|at| at.elapsed() < self.length),
        };
        if !fresh {
            st.lapse();
        }
        fresh && !st.broken
    }

    /// `Some(lapses)` when the lease is broken: pass it to [`renewed`](Self::renewed) once
    /// caught up.
    pub(crate) fn broken(&self) -> Option<u64> {
        let st = self.state();
        st.broken.then_some(st.lapses)
    }

    /// The node caught up with the majority after the lapse counted `lapses`: it may serve
    /// again, unless the lease lapsed once more meanwhile.
    pub(crate) fn renewed(&self, lapses: u64) {
        let mut st = self.state();
        if st.lapses == lapses {
            st.broken = false;
        }
    }
}

impl State {
    fn lapse(&mut self) {
        if !self.broken {
            self.broken = true;
            self.lapses += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_breaks_on_a_gap_and_is_renewed_after_a_catch_up() {
        let lease = ServingLease::new(Duration::from_millis(50));
        assert!(lease.held(None), "no leader heard yet: nothing to lose");
        lease.heard_leader();
        assert!(lease.held(None));
        std::thread::sleep(Duration::from_millis(80));
        let before = lease.broken();
        assert_eq!(before, None, "not noticed yet");
        lease.heard_leader();
        assert!(!lease.held(None), "a gap longer than the lease breaks it");
        let lapses = lease.broken().unwrap();
        lease.renewed(lapses);
        assert!(lease.held(None));
        assert!(lease.held(Some(Duration::from_millis(10))));
        assert!(!lease.held(Some(Duration::from_millis(60))));
        let lapses = lease.broken().unwrap();
        assert!(!lease.held(Some(Duration::from_millis(60))));
        lease.heard_leader();
        lease.renewed(lapses - 1);
        assert!(
            lease.broken().is_some(),
            "a catch-up from before a lapse renews nothing"
        );
    }
}
