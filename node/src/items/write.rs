//! The one write path of every sharded table (users, login names, signup outcomes,
//! posts, tasks, files): one transaction on the primary of the slot's shard that changes
//! the rows *and* appends to the shard's change feed, then a consistency token for the
//! commit.
//!
//! Every row written passes the slot's fence in the database (migration V4). When a
//! rebalance has moved the slot, or is flipping it, the fence refuses the write
//! ([`StoreError::SlotMoved`]); [`retry_write`] then reloads placement from the
//! catalog and runs the whole write again on the slot's new shard, so the client sees a
//! slower answer, not an error.

use std::future::Future;
use std::time::{Duration, Instant};

use deadpool_postgres::{Object, Transaction};
use strata_router::{Lsn, RouteHash, ShardConn, ShardId, Topology};
use tokio_postgres::types::ToSql;

use crate::accounts::store::StoreError;
use crate::auth::ids::UserId;
use crate::consistency::ConsistencyToken;

/// A committed change and the token that reads it back.
#[derive(Debug, Clone)]
pub struct Committed<T> {
    pub value: T,
    pub token: ConsistencyToken,
}

impl<T> Committed<T> {
    /// `value`, committed on `shard` at (or before) `lsn`.
    pub fn new(shard: ShardId, lsn: Lsn, value: T) -> Self {
        Self {
            value,
            token: ConsistencyToken::single(shard, lsn),
        }
    }

    /// `value`, with the token of the commit just made on `conn` (a connection to
    /// `shard`'s primary). The write is committed whatever happens here: when the WAL
    /// position cannot be read, the token asks for the primary itself instead (no
    /// replica reaches it), so the write still reads back, and it is still a success
    /// (a client told otherwise would retry it and write it twice).
    pub async fn after_commit(conn: &Object, shard: ShardId, value: T) -> Self {
        let lsn = match commit_position(conn).await {
            Ok(lsn) => lsn,
            Err(e) => {
                tracing::warn!(shard = %shard, error = %e, "committed, but the WAL position is unreadable; the token points reads at the primary");
                Lsn(u64::MAX)
            }
        };
        Self {
            value,
            token: ConsistencyToken::single(shard, lsn),
        }
    }
}

/// What a change did to an item, as the change feed records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedOp {
    Upsert,
    Delete,
}

/// How long a write keeps retrying while its slot moves. A flip holds writes for
/// milliseconds; this covers a rebalance killed mid-flip until the operator resumes it.
const MOVE_PATIENCE: Duration = Duration::from_secs(10);

/// Runs a write until it goes through, again from the start after an outcome that
/// rolled it back and will pass: the fence of its slot refused it
/// ([`StoreError::SlotMoved`]: placement is reloaded from the catalog first), or its
/// pooled connection turned out dead before the commit was sent
/// ([`StoreError::ConnectionLost`]: the next attempt takes another connection). Other
/// outcomes return at once.
pub async fn retry_write<T, F, Fut>(topology: &Topology, mut attempt: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let started = Instant::now();
    let mut pause = Duration::from_millis(2);
    let mut lost = 0;
    loop {
        let seen_epoch = topology.epoch();
        match attempt().await {
            Err(StoreError::SlotMoved) if started.elapsed() < MOVE_PATIENCE => {
                metrics::counter!("strata_write_fence_retries_total").increment(1);
                let reloaded = topology.reload_catalog(seen_epoch).await;
                if !matches!(reloaded, Ok(epoch) if epoch > seen_epoch) {
                    // The catalog has not flipped yet (the source released the fence a
                    // moment before): wait a little for it.
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(20));
                }
            }
            Err(StoreError::ConnectionLost(e)) if lost < LOST_CONNECTION_RETRIES => {
                lost += 1;
                metrics::counter!("strata_write_connection_retries_total").increment(1);
                tracing::debug!(error = %e, "a pooled connection was dead; writing again on another");
            }
            outcome => return outcome,
        }
    }
}

/// How many dead connections one write steps over before it gives up with a 503 (a
/// pool can hold several after its host restarted; a host that is really down fails
/// the next connect instead).
const LOST_CONNECTION_RETRIES: usize = 4;

/// Commits a write's transaction. A connection lost while the commit was on its way
/// leaves the outcome unknown ([`StoreError::CommitUncertain`]), which is never retried.
pub async fn commit(tx: Transaction<'_>) -> Result<(), StoreError> {
    tx.commit().await.map_err(|e| match StoreError::from(e) {
        StoreError::ConnectionLost(e) => StoreError::CommitUncertain(e),
        other => other,
    })
}

