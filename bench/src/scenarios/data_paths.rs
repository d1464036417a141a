//! `data-paths`: every hot path of a node against what the same machine does without
//! Strata, in one run, reported as ratios (bench/README.md has the figures):
//!
//! | path | baseline | goal |
//! |---|---|---|
//! | `GET /v1/posts/{id}`, the owner's private post (auth, router, replica) | the bare reference server ([`crate::reference`]): one Redis round trip, one prepared read | ≥ 1.0 |
//! | `GET /v1/posts/{id}`, a public post another user reads (from the cache) | the node's own `/healthz` | ≥ 0.5 |
//! | `GET /v1/tasks?limit=20` | the reference server's same query | ≥ 0.8 |
//! | the private read through the kernel balancer | the same load sent straight to the nodes, spread evenly | ≥ 0.8 |
//! | the private read through HAProxy | the same | (reported) |
//! | `POST /v1/tasks`, the median of the turns' ratios | pgbench doing the same inserts, feed row and WAL-position query on the same primary, in the turn beside it | ≥ 0.7 |
//! | the same, pooled over all turns | the same | (reported) |
//! | write p99 at half the maximum rate, the median of the turns' ratios | pgbench's p99 at half its maximum, in the turn beside it | ≤ 2.0 |
//! | the same, pooled over all turns | the same | (reported) |
//! | read and write with 16 shards on 2 Postgres servers, the median of the turns' ratios | the same with 2 shards in the same turn ([`ShardScaling`]) | ≥ 0.9 |
//! | the same, pooled over all turns; read and write with 16 shards on 16 servers | the same with 2 shards | (reported) |
//! | the private read with Prometheus and the exporters running | the same with them paused ([`MonitoringSwitch`]) | (reported) |
//! | the machine's CPU per request through each balancer, and HAProxy's share | the same straight at the nodes ([`CpuMeter`]) | (reported) |
//! | the node's and Postgres' CPU per read and write in each 16-shard layout | the same with 2 shards | (reported) |
//! | pgbench sending the node's read and write statements to the primaries, each 16-shard layout | the same with 2 shards ([`crate::scenarios::shard_floor`]): what Postgres alone keeps | (reported: the floor) |
//! | the node's and Postgres' context switches per read and write, each 16-shard layout; the hypervisor's steal during each layout's turns | the same with 2 shards; the machine's core-seconds | (reported) |
//!
//! Each maximum is a closed loop at `--connections`; the half-rate phases are open loops
//! (pgbench throttled with `-R`), so queueing from the schedule counts in the latency.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Client, Method};
use serde_json::json;
use strata_router::{Placement, ShardMap, route_hash};

use crate::cpu_meter::{CpuMeter, CpuTimes, metered, micros, micros_per_request};
use crate::load::{closed_loop, open_loop};
use crate::monitoring_switch::MonitoringSwitch;
use crate::pgbench::{self, PgbenchRun};
use crate::recorder::{Outcome, Recorder};
use crate::reference::ReferenceProcess;
use crate::report::{Goal, Phase, Ratio, Report, median_turn_ratio};
use crate::scenarios::shard_scaling::ShardScaling;
use crate::scenarios::{client_ip, create_item, post_task, send, sign_in};
use crate::target::Target;

/// A read through a balancer, the same straight at the nodes, and the CPU of each.
type BalancedPair = (Phase, Phase, Option<(CpuTimes, CpuTimes)>);

/// Knobs of the scenario.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DataPaths {
    pub posts: usize,
    pub connections: usize,
    pub duration: Duration,
    pub seed: u64,
    /// Shard counts compared by [`ShardScaling`] (empty: skipped).
    pub shard_counts: Vec<usize>,
}

/// Turns of each side of a paired measurement. This machine's rate drifts by ±10 % over
/// seconds: many short turns, in the order A B B A A B ..., put both sides through the
/// same drift.
const ROUNDS: u32 = 6;

/// The node's write and pgbench's inserts, measured in alternating turns
/// ([`DataPaths::pgbench_pair`]).
struct PgbenchPair {
    /// The node's write over all its turns.
    node: Phase,
    /// pgbench over all its turns.
    pgbench: PgbenchRun,
    /// Each of the node's turns, in turn order.
    node_turns: Vec<TurnFigures>,
    /// Each of pgbench's turns, in turn order.
    pgbench_turns: Vec<PgbenchRun>,
}

