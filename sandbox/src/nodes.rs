//! Strata API node processes: each gets its own config file written from the node's own
//! typed config, a log file and a pid file, and runs in its own process group so it
//! outlives a detached `strata dev up`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use strata_node::config::NodeConfig;

use crate::error::SandboxError;
use crate::process::{self, wait_until};

/// One API node.
#[derive(Debug, Clone)]
pub struct NodeProcess {
    pub id: String,
    pub port: u16,
    /// Config, log and pid of this node.
    pub dir: PathBuf,
    pub config: NodeConfig,
    pub(crate) binary: PathBuf,
}

/// The request threads each of `nodes` nodes sharing this machine gets: its share of the
/// cores, at least one. Nodes, databases and the load generator share the cores here, so
/// more threads than that only hand wake-ups between each other (node CPU per private
/// read 60–70 µs with two threads per node, 46–49 µs with one, two nodes on two cores).
pub fn worker_threads_per_node(nodes: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    (cores / nodes.max(1)).max(1)
}

/// Finds the `strata-node` binary (see [`binary`]).
pub fn node_binary() -> Result<PathBuf, SandboxError> {
    binary("strata-node")
}

/// Finds one of the workspace's binaries (`strata-node`, `strata`, `strata-bench`): in
/// `STRATA_BIN_DIR` when set, else next to the running program (`target/<profile>/`,
/// also when the running program is a test in `target/<profile>/deps/`).
pub fn binary(name: &str) -> Result<PathBuf, SandboxError> {
    let dir = match std::env::var_os("STRATA_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe =
                std::env::current_exe().map_err(SandboxError::io("locate the running program"))?;
            let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
            if dir.ends_with("deps") {
                dir.pop();
            }
            dir
        }
    };
    let candidate = dir.join(name);
    if candidate.is_file() {
        Ok(candidate)
    } else {
        Err(SandboxError::NodeBinary(candidate))
    }
}

impl NodeProcess {
    /// The node's log.
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("node.log")
    }

    /// The node's pid file.
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("node.pid")
    }

    /// Base URL of the node's HTTP API.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The node's pid while it runs.
    pub fn pid(&self) -> Option<i32> {
        process::read_pid(&self.pid_file()).filter(|pid| process::alive(*pid))
    }

    /// Writes the config and starts the node (no-op if it runs), then waits until it
    /// answers `/healthz`.
    pub fn start(&self) -> Result<(), SandboxError> {
        if self.pid().is_some() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.dir).map_err(SandboxError::io("create node dir"))?;
        let config_path = self.dir.join("node.toml");
        std::fs::write(&config_path, self.config.to_toml())
            .map_err(SandboxError::io("write node.toml"))?;
        let pid = process::spawn_logged(
            Command::new(&self.binary).arg("--config").arg(&config_path),
            &self.log_file(),
            &self.pid_file(),
            &format!("node {}", self.id),
        )?;
        wait_until(
            &format!("node {} to answer /healthz", self.id),
            Duration::from_secs(60),
            &self.log_file(),
            || {
                if !process::alive(pid) {
                    return true;
                }
                process::http_status(self.port, "/healthz") == Some(200)
            },
        )?;
        if !process::alive(pid) {
            let log = std::fs::read_to_string(self.log_file()).unwrap_or_default();
            // From the last error or panic on (else the last lines), without backtrace
            // frame locations.
            let lines: Vec<&str> = log.lines().collect();
            let from = lines
                .iter()
                .rposition(|l| l.starts_with("Error:") || l.contains("panicked at"))
                .unwrap_or(lines.len().saturating_sub(5));
            let last: Vec<&str> = lines[from..]
                .iter()
                .filter(|l| !l.trim_start().starts_with("at "))
                .take(12)
                .copied()
                .collect();
            return Err(SandboxError::Command {
                what: format!("node {}", self.id),
                status: "exited at start-up".into(),
                output: last.join("\n"),
            });
        }
        Ok(())
    }

    /// Waits until the node answers `/readyz` with 200 (its shards, Redis and search
    /// index are there).
    pub fn wait_ready(&self) -> Result<(), SandboxError> {
        wait_until(
            &format!("{} to be ready", self.id),
            Duration::from_secs(60),
            &self.log_file(),
            || process::http_status(self.port, "/readyz") == Some(200),
        )
    }

    /// Stops the node gracefully (SIGTERM), killing it if it has not exited in 15 s.
    pub fn stop(&self) {
        if let Some(pid) = self.pid() {
            process::stop_pid(pid, libc::SIGTERM, Duration::from_secs(15));
        }
    }

    /// Kills the node with SIGKILL, like a crash.
    pub fn kill(&self) {
        if let Some(pid) = self.pid() {
            process::stop_pid(pid, libc::SIGKILL, Duration::from_secs(5));
        }
    }
}
