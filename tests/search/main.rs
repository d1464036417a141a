//! Search end to end on a real cluster (2 shards with replicas, 2 nodes): each node's
//! index follows the change feeds. Tests poll with a deadline instead of sleeping.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use strata_sandbox::Cluster;
use strata_tests::api::{Api, Tokens, status_and_json, unique};
use strata_tests::{SharedCluster, eventually};

static CLUSTER: SharedCluster = SharedCluster::new();

const PASSWORD: &str = "correct horse battery staple";

/// Three nodes: the restart test kills and restarts the third, which no other test uses.
/// Searches a user may make per minute on this cluster (a test waiting for a document
/// polls about 10 a second).
const SEARCHES_PER_MINUTE: u64 = 400;

fn cluster() -> &'static Cluster {
    CLUSTER.get(|| {
        let limits = strata_node::config::LimitsConfig {
            search_per_user: SEARCHES_PER_MINUTE,
            ..strata_node::config::LimitsConfig::default()
        };
        Cluster::builder().nodes(3).limits(limits)
    })
}

fn node(i: usize) -> Api {
    Api::new(cluster().nodes[i].url())
}

async fn user(prefix: &str) -> Tokens {
    node(0).signup_ok(&unique(prefix), PASSWORD).await
}

async fn create(path: &str, token: &str, body: Value) -> String {
    let (status, item) = status_and_json(node(0).post(path, &body, Some(token)).await).await;
    assert_eq!(status, StatusCode::CREATED, "{item}");
    item["id"].as_str().unwrap().to_owned()
}

async fn search(api: &Api, token: &str, query: &str) -> (StatusCode, Value) {
    let response = api
        .http
        .get(format!("{}/v1/search", api.base))
        .query(&[("q", query)])
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    status_and_json(response).await
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until `query` on `api` finds `id` (or, with `present = false`, no longer does).
async fn until_found(api: &Api, token: &str, query: &str, id: &str, present: bool) -> Value {
    eventually(
        &format!(
            "search {query:?} to {} {id}",
            if present { "find" } else { "drop" }
        ),
        Duration::from_secs(20),
        || async {
            let (status, page) = search(api, token, query).await;
            if status == StatusCode::OK && ids(&page).contains(&id.to_owned()) == present {
                Ok(page)
            } else {
                Err(format!("{status} {page}"))
            }
        },
    )
    .await
}

#[tokio::test]
async fn a_post_written_through_one_node_is_found_through_the_other_with_a_highlighted_snippet() {
    let author = user("writer").await;
    let word = unique("sycamore").replace('_', "");
    let id = create("/v1/posts", &author.access, json!({"title": "By the river", "body": format!("golden slopes and {word} trees"), "visibility": "public"})).await;
    let page = until_found(&node(1), &author.access, &word, &id, true).await;
    let hit = &page["items"][0];
    assert_eq!(hit["type"], "post");
    assert_eq!(hit["author_id"], author.user_id);
    assert!(
        hit["snippet"]
            .as_str()
            .unwrap()
            .contains(&format!("<b>{word}</b>")),
        "{hit}"
    );
    // That node timed the commit that made the post searchable and the search itself.
    let metrics = node(1).get("/metrics", None).await.text().await.unwrap();
    for histogram in [
        "strata_search_commit_duration_seconds_count",
        "strata_search_query_duration_seconds_count",
    ] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with(histogram) && !l.ends_with(" 0")),
            "{histogram} is exported and counted"
        );
    }
}

#[tokio::test]
async fn updates_and_deletes_are_reflected() {
    let author = user("editor").await;
    let (before, after) = (
        unique("alpha").replace('_', ""),
        unique("omega").replace('_', ""),
    );
    let id = create(
        "/v1/posts",
        &author.access,
        json!({"title": before, "body": "x", "visibility": "public"}),
    )
    .await;
    until_found(&node(1), &author.access, &before, &id, true).await;
    let patched = node(0)
        .http
        .patch(format!("{}/v1/posts/{id}", node(0).base))
        .bearer_auth(&author.access)
        .json(&json!({"title": after}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), StatusCode::OK);
    until_found(&node(1), &author.access, &after, &id, true).await;
    until_found(&node(1), &author.access, &before, &id, false).await;
    let deleted = node(0)
        .http
        .delete(format!("{}/v1/posts/{id}", node(0).base))
        .bearer_auth(&author.access)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    until_found(&node(1), &author.access, &after, &id, false).await;
}

