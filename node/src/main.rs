//! `strata-node`: load the config, start logging, build the node and serve until SIGTERM.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use strata_node::config::NodeConfig;
use strata_node::startup::{Application, shutdown_signal};

/// The Strata API node.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Config file (TOML). `STRATA_NODE_*` environment variables override it.
    #[arg(long, env = "STRATA_NODE_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = NodeConfig::load(args.config.as_deref()).context("load the node config")?;
    strata_node::telemetry::init(&config.log);
    let app = Application::build(config).await.context("start the node")?;
    app.run_until_stopped(shutdown_signal())
        .await
        .context("serve")
}
