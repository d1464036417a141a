//! The reaper: a tiny watchdog process that outlives its parent. When the parent (a
//! test binary, whatever way it ends: pass, fail, panic, abort or SIGKILL) is gone, it
//! stops every process of the cluster found through the pid files under the data
//! directory, then removes the directory. A test binary's shared cluster lives in a
//! `static`, whose destructor never runs; this is what cleans it up.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::error::SandboxError;

/// The watchdog, as POSIX shell so it needs nothing that may not be built yet.
const SCRIPT: &str = r#"
parent="$1"; dir="$2"; remove="$3"
while kill -0 "$parent" 2>/dev/null; do sleep 0.2; done
pids() {
  for f in "$dir"/kernel-balancer/controller.pid "$dir"/nodes/*/node.pid "$dir"/haproxy/haproxy.pid "$dir"/redis/*/redis.pid "$dir"/pg/*/data/postmaster.pid "$dir"/monitoring/*.pid; do
    [ -f "$f" ] && head -n 1 "$f"
  done
}
for p in $(pids); do
  pkill -CONT -P "$p" 2>/dev/null; kill -CONT "$p" 2>/dev/null
  kill -TERM "$p" 2>/dev/null
done
i=0
while [ $i -lt 50 ]; do
  left=0
  for p in $(pids); do kill -0 "$p" 2>/dev/null && left=1; done
  [ $left -eq 0 ] && break
  sleep 0.2; i=$((i+1))
done
for p in $(pids); do
  pkill -KILL -P "$p" 2>/dev/null; kill -KILL "$p" 2>/dev/null
done
[ -f "$dir"/kernel-balancer/table ] && nft delete table ip "$(cat "$dir"/kernel-balancer/table)" 2>/dev/null
[ "$remove" = "remove" ] && rm -rf "$dir"
exit 0
"#;

/// Starts a watchdog for the current process over the cluster in `data_dir`. With
/// `remove`, the directory is deleted once everything is stopped.
pub fn watch_current_process(data_dir: &Path, remove: bool) -> Result<(), SandboxError> {
    Command::new("sh")
        .arg("-c")
        .arg(SCRIPT)
        .arg("strata-reaper")
        .arg(std::process::id().to_string())
        .arg(data_dir)
        .arg(if remove { "remove" } else { "keep" })
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(SandboxError::io("start the reaper"))?;
    Ok(())
}
