//! The node's Redis Cluster connection: one multiplexed cluster connection, opened on
//! first use and shared by every request. Opening lazily lets a node start while Redis
//! is still coming up; `/readyz` reports it until it answers.
//!
//! **Failover.** Every master has a replica. When a master dies, its replica takes its
//! slots after `cluster-node-timeout` and an election (about 3 s locally). Meanwhile a
//! command to those slots fails to connect; the client refreshes the slot map and
//! retries with short waits ([`RETRY`]) long enough to ride out a failover, so a request
//! is slower, not failed. Keys of other masters are served throughout
//! (`cluster-require-full-coverage no`).
//!
//! **Revocations survive a failover.** A replica is promoted with whatever it has
//! received: a session deleted on the master a moment before it died would come back.
//! Every revocation therefore waits (`WAIT`, [`Replication`]) until the key's replica
//! has it before the logout is acknowledged.

use std::time::{Duration, Instant};

use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use tokio::sync::Mutex;

/// Why Redis could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("redis seeds are invalid: {0}")]
    Seeds(String),
    #[error("redis is unreachable: {0}")]
    Unreachable(String),
    #[error("redis did not answer within {0} ms")]
    Timeout(u128),
    #[error("redis cluster state is {0:?}, not \"ok\"")]
    ClusterDown(String),
}

/// A lazily connected Redis Cluster client.
pub struct RedisHandle {
    client: ClusterClient,
    /// The shared connection, once opened. A mutex only guards opening it: the connection
    /// itself is cloned out and used concurrently.
    connection: Mutex<Option<ClusterConnection>>,
}

impl RedisHandle {
    /// A client for the given seeds; nothing is connected yet.
    pub fn new(seeds: &[String]) -> Result<Self, RedisError> {
        let client = ClusterClient::builder(seeds.to_vec())
            .connection_timeout(Duration::from_millis(500))
            // Bounds a whole command, retries included: long enough to ride out a
            // failover, short enough that a hung server fails the request.
            .response_timeout(COMMAND_DEADLINE)
            .retries(RETRY.retries)
            .min_retry_wait(RETRY.min_wait_ms)
            .max_retry_wait(RETRY.max_wait_ms)
            .retry_wait_formula(RETRY.factor_ms, 2)
            .build()
            .map_err(|e| RedisError::Seeds(e.to_string()))?;
        Ok(Self {
            client,
            connection: Mutex::new(None),
        })
    }

    /// The shared connection, opening it if needed.
    pub async fn connection(&self) -> Result<ClusterConnection, RedisError> {
        let mut slot = self.connection.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let conn = tokio::time::timeout(Duration::from_secs(2), self.client.get_async_connection())
            .await
            .map_err(|_| RedisError::Timeout(2000))?
            .map_err(|e| RedisError::Unreachable(e.to_string()))?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Asks the cluster how it is (`CLUSTER INFO` on any server that answers) and records
    /// how long that took. Errors when no server answers in time or the cluster says it
    /// is down as a whole; slots without a master (a failover in progress, a master lost
    /// with no replica) are reported, not an error: the other slots still serve.
    pub async fn probe(&self, deadline: Duration) -> Result<RedisHealth, RedisError> {
        let start = Instant::now();
        let attempt = async {
            let mut conn = self.connection().await?;
            let mut last = None;
            // A random server may be the one that just died: ask another.
            for _ in 0..3 {
                let asked = conn
                    .route_command(
                        redis::cmd("CLUSTER").arg("INFO").clone(),
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
                    )
                    .await
                    .and_then(|v| redis::from_redis_value::<String>(v).map_err(Into::into));
                match asked {
                    Ok(info) => return Ok(info),
                    Err(e) => last = Some(e),
                }
            }
            Err(RedisError::Unreachable(
                last.map(|e| e.to_string()).unwrap_or_default(),
            ))
        };
        let info = tokio::time::timeout(deadline, attempt)
            .await
            .map_err(|_| RedisError::Timeout(deadline.as_millis()))??;
        let took = start.elapsed();
        metrics::histogram!("strata_redis_command_duration_seconds", "command" => "cluster_info")
            .record(took.as_secs_f64());
        match cluster_state(&info) {
            "ok" => Ok(RedisHealth {
                took,
                slots_ok: info_field(&info, "cluster_slots_ok").unwrap_or(0),
            }),
            other => Err(RedisError::ClusterDown(other.to_owned())),
        }
    }

    /// Waits until the replica of `key`'s master has every write made so far on that
    /// master's connection (`WAIT 1`), for at most [`REPLICATION_WAIT`].
    pub async fn replicated(&self, key: &str) -> Replication {
        let Ok(mut conn) = self.connection().await else {
            return Replication::Unconfirmed;
        };
        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::with_key(
            key,
            SlotAddr::Master,
        )));
        let wait = redis::cmd("WAIT")
            .arg(1)
            .arg(REPLICATION_WAIT.as_millis() as u64)
            .clone();
        let acked = conn
            .route_command(wait, route)
            .await
            .ok()
            .and_then(|v| redis::from_redis_value::<i64>(v).ok());
        if acked.is_some_and(|n| n >= 1) {
            Replication::Confirmed
        } else {
            metrics::counter!("strata_redis_unreplicated_revocations_total").increment(1);
            tracing::warn!(
                key,
                "a revocation was not confirmed by a Redis replica in time"
            );
            Replication::Unconfirmed
        }
    }
}

