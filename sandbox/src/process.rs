//! Running, signalling and waiting for processes: the plumbing under every service the
//! sandbox starts.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::SandboxError;

/// True when running as root, where Postgres must be run as the `postgres` user.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A command for a Postgres program, run as `postgres` when we are root.
pub fn postgres_command(program: &Path) -> Command {
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

/// Makes a directory owned by the user that runs Postgres.
pub fn make_postgres_dir(dir: &Path) -> Result<(), SandboxError> {
    std::fs::create_dir_all(dir).map_err(SandboxError::io(format!("create {}", dir.display())))?;
    if is_root() {
        run(
            Command::new("chown").args(["postgres:postgres"]).arg(dir),
            "chown to postgres",
        )?;
    }
    Ok(())
}

/// Runs a command to completion; a non-zero exit is an error carrying its output.
pub fn run(cmd: &mut Command, what: &str) -> Result<String, SandboxError> {
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(SandboxError::io(format!("start {what}")))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        Ok(text)
    } else {
        Err(SandboxError::Command {
            what: what.into(),
            status: output.status.to_string(),
            output: last_lines(&text, 15),
        })
    }
}

/// The last `count` lines of `text`: the part of a failed command's output or a log that
/// says why.
pub fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.trim().lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

/// Polls `ready` every 100 ms until it holds or `timeout` passes.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    logs: &Path,
    mut ready: impl FnMut() -> bool,
) -> Result<(), SandboxError> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(SandboxError::Timeout {
        what: what.into(),
        waited: timeout,
        logs: logs.display().to_string(),
    })
}

/// Every port [`free_ports`] has handed out in this process. A port is chosen well before
/// its server binds it (a cluster's node ports wait out Postgres' and Redis' start-up), so
/// a later call must not take it again just because nothing listens on it yet.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// Free loopback TCP ports, distinct from each other and from every port handed out
/// before in this process. All are held open until every one is chosen, so the kernel
/// cannot hand the same port out twice.
pub fn free_ports(count: usize) -> Result<Vec<u16>, SandboxError> {
    let seed = std::process::id()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    free_ports_from(seed, count)
}

/// [`free_ports`], scanning from the port `seed` picks (a random one, so processes
/// started together rarely look in the same place).
fn free_ports_from(seed: u32, count: usize) -> Result<Vec<u16>, SandboxError> {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    // Below the kernel's ephemeral range: a port there that is free now stays free, while
    // one inside it can be taken a moment later by any outgoing connection, and a server
    // restarted on it (a replica brought back, a shard added under load) could not bind.
    let (low, high) = (10_000u16, ephemeral_floor().max(12_000));
    let span = u32::from(high - low);
    let start = seed % span;
    let mut listeners = Vec::with_capacity(count);
    for step in 0..span {
        if listeners.len() == count {
            break;
        }
        let port = low + ((start + step) % span) as u16;
        if handed_out.contains(&port) {
            continue;
        }
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            listeners.push(listener);
        }
    }
    if listeners.len() < count {
        return Err(SandboxError::Config(format!(
            "no {count} free loopback ports between {low} and {high}"
        )));
    }
    let ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()
        .map_err(SandboxError::io("read reserved ports"))?;
    handed_out.extend(&ports);
    Ok(ports)
}

