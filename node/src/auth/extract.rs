//! Who is calling: the [`Authenticated`] extractor (a valid access token, from the
//! `Authorization: Bearer` header or the access cookie, naming a session that still
//! exists in Redis; CSRF-checked for unsafe cookie requests) and the [`ClientIp`]
//! extractor (the peer, or the address the trusted load balancer forwarded for).

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{Method, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::accounts::store::AccountStore;
use crate::auth::cookies::{self, ACCESS_COOKIE, CSRF_COOKIE, CSRF_HEADER};
use crate::auth::ids::{SessionId, UserId};
use crate::error::ApiError;
use crate::state::AppState;

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub user: UserId,
    pub session: SessionId,
    pub roles: Vec<String>,
    /// True when the token came from the cookie (browser mode).
    pub via_cookie: bool,
}

impl Authenticated {
    /// Refuses callers without the role (403).
    pub fn require_role(&self, role: &str) -> Result<(), ApiError> {
        if self.roles.iter().any(|r| r == role) {
            Ok(())
        } else {
            Err(ApiError::Forbidden)
        }
    }

    /// Refuses callers whose token lacks the role, or whose account no longer has it: an
    /// access token carries the roles of its issue, so a role removed since would
    /// otherwise last until the token expires. One read of the user's row (on their
    /// shard's primary), paid only by role-gated requests.
    pub async fn require_current_role(&self, state: &AppState, role: &str) -> Result<(), ApiError> {
        self.require_role(role)?;
        let user = AccountStore::new(state.topology())
            .user_for_auth(&self.user)
            .await?;
        if user.is_some_and(|u| u.roles.iter().any(|r| r == role)) {
            Ok(())
        } else {
            Err(ApiError::Forbidden)
        }
    }
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let (token, via_cookie) = match parts.headers.get(header::AUTHORIZATION) {
            Some(value) => {
                let value = value.to_str().map_err(|_| ApiError::Unauthenticated)?;
                let token = value
                    .strip_prefix("Bearer ")
                    .or_else(|| value.strip_prefix("bearer "))
                    .ok_or(ApiError::Unauthenticated)?;
                (token.trim().to_owned(), false)
            }
            None => (
                cookies::read(&parts.headers, ACCESS_COOKIE).ok_or(ApiError::Unauthenticated)?,
                true,
            ),
        };
        let claims = state.tokens().verify(&token).map_err(|e| {
            tracing::debug!(reason = %e, "access token refused");
            ApiError::Unauthenticated
        })?;
        let user = UserId::parse(&claims.sub).ok_or(ApiError::Unauthenticated)?;
        let session = SessionId::parse(&claims.sid).ok_or(ApiError::Unauthenticated)?;
        let store = state.sessions();
        let live = store
            .check(&user, &session)
            .await?
            .ok_or(ApiError::Unauthenticated)?;
        if via_cookie && !is_safe(&parts.method) {
            check_csrf(parts, live.csrf_hash.as_deref())?;
        }
        Ok(Self {
            user,
            session,
            roles: claims.roles,
            via_cookie,
        })
    }
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The CSRF header must equal the CSRF cookie and hash to the session's CSRF token.
pub fn check_csrf(parts: &Parts, session_csrf_hash: Option<&str>) -> Result<(), ApiError> {
    let header = parts
        .headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let cookie = cookies::read(&parts.headers, CSRF_COOKIE).unwrap_or_default();
    let header_hash = hex::encode(Sha256::digest(header.as_bytes()));
    let matches_session =
        session_csrf_hash.is_none_or(|h| bool::from(h.as_bytes().ct_eq(header_hash.as_bytes())));
    if header.is_empty()
        || !bool::from(header.as_bytes().ct_eq(cookie.as_bytes()))
        || !matches_session
    {
        return Err(ApiError::CsrfRejected);
    }
    Ok(())
}

/// The client's address.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        if !state
            .config()
            .trusted_proxies
            .iter()
            .any(|net| net.contains(&peer))
        {
            return Ok(Self(peer));
        }
        let forwarded = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|ip| ip.trim().parse::<IpAddr>().ok())
            .next_back();
        Ok(Self(forwarded.unwrap_or(peer)))
    }
}
