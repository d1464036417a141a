//! The fault campaign as tests, on a cluster of its own: 2 shards × (primary + replica)
//! replicating synchronously, a Redis Cluster of 3 masters with a replica each, and 2
//! nodes behind HAProxy. Steady load runs through the load balancer while one process
//! is broken; each test asserts the direction of the outcome: the failures stay within
//! budget, errors stop once the fault is over, and every acknowledged write is still
//! there. The tests take turns: one fault at a time. Scaling the nodes out and in with
//! `strata dev scale` is held to the strictest budget: no failed request. `strata-bench faults` runs the same
//! faults at length and reports the figures. A slow client is a fault too: uploads that
//! trickle in and uploads that stall.

mod steady;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use strata_node::config::LimitsConfig;
use strata_router::{Placement, ShardId, route_hash};
use strata_sandbox::Cluster;
use strata_sandbox::kernel_balancer::KernelBalancer;
use strata_tests::api::{Api, Tokens, consistency_token, status_and_json, unique};
use strata_tests::{
    SharedCluster, eventually, fast_router_settings, nodes_answering, shard, strata_dev,
};

use steady::{Running, Tally};

static CLUSTER: SharedCluster = SharedCluster::new();

/// One fault at a time: each test holds its turn while it breaks something.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const PASSWORD: &str = "correct horse battery staple";

/// The share of requests a fault may fail (0.1 %).
const FAILURE_BUDGET: f64 = 0.001;

fn cluster() -> &'static Cluster {
    CLUSTER.get(|| {
        Cluster::builder()
            .shards(2)
            .replicas(1)
            .synchronous(true)
            .redis_replicas(1)
            .nodes(2)
            .kernel_balancer(true)
            .router(fast_router_settings())
            // Above the Redis client's own deadline (6 s), so a failover slows requests
            // without cutting them; short enough for the slow-upload test to outlast it.
            .request_timeout_ms(8_000)
            .upload_idle_timeout_ms(2_000)
            // Users are placed on a shard by signing up until one lands there, all from
            // this one address: the default 60 signups a minute is not what these test.
            .limits(LimitsConfig {
                signup_per_ip: 100_000,
                ..LimitsConfig::default()
            })
    })
}

fn balancer() -> Api {
    let lb = cluster().load_balancer.as_ref();
    Api::new(lb.expect("the cluster has a load balancer").url())
}

/// `n` new users, signed up through the load balancer.
async fn users(n: usize) -> Vec<Tokens> {
    let mut out = Vec::new();
    for _ in 0..n {
        let name = unique("steady");
        out.push(balancer().signup_ok(&name, PASSWORD).await);
    }
    out
}

/// A new user whose rows live on `wanted`.
async fn user_on(wanted: &ShardId) -> Tokens {
    let placement = Placement::from_map(&cluster().spec.shard_map);
    for _ in 0..200 {
        let user = users(1).await.remove(0);
        if placement.shard_of(route_hash(&user.user_id)) == wanted {
            return user;
        }
    }
    panic!("no user landed on {wanted} in 200 signups");
}

/// `n` new users whose rows live on `shard`.
async fn users_on(shard: &ShardId, n: usize) -> Vec<Tokens> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(user_on(shard).await);
    }
    out
}

/// Waits until `user` can create a task again (their shard takes writes).
async fn writes_resume(where_: &str, user: &Tokens) {
    eventually(
        &format!("writes to resume {where_}"),
        Duration::from_secs(15),
        || async {
            let response = balancer()
                .post(
                    "/v1/tasks",
                    &serde_json::json!({"title": "resumed"}),
                    Some(&user.access),
                )
                .await;
            match response.status() {
                StatusCode::CREATED => Ok(()),
                other => Err(other.to_string()),
            }
        },
    )
    .await;
}

/// Steady load before and after each fault. The budget is a share of steady load, and a
/// fault fails a few requests in flight at once, so the load runs long enough around it
/// for the share to mean something.
const STEADY: Duration = Duration::from_secs(4);

