//! Online rebalancing: the operator's side of the catalog. Everything `strata shard`
//! does (status, add, plan, rebalance, drain, remove, verify, cleanup) goes through a
//! [`ClusterAdmin`], which follows the catalog like a node does.
//!
//! - [`tables`] — the sharded tables and their keys.
//! - [`mover`] — one slot's move: copy, catch up, fence, flip, clean up.
//! - [`plan`] — what the ring would move.
//! - [`verify`] — source and target compared row by row.

pub mod mover;
pub mod plan;
pub mod slot_io;
pub mod tables;
pub mod verify;

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use serde::Serialize;

use crate::catalog::{Catalog, CatalogError, CatalogState, CatalogWriter, MovePhase, MoveRecord};
use crate::ids::{HostAddr, ShardId, Slot};
use crate::migrations::{self, MigrationError};
use crate::rebalance::mover::{MoveError, MoveReport, Mover, PauseSteps};
use crate::rebalance::plan::{Plan, PlanError, PlannedMove};
use crate::rebalance::verify::SlotDiff;
use crate::settings::RouterSettings;
use crate::shard_map::ShardMap;
use crate::topology::{RouterError, Topology};

/// Why an operator command failed.
#[derive(Debug, thiserror::Error)]
pub enum RebalanceError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Move(#[from] MoveError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Router(#[from] RouterError),
    #[error(transparent)]
    Migrations(#[from] MigrationError),
    #[error("shard {shard}: {source}")]
    Db {
        shard: ShardId,
        source: tokio_postgres::Error,
    },
}

/// Progress of a rebalance, reported after every slot.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Progress {
    pub slots_done: usize,
    pub slots_total: usize,
    pub rows_copied: i64,
}

/// What a rebalance did.
#[derive(Debug, Clone, Serialize)]
pub struct RebalanceReport {
    pub moves: Vec<MoveReport>,
    pub rows_copied: i64,
    pub seconds: f64,
    pub rows_per_second: f64,
    pub pause_ms_p50: f64,
    pub pause_ms_p99: f64,
    pub pause_ms_max: f64,
    /// Each step of the pause at its own 99th percentile (see [`PauseSteps`]).
    pub pause_steps_p99: PauseSteps,
}

/// A cluster as its operator sees it: the catalog and a topology over every catalog
/// shard.
pub struct ClusterAdmin {
    pub topology: Arc<Topology>,
    pub catalog: Catalog,
    /// Credentials and database names for shards not yet in the catalog.
    map: ShardMap,
}

impl ClusterAdmin {
    /// Connects to the cluster a shard map names (the map gives the catalog's location and
    /// the credentials; the shards come from the catalog).
    pub async fn open(map: &ShardMap) -> Result<Self, RebalanceError> {
        let catalog = Catalog::from_map(map);
        let state = catalog.load().await?;
        let topology = Topology::connect(map.clone(), RouterSettings::default()).await;
        topology.follow_catalog(catalog.clone(), &state).await;
        Ok(Self {
            topology,
            catalog,
            map: map.clone(),
        })
    }

    /// The catalog now (and the topology brought up to it).
    pub async fn state(&self) -> Result<CatalogState, RebalanceError> {
        let state = self.catalog.load().await?;
        self.topology.apply_catalog(&state).await;
        Ok(state)
    }

    /// Registers a new shard with no slots, after migrating its schema.
    pub async fn add_shard(
        &self,
        id: &ShardId,
        hosts: &[HostAddr],
        weight: u32,
    ) -> Result<u64, RebalanceError> {
        // Migrate the new shard on its own first, so no node ever routes to a shard
        // without its schema.
        let alone = ShardMap {
            shards: vec![crate::shard_map::ShardConfig {
                id: id.clone(),
                weight,
                hosts: hosts.to_vec(),
                synchronous: false,
                database: None,
            }],
            ..self.map.clone()
        };
        let topology = Topology::connect(alone, RouterSettings::default()).await;
        migrations::migrate_one(&topology, id).await?;
        let mut client = self.catalog.connect().await?;
        let epoch = CatalogWriter::new(&mut client)
            .add_shard(id, hosts, weight)
            .await?;
        self.state().await?;
        Ok(epoch)
    }

    /// Marks a shard draining: the next rebalance moves every slot off it.
    pub async fn drain(&self, id: &ShardId) -> Result<u64, RebalanceError> {
        let mut client = self.catalog.connect().await?;
        Ok(CatalogWriter::new(&mut client).set_draining(id).await?)
    }

