//! `/v1/auth/*`: signup, login, refresh, logout, logout-all.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;

use crate::accounts::names::{Email, LoginName, Username};
use crate::accounts::password_policy::check_new_password;
use crate::accounts::store::{AccountStore, NameField, SignupError};
use crate::auth::cookies::{self, REFRESH_COOKIE};
use crate::auth::extract::{Authenticated, ClientIp};
use crate::auth::ids::UserId;
use crate::auth::rate_limit::{self, Decision};
use crate::auth::sessions::Rotation;
use crate::auth::tokens::RefreshToken;
use crate::error::Problem;
use crate::error::{ApiError, FieldError};
use crate::json::{ApiJson, parse_json};
use crate::routes::session_issue::{ClientInfo, TokenPair, start_session, token_response};
use crate::state::AppState;

/// The auth routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/auth/signup", post(signup))
        .route("/v1/auth/login", post(login))
        .route("/v1/auth/refresh", post(refresh))
        .route("/v1/auth/logout", post(logout))
        .route("/v1/auth/logout-all", post(logout_all))
}

/// `POST /v1/auth/signup` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupRequest {
    /// 3 to 32 of `a-z`, `0-9` and `_` (letters are lower-cased).
    #[schema(pattern = "^[A-Za-z0-9_]{3,32}$")]
    pub username: String,
    #[schema(format = Email, max_length = 254)]
    pub email: String,
    /// 8 to 128 characters, not a well-known password, not the username.
    #[schema(min_length = 8, max_length = 128)]
    pub password: String,
    #[serde(default)]
    pub cookie: bool,
}

/// `POST /v1/auth/login` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// A username or an email address.
    #[schema(min_length = 1, max_length = 320)]
    pub login: String,
    #[schema(max_length = 1024)]
    pub password: String,
    #[serde(default)]
    pub cookie: bool,
}

/// `POST /v1/auth/refresh` body (optional in browser mode, where the cookie carries it).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// Counts an attempt against a shared limit; 429 with `Retry-After` past it.
pub(crate) async fn limit(
    state: &AppState,
    scope: &str,
    subject: &str,
    per_window: u64,
) -> Result<(), ApiError> {
    let window = Duration::from_secs(state.config().limits.window_secs);
    allowed(rate_limit::hit(state.redis(), scope, subject, per_window, window).await?)
}

/// A limit's decision as the answer: 429 with `Retry-After` past it.
fn allowed(decision: Decision) -> Result<(), ApiError> {
    match decision {
        Decision::Allowed => Ok(()),
        Decision::Limited { retry_after } => Err(ApiError::RateLimited {
            retry_after_secs: retry_after.as_secs().max(1),
        }),
    }
}

/// 429 with `Retry-After` when `subject` has used up its failures in `scope`; the
/// attempt itself is not counted (see [`count_failure`]).
pub(crate) async fn failure_budget_left(
    state: &AppState,
    scope: &str,
    subject: &str,
    per_window: u64,
) -> Result<(), ApiError> {
    allowed(rate_limit::peek(state.redis(), scope, subject, per_window).await?)
}