/// The lowest port the kernel hands to outgoing connections (32768 unless configured).
fn ephemeral_floor() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// True when something accepts TCP connections on the loopback port.
pub fn port_open(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// The status code of `GET path` on a loopback port, or None when nothing answers. A
/// deliberately tiny HTTP/1.0 client: the sandbox must work from inside async tests,
/// where blocking HTTP clients that start their own runtime cannot be used.
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Sends a signal to a process. Returns false when it does not exist.
pub fn signal(pid: i32, sig: libc::c_int) -> bool {
    // SAFETY: kill has no memory-safety preconditions; a stale pid just fails with ESRCH.
    pid > 0 && unsafe { libc::kill(pid, sig) } == 0
}

/// True while the process exists (a zombie counts as gone).
pub fn alive(pid: i32) -> bool {
    if !signal(pid, 0) {
        return false;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let zombie = after_name(&stat).is_some_and(|rest| rest.trim_start().starts_with('Z'));
    // A killed process's main thread can turn zombie before its other threads have
    // exited (and let go of its files and locks): it is gone once only that one is left.
    !zombie
        || std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|tasks| tasks.count() > 1)
            .unwrap_or(false)
}

/// The CPU time (user + system) the kernel has charged `pid`, in clock ticks; None when
/// it is gone.
pub fn cpu_ticks(pid: i32) -> Option<u64> {
    stat_cpu_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// What a family of processes (`pids` and their children) has used, from one pass over
/// /proc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FamilyUsage {
    /// CPU time in clock ticks: the processes' own, their reaped children's (which the
    /// kernel adds to a parent when it waits for them), and their live children's. For
    /// postmasters that is the whole of their servers, backends that came and went
    /// included.
    pub cpu_ticks: u64,
    /// Context switches of the processes and of their live children ([`context_switches`];
    /// a child that exited takes its count with it).
    pub context_switches: u64,
}

/// The usage of `pids` and of their children; None when one of `pids` is gone.
pub fn family_usage(pids: &[i32]) -> Option<FamilyUsage> {
    let reaped = pids
        .iter()
        .map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            stat_fields(&stat, &[14, 15, 16, 17])
        })
        .sum::<Option<u64>>()?;
    let own_switches = pids
        .iter()
        .map(|&pid| context_switches(pid))
        .sum::<Option<u64>>()?;
    let children = children_of(pids);
    let live: u64 = children
        .iter()
        .filter_map(|(_, stat)| stat_cpu_ticks(stat))
        .sum();
    let children_switches: u64 = children
        .iter()
        .filter_map(|&(child, _)| context_switches(child))
        .sum();
    Some(FamilyUsage {
        cpu_ticks: reaped + live,
        context_switches: own_switches + children_switches,
    })
}

/// How often every thread of `pid` left the CPU, voluntarily (to sleep until woken)
/// or not (preempted), from `/proc/<pid>/task/*/status`. A process that serves each
/// request by waking peers and being woken pays for each switch; comparing the counts
/// per request of two layouts shows whether one wakes more. None when it is gone.
pub fn context_switches(pid: i32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    Some(
        tasks
            .flatten()
            .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
            .map(|status| status_switches(&status))
            .sum(),
    )
}

/// `voluntary_ctxt_switches` + `nonvoluntary_ctxt_switches` of a `/proc/.../status`.
fn status_switches(status: &str) -> u64 {
    status
        .lines()
        .filter_map(|line| {
            line.strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
        })
        .filter_map(|count| count.trim().parse::<u64>().ok())
        .sum()
}

/// utime + stime of a `/proc/<pid>/stat` line.
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    stat_fields(stat, &[14, 15])
}

/// The sum of the numbered fields of a `/proc/<pid>/stat` line (1-based, as in proc(5):
/// utime 14, stime 15, cutime 16, cstime 17).
fn stat_fields(stat: &str, numbers: &[usize]) -> Option<u64> {
    let fields: Vec<&str> = after_name(stat)?.split_whitespace().collect();
    // After the name, the first field is number 3 (state).
    numbers
        .iter()
        .map(|n| fields.get(n - 3)?.parse::<u64>().ok())
        .sum()
}

/// A `/proc/<pid>/stat` line after the command name (field 2), which may itself hold
/// spaces and parentheses: everything after its last `)`.
fn after_name(stat: &str) -> Option<&str> {
    Some(&stat[stat.rfind(')')? + 1..])
}

/// A process and all its direct children (Postgres backends and helpers are children of
/// the postmaster), read from /proc.
pub fn with_children(pid: i32) -> Vec<i32> {
    let mut all = vec![pid];
    all.extend(children_of(&[pid]).into_iter().map(|(child, _)| child));
    all
}

/// Every live process whose parent is one of `parents`, with its `/proc/<pid>/stat`
/// line, from one pass over /proc.
fn children_of(parents: &[i32]) -> Vec<(i32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let child = entry.file_name().to_str()?.parse::<i32>().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let ppid = i32::try_from(stat_fields(&stat, &[4])?).ok()?;
            parents.contains(&ppid).then_some((child, stat))
        })
        .collect()
}

