//! Malformed and hostile input gets a 4xx problem+json, never a 500, and changes nothing.

use reqwest::StatusCode;
use serde_json::json;

use super::{PASSWORD, count_everywhere, node, signup_body, unique};

/// Sends raw bytes as a request body and returns status and content type.
async fn raw(path: &str, content_type: &str, body: Vec<u8>) -> (StatusCode, String) {
    let api = node(0);
    let response = api
        .http
        .post(format!("{}{path}", api.base))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (response.status(), content_type)
}

#[tokio::test]
async fn malformed_and_hostile_signups_and_logins_get_4xx_problems() {
    let json_type = "application/json";
    let long = "x".repeat(10_000);
    let cases: Vec<(&str, &str, Vec<u8>, StatusCode)> = vec![
        ("truncated JSON", json_type, b"{\"username\":".to_vec(), StatusCode::BAD_REQUEST),
        ("not JSON", json_type, b"username=alice".to_vec(), StatusCode::BAD_REQUEST),
        ("invalid UTF-8", json_type, b"{\"username\":\"\xff\xfe\",\"email\":\"a@b.co\",\"password\":\"x\"}".to_vec(), StatusCode::BAD_REQUEST),
        ("empty body", json_type, Vec::new(), StatusCode::BAD_REQUEST),
        ("wrong content type", "text/plain", serde_json::to_vec(&signup_body(&unique("typed"))).unwrap(), StatusCode::UNSUPPORTED_MEDIA_TYPE),
        ("array body", json_type, b"[1,2,3]".to_vec(), StatusCode::UNPROCESSABLE_ENTITY),
        ("number username", json_type, br#"{"username":5,"email":"a@b.co","password":"longenough1"}"#.to_vec(), StatusCode::UNPROCESSABLE_ENTITY),
        ("unknown field", json_type, serde_json::to_vec(&json!({"username":"abc","email":"a@b.co","password":"x","is_admin":true})).unwrap(), StatusCode::UNPROCESSABLE_ENTITY),
        ("overlong username", json_type, serde_json::to_vec(&json!({"username": long, "email":"a@b.co","password":PASSWORD})).unwrap(), StatusCode::UNPROCESSABLE_ENTITY),
        ("overlong email", json_type, serde_json::to_vec(&json!({"username":"okname","email": format!("{long}@b.co"),"password":PASSWORD})).unwrap(), StatusCode::UNPROCESSABLE_ENTITY),
        ("overlong password", json_type, serde_json::to_vec(&json!({"username":"okname2","email":"c@d.co","password": long})).unwrap(), StatusCode::UNPROCESSABLE_ENTITY),
        ("SQL in username", json_type, serde_json::to_vec(&json!({"username":"robert'); DROP TABLE users;--","email":"r@b.co","password":PASSWORD})).unwrap(), StatusCode::UNPROCESSABLE_ENTITY),
        ("common password", json_type, serde_json::to_vec(&json!({"username": unique("weak"),"email":"w@b.co","password":"password123"})).unwrap(), StatusCode::UNPROCESSABLE_ENTITY),
        ("NUL in username", json_type, serde_json::to_vec(&json!({"username":"a\u{0}b","email":"n@b.co","password":PASSWORD})).unwrap(), StatusCode::UNPROCESSABLE_ENTITY),
        ("body over the limit", json_type, vec![b' '; 2 * 1024 * 1024], StatusCode::PAYLOAD_TOO_LARGE),
    ];
    let users_before = count_everywhere("SELECT count(*) FROM users");
    for (what, content_type, body, expected) in cases {
        let (status, problem_type) = raw("/v1/auth/signup", content_type, body).await;
        assert_eq!(status, expected, "signup with {what}");
        assert_eq!(
            problem_type, "application/problem+json",
            "signup with {what}"
        );
    }

    let logins: Vec<(&str, Vec<u8>, StatusCode)> = vec![
        (
            "SQL in login",
            serde_json::to_vec(&json!({"login":"' OR '1'='1","password":"' OR '1'='1"})).unwrap(),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "overlong login",
            serde_json::to_vec(&json!({"login": long, "password":"x"})).unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "missing password",
            br#"{"login":"someone"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "null login",
            br#"{"login":null,"password":"x"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];
    for (what, body, expected) in logins {
        let (status, problem_type) = raw("/v1/auth/login", "application/json", body).await;
        assert_eq!(status, expected, "login with {what}");
        assert_eq!(
            problem_type, "application/problem+json",
            "login with {what}"
        );
    }
    let (status, _) = raw(
        "/v1/auth/refresh",
        "application/json",
        br#"{"refresh_token":"rt1.x.y.z"}"#.to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Hostile signups created nothing. (Other tests may create users meanwhile; none of
    // these cases' names exist.)
    assert!(count_everywhere("SELECT count(*) FROM users") >= users_before);
    assert_eq!(
        count_everywhere(
            "SELECT count(*) FROM users WHERE username LIKE 'robert%' OR username IN ('okname', 'okname2')"
        ),
        0
    );
}
