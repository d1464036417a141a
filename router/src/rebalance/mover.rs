//! One slot's move from its source shard to its target, step by step, each step
//! recorded in the catalog before the next and each safe to run again:
//!
//! 1. **Copy.** The target marks the slot `incoming` (its fence refuses writes to it).
//!    The slot's rows of every sharded table, and its change-feed history, are read from
//!    the source in one repeatable-read snapshot while writes go on, and replace whatever
//!    the target held of the slot. The snapshot is recorded.
//! 2. **Catch up.** Every feed entry whose transaction was not visible in the recorded
//!    snapshot names a row that may have changed: those rows are read again in a new
//!    snapshot and replaced on the target, and the entries appended to the target's feed.
//!    Asking "not visible in my snapshot" rather than "sequence after my cursor" misses
//!    no transaction that took its sequence number early and committed late.
//! 3. **Fence and flip.** The mover takes the slot's fence lock exclusively on the
//!    source: writers in flight finish, new writers to that slot wait. A last catch-up
//!    (now complete) opens the slot on the target; the source marks it `moved` and
//!    releases the lock, and the catalog names the target (epoch + 1, with the target's
//!    WAL position as the slot's read floor). Waiting writers find `moved`, reload the
//!    catalog and retry on the target.
//! 4. **Clean up** (later, `strata shard cleanup`): the source's copy is deleted, with
//!    no change-feed entries, so search sees nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Object;
use serde_json::Value;

use crate::catalog::{Catalog, CatalogError, CatalogWriter, MovePhase, MoveRecord};
use crate::ids::{ShardId, Slot};
use crate::lsn::Lsn;
use crate::rebalance::tables::{SHARDED_TABLES, ShardedTable, table_of_entity};
use crate::topology::{RouterError, Topology};

/// The advisory-lock space of the slot fence (see migration V4).
pub const FENCE_LOCK_SPACE: i32 = 21332;

/// Catch-up rounds before the fence, at most; the fence's own round is usually tiny.
const MAX_CATCH_UP_ROUNDS: usize = 5;

/// A round that found this few changes is close enough to fence.
const SMALL_ROUND: usize = 50;

/// Why a move stopped.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Router(#[from] RouterError),
    #[error("slot {slot}: {source}")]
    Db {
        slot: Slot,
        source: tokio_postgres::Error,
    },
    #[error("slot {slot}: {detail}")]
    Inconsistent { slot: Slot, detail: String },
}

/// Where an operator can make the mover stop for a while (for fault tests: a test kills
/// the mover while it sleeps there). Read from `STRATA_MOVER_PAUSE=copy|fence` and
/// `STRATA_MOVER_PAUSE_MS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PausePoint {
    Copy,
    Fence,
}

fn pause_at(point: PausePoint) -> Option<Duration> {
    let wanted = match std::env::var("STRATA_MOVER_PAUSE").ok()?.as_str() {
        "copy" => PausePoint::Copy,
        "fence" => PausePoint::Fence,
        _ => return None,
    };
    let ms = std::env::var("STRATA_MOVER_PAUSE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    (wanted == point).then(|| Duration::from_millis(ms))
}

async fn maybe_pause(point: PausePoint) {
    if let Some(pause) = pause_at(point) {
        tracing::warn!(
            ?point,
            ms = pause.as_millis() as u64,
            "mover pausing (STRATA_MOVER_PAUSE)"
        );
        tokio::time::sleep(pause).await;
    }
}

/// What a finished move measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MoveReport {
    pub slot: Slot,
    pub source: ShardId,
    pub target: ShardId,
    pub rows_copied: i64,
    /// How long writes to the slot were held by the fence, in milliseconds.
    pub pause_ms: f64,
}

/// Moves slots between the shards of a topology that follows the catalog.
#[derive(Clone)]
pub struct Mover {
    topology: Arc<Topology>,
    catalog: Catalog,
}

impl Mover {
    /// A mover over a topology (whose shards must include every catalog shard).
    pub fn new(topology: Arc<Topology>, catalog: Catalog) -> Self {
        Self { topology, catalog }
    }