/// Runs load for [`STEADY`] before and after `fault`, returning what it saw.
async fn under_load<F, Fut>(users: &[Tokens], fault: F) -> std::sync::Arc<Tally>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let load = Running::start(&balancer(), users);
    tokio::time::sleep(STEADY).await;
    fault().await;
    tokio::time::sleep(STEADY).await;
    load.stop().await
}

fn assert_within_budget(what: &str, tally: &Tally) {
    let (sent, failed) = tally.totals();
    assert!(sent > 100, "{what}: the load ran ({sent} requests)");
    assert!(
        (failed as f64) <= (sent as f64) * FAILURE_BUDGET,
        "{what}: {failed} of {sent} requests failed; {}; the nodes logged: {:?}",
        tally.describe(),
        node_warnings()
    );
}

/// The load ran, and not one request failed.
fn assert_none_failed(what: &str, tally: &Tally) {
    let (sent, failed) = tally.totals();
    assert!(sent > 100, "{what}: the load ran ({sent} requests)");
    assert_eq!(failed, 0, "{what} fails no request: {}", tally.describe());
}

/// The last warnings the nodes logged, to say why requests failed.
fn node_warnings() -> Vec<String> {
    let mut out = Vec::new();
    for node in &cluster().nodes {
        let log = std::fs::read_to_string(node.log_file()).unwrap_or_default();
        let warnings: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("WARN") && l.contains("strata"))
            .collect();
        out.extend(
            warnings
                .iter()
                .rev()
                .take(5)
                .map(|l| l.chars().take(400).collect()),
        );
    }
    out
}

/// Every acknowledged task reads back for its owner.
async fn assert_all_acked_present(users: &[Tokens], tally: &Tally) {
    let acked = tally.acked.lock().unwrap().clone();
    assert!(!acked.is_empty(), "the load wrote something");
    for (owner, id) in acked {
        let response = balancer()
            .get(&format!("/v1/tasks/{id}"), Some(&users[owner].access))
            .await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "acknowledged task {id} reads back"
        );
    }
}

#[tokio::test]
async fn a_killed_redis_master_fails_over_under_load_and_no_logout_comes_back() {
    let _turn = TURN.lock().await;
    let redis = cluster().redis.as_ref().expect("the cluster has Redis");
    // A user with two sessions; one is logged out just before its Redis master dies.
    let name = unique("revoked");
    let kept = balancer().signup_ok(&name, PASSWORD).await;
    let (_, second) = status_and_json(balancer().login(&name, PASSWORD).await).await;
    let revoked = Tokens::from_body(&second);
    let logout = balancer()
        .post(
            "/v1/auth/logout",
            &serde_json::json!({}),
            Some(&revoked.access),
        )
        .await;
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    let key = format!("{{u:{}}}", kept.user_id);
    let master = redis
        .master_of(&key)
        .expect("a master serves the user's slot");

    let mut load_users = users(6).await;
    load_users.push(kept.clone());
    let tally = under_load(&load_users, || async {
        redis.kill_server(master);
        eventually(
            "a replica to take over the dead master's slots",
            Duration::from_secs(30),
            || async {
                match redis.master_of(&key) {
                    Some(port) if port != master && redis.healthy() => Ok(()),
                    other => Err(format!("master now {other:?}")),
                }
            },
        )
        .await;
    })
    .await;
    redis
        .start()
        .expect("the killed server rejoins as a replica");

    assert_within_budget("killing a Redis master", &tally);
    for node in &cluster().nodes {
        let api = Api::new(node.url());
        assert_eq!(
            api.me_status(&revoked.access).await,
            StatusCode::UNAUTHORIZED,
            "the logged-out session stays dead after the failover on {}",
            node.url()
        );
        assert_eq!(api.me_status(&kept.access).await, StatusCode::OK);
    }
}