/// Runs a read (or an idempotent write) again while it fails fast, for up to
/// [`FAILOVER_PATIENCE`]. The client's own retries can run out in the middle of a
/// failover (a slot map refreshed just before the replica took over, a redirect to a
/// server still starting); a failure that took the whole command deadline is not tried
/// again, so a Redis that is really down still fails the request in bounded time.
pub async fn retry_idempotent<T, F, Fut>(mut operation: F) -> Result<T, RedisError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, RedisError>>,
{
    let started = Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        match operation().await {
            Err(e) if started.elapsed() + pause < FAILOVER_PATIENCE => {
                metrics::counter!("strata_redis_retries_total").increment(1);
                tracing::debug!(error = %e, "a Redis read failed during what may be a failover; asking again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            outcome => return outcome,
        }
    }
}

/// How long [`retry_idempotent`] keeps asking.
const FAILOVER_PATIENCE: Duration = Duration::from_secs(4);

/// Whether a write reached the key's replica (see [`RedisHandle::replicated`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replication {
    Confirmed,
    /// No replica confirmed in time (none is up, or it lags): the write is on the master
    /// only, and would be lost if the master died before its replica caught up.
    Unconfirmed,
}

/// How long a revocation waits for its replica: a healthy replica answers in a
/// millisecond; a replica that is down must not hold a logout for long.
pub const REPLICATION_WAIT: Duration = Duration::from_millis(500);

/// The client's retries of a command that failed to reach its server: long enough in
/// all (about 5 s on average, 10 s at most) to cover a master's failover (about 3 s
/// locally: `cluster-node-timeout` 2 s, then the election), short between tries so a
/// request resumes soon after the replica takes over.
struct RetryPolicy {
    retries: u32,
    min_wait_ms: u64,
    max_wait_ms: u64,
    factor_ms: u64,
}

const RETRY: RetryPolicy = RetryPolicy {
    retries: 12,
    min_wait_ms: 100,
    max_wait_ms: 1000,
    factor_ms: 100,
};

/// The longest one command may take, retries through a failover included.
const COMMAND_DEADLINE: Duration = Duration::from_secs(6);

/// What a Redis probe found.
#[derive(Debug, Clone, Copy)]
pub struct RedisHealth {
    /// How long `CLUSTER INFO` took.
    pub took: Duration,
    /// Slots served by a live master (16384 when all are).
    pub slots_ok: u32,
}

/// A numeric field of a `CLUSTER INFO` answer.
fn info_field(info: &str, field: &str) -> Option<u32> {
    info.lines().find_map(|line| {
        line.trim()
            .strip_prefix(field)?
            .strip_prefix(':')?
            .parse()
            .ok()
    })
}

/// The `cluster_state` field of a `CLUSTER INFO` answer ("unknown" when absent).
fn cluster_state(info: &str) -> &str {
    info.lines()
        .find_map(|line| line.trim().strip_prefix("cluster_state:"))
        .unwrap_or("unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_state_is_read_from_cluster_info() {
        assert_eq!(
            cluster_state("cluster_enabled:1\r\ncluster_state:ok\r\ncluster_slots_ok:16384\r\n"),
            "ok"
        );
        assert_eq!(cluster_state("cluster_state:fail\r\n"), "fail");
        assert_eq!(cluster_state(""), "unknown");
    }

    #[test]
    fn slot_counts_are_read_from_cluster_info() {
        let info = "cluster_state:ok\r\ncluster_slots_assigned:16384\r\ncluster_slots_ok:10923\r\n";
        assert_eq!(info_field(info, "cluster_slots_ok"), Some(10923));
        assert_eq!(info_field(info, "cluster_slots_assigned"), Some(16384));
        assert_eq!(info_field(info, "cluster_slots_fail"), None);
    }
}
