//! The external programs a local cluster runs, found once, with a clear message naming
//! the Debian package when one is missing.

use std::path::{Path, PathBuf};

use crate::error::SandboxError;

/// Where PostgreSQL server binaries live when nothing else says (Debian's layout).
const DEFAULT_PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// Paths of every program the sandbox starts.
#[derive(Debug, Clone)]
pub struct Tools {
    /// Directory with initdb, pg_ctl, pg_basebackup, postgres, psql.
    pub pg_bin: PathBuf,
    pub redis_server: PathBuf,
    pub redis_cli: PathBuf,
    pub haproxy: PathBuf,
}

impl Tools {
    /// Finds every tool: `STRATA_PG_BIN` or Debian's PostgreSQL 15 directory for Postgres,
    /// `PATH` for the rest.
    pub fn discover() -> Result<Self, SandboxError> {
        let pg_bin = std::env::var_os("STRATA_PG_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PG_BIN));
        for tool in ["initdb", "pg_ctl", "pg_basebackup", "postgres"] {
            if !pg_bin.join(tool).is_file() {
                return Err(SandboxError::MissingTool {
                    tool: pg_bin.join(tool).display().to_string(),
                    package: "postgresql-15",
                });
            }
        }
        Ok(Self {
            pg_bin,
            redis_server: on_path("redis-server", "redis-server")?,
            redis_cli: on_path("redis-cli", "redis-tools")?,
            haproxy: on_path("haproxy", "haproxy")?,
        })
    }

    /// A PostgreSQL program by name. `psql` comes from the client package, which is on
    /// PATH even where the server directory lacks it.
    pub fn pg(&self, program: &str) -> PathBuf {
        let inside = self.pg_bin.join(program);
        if inside.is_file() {
            inside
        } else {
            PathBuf::from(program)
        }
    }
}

pub(crate) fn on_path(program: &str, package: &'static str) -> Result<PathBuf, SandboxError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| SandboxError::MissingTool {
            tool: program.into(),
            package,
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
