//! Per-request context: the request id (taken from a sane `x-request-id` or made fresh,
//! echoed on every response and available to error bodies and logs), the request
//! deadline, and the tracing span.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::error::ApiError;
use crate::state::AppState;

/// The header that carries the request id both ways.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being served on this task ("-" outside a request).
pub fn current_request_id() -> String {
    REQUEST_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| "-".into())
}

/// Accepts a client's request id only if it is short, visible ASCII: it ends up in logs.
fn sane_request_id(value: &HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?;
    let ok = (1..=128).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_graphic());
    ok.then(|| text.to_owned())
}

/// Middleware: assigns the request id, applies the deadline, and stamps the response.
pub async fn with_request_context(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(sane_request_id)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let deadline = Duration::from_millis(state.config().request_timeout_ms);
    // An upload is bound by its idle timeout instead (routes/files.rs): a large file
    // on a slow link must not be cut while it keeps moving.
    let bounded = !(request.method() == Method::POST && request.uri().path() == "/v1/files");
    let span = tracing::info_span!("request", request_id = %id, method = %request.method(), path = %request.uri().path());
    let work = async move {
        if !bounded {
            return next.run(request).await;
        }
        match tokio::time::timeout(deadline, next.run(request)).await {
            Ok(response) => response,
            Err(_) => ApiError::Timeout(deadline.as_millis() as u64).into_response(),
        }
    };
    let mut response = REQUEST_ID.scope(id.clone(), work.instrument(span)).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_visible_request_ids_are_kept() {
        assert_eq!(
            sane_request_id(&HeaderValue::from_static("abc-123")),
            Some("abc-123".into())
        );
        assert_eq!(
            sane_request_id(&HeaderValue::from_static("has space")),
            None
        );
        assert_eq!(
            sane_request_id(&HeaderValue::from_str(&"x".repeat(129)).unwrap()),
            None
        );
    }
}
