//! `strata shard ...`: the cluster's shards as the catalog records them, and the
//! operator commands that change them online (add, plan, rebalance, drain, remove,
//! verify, cleanup). Every command takes `--json` and none prompts, so scripts can run
//! them; every one finds the cluster through `--shard-map` / `STRATA_SHARD_MAP` (which
//! names the catalog's hosts and the credentials).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use strata_router::rebalance::{self, ClusterAdmin, RebalanceReport};
use strata_router::{HostAddr, ShardId, ShardMap};

/// Shard commands.
#[derive(Subcommand)]
pub enum ShardCommand {
    /// Shards, hosts and roles, slots and rows per shard, catalog epoch, moves.
    Status(Common),
    /// Register a new shard with no slots (its schema is migrated first).
    Add {
        /// The new shard's id.
        id: ShardId,
        /// A Postgres host of the shard, host:port (repeat for replicas).
        #[arg(long = "host", required = true)]
        hosts: Vec<HostAddr>,
        /// Share of the slots relative to the other shards.
        #[arg(long, default_value_t = 1)]
        weight: u32,
        #[command(flatten)]
        common: Common,
    },
    /// What the ring would move for the current shards and weights. Changes nothing.
    Plan(Common),
    /// Carry out the plan slot by slot (resumes moves a killed run left unfinished).
    Rebalance {
        /// Slots moved at once.
        #[arg(long, default_value_t = 2)]
        max_parallel: usize,
        /// Instead: give up every unfinished move, returning its slot to its source.
        #[arg(long)]
        cancel: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Move every slot off a shard (marks it draining, then rebalances).
    Drain {
        /// The shard to empty.
        id: ShardId,
        /// Slots moved at once.
        #[arg(long, default_value_t = 2)]
        max_parallel: usize,
        #[command(flatten)]
        common: Common,
    },
    /// Forget a drained shard that owns no slots and has nothing left to clean.
    Remove {
        /// The shard to forget.
        id: ShardId,
        #[command(flatten)]
        common: Common,
    },
    /// Compare source and target of every moved or moving slot row by row; exit status 1
    /// on any difference.
    Verify(Common),
    /// Delete the source copies of moved slots (each verified first).
    Cleanup(Common),
}

/// Options every shard command takes.
#[derive(Args)]
pub struct Common {
    /// The shard map: where the catalog is, and how to log in.
    #[arg(long, default_value = "shard-map.toml", env = "STRATA_SHARD_MAP")]
    shard_map: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs one `shard` subcommand.
pub fn run(cmd: ShardCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run_async(cmd))
}

async fn open(common: &Common) -> anyhow::Result<ClusterAdmin> {
    let map = ShardMap::load(&common.shard_map)?;
    ClusterAdmin::open(&map)
        .await
        .context("reach the cluster catalog")
}

fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

async fn run_async(cmd: ShardCommand) -> anyhow::Result<()> {
    match cmd {
        ShardCommand::Status(common) => status(&common).await,
        ShardCommand::Add {
            id,
            hosts,
            weight,
            common,
        } => {
            let cluster = open(&common).await?;
            let epoch = cluster.add_shard(&id, &hosts, weight).await?;
            if common.json {
                print_json(&serde_json::json!({"shard": id, "epoch": epoch}))
            } else {
                println!(
                    "shard {id} registered with no slots (catalog epoch {epoch}); run `strata shard rebalance` to give it its share"
                );
                Ok(())
            }
        }
        ShardCommand::Plan(common) => {
            let cluster = open(&common).await?;
            let plan = cluster.plan().await?;
            if common.json {
                return print_json(&plan);
            }
            println!(
                "catalog epoch {}: {} slots to move",
                plan.epoch,
                plan.moves.len()
            );
            for pair in &plan.pairs {
                println!(
                    "  {} -> {}: {} slots, {} rows, {} bytes",
                    pair.from, pair.to, pair.slots, pair.rows, pair.bytes
                );
            }
            Ok(())
        }
        ShardCommand::Rebalance {
            max_parallel,
            cancel,
            common,
        } => {
            let cluster = open(&common).await?;
            if cancel {
                let returned = cluster.cancel().await?;
                if common.json {
                    return print_json(&serde_json::json!({"returned_slots": returned}));
                }
                println!(
                    "{} unfinished moves cancelled; their slots stay on their sources",
                    returned.len()
                );
                return Ok(());
            }
            let report = rebalance_with_progress(&cluster, max_parallel, common.json).await?;
            finish(&report, common.json)
        }
        ShardCommand::Drain {
            id,
            max_parallel,
            common,
        } => {
            let cluster = open(&common).await?;
            cluster.drain(&id).await?;
            let report = rebalance_with_progress(&cluster, max_parallel, common.json).await?;
            finish(&report, common.json)
        }
        ShardCommand::Remove { id, common } => {
            let cluster = open(&common).await?;
            let epoch = cluster.remove(&id).await?;
            if common.json {
                print_json(&serde_json::json!({"removed": id, "epoch": epoch}))
            } else {
                println!(
                    "shard {id} removed from the catalog (epoch {epoch}); take it out of the shard map too"
                );
                Ok(())
            }
        }
        ShardCommand::Verify(common) => {
            let cluster = open(&common).await?;
            let diffs = cluster.verify().await?;
            let differing: Vec<_> = diffs.iter().filter(|d| !d.clean()).collect();
            if common.json {
                print_json(&serde_json::json!({
                    "slots_compared": diffs.len(),
                    "slots_differing": differing.len(),
                    "slots": diffs,
                }))?;
            } else {
                println!("{} slots compared, {} differ", diffs.len(), differing.len());
                for diff in &differing {
                    for table in diff.tables.iter().filter(|t| !t.differing.is_empty()) {
                        println!(
                            "  slot {} {} ({} -> {}): {} rows vs {}, differing ids: {}",
                            diff.slot,
                            table.table,
                            diff.source,
                            diff.target,
                            table.source_rows,
                            table.target_rows,
                            table.differing.join(", ")
                        );
                    }
                }
            }
            if differing.is_empty() {
                Ok(())
            } else {
                anyhow::bail!("{} slots differ between source and target", differing.len())
            }
        }
        ShardCommand::Cleanup(common) => {
            let cluster = open(&common).await?;
            let (cleaned, refused) = cluster.cleanup().await?;
            if common.json {
                print_json(&serde_json::json!({"cleaned": cleaned, "refused": refused}))?;
            } else {
                println!("{} source copies deleted", cleaned.len());
            }
            if refused.is_empty() {
                Ok(())
            } else {
                anyhow::bail!(
                    "{} slots were not cleaned up because they differ: run `strata shard verify`",
                    refused.len()
                )
            }
        }
    }
}

async fn status(common: &Common) -> anyhow::Result<()> {
    let cluster = open(common).await?;
    let state = cluster.state().await?;
    let status = rebalance::status(&cluster.topology, &state).await;
    if common.json {
        return print_json(&status);
    }
    println!("catalog epoch {}", status.epoch);
    for shard in &status.shards {
        let rows = shard
            .rows
            .map_or_else(|| "?".to_string(), |r| r.to_string());
        let draining = if shard.draining { ", draining" } else { "" };
        println!(
            "shard {} (weight {}, {} slots, {rows} rows{draining})",
            shard.id, shard.weight, shard.slots
        );
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
    let unfinished: Vec<_> = status
        .moves
        .iter()
        .filter(|m| m.phase.in_progress())
        .collect();
    println!("moves in progress: {}", unfinished.len());
    for m in unfinished {
        println!(
            "  slot {} {} -> {}: {:?}, {} rows copied",
            m.slot, m.source, m.target, m.phase, m.rows_copied
        );
    }
    Ok(())
}

async fn rebalance_with_progress(
    cluster: &ClusterAdmin,
    max_parallel: usize,
    quiet: bool,
) -> anyhow::Result<RebalanceReport> {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:40} {pos}/{len} slots  {msg}  elapsed {elapsed}  eta {eta}",
        )
        .expect("a valid progress template"),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let started = std::time::Instant::now();
    let report = cluster
        .rebalance(max_parallel, |p| {
            bar.set_length(p.slots_total as u64);
            bar.set_position(p.slots_done as u64);
            let seconds = started.elapsed().as_secs_f64().max(0.001);
            bar.set_message(format!(
                "{} rows, {:.0} rows/s",
                p.rows_copied,
                p.rows_copied as f64 / seconds
            ));
        })
        .await;
    bar.finish_and_clear();
    Ok(report?)
}

fn finish(report: &RebalanceReport, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(report);
    }
    println!(
        "{} slots moved, {} rows in {:.1}s ({:.0} rows/s); write pause per slot p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        report.moves.len(),
        report.rows_copied,
        report.seconds,
        report.rows_per_second,
        report.pause_ms_p50,
        report.pause_ms_p99,
        report.pause_ms_max
    );
    if !report.moves.is_empty() {
        let steps = &report.pause_steps_p99;
        println!(
            "pause p99 by step: fence lock {:.1} ms, last catch-up {:.1} ms, source release {:.1} ms, catalog flip {:.1} ms",
            steps.lock_ms, steps.catch_up_ms, steps.release_ms, steps.flip_ms
        );
        println!(
            "run `strata shard verify`, then `strata shard cleanup` to delete the source copies"
        );
    }
    Ok(())
}
