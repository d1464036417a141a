//! Refusing a request body that is too large without breaking the connection. A server
//! that answers 413 as soon as it sees the length, and closes while the client is still
//! sending, leaves most clients (and a proxy in between, which then answers nothing)
//! with a broken pipe instead of the answer. So a body whose declared length is past its
//! route's limit is read and dropped first (up to a cap), then refused with the usual
//! problem. Bodies without a declared length are stopped by the handlers' own limits.

use axum::extract::Request;
use axum::http::header::{CONNECTION, CONTENT_LENGTH};
use axum::http::{HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use crate::error::ApiError;
use crate::routes::BODY_LIMIT_BYTES;
use crate::state::AppState;

/// Slack for a multipart upload's envelope (boundaries, part headers) over the file's
/// own limit; the upload handler enforces the exact limit on the file.
const MULTIPART_SLACK: u64 = 64 * 1024;

/// A body this many times its limit (or larger than [`DRAIN_FLOOR`], whichever is more)
/// is not read: the answer goes out at once and the connection closes.
const DRAIN_FACTOR: u64 = 4;
const DRAIN_FLOOR: u64 = 8 * 1024 * 1024;

/// Whether the request is a file upload, which has a limit and a timeout of its own.
pub fn is_upload(method: &Method, path: &str) -> bool {
    method == Method::POST && path == "/v1/files"
}

/// The largest body a request to this path may declare.
fn limit_for(method: &Method, path: &str, max_upload_bytes: u64) -> u64 {
    if is_upload(method, path) {
        max_upload_bytes + MULTIPART_SLACK
    } else {
        BODY_LIMIT_BYTES as u64
    }
}

/// A declared length past the route's limit is a 413, given after the body has been
/// read (see the module docs); any other request is handed back.
pub async fn refuse_declared_oversize(
    state: &AppState,
    request: Request,
) -> Result<Request, Response> {
    let limit = limit_for(
        request.method(),
        request.uri().path(),
        state.config().files.max_upload_bytes,
    );
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let Some(declared) = declared.filter(|&len| len > limit) else {
        return Ok(request);
    };
    let refusal = ApiError::PayloadTooLarge {
        limit: usize::try_from(limit).unwrap_or(usize::MAX),
    };
    if declared > (limit * DRAIN_FACTOR).max(DRAIN_FLOOR) {
        let mut response = refusal.into_response();
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        return Err(response);
    }
    let mut body = request.into_body().into_data_stream();
    while let Some(chunk) = body.next().await {
        if chunk.is_err() {
            break;
        }
    }
    Err(refusal.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_get_their_own_limit_and_everything_else_the_json_limit() {
        assert_eq!(
            limit_for(&Method::POST, "/v1/files", 1000),
            1000 + MULTIPART_SLACK
        );
        assert_eq!(
            limit_for(&Method::POST, "/v1/tasks", 1000),
            BODY_LIMIT_BYTES as u64
        );
        assert_eq!(
            limit_for(&Method::PUT, "/v1/files", 1000),
            BODY_LIMIT_BYTES as u64
        );
    }
}