/// Runs SQL on the primary of the shard holding `user_id`'s data.
fn on_users_primary(user_id: &str, sql: &str) -> String {
    let placement = strata_router::Placement::from_map(&cluster().spec.shard_map);
    let shard = placement.shard_of(strata_router::route_hash(user_id));
    cluster().pg(shard, 0).psql("strata", sql).unwrap()
}

#[tokio::test]
async fn a_replayed_old_change_in_the_feed_does_not_resurrect_a_deleted_post() {
    let author = user("replayer").await;
    let word = unique("phoenix").replace('_', "");
    let id = create(
        "/v1/posts",
        &author.access,
        json!({"title": word, "body": "x", "visibility": "public"}),
    )
    .await;
    until_found(&node(1), &author.access, &word, &id, true).await;
    let deleted = node(0)
        .http
        .delete(format!("{}/v1/posts/{id}", node(0).base))
        .bearer_auth(&author.access)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    until_found(&node(1), &author.access, &word, &id, false).await;
    // The post's first upsert, delivered again after its delete.
    on_users_primary(
        &author.user_id,
        &format!(
            "INSERT INTO change_feed (route_hash, slot, entity, entity_id, version, op, payload) \
             SELECT route_hash, slot, entity, entity_id, version, op, payload FROM change_feed \
             WHERE entity_id = '{id}' AND version = 1"
        ),
    );
    // A later post on the same shard: once it is found, the replay has been read too.
    let marker = unique("marker").replace('_', "");
    let later = create(
        "/v1/posts",
        &author.access,
        json!({"title": marker, "body": "x", "visibility": "public"}),
    )
    .await;
    until_found(&node(1), &author.access, &marker, &later, true).await;
    let (_, page) = search(&node(1), &author.access, &word).await;
    assert!(
        !ids(&page).contains(&id),
        "the replayed upsert did not bring the post back: {page}"
    );
}