    /// Forgets a drained shard with no slots and nothing left to clean.
    pub async fn remove(&self, id: &ShardId) -> Result<u64, RebalanceError> {
        let mut client = self.catalog.connect().await?;
        Ok(CatalogWriter::new(&mut client).remove_shard(id).await?)
    }

    /// What a rebalance would move now.
    pub async fn plan(&self) -> Result<Plan, RebalanceError> {
        let state = self.state().await?;
        Ok(plan::plan(&self.topology, &state).await?)
    }

    /// Finishes every unfinished move, then carries out the plan, `max_parallel` slots at
    /// a time. `progress` hears after every slot.
    pub async fn rebalance(
        &self,
        max_parallel: usize,
        progress: impl Fn(&Progress),
    ) -> Result<RebalanceReport, RebalanceError> {
        let started = Instant::now();
        let state = self.state().await?;
        let mut work: Vec<PlannedMove> = state
            .moves
            .iter()
            .filter(|m| m.phase.in_progress())
            .map(|m| PlannedMove {
                slot: m.slot,
                from: m.source.clone(),
                to: m.target.clone(),
            })
            .collect();
        for planned in plan::planned_moves(&state)? {
            if !work.iter().any(|w| w.slot == planned.slot) {
                work.push(planned);
            }
        }
        let mut done = Progress {
            slots_total: work.len(),
            ..Progress::default()
        };
        progress(&done);
        let mover = Mover::new(Arc::clone(&self.topology), self.catalog.clone());
        let mut runs = futures::stream::iter(work)
            .map(|planned| {
                let mover = mover.clone();
                let catalog = self.catalog.clone();
                async move {
                    let mut client = catalog.connect().await?;
                    let record = CatalogWriter::new(&mut client)
                        .begin_move(planned.slot, &planned.from, &planned.to)
                        .await?;
                    Ok::<_, RebalanceError>(mover.run(record, &mut client).await?)
                }
            })
            .buffer_unordered(max_parallel.max(1));
        let mut reports = Vec::new();
        while let Some(result) = runs.next().await {
            let report = result?;
            done.slots_done += 1;
            done.rows_copied += report.rows_copied;
            progress(&done);
            reports.push(report);
        }
        let seconds = started.elapsed().as_secs_f64();
        let mut pauses: Vec<f64> = reports.iter().map(|r| r.pause_ms).collect();
        pauses.sort_by(f64::total_cmp);
        Ok(RebalanceReport {
            rows_copied: done.rows_copied,
            rows_per_second: if seconds > 0.0 {
                done.rows_copied as f64 / seconds
            } else {
                0.0
            },
            seconds,
            pause_ms_p50: percentile(&pauses, 0.50),
            pause_ms_p99: percentile(&pauses, 0.99),
            pause_ms_max: pauses.last().copied().unwrap_or(0.0),
            pause_steps_p99: steps_p99(&reports),
            moves: reports,
        })
    }

    /// Gives up every unfinished move; their slots stay on their sources. Returns the
    /// slots returned.
    pub async fn cancel(&self) -> Result<Vec<Slot>, RebalanceError> {
        let state = self.state().await?;
        let mover = Mover::new(Arc::clone(&self.topology), self.catalog.clone());
        let mut returned = Vec::new();
        for record in state.moves.iter().filter(|m| m.phase.in_progress()) {
            if mover.cancel(record).await? {
                returned.push(record.slot);
            }
        }
        Ok(returned)
    }

    /// Compares source and target of every moved or moving slot.
    pub async fn verify(&self) -> Result<Vec<SlotDiff>, RebalanceError> {
        let state = self.state().await?;
        let mut diffs = Vec::new();
        for record in &state.moves {
            if let Some(diff) = verify::verify_move(&self.topology, record).await? {
                diffs.push(diff);
            }
        }
        Ok(diffs)
    }

    /// Deletes the source copies of flipped slots that verify clean; returns the slots
    /// cleaned and the ones refused because they differ.
    pub async fn cleanup(&self) -> Result<(Vec<Slot>, Vec<Slot>), RebalanceError> {
        let state = self.state().await?;
        let mover = Mover::new(Arc::clone(&self.topology), self.catalog.clone());
        let (mut cleaned, mut refused) = (Vec::new(), Vec::new());
        for record in state.moves.iter().filter(|m| m.phase == MovePhase::Flipped) {
            let clean = verify::verify_move(&self.topology, record)
                .await?
                .is_none_or(|d| d.clean());
            if clean {
                mover.clean_up(record).await?;
                cleaned.push(record.slot);
            } else {
                refused.push(record.slot);
            }
        }
        Ok((cleaned, refused))
    }
}

