//! `strata dev up|down|status`: the local cluster, in the manner of `tiup playground`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};
use strata_node::config::{FilesConfig, LimitsConfig};
use strata_router::{RouterSettings, ShardMap};
use strata_sandbox::cluster::auth_with_fresh_key;
use strata_sandbox::{Cluster, ClusterSpec, OnDrop};

/// Local cluster commands.
#[derive(Subcommand)]
pub enum DevCommand {
    /// Start the cluster (reusing its data), print every endpoint, and run until Ctrl-C.
    Up(UpArgs),
    /// Stop a cluster left running with `up --detach`.
    Down(DirArgs),
    /// Show what is running.
    Status {
        #[command(flatten)]
        dir: DirArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Where the cluster keeps its data.
#[derive(Args)]
pub struct DirArgs {
    /// Data directory.
    #[arg(long, default_value = ".strata", env = "STRATA_DATA_DIR")]
    data_dir: PathBuf,
}

/// Shape of the cluster for `up`.
#[derive(Args)]
pub struct UpArgs {
    #[command(flatten)]
    dir: DirArgs,
    /// Shard map: shards, weights and Postgres hosts (the first host of each shard starts
    /// as its primary, the others as streaming replicas).
    #[arg(long, default_value = "shard-map.toml")]
    shard_map: PathBuf,
    /// Number of API nodes.
    #[arg(long, default_value_t = 2)]
    nodes: u16,
    /// Port of the first node; the others follow.
    #[arg(long, default_value_t = 8101)]
    node_port: u16,
    /// Redis Cluster masters (at least 3).
    #[arg(long, default_value_t = 3)]
    redis_masters: u16,
    /// Port of the first Redis master; the others follow.
    #[arg(long, default_value_t = 7001)]
    redis_port: u16,
    /// Load balancer (HAProxy) port.
    #[arg(long, default_value_t = 8100)]
    lb_port: u16,
    /// Leave the cluster running in the background and return.
    #[arg(long)]
    detach: bool,
}

/// Runs one `dev` subcommand.
pub fn run(cmd: DevCommand) -> anyhow::Result<()> {
    match cmd {
        DevCommand::Up(args) => up(args),
        DevCommand::Down(dir) => down(&dir.data_dir),
        DevCommand::Status { dir, json } => status(&dir.data_dir, json),
    }
}

fn up(args: UpArgs) -> anyhow::Result<()> {
    let shard_map = ShardMap::load(&args.shard_map)?;
    let data_dir = absolute(&args.dir.data_dir)?;
    // Keep the signing key of an earlier run, so tokens survive a restart.
    let auth = Cluster::open(&data_dir)
        .map(|previous| previous.spec.auth.clone())
        .unwrap_or_else(|_| auth_with_fresh_key());
    let spec = ClusterSpec {
        data_dir,
        shard_map,
        redis_ports: (0..args.redis_masters)
            .map(|i| args.redis_port + i)
            .collect(),
        node_ports: (0..args.nodes).map(|i| args.node_port + i).collect(),
        lb_port: Some(args.lb_port),
        router: RouterSettings::default(),
        auth,
        limits: LimitsConfig::default(),
        max_upload_bytes: FilesConfig::default().max_upload_bytes,
        fsync: true,
    };
    let started = Instant::now();
    eprintln!(
        "starting the local cluster in {} ...",
        spec.data_dir.display()
    );
    let mut cluster = Cluster::start(spec, OnDrop::Stop).context("start the local cluster")?;
    let endpoints = cluster.endpoints();
    println!("{}", endpoints.describe());
    println!(
        "endpoints as JSON: {}",
        endpoints
            .data_dir
            .join(strata_sandbox::endpoints::ENDPOINTS_FILE)
            .display()
    );
    eprintln!("up in {:.1}s", started.elapsed().as_secs_f64());
    if args.detach {
        cluster.set_on_drop(OnDrop::Keep);
        eprintln!("running in the background; stop it with `strata dev down`");
        return Ok(());
    }
    eprintln!("press Ctrl-C to stop");
    wait_for_stop_signal()?;
    eprintln!("stopping ...");
    drop(cluster);
    eprintln!("stopped");
    Ok(())
}

fn down(data_dir: &Path) -> anyhow::Result<()> {
    let cluster = Cluster::open(data_dir)?;
    cluster.stop();
    eprintln!("stopped the cluster in {}", data_dir.display());
    Ok(())
}

fn status(data_dir: &Path, json: bool) -> anyhow::Result<()> {
    let cluster = Cluster::open(data_dir)?;
    let states = cluster.process_states();
    if json {
        println!("{}", serde_json::to_string_pretty(&states)?);
        return Ok(());
    }
    for s in &states {
        let running = if s.running { "up" } else { "down" };
        println!(
            "{:<9} {:<14} {:<28} {:<5} {}",
            s.kind, s.name, s.addr, running, s.detail
        );
    }
    Ok(())
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    Ok(if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    })
}

/// Blocks until Ctrl-C or SIGTERM.
fn wait_for_stop_signal() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    })?;
    Ok(())
}
