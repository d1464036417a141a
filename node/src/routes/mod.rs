//! The HTTP surface: every route, the middleware stack, and problem+json answers for
//! unknown paths, wrong methods and panics.

use std::any::Any;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::header::CONTENT_TYPE;
use axum::middleware::{from_fn_with_state, map_response};
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
        .layer(map_response(problems_only))
        .layer(from_fn_with_state(state.clone(), crate::edge::edge))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(from_fn_with_state(
            state.clone(),
            request_context::with_request_context,
        ))
        .with_state(state)
}

/// Errors the framework answers by itself (an undecodable path segment or query, say)
/// are plain text; every error a client sees is problem+json, so they are rewritten
/// here with their status and text.
async fn problems_only(response: Response) -> Response {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if is_problem || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let text = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let detail = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    ApiError::Rejected { status, detail }.into_response()
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
