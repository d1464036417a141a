//! A small typed client for the Strata HTTP API, for tests.

use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};

/// One base URL (a node or the load balancer).
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: Client,
}

/// A signed-up or logged-in user's tokens.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub access: String,
    pub refresh: String,
    pub user_id: String,
}

impl Tokens {
    /// Reads a `TokenPair` (+ `user`) body.
    pub fn from_body(body: &Value) -> Self {
        Self {
            access: body["access_token"]
                .as_str()
                .expect("access_token")
                .to_owned(),
            refresh: body["refresh_token"]
                .as_str()
                .expect("refresh_token")
                .to_owned(),
            user_id: body["user"]["id"].as_str().unwrap_or_default().to_owned(),
        }
    }
}

impl Api {
    /// A client for `base` (e.g. `http://127.0.0.1:8101`).
    pub fn new(base: impl Into<String>) -> Self {
        Self {
            base: base.into(),
            http: Client::new(),
        }
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value, token: Option<&str>) -> Response {
        let mut request = self.http.post(format!("{}{path}", self.base)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("request sent")
    }

    /// `PUT path` with a JSON body.
    pub async fn put(&self, path: &str, body: &Value, token: Option<&str>) -> Response {
        let mut request = self.http.put(format!("{}{path}", self.base)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("request sent")
    }

    /// `GET path`.
    pub async fn get(&self, path: &str, token: Option<&str>) -> Response {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("request sent")
    }

    /// `GET path` as `token`'s user, carrying the consistency token a write answered
    /// with (its `x-strata-consistency` header): read-your-writes on any node.
    pub async fn get_after(
        &self,
        path: &str,
        token: &str,
        written: &reqwest::header::HeaderValue,
    ) -> Response {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("x-strata-consistency", written)
            .send()
            .await
            .expect("request sent")
    }

    /// `POST /v1/files?name=` with a raw body (`name` as it goes in the query, already
    /// percent-encoded) and, when given, a `Content-Type`.
    pub async fn upload(
        &self,
        token: &str,
        name: &str,
        media_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> Response {
        let mut request = self
            .http
            .post(format!("{}/v1/files?name={name}", self.base))
            .bearer_auth(token)
            .body(body);
        if let Some(media_type) = media_type {
            request = request.header("content-type", media_type);
        }
        request.send().await.expect("request sent")
    }

    /// `POST /v1/auth/signup`.
    pub async fn signup(&self, username: &str, email: &str, password: &str) -> Response {
        self.post(
            "/v1/auth/signup",
            &json!({"username": username, "email": email, "password": password}),
            None,
        )
        .await
    }

    /// Signs up and returns the tokens, panicking on anything but 201.
    pub async fn signup_ok(&self, username: &str, password: &str) -> Tokens {
        let response = self
            .signup(username, &format!("{username}@example.com"), password)
            .await;
        let (status, body) = status_and_json(response).await;
        assert_eq!(status, StatusCode::CREATED, "signup of {username}: {body}");
        Tokens::from_body(&body)
    }

    /// `POST /v1/auth/login`.
    pub async fn login(&self, login: &str, password: &str) -> Response {
        self.post(
            "/v1/auth/login",
            &json!({"login": login, "password": password}),
            None,
        )
        .await
    }

    /// `POST /v1/auth/refresh`.
    pub async fn refresh(&self, refresh_token: &str) -> Response {
        self.post(
            "/v1/auth/refresh",
            &json!({"refresh_token": refresh_token}),
            None,
        )
        .await
    }

    /// `GET /v1/me` status.
    pub async fn me_status(&self, access: &str) -> StatusCode {
        self.get("/v1/me", Some(access)).await.status()
    }
}

/// Status and JSON body of a response (JSON `null` when the body is not JSON).
pub async fn status_and_json(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// A name unique to this run, for tests that each need their own users.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}_{}_{n}", std::process::id() % 100_000)
}

/// The consistency token a write answered with (its `x-strata-consistency` header), for
/// a read that must see the write wherever it lands ([`Api::get_after`]).
pub fn consistency_token(response: &Response) -> reqwest::header::HeaderValue {
    response
        .headers()
        .get("x-strata-consistency")
        .cloned()
        .expect("a write answers with its consistency token")
}
