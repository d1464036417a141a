//! The local cluster's monitoring: a real Prometheus (Debian's `prometheus`) scraping
//! every node, one `prometheus-postgres-exporter` per Postgres host and one
//! `prometheus-redis-exporter` for every Redis server (its multi-target `/scrape`
//! endpoint), with the project's recording and alerting rules
//! (`compose/prometheus/rules/strata.yml`) loaded.
//!
//! Nodes are listed in a file-based service discovery file (`nodes.json`), which
//! Prometheus re-reads by itself, so nodes added or removed while it runs are scraped
//! without a restart ([`Monitoring::set_nodes`]). Targets carry `namespace` and `pod`
//! labels like Kubernetes', so the prometheus-adapter rule behind the autoscaler can be
//! evaluated here exactly as written.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::SandboxError;
use crate::process::{self, wait_until};

/// The project's rules, as shipped in `compose/prometheus/rules/`.
pub const RULES: &str = include_str!("../../compose/prometheus/rules/strata.yml");

/// How often the local Prometheus scrapes and evaluates rules unless told otherwise:
/// as often as the compose file's, 5 s. Test clusters use 2 s (tests wait on it).
pub const DEFAULT_SCRAPE_INTERVAL_SECS: u64 = 5;

fn default_scrape_interval() -> u64 {
    DEFAULT_SCRAPE_INTERVAL_SECS
}

/// The `namespace` label every local target carries.
pub const NAMESPACE: &str = "strata-local";

/// Ports of the monitoring processes, and how often Prometheus scrapes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitoringSpec {
    pub prometheus: u16,
    pub redis_exporter: u16,
    /// One per Postgres host, in the order of the shard map's hosts.
    pub postgres_exporters: Vec<u16>,
    /// Seconds between scrapes (and rule evaluations).
    #[serde(default = "default_scrape_interval")]
    pub scrape_interval_secs: u64,
}

impl MonitoringSpec {
    /// Whether one of the monitoring processes listens on `port`.
    pub fn uses(&self, port: u16) -> bool {
        self.prometheus == port
            || self.redis_exporter == port
            || self.postgres_exporters.contains(&port)
    }
}

/// One Postgres host an exporter watches.
#[derive(Debug, Clone)]
pub struct PostgresTarget {
    pub shard: String,
    /// `host:port` of the server.
    pub addr: String,
    pub database: String,
    /// The exporter's port.
    pub port: u16,
}

/// Prometheus and the exporters of one local cluster.
#[derive(Debug, Clone)]
pub struct Monitoring {
    pub spec: MonitoringSpec,
    pub postgres: Vec<PostgresTarget>,
    /// `host:port` of every Redis server.
    pub redis: Vec<String>,
    /// `(node id, port)` of every node.
    pub nodes: Vec<(String, u16)>,
    pub dir: PathBuf,
}

/// The monitoring programs, found on PATH.
struct MonitoringTools {
    prometheus: PathBuf,
    postgres_exporter: PathBuf,
    redis_exporter: PathBuf,
}

impl MonitoringTools {
    fn discover() -> Result<Self, SandboxError> {
        Ok(Self {
            prometheus: crate::tools::on_path("prometheus", "prometheus")?,
            postgres_exporter: crate::tools::on_path(
                "prometheus-postgres-exporter",
                "prometheus-postgres-exporter",
            )?,
            redis_exporter: crate::tools::on_path(
                "prometheus-redis-exporter",
                "prometheus-redis-exporter",
            )?,
        })
    }
}

impl PostgresTarget {
    /// The name of this host's exporter process (its pid and log files).
    fn process_name(&self) -> String {
        format!("postgres-exporter-{}-{}", self.shard, self.port)
    }
}

