//! The write path every item shares: one transaction on the owner's shard primary that
//! changes the item *and* appends to the shard's change feed, then a consistency token
//! for the commit.

use deadpool_postgres::{Object, Transaction};
use strata_router::{Lsn, RouteHash, ShardId, Topology};

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
    /// `value`, with the token of the commit just made on `conn` (a connection to
    /// `shard`'s primary).
    pub async fn after_commit(conn: &Object, shard: ShardId, value: T) -> Result<Self, StoreError> {
        Ok(Self {
            value,
            token: token_after_commit(conn, shard).await?,
        })
    }
}

/// What a change did to an item, as the change feed records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedOp {
    Upsert,
    Delete,
}

/// The primary of an owner's shard, with the shard's id.
pub async fn owner_primary(
    topology: &Topology,
    owner: &UserId,
) -> Result<(Object, ShardId, RouteHash), StoreError> {
    let hash = owner.route_hash();
    let shard = topology.shard_for(hash).clone();
    let conn = topology.primary(&shard).await?;
    Ok((conn, shard, hash))
}

/// A connection for reading an owner's items: a replica of the owner's shard that has
/// replayed the caller's token for that shard, else the primary.
pub async fn owner_reader(
    topology: &Topology,
    owner: &UserId,
    token: &ConsistencyToken,
) -> Result<Object, StoreError> {
    let shard = topology.shard_for(owner.route_hash());
    let (conn, _) = topology.reader(shard, token.required(shard)).await?;
    Ok(conn)
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
    let op = match op {
        FeedOp::Upsert => "upsert",
        FeedOp::Delete => "delete",
    };
    tx.execute(
        "INSERT INTO change_feed (route_hash, slot, entity, entity_id, version, op, payload) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
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
    tx.commit().await?;
    Ok(())
}

/// After a commit on `conn`, the token naming a WAL position at or past that commit.
async fn token_after_commit(conn: &Object, shard: ShardId) -> Result<ConsistencyToken, StoreError> {
    let lsn: String = conn
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await?
        .get(0);
    let lsn: Lsn = lsn
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("unreadable WAL position {lsn:?}")))?;
    Ok(ConsistencyToken::single(shard, lsn))
}
