//! `strata-bench`: run a named scenario against a cluster and write its report.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use strata_bench::scenarios::login_storm::LoginStorm;
use strata_bench::target::Target;

/// Strata load-bench harness.
#[derive(Parser)]
#[command(name = "strata-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Floods logins and measures what it costs other requests (see bench/README.md).
    LoginStorm {
        /// The cluster description written by `strata dev up`.
        #[arg(long, default_value = ".strata/cluster.json")]
        cluster: PathBuf,
        /// Node base URLs instead of a cluster file (repeatable).
        #[arg(long)]
        url: Vec<String>,
        /// Users to seed and log in as.
        #[arg(long, default_value_t = 200)]
        users: u64,
        /// Open-loop rate of `GET /v1/me`, per second.
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        /// Seconds per phase.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Closed-loop login connections during the storm.
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Seed of the generated dataset (same seed: same users, reused).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Where the report goes.
        #[arg(long, default_value = "bench/results")]
        out: PathBuf,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse().command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strata-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    let Command::LoginStorm {
        cluster,
        url,
        users,
        rate,
        duration,
        connections,
        seed,
        out,
    } = command;
    anyhow::ensure!(
        rate > 0.0 && rate.is_finite(),
        "--rate must be a positive number"
    );
    anyhow::ensure!(
        users > 0 && connections > 0 && duration > 0,
        "--users, --connections and --duration must be positive"
    );
    let target = if url.is_empty() {
        Target::from_cluster_file(&cluster)?
    } else {
        Target {
            nodes: url,
            postgres: Vec::new(),
        }
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    target.check(&http).await?;
    let scenario = LoginStorm {
        users,
        me_rate: rate,
        duration: Duration::from_secs(duration),
        connections,
        seed,
    };
    let report = scenario.run(&target, &http).await?;
    print!("{}", report.markdown());
    for path in report.write(&out)? {
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
