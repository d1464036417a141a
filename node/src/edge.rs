//! The one middleware every routed request passes: its rate, errors and duration by
//! route (RED), a body declared past its limit, a malformed consistency header. One
//! layer instead of three, because each `from_fn` layer clones the boxed service behind
//! it and boxes another future on every request.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::metrics::Red;
use crate::state::AppState;

/// Middleware: records the request and serves it unless it is refused at the door.
pub async fn edge(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let red = Red::start(&request);
    let response = match admit(&state, request).await {
        Ok(request) => next.run(request).await,
        Err(refusal) => refusal,
    };
    red.finish(&response);
    response
}

/// The request, or the answer that refuses it.
async fn admit(state: &AppState, request: Request) -> Result<Request, Response> {
    let mut request = crate::body_limit::refuse_declared_oversize(state, request).await?;
    crate::consistency::take_token_header(&mut request).map_err(IntoResponse::into_response)?;
    Ok(request)
}
