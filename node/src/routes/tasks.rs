//! `/v1/tasks`: a private todo list. Another user's task is always a 404.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Deserializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::auth::extract::Authenticated;
use crate::consistency::ReadConsistency;
use crate::error::Problem;
use crate::error::{ApiError, FieldError};
use crate::items::ids::ItemId;
use crate::items::tasks::{StatusFilter, Task, TaskChanges, TaskStore};
use crate::json::ApiJson;
use crate::query::ApiQuery;
use crate::routes::posts::{ListParams, has_nul, page_params};
use crate::routes::views::Page;
use crate::state::AppState;

const NOTES_MAX_BYTES: usize = 16 * 1024;

/// The task routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/tasks", get(list).post(create))
        .route("/v1/tasks/{id}", get(read).patch(update).delete(remove))
}

/// `POST /v1/tasks` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000]*[^\\u0000\\t\\n\\u000b\\u000c\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][^\\u0000]*$"
    )]
    pub title: String,
    /// At most 16 KiB of UTF-8.
    #[serde(default)]
    #[schema(max_length = 16384, pattern = "^[^\\u0000]*$")]
    pub notes: Option<String>,
    #[serde(default)]
    #[schema(format = DateTime)]
    pub due_at: Option<String>,
}

/// `PATCH /v1/tasks/{id}` body; `"due_at": null` clears the due date.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTask {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000]*[^\\u0000\\t\\n\\u000b\\u000c\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][^\\u0000]*$"
    )]
    pub title: Option<String>,
    /// At most 16 KiB of UTF-8.
    #[schema(max_length = 16384, pattern = "^[^\\u0000]*$")]
    pub notes: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, format = DateTime, nullable)]
    pub due_at: Option<Option<String>>,
    pub done: Option<bool>,
}

/// Tells an absent field (`None`) from an explicit null (`Some(None)`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

fn check_title(title: &str, errors: &mut Vec<FieldError>) {
    if !(1..=200).contains(&title.chars().count()) || title.trim().is_empty() || has_nul(title) {
        errors.push(FieldError {
            field: "title".into(),
            message: "must be 1 to 200 characters, not all blank".into(),
        });
    }
}

fn check_notes(notes: &str, errors: &mut Vec<FieldError>) {
    if notes.len() > NOTES_MAX_BYTES || has_nul(notes) {
        errors.push(FieldError {
            field: "notes".into(),
            message: "must be at most 16 KiB, without NUL characters".into(),
        });
    }
}

fn parse_due(raw: &str, errors: &mut Vec<FieldError>) -> Option<OffsetDateTime> {
    match OffsetDateTime::parse(raw, &Rfc3339) {
        Ok(at) => Some(at),
        Err(_) => {
            errors.push(FieldError {
                field: "due_at".into(),
                message: "must be an RFC 3339 timestamp".into(),
            });
            None
        }
    }
}

fn valid(errors: Vec<FieldError>) -> Result<(), ApiError> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(errors))
    }
}

fn not_found() -> ApiError {
    ApiError::NotFound("task".into())
}

#[utoipa::path(post, path = "/v1/tasks", tag = "tasks", security(("bearer" = [])), request_body = CreateTask, responses((status = 201, description = "Created", body = Task), (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn create(
    State(state): State<AppState>,
    auth: Authenticated,
    ReadConsistency(caller): ReadConsistency,
    ApiJson(request): ApiJson<CreateTask>,
) -> Result<Response, ApiError> {
    let mut errors = Vec::new();
    check_title(&request.title, &mut errors);
    let notes = request.notes.unwrap_or_default();
    check_notes(&notes, &mut errors);
    let due_at = request
        .due_at
        .as_deref()
        .and_then(|raw| parse_due(raw, &mut errors));
    valid(errors)?;
    let committed = TaskStore::new(state.topology())
        .create(&auth.user, &request.title, &notes, due_at)
        .await?;
    let response = (StatusCode::CREATED, Json(committed.value)).into_response();
    Ok(state.stamp(response, &caller, &committed.token))
}

