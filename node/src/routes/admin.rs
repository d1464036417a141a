//! `/v1/admin/*`: operator views, for the `admin` role only.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use strata_router::ShardStatus;

use crate::auth::extract::Authenticated;
use crate::error::ApiError;
use crate::state::AppState;

/// The admin routes.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/admin/shards", get(shards))
}

/// `GET /v1/admin/shards` body.
#[derive(Debug, Serialize)]
pub struct Shards {
    pub shards: Vec<ShardStatus>,
}

async fn shards(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<Json<Shards>, ApiError> {
    auth.require_role("admin")?;
    Ok(Json(Shards {
        shards: state.topology().status(),
    }))
}
