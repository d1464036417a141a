//! Reads and writes under failure, on a cluster of their own: 3 shards × (primary +
//! replica), 2 nodes. Each test owns one shard (its users are signed up until one lands
//! there) and breaks only that shard. The lag bound is raised so a replica delayed on
//! purpose keeps serving reads, which is what makes the consistency token matter.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use strata_node::config::LimitsConfig;
use strata_router::{Placement, RouterSettings, ShardId, route_hash};
use strata_sandbox::Cluster;
use strata_tests::api::{Api, Tokens, status_and_json, unique};
use strata_tests::{SharedCluster, eventually, shard};

static CLUSTER: SharedCluster = SharedCluster::new();

const PASSWORD: &str = "correct horse battery staple";

fn cluster() -> &'static Cluster {
    CLUSTER.get(|| {
        let router = RouterSettings {
            poll_interval_ms: 100,
            max_replica_lag_ms: 60_000,
            ban_ms: 1000,
            ..RouterSettings::default()
        };
        Cluster::builder()
            .shards(5)
            .replicas(1)
            .nodes(2)
            .load_balancer(false)
            .router(router)
            // Placing users on a shard takes five signups each on average, all from this
            // one address: the default 60 a minute is a limit these tests are not about.
            .limits(LimitsConfig {
                signup_per_ip: 100_000,
                ..LimitsConfig::default()
            })
    })
}

fn node(i: usize) -> Api {
    Api::new(cluster().nodes[i].url())
}

/// Signs up users until one lives on `wanted`. A signup that gets 503 is skipped: a
/// test running alongside may have stopped a primary its user or name would land on.
async fn user_on(wanted: &ShardId) -> Tokens {
    let placement = Placement::from_map(&cluster().spec.shard_map);
    for _ in 0..200 {
        let name = unique("placed");
        let response = node(0)
            .signup(&name, &format!("{name}@example.com"), PASSWORD)
            .await;
        let (status, body) = status_and_json(response).await;
        match status {
            StatusCode::CREATED => {
                let user = Tokens::from_body(&body);
                if placement.shard_of(route_hash(&user.user_id)) == wanted {
                    return user;
                }
            }
            StatusCode::SERVICE_UNAVAILABLE => continue,
            other => panic!("signup of {name}: {other} {body}"),
        }
    }
    panic!("no user landed on {wanted} in 200 signups");
}

