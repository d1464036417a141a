//! What can go wrong while starting or stopping a local cluster.

use std::path::PathBuf;
use std::time::Duration;

/// A failure of the sandbox, phrased for the operator who has to fix it.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "{tool} is not installed: run `scripts/install-deps.sh` (or `apt-get install -y {package}`)"
    )]
    MissingTool { tool: String, package: &'static str },
    #[error("{0} was not found: build the binaries first with `cargo build --bins`")]
    NodeBinary(PathBuf),
    #[error("{what} failed ({status}): {output}")]
    Command {
        what: String,
        status: String,
        output: String,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{what} did not happen within {}s; see the logs under {logs}", waited.as_secs())]
    Timeout {
        what: String,
        waited: Duration,
        logs: String,
    },
    #[error("migrations: {0}")]
    Migrations(String),
    #[error("{0}")]
    Config(String),
}

impl SandboxError {
    /// Wraps an I/O error with what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}