impl PgbenchPair {
    /// The median, lowest and highest of the turns' ratios of the node's figure to
    /// pgbench's (`node` and `pgbench` pick the figure), turn by turn.
    fn median_turn_ratio(
        &self,
        node: impl Fn(&TurnFigures) -> f64,
        pgbench: impl Fn(&PgbenchRun) -> f64,
    ) -> Option<(f64, f64, f64)> {
        let nodes: Vec<f64> = self.node_turns.iter().map(node).collect();
        let pgbenches: Vec<f64> = self.pgbench_turns.iter().map(pgbench).collect();
        median_turn_ratio(&nodes, &pgbenches)
    }
}

/// The load both sides of a [`PgbenchPair`] run at.
#[derive(Clone, Copy)]
enum PairLoad {
    /// Each at its maximum: the node in a closed loop at `--connections`, pgbench
    /// unthrottled.
    Max,
    /// Each at half its maximum: the node in an open loop at `node_rate`, pgbench
    /// throttled to `pgbench_rate`.
    Half { node_rate: f64, pgbench_rate: f64 },
}

/// One of the node's turns: answered requests per second, and the p99 (ms).
struct TurnFigures {
    rate: f64,
    p99_ms: f64,
}

impl TurnFigures {
    fn of(recorder: &Recorder, turn: Duration) -> Self {
        Self {
            rate: recorder.answered() as f64 / turn.as_secs_f64(),
            p99_ms: recorder
                .summarize(turn)
                .first()
                .map_or(f64::NAN, |e| e.p99_ms),
        }
    }
}

/// Public posts seeded for the cached read.
const PUBLIC_POSTS: usize = 100;

/// Tasks the list phases page through (at least one full page).
const LIST_TASKS: usize = 40;

/// A GET load spreading over `urls` with one token.
fn get_each(
    http: &Client,
    endpoint: &'static str,
    urls: Vec<String>,
    token: Option<String>,
) -> impl Fn(u64) -> std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + Send>>
+ Send
+ Sync
+ Clone
+ 'static {
    let (http, urls, token) = (http.clone(), Arc::new(urls), Arc::new(token));
    move |i: u64| {
        let url = urls[(i as usize) % urls.len()].clone();
        let (http, token) = (http.clone(), Arc::clone(&token));
        Box::pin(async move {
            send(
                &http,
                endpoint,
                Method::GET,
                url,
                token.as_deref(),
                None,
                None,
            )
            .await
        })
    }
}

