//! `/v1/posts` and `/v1/users/{id}/posts`: the blog. Public posts are readable by every
//! signed-in user and cached in Redis (cache-aside, short TTL, dropped on every change);
//! private ones only by their author. Another user's private post is a 404.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::auth::extract::Authenticated;
use crate::auth::ids::UserId;
use crate::consistency::ReadConsistency;
use crate::error::Problem;
use crate::error::{ApiError, FieldError};
use crate::invalidation::Subject;
use crate::items::cursor::{Cursor, CursorSigner, page_size};
use crate::items::ids::ItemId;
use crate::items::posts::{NewPost, Post, PostChanges, PostStore, Visibility};
use crate::json::ApiJson;
use crate::query::ApiQuery;
use crate::routes::views::Page;
use crate::state::AppState;

/// How long a public post stays cached.
const CACHE_TTL: Duration = Duration::from_secs(30);

/// Limits of a post (API contract).
const TITLE_CHARS: std::ops::RangeInclusive<usize> = 1..=200;
const BODY_MAX_BYTES: usize = 64 * 1024;
const TAGS_MAX: usize = 16;
const TAG_CHARS: std::ops::RangeInclusive<usize> = 1..=32;

/// The post routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/posts", post(create))
        .route("/v1/posts/{id}", get(read).patch(update).delete(remove))
        .route("/v1/users/{user_id}/posts", get(list))
}

/// `POST /v1/posts` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePost {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000]*[^\\u0000\\t\\n\\u000b\\u000c\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][^\\u0000]*$"
    )]
    pub title: String,
    /// At most 64 KiB of UTF-8.
    #[schema(max_length = 65536, pattern = "^[^\\u0000]*$")]
    pub body: String,
    #[serde(default)]
    #[schema(max_items = 16, value_type = Vec<Tag>)]
    pub tags: Vec<String>,
    #[serde(default = "private")]
    pub visibility: Visibility,
}

fn private() -> Visibility {
    Visibility::Private
}

/// A tag: 1 to 32 characters, no control characters.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, min_length = 1, max_length = 32, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
pub struct Tag(#[allow(dead_code)] String);

/// `PATCH /v1/posts/{id}` body: any of the create fields.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePost {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000]*[^\\u0000\\t\\n\\u000b\\u000c\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][^\\u0000]*$"
    )]
    pub title: Option<String>,
    /// At most 64 KiB of UTF-8.
    #[schema(max_length = 65536, pattern = "^[^\\u0000]*$")]
    pub body: Option<String>,
    #[schema(max_items = 16, value_type = Option<Vec<Tag>>)]
    pub tags: Option<Vec<String>>,
    pub visibility: Option<Visibility>,
}

/// Postgres text cannot hold NUL; refusing it here keeps it a 422, not a failed write.
pub fn has_nul(text: &str) -> bool {
    text.contains('\0')
}

fn check_title(title: &str, errors: &mut Vec<FieldError>) {
    if !TITLE_CHARS.contains(&title.chars().count()) || title.trim().is_empty() || has_nul(title) {
        errors.push(FieldError {
            field: "title".into(),
            message: "must be 1 to 200 characters, not all blank".into(),
        });
    }
}

fn check_body(body: &str, errors: &mut Vec<FieldError>) {
    if body.len() > BODY_MAX_BYTES || has_nul(body) {
        errors.push(FieldError {
            field: "body".into(),
            message: "must be at most 64 KiB, without NUL characters".into(),
        });
    }
}

fn check_tags(tags: &[String], errors: &mut Vec<FieldError>) {
    if tags.len() > TAGS_MAX {
        errors.push(FieldError {
            field: "tags".into(),
            message: "at most 16 tags".into(),
        });
    }
    if let Some(i) = tags.iter().position(|t| {
        !TAG_CHARS.contains(&t.chars().count()) || t.chars().any(char::is_control) || has_nul(t)
    }) {
        errors.push(FieldError {
            field: format!("tags[{i}]"),
            message: "tags are 1 to 32 characters".into(),
        });
    }
}

fn valid(errors: Vec<FieldError>) -> Result<(), ApiError> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(errors))
    }
}

fn cache_key(id: &ItemId) -> String {
    format!("strata:post:{{{id}}}:cached")
}

#[utoipa::path(post, path = "/v1/posts", tag = "posts", security(("bearer" = [])), request_body = CreatePost, responses((status = 201, description = "Created; the x-strata-consistency header names the write", body = Post), (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"), (status = 503, description = "The shard is unavailable", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn create(
    State(state): State<AppState>,
    auth: Authenticated,
    ReadConsistency(caller): ReadConsistency,
    ApiJson(request): ApiJson<CreatePost>,
) -> Result<Response, ApiError> {
    let mut errors = Vec::new();
    check_title(&request.title, &mut errors);
    check_body(&request.body, &mut errors);
    check_tags(&request.tags, &mut errors);
    valid(errors)?;
    let new = NewPost {
        title: request.title,
        body: request.body,
        tags: request.tags,
        visibility: request.visibility,
    };
    let committed = PostStore::new(state.topology())
        .create(&auth.user, new)
        .await?;
    let response = (StatusCode::CREATED, Json(committed.value)).into_response();
    Ok(state.stamp(response, &caller, &committed.token))
}

