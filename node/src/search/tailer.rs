//! Follows every shard's change feed (from replicas) into the index, in sequence order,
//! committing in batches with the cursors in the commit payload.
//!
//! Sequence numbers are taken at insert, not at commit, so a transaction still running
//! can hold a lower number than one already visible. The tailer therefore stops at a
//! gap and notes the replica's snapshot taken right after it saw the gap: every
//! transaction that could still fill the gap was running then (it took its number before
//! the later, visible entry did). The gap is passed only once all of those have ended
//! (`pg_snapshot_xmin` now at or past that snapshot's `xmax`): whatever filled it is then
//! visible, and what is still missing was rolled back. However late a transaction
//! commits (a lock wait, an fsync stall, synchronous replication), it is not skipped.
//!
//! The cursor moves only past changes the index has applied: one that fails to apply is
//! read again on the next round.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_router::{ShardId, Topology};

use crate::search::index::{Change, IndexError, SearchIndex};

/// How often an idle feed is polled.
const IDLE_POLL: Duration = Duration::from_millis(200);

/// Changes read per batch.
const BATCH: i64 = 2000;

/// While a feed is behind, how often applied changes are committed (and become
/// searchable). At the head of every feed, each round commits at once.
const COMMIT_EVERY: Duration = Duration::from_secs(1);

/// After a round that applied changes, the wait before the next one. Under a steady
/// stream of writes a round would otherwise read a handful of changes and commit a
/// segment for them, many times a second, and the index's merges would take a core
/// (measured: 28 % of the machine's CPU at 1,200 task writes/s with two nodes); paced,
/// each commit carries a batch. An idle feed is still polled every [`IDLE_POLL`].
const BUSY_PACE: Duration = Duration::from_millis(250);

/// Where each shard's feed stands.
struct FeedState {
    cursor: i64,
    /// The last read reached the end of the feed.
    at_head: bool,
    /// The replica's snapshot taken just after the gap right after `cursor` was first
    /// seen, if one is open.
    gap: Option<String>,
}

