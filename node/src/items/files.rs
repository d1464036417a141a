//! File metadata on the owner's shard (name, type, size, SHA-256, where the bytes are),
//! every change with its entry in the change feed. The bytes themselves are in the
//! object store.

use serde::Serialize;
use strata_router::Topology;
use time::OffsetDateTime;

use crate::accounts::store::StoreError;
use crate::auth::ids::UserId;
use crate::consistency::ConsistencyToken;
use crate::items::cursor::{Cursor, page_start, split_page};
use crate::items::ids::ItemId;
use crate::items::write::{
    Committed, FeedOp, commit_with_feed, owner_primary, owner_reader, retry_write,
};

/// `File`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FileMeta {
    pub id: String,
    pub owner_id: String,
    pub name: String,
    pub content_type: String,
    pub size: i64,
    pub sha256: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Where the bytes are in the object store (not part of the API).
    #[serde(skip)]
    pub object_key: String,
}

/// A stored upload's facts.
#[derive(Debug, Clone)]
pub struct NewFile {
    pub id: ItemId,
    pub name: String,
    /// The content of a small text file, carried in the change feed for search (the
    /// bytes themselves stay in the object store).
    pub text: Option<String>,
    pub content_type: String,
    pub size: i64,
    pub sha256: String,
    pub object_key: String,
}

const COLUMNS: &str = "id, owner_id, name, content_type, size, sha256, created_at, object_key";

fn from_row(row: &tokio_postgres::Row) -> FileMeta {
    FileMeta {
        id: row.get(0),
        owner_id: row.get(1),
        name: row.get(2),
        content_type: row.get(3),
        size: row.get(4),
        sha256: row.get(5),
        created_at: row.get(6),
        object_key: row.get(7),
    }
}

/// File metadata over the shard router.
pub struct FileStore<'a> {
    topology: &'a Topology,
}

impl<'a> FileStore<'a> {
    /// A store over a topology.
    pub fn new(topology: &'a Topology) -> Self {
        Self { topology }
    }

    /// Records an uploaded file.
    pub async fn create(
        &self,
        owner: &UserId,
        file: NewFile,
    ) -> Result<Committed<FileMeta>, StoreError> {
        retry_write(self.topology, || self.create_once(owner, file.clone())).await
    }

    /// One attempt of [`Self::create`].
    async fn create_once(
        &self,
        owner: &UserId,
        file: NewFile,
    ) -> Result<Committed<FileMeta>, StoreError> {
        let (mut conn, shard, hash) = owner_primary(self.topology, owner).await?;
        let tx = conn.transaction().await?;
        let row = tx
            .query_one(
                &tx.prepare_cached(&format!(
                    "INSERT INTO files (id, owner_id, route_hash, slot, name, content_type, size, sha256, object_key) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {COLUMNS}"
                )).await?,
                &[
                    &file.id.as_str(),
                    &owner.as_str(),
                    &hash.as_i64(),
                    &i32::from(hash.slot().get()),
                    &file.name,
                    &file.content_type,
                    &file.size,
                    &file.sha256,
                    &file.object_key,
                ],
            )
            .await?;
        let meta = from_row(&row);
        let mut payload = serde_json::to_value(&meta).expect("file metadata serializes");
        if let Some(text) = file.text {
            payload["text"] = serde_json::Value::String(text);
        }
        commit_with_feed(tx, hash, "file", &meta.id, 1, FeedOp::Upsert, Some(payload)).await?;
        Ok(Committed::after_commit(&conn, shard, meta).await)
    }

    /// The owner's file by id.
    pub async fn get(
        &self,
        owner: &UserId,
        id: &ItemId,
        token: &ConsistencyToken,
    ) -> Result<Option<FileMeta>, StoreError> {
        let conn = owner_reader(self.topology, id.owner(), token).await?;
        let row = conn
            .query_opt(
                &conn
                    .prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM files WHERE id = $1 AND owner_id = $2"
                    ))
                    .await?,
                &[&id.as_str(), &owner.as_str()],
            )
            .await?;
        Ok(row.as_ref().map(from_row))
    }

    /// Deletes the owner's file metadata; returns it (for the object key) or `None`.
    pub async fn delete(
        &self,
        owner: &UserId,
        id: &ItemId,
    ) -> Result<Option<Committed<FileMeta>>, StoreError> {
        retry_write(self.topology, || self.delete_once(owner, id)).await
    }

    /// One attempt of [`Self::delete`].
    async fn delete_once(
        &self,
        owner: &UserId,
        id: &ItemId,
    ) -> Result<Option<Committed<FileMeta>>, StoreError> {
        let (mut conn, shard, hash) = owner_primary(self.topology, id.owner()).await?;
        let tx = conn.transaction().await?;
        let row = tx
            .query_opt(
                &tx.prepare_cached(&format!(
                    "DELETE FROM files WHERE id = $1 AND owner_id = $2 RETURNING {COLUMNS}"
                ))
                .await?,
                &[&id.as_str(), &owner.as_str()],
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        let meta = from_row(&row);
        commit_with_feed(tx, hash, "file", &meta.id, 2, FeedOp::Delete, None).await?;
        Ok(Some(Committed::after_commit(&conn, shard, meta).await))
    }

    /// One page of the owner's files, newest first.
    pub async fn list(
        &self,
        owner: &UserId,
        after: Option<&Cursor>,
        limit: i64,
        token: &ConsistencyToken,
    ) -> Result<(Vec<FileMeta>, Option<Cursor>), StoreError> {
        let conn = owner_reader(self.topology, owner, token).await?;
        let (before_at, before_id) = page_start(after);
        let rows = conn
            .query(
                &conn.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM files WHERE owner_id = $1 AND (created_at, id) < ($2, $3) \
                     ORDER BY created_at DESC, id DESC LIMIT $4"
                )).await?,
                &[&owner.as_str(), &before_at, &before_id, &(limit + 1)],
            )
            .await?;
        let page = split_page(
            rows.iter().map(from_row).collect(),
            limit,
            |item: &FileMeta| (item.created_at, item.id.clone()),
        );
        Ok(page)
    }
}
