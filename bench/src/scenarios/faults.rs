//! `strata-bench faults`: the fault campaign against the local cluster. Steady load runs
//! through the load balancer (each worker reads its profile and its task list and
//! creates a task, recording every acknowledged task) while one fault at a time breaks
//! a process: kill -9 a replica; kill -9 a Redis master; kill -9 a node; SIGTERM a node
//! (a rolling restart); SIGSTOP a primary for 5 s; and last, kill -9 a primary and
//! promote its replica with `pg_ctl promote`. For each: requests sent and failed (by
//! status), p99 during the fault, how long after the fault errors went on, and for the
//! primary kill, every acknowledged write of that shard read back afterwards.
//!
//! The last fault leaves its shard on the promoted replica, without a replica: recreate
//! the local cluster before other benchmarks.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use reqwest::Client;
use serde_json::{Value, json};
use strata_router::{Placement, ShardId, route_hash};
use strata_sandbox::Cluster;

use crate::recorder::{Outcome, Recorder};
use crate::report::{Phase, Report};

/// The scenario's knobs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FaultsBench {
    /// Load workers (one user each).
    pub workers: usize,
    /// Load before and after each fault.
    pub settle: Duration,
}

/// One fault: breaks something in the cluster and returns once it is over (or repaired).
type Fault = Box<dyn Fn(&Cluster) -> anyhow::Result<()> + Send + Sync>;

/// What the load saw around one fault.
struct Watch {
    recorder: Recorder,
    /// When the fault struck, and when each failure happened.
    failures: Mutex<Vec<Instant>>,
    /// Acknowledged tasks: the owner's index, the task id and when it was acknowledged.
    acked: Mutex<Vec<(usize, String, Instant)>>,
    /// The first few requests that got no answer, and why.
    unanswered: Mutex<Vec<String>>,
}

impl Watch {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            recorder: Recorder::new(),
            failures: Mutex::new(Vec::new()),
            acked: Mutex::new(Vec::new()),
            unanswered: Mutex::new(Vec::new()),
        })
    }

    fn no_answer(&self, endpoint: &str, error: &reqwest::Error) {
        let mut unanswered = self.unanswered.lock().unwrap();
        if unanswered.len() < 5 {
            let mut cause = error.to_string();
            let mut source = std::error::Error::source(error);
            while let Some(inner) = source {
                cause = format!("{cause}: {inner}");
                source = inner.source();
            }
            unanswered.push(format!("{endpoint}: {cause}"));
        }
    }

    fn record(&self, endpoint: &'static str, status: Option<u16>, took: Duration) {
        self.recorder.record(Outcome { endpoint, status }, took);
        if !status.is_some_and(|s| (200..400).contains(&s)) {
            self.failures.lock().unwrap().push(Instant::now());
        }
    }
}

/// A bench user.
#[derive(Clone)]
struct User {
    id: String,
    token: String,
}

