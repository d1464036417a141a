//! `search`: the embedded search index on a large generated corpus, against Postgres
//! full-text search on the same rows, in the same run.
//!
//! 1. Loads `--posts` generated posts ([`crate::corpus`]) straight into their owners'
//!    shards, each with its change-feed row, exactly as the write path stores them
//!    (same columns, same feed payload), in batched transactions. Going around the API
//!    only makes loading faster; the nodes index these rows from the feeds as they
//!    index any other. A second run with the same seed reuses the rows.
//! 2. Builds the Postgres baseline on every shard: a table of the same posts with a
//!    stored `tsvector` (`simple` configuration: lower-cased, unstemmed, as the index's
//!    own tokenizer; title weighted above body) and a GIN index on it.
//! 3. Rebuilds the first node's index from nothing (`POST /v1/admin/search/rebuild`)
//!    and times it until `/readyz` says it has caught up: documents per second, index
//!    size on disk and the node's resident memory, read from its `/metrics`.
//! 4. Runs term, phrase and prefix queries, one at a time, alternating between
//!    `GET /v1/search` on that node and the same query on Postgres, sent to every
//!    shard's replica at once and merged by rank (top 20 public posts, as the API's
//!    page). Both sides are warmed with other queries first.
//! 5. Measures freshness: how long after `POST /v1/posts` on the second node the post
//!    is found through the first.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use rand::Rng;
use reqwest::Client;
use serde_json::json;
use strata_node::accounts::store::AccountStore;
use strata_node::auth::ids::UserId;
use strata_node::items::posts::{Post, Visibility};
use strata_router::{RouterSettings, ShardId, ShardMap, Topology};
use time::OffsetDateTime;

use crate::corpus::{CONTENT_RANK, Corpus, GeneratedPost};
use crate::recorder::{Outcome, Recorder};
use crate::report::{Phase, Ratio, Report};
use crate::scenarios::{client_ip, create_item, sign_in};
use crate::target::Target;

/// Rows per loading transaction.
const LOAD_BATCH: usize = 2_000;

/// Results per query, as one page of the API.
const PAGE: usize = 20;

/// The table of the Postgres baseline, on every shard.
const FTS_TABLE: &str = "strata_bench_post_fts";

/// Queries each side answers before anything is recorded.
const WARM_UP: usize = 50;

/// Writes whose time to become searchable is measured.
const FRESHNESS_SAMPLES: usize = 20;

/// Knobs of the scenario.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SearchBench {
    pub posts: u64,
    pub queries: usize,
    pub users: usize,
    pub seed: u64,
}

/// The kinds of query compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QueryKind {
    Term,
    Phrase,
    Prefix,
}

impl QueryKind {
    const ALL: [QueryKind; 3] = [QueryKind::Term, QueryKind::Phrase, QueryKind::Prefix];

    fn name(self) -> &'static str {
        match self {
            QueryKind::Term => "term",
            QueryKind::Phrase => "phrase",
            QueryKind::Prefix => "prefix",
        }
    }

    fn strata_endpoint(self) -> &'static str {
        match self {
            QueryKind::Term => "strata term",
            QueryKind::Phrase => "strata phrase",
            QueryKind::Prefix => "strata prefix",
        }
    }

    fn postgres_endpoint(self) -> &'static str {
        match self {
            QueryKind::Term => "postgres term",
            QueryKind::Phrase => "postgres phrase",
            QueryKind::Prefix => "postgres prefix",
        }
    }

    /// The `tsquery` Postgres is given for the query's words.
    fn tsquery(self) -> &'static str {
        match self {
            QueryKind::Term => "plainto_tsquery('simple', $1)",
            QueryKind::Phrase => "phraseto_tsquery('simple', $1)",
            QueryKind::Prefix => "to_tsquery('simple', $1 || ':*')",
        }
    }
}

/// One query, as typed into the search box and as words for Postgres.
#[derive(Debug, Clone)]
struct BenchQuery {
    kind: QueryKind,
    /// `q` of `GET /v1/search`.
    text: String,
    /// What the `tsquery` is built from.
    words: String,
}

/// A signed-in bench user.
struct BenchUser {
    token: String,
    id: UserId,
}

