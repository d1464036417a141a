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
        Ok(Self { client, connection: Mutex::new(None) })
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

    /// Round-trips a PING, recording its latency.
    pub async fn ping(&self, deadline: Duration) -> Result<Duration, RedisError> {
        let start = Instant::now();
        let attempt = async {
            let mut conn = self.connection().await?;
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .map_err(|e| RedisError::Unreachable(e.to_string()))
        };
        tokio::time::timeout(deadline, attempt).await.map_err(|_| RedisError::Timeout(deadline.as_millis()))??;
        let took = start.elapsed();
        metrics::histogram!("strata_redis_command_duration_seconds", "command" => "ping").record(took.as_secs_f64());
        Ok(took)
    }
}
