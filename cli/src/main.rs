//! `strata`: the operator command. Parses arguments and hands each subcommand to its
//! module; all the work lives in the sandbox and router crates.

mod dev;
mod migrate;
mod shard;
mod user;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Operate a Strata cluster.
#[derive(Parser)]
#[command(name = "strata", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a whole local cluster on this machine.
    #[command(subcommand)]
    Dev(dev::DevCommand),
    /// Apply pending migrations to every shard.
    Migrate {
        /// The shard map.
        #[arg(long, default_value = "shard-map.toml", env = "STRATA_SHARD_MAP")]
        shard_map: PathBuf,
    },
    /// Inspect shards.
    #[command(subcommand)]
    Shard(shard::ShardCommand),
    /// Manage users.
    #[command(subcommand)]
    User(user::UserCommand),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let outcome = match Cli::parse().command {
        Command::Dev(cmd) => dev::run(cmd),
        Command::Migrate { shard_map } => migrate::run(&shard_map),
        Command::Shard(cmd) => shard::run(cmd),
        Command::User(cmd) => user::run(cmd),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