/// `GET {base}{path}` for each path, the bases taken in turn.
fn urls(bases: &[String], paths: &[String]) -> Vec<String> {
    (0..paths.len().max(bases.len()))
        .map(|i| {
            let path = &paths[(i.wrapping_mul(7_919)) % paths.len()];
            format!("{}{path}", bases[i % bases.len()])
        })
        .collect()
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
        let (token, user_id) = self.bench_user(http, &node, "bench_data", 900_000).await?;
        let (reader_token, _) = self
            .bench_user(http, &node, "bench_reader", 900_001)
            .await?;
        let (primary, replica) = self.hosts_of(target, &user_id)?;
        let (private_ids, public_ids) = self.seed_posts(http, &node, &token, &user_id).await?;
        self.seed_tasks(http, &node, &token).await?;
        eprintln!(
            "bench user {user_id}: primary {primary}, replica {replica}, {} private and {} public posts",
            private_ids.len(),
            public_ids.len()
        );
        let reference_token = format!("reference-{}", self.seed);
        let reference = ReferenceProcess::start(
            &replica,
            &target.redis,
            &[(reference_token.clone(), user_id.clone())],
            self.connections,
            strata_sandbox::nodes::worker_threads_per_node(target.nodes.len()),
        )
        .await?;

        let post_paths = |ids: &[String]| -> Vec<String> {
            ids.iter().map(|id| format!("/v1/posts/{id}")).collect()
        };
        let private_paths = post_paths(&private_ids);
        let one = |base: &str| vec![base.to_owned()];

        let read = get_each(
            http,
            "GET /v1/posts/{id}",
            urls(&one(&node), &private_paths),
            Some(token.clone()),
        );
        let reference_paths: Vec<String> = private_ids
            .iter()
            .map(|id| format!("/posts/{id}"))
            .collect();
        let reference_read = get_each(
            http,
            "reference GET /posts/{id}",
            urls(&one(&reference.url), &reference_paths),
            Some(reference_token.clone()),
        );
        let cached = get_each(
            http,
            "GET /v1/posts/{id} (public, cached)",
            urls(&one(&node), &post_paths(&public_ids)),
            Some(reader_token.clone()),
        );
        let healthz = get_each(
            http,
            "GET /healthz",
            urls(&one(&node), &["/healthz".to_owned()]),
            None,
        );
        let list = get_each(
            http,
            "GET /v1/tasks?limit=20",
            urls(&one(&node), &["/v1/tasks?limit=20".to_owned()]),
            Some(token.clone()),
        );
        let reference_list = get_each(
            http,
            "reference GET /tasks?limit=20",
            urls(&one(&reference.url), &["/tasks?limit=20".to_owned()]),
            Some(reference_token.clone()),
        );

        eprintln!(
            "read paths: closed loop, {} connections ...",
            self.connections
        );
        let (read_max, reference_read_max) = self
            .closed_pair(
                (read.clone(), "read max (closed loop)"),
                (reference_read, "reference read max (closed loop)"),
            )
            .await;
        let (cached_max, healthz_max) = self
            .closed_pair(
                (cached, "cached public read max (closed loop)"),
                (healthz, "healthz max (closed loop)"),
            )
            .await;
        let (list_max, reference_list_max) = self
            .closed_pair(
                (list, "task list max (closed loop)"),
                (reference_list, "reference task list max (closed loop)"),
            )
            .await;
        drop(reference);
        let read_through = |balancer: &str| {
            get_each(
                http,
                "GET /v1/posts/{id}",
                urls(&one(balancer), &private_paths),
                Some(token.clone()),
            )
        };
        let read_straight = get_each(
            http,
            "GET /v1/posts/{id}",
            urls(&target.nodes, &private_paths),
            Some(token.clone()),
        );
        let meter = target.data_dir.as_deref().and_then(CpuMeter::of_balancer);
        let mut balanced = None;
        if let Some(balancer) = &target.load_balancer {
            eprintln!("load balancer: through it, then straight at the nodes ...");
            let pair = self
                .through_and_straight(
                    (read_through(balancer), "read through the load balancer"),
                    (read_straight.clone(), "read straight at every node"),
                    meter.as_ref(),
                )
                .await;
            balanced = Some(pair);
        }
        let mut kernel_balanced = None;
        if let Some(balancer) = &target.kernel_balancer {
            eprintln!("kernel balancer: through it, then straight at the nodes ...");
            let pair = self
                .through_and_straight(
                    (read_through(balancer), "read through the kernel balancer"),
                    (
                        read_straight.clone(),
                        "read straight at every node, the kernel balancer's baseline",
                    ),
                    meter.as_ref(),
                )
                .await;
            kernel_balanced = Some(pair);
        }
        let pg_read_max = self.pgbench_select(&primary, &replica, None, work_dir)?;
        let read_rate = read_max.ok_rate() / 2.0;
        eprintln!("read path: open loop at {read_rate:.0} req/s ...");
        let read_half = self
            .open(
                read.clone(),
                read_rate,
                "read at half the maximum (open loop)",
            )
            .await;

        let write = {
            let (http, node, token) = (http.clone(), node.clone(), Arc::new(token.clone()));
            move |i: u64| {
                let url = format!("{node}/v1/tasks");
                let (http, token) = (http.clone(), Arc::clone(&token));
                async move { post_task(&http, url, &token, i).await }
            }
        };
        let monitored = match target
            .data_dir
            .as_deref()
            .and_then(MonitoringSwitch::of_cluster)
        {
            Some(switch) => {
                eprintln!("monitoring: running, then paused ...");
                let (on, off) = (|| switch.resume(), || switch.pause());
                let ((read_on, _), (read_off, _)) = self
                    .alternate(
                        (read.clone(), "read, monitoring running (closed loop)", &on),
                        (read.clone(), "read, monitoring paused (closed loop)", &off),
                        None,
                    )
                    .await;
                let ((write_on, _), (write_off, _)) = self
                    .alternate(
                        (
                            write.clone(),
                            "write, monitoring running (closed loop)",
                            &on,
                        ),
                        (
                            write.clone(),
                            "write, monitoring paused (closed loop)",
                            &off,
                        ),
                        None,
                    )
                    .await;
                switch.resume();
                Some([(read_on, read_off), (write_on, write_off)])
            }
            None => None,
        };
        eprintln!("write path: closed loop, alternating with pgbench at its maximum ...");
        let max = self
            .pgbench_pair(write.clone(), PairLoad::Max, &primary, work_dir)
            .await?;
        let pg_node_statements_max =
            self.pgbench_insert(pgbench::TASK_INSERT_AS_THE_NODE, &primary, None, work_dir)?;
        let write_rate = max.node.ok_rate() / 2.0;
        eprintln!(
            "write path: open loop at {write_rate:.0} req/s, alternating with pgbench at half its rate ..."
        );
        let half = self
            .pgbench_pair(
                write,
                PairLoad::Half {
                    node_rate: write_rate,
                    pgbench_rate: max.pgbench.tps / 2.0,
                },
                &primary,
                work_dir,
            )
            .await?;
        let write_max_turns = max.median_turn_ratio(|t| t.rate, |p| p.tps);
        let write_half_turns = half.median_turn_ratio(|t| t.p99_ms, |p| p.p99_ms);
        let (write_max, pg_write_max) = (max.node, max.pgbench);
        let (write_half, pg_write_half) = (half.node, half.pgbench);

        let scaling_bench = ShardScaling::new(
            self.shard_counts.clone(),
            self.connections,
            self.duration,
            self.seed,
        );
        let scaling = scaling_bench.run(http).await?;

        let mut ratio = |name: &str,
                         value: f64,
                         numerator: String,
                         denominator: String,
                         target: Option<Goal>| {
            report.ratios.push(Ratio {
                name: name.into(),
                value,
                numerator,
                denominator,
                target,
            })
        };
        let rates = |a: &Phase, b: &Phase| {
            (
                a.ok_rate() / b.ok_rate(),
                format!("{:.0} req/s", a.ok_rate()),
                format!("{:.0} req/s", b.ok_rate()),
            )
        };
        let (value, n, d) = rates(&read_max, &reference_read_max);
        ratio(
            "private GET /v1/posts/{id} ÷ bare reference (one Redis round trip, one prepared read, same replica)",
            value,
            n,
            d,
            Some(Goal::AtLeast(1.0)),
        );
        let (value, n, d) = rates(&cached_max, &healthz_max);
        ratio(
            "cached public GET /v1/posts/{id} ÷ the node's /healthz",
            value,
            n,
            d,
            Some(Goal::AtLeast(0.5)),
        );
        let (value, n, d) = rates(&list_max, &reference_list_max);
        ratio(
            "GET /v1/tasks?limit=20 ÷ bare reference (same query, same replica)",
            value,
            n,
            d,
            Some(Goal::AtLeast(0.8)),
        );
        if let Some((through, straight, cpu)) = &balanced {
            let (value, n, d) = rates(through, straight);
            ratio(
                "private read through HAProxy ÷ the same load straight at the nodes (HAProxy shares the cores it balances)",
                value,
                n,
                d,
                None,
            );
            if let Some(cpu) = cpu {
                let (through_us, straight_us) = machine_micros(through, straight, cpu);
                let balancer_us = micros_per_request(cpu.0.process_secs, through.requests());
                ratio(
                    "machine CPU per private read: straight at the nodes ÷ through HAProxy (the rate ratio of a saturated machine)",
                    straight_us / through_us,
                    micros(straight_us),
                    micros(through_us),
                    None,
                );
                ratio(
                    "HAProxy's own CPU per private read ÷ the machine's per read through it",
                    balancer_us / through_us,
                    micros(balancer_us),
                    micros(through_us),
                    None,
                );
                ratio(
                    "best through ÷ straight HAProxy's CPU alone allows: straight cost ÷ (straight cost + HAProxy's)",
                    straight_us / (straight_us + balancer_us),
                    micros(straight_us),
                    micros(straight_us + balancer_us),
                    None,
                );
            }
        }
        if let Some((through, straight, cpu)) = &kernel_balanced {
            let (value, n, d) = rates(through, straight);
            ratio(
                "private read through the kernel balancer ÷ the same load straight at the nodes",
                value,
                n,
                d,
                Some(Goal::AtLeast(0.8)),
            );
            if let Some(cpu) = cpu {
                let (through_us, straight_us) = machine_micros(through, straight, cpu);
                ratio(
                    "machine CPU per private read: straight at the nodes ÷ through the kernel balancer",
                    straight_us / through_us,
                    micros(straight_us),
                    micros(through_us),
                    None,
                );
            }
        }
        for (path, (on, off)) in ["private read", "POST /v1/tasks"]
            .into_iter()
            .zip(monitored.iter().flatten())
        {
            let (value, n, d) = rates(on, off);
            ratio(
                &format!(
                    "{path} with Prometheus and the exporters scraping ÷ with them paused (what monitoring costs)"
                ),
                value,
                n,
                d,
                None,
            );
        }
        if let Some((median, lowest, highest)) = write_max_turns {
            ratio(
                &format!(
                    "POST /v1/tasks ÷ pgbench, same inserts + WAL position in a BEGIN/COMMIT transaction (same primary, same concurrency), the median of the {ROUNDS} turns' ratios (each turn's rate ÷ pgbench's in the turn beside it)"
                ),
                median,
                "each turn's rate".into(),
                format!("pgbench's beside it (turns' ratios {lowest:.2}–{highest:.2})"),
                Some(Goal::AtLeast(0.7)),
            );
        }
        ratio(
            "POST /v1/tasks ÷ pgbench, same inserts + WAL position in a BEGIN/COMMIT transaction (same primary, same concurrency)",
            write_max.ok_rate() / pg_write_max.tps,
            format!("{:.0} req/s", write_max.ok_rate()),
            format!("{:.0} tps", pg_write_max.tps),
            None,
        );
        ratio(
            "POST /v1/tasks ÷ pgbench sending the node's own statements, pipelined as it does (one round trip: the floor)",
            write_max.ok_rate() / pg_node_statements_max.tps,
            format!("{:.0} req/s", write_max.ok_rate()),
            format!("{:.0} tps", pg_node_statements_max.tps),
            None,
        );
        if let Some((median, lowest, highest)) = write_half_turns {
            ratio(
                &format!(
                    "write p99 at half the maximum rate: HTTP ÷ pgbench, the median of the {ROUNDS} turns' ratios (each turn's p99 ÷ pgbench's in the turn beside it)"
                ),
                median,
                "each turn's p99".into(),
                format!("pgbench's beside it (turns' ratios {lowest:.2}–{highest:.2})"),
                Some(Goal::AtMost(2.0)),
            );
        }
        ratio(
            "write p99 at half the maximum rate: HTTP ÷ pgbench",
            write_half.p99_ms() / pg_write_half.p99_ms,
            format!("{:.2} ms", write_half.p99_ms()),
            format!("{:.2} ms", pg_write_half.p99_ms),
            None,
        );
        ratio(
            "private GET /v1/posts/{id} ÷ pgbench -S (same replica; for scale)",
            read_max.ok_rate() / pg_read_max.tps,
            format!("{:.0} req/s", read_max.ok_rate()),
            format!("{:.0} tps", pg_read_max.tps),
            None,
        );
        ratio(
            "write p50 at half the maximum rate: HTTP ÷ pgbench",
            write_half.p50_ms() / pg_write_half.p50_ms,
            format!("{:.2} ms", write_half.p50_ms()),
            format!("{:.2} ms", pg_write_half.p50_ms),
            None,
        );
        report.ratios.extend(scaling_bench.ratios(&scaling));
        for run in [
            pg_read_max,
            pg_write_max,
            pg_node_statements_max,
            pg_write_half,
        ] {
            let key = format!(
                "pgbench {} {}",
                run.script,
                run.rate_limit
                    .map(|r| format!("at {r:.0} tps"))
                    .unwrap_or_else(|| "max".into())
            );
            report.baselines.insert(key, serde_json::to_value(run)?);
        }
        report.phases = vec![
            read_max,
            reference_read_max,
            cached_max,
            healthz_max,
            list_max,
            reference_list_max,
        ];
        for (through, straight, _) in balanced.into_iter().chain(kernel_balanced) {
            report.phases.extend([through, straight]);
        }
        for (on, off) in monitored.into_iter().flatten() {
            report.phases.extend([on, off]);
        }
        report.phases.extend([read_half, write_max, write_half]);
        report.phases.extend(ShardScaling::phases(scaling));
        Ok(report)
    }

    /// Two loads measured alternately ([`ROUNDS`] turns each, `--duration` in all per
    /// load), so a drift of the machine during the run (a background merge, a
    /// checkpoint) weighs on both sides of their ratio alike.
    async fn closed_pair<A, FA, B, FB>(
        &self,
        (a, name_a): (A, &str),
        (b, name_b): (B, &str),
    ) -> (Phase, Phase)
    where
        A: Fn(u64) -> FA + Send + Sync + Clone + 'static,
        FA: std::future::Future<Output = Outcome> + Send + 'static,
        B: Fn(u64) -> FB + Send + Sync + Clone + 'static,
        FB: std::future::Future<Output = Outcome> + Send + 'static,
    {
        let ((a, _), (b, _)) = self
            .alternate((a, name_a, &|| ()), (b, name_b, &|| ()), None)
            .await;
        (a, b)
    }

    /// [`Self::closed_pair`], with a step run before each turn of each side (to switch
    /// something on or off for it), also adding up the CPU `meter` reads over each
    /// side's turns (zero without a meter).
    async fn alternate<A, FA, B, FB>(
        &self,
        (a, name_a, before_a): (A, &str, &dyn Fn()),
        (b, name_b, before_b): (B, &str, &dyn Fn()),
        meter: Option<&CpuMeter>,
    ) -> ((Phase, CpuTimes), (Phase, CpuTimes))
    where
        A: Fn(u64) -> FA + Send + Sync + Clone + 'static,
        FA: std::future::Future<Output = Outcome> + Send + 'static,
        B: Fn(u64) -> FB + Send + Sync + Clone + 'static,
        FB: std::future::Future<Output = Outcome> + Send + 'static,
    {
        let (recorder_a, recorder_b) = (Arc::new(Recorder::new()), Arc::new(Recorder::new()));
        let (mut cpu_a, mut cpu_b) = (CpuTimes::default(), CpuTimes::default());
        let turn = self.duration / ROUNDS;
        for round in 0..ROUNDS {
            // A B, then B A: the order reversed every round.
            let a_first = round % 2 == 0;
            if a_first {
                cpu_a += self.turn((&a, before_a, &recorder_a), turn, meter).await;
            }
            cpu_b += self.turn((&b, before_b, &recorder_b), turn, meter).await;
            if !a_first {
                cpu_a += self.turn((&a, before_a, &recorder_a), turn, meter).await;
            }
        }
        let phase = |name: &str, recorder: &Recorder| Phase {
            name: name.into(),
            load: format!(
                "closed loop, {} connections, {ROUNDS} turns alternating with its baseline, the order reversed every round",
                self.connections
            ),
            duration_secs: (turn * ROUNDS).as_secs_f64(),
            endpoints: recorder.summarize(turn * ROUNDS),
        };
        (
            (phase(name_a, &recorder_a), cpu_a),
            (phase(name_b, &recorder_b), cpu_b),
        )
    }

    /// One closed-loop turn of `load` into `recorder` after `before`, and what `meter`
    /// read over it.
    async fn turn<L, F>(
        &self,
        (load, before, recorder): (&L, &dyn Fn(), &Arc<Recorder>),
        turn: Duration,
        meter: Option<&CpuMeter>,
    ) -> CpuTimes
    where
        L: Fn(u64) -> F + Send + Sync + Clone + 'static,
        F: std::future::Future<Output = Outcome> + Send + 'static,
    {
        before();
        let load = closed_loop(Arc::clone(recorder), self.connections, turn, load.clone());
        metered(meter, load).await
    }

    /// A read through a balancer alternated with the same read straight at the nodes:
    /// both phases, and the CPU each spent when `meter` is given.
    async fn through_and_straight<A, FA, B, FB>(
        &self,
        (through, through_name): (A, &str),
        (straight, straight_name): (B, &str),
        meter: Option<&CpuMeter>,
    ) -> BalancedPair
    where
        A: Fn(u64) -> FA + Send + Sync + Clone + 'static,
        FA: std::future::Future<Output = Outcome> + Send + 'static,
        B: Fn(u64) -> FB + Send + Sync + Clone + 'static,
        FB: std::future::Future<Output = Outcome> + Send + 'static,
    {
        let ((through, through_cpu), (straight, straight_cpu)) = self
            .alternate(
                (through, &format!("{through_name} (closed loop)"), &|| ()),
                (straight, &format!("{straight_name} (closed loop)"), &|| ()),
                meter,
            )
            .await;
        let cpu = meter.map(|_| (through_cpu, straight_cpu));
        (through, straight, cpu)
    }

    /// The node's write and pgbench's inserts, both at `load`, in [`ROUNDS`] alternating turns of whole seconds (pgbench's unit), the order
    /// reversed every round: each side pooled over its turns, and each turn's rate and
    /// p99. Run one after the other, the two sides met different states of the machine:
    /// a stall of a fraction of a second sets the p99 of whichever side it falls on (the
    /// node's p99 at half rate ranged 14–136 ms over five runs, pgbench's 27–186 ms), and
    /// the maxima drifted apart (the node's 2,439–3,461 req/s over six runs, pgbench's
    /// 3,090–4,169 tps). A turn's ratio compares the two under the same state.
    async fn pgbench_pair<F, Fut>(
        &self,
        write: F,
        load: PairLoad,
        primary: &str,
        work_dir: &Path,
    ) -> anyhow::Result<PgbenchPair>
    where
        F: Fn(u64) -> Fut + Send + Sync + Clone + 'static,
        Fut: std::future::Future<Output = Outcome> + Send + 'static,
    {
        let turn = Duration::from_secs(
            (self.duration.as_secs_f64() / f64::from(ROUNDS))
                .ceil()
                .max(1.0) as u64,
        );
        let pooled = Recorder::new();
        let mut node_turns = Vec::new();
        let mut pgbench_turns = Vec::new();
        // The script and its slot once; pgbench's rows removed once, after the last turn.
        let inserts = pgbench::TaskInserts::prepare(pgbench::TASK_INSERT, primary, work_dir)?;
        for round in 0..ROUNDS {
            for node_now in [round % 2 == 0, round % 2 == 1] {
                if node_now {
                    let recorder = Arc::new(Recorder::new());
                    match load {
                        PairLoad::Half { node_rate, .. } => {
                            open_loop(
                                Arc::clone(&recorder),
                                node_rate.max(1.0),
                                turn,
                                write.clone(),
                            )
                            .await
                        }
                        PairLoad::Max => {
                            closed_loop(
                                Arc::clone(&recorder),
                                self.connections,
                                turn,
                                write.clone(),
                            )
                            .await
                        }
                    }
                    node_turns.push(TurnFigures::of(&recorder, turn));
                    pooled.absorb(&recorder);
                } else {
                    let pgbench_rate = match load {
                        PairLoad::Half { pgbench_rate, .. } => Some(pgbench_rate),
                        PairLoad::Max => None,
                    };
                    match inserts.run(self.connections, turn, pgbench_rate) {
                        Ok(run) => pgbench_turns.push(run),
                        Err(e) => {
                            pgbench::remove_inserted_rows(primary)?;
                            return Err(e);
                        }
                    }
                }
            }
        }
        pgbench::remove_inserted_rows(primary)?;
        let total = turn * ROUNDS;
        let (name, node_load, pgbench_load) = match load {
            PairLoad::Half { node_rate, .. } => (
                "write at half the maximum (open loop)",
                format!("open loop, {node_rate:.0} req/s, one node"),
                "half its rate",
            ),
            PairLoad::Max => (
                "write max (closed loop)",
                format!("closed loop, {} connections, one node", self.connections),
                "its maximum",
            ),
        };
        let node = Phase {
            name: name.into(),
            load: format!(
                "{node_load}, {ROUNDS} turns of {} s alternating with pgbench at {pgbench_load}",
                turn.as_secs(),
            ),
            duration_secs: total.as_secs_f64(),
            endpoints: pooled.summarize(total),
        };
        let pgbench = pgbench::pooled(&pgbench_turns)
            .ok_or_else(|| anyhow::anyhow!("pgbench ran no turn"))?;
        Ok(PgbenchPair {
            node,
            pgbench,
            node_turns,
            pgbench_turns,
        })
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
        script: (&'static str, &str),
        primary: &str,
        rate: Option<f64>,
        work_dir: &Path,
    ) -> anyhow::Result<PgbenchRun> {
        pgbench::insert_task(
            script,
            primary,
            self.connections,
            self.duration,
            rate,
            work_dir,
        )
    }

    async fn bench_user(
        &self,
        http: &Client,
        node: &str,
        prefix: &str,
        client: u64,
    ) -> anyhow::Result<(String, String)> {
        let ip = client_ip(self.seed, client);
        sign_in(http, node, &format!("{prefix}_{}", self.seed), &ip).await
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

    /// The bench user's private posts (up to `--posts`) and public ones (up to
    /// [`PUBLIC_POSTS`]), creating what is missing (a second run reuses them).
    async fn seed_posts(
        &self,
        http: &Client,
        node: &str,
        token: &str,
        user_id: &str,
    ) -> anyhow::Result<(Vec<String>, Vec<String>)> {
        let (mut private, mut public) = (Vec::new(), Vec::new());
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
            for post in page["items"].as_array().into_iter().flatten() {
                let Some(id) = post["id"].as_str() else {
                    continue;
                };
                match post["visibility"].as_str() {
                    Some("public") => public.push(id.to_owned()),
                    _ => private.push(id.to_owned()),
                }
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        for (ids, wanted, visibility) in [
            (&mut private, self.posts, "private"),
            (&mut public, PUBLIC_POSTS, "public"),
        ] {
            while ids.len() < wanted {
                let body = json!({"title": format!("bench post {}", ids.len()), "body": "lorem ipsum ".repeat(40), "tags": ["bench"], "visibility": visibility});
                ids.push(create_item(http, node, token, "/v1/posts", &body).await?);
            }
            ids.truncate(wanted);
        }
        Ok((private, public))
    }

    /// At least [`LIST_TASKS`] tasks for the list phases.
    async fn seed_tasks(&self, http: &Client, node: &str, token: &str) -> anyhow::Result<()> {
        for i in 0..LIST_TASKS {
            let body = json!({"title": format!("listed task {i}"), "notes": "lorem ipsum"});
            create_item(http, node, token, "/v1/tasks", &body).await?;
        }
        Ok(())
    }
}

/// The machine's CPU per request through a balancer and straight at the nodes, from
/// the CPU each side of a [`BalancedPair`] spent.
fn machine_micros(through: &Phase, straight: &Phase, cpu: &(CpuTimes, CpuTimes)) -> (f64, f64) {
    (
        micros_per_request(cpu.0.machine_secs, through.requests()),
        micros_per_request(cpu.1.machine_secs, straight.requests()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pgbench_turn(tps: f64) -> PgbenchRun {
        PgbenchRun {
            script: "insert-task".into(),
            host: "127.0.0.1:5432".into(),
            clients: 16,
            rate_limit: None,
            transactions: tps as u64,
            tps,
            p50_ms: 1.0,
            p99_ms: 2.0,
            latencies_us: Vec::new(),
        }
    }

    #[test]
    fn a_turn_counts_answered_requests_only() {
        let recorder = Recorder::new();
        for status in [Some(201), Some(201), Some(201), Some(503), None] {
            recorder.record(
                Outcome {
                    endpoint: "POST /v1/tasks",
                    status,
                },
                Duration::from_millis(3),
            );
        }
        let turn = TurnFigures::of(&recorder, Duration::from_secs(2));
        assert_eq!(turn.rate, 1.5);
    }

    #[test]
    fn each_of_the_nodes_turns_is_held_to_pgbenchs_turn_beside_it() {
        let pair = PgbenchPair {
            node: Phase {
                name: "write max (closed loop)".into(),
                load: String::new(),
                duration_secs: 3.0,
                endpoints: Vec::new(),
            },
            pgbench: pgbench_turn(0.0),
            node_turns: [900.0, 1000.0, 3000.0]
                .map(|rate| TurnFigures { rate, p99_ms: 1.0 })
                .into(),
            pgbench_turns: [3000.0, 1000.0, 2000.0].map(pgbench_turn).into(),
        };
        // Turn by turn: 0.3, 1.0, 1.5 (the sides' means would give 0.82).
        let (median, lowest, highest) = pair.median_turn_ratio(|t| t.rate, |p| p.tps).unwrap();
        assert_eq!((median, lowest, highest), (1.0, 0.3, 1.5));
    }
}