/// The primary of the shard that owns a route hash, with the shard's id.
pub async fn primary_for(
    topology: &Topology,
    hash: RouteHash,
) -> Result<(ShardConn, ShardId), StoreError> {
    let shard = topology.shard_for(hash);
    let conn = topology.primary(&shard).await?;
    Ok((conn, shard))
}

/// The primary of an owner's shard, with the shard's id.
pub async fn owner_primary(
    topology: &Topology,
    owner: &UserId,
) -> Result<(ShardConn, ShardId, RouteHash), StoreError> {
    let hash = owner.route_hash();
    let (conn, shard) = primary_for(topology, hash).await?;
    Ok((conn, shard, hash))
}

/// A connection for reading a route hash's rows: a replica of its shard that has
/// replayed the caller's token for that shard and the slot's read floor (set when the
/// slot moved in), else the primary.
pub async fn reader_for(
    topology: &Topology,
    hash: RouteHash,
    token: &ConsistencyToken,
) -> Result<ShardConn, StoreError> {
    // The client has seen a newer placement than this node: catch up first (briefly:
    // the catalog may answer with an epoch a moment older than the one that was sent).
    for _ in 0..5 {
        let known = topology.epoch();
        if token.epoch() <= known {
            break;
        }
        if let Err(e) = topology.reload_catalog(known).await {
            tracing::warn!(error = %e, "cannot reload the catalog for a newer token");
            break;
        }
        if topology.epoch() < token.epoch() {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    let shard = topology.shard_for(hash);
    let needed = token.required(&shard).max(topology.read_floor(hash.slot()));
    let (conn, _) = topology.reader(&shard, needed).await?;
    Ok(conn)
}

/// A connection for reading an owner's items (see [`reader_for`]).
pub async fn owner_reader(
    topology: &Topology,
    owner: &UserId,
    token: &ConsistencyToken,
) -> Result<ShardConn, StoreError> {
    reader_for(topology, owner.route_hash(), token).await
}

/// Appends a change to the shard's feed inside the write's transaction.
pub async fn append_feed(
    tx: &Transaction<'_>,
    hash: RouteHash,
    entity: &str,
    entity_id: &str,
    version: i64,
    op: FeedOp,
    payload: Option<serde_json::Value>,
) -> Result<(), StoreError> {
    let op = match op {
        FeedOp::Upsert => "upsert",
        FeedOp::Delete => "delete",
    };
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO change_feed (route_hash, slot, entity, entity_id, version, op, payload) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .await?,
        &[
            &hash.as_i64(),
            &i32::from(hash.slot().get()),
            &entity,
            &entity_id,
            &version,
            &op,
            &payload,
        ],
    )
    .await?;
    Ok(())
}

/// Appends the change to the shard's feed inside the item's transaction, and commits
/// the two together.
pub async fn commit_with_feed(
    tx: Transaction<'_>,
    hash: RouteHash,
    entity: &str,
    entity_id: &str,
    version: i64,
    op: FeedOp,
    payload: Option<serde_json::Value>,
) -> Result<(), StoreError> {
    append_feed(&tx, hash, entity, entity_id, version, op, payload).await?;
    commit(tx).await
}

/// `at` as Postgres stores a `timestamptz` and reads it back (UTC, whole microseconds),
/// so a row built by the node equals the row a later read returns.
pub fn as_stored(at: time::OffsetDateTime) -> time::OffsetDateTime {
    let at = at.to_offset(time::UtcOffset::UTC);
    at.replace_nanosecond(at.nanosecond() / 1_000 * 1_000)
        .expect("whole microseconds are a valid nanosecond")
}

/// The feed entry of a new item, known before its row is written (the row's values are
/// all chosen by the node, so its payload is too).
#[derive(Debug, Clone)]
pub struct NewItemFeed<'a> {
    pub entity: &'a str,
    pub entity_id: &'a str,
    pub payload: serde_json::Value,
}

