//! `strata-bench`: run a named scenario against a cluster and write its report.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use strata_bench::report::Report;
use strata_bench::scenarios::data_paths::DataPaths;
use strata_bench::scenarios::login_storm::LoginStorm;
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
    /// Read and write paths against pgbench on the same hosts (see bench/README.md).
    DataPaths {
        /// Posts to seed and read.
        #[arg(long, default_value_t = 1000)]
        posts: usize,
        /// Connections of the closed-loop (maximum rate) phases, and pgbench clients.
        #[arg(long, default_value_t = 16)]
        connections: usize,
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
        Command::DataPaths { posts, connections } => {
            anyhow::ensure!(
                posts > 0 && connections > 0,
                "--posts and --connections must be positive"
            );
            let target = Target::from_cluster_file(&cli.cluster)?;
            target.check(&http).await?;
            let scenario = DataPaths {
                posts,
                connections,
                duration,
                seed: cli.seed,
            };
            scenario.run(&target, &http, &cli.out.join("work")).await?
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
