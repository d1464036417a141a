//! The state every handler shares: config, router topology, Redis, token issuer,
//! password hasher and metrics. Cheap to clone (one `Arc`).

use std::sync::Arc;
use std::time::Duration;

use axum::response::Response;
use metrics_exporter_prometheus::PrometheusHandle;
use object_store::ObjectStore;
use strata_router::Topology;
use strata_router::topology::PollerGuard;

use crate::auth::passwords::PasswordHasher;
use crate::auth::sessions::SessionStore;
use crate::auth::tokens::TokenIssuer;
use crate::config::NodeConfig;
use crate::consistency::ConsistencyToken;
use crate::drain::Drain;
use crate::invalidation::Invalidations;
use crate::items::cursor::CursorSigner;
use crate::redis_handle::RedisHandle;
use crate::search::index::SearchIndex;

/// Shared handler state.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    config: NodeConfig,
    tokens: TokenIssuer,
    cursors: CursorSigner,
    hasher: PasswordHasher,
    topology: Arc<Topology>,
    redis: RedisHandle,
    metrics: PrometheusHandle,
    objects: Arc<dyn ObjectStore>,
    search: Arc<SearchIndex>,
    invalidations: Arc<Invalidations>,
    drain: Drain,
    /// Keeps the host poller and the catalog follower running while the state lives.
    _pollers: [PollerGuard; 2],
}

impl AppState {
    /// Bundles the node's parts; starts the password-hashing pool.
    pub fn new(
        config: NodeConfig,
        topology: Arc<Topology>,
        pollers: [PollerGuard; 2],
        redis: RedisHandle,
        metrics: PrometheusHandle,
        objects: Arc<dyn ObjectStore>,
        search: Arc<SearchIndex>,
    ) -> Self {
        let tokens = TokenIssuer::new(&config.auth);
        let cursors = CursorSigner::from_secret(config.auth.signing_secret().as_bytes());
        let hasher = PasswordHasher::start(config.auth.hash_threads, config.auth.hash_queue);
        let invalidations = Arc::new(Invalidations::new(
            &config.node_id,
            Duration::from_millis(config.cache.session_checks_ms),
            Duration::from_millis(config.cache.public_posts_ms),
        ));
        let drain = Drain::new(
            Duration::from_millis(config.shutdown_drain_ms),
            config.shutdown_drain_checks,
        );
        let inner = Inner {
            invalidations,
            drain,
            config,
            tokens,
            cursors,
            hasher,
            topology,
            redis,
            metrics,
            objects,
            search,
            _pollers: pollers,
        };
        Self {
            inner: Arc::new(inner),
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

    /// The topology, shared with a background task.
    pub fn shared_topology(&self) -> Arc<Topology> {
        Arc::clone(&self.inner.topology)
    }

    /// Redis Cluster.
    pub fn redis(&self) -> &RedisHandle {
        &self.inner.redis
    }

    /// The Prometheus registry.
    pub fn metrics(&self) -> &PrometheusHandle {
        &self.inner.metrics
    }

    /// Where file bytes are kept.
    pub fn objects(&self) -> &Arc<dyn ObjectStore> {
        &self.inner.objects
    }

    /// The node's search index.
    pub fn search(&self) -> &Arc<SearchIndex> {
        &self.inner.search
    }

    /// Signs and verifies access tokens.
    pub fn tokens(&self) -> &TokenIssuer {
        &self.inner.tokens
    }

    /// Signs and checks list cursors.
    pub fn cursors(&self) -> &CursorSigner {
        &self.inner.cursors
    }

    /// The password-hashing pool.
    pub fn hasher(&self) -> &PasswordHasher {
        &self.inner.hasher
    }

    /// Stamps a write's answer with the caller's consistency token merged with the
    /// write's (header and cookie, the cookie `Secure` as configured).
    pub fn stamp(
        &self,
        response: Response,
        caller: &ConsistencyToken,
        write: &ConsistencyToken,
    ) -> Response {
        // The placement this node knows now is at least the one the write went by.
        let write = write.clone().with_epoch(self.inner.topology.epoch());
        crate::consistency::stamp(
            response,
            caller,
            &write,
            self.inner.config.auth.secure_cookies,
        )
    }

    /// How long a session lives after its last refresh.
    pub fn session_ttl(&self) -> Duration {
        Duration::from_secs(self.inner.config.auth.refresh_ttl_secs)
    }

    /// The session store (Redis, with this node's cache of recent checks).
    pub fn sessions(&self) -> SessionStore<'_> {
        SessionStore::new(
            &self.inner.redis,
            self.session_ttl(),
            &self.inner.invalidations,
        )
    }

    /// Leaving the load balancer before stopping.
    pub fn drain(&self) -> &Drain {
        &self.inner.drain
    }

    /// This node's local caches, with their listener state.
    pub fn invalidations(&self) -> &Arc<Invalidations> {
        &self.inner.invalidations
    }
}