/// Counts a failed attempt of `subject` in `scope`.
pub(crate) async fn count_failure(
    state: &AppState,
    scope: &str,
    subject: &str,
    per_window: u64,
) -> Result<(), ApiError> {
    // Counted either way; whether it was the last allowed is for the next attempt's check.
    match limit(state, scope, subject, per_window).await {
        Ok(()) | Err(ApiError::RateLimited { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

#[utoipa::path(post, path = "/v1/auth/signup", tag = "accounts", request_body = SignupRequest, responses((status = 201, description = "Signed up and logged in", body = TokenPair), (status = 409, description = "Username or email taken", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"), (status = 429, description = "Too many attempts", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn signup(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ApiJson(request): ApiJson<SignupRequest>,
) -> Result<Response, ApiError> {
    limit(
        &state,
        "signup-ip",
        &ip.to_string(),
        state.config().limits.signup_per_ip,
    )
    .await?;
    let mut errors = Vec::new();
    let username = Username::parse(&request.username)
        .map_err(|e| {
            errors.push(FieldError {
                field: "username".into(),
                message: e.to_string(),
            })
        })
        .ok();
    let email = Email::parse(&request.email)
        .map_err(|e| {
            errors.push(FieldError {
                field: "email".into(),
                message: e.to_string(),
            })
        })
        .ok();
    if let Err(e) = check_new_password(&request.password, &request.username) {
        errors.push(FieldError {
            field: "password".into(),
            message: e.to_string(),
        });
    }
    let (Some(username), Some(email), true) = (username, email, errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    let password_hash = state.hasher().hash(request.password).await?;
    let user_id = UserId::generate();
    let claim_ttl = Duration::from_millis(state.config().auth.claim_ttl_ms);
    let store = AccountStore::new(state.topology());
    let user = match store
        .signup(&user_id, &username, &email, &password_hash, claim_ttl)
        .await
    {
        Ok(user) => user,
        Err(SignupError::Taken(field)) => {
            metrics::counter!("strata_signups_total", "outcome" => "conflict").increment(1);
            let which = if field == NameField::Username {
                "username"
            } else {
                "email"
            };
            return Err(ApiError::Conflict(format!("{which} is already taken")));
        }
        Err(SignupError::Store(e)) => return Err(e.into()),
    };
    metrics::counter!("strata_signups_total", "outcome" => "created").increment(1);
    tracing::info!(user_id = %user.id, "signed up");
    start_session(
        &state,
        &user,
        ClientInfo::new(&headers, ip),
        request.cookie,
        StatusCode::CREATED,
        None,
    )
    .await
}

#[utoipa::path(post, path = "/v1/auth/login", tag = "accounts", request_body = LoginRequest, responses((status = 200, description = "Logged in", body = TokenPair), (status = 401, description = "Wrong login or password", body = Problem, content_type = "application/problem+json"), (status = 429, description = "Too many attempts", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ApiJson(request): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    let too_long = |field: &str| {
        ApiError::Validation(vec![FieldError {
            field: field.into(),
            message: "is too long".into(),
        }])
    };
    if request.login.chars().count() > 320 {
        return Err(too_long("login"));
    }
    if request.password.chars().count() > 1024 {
        return Err(too_long("password"));
    }
    let limits = &state.config().limits;
    let name = LoginName::of_login(&request.login);
    let name_key = name
        .as_ref()
        .map(|n| n.as_str().to_owned())
        .unwrap_or_else(|| request.login.to_lowercase());
    // Attempts per address bound the hashing a client can cause; failures are limited
    // per (name, address), so a stranger guessing from elsewhere never locks the real
    // user out of their account.
    let failures = format!("{name_key}|{ip}");
    let limited = match limit(&state, "login-ip", &ip.to_string(), limits.login_per_ip).await {
        Ok(()) => failure_budget_left(&state, "login-fail", &failures, limits.login_per_name).await,
        Err(e) => Err(e),
    };
    if let Err(e) = limited {
        metrics::counter!("strata_logins_total", "outcome" => "rate_limited").increment(1);
        return Err(e);
    }
    let store = AccountStore::new(state.topology());
    let sessions = state.sessions();
    // The credentials generation is read before the password hash: a change that
    // lands after this read (its hash or its bump) refuses the session below.
    let (user, credentials) = match &name {
        Some(name) => match store.user_id_for_login(name).await? {
            Some(id) => {
                let credentials = sessions.credentials(&id).await?;
                (store.user_for_auth(&id).await?, Some(credentials))
            }
            None => (None, None),
        },
        None => (None, None),
    };
    let stored_hash = user.as_ref().map(|u| u.password_hash.clone());
    let matched = state.hasher().verify(request.password, stored_hash).await?;
    let Some(user) = user.filter(|_| matched) else {
        metrics::counter!("strata_logins_total", "outcome" => "invalid").increment(1);
        count_failure(&state, "login-fail", &failures, limits.login_per_name).await?;
        return Err(ApiError::InvalidCredentials);
    };
    let issued = start_session(
        &state,
        &user,
        ClientInfo::new(&headers, ip),
        request.cookie,
        StatusCode::OK,
        credentials,
    )
    .await;
    if matches!(issued, Err(ApiError::InvalidCredentials)) {
        // The password changed while this one was being checked.
        metrics::counter!("strata_logins_total", "outcome" => "superseded").increment(1);
    } else {
        metrics::counter!("strata_logins_total", "outcome" => "success").increment(1);
    }
    issued
}

#[utoipa::path(post, path = "/v1/auth/refresh", tag = "accounts", request_body(content = RefreshRequest, description = "Optional in browser mode (the cookie carries it)"), responses((status = 200, description = "A new token pair; the old refresh token is spent", body = TokenPair), (status = 401, description = "Refresh token invalid, expired or replayed", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn refresh(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    limit(
        &state,
        "refresh-ip",
        &ip.to_string(),
        state.config().limits.refresh_per_ip,
    )
    .await?;
    let (raw, browser_mode) = if body.is_empty() {
        let raw = cookies::read(&headers, REFRESH_COOKIE).ok_or(ApiError::Unauthenticated)?;
        require_csrf_header(&headers)?;
        (raw, true)
    } else {
        (
            parse_json::<RefreshRequest>(&headers, &body)?.refresh_token,
            false,
        )
    };
    let presented = RefreshToken::parse(&raw).ok_or(ApiError::Unauthenticated)?;
    let next = RefreshToken::generate(&presented.user, &presented.session);
    let grace = Duration::from_millis(state.config().auth.refresh_grace_ms);
    let sessions = state.sessions();
    let rotation = sessions
        .rotate(
            &presented.user,
            &presented.session,
            &presented.secret_hash(),
            &next.secret_hash(),
            grace,
        )
        .await?;
    metrics::counter!("strata_refreshes_total", "outcome" => format!("{rotation:?}").to_lowercase()).increment(1);
    match rotation {
        Rotation::Rotated => {}
        Rotation::Missing => return Err(ApiError::Unauthenticated),
        Rotation::Reused => {
            tracing::warn!(user_id = %presented.user, session_id = %presented.session, "refresh token reused; session revoked");
            return Err(ApiError::Unauthenticated);
        }
    }
    let Some(user) = AccountStore::new(state.topology())
        .user(&presented.user)
        .await?
    else {
        sessions
            .delete(&presented.user, presented.session.as_str())
            .await?;
        return Err(ApiError::Unauthenticated);
    };
    let pair = TokenPair {
        access_token: state
            .tokens()
            .issue(&user.id, &presented.session, &user.roles),
        refresh_token: next.encode(),
        token_type: "Bearer",
        expires_in: state.tokens().access_ttl_secs(),
        user: None,
        csrf_token: browser_mode
            .then(|| cookies::read(&headers, cookies::CSRF_COOKIE).unwrap_or_default()),
    };
    Ok(token_response(&state, StatusCode::OK, pair))
}

