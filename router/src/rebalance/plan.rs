//! `strata shard plan`: which slots the ring would move for the catalog's current
//! shards and weights, with the rows and bytes that would travel per shard pair.
//! Reads only.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::catalog::CatalogState;
use crate::ids::{ShardId, Slot};
use crate::rebalance::tables::SHARDED_TABLES;
use crate::topology::{RouterError, Topology};

/// One slot to move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedMove {
    pub slot: Slot,
    pub from: ShardId,
    pub to: ShardId,
}

/// What moves between one pair of shards.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PairTotals {
    pub from: String,
    pub to: String,
    pub slots: usize,
    pub rows: i64,
    pub bytes: i64,
}

/// The whole plan.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub epoch: u64,
    pub moves: Vec<PlannedMove>,
    pub pairs: Vec<PairTotals>,
}

/// The slots whose owner differs from the ring's placement of the current shards.
pub fn planned_moves(
    state: &CatalogState,
) -> Result<Vec<PlannedMove>, crate::catalog::CatalogError> {
    let desired = state.desired_placement()?;
    Ok(state
        .placement
        .moves_to(&desired)
        .map(|(slot, from, to)| PlannedMove {
            slot,
            from: from.clone(),
            to: to.clone(),
        })
        .collect())
}

/// The plan with rows and bytes counted on each source shard's primary.
pub async fn plan(topology: &Topology, state: &CatalogState) -> Result<Plan, PlanError> {
    let moves = planned_moves(state)?;
    let mut by_source: BTreeMap<ShardId, Vec<i32>> = BTreeMap::new();
    for m in &moves {
        by_source
            .entry(m.from.clone())
            .or_default()
            .push(i32::from(m.slot.get()));
    }
    let mut per_slot: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
    for (shard, slots) in &by_source {
        let conn = topology.primary(shard).await?;
        for table in SHARDED_TABLES {
            let rows = conn
                .query(
                    &format!(
                        "SELECT slot, count(*), coalesce(sum(pg_column_size(t)), 0)::bigint \
                         FROM {} t WHERE slot = ANY($1) GROUP BY slot",
                        table.name
                    ),
                    &[slots],
                )
                .await?;
            for row in rows {
                let entry = per_slot.entry(row.get(0)).or_default();
                entry.0 += row.get::<_, i64>(1);
                entry.1 += row.get::<_, i64>(2);
            }
        }
    }
    let mut pairs: BTreeMap<(String, String), PairTotals> = BTreeMap::new();
    for m in &moves {
        let key = (m.from.to_string(), m.to.to_string());
        let pair = pairs.entry(key.clone()).or_insert_with(|| PairTotals {
            from: key.0,
            to: key.1,
            ..PairTotals::default()
        });
        let (rows, bytes) = per_slot
            .get(&i32::from(m.slot.get()))
            .copied()
            .unwrap_or_default();
        pair.slots += 1;
        pair.rows += rows;
        pair.bytes += bytes;
    }
    Ok(Plan {
        epoch: state.epoch,
        moves,
        pairs: pairs.into_values().collect(),
    })
}

/// Why a plan could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
    #[error(transparent)]
    Router(#[from] RouterError),
    #[error("counting rows: {0}")]
    Db(#[from] tokio_postgres::Error),
}