/// Reads a post the caller may see, from the cache when the caller needs no particular
/// freshness on that shard and is not its author. An author reading their own posts
/// (private ones are never cached) goes straight to a replica: a cache lookup would be
/// a Redis round trip that mostly cannot hit.
async fn visible_post(
    state: &AppState,
    auth: &Authenticated,
    id: &ItemId,
    caller: &crate::consistency::ConsistencyToken,
) -> Result<Post, ApiError> {
    let shard = state.topology().shard_for(id.owner().route_hash());
    let cacheable = caller.required(&shard).is_none() && id.owner() != &auth.user;
    let local = &state.invalidations().posts;
    let generation = local.generation();
    if cacheable {
        if local.enabled() {
            if let Some(post) = local.get(id.as_str()) {
                metrics::counter!("strata_cache_requests_total", "cache" => "post_local", "result" => "hit")
                    .increment(1);
                return Ok(post);
            }
            metrics::counter!("strata_cache_requests_total", "cache" => "post_local", "result" => "miss")
                .increment(1);
        }
        if let Some(post) = cached(state, id).await {
            metrics::counter!("strata_cache_requests_total", "cache" => "post", "result" => "hit")
                .increment(1);
            local.insert(id.as_str(), post.clone(), generation);
            return Ok(post);
        }
        metrics::counter!("strata_cache_requests_total", "cache" => "post", "result" => "miss")
            .increment(1);
    }
    let post = PostStore::new(state.topology())
        .get(id, caller)
        .await?
        .ok_or_else(|| ApiError::NotFound("post".into()))?;
    if post.visibility == Visibility::Private && post.author_id != auth.user.as_str() {
        return Err(ApiError::NotFound("post".into()));
    }
    if cacheable && post.visibility == Visibility::Public && fill_cache(state, id, &post).await {
        // Only a copy the shared cache accepted (not older than the post's floor) is
        // kept in this node's memory too.
        local.insert(id.as_str(), post.clone(), generation);
    }
    Ok(post)
}

/// Fills the cache unless the copy is older than the post's floor (the latest change a
/// node has seen) or than what the cache already holds. A read in flight, or served by
/// a replica behind, can therefore never put back a copy an update or delete replaced.
const FILL: &str = r"
local floor = tonumber(redis.call('GET', KEYS[2]) or '0')
local v = tonumber(ARGV[1])
if v < floor then return 0 end
local held = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if held > v then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'json', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1";

/// Raises the post's floor to a version a write just made, and drops the cached copy.
const INVALIDATE: &str = r"
local floor = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[1]) > floor then redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2]) end
redis.call('DEL', KEYS[1])
return 1";

/// How long a floor outlives the change that set it: far past any read in flight or
/// replica lag a node accepts.
const FLOOR_TTL: Duration = Duration::from_secs(600);

/// The cached copy and the floor share the post's hash tag (one Redis slot).
fn floor_key(id: &ItemId) -> String {
    format!("strata:post:{{{id}}}:floor")
}

async fn cached(state: &AppState, id: &ItemId) -> Option<Post> {
    let mut conn = state.redis().connection().await.ok()?;
    let text: Option<String> = redis::cmd("HGET")
        .arg(cache_key(id))
        .arg("json")
        .query_async(&mut conn)
        .await
        .ok()?;
    let post: Post = serde_json::from_str(&text?).ok()?;
    (post.visibility == Visibility::Public).then_some(post)
}

/// Whether the shared cache took the copy.
async fn fill_cache(state: &AppState, id: &ItemId, post: &Post) -> bool {
    let Ok(mut conn) = state.redis().connection().await else {
        return false;
    };
    let text = serde_json::to_string(post).expect("posts serialize");
    let filled: Result<i64, _> = redis::Script::new(FILL)
        .key(cache_key(id))
        .key(floor_key(id))
        .arg(post.version)
        .arg(text)
        .arg(CACHE_TTL.as_secs())
        .invoke_async(&mut conn)
        .await;
    matches!(filled, Ok(1))
}

/// After a write, before it is acknowledged: no copy older than `version` may be cached
/// again (`None`: the post is gone, so none at all), and every node drops its own copy
/// (see [`crate::invalidation`]).
async fn drop_cache(state: &AppState, id: &ItemId, version: Option<i64>) {
    if let Ok(mut conn) = state.redis().connection().await {
        let _: Result<i64, _> = redis::Script::new(INVALIDATE)
            .key(cache_key(id))
            .key(floor_key(id))
            .arg(version.unwrap_or(i64::MAX))
            .arg(FLOOR_TTL.as_secs())
            .invoke_async(&mut conn)
            .await;
    }
    let published = state
        .invalidations()
        .publish(state.redis(), Subject::Posts, &[id.as_str()])
        .await;
    if let Err(e) = published {
        // Published for longer than a listener's liveness: every node that could not
        // hear it has stopped trusting its copies by now.
        tracing::warn!(post = %id.as_str(), error = %e, "post change not published to the nodes' caches");
    }
}

