//! `strata-bench`: run a named scenario against a cluster and write its report.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use strata_bench::compare;
use strata_bench::pgbench;
use strata_bench::reference;
use strata_bench::report::Report;
use strata_bench::scenarios::data_paths::DataPaths;
use strata_bench::scenarios::faults::FaultsBench;
use strata_bench::scenarios::login_storm::LoginStorm;
use strata_bench::scenarios::mix::Mix;
use strata_bench::scenarios::rebalance::RebalanceBench;
use strata_bench::scenarios::runner::{LoadModel, MixRun};
use strata_bench::scenarios::search::SearchBench;
use strata_bench::scenarios::shard_scaling::ShardScaling;
use strata_bench::target::Target;

/// Strata load-bench harness.
#[derive(Parser)]
#[command(name = "strata-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// The cluster description written by `strata dev up`.
    #[arg(long, global = true, default_value = ".strata/cluster.json")]
    cluster: PathBuf,
    /// Seconds per phase.
    #[arg(long, global = true, default_value_t = 10)]
    duration: u64,
    /// Seed of the generated dataset (same seed: same users and items, reused).
    #[arg(long, global = true, default_value_t = 1)]
    seed: u64,
    /// Where the report goes.
    #[arg(long, global = true, default_value = "bench/results")]
    out: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// A request mix: `read-heavy`, `write-heavy`, `mixed`, or `op=weight,...` (see bench/README.md).
    Run {
        /// The scenario or mix.
        scenario: String,
        /// Open loop at this many requests per second (default: closed loop); with
        /// --ramp, the rate of the first step.
        #[arg(long)]
        rate: Option<f64>,
        /// Closed-loop connections (and pgbench clients for the baseline).
        #[arg(long, default_value_t = 16)]
        connections: usize,
        /// Step the open-loop rate up ×1.5 from --rate (or 50/s) until p99 or errors pass the bound.
        #[arg(long)]
        ramp: bool,
        /// The ramp's p99 bound in milliseconds.
        #[arg(long, default_value_t = 100.0)]
        p99_bound_ms: f64,
        /// Seeded users.
        #[arg(long, default_value_t = 20)]
        users: usize,
        /// Seeded posts per user.
        #[arg(long, default_value_t = 10)]
        posts_per_user: usize,
        /// Seeded tasks per user.
        #[arg(long, default_value_t = 10)]
        tasks_per_user: usize,
    },
    /// pgbench alone on the cluster's Postgres hosts (select-only on a replica, the task
    /// insert on a primary): the figures every HTTP scenario is compared with.
    Baseline {
        /// pgbench clients.
        #[arg(long, default_value_t = 16)]
        connections: usize,
    },
    /// The change between two reports, flagging regressions (exit 1 when any).
    Compare {
        old: PathBuf,
        new: PathBuf,
        /// Percent change that counts as a regression.
        #[arg(long, default_value_t = 10.0)]
        threshold: f64,
    },
    /// Read and write paths against pgbench on the same hosts (see bench/README.md).
    DataPaths {
        /// Posts to seed and read.
        #[arg(long, default_value_t = 1000)]
        posts: usize,
        /// Connections of the closed-loop (maximum rate) phases, and pgbench clients.
        #[arg(long, default_value_t = 16)]
        connections: usize,
        /// Shard counts to compare on clusters of their own (comma-separated; `none`
        /// skips it).
        #[arg(long, default_value = "2,16", value_parser = parse_shard_counts)]
        shard_counts: ShardCounts,
    },
    /// The shard-count part of `data-paths` alone: starts a cluster per layout (no local
    /// cluster needed), for repeating that comparison without the rest.
    ShardScaling {
        /// Connections of each closed loop.
        #[arg(long, default_value_t = 16)]
        connections: usize,
        /// Shard counts to compare (comma-separated).
        #[arg(long, default_value = "2,16", value_parser = parse_shard_counts)]
        shard_counts: ShardCounts,
    },
    /// Indexes a generated corpus and compares search with Postgres full-text search
    /// (see bench/README.md).
    Search {
        /// Generated posts to load and index.
        #[arg(long, default_value_t = 1_000_000)]
        posts: u64,
        /// Measured queries of each kind (term, phrase, prefix) per side.
        #[arg(long, default_value_t = 500)]
        queries: usize,
        /// Bench users owning the posts.
        #[arg(long, default_value_t = 50)]
        users: usize,
    },
    /// Adds a shard to the local cluster and rebalances under steady load; compares with
    /// the same load without a move (see bench/README.md).
    Rebalance {
        /// Open-loop request rate of the `mixed` mix, with and without the move.
        #[arg(long, default_value_t = 200.0)]
        rate: f64,
        /// Slots moved at once.
        #[arg(long, default_value_t = 4)]
        max_parallel: usize,
        /// Seeded users (20 posts and 20 tasks each).
        #[arg(long, default_value_t = 200)]
        users: usize,
    },
    /// Breaks one process of the local cluster at a time under steady load through the
    /// load balancer: replica, Redis master, node (kill and SIGTERM), a frozen primary,
    /// and last a killed primary whose replica is promoted (see bench/README.md). Leaves
    /// that shard without a replica: recreate the cluster afterwards.
    Faults {
        /// Load workers, one user each.
        #[arg(long, default_value_t = 16)]
        workers: usize,
    },
    /// The bare reference server `data-paths` starts and compares against (see
    /// `bench/src/reference.rs`); not a scenario.
    #[command(hide = true)]
    ReferenceServer {
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// `host:port` of the Postgres replica to read.
        #[arg(long)]
        replica: String,
        /// Redis Cluster seed (repeatable).
        #[arg(long = "redis", required = true)]
        redis_seeds: Vec<String>,
        /// `token=user id` session to store (repeatable).
        #[arg(long = "session")]
        sessions: Vec<String>,
        #[arg(long, default_value_t = 16)]
        pool_size: usize,
    },
    /// Floods logins and measures what it costs other requests (see bench/README.md).
    LoginStorm {
        /// Node base URLs instead of the cluster file (repeatable).
        #[arg(long)]
        url: Vec<String>,
        /// Users to seed and log in as.
        #[arg(long, default_value_t = 200)]
        users: u64,
        /// Open-loop rate of `GET /v1/me`, per second.
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        /// Closed-loop login connections during the storm.
        #[arg(long, default_value_t = 32)]
        connections: usize,
    },
}

