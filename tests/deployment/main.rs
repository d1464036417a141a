//! The deployment files (compose/, deploy/kubernetes/) cannot be run here (no container
//! engine), so these tests check what can be checked: every file parses, the configs they
//! mount are accepted by the same code the binaries use, and services, ports and metric
//! names agree with each other and with the code.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_norway::Value;
use strata_node::config::NodeConfig;
use strata_router::ShardMap;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repo")
        .to_path_buf()
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo().join(relative))
        .unwrap_or_else(|e| panic!("read {relative}: {e}"))
}

fn compose() -> Value {
    serde_norway::from_str(&read("compose/docker-compose.yml")).expect("docker-compose.yml parses")
}

fn compose_services() -> BTreeSet<String> {
    compose()["services"]
        .as_mapping()
        .expect("services is a mapping")
        .keys()
        .map(|k| k.as_str().expect("service names are strings").to_owned())
        .collect()
}

/// Every metric name the node and router export, read from their sources: a deployment
/// file that queries a metric nobody exports is a silent, empty dashboard.
fn exported_metric_sources() -> String {
    let mut text = String::new();
    for dir in ["node/src", "router/src"] {
        for entry in std::fs::read_dir(repo().join(dir)).unwrap() {
            text += &std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default();
        }
    }
    text
}

fn assert_exported(metric: &str, sources: &str) {
    let base = ["_bucket", "_count", "_sum"]
        .iter()
        .fold(metric, |m, suffix| m.strip_suffix(suffix).unwrap_or(m));
    assert!(
        sources.contains(&format!("\"{base}\"")),
        "metric {metric} is not exported by the node or router"
    );
}

fn host_of(addr: &str) -> &str {
    addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr)
}

