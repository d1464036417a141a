//! The node's configuration: one typed struct, read from a TOML file and overridden by
//! `STRATA_NODE_*` environment variables (nested keys joined by `__`, e.g.
//! `STRATA_NODE_ROUTER__MAX_REPLICA_LAG_MS=500`). Unknown keys are refused. Every default
//! is stated on its field and in `node/strata-node.example.toml`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use strata_router::RouterSettings;

/// Prefix of the environment variables that override the file (`STRATA_NODE_CONFIG`,
/// the path of the file itself, is not a setting).
pub const ENV_PREFIX: &str = "STRATA_NODE_";

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("configuration field `{field}`: {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
}

/// Everything a node needs to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Name of this node in logs and metrics. Default `node-1`.
    pub node_id: String,
    /// Address the HTTP API listens on. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Path of the shard map. Default `shard-map.toml`.
    pub shard_map: PathBuf,
    /// Redis Cluster seed nodes.
    pub redis: RedisConfig,
    /// Replica polling, lag bound and pools.
    #[serde(default)]
    pub router: RouterSettings,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Requests still running at shutdown get this long to finish. Default 10000 ms.
    pub shutdown_grace_ms: u64,
    /// A request running longer than this is answered 503. Default 30000 ms.
    pub request_timeout_ms: u64,
}

/// Where Redis Cluster is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// Seed nodes as `redis://host:port`; the client discovers the rest of the cluster.
    /// Default `["redis://127.0.0.1:7001"]`.
    pub seeds: Vec<String>,
}

/// Log output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` for people, `json` for log shippers. Default `text`.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info,strata_router=debug`. Default `info`.
    pub filter: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            filter: "info".into(),
        }
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            node_id: "node-1".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            shard_map: PathBuf::from("shard-map.toml"),
            redis: RedisConfig {
                seeds: vec!["redis://127.0.0.1:7001".into()],
            },
            router: RouterSettings::default(),
            log: LogConfig::default(),
            shutdown_grace_ms: 10_000,
            request_timeout_ms: 30_000,
        }
    }
}

impl NodeConfig {
    /// Defaults, then the file (if given), then `STRATA_NODE_*` variables; validated.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(NodeConfig::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        let config: NodeConfig = figment
            .merge(Env::prefixed(ENV_PREFIX).ignore(&["config"]).split("__"))
            .extract()
            .map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// The file form of this config, as the local cluster writes it for each node.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config always serializes")
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, problem: &str| {
            Err(ConfigError::Invalid {
                field,
                problem: problem.into(),
            })
        };
        if self.node_id.is_empty() || self.node_id.len() > 64 {
            return invalid("node_id", "must be 1..=64 characters");
        }
        if self.redis.seeds.is_empty() {
            return invalid("redis.seeds", "at least one seed is required");
        }
        if let Some(bad) = self.redis.seeds.iter().find(|s| !s.starts_with("redis://")) {
            return invalid("redis.seeds", &format!("{bad:?} must start with redis://"));
        }
        if self.router.poll_interval_ms == 0 || self.router.pool_max_size == 0 {
            return invalid(
                "router",
                "poll_interval_ms and pool_max_size must be positive",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<NodeConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, text).unwrap();
        NodeConfig::load(Some(&path))
    }

    #[test]
    fn defaults_need_no_file() {
        let config = NodeConfig::load(None).unwrap();
        assert_eq!(config.listen.port(), 8080);
        assert_eq!(config.router.max_replica_lag_ms, 2000);
    }

    #[test]
    fn the_commented_example_file_states_exactly_the_defaults() {
        let example =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("strata-node.example.toml");
        assert_eq!(
            NodeConfig::load(Some(&example)).unwrap(),
            NodeConfig::default()
        );
    }

    #[test]
    fn the_file_form_round_trips() {
        let config = NodeConfig {
            node_id: "n7".into(),
            router: RouterSettings {
                ban_ms: 42,
                ..RouterSettings::default()
            },
            ..NodeConfig::default()
        };
        assert_eq!(load_text(&config.to_toml()).unwrap(), config);
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let err = load_text("listn = \"127.0.0.1:1\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listn"), "{err}");
        let err = load_text("[router]\nmax_lag = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_lag"), "{err}");
    }

    #[test]
    fn bad_values_are_refused_by_field() {
        let err = load_text("[redis]\nseeds = [\"127.0.0.1:7001\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("redis.seeds"), "{err}");
    }
}
