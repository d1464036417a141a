//! `strata-bench rebalance`: what growing the cluster online costs its clients. In one
//! run: the `mixed` request mix at a fixed open-loop rate with no move (the baseline),
//! then a new shard added to the local cluster (`strata dev add-shard`) and
//! `strata shard rebalance` carried out under the same load. Reports rows/s copied, the
//! per-slot write pause (p50/p99/max), requests failed during the move, and p99 during
//! the move against p99 without it.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use reqwest::Client;
use serde_json::{Value, json};

use crate::load::open_loop;
use crate::recorder::Recorder;
use crate::report::{Phase, Ratio, Report};
use crate::scenarios::mix::{Mix, request};
use crate::scenarios::runner::{LoadModel, MixRun, progress_line};
use crate::target::Target;

/// The scenario's knobs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RebalanceBench {
    /// Open-loop request rate, the same with and without the move.
    pub rate: f64,
    /// Length of the no-move phase.
    pub duration: Duration,
    /// Slots moved at once.
    pub max_parallel: usize,
    /// Seeded users (their posts and tasks are what moves).
    pub users: usize,
    pub seed: u64,
}

impl RebalanceBench {
    /// Runs both phases and returns the report.
    pub async fn run(&self, target: &Target, http: &Client) -> anyhow::Result<Report> {
        let map = target
            .shard_map
            .clone()
            .context("the cluster file names no shard map")?;
        let data_dir = map
            .parent()
            .context("the shard map has no directory")?
            .to_path_buf();
        let strata = sibling_binary("strata")?;
        let mut report = Report::new(
            "rebalance",
            serde_json::to_value(self)?,
            serde_json::to_value(target)?,
        );
        let mix_run = MixRun {
            name: "rebalance".into(),
            mix: Mix::parse("mixed")?,
            load: LoadModel::Open { rate: self.rate },
            duration: self.duration,
            users: self.users,
            posts_per_user: 20,
            tasks_per_user: 20,
            seed: self.seed,
        };
        let data = Arc::new(mix_run.seed_dataset(target, http).await?);
        let nodes = Arc::new(target.nodes.clone());
        let (http2, mix, seed) = (http.clone(), Arc::new(mix_run.mix.clone()), self.seed);
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

        // Without a move.
        let quiet = Arc::new(Recorder::new());
        let progress = progress_line(Arc::clone(&quiet), "no move".into());
        open_loop(Arc::clone(&quiet), self.rate, self.duration, &make).await;
        progress.abort();
        eprintln!();
        report
            .phases
            .push(phase("without a move", self.rate, self.duration, &quiet));

        // Add a shard, then rebalance under the same load until it finishes.
        let added = run_json(
            Command::new(&strata)
                .args(["dev", "add-shard", "--json", "--data-dir"])
                .arg(&data_dir),
        )
        .context("strata dev add-shard")?;
        eprintln!("added shard {}", added["id"]);
        let moving = Arc::new(Recorder::new());
        let progress = progress_line(Arc::clone(&moving), "rebalancing".into());
        let started = Instant::now();
        let max_parallel = self.max_parallel.to_string();
        let mut rebalance = tokio::task::spawn_blocking(move || {
            run_json(
                Command::new(&strata)
                    .args([
                        "shard",
                        "rebalance",
                        "--json",
                        "--max-parallel",
                        &max_parallel,
                    ])
                    .env("STRATA_SHARD_MAP", &map),
            )
        });
        let moved = tokio::select! {
            () = open_loop(Arc::clone(&moving), self.rate, Duration::from_secs(24 * 3600), &make) => {
                anyhow::bail!("the load ended before the rebalance")
            }
            done = &mut rebalance => done.context("the rebalance task")?.context("strata shard rebalance")?,
        };
        let elapsed = started.elapsed();
        progress.abort();
        eprintln!();
        report
            .phases
            .push(phase("during the rebalance", self.rate, elapsed, &moving));

        let p99 = |r: &Recorder, d: Duration| {
            r.summarize(d)
                .iter()
                .map(|e| e.p99_ms)
                .fold(0.0f64, f64::max)
        };
        let (quiet_p99, moving_p99) = (p99(&quiet, self.duration), p99(&moving, elapsed));
        let (requests, failed) = moving.totals();
        report.baselines.insert(
            "rebalance".into(),
            json!({
                "slots_moved": moved["moves"].as_array().map_or(0, Vec::len),
                "rows_copied": moved["rows_copied"],
                "seconds": moved["seconds"],
                "rows_per_second": moved["rows_per_second"],
                "pause_ms_p50": moved["pause_ms_p50"],
                "pause_ms_p99": moved["pause_ms_p99"],
                "pause_ms_max": moved["pause_ms_max"],
                "pause_steps_p99": moved["pause_steps_p99"],
                "requests_during_move": requests,
                "failed_requests_during_move": failed,
                "p99_ms_without_move": quiet_p99,
                "p99_ms_during_move": moving_p99,
            }),
        );
        report.ratios.push(Ratio {
            target: None,
            name: "p99 during the rebalance ÷ p99 without a move (same mix and rate)".into(),
            value: if quiet_p99 > 0.0 {
                moving_p99 / quiet_p99
            } else {
                0.0
            },
            numerator: format!("{moving_p99:.2} ms"),
            denominator: format!("{quiet_p99:.2} ms"),
        });
        Ok(report)
    }
}

fn phase(name: &str, rate: f64, elapsed: Duration, recorder: &Recorder) -> Phase {
    Phase {
        name: name.into(),
        load: format!("open loop, {rate:.0} req/s, mixed"),
        duration_secs: elapsed.as_secs_f64(),
        endpoints: recorder.summarize(elapsed),
    }
}

/// Runs a `strata` command that prints JSON, and parses what it printed.
fn run_json(command: &mut Command) -> anyhow::Result<Value> {
    let output = command.stdin(Stdio::null()).output()?;
    anyhow::ensure!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(serde_json::from_slice(&output.stdout)?)
}

/// A workspace binary next to this one (`target/<profile>/`).
fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe
        .parent()
        .context("the bench binary has no directory")?
        .join(name);
    anyhow::ensure!(
        path.is_file(),
        "{} is not built (cargo build --bins)",
        path.display()
    );
    Ok(path)
}
