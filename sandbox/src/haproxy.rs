//! The load balancer in front of the nodes: HAProxy, round-robin, sending traffic only to
//! nodes whose `/readyz` answers 200.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::error::SandboxError;
use crate::process::{self, run};
use crate::tools::Tools;

/// The HAProxy instance of the local cluster.
#[derive(Debug, Clone)]
pub struct LoadBalancer {
    pub port: u16,
    pub node_ports: Vec<u16>,
    /// Config, pid and log.
    pub dir: PathBuf,
    pub(crate) tools: Tools,
}

impl LoadBalancer {
    /// Base URL of the load balancer.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("haproxy.pid")
    }

    /// The HAProxy configuration for the current node list.
    ///
    /// Each node is listed twice: once health-checked on `/readyz`, and once as an
    /// unchecked `backup`. `/readyz` fails on every node at once when a shared dependency
    /// (a shard primary, Redis) is down; without the backups HAProxy would then refuse all
    /// traffic, including the reads replicas can still serve. With them it "fails open"
    /// to every node only when no node is ready, like Envoy's panic threshold.
    ///
    /// A read whose node dies before answering goes again to another node; a write is
    /// repeated only when it never reached a node (the dead node may have committed it).
    ///
    /// Connections to the nodes are kept open and reused. One thread: HAProxy shares the
    /// machine's cores with the nodes and databases, and a second thread only added
    /// context switches (`data-paths`: 6.5k to 8-9k reads/s through it, wrk).
    pub fn config_text(&self) -> String {
        let checked = self
            .node_ports
            .iter()
            .enumerate()
            .map(|(i, port)| format!("    server node-{} 127.0.0.1:{port} check\n", i + 1));
        let fail_open = self.node_ports.iter().enumerate().map(|(i, port)| {
            format!(
                "    server node-{}-fail-open 127.0.0.1:{port} backup\n",
                i + 1
            )
        });
        let servers: String = checked.chain(fail_open).collect();
        format!(
            "# Written by the Strata sandbox.\n\
             global\n    maxconn 4096\n    nbthread 1\n\n\
             defaults\n    mode http\n    timeout connect 2s\n    timeout client 60s\n    timeout server 60s\n\
             \x20   option forwardfor\n    retries 2\n    option redispatch\n\
             \x20   retry-on conn-failure empty-response response-timeout\n\n\
             frontend strata\n    bind 127.0.0.1:{port}\n    http-request deny deny_status 404 if {{ path /metrics }} || {{ path_beg /metrics/ }}\n    http-request disable-l7-retry if !METH_GET\n    default_backend nodes\n\n\
             backend nodes\n    balance roundrobin\n    option httpchk GET /readyz\n\
             \x20   http-check expect status 200\n    option allbackups\n    default-server inter 1s fall 2 rise 1\n{servers}",
            port = self.port,
        )
    }

    /// Writes the config, checks it with `haproxy -c`, and starts HAProxy in the
    /// background (no-op if it runs).
    pub fn start(&self) -> Result<(), SandboxError> {
        if self.pid().is_some() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.dir).map_err(SandboxError::io("create haproxy dir"))?;
        let cfg = self.dir.join("haproxy.cfg");
        std::fs::write(&cfg, self.config_text()).map_err(SandboxError::io("write haproxy.cfg"))?;
        run(
            Command::new(&self.tools.haproxy)
                .arg("-c")
                .arg("-q")
                .arg("-f")
                .arg(&cfg),
            "haproxy -c",
        )?;
        run(
            Command::new(&self.tools.haproxy)
                .arg("-D")
                .arg("-f")
                .arg(&cfg)
                .arg("-p")
                .arg(self.pid_file()),
            "start haproxy",
        )?;
        process::wait_until(
            "haproxy to listen",
            Duration::from_secs(15),
            &self.dir,
            || process::port_open(self.port),
        )
    }

    /// HAProxy's pid while it runs.
    pub fn pid(&self) -> Option<i32> {
        process::read_pid(&self.pid_file()).filter(|pid| process::alive(*pid))
    }

    /// Stops HAProxy.
    pub fn stop(&self) {
        if let Some(pid) = self.pid() {
            process::stop_pid(pid, libc::SIGTERM, Duration::from_secs(5));
        }
    }
}
