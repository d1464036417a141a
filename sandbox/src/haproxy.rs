//! The load balancer in front of the nodes: HAProxy, round-robin, sending traffic only to
//! nodes whose `/readyz` answers 200. Nodes are added and taken out while it runs through
//! its runtime API (an admin socket in its directory), without a restart or reload.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::error::SandboxError;
use crate::process::{self, run};
use crate::tools::Tools;

/// The HAProxy backend the nodes are servers of.
const BACKEND: &str = "nodes";

/// The name of node `index`'s (0-based) health-checked entry; the node ids of the local
/// cluster are the same (`node-1`, ...).
fn node_server_name(index: usize) -> String {
    format!("node-{}", index + 1)
}

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

    fn config_file(&self) -> PathBuf {
        self.dir.join("haproxy.cfg")
    }

    /// HAProxy's runtime API socket.
    fn admin_socket(&self) -> PathBuf {
        self.dir.join("admin.sock")
    }

    /// The two `server` entries of one node (see [`Self::config_text`]), as written in
    /// the config file and as given to the runtime API's `add server`, which does not
    /// apply `default-server`: so every setting is spelled out here.
    fn server_entries(index: usize, port: u16) -> [(String, String); 2] {
        let name = node_server_name(index);
        [
            (
                name.clone(),
                format!("127.0.0.1:{port} check inter 1s fall 2 rise 1"),
            ),
            (
                format!("{name}-fail-open"),
                format!("127.0.0.1:{port} backup"),
            ),
        ]
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
        let entries: Vec<[(String, String); 2]> = self
            .node_ports
            .iter()
            .enumerate()
            .map(|(i, &port)| Self::server_entries(i, port))
            .collect();
        let checked = entries.iter().map(|[checked, _]| checked);
        let fail_open = entries.iter().map(|[_, fail_open]| fail_open);
        let servers: String = checked
            .chain(fail_open)
            .map(|(name, args)| format!("    server {name} {args}\n"))
            .collect();
        format!(
            "# Written by the Strata sandbox.\n\
             global\n    maxconn 4096\n    nbthread 1\n    stats socket {socket} mode 600 level admin\n\n\
             defaults\n    mode http\n    timeout connect 2s\n    timeout client 60s\n    timeout server 60s\n\
             \x20   option forwardfor\n    retries 2\n    option redispatch\n\
             \x20   retry-on conn-failure empty-response response-timeout\n\n\
             frontend strata\n    bind 127.0.0.1:{port}\n    http-request deny deny_status 404 if {{ path /metrics }} || {{ path_beg /metrics/ }}\n    http-request disable-l7-retry if !METH_GET\n    default_backend {backend}\n\n\
             backend {backend}\n    balance roundrobin\n    option httpchk GET /readyz\n\
             \x20   http-check expect status 200\n    option allbackups\n{servers}",
            port = self.port,
            socket = self.admin_socket().display(),
            backend = BACKEND,
        )
    }

    /// Writes the config, checks it with `haproxy -c`, and starts HAProxy in the
    /// background (no-op if it runs).
    pub fn start(&self) -> Result<(), SandboxError> {
        if self.pid().is_some() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.dir).map_err(SandboxError::io("create haproxy dir"))?;
        self.write_config()?;
        let cfg = self.config_file();
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

    /// Rewrites the config file for the current node list, so a restart starts with the
    /// nodes the runtime API added or removed.
    fn write_config(&self) -> Result<(), SandboxError> {
        std::fs::write(self.config_file(), self.config_text())
            .map_err(SandboxError::io("write haproxy.cfg"))
    }

    /// Sends one command to HAProxy's runtime API and returns its answer.
    pub fn admin(&self, command: &str) -> Result<String, SandboxError> {
        let what = format!("HAProxy runtime API `{command}`");
        let socket = self.admin_socket();
        let mut stream = UnixStream::connect(&socket).map_err(SandboxError::io(format!(
            "connect to {} (a load balancer started before it had a runtime API needs a restart: `strata dev down`, then `up`)",
            socket.display()
        )))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .and_then(|()| stream.write_all(format!("{command}\n").as_bytes()))
            .map_err(SandboxError::io(what.clone()))?;
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .map_err(SandboxError::io(what))?;
        Ok(answer.trim().to_owned())
    }

    /// Runs a runtime API command whose success answer is empty, or contains
    /// `expected` when given.
    fn admin_expect(&self, command: &str, expected: Option<&str>) -> Result<(), SandboxError> {
        let answer = self.admin(command)?;
        if answer.is_empty() || expected.is_some_and(|e| answer.contains(e)) {
            Ok(())
        } else {
            Err(SandboxError::Command {
                what: format!("HAProxy runtime API `{command}`"),
                status: "refused".into(),
                output: answer,
            })
        }
    }

    /// The node ports HAProxy gives new requests to right now: the health-checked
    /// entries that are up and neither drained nor in maintenance; when there is none,
    /// the fail-open entries not in maintenance (HAProxy's `allbackups`). Read from the
    /// runtime API, so whoever follows it (the kernel balancer) sees exactly HAProxy's
    /// view of the nodes.
    pub fn serving_node_ports(&self) -> Result<Vec<u16>, SandboxError> {
        let state = self.admin(&format!("show servers state {BACKEND}"))?;
        serving_ports(&state).ok_or_else(|| SandboxError::Command {
            what: format!("HAProxy runtime API `show servers state {BACKEND}`"),
            status: "unreadable answer".into(),
            output: state,
        })
    }

    /// Puts a running node behind the load balancer: both its entries, enabled and
    /// health-checked, and the config file rewritten to match. The node must be ready:
    /// a new server takes traffic before its first check.
    pub fn add_node(&mut self, port: u16) -> Result<(), SandboxError> {
        let index = self.node_ports.len();
        for (name, args) in Self::server_entries(index, port) {
            self.admin_expect(
                &format!("add server {BACKEND}/{name} {args}"),
                Some("New server registered"),
            )?;
            if args.contains(" check") {
                self.admin_expect(&format!("enable health {BACKEND}/{name}"), None)?;
            }
            self.admin_expect(&format!("enable server {BACKEND}/{name}"), None)?;
        }
        self.node_ports.push(port);
        self.write_config()
    }

    /// First half of taking the last node out: it gets no new requests (its checked
    /// entry drains, which keeps its health checks, so the node's own drain sees them;
    /// its fail-open entry goes to maintenance). Requests in flight finish. Then stop
    /// the node, and call [`Self::forget_last_node`].
    pub fn drain_last_node(&self) -> Result<(), SandboxError> {
        let index = self.last_node_index()?;
        let [(checked, _), (fail_open, _)] = Self::server_entries(index, 0);
        self.admin_expect(
            &format!("set server {BACKEND}/{fail_open} state maint"),
            None,
        )?;
        self.admin_expect(&format!("set server {BACKEND}/{checked} state drain"), None)
    }

    /// Second half: deletes the stopped last node's entries and rewrites the config
    /// file. HAProxy deletes a server only once its last connection is closed, so this
    /// retries for a few seconds.
    pub fn forget_last_node(&mut self) -> Result<(), SandboxError> {
        let index = self.last_node_index()?;
        for (name, _) in Self::server_entries(index, 0) {
            self.admin_expect(&format!("set server {BACKEND}/{name} state maint"), None)?;
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match self.admin_expect(
                    &format!("del server {BACKEND}/{name}"),
                    Some("Server deleted"),
                ) {
                    Ok(()) => break,
                    Err(e) if Instant::now() > deadline => return Err(e),
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        }
        self.node_ports.pop();
        self.write_config()
    }

    fn last_node_index(&self) -> Result<usize, SandboxError> {
        self.node_ports
            .len()
            .checked_sub(1)
            .ok_or_else(|| SandboxError::Config("the load balancer has no node to take out".into()))
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

/// `srv_op_state` of a server that is up.
const SERVER_RUNNING: u32 = 2;

/// The node ports of [`LoadBalancer::serving_node_ports`], from the text of `show
/// servers state` (a version line, a `#` header naming the columns, a line per server).
/// `None` when the header or a server line is not what HAProxy writes.
fn serving_ports(state: &str) -> Option<Vec<u16>> {
    let mut lines = state.lines().map(str::trim).filter(|l| !l.is_empty());
    let header = lines.find(|l| l.starts_with('#'))?;
    let columns: Vec<&str> = header.trim_start_matches('#').split_whitespace().collect();
    let column = |name: &str| columns.iter().position(|c| *c == name);
    let (name, op, admin, weight, port) = (
        column("srv_name")?,
        column("srv_op_state")?,
        column("srv_admin_state")?,
        column("srv_uweight")?,
        column("srv_port")?,
    );
    let mut checked = Vec::new();
    let mut fail_open = Vec::new();
    for line in lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let number = |i: usize| fields.get(i)?.parse::<u32>().ok();
        let takes_requests = number(admin)? == 0 && number(weight)? > 0;
        let server_port = u16::try_from(number(port)?).ok()?;
        if fields.get(name)?.ends_with("-fail-open") {
            if takes_requests {
                fail_open.push(server_port);
            }
        } else if takes_requests && number(op)? == SERVER_RUNNING {
            checked.push(server_port);
        }
    }
    Some(if checked.is_empty() {
        fail_open
    } else {
        checked
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n";

    fn server(name: &str, op: u32, admin: u32, port: u16) -> String {
        format!(
            "3 nodes 1 {name} 127.0.0.1 {op} {admin} 1 1 132 15 3 2 6 0 0 0 - {port} - 0 0 - - 0\n"
        )
    }

    fn state(servers: &[String]) -> String {
        format!("{HEADER}{}", servers.concat())
    }

    #[test]
    fn the_checked_nodes_that_are_up_serve() {
        let text = state(&[
            server("node-1", 2, 0, 8101),
            server("node-2", 0, 0, 8102),
            server("node-1-fail-open", 2, 0, 8101),
            server("node-2-fail-open", 2, 0, 8102),
        ]);
        assert_eq!(serving_ports(&text), Some(vec![8101]));
    }

    #[test]
    fn a_drained_node_gets_no_new_requests() {
        let drained = 0x08;
        let text = state(&[
            server("node-1", 2, 0, 8101),
            server("node-2", 2, drained, 8102),
            server("node-2-fail-open", 2, 0x01, 8102),
        ]);
        assert_eq!(serving_ports(&text), Some(vec![8101]));
    }

    #[test]
    fn with_no_node_up_every_node_not_in_maintenance_serves() {
        let text = state(&[
            server("node-1", 0, 0, 8101),
            server("node-2", 0, 0, 8102),
            server("node-3", 0, 0, 8103),
            server("node-1-fail-open", 2, 0, 8101),
            server("node-2-fail-open", 2, 0, 8102),
            server("node-3-fail-open", 2, 0x01, 8103),
        ]);
        assert_eq!(serving_ports(&text), Some(vec![8101, 8102]));
    }

    #[test]
    fn an_answer_that_is_not_a_server_state_is_refused() {
        assert_eq!(serving_ports("Unknown command"), None);
        assert_eq!(serving_ports(&format!("{HEADER}3 nodes 1 node-1\n")), None);
    }
}