impl FaultsBench {
    /// Runs every fault in turn against the local cluster in `data_dir`.
    pub async fn run(&self, data_dir: &Path, http: &Client) -> anyhow::Result<Report> {
        let cluster = Cluster::open(data_dir).context("open the local cluster")?;
        let lb = cluster
            .load_balancer
            .as_ref()
            .context("the local cluster has no load balancer")?
            .url();
        let mut report = Report::new(
            "faults",
            serde_json::to_value(self)?,
            json!({"load_balancer": lb, "data_dir": data_dir}),
        );
        let users = sign_up(http, &lb, self.workers).await?;
        let shards: Vec<ShardId> = cluster
            .spec
            .shard_map
            .shards
            .iter()
            .map(|s| s.id.clone())
            .collect();
        let (first, last) = (
            shards.first().context("no shard")?.clone(),
            shards.last().context("no shard")?.clone(),
        );
        let mut figures = serde_json::Map::new();

        let faults: Vec<(&str, Fault)> = vec![
            (
                "kill -9 a replica",
                Box::new(move |c: &Cluster| {
                    let replica = c.pg(&last, 1);
                    replica.kill();
                    std::thread::sleep(Duration::from_secs(3));
                    replica.start()?;
                    Ok(())
                }),
            ),
            (
                "kill -9 a Redis master",
                Box::new(|c: &Cluster| {
                    let redis = c.redis.as_ref().context("no Redis")?;
                    let master = *redis.masters().first().context("no Redis master")?;
                    redis.kill_server(master);
                    let masters = redis.ports.len() / (1 + redis.replicas);
                    wait_for(
                        "a Redis replica to take over",
                        Duration::from_secs(30),
                        || redis.healthy() && redis.masters().len() == masters,
                    )?;
                    redis.start()?;
                    Ok(())
                }),
            ),
            (
                "kill -9 a node",
                Box::new(|c: &Cluster| {
                    let node = c.nodes.last().context("no node")?;
                    node.kill();
                    std::thread::sleep(Duration::from_secs(2));
                    node.start()?;
                    Ok(())
                }),
            ),
            (
                "SIGTERM a node (rolling restart)",
                Box::new(|c: &Cluster| {
                    let node = c.nodes.last().context("no node")?;
                    node.stop();
                    node.start()?;
                    Ok(())
                }),
            ),
            (
                "SIGSTOP a primary for 5 s",
                Box::new(move |c: &Cluster| {
                    let primary = c.pg(&shards[shards.len() - 1], 0);
                    primary.pause();
                    std::thread::sleep(Duration::from_secs(5));
                    primary.resume();
                    Ok(())
                }),
            ),
        ];
        for (name, fault) in &faults {
            let watch = Watch::new();
            let (elapsed, struck, healed) = self
                .under_load(http, &lb, &users, &watch, || fault(&cluster))
                .await?;
            figures.insert(
                (*name).into(),
                summary(&watch, elapsed, struck, healed, None),
            );
            report.phases.push(phase(name, &watch, elapsed));
            eprintln!("{name}: {}", figures[*name]);
        }

        // Last: the first shard's primary dies and its replica is promoted.
        let placement = Placement::from_map(&cluster.spec.shard_map);
        let on_first: Vec<usize> = (0..users.len())
            .filter(|&i| placement.shard_of(route_hash(&users[i].id)) == &first)
            .collect();
        let watch = Watch::new();
        let primary = cluster.pg(&first, 0);
        let replica = cluster.pg(&first, 1);
        let promoted_at = Arc::new(Mutex::new(None));
        let promoted = Arc::clone(&promoted_at);
        let (elapsed, struck, healed) = self
            .under_load(http, &lb, &users, &watch, || {
                primary.kill();
                std::thread::sleep(Duration::from_secs(1));
                replica.promote()?;
                *promoted.lock().unwrap() = Some(Instant::now());
                Ok(())
            })
            .await?;
        let promoted_at = (*promoted_at.lock().unwrap()).context("the replica was promoted")?;
        let acked: Vec<(usize, String, Instant)> = watch
            .acked
            .lock()
            .unwrap()
            .iter()
            .filter(|(owner, _, _)| on_first.contains(owner))
            .cloned()
            .collect();
        // Writes to the shard resumed at its first acknowledged write after the promotion.
        let resumed = acked
            .iter()
            .map(|(_, _, at)| *at)
            .filter(|at| *at > promoted_at)
            .min()
            .map(|at| at.duration_since(promoted_at).as_secs_f64());
        let mut lost = Vec::new();
        for (owner, id, _) in &acked {
            let status = http
                .get(format!("{lb}/v1/tasks/{id}"))
                .bearer_auth(&users[*owner].token)
                .send()
                .await?
                .status();
            if status.as_u16() == 404 {
                lost.push(id.clone());
            }
        }
        let name = "kill -9 a primary, then pg_ctl promote its replica";
        let extra = json!({
            "shard": first.as_str(),
            "synchronous": cluster.spec.shard_map.shards[0].synchronous,
            "acknowledged_writes_to_the_shard": acked.len(),
            "acknowledged_writes_lost": lost.len(),
            "lost_ids": lost,
            "seconds_from_promotion_to_a_write": resumed,
        });
        figures.insert(
            name.into(),
            summary(&watch, elapsed, struck, healed, Some(extra)),
        );
        report.phases.push(phase(name, &watch, elapsed));
        eprintln!("{name}: {}", figures[name]);
        report
            .baselines
            .insert("faults".into(), Value::Object(figures));
        Ok(report)
    }

    /// Runs the load for `settle`, strikes, runs on for `settle` after the fault's
    /// action returns, and returns the elapsed time, when it struck and when it healed.
    async fn under_load(
        &self,
        http: &Client,
        lb: &str,
        users: &[User],
        watch: &Arc<Watch>,
        fault: impl FnOnce() -> anyhow::Result<()>,
    ) -> anyhow::Result<(Duration, Instant, Instant)> {
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = users
            .iter()
            .enumerate()
            .map(|(index, user)| {
                let (http, lb, user) = (http.clone(), lb.to_owned(), user.clone());
                let (stop, watch) = (Arc::clone(&stop), Arc::clone(watch));
                tokio::spawn(async move { worker(index, http, lb, user, stop, watch).await })
            })
            .collect();
        let started = Instant::now();
        tokio::time::sleep(self.settle).await;
        let struck = Instant::now();
        tokio::task::block_in_place(fault)?;
        let healed = Instant::now();
        tokio::time::sleep(self.settle).await;
        stop.store(true, Ordering::Relaxed);
        for worker in workers {
            let _ = worker.await;
        }
        Ok((started.elapsed(), struck, healed))
    }
}