/// Creates the catalog from the map when there is none, and makes sure every shard's
/// fence opens the slots the catalog gives it (slots not moving). Run by `strata
/// migrate`, after the shards' own migrations.
pub async fn bootstrap(
    topology: &Topology,
    map: &ShardMap,
) -> Result<CatalogState, RebalanceError> {
    let catalog = Catalog::from_map(map);
    let state = catalog.create_or_open(map).await?;
    topology.apply_catalog(&state).await;
    for shard in &state.shards {
        let owned: Vec<i32> = Slot::all()
            .filter(|s| state.placement.shard_of_slot(*s) == &shard.id)
            .filter(|s| !moving(&state.moves, *s))
            .map(|s| i32::from(s.get()))
            .collect();
        let conn = topology.primary(&shard.id).await?;
        conn.execute(
            "INSERT INTO shard_slots (slot, state) SELECT unnest($1::int[]), 'owned' \
             ON CONFLICT (slot) DO NOTHING",
            &[&owned],
        )
        .await
        .map_err(|source| RebalanceError::Db {
            shard: shard.id.clone(),
            source,
        })?;
    }
    Ok(state)
}

/// One shard in [`ClusterStatus`].
#[derive(Debug, Clone, Serialize)]
pub struct ShardSummary {
    pub id: ShardId,
    pub weight: u32,
    pub draining: bool,
    pub slots: usize,
    /// Rows of the sharded tables on the shard's primary (a moved slot's source copy
    /// counts until it is cleaned up); `None` when the primary did not answer.
    pub rows: Option<i64>,
    pub hosts: Vec<crate::topology::HostStatus>,
}

/// The cluster as `strata shard status` and `GET /v1/admin/rebalance` show it.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    pub epoch: u64,
    pub shards: Vec<ShardSummary>,
    pub moves_in_progress: usize,
    pub moves: Vec<MoveRecord>,
}

/// Shards, hosts and roles, slots and rows per shard, the epoch and the moves.
pub async fn status(topology: &Topology, state: &CatalogState) -> ClusterStatus {
    let slots = crate::catalog::slot_counts(state);
    let live = topology.status();
    let mut shards = Vec::new();
    for shard in &state.shards {
        shards.push(ShardSummary {
            id: shard.id.clone(),
            weight: shard.weight,
            draining: shard.draining,
            slots: slots.get(&shard.id).copied().unwrap_or(0),
            rows: count_rows(topology, &shard.id).await,
            hosts: live
                .iter()
                .find(|s| s.id == shard.id)
                .map(|s| s.hosts.clone())
                .unwrap_or_default(),
        });
    }
    ClusterStatus {
        epoch: state.epoch,
        shards,
        moves_in_progress: state.moves.iter().filter(|m| m.phase.in_progress()).count(),
        moves: state.moves.clone(),
    }
}

async fn count_rows(topology: &Topology, shard: &ShardId) -> Option<i64> {
    let conn = topology.primary(shard).await.ok()?;
    let sum = tables::SHARDED_TABLES
        .iter()
        .map(|t| format!("(SELECT count(*) FROM {})", t.name))
        .collect::<Vec<_>>()
        .join(" + ");
    conn.query_one(&format!("SELECT ({sum})::bigint"), &[])
        .await
        .ok()
        .map(|r| r.get(0))
}

fn moving(moves: &[MoveRecord], slot: Slot) -> bool {
    moves
        .iter()
        .any(|m| m.slot == slot && m.phase.in_progress())
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Each pause step's 99th percentile over the moves.
fn steps_p99(reports: &[MoveReport]) -> PauseSteps {
    let p99 = |step: fn(&PauseSteps) -> f64| {
        let mut values: Vec<f64> = reports.iter().map(|r| step(&r.pause_steps)).collect();
        values.sort_by(f64::total_cmp);
        percentile(&values, 0.99)
    };
    PauseSteps {
        lock_ms: p99(|s| s.lock_ms),
        catch_up_ms: p99(|s| s.catch_up_ms),
        release_ms: p99(|s| s.release_ms),
        flip_ms: p99(|s| s.flip_ms),
    }
}
