//! The shard router: everything a Strata node needs to find and talk to the right
//! Postgres host, and nothing about HTTP.
//!
//! Layout, from pure logic to I/O (the I/O modules depend on the pure ones, never the
//! other way round):
//!
//! - [`ids`] — newtypes for shard ids, slots, route hashes and host addresses.
//! - [`hashing`] — routing key → stable 64-bit route hash → slot.
//! - [`shard_map`] — parse and validate `shard-map.toml`.
//! - [`placement`] — slot → shard through a weighted consistent hash ring.
//! - [`lsn`] and [`lag`] — WAL positions and how far a replica is behind in seconds.
//! - [`replica_choice`] — which host serves a read, given each host's observed health.
//! - [`pools`] — per-host connection pools; [`conn`] — a checked-out connection that
//!   records its time per shard and role.
//! - [`topology`] — the live view of every shard: role discovery, replica polling, bans.
//! - [`migrations`] — forward-only SQL migrations applied to and checked on every shard.
//! - [`catalog`] — the cluster catalog: slot owners, shards and moves, the authority on
//!   placement once a cluster exists.
//! - [`rebalance`] — online slot moves, plan and verify, for the operator.

pub mod catalog;
pub mod conn;
pub mod hashing;
pub mod ids;
pub mod lag;
pub mod lsn;
pub mod migrations;
pub mod placement;
pub mod pools;
pub mod rebalance;
pub mod replica_choice;
pub mod settings;
pub mod shard_map;
pub mod topology;

pub use conn::ShardConn;
pub use hashing::{route_hash, slot_of};
pub use ids::{HostAddr, RouteHash, SLOT_COUNT, ShardId, Slot};
pub use lsn::Lsn;
pub use placement::Placement;
pub use settings::RouterSettings;
pub use shard_map::{ShardMap, ShardMapError};
pub use topology::{HostRole, HostStatus, RouterError, ShardStatus, Topology};
