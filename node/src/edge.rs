//! The one middleware every routed request passes, written as a plain tower service:
//! the request id and tracing span, the request deadline, the RED metrics by route, a
//! body declared past its limit, a malformed consistency header, a panicking handler,
//! and the framework's plain-text errors rewritten as problems.
//!
//! One layer instead of four: each `from_fn` or `map_response` layer clones the service
//! behind it and boxes another future on every request (bench/README.md, "The node's
//! own work per request", has the figures). Being one service also puts the metrics
//! outermost, so a request cut by its deadline or a panic is still counted and leaves
//! the in-flight gauge.

use std::any::Any;
use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use futures::FutureExt;
use tower::{Layer, Service};
use tracing::Instrument;

use crate::error::ApiError;
use crate::metrics::{Red, RedMetrics};
use crate::request_context::{self, REQUEST_ID_HEADER};
use crate::state::AppState;

/// Wraps every route of the router in [`Edge`].
#[derive(Clone)]
pub struct EdgeLayer {
    state: AppState,
    red: Arc<RedMetrics>,
}

impl EdgeLayer {
    /// The layer for the node's routes.
    pub fn new(state: AppState) -> Self {
        Self {
            state,
            red: RedMetrics::new(),
        }
    }
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        Edge {
            inner,
            state: self.state.clone(),
            red: Arc::clone(&self.red),
        }
    }
}

/// One route behind the edge (see the module docs).
#[derive(Clone)]
pub struct Edge<S> {
    inner: S,
    state: AppState,
    red: Arc<RedMetrics>,
}

impl<S> Service<Request> for Edge<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // The clone that was made ready serves this request; a fresh one waits for the
        // next (the tower idiom for services that are cloned per call).
        let ready = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, ready);
        let (state, red) = (self.state.clone(), Red::start(&self.red, &request));
        Box::pin(async move { Ok(serve(inner, state, red, request).await) })
    }
}

/// Serves one request through every step of the edge.
async fn serve<S>(mut inner: S, state: AppState, red: Red, request: Request) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    let id = request_context::request_id(&request);
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path()
    );
    // An upload is bound by its idle timeout instead (routes/files.rs): a large file on
    // a slow link must not be cut while it keeps moving.
    let deadline = (!crate::body_limit::is_upload(request.method(), request.uri().path()))
        .then(|| Duration::from_millis(state.config().request_timeout_ms));
    let work = async move {
        match admit(&state, request).await {
            Ok(request) => guarded(inner.call(request), deadline).await,
            Err(refusal) => refusal,
        }
    };
    let mut response = request_context::scope(id.clone(), work.instrument(span)).await;
    red.finish(&response);
    if let Ok(value) = HeaderValue::try_from(id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// The handler's answer as a client may see it: a problem if it panicked or its
/// plain-text error, a 503 problem if it is still working at the deadline.
async fn guarded<F>(answer: F, deadline: Option<Duration>) -> Response
where
    F: Future<Output = Result<Response, Infallible>>,
{
    let answer = AssertUnwindSafe(answer).catch_unwind();
    let answer = match deadline {
        None => answer.await,
        Some(deadline) => match tokio::time::timeout(deadline, answer).await {
            Ok(answer) => answer,
            Err(_) => return ApiError::Timeout(deadline.as_millis() as u64).into_response(),
        },
    };
    match answer {
        Ok(Ok(response)) => problems_only(response).await,
        Ok(Err(never)) => match never {},
        Err(cause) => panic_response(cause),
    }
}

/// The request, or the answer that refuses it.
async fn admit(state: &AppState, request: Request) -> Result<Request, Response> {
    let mut request = crate::body_limit::refuse_declared_oversize(state, request).await?;
    crate::consistency::take_token_header(&mut request).map_err(IntoResponse::into_response)?;
    Ok(request)
}

/// Errors the framework answers by itself (an undecodable path segment or query, say)
/// are plain text; every error a client sees is problem+json, so they are rewritten
/// here with their status and text.
async fn problems_only(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_problem = response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if is_problem {
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[tokio::test]
    async fn plain_text_errors_become_problems_and_the_rest_pass_unchanged() {
        let plain = (StatusCode::BAD_REQUEST, "Invalid URL").into_response();
        let rewritten = problems_only(plain).await;
        assert_eq!(rewritten.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            rewritten.headers()[CONTENT_TYPE],
            "application/problem+json"
        );
        let body = axum::body::to_bytes(rewritten.into_body(), 4096)
            .await
            .unwrap();
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem["detail"], "Invalid URL");

        let fine = (StatusCode::OK, "fine").into_response();
        let kept = problems_only(fine).await;
        assert_eq!(kept.headers()[CONTENT_TYPE], "text/plain; charset=utf-8");
    }

    async fn problem_of(response: Response) -> serde_json::Value {
        assert_eq!(response.headers()[CONTENT_TYPE], "application/problem+json");
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_a_500_problem() {
        let panicking = async {
            panic!("boom");
            #[allow(unreachable_code)]
            Ok::<Response, Infallible>(StatusCode::OK.into_response())
        };
        let response = guarded(panicking, Some(Duration::from_secs(1))).await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(problem_of(response).await["status"], 500);
    }

    #[tokio::test(start_paused = true)]
    async fn a_handler_still_working_at_the_deadline_answers_a_timeout_problem() {
        let stuck = futures::future::pending::<Result<Response, Infallible>>();
        let response = guarded(stuck, Some(Duration::from_secs(30))).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            problem_of(response).await["type"],
            "urn:strata:problem:timeout"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_handler_without_a_deadline_is_never_cut() {
        let slow = async {
            tokio::time::sleep(Duration::from_secs(3_600)).await;
            Ok::<Response, Infallible>((StatusCode::OK, "done").into_response())
        };
        let response = guarded(slow, None).await;
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn a_handler_in_time_answers_unchanged_unless_it_is_a_plain_error() {
        let fine =
            async { Ok::<Response, Infallible>((StatusCode::CREATED, "made").into_response()) };
        let response = guarded(fine, Some(Duration::from_secs(1))).await;
        assert_eq!(response.status(), StatusCode::CREATED);

        let plain = async {
            Ok::<Response, Infallible>(
                (StatusCode::UNPROCESSABLE_ENTITY, "bad query").into_response(),
            )
        };
        let response = guarded(plain, Some(Duration::from_secs(1))).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(problem_of(response).await["detail"], "bad query");
    }
}
