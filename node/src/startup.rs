//! Building and running a node: load the shard map, connect the router, refuse to serve
//! when any shard is behind on migrations, bind, and serve until told to stop.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use strata_router::catalog::{self, Catalog, CatalogError, Disagreement};
use strata_router::migrations::{self, MigrationError};
use strata_router::{ShardMap, ShardMapError, Topology};
use tokio::net::TcpListener;

use crate::config::NodeConfig;
use crate::redis_handle::{RedisError, RedisHandle};
use crate::routes;
use crate::state::AppState;

/// Why a node could not start. Each message tells the operator what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    ShardMap(#[from] ShardMapError),
    #[error("refusing to start: {0}")]
    Migrations(#[from] MigrationError),
    #[error("refusing to start: {0}")]
    Catalog(#[from] CatalogError),
    #[error("refusing to start: {0}")]
    MapDisagrees(#[from] Disagreement),
    #[error(transparent)]
    Redis(#[from] RedisError),
    #[error(transparent)]
    Objects(#[from] crate::objects::ObjectsError),
    #[error(transparent)]
    Search(#[from] crate::search::index::IndexError),
    #[error("cannot install the metrics recorder: {0}")]
    Metrics(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// How often a node checks the catalog's epoch, in case it missed a notification.
const CATALOG_POLL: Duration = Duration::from_secs(1);

/// A node that is built and bound, ready to serve.
pub struct Application {
    listener: TcpListener,
    state: AppState,
}

impl Application {
    /// Builds every part of the node and binds its listener.
    pub async fn build(config: NodeConfig) -> Result<Self, StartupError> {
        let map = ShardMap::load(&config.shard_map)?;
        let metrics =
            crate::metrics::install_recorder().map_err(|e| StartupError::Metrics(e.to_string()))?;
        let topology = Topology::connect(map.clone(), config.router.clone()).await;
        migrations::ensure_current(&topology).await?;
        let catalog = Catalog::from_map(&map);
        let placement = catalog.load().await?;
        catalog::check_map_agrees(&map, &placement)?;
        topology.follow_catalog(catalog, &placement).await;
        let poller = topology.spawn_poller();
        let follower = topology.spawn_catalog_follower(CATALOG_POLL);
        let redis = RedisHandle::new(&config.redis.seeds)?;
        let objects = crate::objects::open(&config.files)?;
        let search = std::sync::Arc::new(crate::search::index::SearchIndex::open(
            &config.search.index_dir,
        )?);
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartupError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let state = AppState::new(
            config,
            topology,
            [poller, follower],
            redis,
            metrics,
            objects,
            search,
        );
        Ok(Self { listener, state })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then leaves the load balancer (see
    /// [`crate::drain`]), stops accepting, and lets requests in flight finish for up to
    /// the configured grace period.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let grace = Duration::from_millis(self.state.config().shutdown_grace_ms);
        let node_id = self.state.config().node_id.clone();
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let jobs = crate::background::start(&self.state);
        let draining = self.state.clone();
        let app = routes::app(self.state);
        tracing::info!(node_id = %node_id, addr = %self.listener.local_addr()?, "serving");
        let serve = axum::serve(
            self.listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            shutdown.await;
            draining.drain().leave().await;
            let _ = stopping_tx.send(());
        });
        let deadline = async move {
            if stopping_rx.await.is_ok() {
                tokio::time::sleep(grace).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            served = serve.into_future() => served?,
            () = deadline => tracing::warn!(grace_ms = grace.as_millis() as u64, "requests still running at the end of the grace period"),
        }
        drop(jobs);
        tracing::info!(node_id = %node_id, "stopped");
        Ok(())
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
