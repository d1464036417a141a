//! Posts and tasks end to end on a shared, healthy cluster (2 shards with replicas, 2
//! nodes): owner rules, the change feed, pagination, the post cache, bad input. Failure
//! cases (delayed and dead replicas, a stopped primary) are in `consistency`.

use reqwest::StatusCode;
use serde_json::{Value, json};
use strata_sandbox::Cluster;
use strata_tests::SharedCluster;

mod files;
use strata_tests::api::{Api, Tokens, consistency_token, status_and_json, unique};

static CLUSTER: SharedCluster = SharedCluster::new();

const PASSWORD: &str = "correct horse battery staple";

/// The largest upload this cluster accepts.
const UPLOAD_LIMIT: u64 = 4 * 1024 * 1024;

fn cluster() -> &'static Cluster {
    CLUSTER.get(|| Cluster::builder().max_upload_bytes(UPLOAD_LIMIT))
}

fn node(i: usize) -> Api {
    Api::new(cluster().nodes[i].url())
}

async fn user(prefix: &str) -> Tokens {
    node(0).signup_ok(&unique(prefix), PASSWORD).await
}

async fn create(api: &Api, path: &str, token: &str, body: Value) -> Value {
    create_noting_token(api, path, token, body).await.0
}

/// [`create`], also returning the write's consistency token, for a read that must see
/// it on another node or a replica.
async fn create_noting_token(
    api: &Api,
    path: &str,
    token: &str,
    body: Value,
) -> (Value, reqwest::header::HeaderValue) {
    let response = api.post(path, &body, Some(token)).await;
    let written = consistency_token(&response);
    let (status, body) = status_and_json(response).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    (body, written)
}

