//! Which host serves a read: a healthy replica that is fresh enough, else the primary.
//! Pure logic over observed host state, so every rule is unit-tested without a database.

use std::time::Duration;

use crate::lsn::Lsn;

/// What the poller last saw of one host, as far as choosing a reader is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostView {
    /// The host answered its last poll as a primary.
    pub is_primary: bool,
    /// The host answered its last poll as a replica.
    pub is_replica: bool,
    /// The host is banned (errored or lagged) and must not serve reads until re-admitted.
    pub banned: bool,
    /// Replay position (replica) or current WAL position (primary) at the last poll.
    pub lsn: Option<Lsn>,
    /// How long the replica has been behind the primary.
    pub lag: Duration,
}

/// Orders the hosts to try for one read: eligible replicas first, starting at `rotate`
/// so load spreads across them, then the primary. A replica is eligible when it is not
/// banned, its lag is within `max_lag`, and (when the read carries a consistency token)
/// it has replayed at least `min_lsn`.
pub fn read_candidates(
    hosts: &[HostView],
    min_lsn: Option<Lsn>,
    max_lag: Duration,
    rotate: usize,
) -> Vec<usize> {
    let fresh_enough = |h: &HostView| match (min_lsn, h.lsn) {
        (None, _) => true,
        (Some(want), Some(have)) => have >= want,
        (Some(_), None) => false,
    };
    let replicas: Vec<usize> = hosts
        .iter()
        .enumerate()
        .filter(|(_, h)| h.is_replica && !h.banned && h.lag <= max_lag && fresh_enough(h))
        .map(|(i, _)| i)
        .collect();
    let mut order = Vec::with_capacity(replicas.len() + 1);
    if !replicas.is_empty() {
        let start = rotate % replicas.len();
        order.extend(replicas[start..].iter().chain(&replicas[..start]));
    }
    order.extend(hosts.iter().position(|h| h.is_primary && !h.banned));
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn primary() -> HostView {
        HostView {
            is_primary: true,
            is_replica: false,
            banned: false,
            lsn: Some(Lsn(100)),
            lag: Duration::ZERO,
        }
    }

    fn replica(lsn: u64, lag_ms: u64) -> HostView {
        HostView {
            is_primary: false,
            is_replica: true,
            banned: false,
            lsn: Some(Lsn(lsn)),
            lag: Duration::from_millis(lag_ms),
        }
    }

    const BOUND: Duration = Duration::from_secs(1);

    #[test]
    fn healthy_replicas_come_before_the_primary_and_rotate() {
        let hosts = [primary(), replica(100, 0), replica(100, 0)];
        assert_eq!(read_candidates(&hosts, None, BOUND, 0), vec![1, 2, 0]);
        assert_eq!(read_candidates(&hosts, None, BOUND, 1), vec![2, 1, 0]);
    }

    #[test]
    fn banned_and_lagging_replicas_are_skipped() {
        let mut banned = replica(100, 0);
        banned.banned = true;
        let hosts = [primary(), banned, replica(100, 5_000), replica(100, 900)];
        assert_eq!(read_candidates(&hosts, None, BOUND, 0), vec![3, 0]);
    }

    #[test]
    fn a_consistency_token_needs_a_replica_at_or_past_its_lsn() {
        let hosts = [primary(), replica(90, 0), replica(100, 0)];
        assert_eq!(
            read_candidates(&hosts, Some(Lsn(100)), BOUND, 0),
            vec![2, 0]
        );
        assert_eq!(read_candidates(&hosts, Some(Lsn(101)), BOUND, 0), vec![0]);
    }

    #[test]
    fn without_a_primary_only_replicas_are_offered() {
        let hosts = [replica(100, 0)];
        assert_eq!(read_candidates(&hosts, None, BOUND, 0), vec![0]);
        assert!(read_candidates(&[], None, BOUND, 0).is_empty());
    }
}
