//! The node's embedded Tantivy index of posts (title, body, tags), tasks (title, notes)
//! and files (name, and the text of small text files): a derived view of the
//! shards' change feeds. Each document carries the item's version; a change applies only
//! if it is newer than what the index holds, and a delete leaves a tombstone with its
//! version, so replayed or late changes neither lose nor resurrect documents. The
//! per-shard feed cursors are saved in each commit's payload, so a restarted node
//! resumes where its last commit left off.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tantivy::directory::MmapDirectory;
use tantivy::directory::error::LockError;
use tantivy::query::TermQuery;
use tantivy::schema::{FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TEXT};
use tantivy::{
    DocSet, Index, IndexReader, IndexWriter, ReloadPolicy, TERMINATED, TantivyError, Term, doc,
};

/// Memory the writer buffers documents in before it writes a segment.
const WRITER_MEMORY_BYTES: usize = 64_000_000;

/// Why the index failed.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("search index: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    #[error("search index directory: {0}")]
    Directory(String),
}

/// The index's fields.
#[derive(Debug, Clone, Copy)]
pub struct Fields {
    /// `post:<id>`: one live document (or tombstone) per item.
    pub key: Field,
    /// `post`, `task`, `file`, or `tombstone`.
    pub kind: Field,
    pub id: Field,
    pub owner: Field,
    /// `public` or `private`.
    pub visibility: Field,
    pub title: Field,
    pub body: Field,
    pub tags: Field,
    pub version: Field,
}

/// One change from a shard's feed, decoded.
#[derive(Debug, Clone)]
pub struct Change {
    pub entity: String,
    pub entity_id: String,
    pub version: i64,
    pub deleted: bool,
    pub payload: Option<serde_json::Value>,
}

/// The index, its single writer and a reader that reloads on commit.
pub struct SearchIndex {
    pub index: Index,
    pub fields: Fields,
    pub reader: IndexReader,
    /// Where the index's files are.
    dir: PathBuf,
    writer: Mutex<IndexWriter>,
    /// Versions applied since the last commit (not yet visible to searches), so a batch
    /// holding two changes of one item keeps only the newer.
    pending: Mutex<HashMap<String, i64>>,
    /// Set once every shard's feed has been followed to its head since start-up; until
    /// then the node is not ready (a brand-new node is still building its index).
    caught_up: AtomicBool,
    /// Set by an operator to have the tailer drop the index and rebuild it from the
    /// start of every feed.
    rebuild_requested: AtomicBool,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let fields = Fields {
        key: b.add_text_field("key", STRING | STORED),
        kind: b.add_text_field("kind", STRING | STORED),
        id: b.add_text_field("id", STRING | STORED),
        owner: b.add_text_field("owner", STRING | STORED),
        visibility: b.add_text_field("visibility", STRING | STORED),
        title: b.add_text_field("title", TEXT | STORED),
        body: b.add_text_field("body", TEXT | STORED),
        tags: b.add_text_field("tags", TEXT | STORED),
        version: b.add_i64_field("version", INDEXED | STORED | FAST),
    };
    (b.build(), fields)
}

/// How long start-up waits for a previous process (still exiting) to let go of the
/// index's writer lock.
const WRITER_LOCK_PATIENCE: Duration = Duration::from_secs(10);

/// The index's single writer, waiting out a previous holder that is still exiting.
fn writer_when_free(index: &Index) -> Result<IndexWriter, IndexError> {
    let started = Instant::now();
    loop {
        match index.writer(WRITER_MEMORY_BYTES) {
            Err(TantivyError::LockFailure(LockError::LockBusy, _))
                if started.elapsed() < WRITER_LOCK_PATIENCE =>
            {
                tracing::info!("the search index is still locked by an exiting process; waiting");
                std::thread::sleep(Duration::from_millis(100));
            }
            other => return Ok(other?),
        }
    }
}

