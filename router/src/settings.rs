//! Tunables of the router: polling, lag bound, bans and pool sizes. Embedded in the node's
//! config file under `[router]`; every field has a default, stated here.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How the router watches hosts and sizes its pools.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterSettings {
    /// How often every host is polled for its role and WAL position. Default 250 ms.
    pub poll_interval_ms: u64,
    /// A poll that takes longer than this counts as a failure. Default 1000 ms.
    pub poll_timeout_ms: u64,
    /// A replica further behind than this serves no reads. Default 2000 ms.
    pub max_replica_lag_ms: u64,
    /// How long a replica that failed a poll or a read stays banned. Default 3000 ms.
    pub ban_ms: u64,
    /// Connections a node keeps to one Postgres server (`host:port`). Shards with a host
    /// on the same server split half of them, each pool at least 1
    /// ([`crate::pools::shard_pool_size`]): a server keeps about as many backends busy
    /// whether it holds one shard or eight. Default 16.
    pub pool_max_size: usize,
    /// Time to open one connection, and to wait for a pooled one. Default 2000 ms.
    pub connect_timeout_ms: u64,
}

impl Default for RouterSettings {
    fn default() -> Self {
        Self {
            poll_interval_ms: 250,
            poll_timeout_ms: 1000,
            max_replica_lag_ms: 2000,
            ban_ms: 3000,
            pool_max_size: 16,
            connect_timeout_ms: 2000,
        }
    }
}

impl RouterSettings {
    /// Poll period.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }
    /// Poll deadline.
    pub fn poll_timeout(&self) -> Duration {
        Duration::from_millis(self.poll_timeout_ms)
    }
    /// Replica lag bound.
    pub fn max_replica_lag(&self) -> Duration {
        Duration::from_millis(self.max_replica_lag_ms)
    }
    /// Ban length.
    pub fn ban(&self) -> Duration {
        Duration::from_millis(self.ban_ms)
    }
    /// Connect and pool-wait deadline.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}
