//! Every address of a running local cluster, printed by `strata dev up` and written as
//! JSON to `<data dir>/cluster.json`, where the CLI, the tests and the bench find it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::SandboxError;

/// The file name of the endpoints document inside the data directory.
pub const ENDPOINTS_FILE: &str = "cluster.json";

/// Where everything of a local cluster answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Endpoints {
    pub data_dir: PathBuf,
    /// The effective shard map the nodes use.
    pub shard_map: PathBuf,
    /// Base URL of the load balancer, when there is one.
    pub load_balancer: Option<String>,
    /// Base URL of the kernel balancer, when there is one.
    #[serde(default)]
    pub kernel_balancer: Option<String>,
    /// Base URL of Prometheus, when the cluster is monitored.
    #[serde(default)]
    pub prometheus: Option<String>,
    pub nodes: Vec<NodeEndpoint>,
    pub postgres: Vec<PostgresEndpoint>,
    /// Redis Cluster seeds (`redis://host:port`).
    pub redis: Vec<String>,
}

/// One API node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeEndpoint {
    pub id: String,
    pub url: String,
    pub metrics: String,
    pub log: PathBuf,
}

/// One Postgres host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PostgresEndpoint {
    pub shard: String,
    pub addr: String,
    /// The role the host was started in (`primary` or `replica`); `strata dev status`
    /// and the router report the live role.
    pub role: String,
    /// A connection string for the application role.
    pub dsn: String,
    pub log: PathBuf,
}

impl Endpoints {
    /// Writes `cluster.json` into the data directory.
    pub fn write(&self) -> Result<(), SandboxError> {
        let path = self.data_dir.join(ENDPOINTS_FILE);
        let text = serde_json::to_string_pretty(self).expect("endpoints always serialize");
        std::fs::write(&path, text + "\n")
            .map_err(SandboxError::io(format!("write {}", path.display())))
    }

    /// A human summary, one endpoint a line.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        if let Some(lb) = &self.load_balancer {
            out += &format!("load balancer   {lb}\n");
        }
        if let Some(kernel) = &self.kernel_balancer {
            out += &format!("kernel balancer {kernel}   (connections, following HAProxy)\n");
        }
        for node in &self.nodes {
            out += &format!(
                "node {:<10} {}   (metrics {})\n",
                node.id, node.url, node.metrics
            );
        }
        for pg in &self.postgres {
            out += &format!(
                "postgres {:<6} {:<8} {}   {}\n",
                pg.shard, pg.role, pg.addr, pg.dsn
            );
        }
        out += &format!("redis cluster   {}\n", self.redis.join(" "));
        if let Some(prometheus) = &self.prometheus {
            out += &format!(
                "prometheus      {prometheus}   (targets {prometheus}/targets, alerts {prometheus}/alerts)\n"
            );
        }
        out += &format!("shard map       {}\n", self.shard_map.display());
        out += &format!("data dir        {}\n", self.data_dir.display());
        out
    }
}