#[utoipa::path(get, path = "/v1/tasks/{id}", tag = "tasks", security(("bearer" = [])), params(("id" = String, Path, description = "The item id")), responses((status = 200, description = "The caller's task", body = Task), (status = 404, description = "No such task of the caller", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn read(
    State(state): State<AppState>,
    auth: Authenticated,
    ReadConsistency(caller): ReadConsistency,
    Path(id): Path<String>,
) -> Result<Json<Task>, ApiError> {
    let id = ItemId::parse(&id).ok_or_else(not_found)?;
    let task = TaskStore::new(state.topology())
        .get(&auth.user, &id, &caller)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(task))
}

#[utoipa::path(patch, path = "/v1/tasks/{id}", tag = "tasks", security(("bearer" = [])), params(("id" = String, Path, description = "The item id")), request_body = UpdateTask, responses((status = 200, description = "Updated", body = Task), (status = 404, description = "No such task of the caller", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn update(
    State(state): State<AppState>,
    auth: Authenticated,
    ReadConsistency(caller): ReadConsistency,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<UpdateTask>,
) -> Result<Response, ApiError> {
    let id = ItemId::parse(&id).ok_or_else(not_found)?;
    let mut errors = Vec::new();
    if let Some(title) = &request.title {
        check_title(title, &mut errors);
    }
    if let Some(notes) = &request.notes {
        check_notes(notes, &mut errors);
    }
    let due_at = request
        .due_at
        .map(|due| due.and_then(|raw| parse_due(&raw, &mut errors)));
    valid(errors)?;
    if id.owner() != &auth.user {
        return Err(not_found());
    }
    let changes = TaskChanges {
        title: request.title,
        notes: request.notes,
        due_at,
        done: request.done,
    };
    let committed = TaskStore::new(state.topology())
        .update(&auth.user, &id, changes)
        .await?
        .ok_or_else(not_found)?;
    Ok(state.stamp(
        Json(committed.value).into_response(),
        &caller,
        &committed.token,
    ))
}

#[utoipa::path(delete, path = "/v1/tasks/{id}", tag = "tasks", security(("bearer" = [])), params(("id" = String, Path, description = "The item id")), responses((status = 204, description = "Deleted"), (status = 404, description = "No such task of the caller", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn remove(
    State(state): State<AppState>,
    auth: Authenticated,
    ReadConsistency(caller): ReadConsistency,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = ItemId::owned_by(&id, &auth.user).ok_or_else(not_found)?;
    let committed = TaskStore::new(state.topology())
        .delete(&auth.user, &id)
        .await?
        .ok_or_else(not_found)?;
    Ok(state.stamp(
        StatusCode::NO_CONTENT.into_response(),
        &caller,
        &committed.token,
    ))
}

/// `GET /v1/tasks` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TaskListParams {
    /// `open`, `done` or `all` (the default).
    #[param(pattern = "^(open|done|all)$")]
    pub status: Option<String>,
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
    /// An opaque `next_cursor` this API returned.
    #[param(min_length = 1)]
    pub cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/tasks", tag = "tasks", security(("bearer" = [])), params(TaskListParams), responses((status = 200, description = "The caller's tasks, newest first", body = Page<Task>), (status = 422, description = "Invalid filter, limit or cursor", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn list(
    State(state): State<AppState>,
    auth: Authenticated,
    ReadConsistency(caller): ReadConsistency,
    ApiQuery(params): ApiQuery<TaskListParams>,
) -> Result<Json<Page<Task>>, ApiError> {
    let status = match params.status.as_deref() {
        None | Some("all") => StatusFilter::All,
        Some("open") => StatusFilter::Open,
        Some("done") => StatusFilter::Done,
        Some(_) => {
            return Err(ApiError::Validation(vec![FieldError {
                field: "status".into(),
                message: "must be open, done or all".into(),
            }]));
        }
    };
    let (limit, cursor) = page_params(
        &ListParams {
            limit: params.limit,
            cursor: params.cursor,
        },
        state.cursors(),
    )?;
    let (items, next) = TaskStore::new(state.topology())
        .list(&auth.user, status, cursor.as_ref(), limit, &caller)
        .await?;
    Ok(Json(Page {
        items,
        next_cursor: next.map(|c| state.cursors().encode(&c)),
    }))
}
