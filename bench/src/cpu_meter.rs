//! Where a load's CPU goes on this machine: the whole machine's busy time (from
//! `/proc/stat`) and that of some processes (from `/proc/<pid>/stat`), read before and
//! after each turn of a load. On a machine the load saturates, the rate a path reaches
//! is the machine's cores divided by what one request costs them all, so the CPU per
//! request says why one path is slower than another: `data-paths` uses it to show what
//! the load balancer's hop costs next to the rest of a request, and what a node and
//! its Postgres servers each spend per request with 2 shards and with 16 (the routing
//! cost, apart from Postgres'). Two more readings explain a CPU figure: the
//! hypervisor's steal (time the machine's cores were taken away, which slows every
//! side of a turn without showing in any process) and the metered processes' context
//! switches (a layout whose requests wake more sleeping peers pays for each wake).

use std::path::Path;

use strata_sandbox::{Cluster, process};

/// Busy CPU seconds, machine-wide and of the metered processes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTimes {
    /// Every core's time not idle (user, nice, system, interrupts, steal).
    pub machine_secs: f64,
    /// The metered processes' user and system time.
    pub process_secs: f64,
    /// Time the hypervisor ran something else on this machine's cores (`steal`).
    pub steal_secs: f64,
    /// Context switches of the metered processes' threads (of live children too, for a
    /// family).
    pub process_switches: u64,
}

impl std::ops::Sub for CpuTimes {
    type Output = CpuTimes;
    fn sub(self, earlier: CpuTimes) -> CpuTimes {
        CpuTimes {
            machine_secs: self.machine_secs - earlier.machine_secs,
            process_secs: self.process_secs - earlier.process_secs,
            steal_secs: self.steal_secs - earlier.steal_secs,
            // A child that exited takes its count with it: never below zero.
            process_switches: self
                .process_switches
                .saturating_sub(earlier.process_switches),
        }
    }
}

impl std::ops::AddAssign for CpuTimes {
    fn add_assign(&mut self, other: CpuTimes) {
        self.machine_secs += other.machine_secs;
        self.process_secs += other.process_secs;
        self.steal_secs += other.steal_secs;
        self.process_switches += other.process_switches;
    }
}

/// Reads the CPU times of this machine and of the metered processes.
pub struct CpuMeter {
    pids: Vec<i32>,
    /// Count each process's children too (live and exited): a postmaster's backends.
    with_children: bool,
    ticks_per_sec: f64,
}

impl CpuMeter {
    /// The meter of process `pid`, or None when `/proc` cannot be read (not Linux, or
    /// no such process).
    pub fn of_process(pid: i32) -> Option<Self> {
        Self::new(vec![pid], false)
    }

    /// The meter of every Postgres server of `cluster`, each with all its backends and
    /// helpers, or None when one is not running.
    pub fn of_postgres(cluster: &Cluster) -> Option<Self> {
        let postmasters = cluster
            .servers() // a server several shards share counted once
            .map(|pg| pg.postmaster_pid())
            .collect::<Option<Vec<i32>>>()?;
        Self::new(postmasters, true)
    }

    fn new(pids: Vec<i32>, with_children: bool) -> Option<Self> {
        // SAFETY: sysconf only reads a system constant.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let meter = Self {
            pids,
            with_children,
            ticks_per_sec: if ticks > 0 { ticks as f64 } else { 100.0 },
        };
        meter.read().map(|_| meter)
    }

    /// The meter of the load balancer of the local cluster in `data_dir`, or None when
    /// it has none running.
    pub fn of_balancer(data_dir: &Path) -> Option<Self> {
        let cluster = Cluster::open(data_dir).ok()?;
        Self::of_process(cluster.load_balancer.as_ref()?.pid()?)
    }

    /// The times now (None when `/proc` no longer has them: the process stopped).
    pub fn read(&self) -> Option<CpuTimes> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let machine = MachineTicks::parse(&stat)?;
        let (ticks, switches) = self.process_usage()?;
        Some(CpuTimes {
            machine_secs: machine.busy as f64 / self.ticks_per_sec,
            process_secs: ticks as f64 / self.ticks_per_sec,
            steal_secs: machine.steal as f64 / self.ticks_per_sec,
            process_switches: switches,
        })
    }

    /// The metered processes' CPU ticks and context switches (None when one is gone);
    /// a family's from one pass over /proc.
    fn process_usage(&self) -> Option<(u64, u64)> {
        if self.with_children {
            let family = process::family_usage(&self.pids)?;
            Some((family.cpu_ticks, family.context_switches))
        } else {
            let ticks = self
                .pids
                .iter()
                .map(|&pid| process::cpu_ticks(pid))
                .sum::<Option<u64>>()?;
            let switches = self
                .pids
                .iter()
                .map(|&pid| process::context_switches(pid))
                .sum::<Option<u64>>()?;
            Some((ticks, switches))
        }
    }

    /// Runs `work` and returns its output and what the machine and the process spent
    /// meanwhile (zero when the times cannot be read).
    pub async fn measure<T, F: std::future::Future<Output = T>>(&self, work: F) -> (T, CpuTimes) {
        let start = self.read();
        let output = work.await;
        (output, self.since(start))
    }

    /// What was spent since the reading `start` (zero when either reading failed).
    fn since(&self, start: Option<CpuTimes>) -> CpuTimes {
        match (start, self.read()) {
            (Some(start), Some(end)) => end - start,
            _ => CpuTimes::default(),
        }
    }
}

