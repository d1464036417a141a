//! The kernel balancer: a second door to the nodes, next to HAProxy, that costs no
//! process on the way. An nftables rule rewrites each new TCP connection to its port
//! onto one of the nodes in turn (`numgen inc`, as Kubernetes' kube-proxy does for a
//! Service), and the kernel carries the bytes; nothing wakes between client and node.
//!
//! It balances connections, not requests, and has no health checks or retries of its
//! own. A small controller process (`strata dev kernel-balancer`) follows HAProxy's view
//! of the nodes through its runtime API and rewrites the rule whenever the set of nodes
//! taking requests changes: a node HAProxy finds down, drains or takes out leaves the
//! kernel balancer too, within [`FOLLOW_INTERVAL`]. Connections already open stay with
//! their node, as connections to a Kubernetes Service do.
//!
//! It needs root (CAP_NET_ADMIN) and the `nft` tool (Debian's `nftables`).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::error::SandboxError;
use crate::haproxy::LoadBalancer;
use crate::process::{self, wait_until};
use crate::tools;

/// How often the controller reads HAProxy's view of the nodes.
pub const FOLLOW_INTERVAL: Duration = Duration::from_millis(200);

/// The kernel balancer of the local cluster.
#[derive(Debug, Clone)]
pub struct KernelBalancer {
    /// The port clients connect to on 127.0.0.1.
    pub port: u16,
    /// The controller's pid file, log, and the node list it last applied.
    pub dir: PathBuf,
}

impl KernelBalancer {
    /// Base URL of the kernel balancer.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The nftables table holding this balancer's rule (one per port, so clusters side
    /// by side do not touch each other's).
    pub fn table(&self) -> String {
        format!("strata_{}", self.port)
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("controller.pid")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.join("controller.log")
    }

    /// The node ports the controller last put in the rule, one per line.
    fn applied_file(&self) -> PathBuf {
        self.dir.join("applied")
    }

    /// The rule as last given to `nft -f`.
    fn rule_file(&self) -> PathBuf {
        self.dir.join("rule.nft")
    }

    /// The node ports in the rule now, as the controller last wrote them.
    pub fn applied(&self) -> Option<Vec<u16>> {
        let text = std::fs::read_to_string(self.applied_file()).ok()?;
        text.lines().map(|l| l.trim().parse().ok()).collect()
    }

    /// Starts the controller (no-op if it runs) and waits until the rule sends
    /// connections to exactly `nodes`.
    pub fn start(&self, nodes: &[u16]) -> Result<(), SandboxError> {
        if self.pid().is_none() {
            std::fs::create_dir_all(&self.dir)
                .map_err(SandboxError::io("create the kernel balancer's dir"))?;
            let _ = std::fs::remove_file(self.applied_file());
            // For the reaper, which removes the table when the cluster's owner is gone.
            std::fs::write(self.dir.join("table"), self.table())
                .map_err(SandboxError::io("record the kernel balancer's table"))?;
            let data_dir = self.dir.parent().unwrap_or(Path::new("."));
            process::spawn_logged(
                Command::new(crate::nodes::binary("strata")?)
                    .args(["dev", "kernel-balancer", "--data-dir"])
                    .arg(data_dir),
                &self.log_file(),
                &self.pid_file(),
                "the kernel balancer's controller",
            )?;
        }
        self.wait_applied(nodes)
    }

    /// Waits until the controller has made the rule send new connections to exactly
    /// `nodes` (in any order).
    fn wait_applied(&self, nodes: &[u16]) -> Result<(), SandboxError> {
        let mut wanted = nodes.to_vec();
        wanted.sort_unstable();
        self.wait_for_rule(
            "the kernel balancer to follow HAProxy's nodes",
            |mut ports| {
                ports.sort_unstable();
                ports == wanted
            },
        )
    }

    /// Waits until the rule sends new connections to `port` (`included`) or no longer
    /// does: after a node joined or left HAProxy.
    pub fn wait_following(&self, port: u16, included: bool) -> Result<(), SandboxError> {
        let change = if included { "add" } else { "drop" };
        self.wait_for_rule(
            &format!("the kernel balancer to {change} port {port}"),
            |ports| ports.contains(&port) == included,
        )
    }

