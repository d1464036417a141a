//! Online rebalancing end to end, on a cluster of its own (the test kills the mover):
//! a shard is added and rebalanced under steady load through both nodes, with the mover
//! killed once during a copy and once inside a fence; then the shard is drained under
//! load and removed. Throughout: no request fails, every acknowledged write reads back,
//! `strata shard verify` finds no difference, search holds every post exactly once at
//! its latest version, and nodes refuse a map that disagrees with the catalog.

mod load;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use load::Ledger;
use serde_json::Value;
use strata_node::config::LimitsConfig;
use strata_router::ShardMap;
use strata_router::catalog::{Catalog, MovePhase};
use strata_sandbox::nodes::binary;
use strata_sandbox::{Cluster, ClusterBuilder};
use strata_tests::api::{Api, status_and_json};
use strata_tests::{eventually, node_start_failure, shard};

const WORKERS: usize = 4;

/// Accounts signed up before any move.
const SET_UP_ACCOUNTS: usize = 12;

fn start_cluster() -> Cluster {
    ClusterBuilder::default()
        .shards(2)
        .replicas(1)
        // Two nodes carry the load; the third is restarted in the middle of a move.
        .nodes(3)
        .load_balancer(false)
        .limits(LimitsConfig {
            signup_per_ip: 100_000,
            login_per_ip: 100_000,
            ..LimitsConfig::default()
        })
        .start()
        .expect("start the rebalance test cluster")
}

fn nodes(cluster: &Cluster) -> [Api; 2] {
    [
        Api::new(cluster.nodes[0].url()),
        Api::new(cluster.nodes[1].url()),
    ]
}

/// `strata shard ...` against the cluster's catalog; returns exit success and stdout.
fn strata(cluster: &Cluster, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let output = Command::new(binary("strata").expect("the strata binary is built"))
        .args(args)
        .env("STRATA_SHARD_MAP", cluster.shard_map_path())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run strata");
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        eprintln!("strata {args:?} failed: {stderr}");
    }
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// Steady load while `during` runs; returns its result and the ledger.
async fn under_load<T: Send + 'static>(
    cluster_nodes: [Api; 2],
    ledger: Arc<Ledger>,
    during: impl FnOnce() -> T + Send + 'static,
) -> T {
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            tokio::spawn(load::worker(
                w,
                cluster_nodes.clone(),
                Arc::clone(&ledger),
                Arc::clone(&stop),
            ))
        })
        .collect();
    // Let the load reach a steady state first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let result = tokio::task::spawn_blocking(during)
        .await
        .expect("the operation ran");
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.expect("a worker ran");
    }
    result
}

