//! Tasks on their owner's shard. Private to the owner; every change with its entry in
//! the change feed.

use serde::Serialize;
use strata_router::Topology;
use time::OffsetDateTime;

use crate::accounts::store::StoreError;
use crate::auth::ids::UserId;
use crate::consistency::ConsistencyToken;
use crate::items::cursor::{Cursor, page_start, split_page};
use crate::items::ids::ItemId;
use crate::items::write::{
    Committed, FeedOp, NewItemFeed, as_stored, commit_with_feed, insert_with_feed, owner_primary,
    owner_reader, retry_write,
};

/// `Task`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Task {
    pub id: String,
    pub owner_id: String,
    pub title: String,
    pub notes: String,
    #[serde(with = "time::serde::rfc3339::option")]
    pub due_at: Option<OffsetDateTime>,
    pub done: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    pub version: i64,
}

/// A validated partial update; `due_at: Some(None)` clears the due date.
#[derive(Debug, Clone, Default)]
pub struct TaskChanges {
    pub title: Option<String>,
    pub notes: Option<String>,
    pub due_at: Option<Option<OffsetDateTime>>,
    pub done: Option<bool>,
}

/// Which tasks a list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    Open,
    Done,
    All,
}

const COLUMNS: &str = "id, owner_id, title, notes, due_at, done, created_at, updated_at, version";

fn from_row(row: &tokio_postgres::Row) -> Task {
    Task {
        id: row.get(0),
        owner_id: row.get(1),
        title: row.get(2),
        notes: row.get(3),
        due_at: row.get(4),
        done: row.get(5),
        created_at: row.get(6),
        updated_at: row.get(7),
        version: row.get(8),
    }
}

fn feed_payload(task: &Task) -> Option<serde_json::Value> {
    Some(serde_json::to_value(task).expect("tasks serialize"))
}

/// Tasks over the shard router.
pub struct TaskStore<'a> {
    topology: &'a Topology,
}

impl<'a> TaskStore<'a> {
    /// A store over a topology.
    pub fn new(topology: &'a Topology) -> Self {
        Self { topology }
    }

    /// Creates a task.
    pub async fn create(
        &self,
        owner: &UserId,
        title: &str,
        notes: &str,
        due_at: Option<OffsetDateTime>,
    ) -> Result<Committed<Task>, StoreError> {
        let hash = owner.route_hash();
        let now = as_stored(OffsetDateTime::now_utc());
        let task = Task {
            id: ItemId::generate(owner).as_str().to_owned(),
            owner_id: owner.as_str().to_owned(),
            title: title.to_owned(),
            notes: notes.to_owned(),
            due_at: due_at.map(as_stored),
            done: false,
            created_at: now,
            updated_at: now,
            version: 1,
        };
        let feed = NewItemFeed {
            entity: "task",
            entity_id: &task.id,
            payload: serde_json::to_value(&task).expect("tasks serialize"),
        };
        let (shard, lsn) = insert_with_feed(
            self.topology,
            hash,
            "INSERT INTO tasks (id, owner_id, route_hash, slot, title, notes, due_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
            &[
                &task.id,
                &task.owner_id,
                &hash.as_i64(),
                &i32::from(hash.slot().get()),
                &task.title,
                &task.notes,
                &task.due_at,
                &now,
            ],
            &feed,
        )
        .await?;
        Ok(Committed::new(shard, lsn, task))
    }

