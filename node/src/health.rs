//! `/healthz` (the process is alive) and `/readyz` (it can serve: every shard has a
//! reachable primary, the Redis Cluster answers, and the search index has caught up with
//! the change feeds). Redis slots without a live master (a failover in progress) are
//! reported in the body but do not make the node unready: every node shares the same
//! Redis, so taking them all out of the load balancer would turn a partial outage into a
//! total one. Not-ready answers 503 problem+json naming every
//! reason, so an operator sees at once what is down. A node shutting down refuses
//! readiness first, so the load balancer takes it out before it stops (see
//! [`crate::drain`]).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use crate::error::ApiError;
use crate::state::AppState;

/// How long the readiness probe waits for Redis.
const REDIS_PROBE_DEADLINE: Duration = Duration::from_millis(500);

/// Body of `/healthz`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Alive {
    pub status: &'static str,
    pub node_id: String,
}

/// `GET /healthz`: 200 while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "The process is alive", body = Alive)))]
pub async fn healthz(State(state): State<AppState>) -> Json<Alive> {
    Json(Alive {
        status: "ok",
        node_id: state.config().node_id.clone(),
    })
}

/// Body of a ready `/readyz`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Ready {
    pub status: &'static str,
    pub shards: usize,
    pub redis_probe_ms: f64,
    /// Redis Cluster slots served by a live master (16384 when all are; fewer while a
    /// master fails over: the users on those slots wait, the others are served).
    pub redis_slots_ok: u32,
}

/// `GET /readyz`: 200 when every shard has a primary and Redis answers; else 503 with
/// every reason.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses((status = 200, description = "Can serve", body = Ready), (status = 503, description = "Cannot serve, and why", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Ready>, ApiError> {
    if state.drain().on_readiness_check() {
        return Err(ApiError::Unavailable {
            detail: "not ready: draining before shutdown".into(),
            retry_after_secs: 1,
        });
    }
    let shards = state.topology().status();
    let mut reasons: Vec<String> = shards
        .iter()
        .filter(|s| !s.has_primary)
        .map(|s| format!("shard {} has no reachable primary", s.id))
        .collect();
    if !state.search().caught_up() {
        reasons.push("the search index has not caught up with the change feeds yet".into());
    }
    let redis = state.redis().probe(REDIS_PROBE_DEADLINE).await;
    if let Err(e) = &redis {
        reasons.push(e.to_string());
    }
    match redis {
        Ok(health) if reasons.is_empty() => {
            metrics::gauge!("strata_redis_slots_ok").set(f64::from(health.slots_ok));
            Ok(Json(Ready {
                status: "ready",
                shards: shards.len(),
                redis_probe_ms: health.took.as_secs_f64() * 1000.0,
                redis_slots_ok: health.slots_ok,
            }))
        }
        _ => Err(ApiError::Unavailable {
            detail: format!("not ready: {}", reasons.join("; ")),
            retry_after_secs: 1,
        }),
    }
}
