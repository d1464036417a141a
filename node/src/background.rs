//! Background jobs of a node: following the change feeds into the search index,
//! settling name claims left by crashed signups, and the active-sessions gauge. Every node runs them; both are idempotent, so running them
//! on several nodes at once is harmless.

use std::time::Duration;

use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::invalidation::{self, Invalidations};

use crate::accounts::store::AccountStore;
use crate::state::AppState;

/// How often the slot moves' progress is read from the catalog.
const MOVE_PROGRESS_PERIOD: Duration = Duration::from_secs(15);

/// Exports where slot moves stand (from the catalog, which every node reads): the
/// moves unfinished and done, and how long the least recently advanced one has gone
/// without progress (the "rebalance stalled" alert).
async fn record_move_progress(state: &AppState) {
    let Some(catalog) = state.topology().catalog() else {
        return;
    };
    match catalog.move_progress().await {
        Ok(progress) => {
            metrics::gauge!("strata_rebalance_moves", "state" => "unfinished")
                .set(progress.unfinished as f64);
            metrics::gauge!("strata_rebalance_moves", "state" => "finished")
                .set(progress.finished as f64);
            metrics::gauge!("strata_rebalance_stalled_seconds")
                .set(progress.stalled_for.as_secs_f64());
        }
        Err(e) => tracing::debug!(error = %e, "could not read the slot moves"),
    }
}

/// How often the active-sessions gauge is refreshed.
const SESSION_GAUGE_PERIOD: Duration = Duration::from_secs(15);

/// Stops the jobs when dropped.
pub struct BackgroundJobs {
    tasks: Vec<JoinHandle<()>>,
    invalidations: Arc<Invalidations>,
}

impl Drop for BackgroundJobs {
    fn drop(&mut self) {
        for job in &self.tasks {
            job.abort();
        }
        self.invalidations.stop();
    }
}

/// Starts every periodic job.
pub fn start(state: &AppState) -> BackgroundJobs {
    let claims = {
        let state = state.clone();
        let period = Duration::from_millis(state.config().auth.claim_ttl_ms);
        every(period, move || {
            let state = state.clone();
            async move {
                match AccountStore::new(state.topology())
                    .settle_expired_claims()
                    .await
                {
                    Ok(0) => {}
                    Ok(settled) => tracing::info!(settled, "settled expired name claims"),
                    Err(e) => tracing::warn!(error = %e, "could not settle expired name claims"),
                }
            }
        })
    };
    let sessions = {
        let state = state.clone();
        every(SESSION_GAUGE_PERIOD, move || {
            let state = state.clone();
            async move {
                let store = state.sessions();
                if let Ok(active) = store.count_active().await {
                    metrics::gauge!("strata_active_sessions").set(active as f64);
                }
            }
        })
    };
    let feeds = tokio::spawn(crate::search::tailer::follow(
        state.shared_topology(),
        std::sync::Arc::clone(state.search()),
    ));
    let moves = {
        let state = state.clone();
        every(MOVE_PROGRESS_PERIOD, move || {
            let state = state.clone();
            async move { record_move_progress(&state).await }
        })
    };
    let invalidations = Arc::clone(state.invalidations());
    let heartbeat = if invalidations.enabled() {
        invalidation::listen(
            Arc::clone(&invalidations),
            state.config().redis.seeds.clone(),
        );
        let state = state.clone();
        every(invalidation::HEARTBEAT, move || {
            let state = state.clone();
            async move {
                invalidation::publish_heartbeat(state.invalidations(), state.redis()).await;
            }
        })
    } else {
        tokio::spawn(async {})
    };
    BackgroundJobs {
        tasks: vec![claims, sessions, feeds, heartbeat, moves],
        invalidations,
    }
}

fn every<F, Fut>(period: Duration, mut job: F) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            job().await;
        }
    })
}
