//! A whole local cluster: Postgres primaries and replicas per shard, migrations, Redis
//! Cluster, API nodes and HAProxy, started in that order and stopped in reverse.

use std::path::{Path, PathBuf};
use std::time::Duration;

use strata_node::config::{
    AuthConfig, FilesConfig, LimitsConfig, NodeConfig, SearchConfig, Secret, SigningKeyConfig,
};
use strata_router::{HostAddr, RouterSettings, ShardId, ShardMap, Topology};

use crate::endpoints::{Endpoints, NodeEndpoint, PostgresEndpoint};
use crate::error::SandboxError;
use crate::haproxy::LoadBalancer;
use crate::kernel_balancer::KernelBalancer;
use crate::monitoring::{Monitoring, MonitoringSpec, PostgresTarget};
use crate::nodes::{NodeProcess, node_binary};
use crate::postgres::{APP_ROLE, PgInstance};
use crate::process::{self, wait_until};
use crate::redis_cluster::RedisCluster;
use crate::tools::Tools;

/// The file in the data directory that records the spec a cluster was started with.
pub const SPEC_FILE: &str = "spec.json";

/// What to run and where. `strata dev up` builds one from `shard-map.toml`; tests build
/// one with [`crate::ClusterBuilder`] on free ports in a temporary directory.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ClusterSpec {
    /// Everything the cluster writes lives below this directory.
    pub data_dir: PathBuf,
    /// Shards and their Postgres hosts; each shard's first host starts as its primary.
    pub shard_map: ShardMap,
    /// Every Redis Cluster server (at least 3 masters with their replicas), or none for
    /// a Postgres-only cluster.
    pub redis_ports: Vec<u16>,
    /// Replicas per Redis master (a cluster written before replicas existed has none).
    #[serde(default)]
    pub redis_replicas: usize,
    /// One API node per port.
    pub node_ports: Vec<u16>,
    /// HAProxy in front of the nodes, when set.
    pub lb_port: Option<u16>,
    /// The kernel balancer (see [`crate::kernel_balancer`]), when set; it follows
    /// HAProxy, so it runs only with it.
    #[serde(default)]
    pub kernel_lb_port: Option<u16>,
    /// Router settings given to every node.
    pub router: RouterSettings,
    /// Token, session and hashing settings given to every node, signing key included
    /// (one key for the whole cluster, so a token from one node verifies on all).
    pub auth: AuthConfig,
    /// Rate limits given to every node.
    pub limits: LimitsConfig,
    /// Largest file upload the nodes accept. Default 25 MiB.
    #[serde(default = "default_max_upload")]
    pub max_upload_bytes: u64,
    /// Postgres `fsync`; off only for throwaway test clusters.
    pub fsync: bool,
    /// The nodes' `request_timeout_ms`, when not their default.
    #[serde(default)]
    pub request_timeout_ms: Option<u64>,
    /// The nodes' `files.upload_idle_timeout_ms`, when not their default.
    #[serde(default)]
    pub upload_idle_timeout_ms: Option<u64>,
    /// Prometheus and the exporters, when the cluster is monitored.
    #[serde(default)]
    pub monitoring: Option<MonitoringSpec>,
}

fn default_max_upload() -> u64 {
    FilesConfig::default().max_upload_bytes
}

/// Auth settings with a fresh random signing key, for a new cluster.
pub fn auth_with_fresh_key() -> AuthConfig {
    use base64::Engine;
    let secret: [u8; 32] = rand::random();
    AuthConfig {
        signing_key_id: "local-1".into(),
        keys: vec![SigningKeyConfig {
            id: "local-1".into(),
            secret: Secret::new(base64::engine::general_purpose::STANDARD.encode(secret)),
        }],
        ..AuthConfig::default()
    }
}

/// What happens to the processes when the [`Cluster`] value is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDrop {
    /// Leave everything running (a detached `strata dev up`).
    Keep,
    /// Stop every process.
    Stop,
    /// Stop every process and delete the data directory (tests).
    StopAndRemove,
}

/// A running (or about to run) local cluster and a handle on each of its processes.
pub struct Cluster {
    pub spec: ClusterSpec,
    pub postgres: Vec<PgInstance>,
    pub redis: Option<RedisCluster>,
    pub nodes: Vec<NodeProcess>,
    pub load_balancer: Option<LoadBalancer>,
    pub kernel_balancer: Option<KernelBalancer>,
    pub monitoring: Option<Monitoring>,
    on_drop: OnDrop,
}

