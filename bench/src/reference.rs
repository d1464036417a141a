//! The bare reference server of `data-paths`: the least code that serves the same rows
//! as a node's hot read paths, so each Strata path is reported as a ratio of what the
//! same machine does with nothing but axum, one pooled Postgres connection per request
//! and one Redis round trip.
//!
//! - `GET /posts/{id}`: the bearer token must name a session (`GET` of one Redis key,
//!   giving the owner), then one prepared primary-key `SELECT` on the replica; 404 when
//!   the post is not the owner's.
//! - `GET /tasks?limit=N`: the same session check, then one prepared `SELECT` of the
//!   owner's newest tasks (the node's own index).
//!
//! It runs as a process of its own (`strata-bench reference-server`), like a node, so
//! it competes with the load generator for the cores the way a node does.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// What the reference server is started with.
#[derive(Debug, Clone)]
pub struct ReferenceConfig {
    pub listen: SocketAddr,
    /// `host:port` of the replica to read (user `strata`, database `strata`).
    pub replica: String,
    pub redis_seeds: Vec<String>,
    /// `token=user id` sessions to store before serving.
    pub sessions: Vec<(String, String)>,
    pub pool_size: usize,
}

#[derive(Clone)]
struct Shared {
    pool: Pool,
    redis: ClusterConnection,
}

/// The Redis key of a reference session.
fn session_key(token: &str) -> String {
    format!("strata-bench:reference:session:{token}")
}

/// Stores the sessions, then serves until the process is killed.
pub async fn serve(config: ReferenceConfig) -> anyhow::Result<()> {
    let client = ClusterClient::new(config.redis_seeds.clone())?;
    let mut redis = client.get_async_connection().await?;
    for (token, user) in &config.sessions {
        redis::cmd("SET")
            .arg(session_key(token))
            .arg(user)
            .arg("EX")
            .arg(3_600)
            .query_async::<()>(&mut redis)
            .await?;
    }
    let (host, port) = config
        .replica
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("--replica must be host:port"))?;
    let mut pg = tokio_postgres::Config::new();
    pg.host(host)
        .port(port.parse()?)
        .user("strata")
        .dbname("strata")
        .connect_timeout(Duration::from_secs(2));
    let manager = Manager::from_config(
        pg,
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(config.pool_size)
        .runtime(Runtime::Tokio1)
        .build()?;
    let app = Router::new()
        .route("/posts/{id}", get(post))
        .route("/tasks", get(tasks))
        .with_state(Shared { pool, redis });
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    eprintln!("reference server on {}", config.listen);
    axum::serve(listener, app).await?;
    Ok(())
}

/// The owner the bearer token's session names.
async fn owner(shared: &Shared, headers: &HeaderMap) -> Result<String, Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| StatusCode::UNAUTHORIZED.into_response())?;
    let mut redis = shared.redis.clone();
    let owner: Option<String> = redis::cmd("GET")
        .arg(session_key(token))
        .query_async(&mut redis)
        .await
        .map_err(|e| failed(&e))?;
    owner.ok_or_else(|| StatusCode::UNAUTHORIZED.into_response())
}

fn failed(e: &dyn std::fmt::Display) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response()
}

#[derive(Serialize)]
struct Post {
    id: String,
    author_id: String,
    title: String,
    body: String,
    tags: Vec<String>,
    visibility: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
    version: i64,
}

async fn post(
    State(shared): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Response> {
    let owner = owner(&shared, &headers).await?;
    let conn = shared.pool.get().await.map_err(|e| failed(&e))?;
    let statement = conn
        .prepare_cached(
            "SELECT id, owner_id, title, body, tags, visibility, created_at, updated_at, version \
             FROM posts WHERE id = $1",
        )
        .await
        .map_err(|e| failed(&e))?;
    let row = conn
        .query_opt(&statement, &[&id])
        .await
        .map_err(|e| failed(&e))?;
    match row {
        Some(row) if row.get::<_, String>(1) == owner => Ok(axum::Json(Post {
            id: row.get(0),
            author_id: row.get(1),
            title: row.get(2),
            body: row.get(3),
            tags: row.get(4),
            visibility: row.get(5),
            created_at: row.get(6),
            updated_at: row.get(7),
            version: row.get(8),
        })
        .into_response()),
        _ => Err(StatusCode::NOT_FOUND.into_response()),
    }
}

#[derive(Serialize)]
struct Task {
    id: String,
    owner_id: String,
    title: String,
    notes: String,
    #[serde(with = "time::serde::rfc3339::option")]
    due_at: Option<OffsetDateTime>,
    done: bool,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
    version: i64,
}

#[derive(Deserialize)]
struct Page {
    limit: Option<i64>,
}

#[derive(Serialize)]
struct Tasks {
    items: Vec<Task>,
}

async fn tasks(
    State(shared): State<Shared>,
    Query(page): Query<Page>,
    headers: HeaderMap,
) -> Result<Response, Response> {
    let owner = owner(&shared, &headers).await?;
    let limit = page.limit.unwrap_or(20).clamp(1, 100);
    let conn = shared.pool.get().await.map_err(|e| failed(&e))?;
    let statement = conn
        .prepare_cached(
            "SELECT id, owner_id, title, notes, due_at, done, created_at, updated_at, version \
             FROM tasks WHERE owner_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2",
        )
        .await
        .map_err(|e| failed(&e))?;
    let rows = conn
        .query(&statement, &[&owner, &limit])
        .await
        .map_err(|e| failed(&e))?;
    let items = rows
        .iter()
        .map(|row| Task {
            id: row.get(0),
            owner_id: row.get(1),
            title: row.get(2),
            notes: row.get(3),
            due_at: row.get(4),
            done: row.get(5),
            created_at: row.get(6),
            updated_at: row.get(7),
            version: row.get(8),
        })
        .collect();
    Ok(axum::Json(Tasks { items }).into_response())
}

/// The reference server as a child process of the bench, killed when dropped.
pub struct ReferenceProcess {
    child: std::process::Child,
    /// Its base URL.
    pub url: String,
}

impl ReferenceProcess {
    /// Starts `strata-bench reference-server` (this program) and waits until it answers.
    /// It runs `worker_threads` request threads, as many as a node of the local cluster,
    /// so the two are compared on the same share of the machine.
    pub async fn start(
        replica: &str,
        redis_seeds: &[String],
        sessions: &[(String, String)],
        pool_size: usize,
        worker_threads: usize,
    ) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut command = std::process::Command::new(std::env::current_exe()?);
        command
            .env("TOKIO_WORKER_THREADS", worker_threads.to_string())
            .arg("reference-server")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--replica")
            .arg(replica)
            .arg("--pool-size")
            .arg(pool_size.to_string());
        for seed in redis_seeds {
            command.arg("--redis").arg(seed);
        }
        for (token, user) in sessions {
            command.arg("--session").arg(format!("{token}={user}"));
        }
        let child = command.spawn()?;
        let process = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let http = reqwest::Client::new();
        for _ in 0..100 {
            if http
                .get(format!("{}/tasks", process.url))
                .send()
                .await
                .is_ok()
            {
                return Ok(process);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("the reference server did not start on port {port}")
    }
}

impl Drop for ReferenceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
