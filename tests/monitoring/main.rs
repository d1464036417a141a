//! Monitoring and the autoscaling signal against a real Prometheus, on a cluster of its
//! own (2 shards with replicas, Redis with replicas, 2 nodes behind HAProxy, Prometheus
//! with the Postgres and Redis exporters, the project's rules loaded): every target is
//! scraped, every rule evaluates, every dashboard panel's query returns data under
//! load, and the prometheus-adapter query behind the HPA, with the HPA's own formula,
//! asks for more nodes under a ramp and for fewer after it. The load-driven tests take
//! turns.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use strata_node::config::LimitsConfig;
use strata_sandbox::Cluster;
use strata_sandbox::monitoring::NAMESPACE;
use strata_tests::api::{Api, status_and_json, unique};
use strata_tests::{SharedCluster, eventually, strata_dev};

static CLUSTER: SharedCluster = SharedCluster::new();

/// One load at a time: the autoscaling test needs the quiet after its own ramp.
static LOAD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const PASSWORD: &str = "correct horse battery staple";

fn cluster() -> &'static Cluster {
    CLUSTER.get(|| {
        Cluster::builder().monitoring(true).limits(LimitsConfig {
            login_per_ip: 100_000,
            signup_per_ip: 100_000,
            refresh_per_ip: 100_000,
            ..LimitsConfig::default()
        })
    })
}

fn prometheus() -> String {
    cluster()
        .monitoring
        .as_ref()
        .expect("the cluster is monitored")
        .url()
}

fn load_balancer() -> Api {
    Api::new(
        cluster()
            .load_balancer
            .as_ref()
            .expect("a load balancer")
            .url(),
    )
}

