//! The state every handler shares: config, router topology, Redis and metrics. Cheap to
//! clone (one `Arc`).

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use strata_router::Topology;
use strata_router::topology::PollerGuard;

use crate::config::NodeConfig;
use crate::redis_handle::RedisHandle;

/// Shared handler state.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    config: NodeConfig,
    topology: Arc<Topology>,
    redis: RedisHandle,
    metrics: PrometheusHandle,
    /// Keeps the topology poller running for as long as the state lives.
    _poller: PollerGuard,
}

impl AppState {
    /// Bundles the node's parts.
    pub fn new(
        config: NodeConfig,
        topology: Arc<Topology>,
        poller: PollerGuard,
        redis: RedisHandle,
        metrics: PrometheusHandle,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                topology,
                redis,
                metrics,
                _poller: poller,
            }),
        }
    }

    /// The node's configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }

    /// Shards, hosts and their live state.
    pub fn topology(&self) -> &Topology {
        &self.inner.topology
    }

    /// Redis Cluster.
    pub fn redis(&self) -> &RedisHandle {
        &self.inner.redis
    }

    /// The Prometheus registry.
    pub fn metrics(&self) -> &PrometheusHandle {
        &self.inner.metrics
    }
}