#[tokio::test]
async fn a_killed_primary_loses_no_acknowledged_write_and_its_shard_reads_on() {
    let _turn = TURN.lock().await;
    let s0 = shard("s0");
    let on_s0 = users_on(&s0, 3).await;
    let primary = cluster().pg(&s0, 0);
    let replica = cluster().pg(&s0, 1);
    let load = Running::start(&balancer(), &on_s0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    primary.kill();
    // Reads of the shard go on from its replica while it has no primary.
    eventually(
        "reads of the shard to be served by its replica",
        Duration::from_secs(10),
        || async {
            let response = balancer()
                .get("/v1/tasks?limit=5", Some(&on_s0[0].access))
                .await;
            match response.status() {
                StatusCode::OK => Ok(()),
                other => Err(other.to_string()),
            }
        },
    )
    .await;
    for _ in 0..10 {
        let response = balancer()
            .get("/v1/tasks?limit=5", Some(&on_s0[1].access))
            .await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "reads keep working without a primary"
        );
    }
    replica.promote().expect("promote the replica");
    writes_resume("on the promoted replica", &on_s0[2]).await;
    let tally = load.stop().await;
    assert_all_acked_present(&on_s0, &tally).await;
    let (sent, _) = tally.totals();
    assert!(sent > 0, "{}", tally.describe());
}

#[tokio::test]
async fn a_node_stopped_with_sigterm_fails_no_request_and_a_killed_one_almost_none() {
    let _turn = TURN.lock().await;
    let load_users = users(6).await;
    let node = &cluster().nodes[1];
    let stopped = under_load(&load_users, || async {
        node.stop();
        node.start().expect("restart the node");
    })
    .await;
    assert_none_failed("a rolling restart", &stopped);
    assert_all_acked_present(&load_users, &stopped).await;

    let killed = under_load(&load_users, || async {
        node.kill();
        node.start().expect("restart the node");
    })
    .await;
    assert_within_budget("killing a node", &killed);
    assert_all_acked_present(&load_users, &killed).await;

    // The kernel balancer follows HAProxy: a dead node gets no new connections once
    // HAProxy has found it down, and gets them again once it is back.
    node.kill();
    kernel_follows(node.port, false).await;
    let seen = nodes_answering(&kernel().url(), 6).await;
    assert_eq!(
        seen.get("node-1"),
        Some(&6),
        "every new connection reaches the live node: {seen:?}"
    );
    node.start().expect("restart the node");
    kernel_follows(node.port, true).await;
    let seen = nodes_answering(&kernel().url(), 6).await;
    assert!(
        seen.get("node-2").is_some_and(|&n| n >= 2),
        "the node is back in turn: {seen:?}"
    );
}

fn kernel() -> &'static KernelBalancer {
    let kernel = cluster().kernel_balancer.as_ref();
    kernel.expect("the cluster has a kernel balancer")
}

/// Waits until the kernel balancer sends new connections to `port` (`included`), or no
/// longer does, off the test's runtime (the steady load keeps running on it).
async fn kernel_follows(port: u16, included: bool) {
    tokio::task::spawn_blocking(move || kernel().wait_following(port, included))
        .await
        .expect("the wait runs")
        .unwrap_or_else(|e| panic!("{e}"));
}

/// `strata dev scale --nodes N` on this cluster: the node ids it printed.
async fn dev_scale(nodes: usize) -> Vec<String> {
    let listed = strata_dev(cluster(), &["scale", "--nodes", &nodes.to_string()]).await;
    listed
        .as_array()
        .expect("dev scale --json prints the nodes")
        .iter()
        .map(|n| n["id"].as_str().expect("a node id").to_owned())
        .collect()
}

