//! The HTTP surface: every route, the middleware stack, and problem+json answers for
//! unknown paths, wrong methods and panics.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;

use crate::edge::EdgeLayer;
use crate::error::ApiError;
use crate::state::AppState;
use crate::{health, metrics};

mod admin;
mod auth;
mod files;
mod me;
mod openapi;
mod posts;
mod search;
mod session_issue;
mod tasks;
pub mod views;

/// The largest request body accepted (JSON endpoints). 413 past it.
pub const BODY_LIMIT_BYTES: usize = 1024 * 1024;

/// The whole application router.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::render))
        .merge(auth::router())
        .merge(me::router())
        .merge(admin::router())
        .merge(posts::router())
        .merge(tasks::router())
        .merge(files::router())
        .merge(search::router())
        .merge(openapi::router())
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .fallback(|| async { ApiError::NotFound("route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(EdgeLayer::new(state.clone()))
        .with_state(state)
}