/// What rebuilding the first node's index measured.
#[derive(Debug, Clone, serde::Serialize)]
struct IndexingFigures {
    documents: f64,
    seconds: f64,
    documents_per_second: f64,
    index_bytes: f64,
    resident_bytes_peak: f64,
    resident_bytes_after: f64,
}

impl SearchBench {
    /// Runs the scenario and returns its report.
    pub async fn run(&self, target: &Target, http: &Client) -> anyhow::Result<Report> {
        anyhow::ensure!(
            target.nodes.len() >= 2,
            "the search benchmark needs two nodes (one writes, one is searched)"
        );
        let mut report = Report::new(
            "search",
            serde_json::to_value(self)?,
            serde_json::to_value(target)?,
        );
        let map_path = target.shard_map.as_ref().ok_or_else(|| {
            anyhow::anyhow!("the search benchmark needs a local cluster file (--cluster)")
        })?;
        let topology =
            Topology::connect(ShardMap::load(map_path)?, RouterSettings::default()).await;
        let _poller = topology.spawn_poller();
        let (searched, writer) = (target.nodes[0].clone(), target.nodes[1].clone());

        let users = self.sign_in_users(http, &searched).await?;
        let corpus = Arc::new(Corpus::new(self.seed));
        let owners: Vec<UserId> = users.iter().map(|u| u.id.clone()).collect();
        let started = Instant::now();
        let loaded = self.load(&topology, &corpus, &owners).await?;
        report.baselines.insert(
            "load".into(),
            json!({"posts_written": loaded, "seconds": started.elapsed().as_secs_f64()}),
        );
        let fts = self.build_postgres_baseline(&topology, &owners).await?;
        report.baselines.insert("postgres fts".into(), fts);

        eprintln!("waiting for every node's index to catch up with the feeds ...");
        for node in &target.nodes {
            wait_caught_up(http, node, self.posts).await?;
        }
        let indexing = self
            .rebuild_and_time(http, &searched, &topology, &users[0])
            .await?;
        eprintln!(
            "indexed {:.0} documents in {:.1} s: {:.0} docs/s, index {:.0} MiB, node RSS peak {:.0} MiB",
            indexing.documents,
            indexing.seconds,
            indexing.documents_per_second,
            indexing.index_bytes / 1_048_576.0,
            indexing.resident_bytes_peak / 1_048_576.0
        );
        report
            .baselines
            .insert("indexing".into(), serde_json::to_value(&indexing)?);

        let searcher = &users[1 % users.len()];
        let phase = self
            .compare_queries(
                http,
                &searched,
                &searcher.token,
                &topology,
                &corpus,
                &mut report,
            )
            .await?;
        report.phases.push(phase);
        let freshness = self.freshness(http, &writer, &searched, searcher).await?;
        report.phases.push(freshness);
        Ok(report)
    }

    /// Signs the bench users up (or in again), each from its own simulated address.
    async fn sign_in_users(&self, http: &Client, node: &str) -> anyhow::Result<Vec<BenchUser>> {
        let mut users = Vec::with_capacity(self.users);
        for i in 0..self.users {
            let (token, id) = self.sign_in_user(http, node, i).await?;
            let id = UserId::parse(&id)
                .ok_or_else(|| anyhow::anyhow!("login answered a malformed user id {id:?}"))?;
            users.push(BenchUser { token, id });
        }
        Ok(users)
    }

    /// Signs bench user `i` up (or in again) from its own simulated address.
    async fn sign_in_user(
        &self,
        http: &Client,
        node: &str,
        i: usize,
    ) -> anyhow::Result<(String, String)> {
        let name = format!("search_bench_{}_{i}", self.seed);
        sign_in(http, node, &name, &client_ip(self.seed, 700_000 + i as u64)).await
    }

