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

    /// True when a server could not bind the port chosen for it. Ports are chosen free,
    /// but a server binds its port only once it starts, and anything else on the machine
    /// may take the port in between: starting again on fresh ports is the remedy.
    pub fn port_taken(&self) -> bool {
        self.to_string().contains("Address already in use")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bind_refused_for_a_taken_port_counts_as_port_taken() {
        let node = SandboxError::Command {
            what: "node node-2".into(),
            status: "exited at start-up".into(),
            output: "Error: start the node\nCaused by:\n    0: cannot listen on 127.0.0.1:16277: \
                     Address already in use (os error 98)"
                .into(),
        };
        assert!(node.port_taken());
        let postgres = SandboxError::Command {
            what: "start postgres s0-0".into(),
            status: "exit status: 1".into(),
            output: "LOG:  could not bind IPv4 address \"127.0.0.1\": Address already in use"
                .into(),
        };
        assert!(postgres.port_taken());
        let other = SandboxError::Command {
            what: "node node-1".into(),
            status: "exited at start-up".into(),
            output: "Error: connect to Redis: Connection refused (os error 111)".into(),
        };
        assert!(!other.port_taken());
    }
}
