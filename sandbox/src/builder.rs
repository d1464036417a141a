//! The sandbox builder tests use: `Cluster::builder().shards(2).replicas(1).start()`
//! gives a private cluster on free ports in a temporary directory, watched by a reaper
//! so nothing outlives the test binary.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use strata_node::config::{AuthConfig, FilesConfig, LimitsConfig};
use strata_router::{RouterSettings, ShardMap};

use crate::cluster::{Cluster, ClusterSpec, OnDrop, auth_with_fresh_key};
use crate::error::SandboxError;
use crate::monitoring::MonitoringSpec;
use crate::process::free_ports;
use crate::reaper;

/// How many times [`ClusterBuilder::start`] tries, each on fresh ports, when a port it
/// chose was taken before its server could bind it.
pub const START_ATTEMPTS: usize = 3;

/// Shapes a throwaway cluster for tests.
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    shards: usize,
    servers: Option<usize>,
    replicas: usize,
    redis_masters: usize,
    redis_replicas: usize,
    nodes: usize,
    load_balancer: bool,
    kernel_balancer: bool,
    router: RouterSettings,
    auth: AuthConfig,
    limits: LimitsConfig,
    max_upload_bytes: u64,
    database: String,
    synchronous: bool,
    request_timeout_ms: Option<u64>,
    upload_idle_timeout_ms: Option<u64>,
    monitoring: bool,
}

impl Default for ClusterBuilder {
    fn default() -> Self {
        Self {
            shards: 2,
            servers: None,
            replicas: 1,
            redis_masters: 3,
            redis_replicas: 1,
            nodes: 2,
            load_balancer: true,
            kernel_balancer: false,
            router: RouterSettings::default(),
            auth: auth_with_fresh_key(),
            limits: LimitsConfig::default(),
            max_upload_bytes: FilesConfig::default().max_upload_bytes,
            database: "strata".into(),
            synchronous: false,
            request_timeout_ms: None,
            upload_idle_timeout_ms: None,
            monitoring: false,
        }
    }
}

impl Cluster {
    /// A builder for a test cluster: by default 2 shards × (primary + 1 replica), a
    /// 3-master Redis Cluster with a replica per master, 2 nodes and HAProxy.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }
}