    /// Writes the corpus into the owners' shards (rows already there are kept); returns
    /// how many posts were new.
    async fn load(
        &self,
        topology: &Arc<Topology>,
        corpus: &Arc<Corpus>,
        owners: &[UserId],
    ) -> anyhow::Result<u64> {
        let owner_texts: Vec<String> = owners.iter().map(|o| o.to_string()).collect();
        let mut present = 0i64;
        for shard in topology.shard_ids() {
            let conn = topology.primary(&shard).await?;
            let row = conn
                .query_one(
                    "SELECT count(*) FROM posts WHERE owner_id = ANY($1)",
                    &[&owner_texts],
                )
                .await?;
            present += row.get::<_, i64>(0);
        }
        if present as u64 >= self.posts {
            eprintln!("{present} bench posts already loaded (seed {})", self.seed);
            return Ok(0);
        }
        eprintln!("loading {} generated posts into the shards ...", self.posts);
        let mut senders = BTreeMap::new();
        let mut writers = Vec::new();
        for shard in topology.shard_ids() {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<PostRow>>(4);
            senders.insert(shard.clone(), tx);
            let (topology, shard) = (Arc::clone(topology), shard.clone());
            writers.push(tokio::spawn(async move {
                let mut written = 0u64;
                while let Some(batch) = rx.recv().await {
                    written += insert_batch(&topology, &shard, batch).await?;
                }
                anyhow::Ok(written)
            }));
        }
        let (corpus, owners, topology, total) = (
            Arc::clone(corpus),
            owners.to_vec(),
            Arc::clone(topology),
            self.posts,
        );
        let seed = self.seed;
        let generator = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let mut batches: BTreeMap<ShardId, Vec<PostRow>> = BTreeMap::new();
            let now = OffsetDateTime::now_utc();
            for i in 0..total {
                let owner = &owners[(i % owners.len() as u64) as usize];
                let shard = topology.shard_for(owner.route_hash()).clone();
                let batch = batches.entry(shard.clone()).or_default();
                batch.push(PostRow::new(owner, seed, i, corpus.post(i), now));
                if batch.len() == LOAD_BATCH {
                    let full = std::mem::take(batch);
                    senders[&shard]
                        .blocking_send(full)
                        .map_err(|_| anyhow::anyhow!("the loader of shard {shard} stopped"))?;
                }
                if (i + 1) % 100_000 == 0 {
                    eprintln!("  generated {} posts", i + 1);
                }
            }
            for (shard, rest) in batches {
                if !rest.is_empty() {
                    senders[&shard]
                        .blocking_send(rest)
                        .map_err(|_| anyhow::anyhow!("the loader of shard {shard} stopped"))?;
                }
            }
            Ok(())
        });
        let generated = generator.await?;
        let mut written = 0;
        for writer in writers {
            written += writer.await??;
        }
        generated?;
        Ok(written)
    }

    /// On every shard: the bench posts with a stored `tsvector`, and a GIN index on it.
    async fn build_postgres_baseline(
        &self,
        topology: &Topology,
        owners: &[UserId],
    ) -> anyhow::Result<serde_json::Value> {
        let owner_texts: Vec<String> = owners.iter().map(|o| o.to_string()).collect();
        let mut shards = serde_json::Map::new();
        for shard in topology.shard_ids() {
            let conn = topology.primary(&shard).await?;
            let wanted: i64 = conn
                .query_one(
                    "SELECT count(*) FROM posts WHERE owner_id = ANY($1)",
                    &[&owner_texts],
                )
                .await?
                .get(0);
            let exists: bool = conn
                .query_one(
                    &format!("SELECT to_regclass('{FTS_TABLE}') IS NOT NULL"),
                    &[],
                )
                .await?
                .get(0);
            let have: Option<i64> = if exists {
                Some(
                    conn.query_one(&format!("SELECT count(*) FROM {FTS_TABLE}"), &[])
                        .await?
                        .get(0),
                )
            } else {
                None
            };
            let started = Instant::now();
            if have != Some(wanted) {
                eprintln!(
                    "building the Postgres full-text baseline on {shard} ({wanted} rows) ..."
                );
                conn.batch_execute(&format!("DROP TABLE IF EXISTS {FTS_TABLE}"))
                    .await?;
                conn.execute(
                    &format!(
                        "CREATE TABLE {FTS_TABLE} AS SELECT id, owner_id, title, visibility, \
                         setweight(to_tsvector('simple', title), 'A') || \
                         setweight(to_tsvector('simple', body || ' ' || array_to_string(tags, ' ')), 'D') AS tsv \
                         FROM posts WHERE owner_id = ANY($1)"
                    ),
                    &[&owner_texts],
                )
                .await?;
                conn.batch_execute(&format!(
                    "CREATE INDEX {FTS_TABLE}_tsv ON {FTS_TABLE} USING gin (tsv); ANALYZE {FTS_TABLE}"
                ))
                .await?;
            }
            let build_seconds = started.elapsed().as_secs_f64();
            let gin_bytes: i64 = conn
                .query_one(&format!("SELECT pg_relation_size('{FTS_TABLE}_tsv')"), &[])
                .await?
                .get(0);
            let table_bytes: i64 = conn
                .query_one(
                    &format!("SELECT pg_total_relation_size('{FTS_TABLE}')"),
                    &[],
                )
                .await?
                .get(0);
            let lsn: String = conn
                .query_one("SELECT pg_current_wal_lsn()::text", &[])
                .await?
                .get(0);
            wait_replayed(topology, &shard, &lsn).await?;
            shards.insert(
                shard.to_string(),
                json!({"rows": wanted, "build_seconds": build_seconds, "gin_bytes": gin_bytes,
                       "table_and_index_bytes": table_bytes}),
            );
        }
        Ok(serde_json::Value::Object(shards))
    }

    /// Has the node rebuild its index from nothing, and measures it.
    async fn rebuild_and_time(
        &self,
        http: &Client,
        node: &str,
        topology: &Topology,
        admin: &BenchUser,
    ) -> anyhow::Result<IndexingFigures> {
        AccountStore::new(topology)
            .grant_role(&admin.id, "admin")
            .await?;
        // Logged in again: the role is in the token.
        let (token, _) = self.sign_in_user(http, node, 0).await?;
        eprintln!("rebuilding {node}'s index from the feeds ...");
        let started = Instant::now();
        let response = http
            .post(format!("{node}/v1/admin/search/rebuild"))
            .bearer_auth(&token)
            .send()
            .await?;
        anyhow::ensure!(
            response.status().as_u16() == 202,
            "the rebuild request answered {}",
            response.status()
        );
        let mut peak: f64 = 0.0;
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let ready = http
                .get(format!("{node}/readyz"))
                .send()
                .await
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            let seconds = started.elapsed().as_secs_f64();
            // Read after the readiness check, so a ready node's figures include its last commit.
            let metrics = node_metrics(http, node).await?;
            let resident = metric(&metrics, "process_resident_memory_bytes");
            peak = peak.max(resident);
            if ready {
                let documents = metric(&metrics, "strata_search_documents");
                return Ok(IndexingFigures {
                    documents,
                    seconds,
                    documents_per_second: documents / seconds,
                    index_bytes: metric(&metrics, "strata_search_index_bytes"),
                    resident_bytes_peak: peak,
                    resident_bytes_after: resident,
                });
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(3_600),
                "the rebuild did not finish within an hour"
            );
        }
    }

    /// Term, phrase and prefix queries on both sides, alternating; adds the ratios.
    async fn compare_queries(
        &self,
        http: &Client,
        node: &str,
        token: &str,
        topology: &Topology,
        corpus: &Corpus,
        report: &mut Report,
    ) -> anyhow::Result<Phase> {
        let recorder = Recorder::new();
        let started = Instant::now();
        let mut hits: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for (stream, kind) in QueryKind::ALL.into_iter().enumerate() {
            let warm_up = draw_queries(corpus, self.posts, kind, WARM_UP, 100 + stream as u64);
            for query in &warm_up {
                strata_query(http, node, token, query).await;
                postgres_query(topology, query).await;
            }
            eprintln!("{} queries: {} on each side ...", kind.name(), self.queries);
            let measured = draw_queries(corpus, self.posts, kind, self.queries, stream as u64);
            for query in &measured {
                let sent = Instant::now();
                let found = strata_query(http, node, token, query).await;
                let latency = sent.elapsed();
                recorder.record(outcome(kind.strata_endpoint(), found.is_some()), latency);
                tally(&mut hits, kind.strata_endpoint(), found);

                let sent = Instant::now();
                let found = postgres_query(topology, query).await;
                let latency = sent.elapsed();
                recorder.record(outcome(kind.postgres_endpoint(), found.is_some()), latency);
                tally(&mut hits, kind.postgres_endpoint(), found);
            }
        }
        let endpoints = recorder.summarize(started.elapsed());
        for kind in QueryKind::ALL {
            let of = |name: &str| endpoints.iter().find(|e| e.endpoint == name);
            let (Some(strata), Some(postgres)) =
                (of(kind.strata_endpoint()), of(kind.postgres_endpoint()))
            else {
                continue;
            };
            for (label, s, p) in [
                ("p50", strata.p50_ms, postgres.p50_ms),
                ("p99", strata.p99_ms, postgres.p99_ms),
            ] {
                report.ratios.push(Ratio {
                    target: None,
                    name: format!(
                        "{} query {label}: GET /v1/search ÷ Postgres GIN tsvector across shards",
                        kind.name()
                    ),
                    value: s / p,
                    numerator: format!("{s:.2} ms"),
                    denominator: format!("{p:.2} ms"),
                });
            }
        }
        report.baselines.insert(
            "queries answered with at least one hit".into(),
            serde_json::to_value(
                hits.iter()
                    .map(|(k, (with_hits, total))| (k.clone(), format!("{with_hits}/{total}")))
                    .collect::<BTreeMap<_, _>>(),
            )?,
        );
        Ok(Phase {
            name: "queries, one at a time, alternating sides".into(),
            load: format!(
                "{} queries of each kind per side, top {PAGE} public posts",
                self.queries
            ),
            duration_secs: started.elapsed().as_secs_f64(),
            endpoints,
        })
    }

    /// Time from a post's 201 on one node until a search on the other finds it.
    async fn freshness(
        &self,
        http: &Client,
        writer: &str,
        searched: &str,
        user: &BenchUser,
    ) -> anyhow::Result<Phase> {
        let recorder = Recorder::new();
        let started = Instant::now();
        let nonce: u32 = rand::rng().random();
        for i in 0..FRESHNESS_SAMPLES {
            let word = format!("fresh{nonce:x}n{i}");
            let probe = json!({"title": format!("freshness probe {word}"), "body": "measuring how soon a post is searchable"});
            let id = create_item(http, writer, &user.token, "/v1/posts", &probe).await?;
            let written = Instant::now();
            let found = loop {
                let page: serde_json::Value = http
                    .get(format!("{searched}/v1/search"))
                    .query(&[("q", word.as_str()), ("scope", "mine")])
                    .bearer_auth(&user.token)
                    .send()
                    .await?
                    .json()
                    .await?;
                // The probe itself: a fuzzy match of an earlier probe does not count.
                if page["items"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|hit| hit["id"] == id.as_str()))
                {
                    break true;
                }
                if written.elapsed() > Duration::from_secs(30) {
                    break false;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            recorder.record(
                outcome("post searchable on the other node", found),
                written.elapsed(),
            );
            // The probe goes again, so it is not counted among the bench posts next run.
            http.delete(format!("{writer}/v1/posts/{id}"))
                .bearer_auth(&user.token)
                .send()
                .await?;
        }
        Ok(Phase {
            name: "freshness".into(),
            load: format!(
                "{FRESHNESS_SAMPLES} posts written through one node, searched for through the other every 5 ms"
            ),
            duration_secs: started.elapsed().as_secs_f64(),
            endpoints: recorder.summarize(started.elapsed()),
        })
    }
}