impl Cluster {
    /// Builds the handles for a spec without starting anything.
    pub fn plan(spec: ClusterSpec) -> Result<Self, SandboxError> {
        let tools = Tools::discover()?;
        let mut postgres: Vec<PgInstance> = Vec::new();
        for shard in &spec.shard_map.shards {
            for (index, addr) in shard.hosts.iter().enumerate() {
                postgres.push(PgInstance {
                    shard: shard.id.clone(),
                    index,
                    addr: addr.clone(),
                    dir: spec
                        .data_dir
                        .join("pg")
                        .join(format!("{}-{index}", shard.id)),
                    tools: tools.clone(),
                    database: spec.shard_map.database_of(&shard.id).to_owned(),
                    fsync: spec.fsync,
                    synchronous: shard.synchronous,
                });
            }
        }
        let redis = (!spec.redis_ports.is_empty()).then(|| RedisCluster {
            ports: spec.redis_ports.clone(),
            replicas: spec.redis_replicas,
            dir: spec.data_dir.join("redis"),
            tools: tools.clone(),
        });
        let seeds = redis.as_ref().map(RedisCluster::seeds).unwrap_or_default();
        let nodes = if spec.node_ports.is_empty() {
            Vec::new()
        } else {
            let binary = node_binary()?;
            spec.node_ports
                .iter()
                .enumerate()
                .map(|(i, &port)| node_process(&spec, &seeds, &binary, i, port))
                .collect()
        };
        let load_balancer = spec.lb_port.map(|port| LoadBalancer {
            port,
            node_ports: spec.node_ports.clone(),
            dir: spec.data_dir.join("haproxy"),
            tools: tools.clone(),
        });
        let kernel_balancer = spec
            .kernel_lb_port
            .filter(|_| load_balancer.is_some())
            .map(|port| KernelBalancer {
                port,
                dir: spec.data_dir.join("kernel-balancer"),
            });
        let monitoring = spec.monitoring.as_ref().map(|ports| Monitoring {
            spec: ports.clone(),
            // One exporter per server: a shard sharing one is seen through the first's.
            postgres: servers_of(&postgres)
                .zip(&ports.postgres_exporters)
                .map(|(pg, &port)| PostgresTarget {
                    shard: pg.shard.to_string(),
                    addr: pg.addr.to_string(),
                    database: pg.database.clone(),
                    port,
                })
                .collect(),
            redis: spec
                .redis_ports
                .iter()
                .map(|port| format!("127.0.0.1:{port}"))
                .collect(),
            nodes: nodes.iter().map(|n| (n.id.clone(), n.port)).collect(),
            dir: crate::monitoring::dir_of(&spec.data_dir),
        });
        Ok(Self {
            spec,
            postgres,
            redis,
            nodes,
            load_balancer,
            kernel_balancer,
            monitoring,
            on_drop: OnDrop::Stop,
        })
    }

    /// Starts (or restarts, reusing data) everything a spec describes and writes
    /// `cluster.json`. On failure, whatever did start is stopped again.
    pub fn start(spec: ClusterSpec, on_drop: OnDrop) -> Result<Self, SandboxError> {
        let mut cluster = Self::plan(spec)?;
        cluster.on_drop = on_drop;
        // If start-up fails half-way, dropping `cluster` stops what did start.
        cluster.start_all()?;
        Ok(cluster)
    }

    fn start_all(&self) -> Result<(), SandboxError> {
        std::fs::create_dir_all(&self.spec.data_dir)
            .map_err(SandboxError::io("create the data dir"))?;
        process::make_postgres_dir(&self.spec.data_dir.join("pg"))?;
        self.link_shared_servers()?;
        self.write_spec_and_map()?;
        for shard in &self.spec.shard_map.shards {
            let primary = self.pg(&shard.id, 0);
            primary.init_primary()?;
            for replica in self
                .postgres
                .iter()
                .filter(|p| p.shard == shard.id && p.index > 0)
            {
                replica.init_replica(primary)?;
            }
            primary.require_standby()?;
        }
        migrate(&self.spec.shard_map)?;
        if let Some(redis) = &self.redis {
            redis.start()?;
        }
        for node in &self.nodes {
            node.start()?;
        }
        for node in &self.nodes {
            node.wait_ready()?;
        }
        if let Some(lb) = &self.load_balancer {
            lb.start()?;
            wait_until(
                "the load balancer to answer /readyz",
                Duration::from_secs(30),
                &lb.dir,
                || process::http_status(lb.port, "/readyz") == Some(200),
            )?;
        }
        if let Some(kernel) = &self.kernel_balancer {
            kernel.start(&self.spec.node_ports)?;
        }
        if let Some(monitoring) = &self.monitoring {
            monitoring.start()?;
        }
        self.endpoints().write()
    }