/// What `meter` reads over `load` (zero without a meter).
pub async fn metered<F: std::future::Future<Output = ()>>(
    meter: Option<&CpuMeter>,
    load: F,
) -> CpuTimes {
    metered_output(meter, load).await.1
}

/// What `load` returned, and what `meter` read over it (zero without a meter).
pub async fn metered_output<T, F: std::future::Future<Output = T>>(
    meter: Option<&CpuMeter>,
    load: F,
) -> (T, CpuTimes) {
    match meter {
        Some(meter) => meter.measure(load).await,
        None => (load.await, CpuTimes::default()),
    }
}

/// What two meters read over the same `load` (zero for a missing one or a failed read).
pub async fn metered_pair<F: std::future::Future<Output = ()>>(
    (a, b): (Option<&CpuMeter>, Option<&CpuMeter>),
    load: F,
) -> (CpuTimes, CpuTimes) {
    let start = (a.and_then(CpuMeter::read), b.and_then(CpuMeter::read));
    load.await;
    let spent =
        |meter: Option<&CpuMeter>, start| meter.map_or_else(CpuTimes::default, |m| m.since(start));
    (spent(a, start.0), spent(b, start.1))
}

/// Microseconds of `secs` per request, over `requests` (at least one).
pub fn micros_per_request(secs: f64, requests: u64) -> f64 {
    secs * 1e6 / requests.max(1) as f64
}

/// A figure in microseconds, for a ratio's sides.
pub fn micros(value: f64) -> String {
    format!("{value:.1} µs")
}

/// Per request of a load: `count` over `requests` (at least one).
pub fn per_request(count: u64, requests: u64) -> f64 {
    count as f64 / requests.max(1) as f64
}

/// The machine-wide ticks of `/proc/stat`'s first line (`cpu  user nice system idle
/// iowait irq softirq steal ...`).
struct MachineTicks {
    /// Everything but idle and iowait. (Guest time is already counted in user.)
    busy: u64,
    /// Taken by the hypervisor.
    steal: u64,
}

impl MachineTicks {
    fn parse(stat: &str) -> Option<Self> {
        let line = stat.lines().next()?.strip_prefix("cpu ")?;
        let fields: Vec<u64> = line
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        let field = |i: usize| fields.get(i).copied().unwrap_or(0);
        Some(Self {
            busy: field(0) + field(1) + field(2) + field(5) + field(6) + field(7),
            steal: field(7),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machine_is_busy_for_all_but_idle_and_iowait() {
        let stat = "cpu  100 5 50 1000 40 3 2 7 0 0\ncpu0 50 2 25 500 20 1 1 3 0 0\n";
        let ticks = MachineTicks::parse(stat).unwrap();
        assert_eq!(ticks.busy, 100 + 5 + 50 + 3 + 2 + 7);
        assert_eq!(ticks.steal, 7);
        assert!(MachineTicks::parse("intr 1 2 3\n").is_none());
    }

    #[tokio::test]
    async fn this_process_is_metered_while_it_works() {
        let meter = CpuMeter::of_process(std::process::id() as i32).unwrap();
        let spent = meter
            .measure(async {
                // Busy until the kernel has charged this process 20 clock ticks
                // (however loaded the machine), with a cap so a broken reading ends.
                // Fewer would be within the sampling error of /proc/stat's
                // machine-wide count, which takes a tick from whatever runs at it.
                let ticks = || process::cpu_ticks(std::process::id() as i32).unwrap();
                let start = ticks();
                let mut x = 0u64;
                for _ in 0..100_000 {
                    for _ in 0..100_000 {
                        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    }
                    std::hint::black_box(x);
                    if ticks() >= start + 20 {
                        break;
                    }
                }
            })
            .await
            .1;
        assert!(spent.process_secs > 0.0, "{spent:?}");
        assert!(spent.machine_secs >= spent.process_secs * 0.5, "{spent:?}");
        assert!(CpuMeter::of_process(i32::MAX).is_none());
    }
}