#[test]
fn compose_services_depend_only_on_services_that_exist() {
    let compose = compose();
    let services = compose_services();
    for name in &services {
        let service = &compose["services"][name.as_str()];
        let depends = &service["depends_on"];
        let deps: Vec<String> = match depends {
            Value::Sequence(list) => list
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            Value::Mapping(map) => map
                .keys()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        for dep in deps {
            assert!(
                services.contains(&dep),
                "{name} depends on unknown service {dep}"
            );
        }
    }
    for expected in [
        "pg-s0-primary",
        "pg-s0-replica",
        "redis-1",
        "redis-6",
        "node-1",
        "node-2",
        "haproxy",
        "prometheus",
        "grafana",
    ] {
        assert!(services.contains(expected), "compose lacks {expected}");
    }
}

/// Every Redis master of the compose cluster gets a replica, and a master's loss stops
/// only its own slots.
#[test]
fn the_compose_redis_cluster_has_a_replica_per_master() {
    let compose = compose();
    let words = |service: &str| -> String {
        compose["services"][service]["command"]
            .as_sequence()
            .map(|list| {
                list.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    };
    let servers: Vec<String> = compose_services()
        .into_iter()
        .filter(|s| s.starts_with("redis-") && s != "redis-init")
        .collect();
    assert_eq!(servers.len(), 6, "3 masters and 3 replicas: {servers:?}");
    for server in &servers {
        assert!(
            words(server).contains("--cluster-require-full-coverage no"),
            "{server}: {}",
            words(server)
        );
    }
    let init = words("redis-init");
    assert!(init.contains("--cluster-replicas 1"), "{init}");
    for server in &servers {
        assert!(
            init.contains(server.as_str()),
            "redis-init joins {server}: {init}"
        );
    }
}

#[test]
fn the_compose_shard_map_and_node_config_are_accepted_and_name_compose_services() {
    let services = compose_services();
    let map = ShardMap::parse(&read("compose/shard-map.toml")).expect("compose shard map is valid");
    for shard in &map.shards {
        for host in &shard.hosts {
            assert!(
                services.contains(host.host()),
                "shard map host {host} is not a compose service"
            );
            assert_eq!(
                host.port(),
                5432,
                "{host} should use Postgres' port inside compose"
            );
        }
    }
    let node = NodeConfig::load(Some(&repo().join("compose/node.toml")))
        .expect("compose node config is valid");
    for seed in &node.redis.seeds {
        let host = host_of(seed.trim_start_matches("redis://"));
        assert!(
            services.contains(host),
            "redis seed {seed} is not a compose service"
        );
    }
}

/// The nodes believe X-Forwarded-For from the compose load balancer's pinned address
/// (so each client gets its own rate limits), and from nothing else on the network.
#[test]
fn the_nodes_trust_the_compose_load_balancer_and_only_it() {
    let compose = compose();
    let haproxy_ip: std::net::IpAddr =
        compose["services"]["haproxy"]["networks"]["default"]["ipv4_address"]
            .as_str()
            .expect("haproxy has a pinned address")
            .parse()
            .unwrap();
    let node = NodeConfig::load(Some(&repo().join("compose/node.toml"))).unwrap();
    let trusted = |ip: std::net::IpAddr| node.trusted_proxies.iter().any(|n| n.contains(&ip));
    assert!(trusted(haproxy_ip), "{haproxy_ip} is not trusted");
    let node_1: std::net::IpAddr = "172.28.0.11".parse().unwrap();
    assert!(!trusted(node_1), "another container is trusted too");
}

#[test]
fn haproxy_and_prometheus_reach_the_nodes_on_the_port_they_listen_on() {
    let services = compose_services();
    let node = NodeConfig::load(Some(&repo().join("compose/node.toml"))).unwrap();
    let port = node.listen.port();

    let haproxy = read("compose/haproxy.cfg");
    let servers: Vec<&str> = haproxy
        .lines()
        .filter_map(|l| l.trim().strip_prefix("server "))
        .collect();
    assert!(servers.len() >= 2, "{haproxy}");
    for server in servers {
        let addr = server
            .split_whitespace()
            .nth(1)
            .expect("server has an address");
        assert!(
            services.contains(host_of(addr)),
            "haproxy server {addr} is not a compose service"
        );
        assert!(
            addr.ends_with(&format!(":{port}")),
            "haproxy server {addr} misses the node port {port}"
        );
    }
    assert!(haproxy.contains("option httpchk GET /readyz"));
    assert!(
        haproxy.contains("http-request deny deny_status 404 if { path /metrics }"),
        "the public entry point must not serve the nodes' metrics (the local cluster's \
         load balancer has the same rule, and the cluster test checks it)"
    );

    let prometheus: Value = serde_norway::from_str(&read("compose/prometheus.yml")).unwrap();
    let targets = &prometheus["scrape_configs"][0]["static_configs"][0]["targets"];
    for target in targets.as_sequence().expect("targets") {
        let target = target.as_str().unwrap();
        assert!(
            services.contains(host_of(target)),
            "scrape target {target} is not a compose service"
        );
        assert!(
            target.ends_with(&format!(":{port}")),
            "scrape target {target} misses the node port"
        );
    }
}

/// Runs a tool installed by scripts/install-deps.sh; its output, and whether it passed.
fn tool(program: &str, args: &[&str], dir: &std::path::Path) -> (bool, String) {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program} is installed by scripts/install-deps.sh: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn the_prometheus_rules_are_valid_and_their_unit_tests_pass() {
    let rules = repo().join("compose/prometheus/rules");
    let (ok, out) = tool("promtool", &["check", "rules", "strata.yml"], &rules);
    assert!(ok, "{out}");
    let (ok, out) = tool("promtool", &["test", "rules", "strata_test.yml"], &rules);
    assert!(ok, "{out}");
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn a_broken_rule_fails_promtool() {
    // The check above can fail: a rule with a bad expression is refused.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yml"),
        "groups:\n  - name: bad\n    rules:\n      - record: x\n        expr: sum(rate(\n",
    )
    .unwrap();
    let (ok, out) = tool("promtool", &["check", "rules", "bad.yml"], dir.path());
    assert!(!ok, "{out}");
}

#[test]
fn the_kubernetes_manifests_pass_schema_validation() {
    let dir = repo().join("deploy/kubernetes");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    let mut args = vec!["--strict"];
    args.extend(files.iter().map(String::as_str));
    let (ok, out) = tool("kubernetes-validate", &args, &dir);
    assert!(ok, "{out}");
    for file in &files {
        assert!(
            out.contains(&format!("{file} passed")),
            "{file} not validated: {out}"
        );
    }

    // The validator refuses what Kubernetes would: a field of the wrong type.
    let bad = tempfile::tempdir().unwrap();
    let broken = std::fs::read_to_string(dir.join("hpa.yaml"))
        .unwrap()
        .replace("minReplicas: 2", "minReplicas: two");
    std::fs::write(bad.path().join("hpa.yaml"), broken).unwrap();
    let (ok, out) = tool("kubernetes-validate", &["--strict", "hpa.yaml"], bad.path());
    assert!(!ok, "{out}");
}

#[test]
fn the_local_prometheus_loads_the_shipped_rules() {
    // The sandbox embeds the rules file it gives the local Prometheus.
    assert_eq!(
        strata_sandbox::monitoring::RULES,
        read("compose/prometheus/rules/strata.yml")
    );
}

#[test]
fn haproxy_accepts_the_compose_configuration() {
    let output = Command::new("haproxy")
        .args(["-c", "-f"])
        .arg(repo().join("compose/haproxy.cfg"))
        .output()
        .expect("haproxy is installed by scripts/install-deps.sh");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_grafana_dashboard_queries_only_metrics_the_nodes_export() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("compose/grafana/dashboards/strata-overview.json"))
            .expect("dashboard parses");
    let sources = exported_metric_sources();
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(!panels.is_empty());
    for panel in panels {
        let expr = panel["targets"][0]["expr"].as_str().expect("expr");
        let metrics: Vec<&str> = expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("http_") || w.starts_with("strata_"))
            .collect();
        assert!(
            !metrics.is_empty(),
            "panel {} queries no Strata metric",
            panel["title"]
        );
        for metric in metrics {
            assert_exported(metric, &sources);
        }
    }
}

#[test]
fn the_kubernetes_manifests_agree_with_the_node() {
    let sources = exported_metric_sources();
    let text = read("deploy/kubernetes/strata-node.yaml");
    let docs: Vec<Value> = serde_norway::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("manifest document parses"))
        .collect();
    let config_map = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap")
        .expect("a ConfigMap");
    let secret = docs
        .iter()
        .find(|d| d["kind"] == "Secret")
        .expect("a Secret with the signing keys");
    let dir = std::env::temp_dir().join(format!("strata-k8s-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let node_toml = dir.join("node.toml");
    std::fs::write(
        &node_toml,
        config_map["data"]["node.toml"].as_str().unwrap(),
    )
    .unwrap();
    let auth_toml = dir.join("auth.toml");
    let auth_text = secret["stringData"]["auth.toml"].as_str().unwrap();
    std::fs::write(&auth_toml, auth_text).unwrap();
    let layered = || NodeConfig::load_files([node_toml.as_path(), auth_toml.as_path()].into_iter());
    assert!(
        layered().is_err(),
        "the shipped placeholder key must not start a node"
    );
    // With a real key in place of the placeholder, the layered config is accepted.
    let real_key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    std::fs::write(
        &auth_toml,
        auth_text.replace("REPLACE-WITH-32-RANDOM-BYTES-BASE64", real_key),
    )
    .unwrap();
    let node = layered().expect("the ConfigMap's node.toml with the Secret's auth.toml is valid");
    ShardMap::parse(config_map["data"]["shard-map.toml"].as_str().unwrap())
        .expect("the ConfigMap's shard map is valid");
    let _ = std::fs::remove_dir_all(&dir);

    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["ports"][0]["containerPort"].as_u64(),
        Some(u64::from(node.listen.port()))
    );
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    let mounts = container["volumeMounts"].as_sequence().unwrap();
    for file in args.iter().filter(|a| a.starts_with('/')) {
        let mounted = mounts
            .iter()
            .any(|m| file.starts_with(m["mountPath"].as_str().unwrap()));
        assert!(mounted, "config file {file} is not under a mounted volume");
    }
    assert!(
        node.shard_map.starts_with("/etc/strata/config"),
        "the shard map is in the config map's mount"
    );

    let hpa: Value = serde_norway::from_str(&read("deploy/kubernetes/hpa.yaml")).unwrap();
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["name"],
        deployment["metadata"]["name"]
    );
    let metric = hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
        .as_str()
        .expect("a pods metric");
    assert_exported(metric, &sources);
    let adapter = read("deploy/kubernetes/prometheus-adapter-rules.yaml");
    assert!(
        adapter.contains(metric),
        "prometheus-adapter does not serve {metric}"
    );
}
