//! `GET /v1/search?q=&type=&scope=&limit=&cursor=`: full-text search over the node's
//! index. Nobody ever sees another user's private items: the query itself filters them.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use serde::Deserialize;

use crate::auth::extract::Authenticated;
use crate::error::Problem;
use crate::error::{ApiError, FieldError};
use crate::items::cursor::page_size;
use crate::query::ApiQuery;
use crate::routes::views::Page;
use crate::search::query::{Hit, Scope, SearchError, search};
use crate::state::AppState;

/// Longest query accepted, in characters.
const QUERY_MAX_CHARS: usize = 1000;

/// The search route.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/search", get(handle))
}

/// `GET /v1/search` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    /// The words to find (at most 16), quoted phrases, the last word matched as a prefix.
    #[param(
        required = true,
        min_length = 1,
        max_length = 1000,
        pattern = "^[^\\u0000]*[^\\u0000\\t\\n\\u000b\\u000c\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][^\\u0000]*$"
    )]
    pub q: Option<String>,
    /// `post`, `task` or `file`; every type when absent.
    #[serde(rename = "type")]
    #[param(pattern = "^(post|task|file)$")]
    pub kind: Option<String>,
    /// `mine`, `public` or `all` (the default).
    #[param(pattern = "^(mine|public|all)$")]
    pub scope: Option<String>,
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
    /// An opaque `next_cursor` this API returned.
    #[param(min_length = 1)]
    pub cursor: Option<String>,
}

fn invalid(field: &str, message: &str) -> ApiError {
    ApiError::Validation(vec![FieldError {
        field: field.into(),
        message: message.into(),
    }])
}

#[utoipa::path(get, path = "/v1/search", tag = "search", security(("bearer" = [])), params(SearchParams), responses((status = 200, description = "Results, best first", body = Page<Hit>), (status = 422, description = "Invalid q, type, scope, limit or cursor", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn handle(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiQuery(params): ApiQuery<SearchParams>,
) -> Result<Json<Page<Hit>>, ApiError> {
    // Each query walks the index: a caller gets a bounded number per window.
    let per_window = state.config().limits.search_per_user;
    super::auth::limit(&state, "search", auth.user.as_str(), per_window).await?;
    let q = params.q.unwrap_or_default();
    if q.trim().is_empty() {
        return Err(invalid("q", "is required"));
    }
    if q.chars().count() > QUERY_MAX_CHARS {
        return Err(invalid("q", "must be at most 1000 characters"));
    }
    if q.contains('\0') {
        return Err(invalid("q", "must not contain NUL characters"));
    }
    let kind: Option<&'static str> = match params.kind.as_deref() {
        None => None,
        Some("post") => Some("post"),
        Some("task") => Some("task"),
        Some("file") => Some("file"),
        Some(_) => return Err(invalid("type", "must be post, task or file")),
    };
    let scope = match params.scope.as_deref() {
        None | Some("all") => Scope::All,
        Some("mine") => Scope::Mine,
        Some("public") => Scope::Public,
        Some(_) => return Err(invalid("scope", "must be mine, public or all")),
    };
    let limit = page_size(params.limit.as_deref()).map_err(|m| invalid("limit", &m))? as usize;
    let offset = match params.cursor.as_deref() {
        None => 0,
        Some(c) => decode_offset(c)
            .ok_or_else(|| invalid("cursor", "cursor is not one this API returned"))?,
    };
    let index = state.search().clone();
    let caller = auth.user.to_string();
    let started = std::time::Instant::now();
    let mut hits = tokio::task::spawn_blocking(move || {
        search(&index, &caller, &q, kind, scope, offset, limit + 1)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("search task: {e}")))?
    .map_err(|e| match e {
        SearchError::Terms(e) => invalid("q", &e.to_string()),
        SearchError::Index(e) => ApiError::Internal(e.to_string()),
    })?;
    metrics::histogram!("strata_search_query_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    let next = (hits.len() > limit).then(|| {
        hits.truncate(limit);
        encode_offset(offset + limit)
    });
    Ok(Json(Page {
        items: hits,
        next_cursor: next,
    }))
}

fn encode_offset(offset: usize) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("o:{offset}"))
}

fn decode_offset(raw: &str) -> Option<usize> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw)
        .ok()?;
    let offset: usize = String::from_utf8(bytes)
        .ok()?
        .strip_prefix("o:")?
        .parse()
        .ok()?;
    (offset <= 10_000).then_some(offset)
}
