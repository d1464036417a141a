//! The node's configuration: one typed struct, read from a TOML file and overridden by
//! `STRATA_NODE_*` environment variables (nested keys joined by `__`, e.g.
//! `STRATA_NODE_ROUTER__MAX_REPLICA_LAG_MS=500`). Unknown keys are refused. Every default
//! is stated on its field and in `node/strata-node.example.toml`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
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
    /// Tokens, sessions and password hashing.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Rate limits shared by all nodes (kept in Redis).
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Where file bytes go.
    #[serde(default)]
    pub files: FilesConfig,
    /// The node's search index.
    #[serde(default)]
    pub search: SearchConfig,
    /// The node's own caches (no round trip; see `node/src/invalidation`).
    #[serde(default)]
    pub cache: CacheConfig,
    /// Peers whose `X-Forwarded-For` is believed (the load balancer): addresses or
    /// networks (`10.0.0.0/8`). Default loopback (`127.0.0.0/8`, `::1`).
    pub trusted_proxies: Vec<TrustedNet>,
    /// Requests still running at shutdown get this long to finish. Default 10000 ms.
    pub shutdown_grace_ms: u64,
    /// On SIGTERM, a node that is being health-checked refuses `/readyz` until the load
    /// balancer has seen `shutdown_drain_checks` refusals, for at most this long, while
    /// still serving; then it stops. 0 stops at once. Default 5000 ms.
    pub shutdown_drain_ms: u64,
    /// Refused readiness checks after which the load balancer has taken the node out
    /// (its `fall` count). Default 2.
    pub shutdown_drain_checks: u64,
    /// A request running longer than this is answered 503. Default 30000 ms.
    pub request_timeout_ms: u64,
    /// Threads running the node's requests. Default: one per core the node may use.
    /// Nodes sharing a machine with each other and their databases do more with their
    /// share (cores ÷ nodes): fewer threads, fewer wake-ups handed between them (the
    /// local cluster sets it so). Hashing, search and indexing have threads of their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_threads: Option<usize>,
}

/// Where Redis Cluster is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// Seed nodes as `redis://host:port`; the client discovers the rest of the cluster.
    /// Default `["redis://127.0.0.1:7001"]`.
    pub seeds: Vec<String>,
}

/// A secret that never appears in logs or debug output.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// One key for signing access tokens (HMAC-SHA256).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningKeyConfig {
    /// The key id put in each token's `kid` header.
    pub id: String,
    /// At least 32 random bytes, base64 (standard alphabet).
    pub secret: Secret,
}

/// Tokens, sessions and password hashing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `iss` of access tokens. Default `strata`.
    pub issuer: String,
    /// `aud` of access tokens. Default `strata-api`.
    pub audience: String,
    /// Access token lifetime. Default 900 s.
    pub access_ttl_secs: u64,
    /// Refresh token (and session) lifetime, renewed by each refresh. Default 30 days.
    pub refresh_ttl_secs: u64,
    /// How long a just-rotated refresh token may be presented again (a client retrying a
    /// refresh whose answer it lost) before that counts as reuse. Default 10000 ms.
    pub refresh_grace_ms: u64,
    /// The key that signs new tokens. Every key in `keys` verifies, so during a rotation
    /// both the old and the new key are listed. No default: a node needs a key.
    pub signing_key_id: String,
    /// Verification keys (and the signing key).
    pub keys: Vec<SigningKeyConfig>,
    /// How long a signup's claim on a name lasts before another signup may settle it.
    /// Default 30000 ms.
    pub claim_ttl_ms: u64,
    /// Threads hashing passwords; 0 means half the cores (at least 1), which leaves
    /// the rest for every other request during a login storm. Default 0.
    pub hash_threads: usize,
    /// Password hashes that may wait for a thread; past that, 503. Default 256.
    pub hash_queue: usize,
    /// Mark cookies `Secure`. Default true.
    pub secure_cookies: bool,
}

impl AuthConfig {
    /// The secret of the key that signs new tokens (also the root of the cursor key).
    ///
    /// # Panics
    /// When `signing_key_id` names no key: config validation refuses such a file first.
    pub fn signing_secret(&self) -> &str {
        self.keys
            .iter()
            .find(|k| k.id == self.signing_key_id)
            .expect("config validated the signing key")
            .secret
            .expose()
    }
}

/// A network (or one address) whose peers are believed about the client's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TrustedNet(ipnet::IpNet);

impl TrustedNet {
    /// `10.0.0.0/8`, `fd00::/8`, or a bare address (a network of one).
    pub fn parse(raw: &str) -> Result<Self, String> {
        raw.parse::<ipnet::IpNet>()
            .or_else(|_| raw.parse::<IpAddr>().map(ipnet::IpNet::from))
            .map(Self)
            .map_err(|_| format!("{raw:?} is not an address or a network like 10.0.0.0/8"))
    }

    /// Whether `ip` is in the network.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.0.contains(ip)
    }
}

