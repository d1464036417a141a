//! `strata dev up|down|status`: the local cluster, in the manner of `tiup playground`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};
use strata_node::config::{FilesConfig, LimitsConfig};
use strata_router::{RouterSettings, ShardMap};
use strata_sandbox::cluster::auth_with_fresh_key;
use strata_sandbox::monitoring::MonitoringSpec;
use strata_sandbox::{Cluster, ClusterSpec, OnDrop};

/// Local cluster commands.
#[derive(Subcommand)]
pub enum DevCommand {
    /// Start the cluster (reusing its data), print every endpoint, and run until Ctrl-C.
    Up(UpArgs),
    /// Stop a cluster left running with `up --detach`.
    Down(DirArgs),
    /// Start a new shard's Postgres processes (primary and replicas), migrate it and
    /// register it with no slots; then `strata shard rebalance` gives it its share.
    AddShard {
        #[command(flatten)]
        dir: DirArgs,
        /// Streaming replicas of the new shard.
        #[arg(long, default_value_t = 1)]
        replicas: usize,
        /// The shard's weight on the ring.
        #[arg(long, default_value_t = 1)]
        weight: u32,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Add or remove API nodes while the cluster serves: new nodes join the load
    /// balancer once ready; removed ones (the last first) leave it, finish what is in
    /// flight and stop. No request fails.
    Scale {
        #[command(flatten)]
        dir: DirArgs,
        /// How many API nodes to run.
        #[arg(long)]
        nodes: usize,
        /// Print the nodes as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run the kernel balancer's controller of a cluster: keeps its nftables rule
    /// equal to HAProxy's view of the nodes. Started by the cluster itself.
    #[command(hide = true)]
    KernelBalancer(DirArgs),
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
    /// Replicas per Redis master: with one, losing a Redis process is a failover of a
    /// few seconds instead of an outage of its slots.
    #[arg(long, default_value_t = 1)]
    redis_replicas: u16,
    /// Port of the first Redis server; the others (masters, then replicas) follow.
    #[arg(long, default_value_t = 7001)]
    redis_port: u16,
    /// Load balancer (HAProxy) port.
    #[arg(long, default_value_t = 8100)]
    lb_port: u16,
    /// Kernel balancer port: an nftables rule that spreads connections over the nodes
    /// HAProxy finds ready, with no process on the way (needs root).
    #[arg(long, default_value_t = 8099)]
    kernel_lb_port: u16,
    /// Leave out the kernel balancer.
    #[arg(long)]
    no_kernel_balancer: bool,
    /// Prometheus port; the Redis exporter listens on the next one, the Postgres
    /// exporters (one per Postgres host) on the ones after.
    #[arg(long, default_value_t = 9090)]
    prometheus_port: u16,
    /// Seconds between Prometheus' scrapes and rule evaluations.
    #[arg(
        long,
        default_value_t = strata_sandbox::monitoring::DEFAULT_SCRAPE_INTERVAL_SECS,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    scrape_interval: u64,
    /// Leave out Prometheus and the exporters.
    #[arg(long)]
    no_monitoring: bool,
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
        DevCommand::KernelBalancer(dir) => {
            strata_sandbox::cluster::follow_with_kernel_balancer(&dir.data_dir)?;
            Ok(())
        }
        DevCommand::AddShard {
            dir,
            replicas,
            weight,
            json,
        } => add_shard(&dir.data_dir, replicas, weight, json),
        DevCommand::Scale { dir, nodes, json } => scale(&dir.data_dir, nodes, json),
    }
}

fn up(args: UpArgs) -> anyhow::Result<()> {
    let data_dir = absolute(&args.dir.data_dir)?;
    let previous = Cluster::open(&data_dir).ok();
    // Keep the signing key of an earlier run, so tokens survive a restart.
    let auth = previous
        .as_ref()
        .map(|p| p.spec.auth.clone())
        .unwrap_or_else(auth_with_fresh_key);
    // A cluster that exists keeps its own shards (the catalog's, after `add-shard` or
    // `shard remove`); the map file only seeds a new one.
    let shard_map = match &previous {
        Some(p) => p.spec.shard_map.clone(),
        None => ShardMap::load(&args.shard_map)?,
    };
    // An existing cluster keeps its Redis servers (their roles live in their nodes.conf).
    let (redis_ports, redis_replicas) = match &previous {
        Some(p) => (p.spec.redis_ports.clone(), p.spec.redis_replicas),
        None => {
            let servers = args.redis_masters * (1 + args.redis_replicas);
            let ports = (0..servers).map(|i| args.redis_port + i).collect();
            (ports, usize::from(args.redis_replicas))
        }
    };
    let spec = ClusterSpec {
        data_dir,
        shard_map,
        redis_ports,
        redis_replicas,
        node_ports: (0..args.nodes).map(|i| args.node_port + i).collect(),
        lb_port: Some(args.lb_port),
        kernel_lb_port: kernel_balancer_port(&args),
        router: RouterSettings::default(),
        auth,
        limits: LimitsConfig::default(),
        max_upload_bytes: FilesConfig::default().max_upload_bytes,
        fsync: true,
        request_timeout_ms: None,
        upload_idle_timeout_ms: None,
        monitoring: None,
    };
    let hosts: usize = spec.shard_map.shards.iter().map(|s| s.hosts.len()).sum();
    let spec = ClusterSpec {
        monitoring: (!args.no_monitoring).then(|| MonitoringSpec {
            prometheus: args.prometheus_port,
            redis_exporter: args.prometheus_port + 1,
            postgres_exporters: (0..hosts as u16)
                .map(|i| args.prometheus_port + 2 + i)
                .collect(),
            scrape_interval_secs: args.scrape_interval,
        }),
        ..spec
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
    // What runs now, nodes added or removed by `dev scale` included.
    let data_dir = cluster.spec.data_dir.clone();
    match Cluster::open(&data_dir) {
        Ok(current) => {
            cluster.set_on_drop(OnDrop::Keep);
            current.stop();
        }
        Err(_) => drop(cluster),
    }
    eprintln!("stopped");
    Ok(())
}

/// The kernel balancer's port, unless it is left out or cannot run (not root).
fn kernel_balancer_port(args: &UpArgs) -> Option<u16> {
    if args.no_kernel_balancer {
        return None;
    }
    if !strata_sandbox::process::is_root() {
        eprintln!("note: the kernel balancer needs root; starting without it");
        return None;
    }
    Some(args.kernel_lb_port)
}

fn down(data_dir: &Path) -> anyhow::Result<()> {
    let cluster = Cluster::open(data_dir)?;
    cluster.stop();
    eprintln!("stopped the cluster in {}", data_dir.display());
    Ok(())
}

fn add_shard(data_dir: &Path, replicas: usize, weight: u32, json: bool) -> anyhow::Result<()> {
    let mut cluster = Cluster::open(data_dir)?;
    let id = cluster
        .add_shard(replicas, weight)
        .context("add a shard to the local cluster")?;
    let shard = cluster
        .spec
        .shard_map
        .shard(&id)
        .expect("the new shard is in the map")
        .clone();
    if json {
        println!("{}", serde_json::to_string_pretty(&shard)?);
    } else {
        let hosts: Vec<String> = shard.hosts.iter().map(ToString::to_string).collect();
        println!(
            "shard {id} started on {} and registered with no slots; run `strata shard rebalance --shard-map {}` to move its share to it",
            hosts.join(", "),
            cluster.shard_map_path().display()
        );
    }
    Ok(())
}

fn scale(data_dir: &Path, count: usize, json: bool) -> anyhow::Result<()> {
    let mut cluster = Cluster::open(data_dir)?;
    let before = cluster.nodes.len();
    let started = Instant::now();
    cluster
        .scale_nodes(count)
        .with_context(|| format!("scale the local cluster from {before} to {count} nodes"))?;
    let endpoints = cluster.endpoints();
    if json {
        println!("{}", serde_json::to_string_pretty(&endpoints.nodes)?);
    } else {
        for node in &endpoints.nodes {
            println!("node {:<8} {}", node.id, node.url);
        }
        eprintln!(
            "{before} -> {count} nodes in {:.1}s",
            started.elapsed().as_secs_f64()
        );
    }
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
