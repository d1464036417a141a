//! `/v1/me*`: the caller's profile, password and sessions.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::accounts::password_policy::check_new_password;
use crate::accounts::store::AccountStore;
use crate::auth::extract::Authenticated;
use crate::auth::ids::SessionId;
use crate::error::Problem;
use crate::error::{ApiError, FieldError};
use crate::json::ApiJson;
use crate::routes::views::{Page, UserView};
use crate::state::AppState;

/// The `/v1/me` routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/me", get(me))
        .route("/v1/me/password", put(change_password))
        .route("/v1/me/sessions", get(sessions))
        .route("/v1/me/sessions/{id}", delete(end_session))
}

#[utoipa::path(get, path = "/v1/me", tag = "accounts", security(("bearer" = [])), responses((status = 200, description = "The caller", body = UserView), (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn me(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<Json<UserView>, ApiError> {
    let user = AccountStore::new(state.topology())
        .user(&auth.user)
        .await?
        .ok_or(ApiError::Unauthenticated)?;
    Ok(Json(UserView::from(&user)))
}

/// `PUT /v1/me/password` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    #[schema(max_length = 1024)]
    pub current_password: String,
    /// 8 to 128 characters, not a well-known password, not the username.
    #[schema(min_length = 8, max_length = 128)]
    pub new_password: String,
}

#[utoipa::path(put, path = "/v1/me/password", tag = "accounts", security(("bearer" = [])), request_body = PasswordChange, responses((status = 204, description = "Changed; other sessions ended"), (status = 401, description = "Not authenticated or wrong current password", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Invalid new password", body = Problem, content_type = "application/problem+json"), (status = 429, description = "Too many wrong current passwords", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn change_password(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiJson(change): ApiJson<PasswordChange>,
) -> Result<StatusCode, ApiError> {
    if change.current_password.chars().count() > 1024 {
        return Err(ApiError::Validation(vec![FieldError {
            field: "current_password".into(),
            message: "is too long".into(),
        }]));
    }
    let store = AccountStore::new(state.topology());
    let user = store
        .user_for_auth(&auth.user)
        .await?
        .ok_or(ApiError::Unauthenticated)?;
    if let Err(e) = check_new_password(&change.new_password, &user.username) {
        return Err(ApiError::Validation(vec![FieldError {
            field: "new_password".into(),
            message: e.to_string(),
        }]));
    }
    // A stolen access token must not buy endless guesses at the current password (nor
    // keep the hashing queue full): wrong ones are limited per user.
    let per_window = state.config().limits.login_per_name;
    let subject = auth.user.as_str();
    super::auth::failure_budget_left(&state, "password-fail", subject, per_window).await?;
    if !state
        .hasher()
        .verify(change.current_password, Some(user.password_hash.clone()))
        .await?
    {
        super::auth::count_failure(&state, "password-fail", subject, per_window).await?;
        return Err(ApiError::WrongPassword);
    }
    let new_hash = state.hasher().hash(change.new_password).await?;
    store.set_password_hash(&auth.user, &new_hash).await?;
    let ended = state
        .sessions()
        .delete_all(&auth.user, Some(&auth.session), true)
        .await?;
    tracing::info!(user_id = %auth.user, other_sessions_ended = ended, "password changed");
    Ok(StatusCode::NO_CONTENT)
}

/// One entry of `GET /v1/me/sessions`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionEntry {
    pub id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen_at: OffsetDateTime,
    pub user_agent: String,
    pub ip: String,
    pub current: bool,
}

#[utoipa::path(get, path = "/v1/me/sessions", tag = "accounts", security(("bearer" = [])), responses((status = 200, description = "The caller's sessions", body = Page<SessionEntry>), (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn sessions(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<Json<Page<SessionEntry>>, ApiError> {
    let views = state.sessions().list(&auth.user).await?;
    let at = |secs: u64| {
        OffsetDateTime::from_unix_timestamp(secs as i64).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    };
    let items = views
        .into_iter()
        .map(|v| SessionEntry {
            current: v.id == auth.session.as_str(),
            created_at: at(v.created_at),
            last_seen_at: at(v.last_seen_at),
            user_agent: v.user_agent,
            ip: v.ip,
            id: v.id,
        })
        .collect();
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

#[utoipa::path(delete, path = "/v1/me/sessions/{id}", tag = "accounts", security(("bearer" = [])), params(("id" = String, Path, description = "The session id")), responses((status = 204, description = "Ended"), (status = 404, description = "No such session of the caller", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn end_session(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let session = SessionId::parse(&id).ok_or_else(|| ApiError::NotFound("session".into()))?;
    let existed = state
        .sessions()
        .delete(&auth.user, session.as_str())
        .await?;
    if existed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("session".into()))
    }
}
