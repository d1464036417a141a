//! Reading a slot's rows and changes on one shard and writing them on another, in as few
//! round trips as the protocol allows. Statements are prepared once per connection and
//! sent pipelined, and transactions are opened and committed by hand so that a commit
//! travels with the statement after it: the catch-up inside the fence costs one round
//! trip on the source, and three on the target (begin, writes, commit with the target's
//! position), whatever the number of tables.

use std::collections::BTreeMap;

use deadpool_postgres::Object;
use futures::future::try_join_all;
use serde_json::Value;
use tokio_postgres::SimpleQueryMessage;
use tokio_postgres::types::ToSql;

use crate::conn::ShardConn;
use crate::rebalance::tables::{SHARDED_TABLES, ShardedTable, table_of_entity};

/// A transaction opened by hand on a pooled connection, so its statements can be
/// pipelined and its commit sent together with what follows it. A connection left inside
/// a transaction (an error, a cancelled future) is dropped, never returned to the pool.
pub struct HandTransaction {
    conn: Option<ShardConn>,
}

impl HandTransaction {
    /// Sends `BEGIN <mode>; <setup>` in one round trip.
    pub async fn begin(
        conn: ShardConn,
        mode: &str,
        setup: &str,
    ) -> Result<Self, tokio_postgres::Error> {
        let tx = Self { conn: Some(conn) };
        tx.client()
            .batch_execute(&format!("BEGIN {mode}; {setup}"))
            .await?;
        Ok(tx)
    }

    /// The connection, for statements inside the transaction.
    pub fn client(&self) -> &Object {
        self.conn
            .as_ref()
            .expect("an open transaction has its connection")
    }

    /// Runs `before` (a statement without parameters, or nothing), commits, then runs
    /// `after` (nothing, or one query) outside the transaction: one round trip. Returns
    /// the first row of `after` as text columns.
    pub async fn commit_between(
        mut self,
        before: &str,
        after: &str,
    ) -> Result<Vec<Option<String>>, tokio_postgres::Error> {
        let sql = format!(
            "{before}{}COMMIT; {after}",
            if before.is_empty() { "" } else { "; " }
        );
        let messages = self.client().simple_query(&sql).await?;
        self.conn.take();
        Ok(first_row(messages))
    }
}

/// The first row a simple query returned, as text columns (empty when it returned none).
pub fn first_row(messages: Vec<SimpleQueryMessage>) -> Vec<Option<String>> {
    messages
        .into_iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_owned))
                    .collect(),
            ),
            _ => None,
        })
        .unwrap_or_default()
}

impl Drop for HandTransaction {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            // Still inside the transaction: the session ends with the connection and the
            // server rolls the transaction back.
            conn.discard();
        }
    }
}

/// One table's part of what a slot read returned.
#[derive(Debug, Clone)]
pub struct TableRows {
    pub table: &'static ShardedTable,
    /// The keys whose rows are replaced on the target: every row of the slot when
    /// `None` (a full copy), else the keys the changes named (a catch-up).
    pub keys: Option<Vec<String>>,
    /// The rows as they are now (a JSON array of records).
    pub rows: Value,
}

/// A slot's rows and feed entries, as one read saw them.
#[derive(Debug, Clone)]
pub struct SlotData {
    /// The snapshot of the read (`pg_current_snapshot()`), for the next catch-up.
    pub snapshot: String,
    /// The feed entries read, in order (a JSON array of `change_feed` records).
    pub feed: Value,
    pub tables: Vec<TableRows>,
}

impl SlotData {
    /// How many feed entries the read found.
    pub fn changes(&self) -> usize {
        self.feed.as_array().map_or(0, Vec::len)
    }

    /// How many rows it carries.
    pub fn rows(&self) -> i64 {
        self.tables
            .iter()
            .map(|t| t.rows.as_array().map_or(0, Vec::len) as i64)
            .sum()
    }
}

/// The feed entries of the slot not visible in snapshot `$2` (every entry when `$2` is
/// null): their transactions committed after the snapshot was taken.
const FEED_SINCE: &str = "f.slot = $1 AND ($2::text IS NULL OR \
     (f.xid >= pg_snapshot_xmin($2::text::pg_snapshot) \
      AND NOT pg_visible_in_snapshot(f.xid, $2::text::pg_snapshot)))";