/// A change whose transaction took its feed number early but commits late (here held
/// open for 3 s while later changes commit) is still indexed: the tailer waits for every
/// transaction that could fill a gap instead of passing it after a timeout.
#[tokio::test]
async fn a_change_that_commits_late_is_indexed_not_skipped() {
    let author = user("latecomer").await;
    let id = create(
        "/v1/posts",
        &author.access,
        json!({"title": "first title", "body": "x", "visibility": "public"}),
    )
    .await;
    until_found(&node(1), &author.access, "first", &id, true).await;
    let late_word = unique("tardy").replace('_', "");
    let (topology, _poller) =
        strata_tests::router(cluster(), strata_router::RouterSettings::default()).await;
    let shard = topology.shard_for(strata_router::route_hash(&author.user_id));
    let mut conn = topology.primary(&shard).await.unwrap();
    let held = conn.transaction().await.unwrap();
    let row = held
        .query_one(
            "UPDATE posts SET title = $2, version = version + 1, updated_at = now() WHERE id = $1 \
             RETURNING route_hash, slot, version, to_jsonb(posts) - 'owner_id' - 'route_hash' - 'slot'",
            &[&id, &late_word],
        )
        .await
        .unwrap();
    let (hash, slot, version): (i64, i32, i64) = (row.get(0), row.get(1), row.get(2));
    let mut payload: Value = row.get(3);
    payload["author_id"] = json!(author.user_id);
    held.execute(
        "INSERT INTO change_feed (route_hash, slot, entity, entity_id, version, op, payload) \
         VALUES ($1, $2, 'post', $3, $4, 'upsert', $5)",
        &[&hash, &slot, &id, &version, &payload],
    )
    .await
    .unwrap();
    // Later changes on the same shard commit and are indexed past the held one...
    let marker = unique("overtaker").replace('_', "");
    let later = create(
        "/v1/posts",
        &author.access,
        json!({"title": marker, "body": "x", "visibility": "public"}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // ...and the held one commits last. It must still be found.
    held.commit().await.unwrap();
    until_found(&node(1), &author.access, &late_word, &id, true).await;
    until_found(&node(1), &author.access, &marker, &later, true).await;
}

#[tokio::test]
async fn private_posts_tasks_and_files_never_appear_in_another_users_results() {
    let (owner, stranger) = (user("private").await, user("prying").await);
    let word = unique("zebracorn").replace('_', "");
    let post = create(
        "/v1/posts",
        &owner.access,
        json!({"title": format!("{word} secret"), "body": format!("{word} diary")}),
    )
    .await;
    let task = create(
        "/v1/tasks",
        &owner.access,
        json!({"title": format!("{word} errand"), "notes": word}),
    )
    .await;
    let file = upload(
        &owner.access,
        &format!("{word}.txt"),
        "text/plain",
        format!("{word} ledger of accounts").into_bytes(),
    )
    .await;
    for id in [&post, &task, &file] {
        until_found(&node(1), &owner.access, &word, id, true).await;
    }
    let private = [post, task, file];
    let queries = [
        word.clone(),
        format!("{word}*"),
        format!("\"{word} secret\""),
        format!("{word}~"),
        owner.user_id.clone(),
        "secret".into(),
        "errand".into(),
        "txt".into(),
        "ledger".into(),
        "*".into(),
    ];
    for q in &queries {
        for scope in ["all", "public", "mine"] {
            for kind in ["", "post", "task", "file"] {
                let mut params = vec![("q", q.as_str()), ("scope", scope)];
                if !kind.is_empty() {
                    params.push(("type", kind));
                }
                let response = node(1)
                    .http
                    .get(format!("{}/v1/search", node(1).base))
                    .query(&params)
                    .bearer_auth(&stranger.access)
                    .send()
                    .await
                    .unwrap();
                let (status, page) = status_and_json(response).await;
                assert!(
                    status.is_success() || status.is_client_error(),
                    "{q} {scope} {kind}: {status}"
                );
                let leaked: Vec<String> = ids(&page)
                    .into_iter()
                    .filter(|id| private.contains(id))
                    .collect();
                assert!(
                    leaked.is_empty(),
                    "query {q:?} scope {scope} type {kind:?} leaked {leaked:?}"
                );
            }
        }
    }
}

/// Uploads `body` as `name` with a media type; returns the file id.
async fn upload(token: &str, name: &str, media_type: &str, body: Vec<u8>) -> String {
    let response = node(0).upload(token, name, Some(media_type), body).await;
    let (status, file) = status_and_json(response).await;
    assert_eq!(status, StatusCode::CREATED, "{file}");
    file["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn small_text_files_are_found_by_their_content_and_others_by_name_only() {
    let owner = user("archivist").await;
    let word = unique("quillwort").replace('_', "");
    let text = upload(
        &owner.access,
        "notes.txt",
        "text/plain; charset=utf-8",
        format!("minutes: {word} budget").into_bytes(),
    )
    .await;
    let binary = upload(
        &owner.access,
        "blob.bin",
        "application/octet-stream",
        format!("minutes: {word} budget").into_bytes(),
    )
    .await;
    let mut large_body = format!("{word} ").into_bytes();
    large_body.resize(65 * 1024, b'a');
    let large = upload(&owner.access, "large.txt", "text/plain", large_body).await;
    // Found by content, through the other node, with the match highlighted.
    let page = until_found(&node(1), &owner.access, &word, &text, true).await;
    let hit = ids(&page).iter().position(|id| *id == text).unwrap();
    assert_eq!(page["items"][hit]["type"], "file");
    assert!(
        page["items"][hit]["snippet"]
            .as_str()
            .unwrap()
            .contains(&format!("<b>{word}</b>")),
        "{page}"
    );
    // The others are indexed (found by name) but not by content.
    until_found(&node(1), &owner.access, "blob", &binary, true).await;
    until_found(&node(1), &owner.access, "large", &large, true).await;
    let (_, page) = search(&node(1), &owner.access, &word).await;
    assert_eq!(
        ids(&page),
        vec![text],
        "only the small text file matches its content: {page}"
    );
}

#[tokio::test]
async fn a_misspelled_word_and_a_prefix_find_and_a_quoted_phrase_matches_only_the_phrase() {
    let author = user("speller").await;
    let tag = unique("q").replace('_', "");
    let exact = create("/v1/posts", &author.access, json!({"title": format!("{tag} quick brown fox"), "body": "jumps high", "visibility": "public"})).await;
    let shuffled = create("/v1/posts", &author.access, json!({"title": format!("{tag} brown quick fox"), "body": "sits still", "visibility": "public"})).await;
    until_found(&node(1), &author.access, &tag, &shuffled, true).await;
    until_found(&node(1), &author.access, &tag, &exact, true).await;

    let (_, page) = search(&node(1), &author.access, &format!("{tag} jumsp")).await;
    assert!(ids(&page).contains(&exact), "a typo still finds it: {page}");
    let hit = &page["items"][ids(&page).iter().position(|id| *id == exact).unwrap()];
    assert!(
        hit["snippet"].as_str().unwrap().contains("<b>jumps</b>"),
        "the word the typo matched is highlighted: {hit}"
    );
    let (_, page) = search(&node(1), &author.access, &format!("{tag} jum")).await;
    assert!(ids(&page).contains(&exact), "a prefix finds it: {page}");
    let (_, page) = search(&node(1), &author.access, &format!("{tag} \"quick brown\"")).await;
    let found = ids(&page);
    assert!(
        found.contains(&exact) && !found.contains(&shuffled),
        "the phrase matches only the phrase: {page}"
    );
}

#[tokio::test]
async fn hostile_queries_get_results_or_a_4xx_never_a_500() {
    let someone = user("fuzzer").await;
    let long = "a ".repeat(5_000);
    let queries = [
        "\"unbalanced",
        "\"\"\"",
        "AND OR NOT",
        "+-+-",
        ".*[a-z]+(",
        "title:",
        "~~~",
        "(((",
        "a^99999",
        "*:*",
        "\u{0}",
        long.as_str(),
        "日本語 テキスト",
    ];
    for q in queries {
        let (status, body) = search(&node(0), &someone.access, q).await;
        assert!(
            status == StatusCode::OK || status.is_client_error(),
            "query {:?}: {status} {body}",
            &q[..q.len().min(20)]
        );
    }
    for path in [
        "/v1/search",
        "/v1/search?q=x&type=user",
        "/v1/search?q=x&scope=everyone",
        "/v1/search?q=x&cursor=nope",
        "/v1/search?q=x&limit=0",
    ] {
        let status = node(0).get(path, Some(&someone.access)).await.status();
        assert!(status.is_client_error(), "{path}: {status}");
    }
}

#[tokio::test]
async fn a_restarted_node_resumes_from_its_saved_cursors_and_keeps_its_index() {
    let author = user("durable").await;
    let word = unique("persisted").replace('_', "");
    let id = create(
        "/v1/posts",
        &author.access,
        json!({"title": word, "body": "x", "visibility": "public"}),
    )
    .await;
    until_found(&node(2), &author.access, &word, &id, true).await;
    let restarted = &cluster().nodes[2];
    restarted.kill();
    restarted.start().unwrap();
    let metrics = node(2).get("/metrics", None).await.text().await.unwrap();
    let resumed: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("strata_search_resumed_cursor{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        resumed > 0.0,
        "the restarted node resumed from saved cursors, not from the start: {resumed}"
    );
    let documents: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("strata_search_documents ")?.parse().ok())
        .unwrap_or(0.0);
    assert!(
        documents >= 1.0,
        "the restarted node reports the documents it kept: {documents}"
    );
    assert!(
        metrics.contains("strata_search_lag_sequence{"),
        "index lag per shard is exported"
    );
    assert!(
        metrics.contains("strata_search_lag_seconds{"),
        "index lag per shard is exported"
    );
    let (status, page) = search(&node(2), &author.access, &word).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        ids(&page).contains(&id),
        "found at once after the restart: {page}"
    );
}

#[tokio::test]
async fn an_admin_rebuilds_a_nodes_index_from_the_feeds_and_nothing_is_lost() {
    let admin = user("indexer").await;
    let word = unique("rebuilt").replace('_', "");
    let id = create(
        "/v1/posts",
        &admin.access,
        json!({"title": word, "body": "x", "visibility": "public"}),
    )
    .await;
    until_found(&node(0), &admin.access, &word, &id, true).await;
    let refused = node(0)
        .post("/v1/admin/search/rebuild", &json!({}), Some(&admin.access))
        .await;
    assert_eq!(
        refused.status(),
        StatusCode::FORBIDDEN,
        "only admins rebuild"
    );

    let name = {
        let (_, me) = status_and_json(node(0).get("/v1/me", Some(&admin.access)).await).await;
        me["username"].as_str().unwrap().to_owned()
    };
    let granted = std::process::Command::new(strata_sandbox::nodes::binary("strata").unwrap())
        .args(["user", "grant-admin", &name, "--shard-map"])
        .arg(cluster().shard_map_path())
        .output()
        .unwrap();
    assert!(
        granted.status.success(),
        "{}",
        String::from_utf8_lossy(&granted.stderr)
    );
    let (_, refreshed) = status_and_json(node(0).refresh(&admin.refresh).await).await;
    let admin_token = refreshed["access_token"].as_str().unwrap().to_owned();

    let accepted = node(0)
        .post("/v1/admin/search/rebuild", &json!({}), Some(&admin_token))
        .await;
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    eventually(
        "the rebuild to run and the index to catch up again",
        Duration::from_secs(30),
        || async {
            let metrics = node(0).get("/metrics", None).await.text().await.unwrap();
            let rebuilt = metrics
                .lines()
                .any(|l| l.starts_with("strata_search_rebuilds_total ") && !l.ends_with(" 0"));
            let ready = node(0).get("/readyz", None).await.status() == StatusCode::OK;
            if rebuilt && ready {
                Ok(())
            } else {
                Err(format!("rebuilt {rebuilt}, ready {ready}"))
            }
        },
    )
    .await;
    until_found(&node(0), &admin_token, &word, &id, true).await;
}

/// The work of one query is bounded: more than 16 words is a 422 naming `q` (each word
/// may be expanded against the term dictionary), and a caller's searches are limited per
/// window (429 past the limit; this cluster allows [`SEARCHES_PER_MINUTE`]).
#[tokio::test]
async fn a_query_of_too_many_words_is_refused_and_searches_are_rate_limited() {
    let someone = user("greedy").await;
    let words: Vec<String> = (0..17).map(|i| format!("w{i}")).collect();
    let (status, problem) = search(&node(0), &someone.access, &words.join(" ")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "q", "{problem}");
    let (status, _) = search(&node(0), &someone.access, &words[..16].join(" ")).await;
    assert_eq!(status, StatusCode::OK, "16 words are fine");

    let api = node(1);
    let mut statuses = Vec::new();
    for _ in 0..(SEARCHES_PER_MINUTE as usize / 50 + 1) {
        let batch = (0..50).map(|_| search(&api, &someone.access, "anything"));
        statuses.extend(
            futures::future::join_all(batch)
                .await
                .into_iter()
                .map(|(s, _)| s),
        );
    }
    let limited = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(
        limited > 0,
        "more searches in a minute than the limit meet it"
    );
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
}
