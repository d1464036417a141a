//! Leaving the load balancer before stopping. The load balancer keeps connections to
//! the nodes open and reuses them; a node that simply stopped would close connections
//! the balancer may be sending a request on that very moment. So on SIGTERM a node
//! that is being health-checked first answers `/readyz` with 503 until the balancer has
//! seen it fail [`Drain::checks_to_leave`] times (or `shutdown_drain_ms` passed), keeps
//! serving meanwhile, and only then stops accepting and lets requests in flight finish.
//! A node nobody health-checks (run by hand) stops at once.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// How recently a readiness check must have come for the node to wait for the next
/// ones before stopping.
const WATCHED_WITHIN: Duration = Duration::from_secs(10);

/// After the last refused check, time for the balancer to act on it.
const SETTLE: Duration = Duration::from_millis(300);

/// The node's drain state, shared by `/readyz` and the shutdown path.
pub struct Drain {
    draining: AtomicBool,
    /// When `/readyz` was last asked (ms since `started`; 0: never).
    last_check_ms: AtomicU64,
    /// Readiness checks refused since draining began.
    refused: AtomicU64,
    started: Instant,
    /// The most the drain waits.
    limit: Duration,
    /// Refused checks after which the balancer has taken the node out (its `fall`).
    pub checks_to_leave: u64,
}

impl Drain {
    /// A drain that waits at most `limit` for `checks_to_leave` refused checks.
    pub fn new(limit: Duration, checks_to_leave: u64) -> Self {
        Self {
            draining: AtomicBool::new(false),
            last_check_ms: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            started: Instant::now(),
            limit,
            checks_to_leave,
        }
    }

    /// Called by `/readyz`: whether to refuse (the node is draining), counting it.
    pub fn on_readiness_check(&self) -> bool {
        let now = self.started.elapsed().as_millis() as u64;
        self.last_check_ms.store(now.max(1), Ordering::Release);
        if self.draining.load(Ordering::Acquire) {
            self.refused.fetch_add(1, Ordering::AcqRel);
            true
        } else {
            false
        }
    }

    /// Starts draining and returns once the load balancer has had time to take the
    /// node out (at once when nothing health-checks it).
    pub async fn leave(&self) {
        self.draining.store(true, Ordering::Release);
        let last = self.last_check_ms.load(Ordering::Acquire);
        let now = self.started.elapsed().as_millis() as u64;
        if self.limit.is_zero()
            || last == 0
            || now.saturating_sub(last) > WATCHED_WITHIN.as_millis() as u64
        {
            return;
        }
        tracing::info!(
            checks = self.checks_to_leave,
            "draining: refusing readiness until the load balancer takes this node out"
        );
        let deadline = Instant::now() + self.limit;
        while self.refused.load(Ordering::Acquire) < self.checks_to_leave
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(SETTLE).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The clock is tokio's, paused: elapsed times below are simulated, not measured.

    #[tokio::test(start_paused = true)]
    async fn a_node_nobody_checks_leaves_at_once() {
        let drain = Drain::new(Duration::from_secs(30), 2);
        let started = Instant::now();
        drain.leave().await;
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert!(drain.on_readiness_check(), "refuses readiness once leaving");
    }

    #[tokio::test(start_paused = true)]
    async fn a_checked_node_waits_for_refused_checks() {
        let drain = std::sync::Arc::new(Drain::new(Duration::from_secs(30), 2));
        assert!(!drain.on_readiness_check(), "ready before draining");
        let leaving = tokio::spawn({
            let drain = std::sync::Arc::clone(&drain);
            async move { drain.leave().await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!leaving.is_finished(), "waits for the balancer");
        assert!(drain.on_readiness_check(), "refused while draining");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!leaving.is_finished(), "one refusal is not enough");
        assert!(drain.on_readiness_check());
        leaving.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_is_bounded() {
        let drain = Drain::new(Duration::from_millis(200), 2);
        drain.on_readiness_check();
        let started = Instant::now();
        drain.leave().await;
        assert!(
            started.elapsed() <= Duration::from_millis(200) + SETTLE + Duration::from_millis(40)
        );
    }
}