/// One generated post as rows to insert.
struct PostRow {
    id: String,
    owner: String,
    route_hash: i64,
    slot: i32,
    title: String,
    body: String,
    tags: String,
    visibility: &'static str,
    created_at: OffsetDateTime,
    payload: serde_json::Value,
}

impl PostRow {
    fn new(
        owner: &UserId,
        seed: u64,
        index: u64,
        post: GeneratedPost,
        now: OffsetDateTime,
    ) -> Self {
        // Deterministic ids, so a second load of the same seed skips what is there.
        let id = format!("{owner}{:08x}{index:024x}", seed as u32);
        let visibility = if post.public {
            Visibility::Public
        } else {
            Visibility::Private
        };
        let hash = owner.route_hash();
        let stored = Post {
            id: id.clone(),
            author_id: owner.to_string(),
            title: post.title,
            body: post.body,
            tags: post.tags,
            visibility,
            created_at: now,
            updated_at: now,
            version: 1,
        };
        let payload = serde_json::to_value(&stored).expect("posts serialize");
        Self {
            id,
            owner: owner.to_string(),
            route_hash: hash.as_i64(),
            slot: i32::from(hash.slot().get()),
            tags: stored.tags.join(" "),
            title: stored.title,
            body: stored.body,
            visibility: visibility.as_str(),
            created_at: now,
            payload,
        }
    }
}