    /// Points the folder of each shard placed on a server an earlier shard started at
    /// that server's folder (a symbolic link), so the shard's handle starts, stops and
    /// reads the same server, and keeps doing so once the first shard is removed.
    fn link_shared_servers(&self) -> Result<(), SandboxError> {
        for pg in &self.postgres {
            let server = self.server_of(pg);
            if server.dir != pg.dir && std::fs::symlink_metadata(&pg.dir).is_err() {
                std::os::unix::fs::symlink(&server.dir, &pg.dir)
                    .map_err(SandboxError::io("link a shard to its shared server"))?;
            }
        }
        Ok(())
    }

    /// One instance per Postgres server: the first of the map at each address (shards
    /// sharing a server each have an instance for it, all linked to the first's folder).
    pub fn servers(&self) -> impl Iterator<Item = &PgInstance> {
        servers_of(&self.postgres)
    }

    /// The instance that started the server `pg` runs on (`pg` itself unless its shard
    /// shares a server an earlier shard of the map started).
    fn server_of(&self, pg: &PgInstance) -> &PgInstance {
        servers_of(&self.postgres)
            .find(|server| server.addr == pg.addr)
            .expect("every address has a first instance")
    }

    /// Rebuilds the handles of a cluster started earlier from the same data directory
    /// (its `spec.json`), e.g. for `strata dev down` and `strata dev status`.
    pub fn open(data_dir: &Path) -> Result<Self, SandboxError> {
        let path = data_dir.join(SPEC_FILE);
        let text = std::fs::read_to_string(&path).map_err(SandboxError::io(format!(
            "read {} (is a cluster set up there?)",
            path.display()
        )))?;
        let spec: ClusterSpec = serde_json::from_str(&text)
            .map_err(|e| SandboxError::Config(format!("{}: {e}", path.display())))?;
        let mut cluster = Self::plan(spec)?;
        cluster.on_drop = OnDrop::Keep;
        Ok(cluster)
    }

    /// Stops everything, front to back: load balancers, nodes, Redis, replicas, primaries.
    pub fn stop(&self) {
        if let Some(monitoring) = &self.monitoring {
            monitoring.stop();
        }
        if let Some(kernel) = &self.kernel_balancer {
            kernel.stop();
        }
        if let Some(lb) = &self.load_balancer {
            lb.stop();
        }
        for node in &self.nodes {
            node.stop();
        }
        if let Some(redis) = &self.redis {
            redis.stop();
        }
        let (primaries, replicas): (Vec<_>, Vec<_>) =
            self.postgres.iter().partition(|p| p.index == 0);
        for pg in replicas.into_iter().chain(primaries) {
            if let Err(e) = pg.stop() {
                tracing::warn!(error = %e, "postgres did not stop cleanly; killing it");
                pg.kill();
            }
        }
    }

    /// Changes what dropping this value does.
    pub fn set_on_drop(&mut self, on_drop: OnDrop) {
        self.on_drop = on_drop;
    }

    /// The Postgres instance `index` of a shard (0 = the one started as primary).
    ///
    /// # Panics
    /// When the shard or index is not in the spec: a test asking for a host it did not
    /// build is a bug in the test.
    pub fn pg(&self, shard: &ShardId, index: usize) -> &PgInstance {
        self.postgres
            .iter()
            .find(|p| &p.shard == shard && p.index == index)
            .unwrap_or_else(|| panic!("no postgres {shard}-{index} in this cluster"))
    }

    /// The effective shard map file the nodes read.
    pub fn shard_map_path(&self) -> PathBuf {
        self.spec.data_dir.join("shard-map.toml")
    }

