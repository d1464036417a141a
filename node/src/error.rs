//! The one error type of the HTTP layer and its one mapping to responses: every error a
//! client sees is `application/problem+json` (RFC 9457) with a stable `type`, a `detail`
//! and the request id. Server-side causes are logged here, where they are handled, and
//! never sent to the client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use strata_router::RouterError;

use crate::accounts::store::StoreError;
use crate::auth::passwords::HashError;
use crate::redis_handle::RedisError;
use crate::request_context;

/// One invalid field of a request, for 422 answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// Everything a handler can fail with, by what the client should do about it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("not authenticated")]
    Unauthenticated,
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("not allowed")]
    Forbidden,
    #[error("the current password is wrong")]
    WrongPassword,
    #[error("missing or wrong CSRF token (send the strata_csrf cookie's value in x-csrf-token)")]
    CsrfRejected,
    #[error("{0} not found")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("too many requests")]
    RateLimited { retry_after_secs: u64 },
    #[error("{detail}")]
    Unavailable {
        detail: String,
        retry_after_secs: u64,
    },
    #[error("the request took longer than {0} ms")]
    Timeout(u64),
    /// The client stopped sending its body.
    #[error("no bytes of the body arrived for {0} ms")]
    BodyStalled(u64),
    #[error("internal error: {0}")]
    Internal(String),
    /// An answer the framework gave before any handler ran (a path segment that is not
    /// UTF-8, a query it could not decode), with its status and text.
    #[error("{detail}")]
    Rejected { status: StatusCode, detail: String },
}

impl ApiError {
    /// The HTTP status and stable problem code of each variant, in one place.
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request"),
            Self::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            Self::InvalidCredentials => (StatusCode::UNAUTHORIZED, "invalid-credentials"),
            Self::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            Self::WrongPassword => (StatusCode::FORBIDDEN, "wrong-password"),
            Self::CsrfRejected => (StatusCode::FORBIDDEN, "csrf-rejected"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not-found"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large"),
            Self::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type")
            }
            Self::Validation(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation-failed"),
            Self::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate-limited"),
            Self::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::Timeout(_) => (StatusCode::SERVICE_UNAVAILABLE, "timeout"),
            Self::BodyStalled(_) => (StatusCode::REQUEST_TIMEOUT, "body-stalled"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            Self::Rejected { status, .. } => (*status, "rejected"),
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after_secs }
            | Self::Unavailable {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            Self::Timeout(_) => Some(1),
            _ => None,
        }
    }
}

impl From<RouterError> for ApiError {
    fn from(e: RouterError) -> Self {
        // The cause (hosts, driver text) goes to the log; the client learns which shard.
        tracing::warn!(cause = %e, "a shard could not serve the request");
        let shard = match &e {
            RouterError::UnknownShard { shard }
            | RouterError::NoPrimary { shard, .. }
            | RouterError::NoReader { shard } => shard,
        };
        Self::Unavailable {
            detail: format!("shard {shard} is unavailable"),
            retry_after_secs: 1,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Router(e) => e.into(),
            // A lost connection is an outage of that shard, and a write refused as
            // read-only (SQLSTATE 25006) reached a host demoted a moment ago: both pass
            // once the router has followed the change. Any other database error is a bug.
            StoreError::ConnectionLost(e) => {
                tracing::warn!(cause = %e, "a shard's connection was lost");
                Self::Unavailable {
                    detail: "a shard is unavailable".into(),
                    retry_after_secs: 1,
                }
            }
            StoreError::CommitUncertain(e) => {
                tracing::warn!(cause = %e, "a shard's connection was lost during a commit");
                Self::Unavailable {
                    detail: "a shard was lost while committing; the change may or may not \
                             have been applied: read it back before retrying"
                        .into(),
                    retry_after_secs: 1,
                }
            }
            StoreError::Db(e) if is_read_only_refusal(&e) => {
                tracing::warn!(cause = %e, sqlstate = sqlstate(&e), "a shard could not serve the request");
                Self::Unavailable {
                    detail: "a shard is unavailable".into(),
                    retry_after_secs: 1,
                }
            }
            StoreError::Db(e) => {
                Self::Internal(format!("database: {e} (SQLSTATE {})", sqlstate(&e)))
            }
            StoreError::Corrupt(detail) => Self::Internal(detail),
            // Still moving after the write path's patience: the client may retry.
            StoreError::SlotMoved => Self::Unavailable {
                detail: "the data is being moved between shards".into(),
                retry_after_secs: 1,
            },
        }
    }
}

/// The SQLSTATE of a database error, or `-` when the server sent none.
fn sqlstate(e: &tokio_postgres::Error) -> &str {
    e.code().map_or("-", |c| c.code())
}

/// True for a write refused because the host is read-only (a replica now).
fn is_read_only_refusal(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION)
}

impl From<RedisError> for ApiError {
    fn from(e: RedisError) -> Self {
        tracing::warn!(cause = %e, "Redis could not serve the request");
        Self::Unavailable {
            detail: "sessions are unavailable".into(),
            retry_after_secs: 1,
        }
    }
}

impl From<HashError> for ApiError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Busy => Self::Unavailable {
                detail: e.to_string(),
                retry_after_secs: 1,
            },
            HashError::Failed(cause) => Self::Internal(cause),
        }
    }
}

/// The problem document (RFC 9457).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    pub request_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let detail = match &self {
            Self::Internal(cause) => {
                tracing::error!(cause = %cause, "request failed");
                "the server could not complete the request".to_owned()
            }
            other => other.to_string(),
        };
        let problem = Problem {
            kind: format!("urn:strata:problem:{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail,
            request_id: request_context::current_request_id(),
            errors: match &self {
                Self::Validation(errors) => Some(errors.clone()),
                _ => None,
            },
        };
        let body = serde_json::to_vec(&problem).expect("a problem always serializes");
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if matches!(self, Self::Unauthenticated | Self::InvalidCredentials) {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn router_outages_are_503_with_retry_after() {
        let shard = strata_router::ShardId::parse("s0").unwrap();
        let response = ApiError::from(RouterError::NoPrimary {
            shard,
            reason: "down".into(),
        })
        .into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }

    #[test]
    fn internal_causes_are_not_shown_to_clients() {
        let response = ApiError::Internal("password=hunter2".into()).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = futures_body(response);
        assert!(!body.contains("hunter2"), "{body}");
    }

    fn futures_body(response: Response) -> String {
        let bytes = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(axum::body::to_bytes(response.into_body(), 1 << 20))
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }
}