    /// Waits until the node list the controller last applied satisfies `wanted`.
    fn wait_for_rule(
        &self,
        what: &str,
        wanted: impl Fn(Vec<u16>) -> bool,
    ) -> Result<(), SandboxError> {
        wait_until(what, Duration::from_secs(15), &self.log_file(), || {
            self.applied().is_some_and(&wanted)
        })
    }

    /// The controller's pid while it runs.
    pub fn pid(&self) -> Option<i32> {
        process::read_pid(&self.pid_file()).filter(|pid| process::alive(*pid))
    }

    /// Stops the controller and removes the rule's table, if it is there.
    pub fn stop(&self) {
        if let Some(pid) = self.pid() {
            process::stop_pid(pid, libc::SIGTERM, Duration::from_secs(5));
        }
        if let Ok(nft) = nft() {
            let _ = Command::new(nft)
                .args(["delete", "table", "ip", &self.table()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }

    /// Replaces the rule, in one nftables transaction, with one that sends each new
    /// connection to the next of `nodes`. With no node, connections are refused.
    fn apply(&self, nodes: &[u16]) -> Result<(), SandboxError> {
        let rule = self.rule_file();
        std::fs::write(&rule, ruleset(&self.table(), self.port, nodes))
            .map_err(SandboxError::io("write the kernel balancer's rule"))?;
        process::run(
            Command::new(nft()?).arg("-f").arg(&rule),
            "nft -f (the kernel balancer's rule; it needs root)",
        )
        .map(drop)
    }

    /// The controller: keeps the rule equal to HAProxy's view of the nodes (see the
    /// module docs) until it is stopped. It holds the balancer's port bound, unused,
    /// so no other program on the machine takes a port whose connections the rule
    /// would divert.
    pub fn follow(&self, haproxy: &LoadBalancer) -> Result<(), SandboxError> {
        let _port_held = TcpListener::bind(("127.0.0.1", self.port)).map_err(SandboxError::io(
            format!("hold the kernel balancer's port {}", self.port),
        ))?;
        let mut current: Option<Vec<u16>> = None;
        loop {
            match haproxy.serving_node_ports() {
                Ok(nodes) if current.as_ref() != Some(&nodes) => {
                    self.apply(&nodes)?;
                    let lines: String = nodes.iter().map(|p| format!("{p}\n")).collect();
                    std::fs::write(self.applied_file(), lines)
                        .map_err(SandboxError::io("record the applied nodes"))?;
                    eprintln!("kernel balancer: new connections go to {nodes:?}");
                    current = Some(nodes);
                }
                Ok(_) => {}
                // HAProxy restarting or gone: keep the last rule, as a data plane does
                // when its control plane is away.
                Err(e) => eprintln!("kernel balancer: HAProxy's view unreadable: {e}"),
            }
            std::thread::sleep(FOLLOW_INTERVAL);
        }
    }
}

/// The `nft` program, or an error naming its package.
fn nft() -> Result<PathBuf, SandboxError> {
    tools::on_path("nft", "nftables")
}

/// The whole table, as `nft -f` reads it: created if missing, deleted and created
/// again, so applying it replaces the old rule atomically.
fn ruleset(table: &str, port: u16, nodes: &[u16]) -> String {
    let rule = if nodes.is_empty() {
        String::new()
    } else {
        let targets: Vec<String> = nodes
            .iter()
            .enumerate()
            .map(|(i, node)| format!("{i} : 127.0.0.1 . {node}"))
            .collect();
        format!(
            "    ip daddr 127.0.0.1 tcp dport {port} dnat ip to numgen inc mod {} map {{ {} }}\n",
            nodes.len(),
            targets.join(", ")
        )
    };
    format!(
        "table ip {table}\ndelete table ip {table}\ntable ip {table} {{\n  chain out {{\n    type nat hook output priority -100; policy accept;\n{rule}  }}\n}}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_spreads_new_connections_over_the_nodes_in_turn() {
        let text = ruleset("strata_8099", 8099, &[8101, 8102]);
        assert!(text.starts_with("table ip strata_8099\ndelete table ip strata_8099\n"));
        assert!(text.contains(
            "ip daddr 127.0.0.1 tcp dport 8099 dnat ip to numgen inc mod 2 map { 0 : 127.0.0.1 . 8101, 1 : 127.0.0.1 . 8102 }"
        ));
    }

    #[test]
    fn with_no_node_the_chain_is_empty() {
        let text = ruleset("strata_8099", 8099, &[]);
        assert!(!text.contains("dnat"));
        assert!(text.contains("hook output"));
    }
}
