//! `data-paths`: the read and write paths against Postgres itself, in the same run.
//!
//! - Read: `GET /v1/posts/{id}` (the owner reading private posts, so every request goes
//!   through auth, the router and a replica, never the cache) through one node, against
//!   `pgbench -S` (select-only by primary key) on the same replica.
//! - Write: `POST /v1/tasks` through one node against a pgbench script doing the same
//!   inserts (the task row plus its change-feed row, in one transaction) on the same
//!   primary.
//!
//! Each pair runs first closed-loop at `--connections` (the maximum rate), then
//! open-loop at half the HTTP maximum (pgbench throttled with `-R` to half its own),
//! for p50 and p99 including queueing from the schedule.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Client, Method};
use serde_json::json;
use strata_router::{Placement, ShardMap, route_hash};

use crate::load::{closed_loop, open_loop};
use crate::pgbench::{self, PgbenchRun};
use crate::recorder::Recorder;
use crate::report::{Phase, Ratio, Report};
use crate::scenarios::{client_ip, create_item, send, sign_in};
use crate::target::Target;

/// Knobs of the scenario.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DataPaths {
    pub posts: usize,
    pub connections: usize,
    pub duration: Duration,
    pub seed: u64,
}

impl DataPaths {
    /// Runs the scenario and returns its report.
    pub async fn run(
        &self,
        target: &Target,
        http: &Client,
        work_dir: &Path,
    ) -> anyhow::Result<Report> {
        let mut report = Report::new(
            "data-paths",
            serde_json::to_value(self)?,
            serde_json::to_value(target)?,
        );
        let node = target.nodes[0].clone();
        let (token, user_id) = self.bench_user(http, &node).await?;
        let (primary, replica) = self.hosts_of(target, &user_id)?;
        let post_ids = Arc::new(self.seed_posts(http, &node, &token, &user_id).await?);
        eprintln!(
            "bench user {user_id}: primary {primary}, replica {replica}, {} posts",
            post_ids.len()
        );

        let token = Arc::new(token);
        let read = {
            let (http, node, token, ids) = (
                http.clone(),
                node.clone(),
                Arc::clone(&token),
                Arc::clone(&post_ids),
            );
            move |i: u64| {
                let url = format!(
                    "{node}/v1/posts/{}",
                    ids[(i.wrapping_mul(7_919) % ids.len() as u64) as usize]
                );
                let (http, token) = (http.clone(), Arc::clone(&token));
                async move {
                    send(
                        &http,
                        "GET /v1/posts/{id}",
                        Method::GET,
                        url,
                        Some(&token),
                        None,
                        None,
                    )
                    .await
                }
            }
        };
        let write = {
            let (http, node, token) = (http.clone(), node.clone(), Arc::clone(&token));
            move |i: u64| {
                let url = format!("{node}/v1/tasks");
                let (http, token) = (http.clone(), Arc::clone(&token));
                async move {
                    let body = json!({"title": format!("bench task {i}")});
                    send(
                        &http,
                        "POST /v1/tasks",
                        Method::POST,
                        url,
                        Some(&token),
                        None,
                        Some(&body),
                    )
                    .await
                }
            }
        };

        eprintln!(
            "read path: closed loop, {} connections ...",
            self.connections
        );
        let read_max = self.closed(read.clone(), "read max (closed loop)").await;
        let pg_read_max = self.pgbench_select(&primary, &replica, None, work_dir)?;
        let read_rate = rate_of(&read_max) / 2.0;
        eprintln!("read path: open loop at {read_rate:.0} req/s ...");
        let read_half = self
            .open(read, read_rate, "read at half the maximum (open loop)")
            .await;
        let pg_read_half =
            self.pgbench_select(&primary, &replica, Some(pg_read_max.tps / 2.0), work_dir)?;

        eprintln!(
            "write path: closed loop, {} connections ...",
            self.connections
        );
        let write_max = self.closed(write.clone(), "write max (closed loop)").await;
        let pg_write_max = self.pgbench_insert(&primary, None, work_dir)?;
        let write_rate = rate_of(&write_max) / 2.0;
        eprintln!("write path: open loop at {write_rate:.0} req/s ...");
        let write_half = self
            .open(write, write_rate, "write at half the maximum (open loop)")
            .await;
        let pg_write_half =
            self.pgbench_insert(&primary, Some(pg_write_max.tps / 2.0), work_dir)?;

        let p99 = |phase: &Phase| {
            phase
                .endpoints
                .first()
                .map(|e| e.p99_ms)
                .unwrap_or(f64::NAN)
        };
        let p50 = |phase: &Phase| {
            phase
                .endpoints
                .first()
                .map(|e| e.p50_ms)
                .unwrap_or(f64::NAN)
        };
        let mut ratio = |name: &str, value: f64, numerator: String, denominator: String| {
            report.ratios.push(Ratio {
                name: name.into(),
                value,
                numerator,
                denominator,
            })
        };
        ratio(
            "GET /v1/posts/{id} req/s ÷ pgbench -S tps (same replica, same concurrency)",
            rate_of(&read_max) / pg_read_max.tps,
            format!("{:.0} req/s", rate_of(&read_max)),
            format!("{:.0} tps", pg_read_max.tps),
        );
        ratio(
            "POST /v1/tasks req/s ÷ pgbench insert tps (same primary, same concurrency)",
            rate_of(&write_max) / pg_write_max.tps,
            format!("{:.0} req/s", rate_of(&write_max)),
            format!("{:.0} tps", pg_write_max.tps),
        );
        ratio(
            "read p50 at half rate: HTTP ÷ pgbench",
            p50(&read_half) / pg_read_half.p50_ms,
            format!("{:.2} ms", p50(&read_half)),
            format!("{:.2} ms", pg_read_half.p50_ms),
        );
        ratio(
            "read p99 at half rate: HTTP ÷ pgbench",
            p99(&read_half) / pg_read_half.p99_ms,
            format!("{:.2} ms", p99(&read_half)),
            format!("{:.2} ms", pg_read_half.p99_ms),
        );
        ratio(
            "write p50 at half rate: HTTP ÷ pgbench",
            p50(&write_half) / pg_write_half.p50_ms,
            format!("{:.2} ms", p50(&write_half)),
            format!("{:.2} ms", pg_write_half.p50_ms),
        );
        ratio(
            "write p99 at half rate: HTTP ÷ pgbench",
            p99(&write_half) / pg_write_half.p99_ms,
            format!("{:.2} ms", p99(&write_half)),
            format!("{:.2} ms", pg_write_half.p99_ms),
        );
        for run in [pg_read_max, pg_read_half, pg_write_max, pg_write_half] {
            let key = format!(
                "pgbench {} {}",
                run.script,
                run.rate_limit
                    .map(|r| format!("at {r:.0} tps"))
                    .unwrap_or_else(|| "max".into())
            );
            report.baselines.insert(key, serde_json::to_value(run)?);
        }
        report.phases = vec![read_max, read_half, write_max, write_half];
        Ok(report)
    }