/// Inserts one batch of posts and their feed rows in one transaction (posts already
/// present are left alone, with no second feed row); returns how many were new.
async fn insert_batch(
    topology: &Topology,
    shard: &ShardId,
    batch: Vec<PostRow>,
) -> anyhow::Result<u64> {
    let mut conn = topology.primary(shard).await?;
    let column = |f: fn(&PostRow) -> String| batch.iter().map(f).collect::<Vec<String>>();
    let ids = column(|r| r.id.clone());
    let owners = column(|r| r.owner.clone());
    let titles = column(|r| r.title.clone());
    let bodies = column(|r| r.body.clone());
    let tags = column(|r| r.tags.clone());
    let visibility = column(|r| r.visibility.to_owned());
    let hashes: Vec<i64> = batch.iter().map(|r| r.route_hash).collect();
    let slots: Vec<i32> = batch.iter().map(|r| r.slot).collect();
    let created: Vec<OffsetDateTime> = batch.iter().map(|r| r.created_at).collect();
    let payloads: Vec<serde_json::Value> = batch.into_iter().map(|r| r.payload).collect();
    let tx = conn.transaction().await?;
    let inserted = tx
        .execute(
            "WITH input AS ( \
               SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::int[], $5::text[], \
                                    $6::text[], $7::text[], $8::text[], $9::timestamptz[], $10::jsonb[]) \
                 WITH ORDINALITY AS t(id, owner_id, route_hash, slot, title, body, tags, visibility, created_at, payload, n)), \
             added AS ( \
               INSERT INTO posts (id, owner_id, route_hash, slot, title, body, tags, visibility, created_at, updated_at) \
               SELECT id, owner_id, route_hash, slot, title, body, \
                      CASE WHEN tags = '' THEN '{}'::text[] ELSE string_to_array(tags, ' ') END, \
                      visibility, created_at, created_at FROM input \
               ON CONFLICT (id) DO NOTHING RETURNING id) \
             INSERT INTO change_feed (route_hash, slot, entity, entity_id, version, op, payload) \
             SELECT i.route_hash, i.slot, 'post', i.id, 1, 'upsert', i.payload \
             FROM input i JOIN added a ON a.id = i.id ORDER BY i.n",
            &[
                &ids, &owners, &hashes, &slots, &titles, &bodies, &tags, &visibility, &created,
                &payloads,
            ],
        )
        .await?;
    tx.commit().await?;
    Ok(inserted)
}

