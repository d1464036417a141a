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

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::catalog::{Catalog, CatalogError, CatalogWriter, MovePhase, MoveRecord};
use crate::ids::{ShardId, Slot};
use crate::lsn::Lsn;
use crate::rebalance::slot_io::{HandTransaction, SlotData, first_row, read_slot, write_slot};
use crate::rebalance::tables::SHARDED_TABLES;
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
    /// Where the pause went.
    pub pause_steps: PauseSteps,
}

/// A move's write pause, step by step, in milliseconds: waiting for the fence lock (the
/// writers in flight finish), the last catch-up until the target is open, releasing the
/// source (its commit), flipping the catalog.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct PauseSteps {
    pub lock_ms: f64,
    pub catch_up_ms: f64,
    pub release_ms: f64,
    pub flip_ms: f64,
}

impl PauseSteps {
    /// The steps from the time elapsed since the lock was asked for at the end of each.
    fn from_marks(
        locked: Duration,
        caught_up: Duration,
        released: Duration,
        flipped: Duration,
    ) -> Self {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        Self {
            lock_ms: ms(locked),
            catch_up_ms: ms(caught_up.saturating_sub(locked)),
            release_ms: ms(released.saturating_sub(caught_up)),
            flip_ms: ms(flipped.saturating_sub(released)),
        }
    }