/// Follows the feeds until the task is dropped.
pub async fn follow(topology: Arc<Topology>, index: Arc<SearchIndex>) {
    let mut saved = index.cursors();
    for (shard, cursor) in &saved {
        metrics::gauge!("strata_search_resumed_cursor", "shard" => shard.clone())
            .set(*cursor as f64);
    }
    tracing::info!(cursors = ?saved, "following the change feeds from the saved cursors");
    let mut feeds: BTreeMap<ShardId, FeedState> = BTreeMap::new();
    let mut uncommitted = 0usize;
    let mut last_commit = Instant::now();
    loop {
        if index.take_rebuild_request() {
            match index.clear() {
                Ok(()) => {
                    uncommitted = 0;
                    saved.clear();
                    for feed in feeds.values_mut() {
                        *feed = FeedState {
                            cursor: 0,
                            at_head: false,
                            gap: None,
                        };
                    }
                    tracing::info!("search index cleared; rebuilding from the start of every feed");
                    metrics::counter!("strata_search_rebuilds_total").increment(1);
                }
                Err(e) => {
                    tracing::error!(error = %e, "could not clear the search index for a rebuild")
                }
            }
        }
        follow_shards(&topology, &mut feeds, &saved);
        let mut applied_any = false;
        for (shard, state) in feeds.iter_mut() {
            match read_batch(&topology, shard, state).await {
                Ok(changes) if changes.is_empty() => {}
                Ok(changes) => {
                    let read = changes.len();
                    let (index, shard_id) = (index.clone(), shard.clone());
                    // Indexing is CPU work: off the async workers. Stops at the first
                    // change that fails, so the cursor never passes an unapplied one.
                    let applied = tokio::task::spawn_blocking(move || {
                        let mut last = None;
                        for (seq, change) in changes {
                            if let Some(Err(e)) = change.as_ref().map(|c| index.apply(c)) {
                                tracing::warn!(shard = %shard_id, seq, error = %e, "could not index a change; retrying it next round");
                                break;
                            }
                            last = Some(seq);
                        }
                        last
                    })
                    .await;
                    match applied {
                        Ok(Some(last)) => {
                            let count = usize::try_from(last - state.cursor).unwrap_or(read);
                            state.cursor = last;
                            applied_any = true;
                            uncommitted += count.min(read);
                        }
                        Ok(None) => state.at_head = false,
                        Err(e) => tracing::error!(error = %e, "the indexing task failed"),
                    }
                }
                Err(e) => {
                    tracing::debug!(shard = %shard, error = %e, "change feed not readable now")
                }
            }
        }
        let all_at_head = feeds.values().all(|f| f.at_head);
        if uncommitted > 0 && (all_at_head || last_commit.elapsed() >= COMMIT_EVERY) {
            let cursors: BTreeMap<String, i64> = feeds
                .iter()
                .map(|(s, f)| (s.to_string(), f.cursor))
                .collect();
            let committing = index.clone();
            let to_save = cursors.clone();
            let committed = tokio::task::spawn_blocking(move || committing.commit(&to_save))
                .await
                .unwrap_or_else(|e| Err(IndexError::Directory(format!("commit task: {e}"))));
            match committed {
                Ok(()) => {
                    uncommitted = 0;
                    saved.clear();
                    last_commit = Instant::now();
                    for (shard, cursor) in &cursors {
                        metrics::gauge!("strata_search_cursor", "shard" => shard.clone())
                            .set(*cursor as f64);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "search commit failed"),
            }
        }
        if uncommitted == 0 && all_at_head && !index.caught_up() {
            index.mark_caught_up();
            tracing::info!("search index caught up with every change feed");
        }
        tokio::time::sleep(if applied_any { BUSY_PACE } else { IDLE_POLL }).await;
    }
}

/// Keeps one feed per shard of the topology: shards added to the cluster are followed
/// from their saved cursor (or the start), removed ones are dropped.
fn follow_shards(
    topology: &Topology,
    feeds: &mut BTreeMap<ShardId, FeedState>,
    saved: &BTreeMap<String, i64>,
) {
    let shards = topology.shard_ids();
    feeds.retain(|id, _| shards.contains(id));
    for shard in shards {
        feeds.entry(shard).or_insert_with_key(|id| FeedState {
            cursor: saved.get(id.as_str()).copied().unwrap_or(0),
            at_head: false,
            gap: None,
        });
    }
}

/// The next contiguous run of changes after the cursor, passing the gap right after it
/// only once no transaction that could fill it is still running (see the module docs).
async fn read_batch(
    topology: &Topology,
    shard: &ShardId,
    state: &mut FeedState,
) -> Result<Vec<(i64, Option<Change>)>, String> {
    let (conn, _) = topology
        .reader(shard, None)
        .await
        .map_err(|e| e.to_string())?;
    let mut may_pass_gap = match &state.gap {
        None => false,
        Some(seen) => conn
            .query_one(
                &conn
                    .prepare_cached(
                        "SELECT pg_snapshot_xmin(pg_current_snapshot()) >= pg_snapshot_xmax($1::text::pg_snapshot)",
                    )
                    .await
                    .map_err(|e| e.to_string())?,
                &[seen],
            )
            .await
            .map_err(|e| e.to_string())?
            .get(0),
    };
    let statement = conn
        .prepare_cached(
            "SELECT seq, entity, entity_id, version, op, payload FROM change_feed \
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .await
        .map_err(|e| e.to_string())?;
    let rows = conn
        .query(&statement, &[&state.cursor, &BATCH])
        .await
        .map_err(|e| e.to_string())?;
    if rows.is_empty() {
        // Nothing after the cursor: no lag, and no second round trip to say so (an idle
        // node polls every feed five times a second).
        publish_lag(shard, 0, 0.0);
    } else {
        record_lag(&conn, shard, state.cursor).await;
    }
    let full = rows.len() == BATCH as usize;
    let mut out = Vec::with_capacity(rows.len());
    let mut expected = state.cursor + 1;
    let mut stopped_at_gap = false;
    for row in rows {
        let seq: i64 = row.get(0);
        if seq != expected {
            if !may_pass_gap {
                stopped_at_gap = true;
                break;
            }
            may_pass_gap = false; // a later gap waits its own turn
        }
        let (entity, op): (String, String) = (row.get(1), row.get(4));
        // Every row advances the cursor; only items are searchable.
        let change = matches!(entity.as_str(), "post" | "task" | "file").then(|| Change {
            entity,
            entity_id: row.get(2),
            version: row.get(3),
            deleted: op == "delete",
            payload: row.get(5),
        });
        out.push((seq, change));
        expected = seq + 1;
    }
    if stopped_at_gap {
        if out.is_empty() && state.gap.is_some() {
            // Still waiting on the gap noted earlier.
        } else {
            // A new gap (right after what this batch applies): note who could fill it.
            let snapshot: String = conn
                .query_one("SELECT pg_current_snapshot()::text", &[])
                .await
                .map_err(|e| e.to_string())?
                .get(0);
            state.gap = Some(snapshot);
        }
    } else {
        state.gap = None;
    }
    state.at_head = !full && !stopped_at_gap;
    Ok(out)
}

/// Publishes how far the index is behind a shard's feed: in sequence numbers, and in
/// seconds since the oldest change not yet applied was written.
async fn record_lag(conn: &deadpool_postgres::Object, shard: &ShardId, cursor: i64) {
    let Ok(statement) = conn
        .prepare_cached(
            "SELECT coalesce(max(seq), 0), coalesce(extract(epoch FROM now() - min(committed_at) \
             FILTER (WHERE seq > $1)), 0)::float8 FROM change_feed WHERE seq > $1 - 1",
        )
        .await
    else {
        return;
    };
    let lag = conn.query_one(&statement, &[&cursor]).await;
    if let Ok(row) = lag {
        let (head, seconds): (i64, f64) = (row.get(0), row.get(1));
        publish_lag(shard, (head - cursor).max(0), seconds.max(0.0));
    }
}

/// Sets a shard's search lag gauges.
fn publish_lag(shard: &ShardId, sequences: i64, seconds: f64) {
    let labels = [("shard", shard.to_string())];
    metrics::gauge!("strata_search_lag_sequence", &labels).set(sequences as f64);
    metrics::gauge!("strata_search_lag_seconds", &labels).set(seconds);
}