/// Shard counts of `data-paths --shard-counts`.
#[derive(Debug, Clone)]
struct ShardCounts(Vec<usize>);

fn parse_shard_counts(raw: &str) -> Result<ShardCounts, String> {
    if raw == "none" {
        return Ok(ShardCounts(Vec::new()));
    }
    let counts = raw
        .split(',')
        .map(|n| match n.trim().parse::<usize>() {
            Ok(n) if (1..=64).contains(&n) => Ok(n),
            _ => Err(format!("{n:?} is not a shard count from 1 to 64")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ShardCounts(counts))
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strata-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    anyhow::ensure!(cli.duration > 0, "--duration must be positive");
    let duration = Duration::from_secs(cli.duration);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let report: Report = match cli.command {
        Command::ReferenceServer {
            listen,
            replica,
            redis_seeds,
            sessions,
            pool_size,
        } => {
            let sessions = sessions
                .iter()
                .map(|s| {
                    s.split_once('=')
                        .map(|(t, u)| (t.to_owned(), u.to_owned()))
                        .ok_or_else(|| anyhow::anyhow!("--session must be token=user"))
                })
                .collect::<anyhow::Result<_>>()?;
            return reference::serve(reference::ReferenceConfig {
                listen,
                replica,
                redis_seeds,
                sessions,
                pool_size,
            })
            .await;
        }
        Command::Compare {
            old,
            new,
            threshold,
        } => {
            let (old, new) = (Report::read(&old)?, Report::read(&new)?);
            let changes = compare::compare(&old, &new, threshold / 100.0);
            print!("{}", compare::markdown(&changes, threshold / 100.0));
            print!("{}", compare::ratios_markdown(&old, &new));
            let regressions = changes.iter().filter(|c| c.regression).count();
            anyhow::ensure!(
                regressions == 0,
                "{regressions} regression(s) past {threshold} %"
            );
            return Ok(());
        }
        Command::Run {
            scenario,
            rate,
            connections,
            ramp,
            p99_bound_ms,
            users,
            posts_per_user,
            tasks_per_user,
        } => {
            let mix = Mix::parse(&scenario)?;
            anyhow::ensure!(
                connections > 0 && users > 0,
                "--connections and --users must be positive"
            );
            if let Some(rate) = rate {
                anyhow::ensure!(
                    rate > 0.0 && rate.is_finite(),
                    "--rate must be a positive number"
                );
            }
            let load = match (rate, ramp) {
                (_, true) => LoadModel::Ramp {
                    start: rate.unwrap_or(50.0),
                    p99_bound_ms,
                    max_steps: 12,
                },
                (Some(rate), false) => LoadModel::Open { rate },
                (None, false) => LoadModel::Closed { connections },
            };
            let target = Target::from_cluster_file(&cli.cluster)?;
            target.check(&http).await?;
            let run = MixRun {
                name: scenario_name(&scenario),
                mix,
                load,
                duration,
                users,
                posts_per_user,
                tasks_per_user,
                seed: cli.seed,
            };
            run.run(&target, &http, &cli.out.join("work")).await?
        }
        Command::Baseline { connections } => {
            anyhow::ensure!(connections > 0, "--connections must be positive");
            let target = Target::from_cluster_file(&cli.cluster)?;
            baseline(&target, connections, duration, &cli.out.join("work"))?
        }
        Command::DataPaths {
            posts,
            connections,
            shard_counts,
        } => {
            anyhow::ensure!(
                posts > 0 && connections > 0,
                "--posts and --connections must be positive"
            );
            let target = Target::from_cluster_file(&cli.cluster)?;
            target.check(&http).await?;
            let scenario = DataPaths {
                posts,
                connections,
                shard_counts: shard_counts.0,
                duration,
                seed: cli.seed,
            };
            scenario.run(&target, &http, &cli.out.join("work")).await?
        }
        Command::ShardScaling {
            connections,
            shard_counts,
        } => {
            anyhow::ensure!(
                connections > 0 && !shard_counts.0.is_empty(),
                "--connections must be positive and --shard-counts name at least one count"
            );
            ShardScaling::new(shard_counts.0, connections, duration, cli.seed)
                .report(&http)
                .await?
        }
        Command::Search {
            posts,
            queries,
            users,
        } => {
            anyhow::ensure!(
                posts > 0 && queries > 0 && users >= 2,
                "--posts and --queries must be positive and --users at least 2"
            );
            let target = Target::from_cluster_file(&cli.cluster)?;
            target.check(&http).await?;
            let scenario = SearchBench {
                posts,
                queries,
                users,
                seed: cli.seed,
            };
            scenario.run(&target, &http).await?
        }
        Command::Rebalance {
            rate,
            max_parallel,
            users,
        } => {
            anyhow::ensure!(
                rate > 0.0 && rate.is_finite() && max_parallel > 0 && users > 0,
                "--rate, --max-parallel and --users must be positive"
            );
            let target = Target::from_cluster_file(&cli.cluster)?;
            target.check(&http).await?;
            let scenario = RebalanceBench {
                rate,
                duration,
                max_parallel,
                users,
                seed: cli.seed,
            };
            scenario.run(&target, &http).await?
        }
        Command::Faults { workers } => {
            anyhow::ensure!(workers > 0, "--workers must be positive");
            let data_dir = cli
                .cluster
                .parent()
                .ok_or_else(|| anyhow::anyhow!("the cluster file has no directory"))?;
            let scenario = FaultsBench {
                workers,
                settle: duration,
            };
            scenario.run(data_dir, &http).await?
        }
        Command::LoginStorm {
            url,
            users,
            rate,
            connections,
        } => {
            anyhow::ensure!(
                rate > 0.0 && rate.is_finite(),
                "--rate must be a positive number"
            );
            anyhow::ensure!(
                users > 0 && connections > 0,
                "--users and --connections must be positive"
            );
            let target = if url.is_empty() {
                Target::from_cluster_file(&cli.cluster)?
            } else {
                Target {
                    nodes: url,
                    postgres: Vec::new(),
                    shard_map: None,
                    load_balancer: None,
                    kernel_balancer: None,
                    redis: Vec::new(),
                    data_dir: None,
                }
            };
            target.check(&http).await?;
            let scenario = LoginStorm {
                users,
                me_rate: rate,
                duration,
                connections,
                seed: cli.seed,
            };
            scenario.run(&target, &http).await?
        }
    };
    print!("{}", report.markdown());
    for path in report.write(&cli.out)? {
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// A file-safe report name for a scenario (custom mixes are reported as `custom-mix`).
fn scenario_name(scenario: &str) -> String {
    if scenario.contains('=') {
        "custom-mix".into()
    } else {
        scenario.to_owned()
    }
}

/// pgbench alone on the cluster's hosts.
fn baseline(
    target: &Target,
    clients: usize,
    duration: Duration,
    work_dir: &std::path::Path,
) -> anyhow::Result<Report> {
    let mut report = Report::new(
        "baseline",
        serde_json::json!({"clients": clients}),
        serde_json::to_value(target)?,
    );
    let primary = target
        .postgres
        .iter()
        .find(|h| h.role == "primary")
        .ok_or_else(|| anyhow::anyhow!("the cluster file lists no primary"))?;
    let replica = target
        .postgres
        .iter()
        .find(|h| h.role == "replica" && h.shard == primary.shard)
        .ok_or_else(|| anyhow::anyhow!("shard {} has no replica", primary.shard))?;
    let select = pgbench::select_only(
        &primary.addr,
        &replica.addr,
        clients,
        duration,
        None,
        work_dir,
    )?;
    let insert = pgbench::insert_task(
        pgbench::TASK_INSERT,
        &primary.addr,
        clients,
        duration,
        None,
        work_dir,
    )?;
    report
        .baselines
        .insert("pgbench select-only".into(), serde_json::to_value(select)?);
    report
        .baselines
        .insert("pgbench insert-task".into(), serde_json::to_value(insert)?);
    Ok(report)
}
