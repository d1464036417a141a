//! Where the load goes: the nodes of a local cluster (from its `cluster.json`) or any
//! base URLs given on the command line.

use std::path::Path;

/// Why the target could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error(
        "cannot read {path}: {source} (start a cluster with `scripts/dev-up.sh --detach`, or pass --url)"
    )]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a cluster description: {detail}")]
    Malformed { path: String, detail: String },
    #[error("{url} does not answer: {detail}")]
    Unreachable { url: String, detail: String },
}

/// One Postgres host of the cluster, for same-run pgbench baselines.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PostgresHost {
    pub shard: String,
    /// `host:port`.
    pub addr: String,
    /// The role the host was started in (`primary` or `replica`).
    pub role: String,
}

/// The base URLs of the nodes to load, and (for a local cluster) its Postgres hosts and
/// shard map.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Target {
    pub nodes: Vec<String>,
    pub postgres: Vec<PostgresHost>,
    pub shard_map: Option<std::path::PathBuf>,
    /// The load balancer's base URL, when the cluster has one.
    pub load_balancer: Option<String>,
    /// The kernel balancer's base URL, when the cluster has one.
    pub kernel_balancer: Option<String>,
    /// Redis Cluster seeds (`redis://host:port`).
    pub redis: Vec<String>,
    /// The local cluster's data directory, when the target is one.
    pub data_dir: Option<std::path::PathBuf>,
}

impl Target {
    /// Reads a local cluster's `cluster.json`.
    pub fn from_cluster_file(path: &Path) -> Result<Self, TargetError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TargetError::Read {
            path: shown.clone(),
            source,
        })?;
        let doc: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| TargetError::Malformed {
                path: shown.clone(),
                detail: e.to_string(),
            })?;
        let nodes: Vec<String> = doc["nodes"]
            .as_array()
            .map(|n| {
                n.iter()
                    .filter_map(|n| n["url"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if nodes.is_empty() {
            return Err(TargetError::Malformed {
                path: shown,
                detail: "it lists no nodes".into(),
            });
        }
        let postgres = doc["postgres"]
            .as_array()
            .map(|hosts| {
                hosts
                    .iter()
                    .map(|h| PostgresHost {
                        shard: h["shard"].as_str().unwrap_or_default().to_owned(),
                        addr: h["addr"].as_str().unwrap_or_default().to_owned(),
                        role: h["role"].as_str().unwrap_or_default().to_owned(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let shard_map = doc["shard_map"].as_str().map(std::path::PathBuf::from);
        let load_balancer = doc["load_balancer"].as_str().map(str::to_owned);
        let kernel_balancer = doc["kernel_balancer"].as_str().map(str::to_owned);
        let redis = doc["redis"]
            .as_array()
            .map(|seeds| {
                seeds
                    .iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let data_dir = doc["data_dir"].as_str().map(std::path::PathBuf::from);
        Ok(Self {
            nodes,
            postgres,
            shard_map,
            load_balancer,
            kernel_balancer,
            redis,
            data_dir,
        })
    }

    /// Checks every node answers `/healthz` before any load is sent.
    pub async fn check(&self, http: &reqwest::Client) -> Result<(), TargetError> {
        for url in &self.nodes {
            let probe = http
                .get(format!("{url}/healthz"))
                .timeout(std::time::Duration::from_secs(3))
                .send()
                .await;
            match probe {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => {
                    return Err(TargetError::Unreachable {
                        url: url.clone(),
                        detail: format!("/healthz answered {}", r.status()),
                    });
                }
                Err(e) => {
                    return Err(TargetError::Unreachable {
                        url: url.clone(),
                        detail: e.to_string(),
                    });
                }
            }
        }
        Ok(())
    }
}