    /// Every address of the cluster.
    pub fn endpoints(&self) -> Endpoints {
        Endpoints {
            data_dir: self.spec.data_dir.clone(),
            shard_map: self.shard_map_path(),
            load_balancer: self.load_balancer.as_ref().map(LoadBalancer::url),
            kernel_balancer: self.kernel_balancer.as_ref().map(KernelBalancer::url),
            prometheus: self.monitoring.as_ref().map(Monitoring::url),
            nodes: self
                .nodes
                .iter()
                .map(|n| NodeEndpoint {
                    id: n.id.clone(),
                    url: n.url(),
                    metrics: format!("{}/metrics", n.url()),
                    log: n.log_file(),
                })
                .collect(),
            postgres: self
                .postgres
                .iter()
                .map(|p| PostgresEndpoint {
                    shard: p.shard.to_string(),
                    addr: p.addr.to_string(),
                    role: if p.index == 0 {
                        "primary".into()
                    } else {
                        "replica".into()
                    },
                    dsn: format!("postgres://{APP_ROLE}@{}/{}", p.addr, p.database),
                    log: p.log_file(),
                })
                .collect(),
            redis: self
                .redis
                .as_ref()
                .map(RedisCluster::seeds)
                .unwrap_or_default(),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        match self.on_drop {
            OnDrop::Keep => {}
            OnDrop::Stop => self.stop(),
            OnDrop::StopAndRemove => {
                self.stop();
                let _ = std::fs::remove_dir_all(&self.spec.data_dir);
            }
        }
    }
}

/// The first instance at each address of `postgres`: one per server.
fn servers_of(postgres: &[PgInstance]) -> impl Iterator<Item = &PgInstance> {
    postgres
        .iter()
        .enumerate()
        .filter(|(i, pg)| postgres[..*i].iter().all(|earlier| earlier.addr != pg.addr))
        .map(|(_, pg)| pg)
}

/// The handle of API node `index` (0-based; its id is `node-<index + 1>`) on `port`,
/// with the config every node of the spec shares.
fn node_process(
    spec: &ClusterSpec,
    redis_seeds: &[String],
    binary: &Path,
    index: usize,
    port: u16,
) -> NodeProcess {
    let id = format!("node-{}", index + 1);
    let config = NodeConfig {
        node_id: id.clone(),
        listen: ([127, 0, 0, 1], port).into(),
        shard_map: spec.data_dir.join("shard-map.toml"),
        redis: strata_node::config::RedisConfig {
            seeds: redis_seeds.to_vec(),
        },
        router: spec.router.clone(),
        auth: spec.auth.clone(),
        limits: spec.limits.clone(),
        // One directory on this machine, shared by its nodes.
        files: FilesConfig {
            local_dir: spec.data_dir.join("objects"),
            max_upload_bytes: spec.max_upload_bytes,
            upload_idle_timeout_ms: spec
                .upload_idle_timeout_ms
                .unwrap_or(FilesConfig::default().upload_idle_timeout_ms),
            ..FilesConfig::default()
        },
        request_timeout_ms: spec
            .request_timeout_ms
            .unwrap_or(NodeConfig::default().request_timeout_ms),
        search: SearchConfig {
            index_dir: spec.data_dir.join("nodes").join(&id).join("index"),
        },
        worker_threads: Some(crate::nodes::worker_threads_per_node(spec.node_ports.len())),
        ..NodeConfig::default()
    };
    NodeProcess {
        dir: spec.data_dir.join("nodes").join(&id),
        id,
        port,
        config,
        binary: binary.to_path_buf(),
    }
}

/// Runs async work on a thread of its own with its own runtime, so it works from plain
/// `main` and from inside async tests alike.
fn on_own_runtime<T, Fut>(work: impl FnOnce() -> Fut + Send + 'static) -> Result<T, String>
where
    T: Send + 'static,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(work())
    })
    .join()
    .map_err(|_| "the worker thread panicked".to_string())?
}

/// Applies migrations to every shard's primary, then creates the catalog if needed.
fn migrate(map: &ShardMap) -> Result<(), SandboxError> {
    let map = map.clone();
    on_own_runtime(move || async move {
        let topology = Topology::connect(map.clone(), RouterSettings::default()).await;
        strata_router::migrations::migrate_all(&topology)
            .await
            .map_err(|e| e.to_string())?;
        strata_router::rebalance::bootstrap(&topology, &map)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    })
    .map_err(SandboxError::Migrations)
}

