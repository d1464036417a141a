//! The shard map (`shard-map.toml`): which shards exist, their weights on the ring, and
//! the Postgres hosts of each. Parsed with unknown fields refused and validated once, so
//! a bad map fails at start-up with a message naming the field and the problem.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::ids::{HostAddr, ShardId};

/// Why a shard map was refused. Every message names the offending field.
#[derive(Debug, thiserror::Error)]
pub enum ShardMapError {
    #[error("cannot read shard map {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("shard map is not valid: {0}")]
    Syntax(String),
    #[error("shard map field `{field}`: {problem}")]
    Invalid { field: String, problem: String },
}

impl ShardMapError {
    fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// How the consistent hash ring is built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RingConfig {
    /// Virtual nodes per unit of shard weight. More vnodes spread slots more evenly.
    /// Default 256.
    #[serde(default = "default_virtual_nodes")]
    pub virtual_nodes: u32,
}

fn default_virtual_nodes() -> u32 {
    256
}

impl Default for RingConfig {
    fn default() -> Self {
        Self {
            virtual_nodes: default_virtual_nodes(),
        }
    }
}

/// One shard: a name, a weight on the ring and the hosts that hold its data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardConfig {
    /// The shard's name, e.g. `s0`.
    pub id: ShardId,
    /// Relative share of the slots (1..=100). Default 1.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Every Postgres host of the shard, primary and replicas alike, as `host:port`. The
    /// router discovers which one is primary; the order carries no meaning for routing
    /// (the local cluster starts the first one as primary).
    pub hosts: Vec<HostAddr>,
    /// Synchronous replication: the primary acknowledges a commit only once a replica
    /// has it (`synchronous_standby_names`), so losing the primary loses no
    /// acknowledged write; commits wait while no replica is connected. The local
    /// cluster applies it to the shard's first host. Default off.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub synchronous: bool,
    /// The shard's database on its hosts. Default: the map's `database`. Shards may share
    /// hosts (several shards on one Postgres server, each in a database of its own: one
    /// server's memory and processes instead of one per shard); a host and database pair
    /// belongs to one shard only. Shards added online get the map's database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
}

fn default_weight() -> u32 {
    1
}

/// Where the cluster catalog lives: the database on a group of Postgres hosts (a primary
/// and its streaming replicas) that holds slot placement once a cluster exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogLocation {
    /// The hosts of the catalog database, primary and replicas alike. Default: the hosts
    /// of the first shard in the map.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<HostAddr>,
    /// The catalog's database name. Default `strata_catalog`.
    #[serde(default = "default_catalog_database")]
    pub database: String,
}

fn default_catalog_database() -> String {
    "strata_catalog".into()
}

impl Default for CatalogLocation {
    fn default() -> Self {
        Self {
            hosts: Vec::new(),
            database: default_catalog_database(),
        }
    }
}

/// The whole shard map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardMap {
    /// Database name on every host. Default `strata`.
    #[serde(default = "default_database")]
    pub database: String,
    /// Role the router connects as. Default `strata`.
    #[serde(default = "default_user")]
    pub user: String,
    /// Password for `user`, if the hosts ask for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Ring construction.
    #[serde(default)]
    pub ring: RingConfig,
    /// Where the cluster catalog lives.
    #[serde(default)]
    pub catalog: CatalogLocation,
    /// The shards, in any order.
    #[serde(rename = "shard")]
    pub shards: Vec<ShardConfig>,
}

fn default_database() -> String {
    "strata".into()
}

fn default_user() -> String {
    "strata".into()
}

