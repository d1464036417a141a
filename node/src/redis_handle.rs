//! The node's Redis Cluster connection: one multiplexed cluster connection, opened on
//! first use and shared by every request. Opening lazily lets a node start while Redis
//! is still coming up; `/readyz` reports it until it answers.

use std::time::{Duration, Instant};

use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
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
            .connection_timeout(Duration::from_secs(1))
            .response_timeout(Duration::from_secs(1))
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

    /// Asks the cluster whether it is healthy (`CLUSTER INFO` reports `cluster_state:ok`)
    /// and records how long that took. A plain PING is not enough: surviving masters
    /// answer it while the slots of a failed master are unserved.
    pub async fn probe(&self, deadline: Duration) -> Result<Duration, RedisError> {
        let start = Instant::now();
        let attempt = async {
            let mut conn = self.connection().await?;
            redis::cmd("CLUSTER")
                .arg("INFO")
                .query_async::<String>(&mut conn)
                .await
                .map_err(|e| RedisError::Unreachable(e.to_string()))
        };
        let info = tokio::time::timeout(deadline, attempt)
            .await
            .map_err(|_| RedisError::Timeout(deadline.as_millis()))??;
        let took = start.elapsed();
        metrics::histogram!("strata_redis_command_duration_seconds", "command" => "cluster_info")
            .record(took.as_secs_f64());
        match cluster_state(&info) {
            "ok" => Ok(took),
            other => Err(RedisError::ClusterDown(other.to_owned())),
        }
    }
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
}
