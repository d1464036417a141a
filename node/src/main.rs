//! `strata-node`: load the config, start logging, build the node and serve until SIGTERM.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use strata_node::config::NodeConfig;
use strata_node::startup::{Application, shutdown_signal};

/// mimalloc instead of the system allocator: a request allocates and frees many small
/// buffers (headers, JSON, rows), and glibc's malloc was 8–12 % of the node's CPU per
/// read under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The Strata API node.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Config file (TOML); repeat to layer files, later ones overriding earlier ones.
    /// `STRATA_NODE_*` environment variables override them all.
    #[arg(long, env = "STRATA_NODE_CONFIG")]
    config: Vec<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let files = args.config.iter().map(PathBuf::as_path);
    let config = NodeConfig::load_files(files).context("load the node config")?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = config.worker_threads {
        runtime.worker_threads(threads);
    }
    let runtime = runtime.enable_all().build().context("start the runtime")?;
    runtime.block_on(serve(config))
}

async fn serve(config: NodeConfig) -> anyhow::Result<()> {
    strata_node::telemetry::init(&config.log);
    let app = Application::build(config).await.context("start the node")?;
    app.run_until_stopped(shutdown_signal())
        .await
        .context("serve")
}