/// Waits until a replica of `shard` has replayed the primary's WAL up to `lsn`.
async fn wait_replayed(topology: &Topology, shard: &ShardId, lsn: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let (conn, _) = topology.reader(shard, None).await?;
        let done: bool = conn
            .query_one(
                "SELECT NOT pg_is_in_recovery() OR pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                &[&lsn],
            )
            .await?
            .get(0);
        if done {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the replica of {shard} did not replay to {lsn}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the node's index is at the head of every feed and holds at least
/// `documents` documents.
async fn wait_caught_up(http: &Client, node: &str, documents: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(3_600);
    let mut last_report = Instant::now();
    loop {
        let text = node_metrics(http, node).await?;
        let lag = metric(&text, "strata_search_lag_sequence");
        let held = metric(&text, "strata_search_documents");
        if lag == 0.0 && held >= documents as f64 {
            return Ok(());
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!("  {node}: {held:.0} documents, {lag:.0} changes behind");
            last_report = Instant::now();
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{node}'s index did not catch up within an hour"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn node_metrics(http: &Client, node: &str) -> anyhow::Result<String> {
    Ok(http
        .get(format!("{node}/metrics"))
        .send()
        .await?
        .text()
        .await?)
}

/// The sum of a metric's samples (over all its label sets) in Prometheus text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `count` queries of `kind`, drawn from random posts of the corpus.
fn draw_queries(
    corpus: &Corpus,
    posts: u64,
    kind: QueryKind,
    count: usize,
    stream: u64,
) -> Vec<BenchQuery> {
    let mut rng = corpus.query_rng(stream);
    let mut queries = Vec::with_capacity(count);
    while queries.len() < count {
        let post = corpus.post(rng.random_range(0..posts));
        let words: Vec<&str> = post.body.split(' ').collect();
        let at = rng.random_range(0..words.len());
        let content = |w: &str| corpus.rank(w).is_some_and(|r| r >= CONTENT_RANK);
        let query = match kind {
            QueryKind::Term if content(words[at]) => {
                Some((words[at].to_owned(), words[at].to_owned()))
            }
            QueryKind::Phrase
                if at + 1 < words.len() && (content(words[at]) || content(words[at + 1])) =>
            {
                let phrase = format!("{} {}", words[at], words[at + 1]);
                Some((format!("\"{phrase}\""), phrase))
            }
            QueryKind::Prefix if content(words[at]) && words[at].len() >= 6 => {
                let prefix = words[at][..4].to_owned();
                Some((prefix.clone(), prefix))
            }
            _ => None,
        };
        if let Some((text, words)) = query {
            queries.push(BenchQuery { kind, text, words });
        }
    }
    queries
}

/// The number of hits `GET /v1/search` returned, or `None` when it failed.
async fn strata_query(http: &Client, node: &str, token: &str, query: &BenchQuery) -> Option<usize> {
    let limit = PAGE.to_string();
    let response = http
        .get(format!("{node}/v1/search"))
        .query(&[
            ("q", query.text.as_str()),
            ("type", "post"),
            ("scope", "public"),
            ("limit", limit.as_str()),
        ])
        .bearer_auth(token)
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    let page: serde_json::Value = response.json().await.ok()?;
    page["items"].as_array().map(Vec::len)
}

/// The number of hits of the same query on Postgres: every shard's replica at once,
/// merged by rank to one page. `None` when a shard failed.
async fn postgres_query(topology: &Topology, query: &BenchQuery) -> Option<usize> {
    let sql = format!(
        "SELECT id, ts_rank(tsv, q) AS rank FROM {FTS_TABLE}, {} AS q \
         WHERE visibility = 'public' AND tsv @@ q ORDER BY rank DESC LIMIT {PAGE}",
        query.kind.tsquery()
    );
    let per_shard = join_all(topology.shard_ids().into_iter().map(|shard| {
        let sql = sql.as_str();
        async move {
            let (conn, _) = topology.reader(&shard, None).await.ok()?;
            let rows = conn.query(sql, &[&query.words]).await.ok()?;
            Some(
                rows.iter()
                    .map(|r| (r.get::<_, f32>(1), r.get::<_, String>(0)))
                    .collect::<Vec<_>>(),
            )
        }
    }))
    .await;
    let mut merged = Vec::new();
    for rows in per_shard {
        merged.extend(rows?);
    }
    merged.sort_by(|a, b| b.0.total_cmp(&a.0));
    merged.truncate(PAGE);
    Some(merged.len())
}

fn outcome(endpoint: &'static str, ok: bool) -> Outcome {
    Outcome {
        endpoint,
        status: ok.then_some(200),
    }
}

fn tally(hits: &mut BTreeMap<String, (usize, usize)>, endpoint: &str, found: Option<usize>) {
    let entry = hits.entry(endpoint.to_owned()).or_default();
    entry.1 += 1;
    if found.is_some_and(|n| n > 0) {
        entry.0 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_summed_over_label_sets_and_prefixes_do_not_match() {
        let text = "# TYPE strata_search_lag_sequence gauge\n\
                    strata_search_lag_sequence{shard=\"s0\"} 3\n\
                    strata_search_lag_sequence{shard=\"s1\"} 4\n\
                    strata_search_lag_sequence_total 100\n\
                    strata_search_documents 12\n";
        assert_eq!(metric(text, "strata_search_lag_sequence"), 7.0);
        assert_eq!(metric(text, "strata_search_documents"), 12.0);
        assert_eq!(metric(text, "absent"), 0.0);
    }

    #[test]
    fn drawn_queries_are_content_words_phrases_and_prefixes_of_the_corpus() {
        let corpus = Corpus::new(3);
        for kind in QueryKind::ALL {
            let queries = draw_queries(&corpus, 1_000, kind, 50, 0);
            assert_eq!(queries.len(), 50);
            for q in &queries {
                match kind {
                    QueryKind::Term => {
                        assert!(corpus.rank(&q.text).unwrap() >= CONTENT_RANK)
                    }
                    QueryKind::Phrase => {
                        assert_eq!(q.text, format!("\"{}\"", q.words));
                        assert_eq!(q.words.split(' ').count(), 2);
                    }
                    QueryKind::Prefix => assert_eq!(q.text.len(), 4),
                }
            }
        }
    }
}
