//! Posts on their author's shard: create, read (from a replica fresh enough for the
//! caller's consistency token), update, delete and list, every change with its entry in
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

/// Who may read a post.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    Public,
    Private,
}

impl Visibility {
    /// The value stored in the `visibility` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Private => "private",
        }
    }
}

/// `Post`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Post {
    pub id: String,
    pub author_id: String,
    pub title: String,
    pub body: String,
    pub tags: Vec<String>,
    pub visibility: Visibility,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    pub version: i64,
}

/// The fields of a new post, already validated.
#[derive(Debug, Clone)]
pub struct NewPost {
    pub title: String,
    pub body: String,
    pub tags: Vec<String>,
    pub visibility: Visibility,
}

/// A validated partial update.
#[derive(Debug, Clone, Default)]
pub struct PostChanges {
    pub title: Option<String>,
    pub body: Option<String>,
    pub tags: Option<Vec<String>>,
    pub visibility: Option<Visibility>,
}

const COLUMNS: &str =
    "id, owner_id, title, body, tags, visibility, created_at, updated_at, version";

fn from_row(row: &tokio_postgres::Row) -> Post {
    let visibility: &str = row.get(5);
    Post {
        id: row.get(0),
        author_id: row.get(1),
        title: row.get(2),
        body: row.get(3),
        tags: row.get(4),
        visibility: if visibility == "public" {
            Visibility::Public
        } else {
            Visibility::Private
        },
        created_at: row.get(6),
        updated_at: row.get(7),
        version: row.get(8),
    }
}

/// Posts over the shard router.
pub struct PostStore<'a> {
    topology: &'a Topology,
}

impl<'a> PostStore<'a> {
    /// A store over a topology.
    pub fn new(topology: &'a Topology) -> Self {
        Self { topology }
    }

    /// Creates a post for `author`.
    pub async fn create(
        &self,
        author: &UserId,
        post: NewPost,
    ) -> Result<Committed<Post>, StoreError> {
        let hash = author.route_hash();
        let now = as_stored(OffsetDateTime::now_utc());
        let created = Post {
            id: ItemId::generate(author).as_str().to_owned(),
            author_id: author.as_str().to_owned(),
            title: post.title,
            body: post.body,
            tags: post.tags,
            visibility: post.visibility,
            created_at: now,
            updated_at: now,
            version: 1,
        };
        let feed = NewItemFeed {
            entity: "post",
            entity_id: &created.id,
            payload: serde_json::to_value(&created).expect("posts serialize"),
        };
        let (shard, lsn) = insert_with_feed(
            self.topology,
            hash,
            "INSERT INTO posts (id, owner_id, route_hash, slot, title, body, tags, visibility, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
            &[
                &created.id,
                &created.author_id,
                &hash.as_i64(),
                &i32::from(hash.slot().get()),
                &created.title,
                &created.body,
                &created.tags,
                &created.visibility.as_str(),
                &now,
            ],
            &feed,
        )
        .await?;
        Ok(Committed::new(shard, lsn, created))
    }

    /// A post by id, read from a replica that has replayed `token`'s position for the
    /// shard (or the primary).
    pub async fn get(
        &self,
        id: &ItemId,
        token: &ConsistencyToken,
    ) -> Result<Option<Post>, StoreError> {
        let conn = owner_reader(self.topology, id.owner(), token).await?;
        let row = conn
            .query_opt(
                &conn
                    .prepare_cached(&format!("SELECT {COLUMNS} FROM posts WHERE id = $1"))
                    .await?,
                &[&id.as_str()],
            )
            .await?;
        Ok(row.as_ref().map(from_row))
    }

    /// Applies `changes` to the author's post; `None` when the author has no such post.
    pub async fn update(
        &self,
        id: &ItemId,
        changes: PostChanges,
    ) -> Result<Option<Committed<Post>>, StoreError> {
        retry_write(self.topology, || self.update_once(id, changes.clone())).await
    }

    /// One attempt of [`Self::update`].
    async fn update_once(
        &self,
        id: &ItemId,
        changes: PostChanges,
    ) -> Result<Option<Committed<Post>>, StoreError> {
        let (mut conn, shard, hash) = owner_primary(self.topology, id.owner()).await?;
        let tx = conn.transaction().await?;
        let row = tx
            .query_opt(
                &tx.prepare_cached(&format!(
                    "UPDATE posts SET title = coalesce($2, title), body = coalesce($3, body), \
                     tags = coalesce($4, tags), visibility = coalesce($5, visibility), \
                     updated_at = now(), version = version + 1 \
                     WHERE id = $1 AND owner_id = $6 RETURNING {COLUMNS}"
                ))
                .await?,
                &[
                    &id.as_str(),
                    &changes.title,
                    &changes.body,
                    &changes.tags,
                    &changes.visibility.map(Visibility::as_str),
                    &id.owner().as_str(),
                ],
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        let updated = from_row(&row);
        commit_with_feed(
            tx,
            hash,
            "post",
            &updated.id,
            updated.version,
            FeedOp::Upsert,
            Some(serde_json::to_value(&updated).expect("posts serialize")),
        )
        .await?;
        Ok(Some(Committed::after_commit(&conn, shard, updated).await))
    }

    /// Deletes a post; `None` when there is no such post.
    pub async fn delete(&self, id: &ItemId) -> Result<Option<Committed<()>>, StoreError> {
        retry_write(self.topology, || self.delete_once(id)).await
    }

    /// One attempt of [`Self::delete`].
    async fn delete_once(&self, id: &ItemId) -> Result<Option<Committed<()>>, StoreError> {
        let (mut conn, shard, hash) = owner_primary(self.topology, id.owner()).await?;
        let tx = conn.transaction().await?;
        let row = tx
            .query_opt(
                &tx.prepare_cached("DELETE FROM posts WHERE id = $1 RETURNING version")
                    .await?,
                &[&id.as_str()],
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        let version: i64 = row.get(0);
        commit_with_feed(
            tx,
            hash,
            "post",
            id.as_str(),
            version + 1,
            FeedOp::Delete,
            None,
        )
        .await?;
        Ok(Some(Committed::after_commit(&conn, shard, ()).await))
    }

    /// One page of an author's posts, newest first: private ones only when
    /// `include_private`. Returns the page and the cursor of the next one.
    pub async fn list(
        &self,
        author: &UserId,
        include_private: bool,
        after: Option<&Cursor>,
        limit: i64,
        token: &ConsistencyToken,
    ) -> Result<(Vec<Post>, Option<Cursor>), StoreError> {
        let conn = owner_reader(self.topology, author, token).await?;
        let (before_at, before_id) = page_start(after);
        let rows = conn
            .query(
                &conn.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM posts WHERE owner_id = $1 AND ($2 OR visibility = 'public') \
                     AND (created_at, id) < ($3, $4) ORDER BY created_at DESC, id DESC LIMIT $5"
                )).await?,
                &[&author.as_str(), &include_private, &before_at, &before_id, &(limit + 1)],
            )
            .await?;
        let page = split_page(rows.iter().map(from_row).collect(), limit, |item: &Post| {
            (item.created_at, item.id.clone())
        });
        Ok(page)
    }
}