fn repo_file(relative: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// An instant query; its result vector (an error answer fails the test).
async fn query(expr: &str) -> Vec<Value> {
    let response = reqwest::Client::new()
        .get(format!("{}/api/v1/query", prometheus()))
        .query(&[("query", expr)])
        .send()
        .await
        .expect("prometheus answers");
    let (status, body) = status_and_json(response).await;
    assert_eq!(status, StatusCode::OK, "{expr}: {body}");
    assert_eq!(body["status"], "success", "{expr}: {body}");
    body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn sample_value(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Steady traffic through the load balancer until `stop` is set: signups, logins,
/// post and task writes and reads, lists, searches, and a few failures (404s).
async fn traffic(stop: Arc<AtomicBool>, workers: usize, sent: Arc<AtomicU64>) {
    let lb = load_balancer();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (lb, stop, sent) = (lb.clone(), Arc::clone(&stop), Arc::clone(&sent));
        tasks.push(tokio::spawn(async move {
            let name = unique(&format!("watched{w}"));
            let user = lb.signup_ok(&name, PASSWORD).await;
            // Another user reads the posts: the public-post cache answers them.
            let reader = lb.signup_ok(&unique(&format!("reader{w}")), PASSWORD).await;
            sent.fetch_add(2, Ordering::Relaxed);
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let post = json!({"title": format!("watched {i}"), "body": "metrics", "visibility": "public"});
                let (_, created) =
                    status_and_json(lb.post("/v1/posts", &post, Some(&user.access)).await).await;
                if let Some(id) = created["id"].as_str() {
                    lb.get(&format!("/v1/posts/{id}"), Some(&user.access)).await;
                    lb.get(&format!("/v1/posts/{id}"), Some(&reader.access)).await;
                    lb.get(&format!("/v1/posts/{id}"), Some(&reader.access)).await;
                }
                lb.post("/v1/tasks", &json!({"title": "t"}), Some(&user.access))
                    .await;
                lb.get("/v1/tasks?limit=20", Some(&user.access)).await;
                lb.get("/v1/search?q=watched", Some(&user.access)).await;
                lb.get("/v1/posts/01nothing", Some(&user.access)).await;
                if i.is_multiple_of(10) {
                    lb.login(&name, PASSWORD).await;
                }
                sent.fetch_add(6, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

/// The cluster's Postgres hosts as its `spec.json` records them now (a test adds a
/// shard with `strata dev add-shard`, which the test's own handle does not see).
fn postgres_hosts_now() -> usize {
    let spec = std::fs::read_to_string(cluster().spec.data_dir.join("spec.json")).unwrap();
    let spec: strata_sandbox::ClusterSpec = serde_json::from_str(&spec).unwrap();
    spec.shard_map.shards.iter().map(|s| s.hosts.len()).sum()
}

#[tokio::test]
async fn prometheus_scrapes_every_node_and_exporter_and_loads_the_rules() {
    // Not while a shard is being added.
    let _load = LOAD.lock().await;
    let cluster = cluster();
    let postgres_hosts = postgres_hosts_now();
    let expected = cluster.nodes.len() + postgres_hosts + 6 + 2;
    let targets = eventually("every target up", Duration::from_secs(60), || async {
        let body: Value = reqwest::get(format!("{}/api/v1/targets", prometheus()))
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        let active = body["data"]["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let down: Vec<String> = active
            .iter()
            .filter(|t| t["health"] != "up")
            .map(|t| {
                format!(
                    "{} {}: {}",
                    t["labels"]["job"], t["scrapeUrl"], t["lastError"]
                )
            })
            .collect();
        if active.len() >= expected && down.is_empty() {
            Ok(active)
        } else {
            Err(format!("{} targets, not up: {down:?}", active.len()))
        }
    })
    .await;
    let jobs = |job: &str| targets.iter().filter(|t| t["labels"]["job"] == job).count();
    assert_eq!(jobs("strata-node"), cluster.nodes.len());
    assert_eq!(jobs("postgres"), postgres_hosts);
    assert_eq!(jobs("redis"), 6, "every Redis server");

    let exporters_see = |expr: &'static str, wanted: usize| async move {
        eventually(expr, Duration::from_secs(30), || async {
            let found = query(expr).await;
            if found.len() == wanted && found.iter().all(|s| sample_value(s) == 1.0) {
                Ok(())
            } else {
                Err(format!("{found:?}"))
            }
        })
        .await
    };
    exporters_see("pg_up", postgres_hosts).await;
    exporters_see("redis_up{job=\"redis\"}", 6).await;

    let body: Value = reqwest::get(format!("{}/api/v1/rules", prometheus()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let groups = body["data"]["groups"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = groups.iter().filter_map(|g| g["name"].as_str()).collect();
    assert!(
        names.contains(&"strata-red") && names.contains(&"strata-alerts"),
        "{names:?}"
    );
    eventually("every rule evaluates", Duration::from_secs(30), || async {
        let body: Value = reqwest::get(format!("{}/api/v1/rules", prometheus()))
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        let broken: Vec<String> = body["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .filter(|r| r["health"] != "ok")
            .map(|r| format!("{}: {} {}", r["name"], r["health"], r["lastError"]))
            .collect();
        if broken.is_empty() {
            Ok(())
        } else {
            Err(format!("{broken:?}"))
        }
    })
    .await;
}

#[tokio::test]
async fn a_shard_added_to_the_running_cluster_is_scraped_by_its_own_exporter() {
    // Not during the load tests: starting Postgres takes the machine for a moment.
    let _load = LOAD.lock().await;
    let shard = strata_dev(cluster(), &["add-shard", "--replicas", "0"]).await;
    let id = shard["id"].as_str().expect("a shard id").to_owned();
    let host = shard["hosts"][0].as_str().expect("a host").to_owned();
    let expr = format!("pg_up{{shard=\"{id}\", server=\"{host}\"}}");
    eventually(
        &format!("Prometheus to scrape the new shard's exporter ({expr})"),
        Duration::from_secs(30),
        || async {
            match query(&expr).await.as_slice() {
                [sample] if sample_value(sample) == 1.0 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
}

/// Every query of every panel of both dashboards, with `$__rate_interval` as Grafana
/// fills it in for this scrape interval.
fn dashboard_queries() -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for file in [
        "compose/grafana/dashboards/strata-overview.json",
        "compose/grafana/dashboards/strata-shards.json",
    ] {
        let dashboard: Value = serde_json::from_str(&repo_file(file)).unwrap();
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    queries.push((
                        format!("{file}: {}", panel["title"]),
                        expr.replace("$__rate_interval", "1m"),
                    ));
                }
            }
        }
    }
    queries
}

#[tokio::test]
async fn every_dashboard_panel_returns_data_under_load() {
    let _turn = LOAD.lock().await;
    let (stop, sent) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let load = tokio::spawn(traffic(Arc::clone(&stop), 4, Arc::clone(&sent)));
    let queries = dashboard_queries();
    assert!(queries.len() >= 12, "{queries:?}");
    for (panel, expr) in &queries {
        eventually(panel, Duration::from_secs(60), || async {
            let result = query(expr).await;
            if result.iter().any(|s| sample_value(s).is_finite()) {
                Ok(())
            } else {
                Err(format!("{expr} returned {result:?}"))
            }
        })
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert!(sent.load(Ordering::Relaxed) > 0);
}

/// The adapter's `metricsQuery` with its template filled in as prometheus-adapter does
/// for the HPA's pods: `<<.LabelMatchers>>` becomes the namespace and the pods.
fn adapter_query(pods: &[String]) -> String {
    let rules = repo_file("deploy/kubernetes/prometheus-adapter-rules.yaml");
    let line = rules
        .lines()
        .find(|l| l.trim_start().starts_with("metricsQuery:"))
        .expect("the adapter rule has a metricsQuery");
    let template = line
        .trim_start()
        .trim_start_matches("metricsQuery:")
        .trim()
        .trim_matches('\'');
    let matchers = format!("namespace=\"{NAMESPACE}\",pod=~\"{}\"", pods.join("|"));
    template
        .replace("<<.LabelMatchers>>", &matchers)
        .replace("<<.GroupBy>>", "pod")
}

/// The HPA's target for the metric (`averageValue`), its replica bounds.
fn hpa_target() -> (f64, u32, u32) {
    let hpa: Value = serde_norway::from_str(&repo_file("deploy/kubernetes/hpa.yaml")).unwrap();
    let metric = hpa["spec"]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["type"] == "Pods")
        .expect("a Pods metric");
    let target: f64 = metric["pods"]["target"]["averageValue"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let bound = |k: &str| hpa["spec"][k].as_u64().unwrap() as u32;
    (target, bound("minReplicas"), bound("maxReplicas"))
}

/// The HPA's decision: desired = ceil(current × average value ÷ target), within bounds.
fn hpa_desired(current: u32, values: &[f64], target: f64, min: u32, max: u32) -> u32 {
    let average = values.iter().sum::<f64>() / values.len().max(1) as f64;
    let desired = (f64::from(current) * average / target).ceil() as u32;
    desired.clamp(min, max)
}

#[tokio::test]
async fn the_autoscaling_signal_asks_for_more_nodes_under_a_ramp_and_fewer_after() {
    let _turn = LOAD.lock().await;
    let pods: Vec<String> = cluster().nodes.iter().map(|n| n.id.clone()).collect();
    let expr = adapter_query(&pods);
    let (target, min, max) = hpa_target();
    let values = || async {
        query(&expr)
            .await
            .iter()
            .map(sample_value)
            .collect::<Vec<f64>>()
    };
    // Quiet first: the signal must not ask for more than the minimum.
    let quiet = eventually("a quiet signal", Duration::from_secs(90), || async {
        let v = values().await;
        let desired = hpa_desired(pods.len() as u32, &v, target, min, max);
        if v.len() == pods.len() && desired <= pods.len() as u32 {
            Ok(v)
        } else {
            Err(format!("{v:?}"))
        }
    })
    .await;
    eprintln!("quiet: in flight per pod {quiet:?}");

    // The ramp: many clients at once, each waiting for its answer.
    let (stop, sent) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let load = tokio::spawn(traffic(Arc::clone(&stop), 160, Arc::clone(&sent)));
    let mut current = pods.len() as u32;
    let under_ramp = eventually(
        "the HPA asks for more nodes",
        Duration::from_secs(90),
        || async {
            let v = values().await;
            let desired = hpa_desired(current, &v, target, min, max);
            if desired > current {
                Ok((v, desired))
            } else {
                Err(format!("{v:?} -> {desired}"))
            }
        },
    )
    .await;
    eprintln!(
        "under the ramp: in flight per pod {:?}, desired {}",
        under_ramp.0, under_ramp.1
    );
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    // The HPA scaled to what it asked for; now the signal must bring it down again.
    current = under_ramp.1;
    let after = eventually(
        "the HPA asks for fewer nodes",
        Duration::from_secs(120),
        || async {
            let v = values().await;
            let desired = hpa_desired(current, &v, target, min, max);
            if desired < current {
                Ok((v, desired))
            } else {
                Err(format!("{v:?} -> {desired}"))
            }
        },
    )
    .await;
    eprintln!(
        "after the ramp: in flight per pod {:?}, desired {} (from {current})",
        after.0, after.1
    );
    assert!(sent.load(Ordering::Relaxed) > 0);
}

#[test]
fn the_hpa_formula_is_the_documented_one() {
    assert_eq!(hpa_desired(2, &[64.0, 64.0], 32.0, 2, 20), 4);
    assert_eq!(hpa_desired(4, &[10.0, 12.0, 8.0, 10.0], 32.0, 2, 20), 2);
    assert_eq!(
        hpa_desired(4, &[0.0; 4], 32.0, 2, 20),
        2,
        "never below the minimum"
    );
    assert_eq!(
        hpa_desired(10, &[200.0; 10], 32.0, 2, 20),
        20,
        "nor above the maximum"
    );
    assert_eq!(
        adapter_query(&["a".into(), "b".into()]),
        format!(
            "avg_over_time(http_requests_in_flight{{namespace=\"{NAMESPACE}\",pod=~\"a|b\"}}[1m])"
        )
    );
}