impl Cluster {
    /// Starts a new shard's Postgres processes (a primary and `replicas` streaming
    /// replicas), migrates it, registers it in the catalog with no slots, and records it
    /// in `spec.json` and the effective shard map, so `dev up`, `down` and `status` and
    /// restarted nodes include it. Returns its id (`s<N>`, the first free number).
    pub fn add_shard(&mut self, replicas: usize, weight: u32) -> Result<ShardId, SandboxError> {
        let taken = &self.spec.shard_map.shards;
        let id = (0..)
            .map(|n| ShardId::parse(&format!("s{n}")).expect("s<N> is a valid shard id"))
            .find(|id| taken.iter().all(|s| &s.id != id))
            .expect("a free shard id");
        let ports = self.ports_for_new_shard(replicas + 1)?;
        let hosts: Vec<HostAddr> = ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}").parse().expect("a valid host"))
            .collect();
        let tools = Tools::discover()?;
        let instances: Vec<PgInstance> = hosts
            .iter()
            .enumerate()
            .map(|(index, addr)| PgInstance {
                shard: id.clone(),
                index,
                addr: addr.clone(),
                dir: self.spec.data_dir.join("pg").join(format!("{id}-{index}")),
                tools: tools.clone(),
                database: self.spec.shard_map.database.clone(),
                fsync: self.spec.fsync,
                synchronous: false,
            })
            .collect();
        instances[0].init_primary()?;
        for replica in &instances[1..] {
            replica.init_replica(&instances[0])?;
        }
        let exporter_ports = self.ports_for_new_exporters(instances.len())?;
        let targets: Vec<PostgresTarget> = instances
            .iter()
            .zip(&exporter_ports)
            .map(|(pg, &port)| PostgresTarget {
                shard: id.to_string(),
                addr: pg.addr.to_string(),
                database: self.spec.shard_map.database.clone(),
                port,
            })
            .collect();
        self.postgres.extend(instances);
        let map = self.spec.shard_map.clone();
        let (shard, shard_hosts) = (id.clone(), hosts.clone());
        on_own_runtime(move || async move {
            let admin = strata_router::rebalance::ClusterAdmin::open(&map)
                .await
                .map_err(|e| e.to_string())?;
            admin
                .add_shard(&shard, &shard_hosts, weight)
                .await
                .map_err(|e| e.to_string())
        })
        .map_err(SandboxError::Migrations)?;
        self.spec
            .shard_map
            .shards
            .push(strata_router::shard_map::ShardConfig {
                id: id.clone(),
                weight,
                hosts,
                synchronous: false,
                database: None,
            });
        if let Some(monitoring) = &mut self.monitoring {
            monitoring.add_postgres(targets)?;
            self.spec.monitoring = Some(monitoring.spec.clone());
        }
        self.write_spec_and_map()?;
        self.endpoints().write()?;
        Ok(id)
    }

    /// Forgets a shard the catalog no longer has (after `strata shard remove`) and stops
    /// its processes; its data directory stays.
    pub fn forget_shard(&mut self, id: &ShardId) -> Result<(), SandboxError> {
        // A server other shards still use keeps running.
        let shared = |pg: &PgInstance| {
            self.postgres
                .iter()
                .any(|other| &other.shard != id && other.addr == pg.addr)
        };
        for pg in self
            .postgres
            .iter()
            .filter(|p| &p.shard == id && !shared(p))
        {
            if pg.stop().is_err() {
                pg.kill();
            }
        }
        self.postgres.retain(|p| &p.shard != id);
        self.spec.shard_map.shards.retain(|s| &s.id != id);
        if let Some(monitoring) = &mut self.monitoring {
            monitoring.remove_shard(id.as_str())?;
            self.spec.monitoring = Some(monitoring.spec.clone());
        }
        self.write_spec_and_map()?;
        self.endpoints().write()
    }

    /// Adds or removes API nodes until `count` run, while the cluster serves. A new node
    /// starts, becomes ready, and only then joins the load balancer (through HAProxy's
    /// runtime API: no restart, no dropped connection) and Prometheus' node list. The
    /// last node goes first when removing: the load balancer stops giving it requests,
    /// then it drains (SIGTERM: it refuses readiness, finishes what is in flight and
    /// exits) and leaves the balancer's list. `spec.json`, the HAProxy config and
    /// `cluster.json` follow every step, so a failure half-way leaves a true record.
    pub fn scale_nodes(&mut self, count: usize) -> Result<(), SandboxError> {
        if count == 0 {
            return Err(SandboxError::Config(
                "a cluster needs at least one API node".into(),
            ));
        }
        let seeds = self
            .redis
            .as_ref()
            .map(RedisCluster::seeds)
            .unwrap_or_default();
        let binary = node_binary()?;
        while self.nodes.len() < count {
            let index = self.nodes.len();
            let port = self.port_for_new_node()?;
            let node = node_process(&self.spec, &seeds, &binary, index, port);
            node.start()?;
            node.wait_ready()?;
            if let Some(lb) = &mut self.load_balancer {
                lb.add_node(port)?;
            }
            if let Some(kernel) = &self.kernel_balancer {
                kernel.wait_following(port, true)?;
            }
            self.nodes.push(node);
            self.spec.node_ports.push(port);
            self.record_nodes()?;
        }
        while self.nodes.len() > count {
            let node = self
                .nodes
                .last()
                .expect("more nodes than the count")
                .clone();
            if let Some(lb) = &self.load_balancer {
                lb.drain_last_node()?;
            }
            if let Some(kernel) = &self.kernel_balancer {
                kernel.wait_following(node.port, false)?;
            }
            node.stop();
            if let Some(lb) = &mut self.load_balancer {
                lb.forget_last_node()?;
            }
            self.nodes.pop();
            self.spec.node_ports.pop();
            self.record_nodes()?;
        }
        Ok(())
    }

    /// After the node list changed: spec, Prometheus' node targets, endpoints.
    fn record_nodes(&mut self) -> Result<(), SandboxError> {
        self.write_spec_and_map()?;
        let nodes = self.nodes.iter().map(|n| (n.id.clone(), n.port)).collect();
        if let Some(monitoring) = &mut self.monitoring {
            monitoring.set_nodes(nodes)?;
        }
        self.endpoints().write()
    }

    /// The port after the highest node port when it can be bound now (`dev up` lays
    /// nodes out one after another), else a free one.
    fn port_for_new_node(&self) -> Result<u16, SandboxError> {
        let next = self
            .spec
            .node_ports
            .iter()
            .max()
            .and_then(|p| p.checked_add(1));
        let taken_by_cluster = |p: u16| {
            self.spec.lb_port == Some(p)
                || self.spec.kernel_lb_port == Some(p)
                || self.spec.redis_ports.contains(&p)
                || self.postgres.iter().any(|pg| pg.addr.port() == p)
                || self.spec.monitoring.as_ref().is_some_and(|m| m.uses(p))
        };
        match next {
            Some(p)
                if !taken_by_cluster(p)
                    && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() =>
            {
                Ok(p)
            }
            _ => Ok(process::free_ports(1)?[0]),
        }
    }

    /// Ports for the exporters of a new shard's hosts: right after the highest
    /// monitoring port when they can be bound now, else free ones.
    fn ports_for_new_exporters(&self, count: usize) -> Result<Vec<u16>, SandboxError> {
        let Some(ports) = &self.spec.monitoring else {
            return Ok(Vec::new());
        };
        let highest = ports
            .postgres_exporters
            .iter()
            .chain([&ports.prometheus, &ports.redis_exporter])
            .max()
            .copied()
            .unwrap_or(ports.prometheus);
        let block: Vec<u16> = (1..=count as u16)
            .filter_map(|i| highest.checked_add(i))
            .collect();
        let bindable = |p: &u16| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok();
        if block.len() == count && block.iter().all(bindable) {
            Ok(block)
        } else {
            process::free_ports(count)
        }
    }

    /// The ports of a new shard's hosts: the next block of ten after the highest Postgres
    /// port (as `dev up` lays shards out), or any free ports if that block is taken.
    fn ports_for_new_shard(&self, count: usize) -> Result<Vec<u16>, SandboxError> {
        let highest = self
            .postgres
            .iter()
            .map(|p| p.addr.port())
            .max()
            .unwrap_or(25390);
        let base = (highest / 10 + 1) * 10;
        let block: Vec<u16> = (0..count as u16).map(|i| base + i).collect();
        // The next block of ten (the local cluster's layout) when it can be bound now,
        // else free ports out of the kernel's ephemeral range.
        let bindable = |p: &u16| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok();
        if base.checked_add(10).is_some() && block.iter().all(bindable) {
            Ok(block)
        } else {
            process::free_ports(count)
        }
    }

    fn write_spec_and_map(&self) -> Result<(), SandboxError> {
        let spec_text = serde_json::to_string_pretty(&self.spec).expect("a spec always serializes");
        std::fs::write(self.spec.data_dir.join(SPEC_FILE), spec_text)
            .map_err(SandboxError::io("write spec.json"))?;
        std::fs::write(self.shard_map_path(), self.spec.shard_map.to_toml())
            .map_err(SandboxError::io("write shard-map.toml"))
    }
}