    /// Runs a move from whatever phase it reached until its slot is flipped, recording
    /// its phases through `catalog` (a connection to the catalog's primary).
    pub async fn run(
        &self,
        mut record: MoveRecord,
        catalog: &mut tokio_postgres::Client,
    ) -> Result<MoveReport, MoveError> {
        let slot = record.slot;
        if record.phase == MovePhase::Copying {
            let (snapshot, rows) = self.copy(&record).await?;
            CatalogWriter::new(catalog)
                .record_phase(slot, MovePhase::CatchingUp, Some(&snapshot), Some(rows))
                .await?;
            record.snapshot = Some(snapshot);
            record.rows_copied = rows;
            record.phase = MovePhase::CatchingUp;
        }
        if record.phase == MovePhase::Flipping && self.source_state(&record).await? == "moved" {
            // Killed between releasing the fence and flipping the catalog: only the
            // catalog is left to change.
            let (floor, feed_seq) = self.target_position(&record).await?;
            CatalogWriter::new(catalog)
                .flip(slot, &record.target, floor, feed_seq, 0.0)
                .await?;
            return Ok(report(&record, 0.0));
        }
        let mut snapshot = record
            .snapshot
            .clone()
            .ok_or_else(|| MoveError::Inconsistent {
                slot,
                detail: "no copy snapshot recorded".into(),
            })?;
        for _ in 0..MAX_CATCH_UP_ROUNDS {
            let (next, changes) = self.catch_up(&record, &snapshot, false).await?;
            snapshot = next;
            CatalogWriter::new(catalog)
                .record_phase(slot, MovePhase::CatchingUp, Some(&snapshot), None)
                .await?;
            if changes <= SMALL_ROUND {
                break;
            }
        }
        record.snapshot = Some(snapshot);
        let pause_ms = self.fence_and_flip(&record, catalog).await?;
        Ok(report(&record, pause_ms))
    }

    /// Step 1: marks the target incoming and copies the slot's rows in one snapshot.
    /// Returns the snapshot and how many rows were copied.
    async fn copy(&self, record: &MoveRecord) -> Result<(String, i64), MoveError> {
        let slot = record.slot;
        let db = |source| MoveError::Db { slot, source };
        let slot_i = i32::from(slot.get());
        let mut target = self.topology.primary(&record.target).await?;
        set_slot_state(&**target, slot_i, "incoming")
            .await
            .map_err(db)?;
        let mut source = self.topology.primary(&record.source).await?;
        let (read, snapshot) = snapshot_read(&mut source).await.map_err(db)?;
        let mut tables = Vec::new();
        for table in SHARDED_TABLES {
            let rows = rows_json(&read, table, slot_i, None).await.map_err(db)?;
            tables.push((table, rows));
        }
        let feed = feed_json(&read, slot_i, None).await.map_err(db)?;
        read.commit().await.map_err(db)?;
        maybe_pause(PausePoint::Copy).await;
        let write = mover_write(&mut target).await.map_err(db)?;
        let mut copied = 0i64;
        for (table, rows) in &tables {
            copied += rows.as_array().map_or(0, Vec::len) as i64;
            replace_rows(&write, table, slot_i, None, rows)
                .await
                .map_err(db)?;
        }
        append_feed_copies(&write, &feed).await.map_err(db)?;
        write.commit().await.map_err(db)?;
        Ok((snapshot, copied))
    }

