//! Starting a session and answering with its tokens: shared by signup and login.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::accounts::store::User;
use crate::auth::cookies;
use crate::auth::ids::SessionId;
use crate::auth::sessions::NewSession;
use crate::auth::tokens::RefreshToken;
use crate::error::ApiError;
use crate::routes::views::UserView;
use crate::state::AppState;

/// `TokenPair`, with the user on signup and login.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<UserView>,
    /// Browser mode: the CSRF token to echo in `x-csrf-token` (also in its cookie).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csrf_token: Option<String>,
}

/// Where a new session comes from, for the session list.
pub struct ClientInfo {
    pub user_agent: String,
    pub ip: String,
}

impl ClientInfo {
    /// Reads the user agent from the request headers.
    pub fn new(headers: &HeaderMap, ip: std::net::IpAddr) -> Self {
        let user_agent = headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        Self {
            user_agent,
            ip: ip.to_string(),
        }
    }
}

/// Creates a session for `user` and answers `status` with its token pair (and cookies
/// in browser mode).
pub async fn start_session(
    state: &AppState,
    user: &User,
    client: ClientInfo,
    browser_mode: bool,
    status: StatusCode,
    credentials: Option<u64>,
) -> Result<Response, ApiError> {
    let session = SessionId::generate();
    let refresh = RefreshToken::generate(&user.id, &session);
    let csrf = browser_mode.then(|| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 24]>())
    });
    let created = state
        .sessions()
        .create(NewSession {
            user: &user.id,
            session: &session,
            refresh_hash: refresh.secret_hash(),
            csrf_hash: csrf
                .as_ref()
                .map(|c| hex::encode(Sha256::digest(c.as_bytes()))),
            user_agent: &client.user_agent,
            ip: client.ip,
            credentials,
        })
        .await?;
    if !created {
        // The password changed after it was checked: the login is refused as if the
        // password were wrong (it is, now).
        return Err(ApiError::InvalidCredentials);
    }
    let access = state.tokens().issue(&user.id, &session, &user.roles);
    let pair = TokenPair {
        access_token: access,
        refresh_token: refresh.encode(),
        token_type: "Bearer",
        expires_in: state.tokens().access_ttl_secs(),
        user: Some(UserView::from(user)),
        csrf_token: csrf,
    };
    Ok(token_response(state, status, pair))
}

/// Answers with a token pair, never cached, with cookies when it carries a CSRF token.
pub fn token_response(state: &AppState, status: StatusCode, pair: TokenPair) -> Response {
    let set_cookies = pair.csrf_token.as_ref().map(|csrf| {
        cookies::session_cookies(
            &pair.access_token,
            pair.expires_in,
            &pair.refresh_token,
            state.config().auth.refresh_ttl_secs,
            csrf,
            state.config().auth.secure_cookies,
        )
    });
    let mut response = (status, axum::Json(pair)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for cookie in set_cookies.into_iter().flatten() {
        headers.append(header::SET_COOKIE, cookie);
    }
    response
}