/// Runs the kernel balancer's controller of the cluster in `data_dir` until it is
/// stopped (`strata dev kernel-balancer`, started by the cluster itself).
pub fn follow_with_kernel_balancer(data_dir: &Path) -> Result<(), SandboxError> {
    let cluster = Cluster::open(data_dir)?;
    match (&cluster.kernel_balancer, &cluster.load_balancer) {
        (Some(kernel), Some(haproxy)) => kernel.follow(haproxy),
        _ => Err(SandboxError::Config(format!(
            "the cluster in {} has no kernel balancer",
            data_dir.display()
        ))),
    }
}

/// What `strata dev status` reports of one process.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProcessState {
    /// `postgres`, `redis`, `node`, `haproxy` or `nftables`.
    pub kind: &'static str,
    pub name: String,
    pub addr: String,
    pub running: bool,
    /// Live detail: a Postgres host's role and replication state, a node's readiness.
    pub detail: String,
}

impl Cluster {
    /// The state of every process of the cluster, probed live.
    pub fn process_states(&self) -> Vec<ProcessState> {
        let mut out = Vec::new();
        for pg in &self.postgres {
            let running = pg.is_running();
            let detail = if running {
                postgres_detail(pg)
            } else {
                "stopped".into()
            };
            out.push(ProcessState {
                kind: "postgres",
                name: pg.name(),
                addr: pg.addr.to_string(),
                running,
                detail,
            });
        }
        if let Some(redis) = &self.redis {
            for &port in &redis.ports {
                let running = redis.server_pid(port).is_some();
                let detail = match redis.role(port).as_deref() {
                    Some("master") => "cluster master".into(),
                    Some("slave") => "cluster replica".into(),
                    _ if running => "cluster member".into(),
                    _ => "stopped".into(),
                };
                out.push(ProcessState {
                    kind: "redis",
                    name: format!("redis-{port}"),
                    addr: format!("127.0.0.1:{port}"),
                    running,
                    detail,
                });
            }
        }
        for node in &self.nodes {
            let running = node.pid().is_some();
            let detail = match process::http_status(node.port, "/readyz") {
                Some(200) => "ready".into(),
                Some(code) => format!("not ready ({code})"),
                None => "not answering".into(),
            };
            out.push(ProcessState {
                kind: "node",
                name: node.id.clone(),
                addr: node.url(),
                running,
                detail,
            });
        }
        if let Some(lb) = &self.load_balancer {
            let running = lb.pid().is_some();
            let detail = match process::http_status(lb.port, "/readyz") {
                Some(code) => format!("/readyz answers {code}"),
                None => "not answering".into(),
            };
            out.push(ProcessState {
                kind: "haproxy",
                name: "load-balancer".into(),
                addr: lb.url(),
                running,
                detail,
            });
        }
        if let Some(kernel) = &self.kernel_balancer {
            let detail = match kernel.applied() {
                Some(ports) => format!("new connections to ports {ports:?}"),
                None => "no rule yet".into(),
            };
            out.push(ProcessState {
                kind: "nftables",
                name: "kernel-balancer".into(),
                addr: kernel.url(),
                running: kernel.pid().is_some(),
                detail,
            });
        }
        out
    }
}

fn postgres_detail(pg: &PgInstance) -> String {
    let sql = "SELECT CASE WHEN pg_is_in_recovery() THEN 'replica, ' || coalesce((SELECT status FROM pg_stat_wal_receiver), 'not receiving') \
               ELSE 'primary, ' || (SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming') || ' replica(s) streaming' END";
    pg.psql("postgres", sql)
        .unwrap_or_else(|e| format!("not answering: {e}"))
}
