//! The sandbox: starts and stops a real local Strata cluster on loopback. `strata dev up`
//! and the end-to-end tests both use it, so what the tests exercise is what operators run.
//!
//! - [`tools`] — finds initdb, pg_ctl, redis-server, haproxy (or names the package).
//! - [`process`] — run, signal and wait for processes; free ports; a tiny HTTP probe.
//! - [`postgres`], [`redis_cluster`], [`nodes`], [`haproxy`] — one kind of process each.
//! - [`kernel_balancer`] — an nftables rule balancing connections, following HAProxy.
//! - [`cluster`] — the whole cluster, started in dependency order and stopped in reverse.
//! - [`builder`] — throwaway clusters for tests, cleaned up by the [`reaper`].
//! - [`endpoints`] — every address, as printed and as `cluster.json`.

pub mod builder;
pub mod cluster;
pub mod endpoints;
pub mod error;
pub mod haproxy;
pub mod kernel_balancer;
pub mod monitoring;
pub mod nodes;
pub mod postgres;
pub mod process;
pub mod reaper;
pub mod redis_cluster;
pub mod tools;

pub use builder::ClusterBuilder;
pub use cluster::{Cluster, ClusterSpec, OnDrop};
pub use endpoints::Endpoints;
pub use error::SandboxError;