async fn send(
    api: &Api,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> StatusCode {
    let mut request = api
        .http
        .request(method, format!("{}{path}", api.base))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap().status()
}

/// Runs SQL on the primary of the shard that holds `user_id`'s rows.
fn on_users_shard(user_id: &str, sql: &str) -> String {
    let cluster = cluster();
    let placement = strata_router::Placement::from_map(&cluster.spec.shard_map);
    let shard = placement.shard_of(strata_router::route_hash(user_id));
    cluster.pg(shard, 0).psql("strata", sql).unwrap()
}

#[tokio::test]
async fn other_users_cannot_read_or_change_private_posts_tasks_or_anything_of_someone_else() {
    use reqwest::Method;
    let (owner, stranger) = (user("owner").await, user("stranger").await);
    let private = create(
        &node(0),
        "/v1/posts",
        &owner.access,
        json!({"title": "diary", "body": "secret"}),
    )
    .await;
    assert_eq!(
        private["visibility"], "private",
        "posts are private unless asked"
    );
    let public = create(
        &node(0),
        "/v1/posts",
        &owner.access,
        json!({"title": "hello", "body": "world", "visibility": "public"}),
    )
    .await;
    let task = create(
        &node(0),
        "/v1/tasks",
        &owner.access,
        json!({"title": "mine"}),
    )
    .await;
    let (private, public, task) = (
        format!("/v1/posts/{}", private["id"].as_str().unwrap()),
        format!("/v1/posts/{}", public["id"].as_str().unwrap()),
        format!("/v1/tasks/{}", task["id"].as_str().unwrap()),
    );
    let b = node(1);
    assert_eq!(
        send(&b, Method::GET, &private, &stranger.access, None).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(&b, Method::GET, &public, &stranger.access, None).await,
        StatusCode::OK
    );
    assert_eq!(
        send(
            &b,
            Method::PATCH,
            &private,
            &stranger.access,
            Some(json!({"title": "x"}))
        )
        .await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(
            &b,
            Method::PATCH,
            &public,
            &stranger.access,
            Some(json!({"title": "x"}))
        )
        .await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(&b, Method::DELETE, &private, &stranger.access, None).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(&b, Method::DELETE, &public, &stranger.access, None).await,
        StatusCode::FORBIDDEN
    );
    for method in [Method::GET, Method::DELETE] {
        assert_eq!(
            send(&b, method, &task, &stranger.access, None).await,
            StatusCode::NOT_FOUND
        );
    }
    assert_eq!(
        send(
            &b,
            Method::PATCH,
            &task,
            &stranger.access,
            Some(json!({"done": true}))
        )
        .await,
        StatusCode::NOT_FOUND
    );

    let listing = format!("/v1/users/{}/posts", owner.user_id);
    let (_, theirs) = status_and_json(b.get(&listing, Some(&stranger.access)).await).await;
    assert_eq!(
        theirs["items"].as_array().unwrap().len(),
        1,
        "strangers see only public posts: {theirs}"
    );
    let (_, own) = status_and_json(b.get(&listing, Some(&owner.access)).await).await;
    assert_eq!(
        own["items"].as_array().unwrap().len(),
        2,
        "the owner sees private ones too"
    );
    let (_, tasks) = status_and_json(b.get("/v1/tasks", Some(&stranger.access)).await).await;
    assert_eq!(tasks["items"].as_array().unwrap().len(), 0);

    // Nothing of the owner's changed; the owner can still change and delete.
    assert_eq!(
        send(&node(0), Method::GET, &private, &owner.access, None).await,
        StatusCode::OK
    );
    assert_eq!(
        send(&node(0), Method::DELETE, &public, &owner.access, None).await,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn the_change_feed_has_one_entry_per_committed_write_in_order_and_none_for_a_rolled_back_one()
{
    let author = user("feeder").await;
    // A fault injected on every shard: a feed row for a post titled 'roll me back' fails,
    // so that post's whole transaction must roll back with it.
    for shard in &cluster().spec.shard_map.shards {
        cluster()
            .pg(&shard.id, 0)
            .psql(
                "strata",
                "CREATE OR REPLACE FUNCTION fail_marked_changes() RETURNS trigger LANGUAGE plpgsql AS $$ \
                 BEGIN IF NEW.payload->>'title' = 'roll me back' THEN RAISE EXCEPTION 'injected fault'; END IF; \
                 RETURN NEW; END $$; \
                 CREATE OR REPLACE TRIGGER fail_marked_changes AFTER INSERT ON change_feed \
                 FOR EACH ROW EXECUTE FUNCTION fail_marked_changes()",
            )
            .unwrap();
    }
    let post = create(
        &node(0),
        "/v1/posts",
        &author.access,
        json!({"title": "v1", "body": "b"}),
    )
    .await;
    let id = post["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/posts/{id}");
    assert_eq!(
        send(
            &node(1),
            reqwest::Method::PATCH,
            &path,
            &author.access,
            Some(json!({"title": "v2"}))
        )
        .await,
        StatusCode::OK
    );
    let failed = send(
        &node(1),
        reqwest::Method::PATCH,
        &path,
        &author.access,
        Some(json!({"title": "roll me back"})),
    )
    .await;
    assert!(
        failed.is_server_error(),
        "the injected fault fails the write: {failed}"
    );
    assert_eq!(
        send(
            &node(0),
            reqwest::Method::DELETE,
            &path,
            &author.access,
            None
        )
        .await,
        StatusCode::NO_CONTENT
    );

    let feed = on_users_shard(
        &author.user_id,
        &format!(
            "SELECT string_agg(op || ':' || version, ',' ORDER BY seq) FROM change_feed WHERE entity_id = '{id}'"
        ),
    );
    assert_eq!(
        feed, "upsert:1,upsert:2,delete:3",
        "one entry per committed write, in order"
    );
    let leaked = on_users_shard(
        &author.user_id,
        "SELECT count(*) FROM change_feed WHERE payload->>'title' = 'roll me back'",
    );
    assert_eq!(leaked, "0");
}

#[tokio::test]
async fn lists_page_newest_first_with_opaque_cursors() {
    let author = user("pager").await;
    let mut created = Vec::new();
    let mut last_write = None;
    for i in 0..5 {
        let (task, written) = create_noting_token(
            &node(0),
            "/v1/tasks",
            &author.access,
            json!({"title": format!("task {i}")}),
        )
        .await;
        created.push(task["id"].as_str().unwrap().to_owned());
        last_write = Some(written);
    }
    let last_write = last_write.expect("tasks were written");
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/tasks?limit=2&cursor={c}"),
            None => "/v1/tasks?limit=2".into(),
        };
        let (status, page) =
            status_and_json(node(1).get_after(&path, &author.access, &last_write).await).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|t| t["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    created.reverse();
    assert_eq!(seen, created, "every task once, newest first");
    let (_, done) = status_and_json(
        node(0)
            .get("/v1/tasks?status=done", Some(&author.access))
            .await,
    )
    .await;
    assert_eq!(done["items"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn public_posts_are_cached_and_a_change_is_never_served_stale() {
    let (author, reader) = (user("famous").await, user("fan").await);
    let post = create(
        &node(0),
        "/v1/posts",
        &author.access,
        json!({"title": "first", "body": "b", "visibility": "public"}),
    )
    .await;
    let path = format!("/v1/posts/{}", post["id"].as_str().unwrap());
    let hits = || async {
        // Hits in node 1's memory or in the shared Redis cache.
        let text = node(1).get("/metrics", None).await.text().await.unwrap();
        text.lines()
            .filter(|l| {
                l.starts_with(r#"strata_cache_requests_total{cache="post",result="hit"}"#)
                    || l.starts_with(
                        r#"strata_cache_requests_total{cache="post_local",result="hit"}"#,
                    )
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum::<u64>()
    };
    let before = hits().await;
    for _ in 0..3 {
        let (status, body) = status_and_json(node(1).get(&path, Some(&reader.access)).await).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert!(
        hits().await >= before + 2,
        "repeated reads of a public post are cache hits"
    );

    let patched = node(0)
        .http
        .patch(format!("{}{path}", node(0).base))
        .bearer_auth(&author.access)
        .json(&json!({"title": "second"}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), StatusCode::OK);
    let token = patched.headers()["x-strata-consistency"]
        .to_str()
        .unwrap()
        .to_owned();
    let fresh = node(1)
        .http
        .get(format!("{}{path}", node(1).base))
        .bearer_auth(&reader.access)
        .header("x-strata-consistency", token)
        .send()
        .await
        .unwrap();
    let (_, body) = status_and_json(fresh).await;
    assert_eq!(
        body["title"], "second",
        "the change dropped the cached copy"
    );
}

#[tokio::test]
async fn bad_item_input_gets_4xx_problems_and_writes_nothing() {
    let author = user("careless").await;
    let api = node(0);
    let long_title = "t".repeat(201);
    let posts: Vec<(&str, Value, StatusCode)> = vec![
        (
            "overlong title",
            json!({"title": long_title, "body": "b"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "blank title",
            json!({"title": "   ", "body": "b"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "too many tags",
            json!({"title": "t", "body": "b", "tags": vec!["x"; 17]}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "overlong tag",
            json!({"title": "t", "body": "b", "tags": ["x".repeat(33)]}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "body over 64 KiB",
            json!({"title": "t", "body": "b".repeat(64 * 1024 + 1)}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "NUL in title",
            json!({"title": "a\u{0}b", "body": "b"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "unknown field",
            json!({"title": "t", "body": "b", "author_id": "someone"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "bad visibility",
            json!({"title": "t", "body": "b", "visibility": "friends"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "tags not a list",
            json!({"title": "t", "body": "b", "tags": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];
    for (what, body, expected) in posts {
        let response = api.post("/v1/posts", &body, Some(&author.access)).await;
        assert_eq!(response.status(), expected, "post with {what}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{what}"
        );
    }
    let tasks: Vec<(&str, Value)> = vec![
        ("bad due date", json!({"title": "t", "due_at": "tomorrow"})),
        ("done not a bool", json!({"title": "t", "done": "yes"})),
    ];
    for (what, body) in tasks {
        assert_eq!(
            api.post("/v1/tasks", &body, Some(&author.access))
                .await
                .status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "task with {what}"
        );
    }
    let raw = api
        .http
        .post(format!("{}/v1/posts", api.base))
        .bearer_auth(&author.access)
        .header("content-type", "application/json")
        .body("{\"title\":")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::BAD_REQUEST);
    for path in [
        "/v1/tasks?cursor=bogus",
        "/v1/tasks?limit=0",
        "/v1/tasks?limit=1000",
        "/v1/tasks?status=maybe",
        "/v1/tasks?limit=1&limit=2",
    ] {
        let status = api.get(path, Some(&author.access)).await.status();
        assert!(status.is_client_error(), "{path}: {status}");
    }
    for path in [
        "/v1/posts/not-an-id",
        "/v1/tasks/..%2F..%2Fetc%2Fpasswd",
        "/v1/users/nobody/posts",
    ] {
        assert_eq!(
            api.get(path, Some(&author.access)).await.status(),
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    let token = api
        .http
        .get(format!("{}/v1/tasks", api.base))
        .bearer_auth(&author.access)
        .header("x-strata-consistency", "garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(
        token.status(),
        StatusCode::BAD_REQUEST,
        "a malformed consistency token is refused"
    );
    assert_eq!(
        api.get("/v1/tasks", None).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let written = on_users_shard(
        &author.user_id,
        &format!(
            "SELECT count(*) FROM posts WHERE owner_id = '{}'",
            author.user_id
        ),
    );
    assert_eq!(written, "0", "no bad request wrote anything");
}

/// Requests the framework rejects before any handler runs (a path segment that is not
/// UTF-8, a query it cannot decode) still get a problem+json answer.
#[tokio::test]
async fn undecodable_paths_and_queries_get_problem_json() {
    let api = node(0);
    let author = api.signup_ok(&unique("rejected"), PASSWORD).await;
    for path in ["/v1/posts/%FF", "/v1/tasks/%C3%28", "/v1/tasks?limit=%FF"] {
        let response = api.get(path, Some(&author.access)).await;
        let status = response.status();
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        let body = response.text().await.unwrap();
        assert!(status.is_client_error(), "{path}: {status} {body}");
        assert_eq!(content_type, "application/problem+json", "{path}: {body}");
        let problem: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(problem["status"], status.as_u16(), "{path}: {body}");
    }
}

/// Cursors are tamper-evident: crafted ones (an overflowing timestamp, one outside what
/// Postgres stores, a signed cursor with its payload swapped) are a 422 naming `cursor`,
/// never a 5xx, while the cursors the API hands out keep working.
#[tokio::test]
async fn crafted_cursors_are_refused_and_never_a_server_error() {
    use base64::Engine;
    let b64 = |text: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
    let api = node(0);
    let owner = api.signup_ok(&unique("pager"), PASSWORD).await;
    let mut last_write = None;
    for n in 0..3 {
        let (_, written) = create_noting_token(
            &api,
            "/v1/tasks",
            &owner.access,
            json!({"title": format!("page {n}")}),
        )
        .await;
        last_write = Some(written);
    }
    let last_write = last_write.expect("tasks were written");
    let (_, first) = status_and_json(
        api.get_after("/v1/tasks?limit=1", &owner.access, &last_write)
            .await,
    )
    .await;
    let issued = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let (status, second) = status_and_json(
        api.get(
            &format!("/v1/tasks?limit=1&cursor={issued}"),
            Some(&owner.access),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "an issued cursor works: {second}");
    let signature = issued
        .split_once('.')
        .map(|(_, t)| t.to_owned())
        .unwrap_or_default();
    let crafted = [
        b64("99999999999999999999999:ab"),
        b64("-315619200000000000:ab"),
        b64("1700000000000000:ab"),
        format!("{}.{signature}", b64("1:ab")),
    ];
    for cursor in crafted {
        let (status, problem) = status_and_json(
            api.get(&format!("/v1/tasks?cursor={cursor}"), Some(&owner.access))
                .await,
        )
        .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{cursor}: {problem}"
        );
        assert_eq!(problem["errors"][0]["field"], "cursor", "{problem}");
    }
}

/// A new post or task is answered with the row as the database keeps it (the node
/// builds the row, so its times must be what Postgres stores): the create's answer, a
/// read on the other node and the list agree field for field, for a due date given
/// with an offset and nanoseconds.
#[tokio::test]
async fn a_created_item_reads_back_exactly_as_its_create_answered() {
    let owner = user("exact").await;
    for (path, body) in [
        (
            "/v1/tasks",
            json!({"title": "exact", "notes": "n", "due_at": "2031-02-03T04:05:06.123456789+02:00"}),
        ),
        (
            "/v1/posts",
            json!({"title": "exact", "body": "b", "tags": ["x"], "visibility": "private"}),
        ),
    ] {
        let created = node(0)
            .http
            .post(format!("{}{path}", node(0).base))
            .bearer_auth(&owner.access)
            .json(&body)
            .send()
            .await
            .unwrap();
        let token = created.headers()["x-strata-consistency"]
            .to_str()
            .unwrap()
            .to_owned();
        let (status, created) = status_and_json(created).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let read = node(1)
            .http
            .get(format!(
                "{}{path}/{}",
                node(1).base,
                created["id"].as_str().unwrap()
            ))
            .bearer_auth(&owner.access)
            .header("x-strata-consistency", token)
            .send()
            .await
            .unwrap();
        let (status, read) = status_and_json(read).await;
        assert_eq!(status, StatusCode::OK, "{read}");
        assert_eq!(read, created, "{path}");
    }
}

/// Node 1 serves a public post to another user a few times (from the caches); a change
/// or delete acknowledged by node 0 is never followed by node 1 serving the old copy. Each read after a change waits only until the replicas
/// have the change (a read without a consistency token may be served by any replica),
/// far less than the time node 1 keeps a copy.
#[tokio::test]
async fn a_public_post_another_node_holds_in_memory_is_never_served_after_a_change() {
    let (author, reader) = (user("local").await, user("localfan").await);
    let post = create(
        &node(0),
        "/v1/posts",
        &author.access,
        json!({"title": "v0", "body": "b", "visibility": "public"}),
    )
    .await;
    let id = post["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/posts/{id}");
    let replicas_have = |title: Option<String>| {
        let id = id.clone();
        async move {
            let cluster = cluster();
            let sql =
                format!("SELECT coalesce((SELECT title FROM posts WHERE id = '{id}'), '<gone>')");
            strata_tests::eventually(
                "the replicas replay the change",
                std::time::Duration::from_secs(10),
                || {
                    let (sql, title) = (sql.clone(), title.clone());
                    async move {
                        let seen: Vec<String> = cluster
                            .spec
                            .shard_map
                            .shards
                            .iter()
                            .map(|s| cluster.pg(&s.id, 1).psql("strata", &sql).unwrap())
                            .map(|t| t.trim().to_owned())
                            .collect();
                        let replayed = match &title {
                            Some(title) => seen.iter().any(|t| t == title),
                            None => seen.iter().all(|t| t == "<gone>"),
                        };
                        if replayed {
                            Ok(())
                        } else {
                            Err(format!("replicas hold {seen:?}"))
                        }
                    }
                },
            )
            .await;
        }
    };
    for round in 1..=5 {
        for _ in 0..3 {
            let (status, body) =
                status_and_json(node(1).get(&path, Some(&reader.access)).await).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        let title = format!("v{round}");
        let patched = send(
            &node(0),
            reqwest::Method::PATCH,
            &path,
            &author.access,
            Some(json!({"title": title})),
        )
        .await;
        assert_eq!(patched, StatusCode::OK);
        replicas_have(Some(title.clone())).await;
        let (status, body) = status_and_json(node(1).get(&path, Some(&reader.access)).await).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body["title"] != title.as_str() {
            let text = node(1).get("/metrics", None).await.text().await.unwrap();
            let caches: Vec<&str> = text
                .lines()
                .filter(|l| l.contains("invalidations_heard") || l.contains("cache=\"post"))
                .collect();
            panic!("round {round}: node 1 served an old copy {body}; its caches: {caches:#?}");
        }
    }

    for _ in 0..3 {
        node(1).get(&path, Some(&reader.access)).await;
    }
    let deleted = send(
        &node(0),
        reqwest::Method::DELETE,
        &path,
        &author.access,
        None,
    )
    .await;
    assert_eq!(deleted, StatusCode::NO_CONTENT);
    replicas_have(None).await;
    assert_eq!(
        node(1).get(&path, Some(&reader.access)).await.status(),
        StatusCode::NOT_FOUND,
        "a deleted post is not served from memory"
    );
}