    /// Step 2: applies to the target every change not visible in `since`; with `open`,
    /// also opens the slot there (the fenced last round). Returns the new snapshot and
    /// how many changes it applied.
    async fn catch_up(
        &self,
        record: &MoveRecord,
        since: &str,
        open: bool,
    ) -> Result<(String, usize), MoveError> {
        let slot = record.slot;
        let db = |source| MoveError::Db { slot, source };
        let slot_i = i32::from(slot.get());
        let mut source = self.topology.primary(&record.source).await?;
        let (read, snapshot) = snapshot_read(&mut source).await.map_err(db)?;
        let feed = feed_json(&read, slot_i, Some(since)).await.map_err(db)?;
        let entries = feed.as_array().cloned().unwrap_or_default();
        let mut keys: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
        for entry in &entries {
            let entity = entry["entity"].as_str().unwrap_or_default();
            let Some(table) = table_of_entity(entity) else {
                continue;
            };
            if let Some(id) = entry["entity_id"].as_str() {
                keys.entry(table.name).or_default().push(id.to_owned());
            }
        }
        let mut changed = Vec::new();
        for table in SHARDED_TABLES {
            if let Some(ids) = keys.get(table.name) {
                let rows = rows_json(&read, table, slot_i, Some(ids))
                    .await
                    .map_err(db)?;
                changed.push((table, ids, rows));
            }
        }
        read.commit().await.map_err(db)?;
        let mut target = self.topology.primary(&record.target).await?;
        let write = mover_write(&mut target).await.map_err(db)?;
        for (table, ids, rows) in &changed {
            replace_rows(&write, table, slot_i, Some(ids), rows)
                .await
                .map_err(db)?;
        }
        append_feed_copies(&write, &feed).await.map_err(db)?;
        if open {
            set_slot_state(&*write, slot_i, "owned").await.map_err(db)?;
        }
        write.commit().await.map_err(db)?;
        Ok((snapshot, entries.len()))
    }

    /// Step 3: fences the slot on the source, catches up completely, opens the slot on
    /// the target, marks it moved on the source and flips the catalog. Returns how long
    /// writes to the slot were held, in milliseconds.
    async fn fence_and_flip(
        &self,
        record: &MoveRecord,
        catalog: &mut tokio_postgres::Client,
    ) -> Result<f64, MoveError> {
        let slot = record.slot;
        let db = |source| MoveError::Db { slot, source };
        let slot_i = i32::from(slot.get());
        let since = record.snapshot.clone().unwrap_or_default();
        let mut fence_conn: Object = self.topology.primary(&record.source).await?;
        let fence = fence_conn.transaction().await.map_err(db)?;
        // A writer stuck for long would hold the fence open: give up and retry later.
        fence
            .batch_execute("SET LOCAL lock_timeout = '5s'")
            .await
            .map_err(db)?;
        // Recorded before the fence is taken, so the pause holds no catalog write but
        // the flip; a resumed move finds the source's state and carries on either way.
        CatalogWriter::new(catalog)
            .record_phase(slot, MovePhase::Flipping, None, None)
            .await?;
        // Writers queue behind the lock from the moment it is asked for.
        let fenced_at = Instant::now();
        fence
            .execute(
                "SELECT pg_advisory_xact_lock($1, $2)",
                &[&FENCE_LOCK_SPACE, &slot_i],
            )
            .await
            .map_err(db)?;
        maybe_pause(PausePoint::Fence).await;
        self.catch_up(record, &since, true).await?;
        let (floor, feed_seq) = self.target_position(record).await?;
        fence
            .execute(
                "UPDATE shard_slots SET state = 'moved', changed_at = now() WHERE slot = $1",
                &[&slot_i],
            )
            .await
            .map_err(db)?;
        fence.commit().await.map_err(db)?;
        let pause_ms = fenced_at.elapsed().as_secs_f64() * 1000.0;
        CatalogWriter::new(catalog)
            .flip(slot, &record.target, floor, feed_seq, pause_ms)
            .await?;
        // The writers that waited learn the flip by reloading; record the whole pause.
        let pause_ms = fenced_at.elapsed().as_secs_f64() * 1000.0;
        metrics::histogram!("strata_rebalance_pause_seconds").record(pause_ms / 1000.0);
        Ok(pause_ms)
    }