/// `insert_sql` (one `INSERT` taking `item_params` parameters) and the new item's feed
/// entry as one statement: a data-modifying `WITH`, so both rows are written, fenced by
/// their triggers and committed together without a `BEGIN` and a `COMMIT` around them.
fn insert_and_feed_sql(insert_sql: &str, item_params: usize) -> String {
    let p = |i: usize| item_params + i;
    format!(
        "WITH item AS ({insert_sql}) \
         INSERT INTO change_feed (route_hash, slot, entity, entity_id, version, op, payload) \
         VALUES (${}, ${}, ${}, ${}, 1, 'upsert', ${})",
        p(1),
        p(2),
        p(3),
        p(4),
        p(5)
    )
}

/// Inserts a new item row (`insert_sql`, one statement) and its feed entry in one
/// transaction on the primary of `hash`'s shard, in one round trip: the two rows as one
/// statement (its own transaction), pipelined with the query of the WAL position, which
/// runs after that commit and so is at or past it. Retried like every write
/// ([`retry_write`]): the fence refuses the statement and nothing is written, so it runs
/// again on the slot's new shard; a connection lost once the statement was on its way
/// leaves the outcome unknown ([`StoreError::CommitUncertain`]).
pub async fn insert_with_feed(
    topology: &Topology,
    hash: RouteHash,
    insert_sql: &str,
    params: &[&(dyn ToSql + Sync)],
    feed: &NewItemFeed<'_>,
) -> Result<(ShardId, Lsn), StoreError> {
    let sql = insert_and_feed_sql(insert_sql, params.len());
    retry_write(topology, || async {
        let (conn, shard) = primary_for(topology, hash).await?;
        let write = conn.prepare_cached(&sql).await?;
        let position = conn.prepare_cached(COMMIT_POSITION).await?;
        let (route_hash, slot) = (hash.as_i64(), i32::from(hash.slot().get()));
        let feed_params: [&(dyn ToSql + Sync); 5] = [
            &route_hash,
            &slot,
            &feed.entity,
            &feed.entity_id,
            &feed.payload,
        ];
        let all: Vec<&(dyn ToSql + Sync)> = params.iter().copied().chain(feed_params).collect();
        let (written, lsn) = tokio::join!(
            conn.execute(&write, &all),
            conn.query_one(&position, &[])
        );
        written.map_err(|e| match StoreError::from(e) {
            StoreError::ConnectionLost(e) => StoreError::CommitUncertain(e),
            other => other,
        })?;
        let lsn = lsn
            .map_err(|e| e.to_string())
            .and_then(|row| parse_position(row.get(0)))
            .unwrap_or_else(|e| {
                tracing::warn!(shard = %shard, error = %e, "committed, but the WAL position is unreadable; the token points reads at the primary");
                Lsn(u64::MAX)
            });
        drop(conn);
        Ok((shard, lsn))
    })
    .await
}

/// A change to a non-item row (a user, a login name, a signup outcome), as the feed
/// records it: no payload (nothing searchable, and no secrets in the feed).
#[derive(Debug, Clone, Copy)]
pub struct RowChange<'a> {
    pub hash: RouteHash,
    pub entity: &'a str,
    pub entity_id: &'a str,
    pub op: FeedOp,
}

/// Runs one statement on the primary of `change.hash`'s shard and, when it touched a
/// row, its feed entry, in one transaction, retried while the slot moves. Returns the
/// rows the statement touched.
pub async fn execute_logged(
    topology: &Topology,
    change: RowChange<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, StoreError> {
    retry_write(topology, || async {
        let (mut conn, _) = primary_for(topology, change.hash).await?;
        let tx = conn.transaction().await?;
        let touched = tx.execute(&tx.prepare_cached(sql).await?, params).await?;
        if touched > 0 {
            append_feed(
                &tx,
                change.hash,
                change.entity,
                change.entity_id,
                0,
                change.op,
                None,
            )
            .await?;
        }
        commit(tx).await?;
        Ok(touched)
    })
    .await
}

/// A WAL position at or past every commit made before it on the same connection.
const COMMIT_POSITION: &str = "SELECT pg_current_wal_insert_lsn()::text";

/// After a commit on `conn`, a WAL position at or past that commit.
async fn commit_position(conn: &Object) -> Result<Lsn, String> {
    let statement = conn
        .prepare_cached(COMMIT_POSITION)
        .await
        .map_err(|e| e.to_string())?;
    let row = conn
        .query_one(&statement, &[])
        .await
        .map_err(|e| e.to_string())?;
    parse_position(row.get(0))
}

fn parse_position(lsn: &str) -> Result<Lsn, String> {
    lsn.parse()
        .map_err(|_| format!("unreadable WAL position {lsn:?}"))
}