#[utoipa::path(get, path = "/v1/posts/{id}", tag = "posts", security(("bearer" = [])), params(("id" = String, Path, description = "The item id")), responses((status = 200, description = "The post (public, or the caller's)", body = Post), (status = 404, description = "No such post visible to the caller", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn read(
    State(state): State<AppState>,
    auth: Authenticated,
    ReadConsistency(caller): ReadConsistency,
    Path(id): Path<String>,
) -> Result<Json<Post>, ApiError> {
    let id = ItemId::parse(&id).ok_or_else(|| ApiError::NotFound("post".into()))?;
    Ok(Json(visible_post(&state, &auth, &id, &caller).await?))
}

#[utoipa::path(patch, path = "/v1/posts/{id}", tag = "posts", security(("bearer" = [])), params(("id" = String, Path, description = "The item id")), request_body = UpdatePost, responses((status = 200, description = "Updated", body = Post), (status = 403, description = "Not the author", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such post", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn update(
    State(state): State<AppState>,
    auth: Authenticated,
    ReadConsistency(caller): ReadConsistency,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<UpdatePost>,
) -> Result<Response, ApiError> {
    let id = ItemId::parse(&id).ok_or_else(|| ApiError::NotFound("post".into()))?;
    let mut errors = Vec::new();
    if let Some(title) = &request.title {
        check_title(title, &mut errors);
    }
    if let Some(body) = &request.body {
        check_body(body, &mut errors);
    }
    if let Some(tags) = &request.tags {
        check_tags(tags, &mut errors);
    }
    valid(errors)?;
    if id.owner() != &auth.user {
        // Only the author may change a post; others learn no more than they can read.
        visible_post(&state, &auth, &id, &caller).await?;
        return Err(ApiError::Forbidden);
    }
    let changes = PostChanges {
        title: request.title,
        body: request.body,
        tags: request.tags,
        visibility: request.visibility,
    };
    let committed = PostStore::new(state.topology())
        .update(&id, changes)
        .await?
        .ok_or_else(|| ApiError::NotFound("post".into()))?;
    drop_cache(&state, &id, Some(committed.value.version)).await;
    let response = Json(committed.value).into_response();
    Ok(state.stamp(response, &caller, &committed.token))
}

#[utoipa::path(delete, path = "/v1/posts/{id}", tag = "posts", security(("bearer" = [])), params(("id" = String, Path, description = "The item id")), responses((status = 204, description = "Deleted"), (status = 403, description = "Not the author", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such post", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn remove(
    State(state): State<AppState>,
    auth: Authenticated,
    ReadConsistency(caller): ReadConsistency,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = ItemId::parse(&id).ok_or_else(|| ApiError::NotFound("post".into()))?;
    let is_admin =
        id.owner() != &auth.user && auth.require_current_role(&state, "admin").await.is_ok();
    if id.owner() != &auth.user && !is_admin {
        visible_post(&state, &auth, &id, &caller).await?;
        return Err(ApiError::Forbidden);
    }
    let committed = PostStore::new(state.topology())
        .delete(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound("post".into()))?;
    drop_cache(&state, &id, None).await;
    Ok(state.stamp(
        StatusCode::NO_CONTENT.into_response(),
        &caller,
        &committed.token,
    ))
}

/// `?limit=&cursor=` of list endpoints.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
    /// An opaque `next_cursor` this API returned.
    #[param(min_length = 1)]
    pub cursor: Option<String>,
}

/// Parses the page size and cursor of a list request.
pub fn page_params(
    params: &ListParams,
    cursors: &CursorSigner,
) -> Result<(i64, Option<Cursor>), ApiError> {
    let limit = page_size(params.limit.as_deref()).map_err(|message| {
        ApiError::Validation(vec![FieldError {
            field: "limit".into(),
            message,
        }])
    })?;
    let cursor = params
        .cursor
        .as_deref()
        .map(|raw| cursors.decode(raw))
        .transpose()
        .map_err(|e| {
            ApiError::Validation(vec![FieldError {
                field: "cursor".into(),
                message: e.to_string(),
            }])
        })?;
    Ok((limit, cursor))
}

#[utoipa::path(get, path = "/v1/users/{user_id}/posts", tag = "posts", security(("bearer" = [])), params(("user_id" = String, Path, description = "The author"), ListParams), responses((status = 200, description = "The author's posts the caller may see, newest first", body = Page<Post>), (status = 422, description = "Invalid limit or cursor", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn list(
    State(state): State<AppState>,
    auth: Authenticated,
    ReadConsistency(caller): ReadConsistency,
    Path(user_id): Path<String>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<Page<Post>>, ApiError> {
    let author = UserId::parse(&user_id).ok_or_else(|| ApiError::NotFound("user".into()))?;
    let (limit, cursor) = page_params(&params, state.cursors())?;
    let own = author == auth.user;
    let (items, next) = PostStore::new(state.topology())
        .list(&author, own, cursor.as_ref(), limit, &caller)
        .await?;
    Ok(Json(Page {
        items,
        next_cursor: next.map(|c| state.cursors().encode(&c)),
    }))
}