    /// The target's WAL position and last feed sequence now.
    async fn target_position(&self, record: &MoveRecord) -> Result<(Lsn, i64), MoveError> {
        let slot = record.slot;
        let target = self.topology.primary(&record.target).await?;
        let row = target
            .query_one(
                "SELECT pg_current_wal_insert_lsn()::text, coalesce((SELECT max(seq) FROM change_feed), 0)",
                &[],
            )
            .await
            .map_err(|source| MoveError::Db { slot, source })?;
        let floor: String = row.get(0);
        let floor =
            floor
                .parse()
                .map_err(|e: crate::lsn::LsnParseError| MoveError::Inconsistent {
                    slot,
                    detail: e.to_string(),
                })?;
        Ok((floor, row.get(1)))
    }

    /// The slot's fence state on the move's source.
    async fn source_state(&self, record: &MoveRecord) -> Result<String, MoveError> {
        let slot = record.slot;
        let source = self.topology.primary(&record.source).await?;
        let row = source
            .query_opt(
                "SELECT state FROM shard_slots WHERE slot = $1",
                &[&i32::from(slot.get())],
            )
            .await
            .map_err(|source| MoveError::Db { slot, source })?;
        Ok(row.map(|r| r.get(0)).unwrap_or_default())
    }

    /// Gives up an unfinished move: the target forgets the slot, which stays on its
    /// source. A move whose source already let the slot go is finished instead.
    pub async fn cancel(&self, record: &MoveRecord) -> Result<bool, MoveError> {
        let slot = record.slot;
        let db = |source| MoveError::Db { slot, source };
        if record.phase == MovePhase::Flipping && self.source_state(record).await? == "moved" {
            let mut catalog = self.catalog.connect().await?;
            self.run(record.clone(), &mut catalog).await?;
            return Ok(false);
        }
        let slot_i = i32::from(slot.get());
        let mut target = self.topology.primary(&record.target).await?;
        let tx = mover_write(&mut target).await.map_err(db)?;
        tx.execute(
            "UPDATE shard_slots SET state = 'moved', changed_at = now() WHERE slot = $1",
            &[&slot_i],
        )
        .await
        .map_err(db)?;
        delete_slot_rows(&tx, slot_i).await.map_err(db)?;
        tx.commit().await.map_err(db)?;
        self.record(slot, MovePhase::Cancelled).await?;
        Ok(true)
    }

    /// Step 4: deletes the source's copy of a flipped slot, without feed entries.
    pub async fn clean_up(&self, record: &MoveRecord) -> Result<u64, MoveError> {
        let slot = record.slot;
        let db = |source| MoveError::Db { slot, source };
        let slot_i = i32::from(slot.get());
        let mut source = self.topology.primary(&record.source).await?;
        let tx = mover_write(&mut source).await.map_err(db)?;
        let deleted = delete_slot_rows(&tx, slot_i).await.map_err(db)?;
        tx.commit().await.map_err(db)?;
        self.record(slot, MovePhase::Cleaned).await?;
        Ok(deleted)
    }

    /// Records a move's new phase on a connection of its own.
    async fn record(&self, slot: Slot, phase: MovePhase) -> Result<(), MoveError> {
        let mut catalog = self.catalog.connect().await?;
        CatalogWriter::new(&mut catalog)
            .record_phase(slot, phase, None, None)
            .await?;
        Ok(())
    }
}

/// Deletes every sharded table's rows of a slot (not its feed history); returns how
/// many.
async fn delete_slot_rows(
    tx: &deadpool_postgres::Transaction<'_>,
    slot: i32,
) -> Result<u64, tokio_postgres::Error> {
    let mut deleted = 0;
    for table in SHARDED_TABLES {
        deleted += tx
            .execute(
                &format!("DELETE FROM {} WHERE slot = $1", table.name),
                &[&slot],
            )
            .await?;
    }
    Ok(deleted)
}

fn report(record: &MoveRecord, pause_ms: f64) -> MoveReport {
    MoveReport {
        slot: record.slot,
        source: record.source.clone(),
        target: record.target.clone(),
        rows_copied: record.rows_copied,
        pause_ms,
    }
}

