//! Per-request context: the request id, taken from a sane `x-request-id` or made fresh,
//! echoed on every response (by [`crate::edge`]) and available to error bodies and logs
//! while the request is served.

use std::future::Future;

use axum::extract::Request;
use axum::http::HeaderValue;

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

/// The request's id: the client's, if sane, or a fresh one.
pub fn request_id(request: &Request) -> String {
    request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(sane_request_id)
        .unwrap_or_else(|| {
            let mut text = uuid::Uuid::encode_buffer();
            uuid::Uuid::new_v4()
                .hyphenated()
                .encode_lower(&mut text)
                .to_owned()
        })
}

/// Runs `work` with `id` as [`current_request_id`].
pub async fn scope<F: Future>(id: String, work: F) -> F::Output {
    REQUEST_ID.scope(id, work).await
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