    async fn closed<F, Fut>(&self, make: F, name: &str) -> Phase
    where
        F: Fn(u64) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = crate::recorder::Outcome> + Send + 'static,
    {
        let recorder = Arc::new(Recorder::new());
        closed_loop(Arc::clone(&recorder), self.connections, self.duration, make).await;
        Phase {
            name: name.into(),
            load: format!("closed loop, {} connections, one node", self.connections),
            duration_secs: self.duration.as_secs_f64(),
            endpoints: recorder.summarize(self.duration),
        }
    }

    async fn open<F, Fut>(&self, make: F, rate: f64, name: &str) -> Phase
    where
        F: Fn(u64) -> Fut,
        Fut: std::future::Future<Output = crate::recorder::Outcome> + Send + 'static,
    {
        let recorder = Arc::new(Recorder::new());
        open_loop(Arc::clone(&recorder), rate.max(1.0), self.duration, make).await;
        Phase {
            name: name.into(),
            load: format!("open loop, {rate:.0} req/s, one node"),
            duration_secs: self.duration.as_secs_f64(),
            endpoints: recorder.summarize(self.duration),
        }
    }

    fn pgbench_select(
        &self,
        primary: &str,
        replica: &str,
        rate: Option<f64>,
        work_dir: &Path,
    ) -> anyhow::Result<PgbenchRun> {
        pgbench::select_only(
            primary,
            replica,
            self.connections,
            self.duration,
            rate,
            work_dir,
        )
    }

    fn pgbench_insert(
        &self,
        primary: &str,
        rate: Option<f64>,
        work_dir: &Path,
    ) -> anyhow::Result<PgbenchRun> {
        pgbench::insert_task(primary, self.connections, self.duration, rate, work_dir)
    }

    async fn bench_user(&self, http: &Client, node: &str) -> anyhow::Result<(String, String)> {
        let ip = client_ip(self.seed, 900_000);
        sign_in(http, node, &format!("bench_data_{}", self.seed), &ip).await
    }

    /// The primary and a replica of the bench user's shard, as started.
    fn hosts_of(&self, target: &Target, user_id: &str) -> anyhow::Result<(String, String)> {
        let map_path = target.shard_map.as_ref().ok_or_else(|| {
            anyhow::anyhow!("data-paths needs a local cluster file (--cluster), not --url")
        })?;
        let map = ShardMap::load(map_path)?;
        let shard = Placement::from_map(&map)
            .shard_of(route_hash(user_id))
            .to_string();
        let host = |role: &str| {
            target
                .postgres
                .iter()
                .find(|h| h.shard == shard && h.role == role)
                .map(|h| h.addr.clone())
                .ok_or_else(|| anyhow::anyhow!("shard {shard} has no {role} in the cluster file"))
        };
        Ok((host("primary")?, host("replica")?))
    }

    /// The bench user's posts, creating them up to `--posts` (a second run reuses them).
    async fn seed_posts(
        &self,
        http: &Client,
        node: &str,
        token: &str,
        user_id: &str,
    ) -> anyhow::Result<Vec<String>> {
        let mut ids = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = format!("{node}/v1/users/{user_id}/posts?limit=100");
            if let Some(c) = &cursor {
                url += &format!("&cursor={c}");
            }
            let page: serde_json::Value = http
                .get(url)
                .bearer_auth(token)
                .send()
                .await?
                .json()
                .await?;
            ids.extend(
                page["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p["id"].as_str().map(str::to_owned)),
            );
            match page["next_cursor"].as_str() {
                Some(next) if ids.len() < self.posts => cursor = Some(next.to_owned()),
                _ => break,
            }
        }
        while ids.len() < self.posts {
            let body = json!({"title": format!("bench post {}", ids.len()), "body": "lorem ipsum ".repeat(40), "tags": ["bench"]});
            ids.push(create_item(http, node, token, "/v1/posts", &body).await?);
        }
        ids.truncate(self.posts);
        Ok(ids)
    }
}

fn rate_of(phase: &Phase) -> f64 {
    phase
        .endpoints
        .first()
        .map(|e| e.ok as f64 / phase.duration_secs)
        .unwrap_or(0.0)
}