    /// The owner's task by id.
    pub async fn get(
        &self,
        owner: &UserId,
        id: &ItemId,
        token: &ConsistencyToken,
    ) -> Result<Option<Task>, StoreError> {
        let conn = owner_reader(self.topology, id.owner(), token).await?;
        let row = conn
            .query_opt(
                &conn
                    .prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM tasks WHERE id = $1 AND owner_id = $2"
                    ))
                    .await?,
                &[&id.as_str(), &owner.as_str()],
            )
            .await?;
        Ok(row.as_ref().map(from_row))
    }

    /// Applies changes to the owner's task; `None` when there is no such task.
    pub async fn update(
        &self,
        owner: &UserId,
        id: &ItemId,
        changes: TaskChanges,
    ) -> Result<Option<Committed<Task>>, StoreError> {
        retry_write(self.topology, || {
            self.update_once(owner, id, changes.clone())
        })
        .await
    }

    /// One attempt of [`Self::update`].
    async fn update_once(
        &self,
        owner: &UserId,
        id: &ItemId,
        changes: TaskChanges,
    ) -> Result<Option<Committed<Task>>, StoreError> {
        let (mut conn, shard, hash) = owner_primary(self.topology, id.owner()).await?;
        let tx = conn.transaction().await?;
        let set_due = changes.due_at.is_some();
        let due = changes.due_at.flatten();
        let row = tx
            .query_opt(
                &tx.prepare_cached(&format!(
                    "UPDATE tasks SET title = coalesce($3, title), notes = coalesce($4, notes), \
                     due_at = CASE WHEN $5 THEN $6 ELSE due_at END, done = coalesce($7, done), \
                     updated_at = now(), version = version + 1 \
                     WHERE id = $1 AND owner_id = $2 RETURNING {COLUMNS}"
                ))
                .await?,
                &[
                    &id.as_str(),
                    &owner.as_str(),
                    &changes.title,
                    &changes.notes,
                    &set_due,
                    &due,
                    &changes.done,
                ],
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        let task = from_row(&row);
        commit_with_feed(
            tx,
            hash,
            "task",
            &task.id,
            task.version,
            FeedOp::Upsert,
            feed_payload(&task),
        )
        .await?;
        Ok(Some(Committed::after_commit(&conn, shard, task).await))
    }

    /// Deletes the owner's task; `None` when there is no such task.
    pub async fn delete(
        &self,
        owner: &UserId,
        id: &ItemId,
    ) -> Result<Option<Committed<()>>, StoreError> {
        retry_write(self.topology, || self.delete_once(owner, id)).await
    }

    /// One attempt of [`Self::delete`].
    async fn delete_once(
        &self,
        owner: &UserId,
        id: &ItemId,
    ) -> Result<Option<Committed<()>>, StoreError> {
        let (mut conn, shard, hash) = owner_primary(self.topology, id.owner()).await?;
        let tx = conn.transaction().await?;
        let row = tx
            .query_opt(
                &tx.prepare_cached(
                    "DELETE FROM tasks WHERE id = $1 AND owner_id = $2 RETURNING version",
                )
                .await?,
                &[&id.as_str(), &owner.as_str()],
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        let version: i64 = row.get(0);
        commit_with_feed(
            tx,
            hash,
            "task",
            id.as_str(),
            version + 1,
            FeedOp::Delete,
            None,
        )
        .await?;
        Ok(Some(Committed::after_commit(&conn, shard, ()).await))
    }

    /// One page of the owner's tasks, newest first.
    pub async fn list(
        &self,
        owner: &UserId,
        status: StatusFilter,
        after: Option<&Cursor>,
        limit: i64,
        token: &ConsistencyToken,
    ) -> Result<(Vec<Task>, Option<Cursor>), StoreError> {
        let conn = owner_reader(self.topology, owner, token).await?;
        let (before_at, before_id) = page_start(after);
        let done: Option<bool> = match status {
            StatusFilter::Open => Some(false),
            StatusFilter::Done => Some(true),
            StatusFilter::All => None,
        };
        let rows = conn
            .query(
                &conn.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM tasks WHERE owner_id = $1 AND ($2::boolean IS NULL OR done = $2) \
                     AND (created_at, id) < ($3, $4) ORDER BY created_at DESC, id DESC LIMIT $5"
                )).await?,
                &[&owner.as_str(), &done, &before_at, &before_id, &(limit + 1)],
            )
            .await?;
        let page = split_page(rows.iter().map(from_row).collect(), limit, |item: &Task| {
            (item.created_at, item.id.clone())
        });
        Ok(page)
    }
}