    /// The whole pause.
    pub fn total_ms(&self) -> f64 {
        self.lock_ms + self.catch_up_ms + self.release_ms + self.flip_ms
    }
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
            return Ok(report(&record, PauseSteps::default()));
        }
        let mut snapshot = record
            .snapshot
            .clone()
            .ok_or_else(|| MoveError::Inconsistent {
                slot,
                detail: "no copy snapshot recorded".into(),
            })?;
        for _ in 0..MAX_CATCH_UP_ROUNDS {
            let (next, changes) = self.catch_up(&record, &snapshot).await?;
            snapshot = next;
            CatalogWriter::new(catalog)
                .record_phase(slot, MovePhase::CatchingUp, Some(&snapshot), None)
                .await?;
            if changes <= SMALL_ROUND {
                break;
            }
        }
        record.snapshot = Some(snapshot);
        let steps = self.fence_and_flip(&record, catalog).await?;
        Ok(report(&record, steps))
    }

    /// Step 1: marks the target incoming and copies the slot's rows in one snapshot.
    /// Returns the snapshot and how many rows were copied.
    async fn copy(&self, record: &MoveRecord) -> Result<(String, i64), MoveError> {
        let slot = record.slot;
        let db = |source| MoveError::Db { slot, source };
        let slot_i = i32::from(slot.get());
        let target = self.topology.primary(&record.target).await?;
        set_slot_state(&***target, slot_i, "incoming")
            .await
            .map_err(db)?;
        let data = self.read_source(record, None).await?;
        maybe_pause(PausePoint::Copy).await;
        let write = HandTransaction::begin(target, "", MOVER_WRITES)
            .await
            .map_err(db)?;
        write_slot(write.client(), slot_i, &data, None)
            .await
            .map_err(db)?;
        write.commit_between("", "").await.map_err(db)?;
        Ok((data.snapshot.clone(), data.rows()))
    }

    /// Step 2: applies to the target every change not visible in `since`. Returns the
    /// new snapshot and how many changes it applied.
    async fn catch_up(
        &self,
        record: &MoveRecord,
        since: &str,
    ) -> Result<(String, usize), MoveError> {
        let slot = record.slot;
        let db = |source| MoveError::Db { slot, source };
        let data = self.read_source(record, Some(since)).await?;
        if data.changes() > 0 {
            let target = self.topology.primary(&record.target).await?;
            let write = HandTransaction::begin(target, "", MOVER_WRITES)
                .await
                .map_err(db)?;
            write_slot(write.client(), i32::from(slot.get()), &data, None)
                .await
                .map_err(db)?;
            write.commit_between("", "").await.map_err(db)?;
        }
        Ok((data.snapshot.clone(), data.changes()))
    }

    /// Reads the slot on the source in one repeatable-read snapshot (see [`read_slot`]).
    async fn read_source(
        &self,
        record: &MoveRecord,
        since: Option<&str>,
    ) -> Result<SlotData, MoveError> {
        let slot = record.slot;
        let db = |source| MoveError::Db { slot, source };
        let source = self.topology.primary(&record.source).await?;
        let read = HandTransaction::begin(source, "ISOLATION LEVEL REPEATABLE READ READ ONLY", "")
            .await
            .map_err(db)?;
        let data = read_slot(read.client(), i32::from(slot.get()), since)
            .await
            .map_err(db)?;
        read.commit_between("", "").await.map_err(db)?;
        Ok(data)
    }

    /// Step 3: fences the slot on the source, catches up completely (inside the fence:
    /// no writer of the slot is left, so the fence's own transaction reads it), opens
    /// the slot on the target, marks it moved on the source and flips the catalog.
    /// Returns how long writes to the slot were held, step by step.
    async fn fence_and_flip(
        &self,
        record: &MoveRecord,
        catalog: &mut tokio_postgres::Client,
    ) -> Result<PauseSteps, MoveError> {
        let slot = record.slot;
        let db = |source| MoveError::Db { slot, source };
        let slot_i = i32::from(slot.get());
        let since = record.snapshot.clone().unwrap_or_default();
        let source = self.topology.primary(&record.source).await?;
        // A writer stuck for long would hold the fence open: give up and retry later.
        let fence = HandTransaction::begin(source, "", "SET LOCAL lock_timeout = '5s'")
            .await
            .map_err(db)?;
        let target = self.topology.primary(&record.target).await?;
        // Recorded before the fence is taken, so the pause holds no catalog write but
        // the flip; a resumed move finds the source's state and carries on either way.
        CatalogWriter::new(catalog)
            .record_phase(slot, MovePhase::Flipping, None, None)
            .await?;
        // Writers queue behind the lock from the moment it is asked for.
        let fenced_at = Instant::now();
        fence
            .client()
            .batch_execute(&format!(
                "SELECT pg_advisory_xact_lock({FENCE_LOCK_SPACE}, {slot_i})"
            ))
            .await
            .map_err(db)?;
        let locked = fenced_at.elapsed();
        maybe_pause(PausePoint::Fence).await;
        let data = read_slot(fence.client(), slot_i, Some(&since))
            .await
            .map_err(db)?;
        let write = HandTransaction::begin(target, "", MOVER_WRITES)
            .await
            .map_err(db)?;
        write_slot(write.client(), slot_i, &data, Some("owned"))
            .await
            .map_err(db)?;
        let position = write
            .commit_between("", TARGET_POSITION)
            .await
            .map_err(db)?;
        let (floor, feed_seq) = parse_position(slot, &position)?;
        let caught_up = fenced_at.elapsed();
        fence
            .commit_between(
                &format!(
                    "UPDATE shard_slots SET state = 'moved', changed_at = now() WHERE slot = {slot_i}"
                ),
                "",
            )
            .await
            .map_err(db)?;
        let released = fenced_at.elapsed();
        let so_far = released.as_secs_f64() * 1000.0;
        CatalogWriter::new(catalog)
            .flip(slot, &record.target, floor, feed_seq, so_far)
            .await?;
        // The writers that waited learn the flip by reloading; record the whole pause.
        let flipped = fenced_at.elapsed();
        let steps = PauseSteps::from_marks(locked, caught_up, released, flipped);
        metrics::histogram!("strata_rebalance_pause_seconds").record(flipped.as_secs_f64());
        Ok(steps)
    }

    /// The target's WAL position and last feed sequence now.
    async fn target_position(&self, record: &MoveRecord) -> Result<(Lsn, i64), MoveError> {
        let slot = record.slot;
        let target = self.topology.primary(&record.target).await?;
        let rows = target
            .simple_query(TARGET_POSITION)
            .await
            .map_err(|source| MoveError::Db { slot, source })?;
        parse_position(slot, &first_row(rows))
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

fn report(record: &MoveRecord, steps: PauseSteps) -> MoveReport {
    MoveReport {
        slot: record.slot,
        source: record.source.clone(),
        target: record.target.clone(),
        rows_copied: record.rows_copied,
        pause_ms: steps.total_ms(),
        pause_steps: steps,
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

/// A transaction on the target that passes the fence (the mover's own writes).
async fn mover_write(
    conn: &mut deadpool_postgres::Object,
) -> Result<deadpool_postgres::Transaction<'_>, tokio_postgres::Error> {
    let write = conn.transaction().await?;
    write.batch_execute("SET LOCAL strata.mover = 'on'").await?;
    Ok(write)
}

/// The settings of the mover's own writes: they pass the fence (see migration V4).
const MOVER_WRITES: &str = "SET LOCAL strata.mover = 'on'";

/// The target's WAL position and last feed sequence, after the catch-up committed: the
/// slot's read floor, and where the feed stood at the flip.
const TARGET_POSITION: &str = "SELECT pg_current_wal_insert_lsn()::text, \
                               coalesce((SELECT max(seq) FROM change_feed), 0)::text";

fn parse_position(slot: Slot, row: &[Option<String>]) -> Result<(Lsn, i64), MoveError> {
    let inconsistent = |detail: String| MoveError::Inconsistent { slot, detail };
    let [Some(floor), Some(seq)] = row else {
        return Err(inconsistent(format!(
            "the target's position is unreadable: {row:?}"
        )));
    };
    let floor = floor
        .parse()
        .map_err(|e: crate::lsn::LsnParseError| inconsistent(e.to_string()))?;
    let seq = seq
        .parse()
        .map_err(|e: std::num::ParseIntError| inconsistent(e.to_string()))?;
    Ok((floor, seq))
}