/// The API requests (not health checks or scrapes) a node has answered, from its
/// `/metrics`.
async fn api_requests_served(url: &str) -> u64 {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .expect("the node answers /metrics")
        .text()
        .await
        .expect("a metrics page");
    text.lines()
        .filter(|l| l.starts_with("http_requests_total{") && l.contains("route=\"/v1/"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Uploads a small file slowly (about 1.5 s) through the load balancer, again and again
/// until `going` turns false; returns each answer's status (0: none).
async fn slow_uploads(access: String, going: Arc<AtomicBool>) -> Vec<u16> {
    let api = balancer();
    let mut statuses = Vec::new();
    while going.load(Ordering::Relaxed) {
        let sent = api
            .http
            .post(format!("{}/v1/files?name=scaling.txt", api.base))
            .bearer_auth(&access)
            .header("content-type", "text/plain")
            .body(trickle(6, Duration::from_millis(300), false))
            .send()
            .await;
        statuses.push(sent.map_or(0, |r| r.status().as_u16()));
    }
    statuses
}

#[tokio::test]
async fn scaling_the_nodes_two_to_four_to_two_under_load_fails_no_request() {
    let _turn = TURN.lock().await;
    let load_users = users(8).await;
    let spec_nodes = || {
        let spec =
            std::fs::read_to_string(cluster().spec.data_dir.join("spec.json")).expect("spec.json");
        let spec: strata_sandbox::ClusterSpec = serde_json::from_str(&spec).expect("a spec");
        spec.node_ports
    };
    let load = Running::start(&balancer(), &load_users);
    tokio::time::sleep(STEADY).await;

    let grown = dev_scale(4).await;
    assert_eq!(grown, ["node-1", "node-2", "node-3", "node-4"]);
    let ports = spec_nodes();
    assert_eq!(ports.len(), 4, "spec.json records the new nodes");
    // The load balancer sends the new nodes their share of the load.
    let new_nodes: Vec<String> = ports[2..]
        .iter()
        .map(|port| format!("http://127.0.0.1:{port}"))
        .collect();
    for url in &new_nodes {
        eventually(
            &format!("{url} to serve API requests through the load balancer"),
            Duration::from_secs(10),
            || async {
                match api_requests_served(url).await {
                    0 => Err("none yet".to_owned()),
                    _ => Ok(()),
                }
            },
        )
        .await;
    }
    for &port in &ports[2..] {
        kernel_follows(port, true).await;
    }
    let seen = nodes_answering(&kernel().url(), 8).await;
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        ["node-1", "node-2", "node-3", "node-4"],
        "the kernel balancer gives the new nodes their turn: {seen:?}"
    );
    tokio::time::sleep(STEADY).await;

    // Slow uploads keep requests in flight on every node while the last two leave:
    // each must still complete.
    let uploading = Arc::new(AtomicBool::new(true));
    let uploaders: Vec<_> = load_users[..8]
        .iter()
        .map(|user| tokio::spawn(slow_uploads(user.access.clone(), Arc::clone(&uploading))))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let shrunk = dev_scale(2).await;
    uploading.store(false, Ordering::Relaxed);
    let mut uploads = Vec::new();
    for uploader in uploaders {
        uploads.extend(uploader.await.expect("an uploader"));
    }
    assert_eq!(shrunk, ["node-1", "node-2"]);
    assert!(uploads.len() >= 8, "the uploads ran: {uploads:?}");
    assert!(
        uploads.iter().all(|&status| status == 201),
        "every upload in flight while nodes left completed: {uploads:?}"
    );
    assert_eq!(spec_nodes().len(), 2, "spec.json forgets the removed nodes");
    let seen = nodes_answering(&kernel().url(), 8).await;
    assert_eq!(
        seen,
        [("node-1".to_owned(), 4), ("node-2".to_owned(), 4)].into(),
        "the kernel balancer sends new connections only to the nodes left"
    );
    for url in &new_nodes {
        assert!(
            reqwest::get(format!("{url}/healthz")).await.is_err(),
            "the removed node {url} has stopped"
        );
    }
    tokio::time::sleep(STEADY).await;
    let tally = load.stop().await;

    let (sent, failed) = tally.totals();
    eprintln!(
        "scaling 2 -> 4 -> 2: {sent} requests, {failed} failed; {} slow uploads while nodes left",
        uploads.len()
    );
    assert_none_failed("scaling 2 -> 4 -> 2", &tally);
    assert_all_acked_present(&load_users, &tally).await;
}

#[tokio::test]
async fn a_killed_replica_fails_almost_nothing_and_a_frozen_primary_recovers() {
    let _turn = TURN.lock().await;
    let s1 = shard("s1");
    let on_s1 = users_on(&s1, 3).await;
    // Synchronous replication: the shard's writes wait while its replica is down, so
    // the replica comes back within the load.
    let replica = cluster().pg(&s1, 1);
    let tally = under_load(&on_s1, || async {
        replica.kill();
        tokio::time::sleep(Duration::from_secs(1)).await;
        replica.start().expect("restart the replica");
    })
    .await;
    assert_within_budget("killing a replica", &tally);
    assert_all_acked_present(&on_s1, &tally).await;

    let primary = cluster().pg(&s1, 0);
    let frozen = under_load(&on_s1, || async {
        primary.pause();
        tokio::time::sleep(Duration::from_secs(5)).await;
        primary.resume();
    })
    .await;
    assert_all_acked_present(&on_s1, &frozen).await;
    // Once thawed, the shard serves again.
    writes_resume("on the thawed primary", &on_s1[0]).await;
}

/// Files left in the object store under a user's prefix (finished objects and the
/// staging files of unfinished ones).
fn stored_files(user_id: &str) -> usize {
    fn count(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir).map_or(0, |entries| {
            entries
                .flatten()
                .map(|e| {
                    let path = e.path();
                    if path.is_dir() { count(&path) } else { 1 }
                })
                .sum()
        })
    }
    count(
        &cluster()
            .spec
            .data_dir
            .join("objects")
            .join("files")
            .join(user_id),
    )
}

/// A body that sends `chunks` pieces of 1 KiB, `gap` apart, then (with `stall`) stops
/// sending without ending.
fn trickle(chunks: usize, gap: Duration, stall: bool) -> reqwest::Body {
    let stream = futures::stream::unfold(0usize, move |sent| async move {
        if sent == chunks {
            if stall {
                std::future::pending::<()>().await;
            }
            return None;
        }
        if sent > 0 {
            tokio::time::sleep(gap).await;
        }
        Some((
            Ok::<_, std::io::Error>(vec![b'a' + (sent % 26) as u8; 1024]),
            sent + 1,
        ))
    });
    reqwest::Body::wrap_stream(stream)
}

/// An upload slower than the request deadline completes while its bytes keep coming; one
/// that stops sending is refused after the idle timeout, and leaves no bytes behind.
#[tokio::test]
async fn a_slow_upload_completes_and_a_stalled_one_leaves_nothing_behind() {
    let user = users(1).await.remove(0);
    let node = Api::new(cluster().nodes[0].url());
    // 12 KiB over 11 s: longer than the 8 s request deadline, never idle for 2 s.
    let slow = node
        .http
        .post(format!("{}/v1/files?name=slow.txt", node.base))
        .bearer_auth(&user.access)
        .header("content-type", "text/plain")
        .body(trickle(12, Duration::from_secs(1), false))
        .send()
        .await
        .expect("an answer to the slow upload");
    let written = consistency_token(&slow);
    let (status, file) = status_and_json(slow).await;
    assert_eq!(status, StatusCode::CREATED, "{file}");
    assert_eq!(file["size"], 12 * 1024);
    let id = file["id"].as_str().unwrap();
    // With the upload's token: a replica that has not replayed the upload yet must not
    // answer the read (commits wait for the replica to store the WAL, not to apply it).
    let download = node
        .get_after(&format!("/v1/files/{id}/content"), &user.access, &written)
        .await;
    assert_eq!(download.status(), StatusCode::OK);
    assert_eq!(download.bytes().await.unwrap().len(), 12 * 1024);
    assert_eq!(stored_files(&user.user_id), 1, "the slow upload's object");

    let stalled = node
        .http
        .post(format!("{}/v1/files?name=stalled.txt", node.base))
        .bearer_auth(&user.access)
        .header("content-type", "text/plain")
        .body(trickle(3, Duration::from_millis(200), true))
        .send()
        .await;
    if let Ok(response) = stalled {
        let (status, problem) = status_and_json(response).await;
        assert_eq!(status, StatusCode::REQUEST_TIMEOUT, "{problem}");
    }
    eventually(
        "the stalled upload's bytes to be removed",
        Duration::from_secs(10),
        || async {
            match stored_files(&user.user_id) {
                1 => Ok(()),
                n => Err(format!("{n} files stored")),
            }
        },
    )
    .await;
    let (_, listed) = status_and_json(node.get("/v1/files", Some(&user.access)).await).await;
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
}
