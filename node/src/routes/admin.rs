//! `/v1/admin/*`: operator views, for the `admin` role only.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use strata_router::ShardStatus;

use crate::auth::extract::Authenticated;
use crate::error::ApiError;
use crate::error::Problem;
use crate::state::AppState;

/// The admin routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/shards", get(shards))
        .route("/v1/admin/rebalance", get(rebalance))
        .route("/v1/admin/search/rebuild", post(rebuild_search))
}

/// `GET /v1/admin/shards` body.
#[derive(Debug, Serialize)]
pub struct Shards {
    pub shards: Vec<ShardStatus>,
}

#[utoipa::path(get, path = "/v1/admin/shards", tag = "operations", security(("bearer" = [])), responses((status = 200, description = "Shards, hosts, roles, health, replica lag", body = serde_json::Value), (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn shards(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<Json<Shards>, ApiError> {
    auth.require_current_role(&state, "admin").await?;
    Ok(Json(Shards {
        shards: state.topology().status(),
    }))
}

/// `GET /v1/admin/rebalance`: the same view as `strata shard status`: catalog epoch,
/// shards with hosts, roles, slots and rows, and every move with its phase and progress.
#[utoipa::path(get, path = "/v1/admin/rebalance", tag = "operations", security(("bearer" = [])), responses((status = 200, description = "Catalog epoch, shards, slots and rows per shard, moves and their progress", body = serde_json::Value), (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"), (status = 503, description = "The catalog is unreachable", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn rebalance(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<Json<strata_router::rebalance::ClusterStatus>, ApiError> {
    auth.require_current_role(&state, "admin").await?;
    let topology = state.topology();
    let catalog = topology.catalog().ok_or_else(|| ApiError::Unavailable {
        detail: "this node follows no catalog".into(),
        retry_after_secs: 1,
    })?;
    let placement = catalog.load().await.map_err(|e| ApiError::Unavailable {
        detail: format!("the cluster catalog: {e}"),
        retry_after_secs: 1,
    })?;
    Ok(Json(
        strata_router::rebalance::status(topology, &placement).await,
    ))
}

/// `POST /v1/admin/search/rebuild`: this node drops its index and rebuilds it from the
/// start of every change feed (202: it happens in the background; `/readyz` is 503
/// until it has caught up).
#[utoipa::path(post, path = "/v1/admin/search/rebuild", tag = "operations", security(("bearer" = [])), responses((status = 202, description = "This node rebuilds its index from the feeds; /readyz is 503 until it has caught up"), (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn rebuild_search(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<StatusCode, ApiError> {
    auth.require_current_role(&state, "admin").await?;
    state.search().request_rebuild();
    Ok(StatusCode::ACCEPTED)
}