impl ShardMap {
    /// Reads and validates a shard map file.
    pub fn load(path: &Path) -> Result<Self, ShardMapError> {
        let text = std::fs::read_to_string(path).map_err(|source| ShardMapError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses and validates shard map text.
    pub fn parse(text: &str) -> Result<Self, ShardMapError> {
        let map: ShardMap =
            toml::from_str(text).map_err(|e| ShardMapError::Syntax(e.to_string()))?;
        map.validate()?;
        Ok(map)
    }

    /// The map as TOML, e.g. to write the effective map of a generated cluster.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a shard map always serializes")
    }

    /// The hosts of the catalog database: `[catalog] hosts`, else the first shard's.
    pub fn catalog_hosts(&self) -> &[HostAddr] {
        if self.catalog.hosts.is_empty() {
            &self.shards[0].hosts
        } else {
            &self.catalog.hosts
        }
    }

    /// Looks a shard up by id.
    pub fn shard(&self, id: &ShardId) -> Option<&ShardConfig> {
        self.shards.iter().find(|s| &s.id == id)
    }

    /// The database shard `id` keeps its data in: its own `database`, else the map's (also
    /// for a shard the map does not list, such as one added online).
    pub fn database_of(&self, id: &ShardId) -> &str {
        self.database_for(self.shard(id))
    }

    /// `shard`'s own database, else the map's.
    fn database_for<'a>(&'a self, shard: Option<&'a ShardConfig>) -> &'a str {
        shard
            .and_then(|s| s.database.as_deref())
            .unwrap_or(&self.database)
    }

    fn validate(&self) -> Result<(), ShardMapError> {
        if self.shards.is_empty() {
            return Err(ShardMapError::invalid(
                "shard",
                "at least one [[shard]] is required",
            ));
        }
        if !(1..=4096).contains(&self.ring.virtual_nodes) {
            return Err(ShardMapError::invalid(
                "ring.virtual_nodes",
                "must be 1..=4096",
            ));
        }
        for (name, value) in [
            ("database", &self.database),
            ("user", &self.user),
            ("catalog.database", &self.catalog.database),
        ] {
            if value.is_empty() || value.len() > 63 {
                return Err(ShardMapError::invalid(name, "must be 1..=63 characters"));
            }
        }
        check_database_name("catalog.database", &self.catalog.database)?;
        let mut ids = HashSet::new();
        let mut hosts = HashSet::new();
        for (i, shard) in self.shards.iter().enumerate() {
            if !ids.insert(&shard.id) {
                return Err(ShardMapError::invalid(
                    format!("shard[{i}].id"),
                    format!("shard id {:?} appears twice", shard.id.as_str()),
                ));
            }
            if !(1..=100).contains(&shard.weight) {
                return Err(ShardMapError::invalid(
                    format!("shard[{i}].weight"),
                    "must be 1..=100",
                ));
            }
            if shard.hosts.is_empty() {
                return Err(ShardMapError::invalid(
                    format!("shard[{i}].hosts"),
                    "a shard needs at least one host",
                ));
            }
            if let Some(database) = &shard.database {
                check_database_name(&format!("shard[{i}].database"), database)?;
            }
            let database = self.database_for(Some(shard));
            for (j, host) in shard.hosts.iter().enumerate() {
                if !hosts.insert((host, database)) {
                    return Err(ShardMapError::invalid(
                        format!("shard[{i}].hosts[{j}]"),
                        format!(
                            "host {host} is listed twice with database {database:?} (shards sharing a host need a `database` each)"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A database name the map may use: 1..=63 lower-case letters, digits and `_` (it is
/// written into `CREATE DATABASE` unquoted).
fn check_database_name(field: &str, name: &str) -> Result<(), ShardMapError> {
    if name.is_empty()
        || name.len() > 63
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(ShardMapError::invalid(
            field,
            "must be 1..=63 lower-case letters, digits and _",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [[shard]]
        id = "s0"
        hosts = ["127.0.0.1:5432", "127.0.0.1:5433"]

        [[shard]]
        id = "s1"
        weight = 2
        hosts = ["127.0.0.1:5434"]
    "#;

    fn error_of(text: &str) -> String {
        ShardMap::parse(text)
            .expect_err("map should be refused")
            .to_string()
    }

    #[test]
    fn a_good_map_parses_with_defaults() {
        let map = ShardMap::parse(GOOD).unwrap();
        assert_eq!(map.database, "strata");
        assert_eq!(map.ring.virtual_nodes, 256);
        assert_eq!(map.shards[0].weight, 1);
        assert_eq!(map.shards[1].weight, 2);
        assert_eq!(ShardMap::parse(&map.to_toml()).unwrap(), map);
    }

    #[test]
    fn an_unknown_field_is_named() {
        let err = error_of("[[shard]]\nid = \"s0\"\nhostz = [\"h:1\"]\n");
        assert!(err.contains("hostz"), "{err}");
    }

    #[test]
    fn a_bad_host_is_named() {
        let err = error_of("[[shard]]\nid = \"s0\"\nhosts = [\"localhost\"]\n");
        assert!(
            err.contains("localhost") && err.contains("host:port"),
            "{err}"
        );
    }

    #[test]
    fn duplicate_shards_and_hosts_are_refused() {
        let err = error_of(
            "[[shard]]\nid = \"s0\"\nhosts = [\"h:1\"]\n[[shard]]\nid = \"s0\"\nhosts = [\"h:2\"]\n",
        );
        assert!(
            err.contains("shard[1].id") && err.contains("twice"),
            "{err}"
        );
        let err = error_of(
            "[[shard]]\nid = \"s0\"\nhosts = [\"h:1\"]\n[[shard]]\nid = \"s1\"\nhosts = [\"h:1\"]\n",
        );
        assert!(err.contains("shard[1].hosts[0]"), "{err}");
    }

    #[test]
    fn shards_share_a_host_only_in_databases_of_their_own() {
        let shared = "[[shard]]\nid = \"s0\"\nhosts = [\"h:1\"]\ndatabase = \"strata_s0\"\n\
                      [[shard]]\nid = \"s1\"\nhosts = [\"h:1\"]\ndatabase = \"strata_s1\"\n";
        let map = ShardMap::parse(shared).unwrap();
        assert_eq!(map.database_of(&map.shards[1].id), "strata_s1");
        assert_eq!(map.database_of(&"s9".parse().unwrap()), "strata");
        assert_eq!(ShardMap::parse(&map.to_toml()).unwrap(), map);
        // One of them on the map's database still differs from the other's.
        let one_default = shared.replacen("database = \"strata_s0\"\n", "", 1);
        assert!(ShardMap::parse(&one_default).is_ok());
        let same = shared.replace("strata_s1", "strata_s0");
        let err = error_of(&same);
        assert!(
            err.contains("shard[1].hosts[0]") && err.contains("strata_s0"),
            "{err}"
        );
        let err = error_of(&shared.replace("strata_s1", "Strata-1"));
        assert!(err.contains("shard[1].database"), "{err}");
    }

    #[test]
    fn empty_maps_shards_and_weights_are_refused() {
        assert!(error_of("shard = []").contains("at least one"));
        assert!(error_of("[[shard]]\nid = \"s0\"\nhosts = []\n").contains("shard[0].hosts"));
        assert!(
            error_of("[[shard]]\nid = \"s0\"\nweight = 0\nhosts = [\"h:1\"]\n")
                .contains("shard[0].weight")
        );
        assert!(error_of("[[shard]]\nid = \"S 0\"\nhosts = [\"h:1\"]\n").contains("shard id"));
    }
}