/// Sets a slot's fence state on a shard (`incoming`, `owned` or `moved`).
async fn set_slot_state(
    conn: &impl tokio_postgres::GenericClient,
    slot: i32,
    state: &str,
) -> Result<(), tokio_postgres::Error> {
    conn.execute(
        "INSERT INTO shard_slots (slot, state) VALUES ($1, $2) \
         ON CONFLICT (slot) DO UPDATE SET state = $2, changed_at = now()",
        &[&slot, &state],
    )
    .await?;
    Ok(())
}

/// A repeatable-read, read-only transaction on the source and its snapshot.
async fn snapshot_read(
    conn: &mut Object,
) -> Result<(deadpool_postgres::Transaction<'_>, String), tokio_postgres::Error> {
    let read = conn
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let snapshot: String = read
        .query_one("SELECT pg_current_snapshot()::text", &[])
        .await?
        .get(0);
    Ok((read, snapshot))
}

/// A transaction on the target that passes the fence (the mover's own writes).
async fn mover_write(
    conn: &mut Object,
) -> Result<deadpool_postgres::Transaction<'_>, tokio_postgres::Error> {
    let write = conn.transaction().await?;
    write.batch_execute("SET LOCAL strata.mover = 'on'").await?;
    Ok(write)
}

/// The slot's rows of a table (only those with these keys, when given) as a JSON array.
async fn rows_json(
    read: &deadpool_postgres::Transaction<'_>,
    table: &ShardedTable,
    slot: i32,
    keys: Option<&Vec<String>>,
) -> Result<Value, tokio_postgres::Error> {
    let sql = format!(
        "SELECT coalesce(jsonb_agg(to_jsonb(t)), '[]'::jsonb) FROM {} t \
         WHERE slot = $1 AND ($2::text[] IS NULL OR {} = ANY($2))",
        table.name, table.key
    );
    Ok(read.query_one(&sql, &[&slot, &keys]).await?.get(0))
}

/// The slot's feed entries (only those not visible in `since`, when given), in order.
async fn feed_json(
    read: &deadpool_postgres::Transaction<'_>,
    slot: i32,
    since: Option<&str>,
) -> Result<Value, tokio_postgres::Error> {
    let sql = "SELECT coalesce(jsonb_agg(to_jsonb(f) ORDER BY seq), '[]'::jsonb) FROM change_feed f \
               WHERE slot = $1 AND ($2::text IS NULL OR (xid >= pg_snapshot_xmin($2::text::pg_snapshot) \
               AND NOT pg_visible_in_snapshot(xid, $2::text::pg_snapshot)))";
    Ok(read.query_one(sql, &[&slot, &since]).await?.get(0))
}

/// Replaces the target's rows of the slot (only those with these keys, when given) with
/// `rows`.
async fn replace_rows(
    write: &deadpool_postgres::Transaction<'_>,
    table: &ShardedTable,
    slot: i32,
    keys: Option<&Vec<String>>,
    rows: &Value,
) -> Result<(), tokio_postgres::Error> {
    write
        .execute(
            &format!(
                "DELETE FROM {} WHERE slot = $1 AND ($2::text[] IS NULL OR {} = ANY($2))",
                table.name, table.key
            ),
            &[&slot, &keys],
        )
        .await?;
    write
        .execute(
            &format!(
                "INSERT INTO {0} SELECT * FROM jsonb_populate_recordset(NULL::{0}, $1)",
                table.name
            ),
            &[rows],
        )
        .await?;
    Ok(())
}

/// Appends copies of source feed entries to the target's feed (new sequence numbers;
/// consumers drop what they already hold by version).
async fn append_feed_copies(
    tx: &deadpool_postgres::Transaction<'_>,
    entries: &Value,
) -> Result<(), tokio_postgres::Error> {
    if entries.as_array().is_none_or(Vec::is_empty) {
        return Ok(());
    }
    tx.execute(
        "INSERT INTO change_feed (route_hash, slot, entity, entity_id, version, op, payload, committed_at) \
         SELECT route_hash, slot, entity, entity_id, version, op, payload, committed_at \
         FROM jsonb_populate_recordset(NULL::change_feed, $1) ORDER BY seq",
        &[entries],
    )
    .await?;
    Ok(())
}