impl SearchIndex {
    /// Opens the index in `dir`, creating it when empty.
    pub fn open(dir: &Path) -> Result<Self, IndexError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| IndexError::Directory(format!("{}: {e}", dir.display())))?;
        let (schema, fields) = schema();
        let directory =
            MmapDirectory::open(dir).map_err(|e| IndexError::Directory(e.to_string()))?;
        let index = Index::open_or_create(directory, schema)?;
        let writer = writer_when_free(&index)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::OnCommitWithDelay)
            .try_into()?;
        Ok(Self {
            index,
            fields,
            reader,
            dir: dir.to_owned(),
            writer: Mutex::new(writer),
            pending: Mutex::new(HashMap::new()),
            caught_up: AtomicBool::new(false),
            rebuild_requested: AtomicBool::new(false),
        })
    }

    /// The per-shard feed cursors of the last commit (empty for a new index).
    pub fn cursors(&self) -> BTreeMap<String, i64> {
        self.index
            .load_metas()
            .ok()
            .and_then(|m| m.payload)
            .and_then(|p| serde_json::from_str(&p).ok())
            .unwrap_or_default()
    }

    /// The version the index holds for an item (live or tombstone), counting changes
    /// applied but not yet committed.
    fn known_version(&self, key: &str) -> Result<Option<i64>, IndexError> {
        if let Some(v) = self.pending.lock().expect("pending lock").get(key) {
            return Ok(Some(*v));
        }
        // Straight to the key's postings in each segment, then the version fast field:
        // no query weights or scoring, no stored document to decompress.
        let searcher = self.reader.searcher();
        let term = Term::from_field_text(self.fields.key, key);
        for segment in searcher.segment_readers() {
            let inverted = segment.inverted_index(self.fields.key)?;
            let Some(mut postings) = inverted
                .read_postings(&term, IndexRecordOption::Basic)
                .map_err(|e| IndexError::Directory(e.to_string()))?
            else {
                continue;
            };
            let mut doc = postings.doc();
            while doc != TERMINATED {
                if segment
                    .alive_bitset()
                    .is_none_or(|alive| alive.is_alive(doc))
                {
                    return Ok(segment.fast_fields().i64("version")?.first(doc));
                }
                doc = postings.advance();
            }
        }
        Ok(None)
    }

    /// Applies one change if it is newer than what the index holds. Returns whether it
    /// applied.
    pub fn apply(&self, change: &Change) -> Result<bool, IndexError> {
        let key = format!("{}:{}", change.entity, change.entity_id);
        let known = self.known_version(&key)?;
        if known.is_some_and(|known| known >= change.version) {
            return Ok(false);
        }
        let f = self.fields;
        let writer = self.writer.lock().expect("writer lock");
        // Only a key the index holds has a document to replace; a new one (every key of a
        // rebuild) skips the delete and the work of applying it to every segment.
        if known.is_some() {
            writer.delete_term(Term::from_field_text(f.key, &key));
        }
        let document = match (&change.payload, change.deleted) {
            (Some(p), false) => {
                let text = |name: &str| p[name].as_str().unwrap_or_default().to_owned();
                let (owner, title, body, visibility) = match change.entity.as_str() {
                    "post" => (
                        text("author_id"),
                        text("title"),
                        text("body"),
                        text("visibility"),
                    ),
                    "task" => (
                        text("owner_id"),
                        text("title"),
                        text("notes"),
                        "private".to_owned(),
                    ),
                    _ => (
                        text("owner_id"),
                        text("name"),
                        text("text"),
                        "private".to_owned(),
                    ),
                };
                let tags: Vec<String> = p["tags"]
                    .as_array()
                    .map(|t| {
                        t.iter()
                            .filter_map(|x| x.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                doc!(f.key => key.clone(), f.kind => change.entity.clone(), f.id => change.entity_id.clone(),
                     f.owner => owner, f.visibility => visibility, f.title => title, f.body => body,
                     f.tags => tags.join(" "), f.version => change.version)
            }
            _ => {
                doc!(f.key => key.clone(), f.kind => "tombstone", f.id => change.entity_id.clone(), f.version => change.version)
            }
        };
        writer.add_document(document)?;
        self.pending
            .lock()
            .expect("pending lock")
            .insert(key, change.version);
        Ok(true)
    }

    /// Makes every applied change searchable and records the feed cursors with it.
    pub fn commit(&self, cursors: &BTreeMap<String, i64>) -> Result<(), IndexError> {
        let started = std::time::Instant::now();
        let mut writer = self.writer.lock().expect("writer lock");
        let mut prepared = writer.prepare_commit()?;
        prepared.set_payload(&serde_json::to_string(cursors).expect("cursors serialize"));
        prepared.commit()?;
        drop(writer);
        self.reader.reload()?;
        self.pending.lock().expect("pending lock").clear();
        metrics::histogram!("strata_search_commit_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Whether the index has followed every feed to its head since start-up.
    pub fn caught_up(&self) -> bool {
        self.caught_up.load(Ordering::SeqCst)
    }

    /// Records that every feed has been followed to its head, unless a rebuild was
    /// asked for meanwhile: the index is about to be emptied, so the node must not say
    /// it is ready (a tailer round that ends just after the request would otherwise
    /// mark the old index caught up, and `/readyz` answer 200 before the rebuild began).
    pub fn mark_caught_up(&self) {
        self.caught_up.store(true, Ordering::SeqCst);
        // `request_rebuild` sets the request before it clears the flag, so either its
        // clearing comes after the store above, or the request is seen here.
        if self.rebuild_requested.load(Ordering::SeqCst) {
            self.caught_up.store(false, Ordering::SeqCst);
        }
    }

    /// Asks the tailer to rebuild the index from the start of every feed.
    pub fn request_rebuild(&self) {
        self.rebuild_requested.store(true, Ordering::SeqCst);
        // Not ready from this moment: the index is about to be emptied.
        self.caught_up.store(false, Ordering::SeqCst);
    }

    /// Takes a pending rebuild request, if any.
    pub fn take_rebuild_request(&self) -> bool {
        self.rebuild_requested.swap(false, Ordering::SeqCst)
    }

    /// Drops every document and cursor (the index then rebuilds from the feeds).
    pub fn clear(&self) -> Result<(), IndexError> {
        self.writer
            .lock()
            .expect("writer lock")
            .delete_all_documents()?;
        self.pending.lock().expect("pending lock").clear();
        self.caught_up.store(false, Ordering::Relaxed);
        self.commit(&BTreeMap::new())
    }

    /// Bytes the index's files take on disk (segments being merged included).
    pub fn size_on_disk(&self) -> u64 {
        std::fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter_map(|e| e.metadata().ok())
                    .filter(|m| m.is_file())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Live documents (excluding tombstones).
    pub fn documents(&self) -> u64 {
        let searcher = self.reader.searcher();
        let tombstones = TermQuery::new(
            Term::from_field_text(self.fields.kind, "tombstone"),
            IndexRecordOption::Basic,
        );
        let dead = searcher
            .search(&tombstones, &tantivy::collector::Count)
            .unwrap_or(0) as u64;
        searcher.num_docs().saturating_sub(dead)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(version: i64, title: &str, deleted: bool) -> Change {
        Change {
            entity: "post".into(),
            entity_id: "p1".into(),
            version,
            deleted,
            payload: (!deleted).then(|| serde_json::json!({"author_id": "u1", "title": title, "body": "b", "visibility": "public", "tags": []})),
        }
    }

    fn titles(index: &SearchIndex) -> Vec<String> {
        crate::search::query::search(
            index,
            "u1",
            "b",
            None,
            crate::search::query::Scope::All,
            0,
            10,
        )
        .unwrap()
        .into_iter()
        .map(|h| h.title)
        .collect()
    }

    #[test]
    fn only_newer_versions_apply_and_a_replayed_change_does_not_resurrect_a_delete() {
        let dir = tempfile::tempdir().unwrap();
        let index = SearchIndex::open(dir.path()).unwrap();
        assert!(index.apply(&post(1, "first", false)).unwrap());
        assert!(index.apply(&post(2, "second", false)).unwrap());
        assert!(
            !index.apply(&post(1, "first", false)).unwrap(),
            "an older version is ignored, even before a commit"
        );
        index
            .commit(&BTreeMap::from([("s0".to_owned(), 2)]))
            .unwrap();
        assert_eq!(titles(&index), vec!["second"]);
        assert!(index.apply(&post(3, "", true)).unwrap());
        index
            .commit(&BTreeMap::from([("s0".to_owned(), 3)]))
            .unwrap();
        assert!(titles(&index).is_empty(), "deleted");
        assert!(
            !index.apply(&post(2, "second", false)).unwrap(),
            "a replayed old upsert does not resurrect it"
        );
        index
            .commit(&BTreeMap::from([("s0".to_owned(), 3)]))
            .unwrap();
        assert!(titles(&index).is_empty());
    }

    #[test]
    fn cursors_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let index = SearchIndex::open(dir.path()).unwrap();
            index.apply(&post(1, "kept", false)).unwrap();
            index
                .commit(&BTreeMap::from([
                    ("s0".to_owned(), 41),
                    ("s1".to_owned(), 7),
                ]))
                .unwrap();
        }
        let reopened = SearchIndex::open(dir.path()).unwrap();
        assert_eq!(
            reopened.cursors(),
            BTreeMap::from([("s0".to_owned(), 41), ("s1".to_owned(), 7)])
        );
        assert_eq!(titles(&reopened), vec!["kept"]);
    }

    #[test]
    fn a_round_that_ends_after_a_rebuild_request_does_not_mark_the_index_caught_up() {
        let dir = tempfile::tempdir().unwrap();
        let index = SearchIndex::open(dir.path()).unwrap();
        index.mark_caught_up();
        assert!(index.caught_up());
        index.request_rebuild();
        assert!(!index.caught_up(), "not ready once a rebuild is asked for");
        // The tailer's round in flight reached the old index's head.
        index.mark_caught_up();
        assert!(
            !index.caught_up(),
            "the pending rebuild keeps the node not ready"
        );
        assert!(index.take_rebuild_request());
        index.clear().unwrap();
        index.mark_caught_up();
        assert!(
            index.caught_up(),
            "ready again once the rebuild reached the head"
        );
    }
}
