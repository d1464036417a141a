//! A Redis Cluster of N masters, each with R replicas, on loopback: one `redis-server`
//! per port with `cluster-enabled yes`, joined once with `redis-cli --cluster create
//! --cluster-replicas R`. A master that dies is replaced by its replica within a few
//! seconds (`cluster-node-timeout` plus the election), and the other masters keep
//! serving their slots meanwhile (`cluster-require-full-coverage no`).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::error::SandboxError;
use crate::process::{self, run, wait_until};
use crate::tools::Tools;

/// The Redis servers of the local cluster.
#[derive(Debug, Clone)]
pub struct RedisCluster {
    /// Every server, masters and replicas.
    pub ports: Vec<u16>,
    /// Replicas per master.
    pub replicas: usize,
    /// One folder per server: config, nodes.conf, append-only file, pid, log.
    pub dir: PathBuf,
    pub(crate) tools: Tools,
}

impl RedisCluster {
    fn server_dir(&self, port: u16) -> PathBuf {
        self.dir.join(port.to_string())
    }

    /// The pid file of the server on `port`.
    pub fn pid_file(&self, port: u16) -> PathBuf {
        self.server_dir(port).join("redis.pid")
    }

    /// Seeds as the node config wants them.
    pub fn seeds(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    /// Starts every server (reusing their data), forms the cluster if it has never been
    /// formed, and waits for `cluster_state:ok`.
    pub fn start(&self) -> Result<(), SandboxError> {
        if self.ports.len() < 3 * (1 + self.replicas) {
            return Err(SandboxError::Config(format!(
                "a Redis Cluster needs at least 3 masters: {} servers cannot hold 3 masters with {} replicas each",
                self.ports.len(),
                self.replicas
            )));
        }
        for &port in &self.ports {
            self.start_server(port)?;
        }
        if !self.cluster_ok(self.ports[0]) && !self.formed() {
            let mut cmd = Command::new(&self.tools.redis_cli);
            cmd.arg("--cluster").arg("create");
            cmd.args(self.ports.iter().map(|p| format!("127.0.0.1:{p}")));
            cmd.args([
                "--cluster-replicas",
                &self.replicas.to_string(),
                "--cluster-yes",
            ]);
            run(&mut cmd, "redis-cli --cluster create")?;
        }
        wait_until(
            "Redis Cluster to report cluster_state:ok with every replica in sync",
            Duration::from_secs(30),
            &self.dir,
            || {
                self.ports
                    .iter()
                    .all(|&p| self.cluster_ok(p) && self.replica_linked(p))
            },
        )
    }

    /// The servers that are masters now (a failover changes them).
    pub fn masters(&self) -> Vec<u16> {
        self.ports
            .iter()
            .copied()
            .filter(|&p| self.role(p).as_deref() == Some("master"))
            .collect()
    }

    /// The master serving `key`'s slot now, as a live server sees the cluster.
    pub fn master_of(&self, key: &str) -> Option<u16> {
        let live = *self.ports.iter().find(|&&p| self.server_pid(p).is_some())?;
        let ask = |args: &[&str]| {
            Command::new(&self.tools.redis_cli)
                .args(["-p", &live.to_string()])
                .args(args)
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        };
        let slot: u16 = ask(&["cluster", "keyslot", key])?.trim().parse().ok()?;
        let nodes = ask(&["cluster", "nodes"])?;
        nodes.lines().find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = fields.get(2)?;
            if !flags.contains("master") || flags.contains("fail") {
                return None;
            }
            let serves = fields.iter().skip(8).any(|range| {
                let mut ends = range.split('-').map(|n| n.parse::<u16>());
                match (ends.next(), ends.next()) {
                    (Some(Ok(a)), Some(Ok(b))) => (a..=b).contains(&slot),
                    (Some(Ok(a)), None) => a == slot,
                    _ => false,
                }
            });
            let port = fields.get(1)?.split('@').next()?.rsplit(':').next()?;
            serves.then(|| port.parse().ok()).flatten()
        })
    }

    /// True once every live server reports `cluster_state:ok`.
    pub fn healthy(&self) -> bool {
        self.ports
            .iter()
            .filter(|&&p| self.server_pid(p).is_some())
            .all(|&p| self.cluster_ok(p))
    }

    /// `master` or `slave`, as the server on `port` reports itself (`None` when down).
    pub fn role(&self, port: u16) -> Option<String> {
        let out = Command::new(&self.tools.redis_cli)
            .args(["-p", &port.to_string(), "role"])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .next()
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
    }

    /// True unless the server is a replica whose link to its master is down.
    fn replica_linked(&self, port: u16) -> bool {
        Command::new(&self.tools.redis_cli)
            .args(["-p", &port.to_string(), "info", "replication"])
            .output()
            .is_ok_and(|o| {
                let text = String::from_utf8_lossy(&o.stdout);
                !text.contains("role:slave") || text.contains("master_link_status:up")
            })
    }

    /// Kills one server with SIGKILL (a crash: no append-only flush, no goodbye to the
    /// cluster).
    pub fn kill_server(&self, port: u16) {
        if let Some(pid) = self.server_pid(port) {
            process::stop_pid(pid, libc::SIGKILL, Duration::from_secs(10));
        }
    }

    fn start_server(&self, port: u16) -> Result<(), SandboxError> {
        if self.server_pid(port).is_some() {
            return Ok(());
        }
        let dir = self.server_dir(port);
        std::fs::create_dir_all(&dir).map_err(SandboxError::io("create redis dir"))?;
        let conf = dir.join("redis.conf");
        // The cluster bus port is set explicitly: Redis's default (port + 10,000) does not
        // exist for ports above 55535, and may be taken. A restart keeps the first one.
        let bus_port = match bus_port_of(&conf) {
            Some(port) => port,
            None => process::free_ports(1)?[0],
        };
        let text = format!(
            "# Written by the Strata sandbox.\nbind 127.0.0.1\nport {port}\nprotected-mode no\n\
             daemonize yes\npidfile {pid}\nlogfile {log}\ndir {dir}\n\
             cluster-enabled yes\ncluster-port {bus_port}\ncluster-config-file nodes.conf\ncluster-node-timeout 2000\n\
             cluster-require-full-coverage no\n\
             appendonly yes\nappendfsync everysec\nsave \"\"\n",
            pid = self.pid_file(port).display(),
            log = dir.join("redis.log").display(),
            dir = dir.display(),
        );
        std::fs::write(&conf, text).map_err(SandboxError::io("write redis.conf"))?;
        run(
            Command::new(&self.tools.redis_server).arg(&conf),
            &format!("start redis on {port}"),
        )?;
        wait_until(
            &format!("redis on port {port}"),
            Duration::from_secs(15),
            &dir,
            || process::port_open(port),
        )
    }

    /// True once this cluster has been formed before (its servers know each other).
    fn formed(&self) -> bool {
        let nodes = std::fs::read_to_string(self.server_dir(self.ports[0]).join("nodes.conf"));
        nodes.is_ok_and(|text| {
            text.lines()
                .filter(|l| l.contains("master") || l.contains("slave"))
                .count()
                >= self.ports.len()
        })
    }

    fn cluster_ok(&self, port: u16) -> bool {
        Command::new(&self.tools.redis_cli)
            .args(["-p", &port.to_string(), "cluster", "info"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
    }

    /// The pid of the server on `port`, while it runs.
    pub fn server_pid(&self, port: u16) -> Option<i32> {
        process::read_pid(&self.pid_file(port)).filter(|pid| process::alive(*pid))
    }

    /// Stops one server (SIGTERM flushes its append-only file).
    pub fn stop_server(&self, port: u16) {
        if let Some(pid) = self.server_pid(port) {
            process::stop_pid(pid, libc::SIGTERM, Duration::from_secs(10));
        }
    }

    /// Stops every server.
    pub fn stop(&self) {
        for &port in &self.ports {
            self.stop_server(port);
        }
    }
}

/// The cluster bus port a server's config file names, if it has one.
fn bus_port_of(conf: &std::path::Path) -> Option<u16> {
    std::fs::read_to_string(conf)
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("cluster-port ")?.trim().parse().ok())
}
