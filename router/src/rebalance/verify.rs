//! `strata shard verify`: source and target of every moved or moving slot compared row
//! by row, like Vitess VDiff. Each row is reduced to an MD5 of its JSON form on its own
//! server; counts and a per-table checksum summarize, and the ids that differ are listed.
//!
//! Rows that legitimately changed since the two copies parted are left out: for a
//! flipped slot, rows the target's feed shows changed after the flip (the source copy is
//! frozen there); for a moving slot, rows the source changed after the last recorded
//! snapshot (the next catch-up carries them).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::catalog::{MovePhase, MoveRecord};
use crate::ids::{ShardId, Slot};
use crate::rebalance::mover::MoveError;
use crate::rebalance::tables::{SHARDED_TABLES, ShardedTable};
use crate::topology::Topology;

/// One table of one slot, compared.
#[derive(Debug, Clone, Serialize)]
pub struct TableDiff {
    pub table: &'static str,
    pub source_rows: usize,
    pub target_rows: usize,
    pub source_checksum: String,
    pub target_checksum: String,
    /// Rows left out because they changed since the copies parted.
    pub in_flight: usize,
    /// Ids present on one side only, or different.
    pub differing: Vec<String>,
}

/// One slot, compared.
#[derive(Debug, Clone, Serialize)]
pub struct SlotDiff {
    pub slot: Slot,
    pub source: ShardId,
    pub target: ShardId,
    pub phase: MovePhase,
    pub tables: Vec<TableDiff>,
}

impl SlotDiff {
    /// True when no table differs.
    pub fn clean(&self) -> bool {
        self.tables.iter().all(|t| t.differing.is_empty())
    }
}

/// Compares one move's slot on its source and target. Moves already cleaned up or
/// cancelled have nothing left to compare and give `None`.
pub async fn verify_move(
    topology: &Topology,
    record: &MoveRecord,
) -> Result<Option<SlotDiff>, MoveError> {
    let slot = record.slot;
    let db = |source| MoveError::Db { slot, source };
    let slot_i = i32::from(slot.get());
    let changed: Vec<(String, String)> = match record.phase {
        MovePhase::Cleaned | MovePhase::Cancelled => return Ok(None),
        MovePhase::Flipped => {
            let target = topology.primary(&record.target).await?;
            target
                .query(
                    "SELECT DISTINCT entity, entity_id FROM change_feed WHERE slot = $1 AND seq > $2",
                    &[&slot_i, &record.flip_feed_seq.unwrap_or(i64::MAX)],
                )
                .await
                .map_err(db)?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect()
        }
        _ => match &record.snapshot {
            None => return Ok(None), // nothing copied yet
            Some(snapshot) => {
                let source = topology.primary(&record.source).await?;
                source
                    .query(
                        "SELECT DISTINCT entity, entity_id FROM change_feed WHERE slot = $1 \
                         AND xid >= pg_snapshot_xmin($2::text::pg_snapshot) \
                         AND NOT pg_visible_in_snapshot(xid, $2::text::pg_snapshot)",
                        &[&slot_i, snapshot],
                    )
                    .await
                    .map_err(db)?
                    .iter()
                    .map(|r| (r.get(0), r.get(1)))
                    .collect()
            }
        },
    };
    let mut tables = Vec::new();
    for table in SHARDED_TABLES {
        let skip: BTreeSet<&str> = changed
            .iter()
            .filter(|(entity, _)| entity == table.entity)
            .map(|(_, id)| id.as_str())
            .collect();
        let source = row_digests(topology, &record.source, table, slot_i)
            .await
            .map_err(|e| e.for_slot(slot))?;
        let target = row_digests(topology, &record.target, table, slot_i)
            .await
            .map_err(|e| e.for_slot(slot))?;
        tables.push(compare(table.name, &source, &target, &skip));
    }
    Ok(Some(SlotDiff {
        slot,
        source: record.source.clone(),
        target: record.target.clone(),
        phase: record.phase,
        tables,
    }))
}

enum DigestError {
    Router(crate::topology::RouterError),
    Db(tokio_postgres::Error),
}

impl DigestError {
    fn for_slot(self, slot: Slot) -> MoveError {
        match self {
            Self::Router(e) => e.into(),
            Self::Db(source) => MoveError::Db { slot, source },
        }
    }
}

async fn row_digests(
    topology: &Topology,
    shard: &ShardId,
    table: &ShardedTable,
    slot: i32,
) -> Result<BTreeMap<String, String>, DigestError> {
    let conn = topology.primary(shard).await.map_err(DigestError::Router)?;
    let rows = conn
        .query(
            &format!(
                "SELECT {key}, md5(to_jsonb(t)::text) FROM {name} t WHERE slot = $1",
                key = table.key,
                name = table.name
            ),
            &[&slot],
        )
        .await
        .map_err(DigestError::Db)?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Compares two sides' row digests, leaving out the ids in `skip`.
fn compare(
    table: &'static str,
    source: &BTreeMap<String, String>,
    target: &BTreeMap<String, String>,
    skip: &BTreeSet<&str>,
) -> TableDiff {
    let keep = |m: &BTreeMap<String, String>| -> BTreeMap<String, String> {
        m.iter()
            .filter(|(id, _)| !skip.contains(id.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let (source, target) = (keep(source), keep(target));
    let ids: BTreeSet<&String> = source.keys().chain(target.keys()).collect();
    let differing = ids
        .into_iter()
        .filter(|id| source.get(*id) != target.get(*id))
        .cloned()
        .collect();
    TableDiff {
        table,
        source_rows: source.len(),
        target_rows: target.len(),
        source_checksum: checksum(&source),
        target_checksum: checksum(&target),
        in_flight: skip.len(),
        differing,
    }
}

/// One digest for a table's rows: XXH3 over the ids and row digests, in id order.
fn checksum(rows: &BTreeMap<String, String>) -> String {
    use xxhash_rust::xxh3::Xxh3;
    let mut hasher = Xxh3::new();
    for (id, digest) in rows {
        hasher.update(id.as_bytes());
        hasher.update(digest.as_bytes());
    }
    format!("{:016x}", hasher.digest())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn equal_sides_are_clean_and_differences_are_named() {
        let a = rows(&[("1", "x"), ("2", "y")]);
        let same = compare("posts", &a, &a.clone(), &BTreeSet::new());
        assert!(same.differing.is_empty());
        assert_eq!(same.source_checksum, same.target_checksum);

        let b = rows(&[("1", "x"), ("2", "changed"), ("3", "extra")]);
        let diff = compare("posts", &a, &b, &BTreeSet::new());
        assert_eq!(diff.differing, vec!["2".to_string(), "3".to_string()]);
        assert_ne!(diff.source_checksum, diff.target_checksum);
    }

    #[test]
    fn rows_in_flight_are_left_out() {
        let a = rows(&[("1", "x"), ("2", "y")]);
        let b = rows(&[("1", "x"), ("2", "newer")]);
        let skip = BTreeSet::from(["2"]);
        let diff = compare("posts", &a, &b, &skip);
        assert!(diff.differing.is_empty());
        assert_eq!(diff.in_flight, 1);
    }
}
