//! Helpers shared by the end-to-end test binaries: one real cluster per binary, started
//! on first use and shared by its tests (each test works on its own keys, tables or
//! shard), plus polling helpers that wait on a condition with a deadline instead of
//! sleeping.

pub mod api;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use strata_router::{RouterSettings, ShardId, Topology};
use strata_sandbox::{Cluster, ClusterBuilder};

/// Runs `strata dev <args> --json` on `cluster`'s data directory (the operator command
/// itself, without blocking the test's runtime) and returns what it printed; a failed
/// command fails the test with its error output.
pub async fn strata_dev(cluster: &Cluster, args: &[&str]) -> serde_json::Value {
    let output = tokio::process::Command::new(
        strata_sandbox::nodes::binary("strata").expect("the strata binary is built"),
    )
    .arg("dev")
    .args(args)
    .arg("--json")
    .arg("--data-dir")
    .arg(&cluster.spec.data_dir)
    .output()
    .await
    .expect("run strata dev");
    assert!(
        output.status.success(),
        "strata dev {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("strata dev --json prints JSON")
}

/// A cluster shared by every test of one binary.
pub struct SharedCluster(OnceLock<Cluster>);

impl SharedCluster {
    /// An empty slot, for a `static`.
    pub const fn new() -> Self {
        Self(OnceLock::new())
    }

    /// The cluster, started by the first test that asks. The reaper stops it when the
    /// test binary exits, whatever the outcome.
    pub fn get(&self, builder: impl FnOnce() -> ClusterBuilder) -> &Cluster {
        self.0.get_or_init(|| {
            builder()
                .start()
                .unwrap_or_else(|e| panic!("start the test cluster: {e}"))
        })
    }
}

impl Default for SharedCluster {
    fn default() -> Self {
        Self::new()
    }
}

/// A router over the cluster's shard map, polling in the background for this test's
/// runtime (pools belong to the runtime that made them, so each test builds its own).
pub async fn router(
    cluster: &Cluster,
    settings: RouterSettings,
) -> (Arc<Topology>, strata_router::topology::PollerGuard) {
    let topology = Topology::connect(cluster.spec.shard_map.clone(), settings).await;
    let poller = topology.spawn_poller();
    (topology, poller)
}

/// Router settings that notice failures quickly, for failover tests.
pub fn fast_router_settings() -> RouterSettings {
    RouterSettings {
        poll_interval_ms: 100,
        poll_timeout_ms: 500,
        max_replica_lag_ms: 500,
        ban_ms: 1000,
        pool_max_size: 4,
        connect_timeout_ms: 1000,
    }
}

/// A shard id from a literal.
pub fn shard(id: &str) -> ShardId {
    ShardId::parse(id).expect("test shard ids are valid")
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after `deadline` with
/// `what` and the last value seen.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    let mut last = String::from("never checked");
    while start.elapsed() < deadline {
        match check().await {
            Ok(value) => return value,
            Err(why) => last = why,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not happen within {deadline:?}; last: {last}");
}

/// `GET url`: status and body.
pub async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// Which node answered each of `connections` requests for `/healthz` at `base`, each on
/// a connection of its own: how a balancer of connections spread them. A request that
/// fails counts under `"failed"`.
pub async fn nodes_answering(base: &str, connections: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..connections {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(5))
            .build()
            .expect("an HTTP client");
        let node = match client.get(format!("{base}/healthz")).send().await {
            Ok(response) => response
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|body| body["node_id"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "unreadable".to_owned()),
            Err(_) => "failed".to_owned(),
        };
        *seen.entry(node).or_insert(0) += 1;
    }
    seen
}

/// Writes a node config for `map_text` and runs the node binary, which must exit with
/// an error. Returns what it printed.
pub fn node_start_failure(map_text: &str) -> String {
    let dir = std::env::temp_dir().join(format!(
        "strata-node-refusal-{}-{}",
        std::process::id(),
        map_text.len()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let map_path = dir.join("shard-map.toml");
    std::fs::write(&map_path, map_text).unwrap();
    let config = strata_node::config::NodeConfig {
        shard_map: map_path,
        listen: ([127, 0, 0, 1], 0).into(),
        auth: strata_sandbox::cluster::auth_with_fresh_key(),
        ..strata_node::config::NodeConfig::default()
    };
    let config_path = dir.join("node.toml");
    std::fs::write(&config_path, config.to_toml()).unwrap();
    let output = std::process::Command::new(strata_sandbox::nodes::node_binary().unwrap())
        .arg("--config")
        .arg(&config_path)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!output.status.success(), "the node should refuse to start");
    String::from_utf8_lossy(&output.stderr).into_owned()
}
