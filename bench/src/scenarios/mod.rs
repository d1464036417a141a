//! The named scenarios. Each documents what it measures in `bench/README.md`.

pub mod data_paths;
pub mod faults;
pub mod login_storm;
pub mod mix;
pub mod rebalance;
pub mod runner;
pub mod search;
pub mod shard_floor;
pub mod shard_scaling;

use std::time::Instant;

use reqwest::{Client, Method};
use serde_json::Value;

use crate::recorder::Outcome;

/// A simulated client address, sent as `X-Forwarded-For` to a node directly (nodes
/// trust loopback as their load balancer), so per-IP limits see many clients rather
/// than one bench process.
pub fn client_ip(seed: u64, i: u64) -> String {
    format!("10.{}.{}.{}", seed % 250, (i / 250) % 250, i % 250 + 1)
}

/// Sends one request and turns it into an [`Outcome`].
pub async fn send(
    http: &Client,
    endpoint: &'static str,
    method: Method,
    url: String,
    token: Option<&str>,
    ip: Option<&str>,
    body: Option<&Value>,
) -> Outcome {
    let mut request = http.request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(ip) = ip {
        request = request.header("x-forwarded-for", ip);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let status = match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let _ = response.bytes().await;
            Some(status)
        }
        Err(_) => None,
    };
    Outcome { endpoint, status }
}

/// One `POST /v1/tasks` of a load (the `i`-th), as an [`Outcome`].
pub async fn post_task(http: &Client, tasks_url: String, token: &str, i: u64) -> Outcome {
    let body = serde_json::json!({"title": format!("bench task {i}")});
    send(
        http,
        "POST /v1/tasks",
        Method::POST,
        tasks_url,
        Some(token),
        None,
        Some(&body),
    )
    .await
}

/// Creates an item with `POST {node}{path}` as the token's user; returns its id.
pub async fn create_item(
    http: &Client,
    node: &str,
    token: &str,
    path: &str,
    body: &Value,
) -> anyhow::Result<String> {
    let response = http
        .post(format!("{node}{path}"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await?;
    anyhow::ensure!(
        response.status().as_u16() == 201,
        "POST {path} answered {}",
        response.status()
    );
    let item: Value = response.json().await?;
    Ok(item["id"].as_str().unwrap_or_default().to_owned())
}

/// The password of every user the bench seeds.
pub const BENCH_PASSWORD: &str = "bench password that is long enough";

/// Signs `name` up (a user left by an earlier run with the same seed is reused) and logs
/// in as simulated client `ip`; returns the access token and the user id.
pub async fn sign_in(
    http: &Client,
    node: &str,
    name: &str,
    ip: &str,
) -> anyhow::Result<(String, String)> {
    let body = serde_json::json!({"username": name, "email": format!("{name}@bench.example"), "password": BENCH_PASSWORD});
    http.post(format!("{node}/v1/auth/signup"))
        .header("x-forwarded-for", ip)
        .json(&body)
        .send()
        .await?;
    let login = http
        .post(format!("{node}/v1/auth/login"))
        .header("x-forwarded-for", ip)
        .json(&serde_json::json!({"login": name, "password": BENCH_PASSWORD}))
        .send()
        .await?;
    anyhow::ensure!(
        login.status().is_success(),
        "logging in bench user {name} answered {}",
        login.status()
    );
    let login: Value = login.json().await?;
    Ok((
        login["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        login["user"]["id"].as_str().unwrap_or_default().to_owned(),
    ))
}

/// Seconds since `start`, for phase durations.
pub fn secs_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}
