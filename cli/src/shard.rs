//! `strata shard status`: every shard's slots, hosts, live roles and replica lag.

use std::path::PathBuf;

use clap::Subcommand;
use strata_router::{RouterSettings, ShardMap, Topology};

/// Shard commands.
#[derive(Subcommand)]
pub enum ShardCommand {
    /// Show shards, slots, hosts, roles and replica lag.
    Status {
        /// The shard map.
        #[arg(long, default_value = "shard-map.toml", env = "STRATA_SHARD_MAP")]
        shard_map: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Runs one `shard` subcommand.
pub fn run(cmd: ShardCommand) -> anyhow::Result<()> {
    let ShardCommand::Status { shard_map, json } = cmd;
    let map = ShardMap::load(&shard_map)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let status = runtime.block_on(async {
        Topology::connect(map, RouterSettings::default())
            .await
            .status()
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    for shard in &status {
        println!("shard {} ({} slots)", shard.id, shard.slots);
        for host in &shard.hosts {
            let error = host
                .last_error
                .as_deref()
                .map(|e| format!("  [{e}]"))
                .unwrap_or_default();
            println!(
                "  {:<22} {:<8} lsn {:<12} lag {:.3}s{}{error}",
                host.addr,
                format!("{:?}", host.role).to_lowercase(),
                host.lsn.as_deref().unwrap_or("-"),
                host.lag_seconds,
                if host.banned { " banned" } else { "" },
            );
        }
    }
    Ok(())
}