impl Monitoring {
    /// Prometheus's base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.spec.prometheus)
    }

    /// Starts whatever is not running, then waits until Prometheus answers.
    pub fn start(&self) -> Result<(), SandboxError> {
        let tools = MonitoringTools::discover()?;
        std::fs::create_dir_all(&self.dir).map_err(SandboxError::io("create monitoring dir"))?;
        for target in &self.postgres {
            self.start_postgres_exporter(&tools, target)?;
        }
        self.spawn(
            "redis-exporter",
            Command::new(&tools.redis_exporter)
                .arg("-web.listen-address")
                .arg(format!("127.0.0.1:{}", self.spec.redis_exporter))
                .arg("-is-cluster"),
        )?;
        let rules = self.dir.join("rules.yml");
        std::fs::write(&rules, RULES).map_err(SandboxError::io("write the rules"))?;
        self.write_node_targets()?;
        let config = self.dir.join("prometheus.yml");
        std::fs::write(&config, self.config_text())
            .map_err(SandboxError::io("write prometheus.yml"))?;
        self.spawn(
            "prometheus",
            Command::new(&tools.prometheus)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    self.dir.join("data").display()
                ))
                .arg("--storage.tsdb.retention.time=2d")
                .arg(format!(
                    "--web.listen-address=127.0.0.1:{}",
                    self.spec.prometheus
                ))
                .arg("--web.enable-lifecycle"),
        )?;
        wait_until(
            "prometheus to be ready",
            Duration::from_secs(60),
            &self.dir.join("prometheus.log"),
            || process::http_status(self.spec.prometheus, "/-/ready") == Some(200),
        )
    }

    fn start_postgres_exporter(
        &self,
        tools: &MonitoringTools,
        target: &PostgresTarget,
    ) -> Result<(), SandboxError> {
        let dsn = format!(
            "postgresql://strata@{}/{}?sslmode=disable",
            target.addr, target.database
        );
        self.spawn(
            &target.process_name(),
            Command::new(&tools.postgres_exporter)
                .env("DATA_SOURCE_NAME", dsn)
                .arg(format!("--web.listen-address=127.0.0.1:{}", target.port)),
        )
    }

    /// Watches the hosts of a shard added while the cluster runs: starts an exporter for
    /// each and has Prometheus reload its configuration (SIGHUP) to scrape them.
    pub fn add_postgres(&mut self, targets: Vec<PostgresTarget>) -> Result<(), SandboxError> {
        let tools = MonitoringTools::discover()?;
        for target in &targets {
            self.start_postgres_exporter(&tools, target)?;
        }
        self.spec
            .postgres_exporters
            .extend(targets.iter().map(|t| t.port));
        self.postgres.extend(targets);
        self.reload()
    }

    /// Stops watching a shard that left the cluster: its exporters stop and Prometheus
    /// reloads without them.
    pub fn remove_shard(&mut self, shard: &str) -> Result<(), SandboxError> {
        for target in self.postgres.iter().filter(|t| t.shard == shard) {
            if let Some(pid) = self.pid_of(&target.process_name()) {
                process::stop_pid(pid, libc::SIGTERM, Duration::from_secs(5));
            }
        }
        self.postgres.retain(|t| t.shard != shard);
        self.spec.postgres_exporters = self.postgres.iter().map(|t| t.port).collect();
        self.reload()
    }

    /// Rewrites `prometheus.yml` and tells a running Prometheus to read it again.
    fn reload(&self) -> Result<(), SandboxError> {
        std::fs::write(self.dir.join("prometheus.yml"), self.config_text())
            .map_err(SandboxError::io("write prometheus.yml"))?;
        if let Some(pid) = self.pid_of("prometheus") {
            process::signal(pid, libc::SIGHUP);
        }
        Ok(())
    }

    /// Stops every monitoring process.
    pub fn stop(&self) {
        for name in self.process_names() {
            if let Some(pid) = self.pid_of(&name) {
                process::stop_pid(pid, libc::SIGTERM, Duration::from_secs(5));
            }
        }
    }

    /// Every monitoring process's pid while it runs.
    pub fn pids(&self) -> Vec<i32> {
        self.process_names()
            .iter()
            .filter_map(|name| self.pid_of(name))
            .collect()
    }

    /// Replaces the node targets (nodes added or removed): Prometheus picks the file up
    /// by itself.
    pub fn set_nodes(&mut self, nodes: Vec<(String, u16)>) -> Result<(), SandboxError> {
        self.nodes = nodes;
        self.write_node_targets()
    }

    fn process_names(&self) -> Vec<String> {
        let mut names = vec!["prometheus".to_owned(), "redis-exporter".to_owned()];
        names.extend(self.postgres.iter().map(PostgresTarget::process_name));
        names
    }

    fn pid_of(&self, name: &str) -> Option<i32> {
        process::read_pid(&self.dir.join(format!("{name}.pid"))).filter(|pid| process::alive(*pid))
    }

    fn spawn(&self, name: &str, command: &mut Command) -> Result<(), SandboxError> {
        if self.pid_of(name).is_some() {
            return Ok(());
        }
        process::spawn_logged(
            command,
            &self.dir.join(format!("{name}.log")),
            &self.dir.join(format!("{name}.pid")),
            name,
        )?;
        Ok(())
    }

    fn write_node_targets(&self) -> Result<(), SandboxError> {
        let groups: Vec<serde_json::Value> = self
            .nodes
            .iter()
            .map(|(id, port)| {
                serde_json::json!({
                    "targets": [format!("127.0.0.1:{port}")],
                    "labels": {"node": id, "namespace": NAMESPACE, "pod": id},
                })
            })
            .collect();
        let path = self.dir.join("nodes.json");
        let tmp = self.dir.join("nodes.json.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(&groups).expect("json"))
            .map_err(SandboxError::io("write nodes.json"))?;
        // Renamed into place, so Prometheus never reads half a file.
        std::fs::rename(&tmp, &path).map_err(SandboxError::io("write nodes.json"))
    }

    /// The Prometheus configuration.
    pub fn config_text(&self) -> String {
        let interval = self.spec.scrape_interval_secs;
        let postgres: String = self
            .postgres
            .iter()
            .map(|t| {
                format!(
                    "      - targets: [\"127.0.0.1:{}\"]\n        labels: {{ shard: \"{}\", server: \"{}\" }}\n",
                    t.port, t.shard, t.addr
                )
            })
            .collect();
        let redis: String = self
            .redis
            .iter()
            .map(|addr| format!("\"redis://{addr}\", "))
            .collect();
        format!(
            "# Written by the Strata sandbox.\n\
             global:\n  scrape_interval: {interval}s\n  evaluation_interval: {interval}s\n\
             rule_files:\n  - {rules}\n\
             scrape_configs:\n\
             \x20 - job_name: strata-node\n    file_sd_configs:\n      - files: [\"{nodes}\"]\n        refresh_interval: {interval}s\n\
             \x20 - job_name: postgres\n    static_configs:\n{postgres}\
             \x20 - job_name: redis\n    metrics_path: /scrape\n    static_configs:\n      - targets: [{redis}]\n\
             \x20   relabel_configs:\n\
             \x20     - source_labels: [__address__]\n        target_label: __param_target\n\
             \x20     - source_labels: [__param_target]\n        target_label: instance\n\
             \x20     - target_label: __address__\n        replacement: 127.0.0.1:{redis_exporter}\n\
             \x20 - job_name: redis-exporter\n    static_configs:\n      - targets: [\"127.0.0.1:{redis_exporter}\"]\n\
             \x20 - job_name: prometheus\n    static_configs:\n      - targets: [\"127.0.0.1:{prometheus}\"]\n",
            rules = self.dir.join("rules.yml").display(),
            nodes = self.dir.join("nodes.json").display(),
            redis_exporter = self.spec.redis_exporter,
            prometheus = self.spec.prometheus,
        )
    }
}

/// The directory the monitoring of a cluster rooted at `data_dir` lives in.
pub fn dir_of(data_dir: &Path) -> PathBuf {
    data_dir.join("monitoring")
}