impl TryFrom<String> for TrustedNet {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<TrustedNet> for String {
    fn from(net: TrustedNet) -> Self {
        net.0.to_string()
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            issuer: "strata".into(),
            audience: "strata-api".into(),
            access_ttl_secs: 900,
            refresh_ttl_secs: 30 * 24 * 3600,
            refresh_grace_ms: 10_000,
            signing_key_id: String::new(),
            keys: Vec::new(),
            claim_ttl_ms: 30_000,
            hash_threads: 0,
            hash_queue: 256,
            secure_cookies: true,
        }
    }
}

/// The node's local caches, trusted only while it hears itself on the invalidation
/// channel; a change is acknowledged only once every node has dropped what it made
/// stale (see docs/architecture.md, "Sessions" and "Items"). Every node of a cluster
/// must use the same settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// How long a session check this node made answers for the session; 0 asks Redis
    /// on every request. Default 30 s.
    pub session_checks_ms: u64,
    /// How long a public post this node read stays in its memory; 0 asks the shared
    /// Redis cache on every read. Default 30 s (as long as the Redis cache keeps it).
    pub public_posts_ms: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            session_checks_ms: 30_000,
            public_posts_ms: 30_000,
        }
    }
}

/// Rate limits, counted in Redis so every node shares one budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Length of a counting window. Default 60 s.
    pub window_secs: u64,
    /// Login attempts per client IP per window. Default 300.
    pub login_per_ip: u64,
    /// Failed logins per login name and client address per window (a stranger cannot
    /// lock the real user out), and wrong current passwords per user in
    /// `PUT /v1/me/password`. Default 10.
    pub login_per_name: u64,
    /// Signups per client IP per window. Default 60.
    pub signup_per_ip: u64,
    /// Refreshes per client IP per window. Default 600.
    pub refresh_per_ip: u64,
    /// Searches per user per window. Default 6000 (100 a second: a client polling for
    /// freshness stays under it, a script walking the index does not).
    pub search_per_user: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            window_secs: 60,
            login_per_ip: 300,
            login_per_name: 10,
            signup_per_ip: 60,
            refresh_per_ip: 600,
            search_per_user: 6000,
        }
    }
}

/// Where uploaded file bytes are kept: a local directory (shared by every node of one
/// machine) or an S3-compatible bucket (credentials from the usual `AWS_*` variables).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesConfig {
    /// `local` or `s3`. Default `local`.
    pub store: FileStoreKind,
    /// The directory of the `local` store. Default `strata-objects`.
    pub local_dir: PathBuf,
    /// Largest upload accepted; larger ones get 413. Default 25 MiB.
    pub max_upload_bytes: u64,
    /// How long an upload may go without receiving a byte before it is refused (408)
    /// and its partial bytes removed. Uploads are not bound by `request_timeout_ms`: a
    /// large file on a slow link takes as long as it takes while it keeps moving.
    /// Default 30000 ms.
    pub upload_idle_timeout_ms: u64,
    /// The bucket of the `s3` store.
    pub s3_bucket: String,
    /// An S3-compatible endpoint (MinIO, Ceph, R2); empty for AWS itself.
    pub s3_endpoint: String,
    /// The bucket's region. Default `us-east-1`.
    pub s3_region: String,
}

/// The node's own search index (each node keeps one, built from the change feeds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchConfig {
    /// Where the index lives. Default `strata-index`.
    pub index_dir: PathBuf,
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self {
            index_dir: PathBuf::from("strata-index"),
        }
    }
}

/// Which object store holds file bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileStoreKind {
    Local,
    S3,
}

impl Default for FilesConfig {
    fn default() -> Self {
        Self {
            store: FileStoreKind::Local,
            local_dir: PathBuf::from("strata-objects"),
            max_upload_bytes: 25 * 1024 * 1024,
            upload_idle_timeout_ms: 30_000,
            s3_bucket: String::new(),
            s3_endpoint: String::new(),
            s3_region: "us-east-1".into(),
        }
    }
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
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
            files: FilesConfig::default(),
            search: SearchConfig::default(),
            cache: CacheConfig::default(),
            trusted_proxies: vec![
                TrustedNet::parse("127.0.0.0/8").expect("a valid network"),
                TrustedNet::parse("::1").expect("a valid address"),
            ],
            shutdown_grace_ms: 10_000,
            shutdown_drain_ms: 5_000,
            shutdown_drain_checks: 2,
            request_timeout_ms: 30_000,
            worker_threads: None,
        }
    }
}