impl ClusterBuilder {
    /// Number of shards.
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = n;
        self
    }
    /// Postgres servers (each a primary and its replicas) the shards are placed on, in
    /// turn. Default: one per shard. With fewer, shards share servers, each shard in a
    /// database of its own (`strata_s3`).
    pub fn servers(mut self, n: usize) -> Self {
        self.servers = Some(n);
        self
    }
    /// Replicas per shard (per server, when shards share servers).
    pub fn replicas(mut self, n: usize) -> Self {
        self.replicas = n;
        self
    }
    /// Redis Cluster masters (0 for none, else at least 3).
    pub fn redis_masters(mut self, n: usize) -> Self {
        self.redis_masters = n;
        self
    }
    /// Replicas per Redis master.
    pub fn redis_replicas(mut self, n: usize) -> Self {
        self.redis_replicas = n;
        self
    }
    /// API nodes.
    pub fn nodes(mut self, n: usize) -> Self {
        self.nodes = n;
        self
    }
    /// HAProxy in front of the nodes.
    pub fn load_balancer(mut self, on: bool) -> Self {
        self.load_balancer = on;
        self
    }
    /// The kernel balancer next to HAProxy (off by default: it needs root and `nft`).
    pub fn kernel_balancer(mut self, on: bool) -> Self {
        self.kernel_balancer = on;
        self
    }
    /// Router settings for the nodes.
    pub fn router(mut self, settings: RouterSettings) -> Self {
        self.router = settings;
        self
    }

    /// Auth settings for the nodes (keep the generated key: start from
    /// [`ClusterBuilder::auth_settings`]).
    pub fn auth(mut self, auth: AuthConfig) -> Self {
        self.auth = auth;
        self
    }
    /// The auth settings the nodes will get, signing key included.
    pub fn auth_settings(&self) -> AuthConfig {
        self.auth.clone()
    }
    /// Rate limits for the nodes.
    pub fn limits(mut self, limits: LimitsConfig) -> Self {
        self.limits = limits;
        self
    }

    /// Synchronous replication on every shard (see `ShardConfig::synchronous`).
    pub fn synchronous(mut self, on: bool) -> Self {
        self.synchronous = on;
        self
    }

    /// The nodes' request deadline.
    pub fn request_timeout_ms(mut self, ms: u64) -> Self {
        self.request_timeout_ms = Some(ms);
        self
    }

    /// How long the nodes let an upload go without a byte.
    pub fn upload_idle_timeout_ms(mut self, ms: u64) -> Self {
        self.upload_idle_timeout_ms = Some(ms);
        self
    }

    /// The largest upload the nodes accept.
    pub fn max_upload_bytes(mut self, bytes: u64) -> Self {
        self.max_upload_bytes = bytes;
        self
    }

    /// Prometheus and its exporters too (off by default: most tests do not look).
    pub fn monitoring(mut self, on: bool) -> Self {
        self.monitoring = on;
        self
    }

    /// The spec this builder describes, on fresh free ports in a fresh directory.
    pub fn spec(&self) -> Result<ClusterSpec, SandboxError> {
        let servers = self
            .servers
            .unwrap_or(self.shards)
            .clamp(1, self.shards.max(1));
        let pg_count = servers * (1 + self.replicas);
        let lb = usize::from(self.load_balancer && self.nodes > 0);
        let kernel_lb = usize::from(lb == 1 && self.kernel_balancer);
        let redis_count = self.redis_masters * (1 + self.redis_replicas);
        let monitoring_count = if self.monitoring { 2 + pg_count } else { 0 };
        let mut ports =
            free_ports(pg_count + redis_count + self.nodes + lb + kernel_lb + monitoring_count)?
                .into_iter();
        let mut map_text = format!("database = \"{}\"\nuser = \"strata\"\n", self.database);
        let server_hosts: Vec<String> = (0..servers)
            .map(|_| {
                (0..=self.replicas)
                    .map(|_| format!("\"127.0.0.1:{}\"", ports.next().unwrap()))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .collect();
        for s in 0..self.shards {
            map_text += &format!(
                "\n[[shard]]\nid = \"s{s}\"\nhosts = [{}]\nsynchronous = {}\n",
                server_hosts[s % servers],
                self.synchronous
            );
            if servers < self.shards {
                map_text += &format!("database = \"{}_s{s}\"\n", self.database);
            }
        }
        let shard_map =
            ShardMap::parse(&map_text).map_err(|e| SandboxError::Config(e.to_string()))?;
        Ok(ClusterSpec {
            data_dir: fresh_dir(),
            shard_map,
            redis_ports: ports.by_ref().take(redis_count).collect(),
            redis_replicas: self.redis_replicas,
            node_ports: ports.by_ref().take(self.nodes).collect(),
            lb_port: if lb == 1 { ports.next() } else { None },
            kernel_lb_port: if kernel_lb == 1 { ports.next() } else { None },
            router: self.router.clone(),
            auth: self.auth.clone(),
            limits: self.limits.clone(),
            max_upload_bytes: self.max_upload_bytes,
            fsync: false,
            request_timeout_ms: self.request_timeout_ms,
            upload_idle_timeout_ms: self.upload_idle_timeout_ms,
            monitoring: self.monitoring.then(|| MonitoringSpec {
                prometheus: ports.next().unwrap(),
                redis_exporter: ports.next().unwrap(),
                postgres_exporters: ports.by_ref().take(pg_count).collect(),
                // Short: the tests wait on what Prometheus has seen.
                scrape_interval_secs: 2,
            }),
        })
    }

    /// Starts the cluster. It is stopped and its directory removed when the value is
    /// dropped, and in any case by a reaper once the current process ends.
    ///
    /// A port found free can be taken by another program before the server chosen for it
    /// binds it; when that happens, what did start is stopped and the cluster starts
    /// again on fresh ports, up to [`START_ATTEMPTS`] times.
    pub fn start(&self) -> Result<Cluster, SandboxError> {
        let mut attempt = 1;
        loop {
            let spec = self.spec()?;
            std::fs::create_dir_all(&spec.data_dir)
                .map_err(SandboxError::io("create the data dir"))?;
            reaper::watch_current_process(&spec.data_dir, true)?;
            match Cluster::start(spec, OnDrop::StopAndRemove) {
                Err(error) if error.port_taken() && attempt < START_ATTEMPTS => {
                    eprintln!("sandbox: {error}; starting again on fresh ports");
                    attempt += 1;
                }
                started => return started,
            }
        }
    }
}

fn fresh_dir() -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("strata-sandbox-{}-{n}", std::process::id()))
}
