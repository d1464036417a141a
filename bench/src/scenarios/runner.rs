//! Runs a request mix against a cluster: seeds (or reuses) the dataset, applies the load
//! model (closed loop, open loop at a rate, or a ramp that steps the rate up until p99 or
//! errors pass a bound), prints a live progress line, and measures the same-run pgbench
//! baselines on the same Postgres hosts.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Client;
use serde_json::json;

use crate::load::{closed_loop, open_loop};
use crate::pgbench;
use crate::recorder::Recorder;
use crate::report::{Phase, Ratio, Report};
use crate::scenarios::mix::{Dataset, Mix, SeededUser, request};
use crate::scenarios::{client_ip, create_item, sign_in};
use crate::target::Target;

/// How load is applied.
#[derive(Debug, Clone, serde::Serialize)]
pub enum LoadModel {
    /// N connections back to back.
    Closed { connections: usize },
    /// A fixed arrival rate, latency from each request's due time.
    Open { rate: f64 },
    /// Open loop from `start` req/s, ×1.5 per step, until p99 passes `p99_bound_ms` or
    /// more than 1 % of requests fail.
    Ramp {
        start: f64,
        p99_bound_ms: f64,
        max_steps: usize,
    },
}

/// A mix scenario's knobs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MixRun {
    pub name: String,
    pub mix: Mix,
    pub load: LoadModel,
    pub duration: Duration,
    pub users: usize,
    pub posts_per_user: usize,
    pub tasks_per_user: usize,
    pub seed: u64,
}

impl MixRun {
    /// Runs the scenario and returns its report.
    pub async fn run(
        &self,
        target: &Target,
        http: &Client,
        work_dir: &Path,
    ) -> anyhow::Result<Report> {
        let mut report = Report::new(
            &self.name,
            serde_json::to_value(self)?,
            serde_json::to_value(target)?,
        );
        let data: Dataset = Arc::new(self.seed_dataset(target, http).await?);
        let nodes = Arc::new(target.nodes.clone());
        let (http2, mix, seed) = (http.clone(), Arc::new(self.mix.clone()), self.seed);
        let make = move |i: u64| {
            request(
                http2.clone(),
                Arc::clone(&nodes),
                Arc::clone(&data),
                Arc::clone(&mix),
                seed,
                i,
            )
        };
        match &self.load {
            LoadModel::Closed { connections } => {
                report
                    .phases
                    .push(self.closed_phase(make, *connections).await);
            }
            LoadModel::Open { rate } => report.phases.push(self.open_phase(&make, *rate).await),
            LoadModel::Ramp {
                start,
                p99_bound_ms,
                max_steps,
            } => {
                let mut rate = *start;
                let mut sustained = 0.0;
                for _ in 0..*max_steps {
                    let phase = self.open_phase(&make, rate).await;
                    let (p99, errors, total) =
                        phase
                            .endpoints
                            .iter()
                            .fold((0.0f64, 0u64, 0u64), |(p, e, t), ep| {
                                (p.max(ep.p99_ms), e + ep.requests - ep.ok, t + ep.requests)
                            });
                    report.phases.push(phase);
                    if p99 > *p99_bound_ms || errors as f64 > total as f64 * 0.01 {
                        break;
                    }
                    sustained = rate;
                    rate *= 1.5;
                }
                report
                    .baselines
                    .insert("max_sustainable_rate_per_sec".into(), json!(sustained));
                report.baselines.insert(
                    "ramp_bound".into(),
                    json!(format!("p99 ≤ {p99_bound_ms} ms and errors ≤ 1 %")),
                );
            }
        }
        self.baselines(target, &mut report, work_dir)?;
        Ok(report)
    }

    async fn closed_phase<F, Fut>(&self, make: F, connections: usize) -> Phase
    where
        F: Fn(u64) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = crate::recorder::Outcome> + Send + 'static,
    {
        let recorder = Arc::new(Recorder::new());
        let progress = progress_line(
            Arc::clone(&recorder),
            format!("{} closed {connections}", self.name),
        );
        closed_loop(Arc::clone(&recorder), connections, self.duration, make).await;
        progress.abort();
        eprintln!();
        Phase {
            name: format!("{} ({connections} connections)", self.name),
            load: format!("closed loop, {connections} connections"),
            duration_secs: self.duration.as_secs_f64(),
            endpoints: recorder.summarize(self.duration),
        }
    }

    async fn open_phase<F, Fut>(&self, make: &F, rate: f64) -> Phase
    where
        F: Fn(u64) -> Fut,
        Fut: std::future::Future<Output = crate::recorder::Outcome> + Send + 'static,
    {
        let recorder = Arc::new(Recorder::new());
        let progress = progress_line(
            Arc::clone(&recorder),
            format!("{} at {rate:.0}/s", self.name),
        );
        open_loop(Arc::clone(&recorder), rate, self.duration, make).await;
        progress.abort();
        eprintln!();
        Phase {
            name: format!("{} at {rate:.0} req/s", self.name),
            load: format!("open loop, {rate:.0} req/s"),
            duration_secs: self.duration.as_secs_f64(),
            endpoints: recorder.summarize(self.duration),
        }
    }