impl NodeConfig {
    /// Defaults, then the file (if given), then `STRATA_NODE_*` variables; validated.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_files(file.into_iter())
    }

    /// Like [`NodeConfig::load`] with several files, each overriding the ones before it
    /// (e.g. a config map, then a secret holding `[auth]` keys).
    pub fn load_files<'p>(files: impl Iterator<Item = &'p Path>) -> Result<Self, ConfigError> {
        let config = Self::extract_files(files)?;
        config.validate()?;
        Ok(config)
    }

    /// Defaults, then the files, then the environment, without validation.
    fn extract_files<'p>(files: impl Iterator<Item = &'p Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(NodeConfig::default()));
        for file in files {
            figment = figment.merge(Toml::file_exact(file));
        }
        let env = Env::prefixed(ENV_PREFIX).ignore(&["config"]).split("__");
        Ok(figment.merge(env).extract().map_err(Box::new)?)
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
        if self.worker_threads == Some(0) {
            return invalid(
                "worker_threads",
                "must be at least 1 (leave it out for one per core)",
            );
        }
        if self.router.poll_interval_ms == 0 || self.router.pool_max_size == 0 {
            return invalid(
                "router",
                "poll_interval_ms and pool_max_size must be positive",
            );
        }
        self.validate_auth()?;
        let limits = &self.limits;
        let all = [
            limits.window_secs,
            limits.login_per_ip,
            limits.login_per_name,
            limits.signup_per_ip,
            limits.refresh_per_ip,
        ];
        if all.contains(&0) {
            return invalid("limits", "every limit and the window must be positive");
        }
        Ok(())
    }

    fn validate_auth(&self) -> Result<(), ConfigError> {
        use base64::Engine;
        let invalid = |field, problem: String| Err(ConfigError::Invalid { field, problem });
        let auth = &self.auth;
        if auth.keys.is_empty() {
            return invalid(
                "auth.keys",
                "at least one signing key is required (see strata-node.example.toml)".into(),
            );
        }
        if !auth.keys.iter().any(|k| k.id == auth.signing_key_id) {
            return invalid(
                "auth.signing_key_id",
                format!("{:?} is not one of auth.keys", auth.signing_key_id),
            );
        }
        for key in &auth.keys {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(key.secret.expose())
                .unwrap_or_default();
            if bytes.len() < 32 {
                return invalid(
                    "auth.keys",
                    format!("key {:?} must be at least 32 bytes of base64", key.id),
                );
            }
        }
        if auth.access_ttl_secs == 0
            || auth.refresh_ttl_secs == 0
            || auth.claim_ttl_ms == 0
            || auth.hash_queue == 0
        {
            return invalid("auth", "lifetimes and hash_queue must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn trusted_proxies_are_addresses_or_networks() {
        let net = TrustedNet::parse("10.0.0.0/8").unwrap();
        assert!(net.contains(&"10.1.2.3".parse().unwrap()));
        assert!(!net.contains(&"11.0.0.1".parse().unwrap()));
        let one = TrustedNet::parse("192.0.2.7").unwrap();
        assert!(one.contains(&"192.0.2.7".parse().unwrap()));
        assert!(!one.contains(&"192.0.2.8".parse().unwrap()));
        assert!(TrustedNet::parse("10.0.0.0/33").is_err());
        assert!(TrustedNet::parse("proxy.local").is_err());
    }

    use super::*;

    fn load_text(text: &str) -> Result<NodeConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, text).unwrap();
        NodeConfig::load(Some(&path))
    }

    fn with_key() -> NodeConfig {
        NodeConfig {
            auth: AuthConfig {
                signing_key_id: "k1".into(),
                keys: vec![SigningKeyConfig {
                    id: "k1".into(),
                    secret: Secret::new("a".repeat(44)),
                }],
                ..AuthConfig::default()
            },
            ..NodeConfig::default()
        }
    }

    #[test]
    fn defaults_need_only_a_signing_key() {
        let err = NodeConfig::load(None).unwrap_err().to_string();
        assert!(err.contains("auth.keys"), "{err}");
        let config = load_text(&with_key().to_toml()).unwrap();
        assert_eq!(config.listen.port(), 8080);
        assert_eq!(config.router.max_replica_lag_ms, 2000);
    }

    #[test]
    fn short_or_unknown_signing_keys_are_refused() {
        let mut config = with_key();
        config.auth.keys[0].secret = Secret::new("c2hvcnQ=");
        assert!(
            load_text(&config.to_toml())
                .unwrap_err()
                .to_string()
                .contains("32 bytes")
        );
        let mut config = with_key();
        config.auth.signing_key_id = "k9".into();
        assert!(
            load_text(&config.to_toml())
                .unwrap_err()
                .to_string()
                .contains("auth.signing_key_id")
        );
    }

    #[test]
    fn secrets_never_print() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "[redacted]");
    }

    #[test]
    fn the_commented_example_file_states_exactly_the_defaults() {
        let example =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("strata-node.example.toml");
        assert_eq!(
            NodeConfig::extract_files(std::iter::once(example.as_path())).unwrap(),
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
            ..with_key()
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
        let err = load_text("worker_threads = 0\n").unwrap_err().to_string();
        assert!(err.contains("worker_threads"), "{err}");
    }

    #[test]
    fn worker_threads_are_one_per_core_unless_set() {
        assert_eq!(
            load_text(&with_key().to_toml()).unwrap().worker_threads,
            None
        );
        let config = NodeConfig {
            worker_threads: Some(1),
            ..with_key()
        };
        assert!(config.to_toml().contains("worker_threads = 1"));
        assert_eq!(load_text(&config.to_toml()).unwrap(), config);
    }
}