async fn worker(
    index: usize,
    http: Client,
    lb: String,
    user: User,
    stop: Arc<AtomicBool>,
    watch: Arc<Watch>,
) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        for (endpoint, path) in [
            ("GET /v1/me", "/v1/me"),
            ("GET /v1/tasks", "/v1/tasks?limit=5"),
        ] {
            let started = Instant::now();
            let answer = http
                .get(format!("{lb}{path}"))
                .bearer_auth(&user.token)
                .send()
                .await;
            if let Err(e) = &answer {
                watch.no_answer(endpoint, e);
            }
            let status = answer.ok().map(|r| r.status().as_u16());
            watch.record(endpoint, status, started.elapsed());
        }
        let started = Instant::now();
        let created = http
            .post(format!("{lb}/v1/tasks"))
            .bearer_auth(&user.token)
            .json(&json!({"title": format!("fault load {index}-{n}")}))
            .send()
            .await;
        if let Err(e) = &created {
            watch.no_answer("POST /v1/tasks", e);
        }
        let status = created.as_ref().ok().map(|r| r.status().as_u16());
        watch.record("POST /v1/tasks", status, started.elapsed());
        let body = match (status, created) {
            (Some(201), Ok(response)) => response.json::<Value>().await.ok(),
            _ => None,
        };
        if let Some(id) = body.and_then(|b| b["id"].as_str().map(str::to_owned)) {
            watch
                .acked
                .lock()
                .unwrap()
                .push((index, id, Instant::now()));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The figures of one fault.
fn summary(
    watch: &Watch,
    elapsed: Duration,
    struck: Instant,
    healed: Instant,
    extra: Option<Value>,
) -> Value {
    let endpoints = watch.recorder.summarize(elapsed);
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    for e in &endpoints {
        for (status, n) in &e.statuses {
            *statuses.entry(status.clone()).or_default() += n;
        }
    }
    let (sent, failed) = watch.recorder.totals();
    let last_failure = watch.failures.lock().unwrap().iter().max().copied();
    let errors_for = last_failure
        .filter(|at| *at >= struck)
        .map_or(0.0, |at| at.duration_since(struck).as_secs_f64());
    let mut figures = json!({
        "requests": sent,
        "failed": failed,
        "failed_percent": if sent > 0 { failed as f64 * 100.0 / sent as f64 } else { 0.0 },
        "statuses": statuses,
        "p99_ms": endpoints.iter().map(|e| e.p99_ms).fold(0.0f64, f64::max),
        "seconds_from_fault_to_last_error": errors_for,
        "fault_seconds": healed.duration_since(struck).as_secs_f64(),
        "unanswered_samples": *watch.unanswered.lock().unwrap(),
    });
    if let (Some(Value::Object(more)), Some(map)) = (extra, figures.as_object_mut()) {
        map.extend(more);
    }
    figures
}

fn phase(name: &str, watch: &Watch, elapsed: Duration) -> Phase {
    Phase {
        name: name.into(),
        load: "closed loop through the load balancer: me, task list, task create".into(),
        duration_secs: elapsed.as_secs_f64(),
        endpoints: watch.recorder.summarize(elapsed),
    }
}

async fn sign_up(http: &Client, lb: &str, n: usize) -> anyhow::Result<Vec<User>> {
    let nonce: u32 = rand::random();
    let mut users = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("fault{nonce:x}u{i}");
        let body: Value = http
            .post(format!("{lb}/v1/auth/signup"))
            .json(&json!({"username": name, "email": format!("{name}@example.com"), "password": "correct horse battery staple"}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        users.push(User {
            id: body["user"]["id"]
                .as_str()
                .context("signup answered no user id")?
                .to_owned(),
            token: body["access_token"]
                .as_str()
                .context("signup answered no token")?
                .to_owned(),
        });
    }
    Ok(users)
}

fn wait_for(what: &str, deadline: Duration, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let started = Instant::now();
    while !done() {
        anyhow::ensure!(
            started.elapsed() < deadline,
            "{what} did not happen within {deadline:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}