/// Browser-mode refresh carries no access token, so the double-submit check stands alone.
fn require_csrf_header(headers: &HeaderMap) -> Result<(), ApiError> {
    let header = headers
        .get(cookies::CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let cookie = cookies::read(headers, cookies::CSRF_COOKIE).unwrap_or_default();
    if header.is_empty() || header != cookie {
        return Err(ApiError::CsrfRejected);
    }
    Ok(())
}

#[utoipa::path(post, path = "/v1/auth/logout", tag = "accounts", security(("bearer" = [])), responses((status = 204, description = "This session ended"), (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn logout(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<Response, ApiError> {
    state
        .sessions()
        .delete(&auth.user, auth.session.as_str())
        .await?;
    Ok(ended(&state, auth.via_cookie))
}

#[utoipa::path(post, path = "/v1/auth/logout-all", tag = "accounts", security(("bearer" = [])), responses((status = 204, description = "Every session of the user ended"), (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn logout_all(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<Response, ApiError> {
    state.sessions().delete_all(&auth.user, None, false).await?;
    Ok(ended(&state, auth.via_cookie))
}

/// 204, clearing the cookies of a browser-mode session.
fn ended(state: &AppState, via_cookie: bool) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    if via_cookie {
        for cookie in cookies::cleared_cookies(state.config().auth.secure_cookies) {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
    }
    response
}