/// Starts `command` in a process group of its own, its output appended to `log`, its
/// pid written to `pid_file`, and returns the pid without waiting for it (whoever
/// outlives it reaps it).
pub fn spawn_logged(
    command: &mut Command,
    log: &Path,
    pid_file: &Path,
    what: &str,
) -> Result<i32, SandboxError> {
    use std::os::unix::process::CommandExt;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(SandboxError::io(format!("open {}", log.display())))?;
    let err = out
        .try_clone()
        .map_err(SandboxError::io(format!("open {}", log.display())))?;
    let child = command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(SandboxError::io(format!("start {what}")))?;
    let pid = child.id() as i32;
    std::fs::write(pid_file, format!("{pid}\n"))
        .map_err(SandboxError::io(format!("write the pid of {what}")))?;
    Ok(pid)
}

/// Reads a pid file (first line), if present and well-formed.
pub fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Asks a process to stop with `sig`, then kills it if it is still there after `grace`.
pub fn stop_pid(pid: i32, sig: libc::c_int, grace: Duration) {
    if !signal(pid, sig) {
        return;
    }
    let start = Instant::now();
    while alive(pid) && start.elapsed() < grace {
        std::thread::sleep(Duration::from_millis(50));
    }
    if alive(pid) {
        signal(pid, libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_never_hands_out_a_port_twice_even_once_it_is_free_again() {
        // Both calls scan from the same place, and nothing listens on `first` when the
        // second looks: only the record of what was handed out keeps it off them.
        let first = free_ports_from(4_242, 40).unwrap();
        let second = free_ports_from(4_242, 40).unwrap();
        let all: BTreeSet<u16> = first.iter().chain(&second).copied().collect();
        assert_eq!(all.len(), 80, "{first:?} and {second:?} overlap");
        assert!(
            first
                .iter()
                .all(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
        );
    }

    #[test]
    fn a_process_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let stat = "4242 (odd (name) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 123 45 0 0 20 0 1 0 99 1000 10";
        assert_eq!(stat_cpu_ticks(stat), Some(123 + 45));
        assert_eq!(
            stat_fields(stat, &[14, 15, 16, 17]),
            Some(123 + 45),
            "no reaped children"
        );
        let reaped =
            "7 (postgres) S 1 7 7 0 -1 4194560 100 0 0 0 10 20 300 400 20 0 1 0 99 1000 10";
        assert_eq!(
            stat_fields(reaped, &[14, 15, 16, 17]),
            Some(10 + 20 + 300 + 400)
        );
        assert_eq!(stat_fields("7 (short) S 1", &[14]), None);
    }

    #[test]
    fn context_switches_add_both_kinds_over_every_thread() {
        let status = "Name:\tx\nvoluntary_ctxt_switches:\t120\nnonvoluntary_ctxt_switches:\t7\n";
        assert_eq!(status_switches(status), 127);
        assert_eq!(status_switches("Name:\tx\n"), 0);
        let me = std::process::id() as i32;
        let before = context_switches(me).unwrap();
        // A sleep is a voluntary switch of this thread.
        std::thread::sleep(Duration::from_millis(2));
        let after = context_switches(me).unwrap();
        assert!(after > before);
        // Read later, and with any children: never fewer.
        assert!(family_usage(&[me]).unwrap().context_switches >= after);
        assert_eq!(context_switches(i32::MAX), None);
    }

    #[test]
    fn a_family_counts_the_cpu_of_a_child_that_has_exited() {
        let me = std::process::id() as i32;
        let reaped = || {
            stat_fields(
                &std::fs::read_to_string("/proc/self/stat").unwrap(),
                &[16, 17],
            )
        };
        let family_ticks = || family_usage(&[me]).unwrap().cpu_ticks;
        let (before, reaped_before) = (family_ticks(), reaped().unwrap());
        // A child that burns CPU until the kernel charges it a tick, then is reaped.
        let status = std::process::Command::new("sh")
            .args([
                "-c",
                "while [ $(cut -d' ' -f14 /proc/$$/stat) -lt 2 ]; do :; done",
            ])
            .status()
            .unwrap();
        assert!(status.success());
        assert!(reaped().unwrap() >= reaped_before + 2);
        assert!(family_ticks() >= before + 2);
    }
}
