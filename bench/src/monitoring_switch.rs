//! What monitoring costs the machine, measured in the same run: Prometheus and the
//! exporters of a monitored local cluster are paused (SIGSTOP) for the turns measured
//! "without" and resumed (SIGCONT) for the turns "with". Paused, they use no CPU and
//! nothing scrapes the nodes, which is what running without them costs the nodes.

use std::path::Path;

use strata_sandbox::Cluster;

/// The monitoring processes of one local cluster.
pub struct MonitoringSwitch {
    pids: Vec<i32>,
}

impl MonitoringSwitch {
    /// The running monitoring processes of the cluster in `data_dir`, or None when it has
    /// none (started with `--no-monitoring`, or not a local cluster).
    pub fn of_cluster(data_dir: &Path) -> Option<Self> {
        let cluster = Cluster::open(data_dir).ok()?;
        let pids = cluster.monitoring.as_ref()?.pids();
        (!pids.is_empty()).then_some(Self { pids })
    }

    /// Stops every monitoring process where it stands.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets them run again.
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: libc::c_int) {
        for &pid in &self.pids {
            strata_sandbox::process::signal(pid, signal);
        }
    }
}

impl Drop for MonitoringSwitch {
    /// A bench that stops half-way never leaves the cluster's monitoring frozen.
    fn drop(&mut self) {
        self.resume();
    }
}