/// Starts `strata shard rebalance` paused at `point`, waits until a move reaches
/// `phase`, and kills it with SIGKILL.
fn kill_rebalance_at(cluster: &Cluster, point: &str, phase: MovePhase) {
    let mut child = Command::new(binary("strata").unwrap())
        .args(["shard", "rebalance", "--json", "--max-parallel", "2"])
        .env("STRATA_SHARD_MAP", cluster.shard_map_path())
        .env("STRATA_MOVER_PAUSE", point)
        .env("STRATA_MOVER_PAUSE_MS", "60000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("start a rebalance");
    let map = cluster.spec.shard_map.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(eventually(
        &format!("a move to reach {phase:?}"),
        Duration::from_secs(60),
        || {
            let map = map.clone();
            async move {
                let state = Catalog::from_map(&map)
                    .load()
                    .await
                    .map_err(|e| e.to_string())?;
                if state.moves.iter().any(|m| m.phase == phase) {
                    Ok(())
                } else {
                    Err(format!("{} moves, none {phase:?}", state.moves.len()))
                }
            }
        },
    ));
    std::thread::sleep(Duration::from_millis(300));
    child.kill().expect("kill -9 the rebalance");
    let _ = child.wait();
}

async fn slot_counts(cluster: &Cluster) -> Value {
    let (ok, out) = strata(cluster, &["shard", "status", "--json"], &[]);
    assert!(ok, "shard status");
    let status: Value = serde_json::from_str(&out).unwrap();
    let mut counts = serde_json::Map::new();
    for shard in status["shards"].as_array().unwrap() {
        counts.insert(shard["id"].as_str().unwrap().into(), shard["slots"].clone());
    }
    Value::Object(counts)
}

/// Every acknowledged post reads back at its acknowledged version or newer through both
/// nodes, every task exists, and every account logs in.
async fn nothing_acknowledged_is_lost(cluster: &Cluster, ledger: &Ledger) {
    let accounts = ledger.accounts.lock().unwrap().clone();
    let posts = ledger.posts.lock().unwrap().clone();
    let tasks = ledger.tasks.lock().unwrap().clone();
    assert!(posts.len() > 20, "the load wrote posts: {}", posts.len());
    for api in nodes(cluster) {
        for (id, post) in &posts {
            let (status, body) = status_and_json(
                api.get(
                    &format!("/v1/posts/{id}"),
                    Some(&accounts[post.owner].access),
                )
                .await,
            )
            .await;
            assert_eq!(status, 200, "post {id} after the move: {body}");
            assert!(
                body["version"].as_i64().unwrap() >= post.version,
                "post {id} went back from version {}: {body}",
                post.version
            );
        }
        for (owner, id) in &tasks {
            let (status, body) = status_and_json(
                api.get(&format!("/v1/tasks/{id}"), Some(&accounts[*owner].access))
                    .await,
            )
            .await;
            assert_eq!(status, 200, "task {id} after the move: {body}");
        }
    }
    let api = &nodes(cluster)[0];
    for account in &accounts {
        let (status, body) =
            status_and_json(api.login(&account.username, &account.password).await).await;
        assert_eq!(
            status, 200,
            "login of {} after the move: {body}",
            account.username
        );
    }
}

/// Search finds every acknowledged post exactly once, with its latest title.
async fn search_holds_every_post_once(cluster: &Cluster, ledger: &Ledger) {
    let accounts = ledger.accounts.lock().unwrap().clone();
    let posts = ledger.posts.lock().unwrap().clone();
    let api = nodes(cluster)[1].clone();
    for (id, post) in &posts {
        let token = accounts[post.owner].access.clone();
        eventually(
            &format!("post {id} to be found once at its latest version"),
            Duration::from_secs(30),
            || {
                let (api, token, word) = (api.clone(), token.clone(), post.word.clone());
                let (id, title) = (id.clone(), post.title.clone());
                async move {
                    let response = api
                        .http
                        .get(format!("{}/v1/search", api.base))
                        .query(&[("q", word.as_str()), ("type", "post"), ("scope", "all")])
                        .bearer_auth(&token)
                        .send()
                        .await
                        .map_err(|e| e.to_string())?;
                    let (_, body) = status_and_json(response).await;
                    let items = body["items"].as_array().cloned().unwrap_or_default();
                    let hits: Vec<&Value> =
                        items.iter().filter(|i| i["id"] == id.as_str()).collect();
                    match hits[..] {
                        [hit] if hit["title"] == title.as_str() => Ok(()),
                        _ => Err(format!("hits {hits:?}, wanted one titled {title:?}")),
                    }
                }
            },
        )
        .await;
    }
}

/// Restarts the third node while the killed run's moves are unfinished: it starts from
/// the catalog's placement of that moment (slots flipped so far on the new shard, the
/// rest where they were) and becomes ready.
fn restart_mid_move(cluster: &Cluster) {
    let map = cluster.spec.shard_map.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let state = runtime.block_on(Catalog::from_map(&map).load()).unwrap();
    assert!(
        state.moves.iter().any(|m| m.phase.in_progress()),
        "a move is unfinished while the node restarts"
    );
    let node = &cluster.nodes[2];
    node.stop();
    node.start().expect("restart node-3 mid-move");
    let ready = (0..600).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        strata_sandbox::process::http_status(node.port, "/readyz") == Some(200)
    });
    assert!(ready, "node-3 is ready again after a restart mid-move");
}

/// `GET /v1/admin/rebalance` shows what `strata shard status` shows.
async fn admin_view_matches_status(cluster: &Cluster, ledger: &Ledger) {
    let admin = ledger.accounts.lock().unwrap()[0].clone();
    let (ok, _) = strata(cluster, &["user", "grant-admin", &admin.username], &[]);
    assert!(ok, "grant admin");
    let api = &nodes(cluster)[0];
    let (_, body) = status_and_json(api.login(&admin.username, &admin.password).await).await;
    let token = body["access_token"].as_str().unwrap().to_owned();
    let (status, view) = status_and_json(api.get("/v1/admin/rebalance", Some(&token)).await).await;
    assert_eq!(status, 200, "{view}");
    let (ok, out) = strata(cluster, &["shard", "status", "--json"], &[]);
    assert!(ok);
    let cli: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(view["epoch"], cli["epoch"]);
    for (a, b) in view["shards"]
        .as_array()
        .unwrap()
        .iter()
        .zip(cli["shards"].as_array().unwrap())
    {
        assert_eq!((&a["id"], &a["slots"]), (&b["id"], &b["slots"]));
    }
    let user = ledger.accounts.lock().unwrap()[1].access.clone();
    let (status, _) = status_and_json(api.get("/v1/admin/rebalance", Some(&user)).await).await;
    assert_eq!(status, 403, "not for a user without the admin role");
}