    /// pgbench on the cluster's own hosts at the same concurrency, in the same run:
    /// select-only on a replica, and (for mixes that write) the task insert on a primary.
    fn baselines(
        &self,
        target: &Target,
        report: &mut Report,
        work_dir: &Path,
    ) -> anyhow::Result<()> {
        let (Some(primary), Some(replica)) = (
            target.postgres.iter().find(|h| h.role == "primary"),
            target
                .postgres
                .iter()
                .find(|h| h.role == "replica" && h.shard == target.postgres[0].shard),
        ) else {
            eprintln!("no Postgres hosts known (--url): no pgbench baseline");
            return Ok(());
        };
        let clients = match self.load {
            LoadModel::Closed { connections } => connections,
            _ => 16,
        };
        let select = pgbench::select_only(
            &primary.addr,
            &replica.addr,
            clients,
            self.duration,
            None,
            work_dir,
        )?;
        let http_rate = report
            .phases
            .iter()
            .map(|p| p.endpoints.iter().map(|e| e.ok).sum::<u64>() as f64 / p.duration_secs)
            .fold(0.0, f64::max);
        report.ratios.push(Ratio {
            target: None,
            name: format!(
                "{} req/s ÷ pgbench -S tps on one replica ({clients} clients)",
                self.name
            ),
            value: http_rate / select.tps,
            numerator: format!("{http_rate:.0} req/s"),
            denominator: format!("{:.0} tps", select.tps),
        });
        report
            .baselines
            .insert("pgbench select-only".into(), serde_json::to_value(&select)?);
        if self.mix.writes() {
            let insert = pgbench::insert_task(
                pgbench::TASK_INSERT,
                &primary.addr,
                clients,
                self.duration,
                None,
                work_dir,
            )?;
            let write_endpoints: Vec<&str> = self
                .mix
                .0
                .iter()
                .filter(|(op, _)| op.writes())
                .map(|(op, _)| op.endpoint())
                .collect();
            let write_rate = report
                .phases
                .iter()
                .map(|p| {
                    p.endpoints
                        .iter()
                        .filter(|e| write_endpoints.contains(&e.endpoint.as_str()))
                        .map(|e| e.ok)
                        .sum::<u64>() as f64
                        / p.duration_secs
                })
                .fold(0.0, f64::max);
            report.ratios.push(Ratio {
                target: None,
                name: format!(
                    "{} writes/s ÷ pgbench insert-task tps on the primary ({clients} clients)",
                    self.name
                ),
                value: write_rate / insert.tps,
                numerator: format!("{write_rate:.0} writes/s"),
                denominator: format!("{:.0} tps", insert.tps),
            });
            report
                .baselines
                .insert("pgbench insert-task".into(), serde_json::to_value(&insert)?);
        }
        Ok(())
    }

    /// Signs up (or logs in) the dataset's users and gives each its posts and tasks.
    pub(crate) async fn seed_dataset(
        &self,
        target: &Target,
        http: &Client,
    ) -> anyhow::Result<Vec<SeededUser>> {
        eprintln!(
            "seeding {} users × {} posts, {} tasks ...",
            self.users, self.posts_per_user, self.tasks_per_user
        );
        let mut users = Vec::with_capacity(self.users);
        for u in 0..self.users {
            let node = &target.nodes[u % target.nodes.len()];
            let name = format!("mix_{}_{u}", self.seed);
            let ip = client_ip(self.seed, 500_000 + u as u64);
            let (token, id) = sign_in(http, node, &name, &ip).await?;
            let posts = self.ensure_items(http, node, &token, &format!("/v1/users/{id}/posts"), "/v1/posts", self.posts_per_user, |n| {
                json!({"title": format!("seeded post {n}"), "body": "seeded body ".repeat(50), "visibility": "public"})
            })
            .await?;
            let tasks = self
                .ensure_items(
                    http,
                    node,
                    &token,
                    "/v1/tasks",
                    "/v1/tasks",
                    self.tasks_per_user,
                    |n| json!({"title": format!("seeded task {n}")}),
                )
                .await?;
            users.push(SeededUser {
                id,
                token,
                posts,
                tasks,
            });
        }
        Ok(users)
    }

    #[allow(clippy::too_many_arguments)]
    async fn ensure_items(
        &self,
        http: &Client,
        node: &str,
        token: &str,
        list: &str,
        create: &str,
        wanted: usize,
        body: impl Fn(usize) -> serde_json::Value,
    ) -> anyhow::Result<Vec<String>> {
        let page: serde_json::Value = http
            .get(format!("{node}{list}?limit=100"))
            .bearer_auth(token)
            .send()
            .await?
            .json()
            .await?;
        let mut ids: Vec<String> = page["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["id"].as_str().map(str::to_owned))
            .collect();
        while ids.len() < wanted {
            ids.push(create_item(http, node, token, create, &body(ids.len())).await?);
        }
        ids.truncate(wanted.max(1).min(ids.len()));
        Ok(ids)
    }
}

/// Prints `elapsed, requests, req/s, errors` to stderr every second until aborted.
pub(crate) fn progress_line(recorder: Arc<Recorder>, label: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let start = Instant::now();
        let mut last = 0u64;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let (requests, errors) = recorder.totals();
            eprint!(
                "\r[{label}] {:>4.0} s  {requests:>8} requests  {:>7} req/s  {errors} errors   ",
                start.elapsed().as_secs_f64(),
                requests - last
            );
            last = requests;
        }
    })
}
