//! The HTTP surface: every route, the middleware stack, and problem+json answers for
//! unknown paths, wrong methods and panics.

use std::any::Any;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_http::catch_panic::CatchPanicLayer;

use crate::error::ApiError;
use crate::state::AppState;
use crate::{health, metrics, request_context};

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
        .layer(from_fn(metrics::record_red))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(from_fn_with_state(
            state.clone(),
            request_context::with_request_context,
        ))
        .with_state(state)
}

/// A panic in a handler becomes a logged 500 problem, never a dropped connection.
fn panic_response(cause: Box<dyn Any + Send + 'static>) -> Response {
    let message = cause
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| cause.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "panic".into());
    ApiError::Internal(format!("handler panicked: {message}")).into_response()
}