/// `PATCH` a post; returns the consistency token of the write.
async fn retitle(api: &Api, path: &str, access: &str, title: &str) -> String {
    let response = api
        .http
        .patch(format!("{}{path}", api.base))
        .bearer_auth(access)
        .json(&json!({"title": title}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.headers()["x-strata-consistency"]
        .to_str()
        .unwrap()
        .to_owned()
}

async fn title_seen(api: &Api, path: &str, access: &str, token: Option<&str>) -> Value {
    let mut request = api
        .http
        .get(format!("{}{path}", api.base))
        .bearer_auth(access);
    if let Some(token) = token {
        request = request.header("x-strata-consistency", token);
    }
    let (status, body) = status_and_json(request.send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["title"].clone()
}

#[tokio::test]
async fn with_the_token_a_write_on_one_node_is_always_read_on_the_other_despite_a_delayed_replica()
{
    let s0 = shard("s0");
    let writer = user_on(&s0).await;
    let post = node(0)
        .post(
            "/v1/posts",
            &json!({"title": "v0", "body": "b"}),
            Some(&writer.access),
        )
        .await;
    let (_, post) = status_and_json(post).await;
    let path = format!("/v1/posts/{}", post["id"].as_str().unwrap());
    let replica = cluster().pg(&s0, 1);
    replica.set_apply_delay(Duration::from_secs(2)).unwrap();

    let mut stale_without_token = 0;
    for round in 1..=5 {
        let token = retitle(
            &node(0),
            &path,
            &writer.access,
            &format!("with token {round}"),
        )
        .await;
        let seen = title_seen(&node(1), &path, &writer.access, Some(&token)).await;
        assert_eq!(
            seen,
            format!("with token {round}"),
            "read-your-writes with the token"
        );

        retitle(
            &node(0),
            &path,
            &writer.access,
            &format!("without token {round}"),
        )
        .await;
        let seen = title_seen(&node(1), &path, &writer.access, None).await;
        if seen != format!("without token {round}") {
            stale_without_token += 1;
        }
    }
    replica.set_apply_delay(Duration::ZERO).unwrap();
    assert!(
        stale_without_token > 0,
        "without the token the delayed replica served stale reads (so the token is what mattered)"
    );
}

#[tokio::test]
async fn reads_keep_working_when_a_replica_is_killed() {
    let s1 = shard("s1");
    let owner = user_on(&s1).await;
    let (status, task) = status_and_json(
        node(0)
            .post(
                "/v1/tasks",
                &json!({"title": "survive"}),
                Some(&owner.access),
            )
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let path = format!("/v1/tasks/{}", task["id"].as_str().unwrap());
    let replica = cluster().pg(&s1, 1);
    replica.kill();
    for i in 0..20 {
        let (status, body) =
            status_and_json(node(i % 2).get(&path, Some(&owner.access)).await).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "read {i} with the replica dead: {body}"
        );
    }
    replica.start().unwrap();
}

#[tokio::test]
async fn a_stopped_primary_fails_its_writes_fast_while_its_reads_and_other_shards_carry_on() {
    let (s2, s0) = (shard("s2"), shard("s0"));
    let stranded = user_on(&s2).await;
    let elsewhere = user_on(&s0).await;
    let (_, task) = status_and_json(
        node(0)
            .post(
                "/v1/tasks",
                &json!({"title": "before"}),
                Some(&stranded.access),
            )
            .await,
    )
    .await;
    let path = format!("/v1/tasks/{}", task["id"].as_str().unwrap());
    let primary = cluster().pg(&s2, 0);
    // Let the replica catch up, then stop the primary.
    tokio::time::sleep(Duration::from_millis(500)).await;
    primary.stop().unwrap();

    let retry_after = eventually(
        "writes to the stopped shard to answer 503",
        Duration::from_secs(15),
        || async {
            let response = node(1)
                .post(
                    "/v1/tasks",
                    &json!({"title": "during"}),
                    Some(&stranded.access),
                )
                .await;
            match response.status() {
                StatusCode::SERVICE_UNAVAILABLE => {
                    let retry_after = response.headers()["retry-after"]
                        .to_str()
                        .unwrap()
                        .to_owned();
                    Ok((retry_after, response.text().await.unwrap_or_default()))
                }
                other => Err(format!("{other}")),
            }
        },
    )
    .await;
    let (retry_after, problem) = retry_after;
    assert!(
        retry_after.parse::<u64>().is_ok_and(|s| s >= 1),
        "Retry-After: {retry_after}"
    );
    // The client learns which shard, not its hosts or the driver's words (those are logged).
    let primary_port = cluster().pg(&s2, 0).addr.port().to_string();
    assert!(
        problem.contains("shard s2 is unavailable") && !problem.contains(&primary_port),
        "a generic reason without internal addresses: {problem}"
    );
    let (status, body) = status_and_json(node(0).get(&path, Some(&stranded.access)).await).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "reads of the stopped shard come from its replica: {body}"
    );
    let (status, _) = status_and_json(
        node(1)
            .post(
                "/v1/tasks",
                &json!({"title": "elsewhere"}),
                Some(&elsewhere.access),
            )
            .await,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "the other shards still take writes"
    );
    primary.start().unwrap();
}

/// A write that reaches a host which has become read-only (a primary demoted a moment
/// ago; here the database is made read-only and its sessions ended) answers 503 with
/// Retry-After, not 500. Then, on the same shard: a write that committed but whose WAL
/// position cannot be read for its token is still a success, reads back on the other
/// node with its token, and an upload's bytes stay downloadable.
#[tokio::test]
async fn a_read_only_refusal_is_a_503_and_a_committed_write_always_a_success() {
    let s3 = shard("s3");
    let writer = user_on(&s3).await;
    let primary = cluster().pg(&s3, 0);
    let end_sessions = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                        WHERE usename = 'strata' AND datname = 'strata'";
    primary
        .psql(
            "postgres",
            "ALTER DATABASE strata SET default_transaction_read_only = on",
        )
        .unwrap();
    primary.psql("postgres", end_sessions).unwrap();
    let seen = eventually(
        "a write to the read-only shard to answer 503",
        Duration::from_secs(15),
        || async {
            let response = node(0)
                .post(
                    "/v1/tasks",
                    &json!({"title": "read-only"}),
                    Some(&writer.access),
                )
                .await;
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            match status {
                StatusCode::SERVICE_UNAVAILABLE if body.contains("unavailable") => Ok(Ok(())),
                // A 500 is the defect itself: stop waiting and fail below.
                StatusCode::INTERNAL_SERVER_ERROR => Ok(Err(format!("500: {body}"))),
                other => Err(format!("{other}: {body}")),
            }
        },
    )
    .await;
    primary
        .psql(
            "postgres",
            "ALTER DATABASE strata RESET default_transaction_read_only",
        )
        .unwrap();
    primary.psql("postgres", end_sessions).unwrap();
    seen.expect("a read-only refusal is a 503");

    primary
        .psql(
            "strata",
            "REVOKE EXECUTE ON FUNCTION pg_current_wal_insert_lsn() FROM PUBLIC",
        )
        .unwrap();
    let response = node(0)
        .post(
            "/v1/tasks",
            &json!({"title": "committed"}),
            Some(&writer.access),
        )
        .await;
    let token = response
        .headers()
        .get("x-strata-consistency")
        .map(|v| v.to_str().unwrap().to_owned());
    let (status, task) = status_and_json(response).await;
    let upload = node(0)
        .upload(
            &writer.access,
            "kept.txt",
            Some("text/plain"),
            b"still here".to_vec(),
        )
        .await;
    let (upload_status, file) = status_and_json(upload).await;
    primary
        .psql(
            "strata",
            "GRANT EXECUTE ON FUNCTION pg_current_wal_insert_lsn() TO PUBLIC",
        )
        .unwrap();
    assert_eq!(
        status,
        StatusCode::CREATED,
        "a committed write is a success: {task}"
    );
    let token = token.expect("the write still carries a token");
    let id = task["id"].as_str().unwrap();
    let read = node(1)
        .http
        .get(format!("{}/v1/tasks/{id}", node(1).base))
        .bearer_auth(&writer.access)
        .header("x-strata-consistency", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::OK, "read back with the token");
    assert_eq!(upload_status, StatusCode::CREATED, "{file}");
    let file_id = file["id"].as_str().unwrap();
    let download = node(1)
        .get(
            &format!("/v1/files/{file_id}/content"),
            Some(&writer.access),
        )
        .await;
    assert_eq!(download.status(), StatusCode::OK);
    assert_eq!(download.bytes().await.unwrap().as_ref(), b"still here");
}

/// A post made private must never be served to others from the cache, even when a read
/// in flight, served by a replica that has not replayed the change, tries to cache the
/// old public copy after the change dropped it.
#[tokio::test]
async fn a_stale_read_cannot_put_an_old_copy_back_in_the_post_cache() {
    let s4 = shard("s4");
    let author = user_on(&s4).await;
    let reader = user_on(&shard("s0")).await;
    let (status, post) = status_and_json(
        node(0)
            .post(
                "/v1/posts",
                &json!({"title": "soon private", "body": "x", "visibility": "public"}),
                Some(&author.access),
            )
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{post}");
    let path = format!("/v1/posts/{}", post["id"].as_str().unwrap());
    // Another user reads it: the public copy is cached.
    eventually(
        "the reader to see the public post",
        Duration::from_secs(10),
        || async {
            let (status, _) = status_and_json(node(1).get(&path, Some(&reader.access)).await).await;
            if status == StatusCode::OK {
                Ok(())
            } else {
                Err(format!("{status}"))
            }
        },
    )
    .await;
    let replica = cluster().pg(&s4, 1);
    replica.set_apply_delay(Duration::from_secs(3)).unwrap();
    let response = node(0)
        .http
        .patch(format!("{}{path}", node(0).base))
        .bearer_auth(&author.access)
        .json(&json!({"visibility": "private"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // Reads without a token now reach the replica that has not replayed the change: they
    // may see the old public copy, and try to cache it.
    for _ in 0..5 {
        let _ = node(1).get(&path, Some(&reader.access)).await;
    }
    replica.set_apply_delay(Duration::ZERO).unwrap();
    let id = post["id"].as_str().unwrap().to_owned();
    eventually(
        "the replica to replay the change",
        Duration::from_secs(15),
        || {
            let sql = format!("SELECT visibility FROM posts WHERE id = '{id}'");
            async move {
                match replica.psql("strata", &sql) {
                    Ok(v) if v == "private" => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            }
        },
    )
    .await;
    let (status, body) = status_and_json(node(0).get(&path, Some(&reader.access)).await).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a private post served to another user from a stale cached copy: {body}"
    );
}