/// A row changed on the target behind the write path's back (no feed entry) makes
/// `verify` fail naming it; put back, verify is clean again. The row is a login name of
/// an account signed up before the move (rows changed after their slot's flip are
/// rightly left out of the comparison).
async fn tamper_check(cluster: &Cluster, ledger: &Ledger) {
    let names: Vec<String> = ledger.accounts.lock().unwrap()[..SET_UP_ACCOUNTS]
        .iter()
        .flat_map(|a| {
            [
                format!("'username:{}'", a.username),
                format!("'email:{}@example.com'", a.username),
            ]
        })
        .collect();
    let target = cluster.pg(&shard("s2"), 0);
    let name = target
        .psql(
            "strata",
            &format!(
                "SELECT name FROM login_names WHERE name IN ({}) LIMIT 1",
                names.join(", ")
            ),
        )
        .unwrap();
    assert!(
        !name.is_empty(),
        "s2 holds login names of the set-up accounts"
    );
    let shift = |by: &str| {
        format!(
            "BEGIN; SET LOCAL strata.mover = 'on'; \
             UPDATE login_names SET claimed_at = claimed_at + interval '{by}' WHERE name = '{name}'; COMMIT"
        )
    };
    target.psql("strata", &shift("1 second")).unwrap();
    let (ok, out) = strata(cluster, &["shard", "verify", "--json"], &[]);
    assert!(!ok, "verify exits 1 on a difference");
    assert!(out.contains(&name), "verify names the differing row: {out}");
    target.psql("strata", &shift("-1 second")).unwrap();
    let (ok, out) = strata(cluster, &["shard", "verify", "--json"], &[]);
    assert!(ok, "clean again: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_are_added_and_drained_online_with_nothing_failed_or_lost() {
    let mut cluster = start_cluster();
    let ledger = Arc::new(Ledger::default());
    load::sign_up(&nodes(&cluster)[0], &ledger, SET_UP_ACCOUNTS).await;

    // A node whose map disagrees with the catalog refuses, naming the difference.
    let mut wrong = cluster.spec.shard_map.clone();
    wrong.shards[0].weight = 2;
    let stderr = node_start_failure(&wrong.to_toml());
    assert!(
        stderr.contains("disagrees with the cluster catalog") && stderr.contains("weight 2"),
        "{stderr}"
    );

    // Grow: add s2 and rebalance under load, killing the mover mid-copy and mid-fence.
    let (grown, report) = under_load(nodes(&cluster), Arc::clone(&ledger), move || {
        let added = cluster.add_shard(1, 1).expect("add a shard");
        assert_eq!(added, shard("s2"));
        kill_rebalance_at(&cluster, "copy", MovePhase::Copying);
        // --cancel returns the unfinished moves' slots to their sources.
        let (ok, out) = strata(&cluster, &["shard", "rebalance", "--cancel", "--json"], &[]);
        assert!(ok, "cancel");
        let cancelled: Value = serde_json::from_str(&out).unwrap();
        assert!(
            !cancelled["returned_slots"].as_array().unwrap().is_empty(),
            "the killed run's moves were returned: {out}"
        );
        let (ok, out) = strata(&cluster, &["shard", "status", "--json"], &[]);
        assert!(ok);
        let status: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(status["moves_in_progress"], 0, "{out}");
        kill_rebalance_at(&cluster, "copy", MovePhase::Copying);
        kill_rebalance_at(&cluster, "fence", MovePhase::Flipping);
        restart_mid_move(&cluster);
        let (ok, out) = strata(
            &cluster,
            &["shard", "rebalance", "--json", "--max-parallel", "4"],
            &[],
        );
        assert!(ok, "the resumed rebalance finishes");
        (cluster, serde_json::from_str::<Value>(&out).unwrap())
    })
    .await;
    cluster = grown;
    let failures = ledger.failures();
    assert!(
        failures.is_empty(),
        "{} requests failed during the move: {failures:?}",
        failures.len()
    );
    let counts = slot_counts(&cluster).await;
    let share = counts["s2"].as_f64().unwrap() / 4096.0;
    assert!(
        (0.25..=0.42).contains(&share),
        "s2 took {share} of the slots: {counts}"
    );
    eprintln!(
        "grow: {} requests, {} moves in the last run, pause p99 {} ms",
        ledger.requests.load(Ordering::Relaxed),
        report["moves"].as_array().map_or(0, Vec::len),
        report["pause_ms_p99"]
    );
    let (ok, out) = strata(&cluster, &["shard", "verify", "--json"], &[]);
    assert!(ok, "verify finds no difference: {out}");
    nothing_acknowledged_is_lost(&cluster, &ledger).await;
    search_holds_every_post_once(&cluster, &ledger).await;
    admin_view_matches_status(&cluster, &ledger).await;
    // The node restarted mid-move followed the rest of the move: it serves every post.
    let third = Api::new(cluster.nodes[2].url());
    let accounts = ledger.accounts.lock().unwrap().clone();
    let posts = ledger.posts.lock().unwrap().clone();
    for (id, post) in &posts {
        let (status, body) = status_and_json(
            third
                .get(
                    &format!("/v1/posts/{id}"),
                    Some(&accounts[post.owner].access),
                )
                .await,
        )
        .await;
        assert_eq!(
            status, 200,
            "node-3 after its mid-move restart, post {id}: {body}"
        );
    }

    // verify notices a row that differs between source and target.
    tamper_check(&cluster, &ledger).await;

    // A node restarted after the move comes back with the catalog's placement.
    cluster.nodes[0].stop();
    cluster.nodes[0].start().expect("restart node-1");
    eventually("node-1 to be ready again", Duration::from_secs(60), || {
        let url = format!("{}/readyz", cluster.nodes[0].url());
        async move {
            match reqwest::get(&url).await {
                Ok(r) if r.status() == 200 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    nothing_acknowledged_is_lost(&cluster, &ledger).await;

    // Shrink: drain s2 under load, clean up, remove it.
    let (drained, ok) = under_load(nodes(&cluster), Arc::clone(&ledger), move || {
        let (ok, _) = strata(
            &cluster,
            &["shard", "drain", "s2", "--json", "--max-parallel", "4"],
            &[],
        );
        (cluster, ok)
    })
    .await;
    cluster = drained;
    assert!(ok, "the drain finishes");
    let failures = ledger.failures();
    assert!(
        failures.is_empty(),
        "{} requests failed during the drain: {failures:?}",
        failures.len()
    );
    assert_eq!(slot_counts(&cluster).await["s2"], 0);
    let (ok, out) = strata(&cluster, &["shard", "verify", "--json"], &[]);
    assert!(ok, "verify after the drain: {out}");
    let (refused, _) = strata(&cluster, &["shard", "remove", "s2"], &[]);
    assert!(
        !refused,
        "remove refuses a shard whose source copies are not cleaned up"
    );
    let (ok, _) = strata(&cluster, &["shard", "cleanup", "--json"], &[]);
    assert!(ok, "cleanup");
    let (ok, _) = strata(&cluster, &["shard", "remove", "s2", "--json"], &[]);
    assert!(ok, "remove the drained shard");
    cluster.forget_shard(&shard("s2")).expect("forget s2");
    nothing_acknowledged_is_lost(&cluster, &ledger).await;
    search_holds_every_post_once(&cluster, &ledger).await;
    let map = ShardMap::load(&cluster.shard_map_path()).unwrap();
    assert_eq!(map.shards.len(), 2);
}

/// Where a post's row is: the number of copies in each shard's own database.
fn copies_of(cluster: &Cluster, post_id: &str) -> Vec<(String, String)> {
    let map = &cluster.spec.shard_map;
    map.shards
        .iter()
        .map(|s| {
            let count = cluster
                .pg(&s.id, 0)
                .psql(
                    map.database_of(&s.id),
                    &format!("SELECT count(*) FROM posts WHERE id = '{post_id}'"),
                )
                .expect("count a post's rows");
            (s.id.to_string(), count)
        })
        .collect()
}

/// The most connections the node's pool opens on each host of each shard, from
/// `GET /v1/admin/shards`.
async fn pool_max_sizes(api: &Api, admin: &str) -> std::collections::BTreeMap<String, Vec<u64>> {
    let (status, body) = status_and_json(api.get("/v1/admin/shards", Some(admin)).await).await;
    assert_eq!(status, 200, "{body}");
    body["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let sizes = s["hosts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["pool_max_size"].as_u64().unwrap())
                .collect();
            (s["id"].as_str().unwrap().to_owned(), sizes)
        })
        .collect()
}

#[tokio::test]
async fn shards_sharing_a_server_keep_to_their_own_databases_and_move_out_online() {
    let mut cluster = ClusterBuilder::default()
        .shards(2)
        .servers(1)
        .replicas(1)
        .nodes(1)
        .load_balancer(false)
        .redis_replicas(0)
        .limits(LimitsConfig {
            signup_per_ip: 100_000,
            ..LimitsConfig::default()
        })
        .start()
        .expect("start a cluster of two shards on one server");
    let (s0, s1) = (shard("s0"), shard("s1"));
    let map = cluster.spec.shard_map.clone();
    assert_eq!(map.shard(&s0).unwrap().hosts, map.shard(&s1).unwrap().hosts);
    assert_eq!(
        (map.database_of(&s0), map.database_of(&s1)),
        ("strata_s0", "strata_s1")
    );
    for index in [0, 1] {
        let (a, b) = (cluster.pg(&s0, index), cluster.pg(&s1, index));
        assert!(a.postmaster_pid().is_some());
        assert_eq!(
            a.postmaster_pid(),
            b.postmaster_pid(),
            "one server process holds both shards (instance {index})"
        );
    }

    // Users and posts land on both shards, each row in its own shard's database only.
    let api = Api::new(cluster.nodes[0].url());
    let placement = strata_router::Placement::from_map(&map);
    let mut posts: Vec<(String, String, String)> = Vec::new(); // (id, access, title)
    let mut owners = std::collections::BTreeSet::new();
    let admin = strata_tests::api::unique("shared_admin");
    api.signup_ok(&admin, "a long enough password").await;
    let (ok, out) = strata(&cluster, &["user", "grant-admin", &admin], &[]);
    assert!(ok, "grant admin: {out}");
    let (_, body) = status_and_json(api.login(&admin, "a long enough password").await).await;
    let admin = body["access_token"].as_str().unwrap().to_owned();
    // The two shards split half the node's connections to their server (16 by default).
    assert_eq!(
        pool_max_sizes(&api, &admin).await,
        [("s0".into(), vec![4, 4]), ("s1".into(), vec![4, 4])].into()
    );
    for i in 0.. {
        if owners.len() == 2 && posts.len() >= 12 {
            break;
        }
        assert!(i < 200, "200 signups never placed users on both shards");
        let tokens = api
            .signup_ok(
                &strata_tests::api::unique("shared"),
                "a long enough password",
            )
            .await;
        let owner = placement.shard_of(strata_router::route_hash(&tokens.user_id));
        owners.insert(owner.to_string());
        let title = format!("shared server post {i}");
        let (status, body) = status_and_json(
            api.post(
                "/v1/posts",
                &serde_json::json!({"title": title, "body": "on a shared server"}),
                Some(&tokens.access),
            )
            .await,
        )
        .await;
        assert_eq!(status, 201, "{body}");
        let id = body["id"].as_str().unwrap().to_owned();
        let copies = copies_of(&cluster, &id);
        for (on, count) in &copies {
            let want = if on == owner.as_str() { "1" } else { "0" };
            assert_eq!(count, want, "post {id} of a user on {owner}: {copies:?}");
        }
        posts.push((id, tokens.access, title));
    }

    // A shard on a server of its own takes its share from both, online.
    let added = cluster.add_shard(0, 1).expect("add a shard");
    let (ok, out) = strata(
        &cluster,
        &["shard", "rebalance", "--json", "--max-parallel", "4"],
        &[],
    );
    assert!(ok, "rebalance: {out}");
    let (ok, out) = strata(&cluster, &["shard", "verify", "--json"], &[]);
    assert!(ok, "verify finds no difference: {out}");
    let (ok, out) = strata(&cluster, &["shard", "cleanup", "--json"], &[]);
    assert!(ok, "cleanup: {out}");
    // A shard on a server of its own has the whole budget there.
    assert_eq!(
        pool_max_sizes(&api, &admin).await,
        [
            ("s0".into(), vec![4, 4]),
            ("s1".into(), vec![4, 4]),
            (added.to_string(), vec![16]),
        ]
        .into()
    );
    let counts = slot_counts(&cluster).await;
    for id in ["s0", "s1", added.as_str()] {
        assert!(
            counts[id].as_u64().unwrap() > 1000,
            "{id} holds a share of the slots: {counts}"
        );
    }
    let mut moved = 0;
    for (id, access, title) in &posts {
        let copies = copies_of(&cluster, id);
        let held: Vec<&String> = copies
            .iter()
            .filter(|(_, count)| count == "1")
            .map(|(on, _)| on)
            .collect();
        assert_eq!(held.len(), 1, "post {id} has one copy: {copies:?}");
        moved += usize::from(held[0] == added.as_str());
        let (status, body) =
            status_and_json(api.get(&format!("/v1/posts/{id}"), Some(access)).await).await;
        assert_eq!(
            (status.as_u16(), body["title"].as_str()),
            (200, Some(title.as_str())),
            "post {id} after the move: {body}"
        );
    }
    assert!(moved > 0, "some posts moved to {added}");
}