/// Reads a slot on `client` (inside a transaction whose view is stable: a
/// repeatable-read snapshot, or the fence with no writer left): every row when `since`
/// is `None`, else the feed entries committed since that snapshot and the rows they
/// name. All statements go in one pipelined round trip.
pub async fn read_slot(
    client: &Object,
    slot: i32,
    since: Option<&str>,
) -> Result<SlotData, tokio_postgres::Error> {
    let snapshot_sql = "SELECT pg_current_snapshot()::text";
    let feed_sql = format!(
        "SELECT coalesce(jsonb_agg(to_jsonb(f) ORDER BY seq), '[]'::jsonb) FROM change_feed f \
         WHERE {FEED_SINCE}"
    );
    let table_sql: Vec<String> = SHARDED_TABLES
        .iter()
        .map(|t| {
            format!(
                "SELECT coalesce(jsonb_agg(to_jsonb(t)), '[]'::jsonb) FROM {name} t \
                 WHERE t.slot = $1 AND ($2::text IS NULL OR t.{key} IN \
                 (SELECT f.entity_id FROM change_feed f WHERE f.entity = '{entity}' AND {FEED_SINCE}))",
                name = t.name,
                key = t.key,
                entity = t.entity,
            )
        })
        .collect();
    let snapshot_stmt = client.prepare_cached(snapshot_sql).await?;
    let feed_stmt = client.prepare_cached(&feed_sql).await?;
    let mut table_stmts = Vec::with_capacity(table_sql.len());
    for sql in &table_sql {
        table_stmts.push(client.prepare_cached(sql).await?);
    }
    let params: [&(dyn ToSql + Sync); 2] = [&slot, &since];
    let snapshot = client.query_one(&snapshot_stmt, &[]);
    let feed = client.query_one(&feed_stmt, &params);
    let tables = try_join_all(table_stmts.iter().map(|s| client.query_one(s, &params)));
    let (snapshot, feed, tables) = futures::try_join!(snapshot, feed, tables)?;
    let feed: Value = feed.get(0);
    let keys = since.map(|_| changed_keys(&feed));
    let tables = SHARDED_TABLES
        .iter()
        .zip(tables)
        .filter_map(|(table, row)| {
            let keys = match &keys {
                None => None,
                Some(by_table) => Some(by_table.get(table.name)?.clone()),
            };
            Some(TableRows {
                table,
                keys,
                rows: row.get(0),
            })
        })
        .collect();
    Ok(SlotData {
        snapshot: snapshot.get(0),
        feed,
        tables,
    })
}

/// The keys named by feed entries, per table.
fn changed_keys(feed: &Value) -> BTreeMap<&'static str, Vec<String>> {
    let mut keys: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for entry in feed.as_array().into_iter().flatten() {
        let entity = entry["entity"].as_str().unwrap_or_default();
        let (Some(table), Some(id)) = (table_of_entity(entity), entry["entity_id"].as_str()) else {
            continue;
        };
        keys.entry(table.name).or_default().push(id.to_owned());
    }
    keys
}

/// Writes a slot read on another shard (inside a transaction that passes the fence):
/// replaces the rows of each table (all of the slot's, or those of the keys named),
/// appends copies of the feed entries (new sequence numbers; consumers drop what they
/// already hold by version) and, when given, sets the slot's fence state. Pipelined.
pub async fn write_slot(
    client: &Object,
    slot: i32,
    data: &SlotData,
    state: Option<&str>,
) -> Result<(), tokio_postgres::Error> {
    let mut per_table = Vec::with_capacity(data.tables.len());
    for part in &data.tables {
        let delete = client
            .prepare_cached(&format!(
                "DELETE FROM {} WHERE slot = $1 AND ($2::text[] IS NULL OR {} = ANY($2))",
                part.table.name, part.table.key
            ))
            .await?;
        let insert = client
            .prepare_cached(&format!(
                "INSERT INTO {0} SELECT * FROM jsonb_populate_recordset(NULL::{0}, $1)",
                part.table.name
            ))
            .await?;
        per_table.push((part, delete, insert));
    }
    let feed_copy = client
        .prepare_cached(
            "INSERT INTO change_feed (route_hash, slot, entity, entity_id, version, op, payload, committed_at) \
             SELECT route_hash, slot, entity, entity_id, version, op, payload, committed_at \
             FROM jsonb_populate_recordset(NULL::change_feed, $1) ORDER BY seq",
        )
        .await?;
    let set_state = client
        .prepare_cached(
            "INSERT INTO shard_slots (slot, state) VALUES ($1, $2) \
             ON CONFLICT (slot) DO UPDATE SET state = $2, changed_at = now()",
        )
        .await?;
    // Futures polled in order send their statements in order: each table's delete goes
    // before its insert, and the state change last.
    type Params<'a> = Vec<&'a (dyn ToSql + Sync)>;
    let mut runs = Vec::new();
    for (part, delete, insert) in &per_table {
        let keys: Params = vec![&slot, &part.keys];
        runs.push(client.execute_raw(delete, keys));
        let rows: Params = vec![&part.rows];
        runs.push(client.execute_raw(insert, rows));
    }
    if data.changes() > 0 {
        let feed: Params = vec![&data.feed];
        runs.push(client.execute_raw(&feed_copy, feed));
    }
    if let Some(state) = &state {
        let state: Params = vec![&slot, state];
        runs.push(client.execute_raw(&set_state, state));
    }
    try_join_all(runs).await?;
    Ok(())
}
