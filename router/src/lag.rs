//! How far a replica is behind, in seconds rather than bytes. The primary's WAL position
//! is sampled on every poll; a replica's lag is how long ago the primary first reached a
//! position the replica has not yet replayed. An idle primary therefore shows no lag, and
//! a replica that stops applying (paused, delayed or stuck) shows lag growing in real time
//! as soon as the primary writes anything.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::lsn::Lsn;

/// Samples of the primary's WAL position: when each new position was first seen.
#[derive(Debug, Clone)]
pub struct PrimaryHistory {
    samples: VecDeque<(Instant, Lsn)>,
    keep: usize,
}

impl PrimaryHistory {
    /// A history that keeps at most `keep` samples (older ones only matter to replicas
    /// that are already far past any sane lag bound).
    pub fn new(keep: usize) -> Self {
        Self {
            samples: VecDeque::new(),
            keep: keep.max(2),
        }
    }

    /// Records the primary's position as seen at `at`. A position not past the last one
    /// (an idle primary, or a new primary after failover starting lower) is handled: idle
    /// adds nothing; a lower position restarts the history.
    pub fn record(&mut self, at: Instant, lsn: Lsn) {
        match self.samples.back() {
            Some((_, last)) if lsn == *last => return,
            Some((_, last)) if lsn < *last => self.samples.clear(),
            _ => {}
        }
        self.samples.push_back((at, lsn));
        while self.samples.len() > self.keep {
            self.samples.pop_front();
        }
    }

    /// The primary's latest known position.
    pub fn latest(&self) -> Option<Lsn> {
        self.samples.back().map(|(_, lsn)| *lsn)
    }

    /// How long a replica that has replayed up to `replayed` has been behind at `now`.
    pub fn lag_of(&self, replayed: Lsn, now: Instant) -> Duration {
        self.samples
            .iter()
            .find(|(_, lsn)| *lsn > replayed)
            .map(|(seen, _)| now.saturating_duration_since(*seen))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn a_replica_at_the_primary_position_has_no_lag() {
        let t0 = Instant::now();
        let mut h = PrimaryHistory::new(100);
        h.record(t0, Lsn(100));
        assert_eq!(h.lag_of(Lsn(100), t0 + secs(60)), Duration::ZERO);
    }

    #[test]
    fn lag_counts_from_when_the_primary_first_passed_the_replica() {
        let t0 = Instant::now();
        let mut h = PrimaryHistory::new(100);
        h.record(t0, Lsn(100));
        h.record(t0 + secs(10), Lsn(200));
        h.record(t0 + secs(11), Lsn(200));
        h.record(t0 + secs(12), Lsn(300));
        assert_eq!(h.lag_of(Lsn(100), t0 + secs(15)), secs(5));
        assert_eq!(h.lag_of(Lsn(250), t0 + secs(15)), secs(3));
        assert_eq!(h.lag_of(Lsn(300), t0 + secs(15)), Duration::ZERO);
    }

    #[test]
    fn an_idle_primary_does_not_make_replicas_look_late() {
        let t0 = Instant::now();
        let mut h = PrimaryHistory::new(100);
        for s in 0..50 {
            h.record(t0 + secs(s), Lsn(42));
        }
        assert_eq!(h.lag_of(Lsn(42), t0 + secs(100)), Duration::ZERO);
    }

    #[test]
    fn a_lower_position_after_failover_restarts_the_history() {
        let t0 = Instant::now();
        let mut h = PrimaryHistory::new(100);
        h.record(t0, Lsn(500));
        h.record(t0 + secs(1), Lsn(90));
        assert_eq!(h.latest(), Some(Lsn(90)));
        assert_eq!(h.lag_of(Lsn(90), t0 + secs(5)), Duration::ZERO);
    }

    #[test]
    fn only_the_newest_samples_are_kept() {
        let t0 = Instant::now();
        let mut h = PrimaryHistory::new(3);
        for s in 0..10u64 {
            h.record(t0 + secs(s), Lsn(s + 1));
        }
        // The oldest kept sample is lsn 8 seen at t0+7s.
        assert_eq!(h.lag_of(Lsn(0), t0 + secs(10)), secs(3));
    }
}
