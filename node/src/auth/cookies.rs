//! Browser mode: tokens in `HttpOnly; Secure; SameSite=Strict` cookies, plus a readable
//! CSRF cookie whose value must come back in the `x-csrf-token` header on every unsafe
//! request authenticated by cookie (double submit, bound to the session).

use axum::http::{HeaderMap, HeaderValue, header};
use cookie::{Cookie, SameSite};

/// The access token cookie.
pub const ACCESS_COOKIE: &str = "strata_access";
/// The refresh token cookie, sent only to the auth endpoints.
pub const REFRESH_COOKIE: &str = "strata_refresh";
/// The CSRF token cookie (readable by scripts, by design).
pub const CSRF_COOKIE: &str = "strata_csrf";
/// The header that must repeat the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The value of a request cookie.
pub fn read(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| Cookie::split_parse(v.to_owned()).filter_map(Result::ok))
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

/// `Set-Cookie` headers carrying a session's tokens.
pub fn session_cookies(
    access: &str,
    access_ttl: u64,
    refresh: &str,
    refresh_ttl: u64,
    csrf: &str,
    secure: bool,
) -> Vec<HeaderValue> {
    vec![
        build(ACCESS_COOKIE, access, "/", access_ttl, true, secure),
        build(
            REFRESH_COOKIE,
            refresh,
            "/v1/auth",
            refresh_ttl,
            true,
            secure,
        ),
        build(CSRF_COOKIE, csrf, "/", refresh_ttl, false, secure),
    ]
}

/// `Set-Cookie` headers that delete the session cookies.
pub fn cleared_cookies(secure: bool) -> Vec<HeaderValue> {
    vec![
        build(ACCESS_COOKIE, "", "/", 0, true, secure),
        build(REFRESH_COOKIE, "", "/v1/auth", 0, true, secure),
        build(CSRF_COOKIE, "", "/", 0, false, secure),
    ]
}

fn build(
    name: &str,
    value: &str,
    path: &str,
    max_age_secs: u64,
    http_only: bool,
    secure: bool,
) -> HeaderValue {
    let cookie = Cookie::build((name.to_owned(), value.to_owned()))
        .path(path.to_owned())
        .http_only(http_only)
        .secure(secure)
        .same_site(SameSite::Strict)
        .max_age(cookie::time::Duration::seconds(max_age_secs as i64))
        .build();
    HeaderValue::from_str(&cookie.to_string()).expect("cookie values are ASCII tokens")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_cookies_are_http_only_secure_and_strict() {
        let cookies = session_cookies("a", 900, "r", 3600, "c", true);
        let access = cookies[0].to_str().unwrap();
        assert!(
            access.contains("strata_access=a")
                && access.contains("HttpOnly")
                && access.contains("Secure")
        );
        assert!(access.contains("SameSite=Strict"));
        assert!(cookies[1].to_str().unwrap().contains("Path=/v1/auth"));
        assert!(
            !cookies[2].to_str().unwrap().contains("HttpOnly"),
            "scripts must read the CSRF cookie"
        );
    }

    #[test]
    fn request_cookies_are_found_by_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("x=1; strata_csrf=tok; y=2"),
        );
        assert_eq!(read(&headers, CSRF_COOKIE).as_deref(), Some("tok"));
        assert_eq!(read(&headers, ACCESS_COOKIE), None);
    }
}
