//! One connection pool per Postgres host of a shard (shards sharing a server get a pool
//! each, on their own databases, and split the node's connections to that server).
//! Pools are built without connecting, so a host that is down at start-up costs nothing
//! until it comes back.

use std::collections::HashMap;

use deadpool_postgres::{Manager, ManagerConfig, Pool, QueueMode, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::ids::HostAddr;
use crate::settings::RouterSettings;
use crate::shard_map::ShardMap;

/// The fewest connections a shard's pool keeps, however many shards share its server.
/// Every request holds one connection at a time, so one is enough to make progress;
/// a request that finds it busy waits in the pool's queue.
pub const MIN_SHARD_POOL: usize = 1;

/// The most connections each shard's pool opens on a server that `sharing` shards have
/// a host on. A shard alone on its server gets all of `server_budget` (`pool_max_size`,
/// the connections one node keeps to one Postgres server); shards that share a server
/// split half of it, each at least [`MIN_SHARD_POOL`].
///
/// Every connection is a backend, a process with its own caches, and a backend serves
/// one database, so shards cannot share theirs. A lone shard's pool hands out the
/// connection returned last ([`host_pool`]), so only as many backends work as requests
/// are in flight, however large the pool: with 16 connections of load on 2 servers,
/// about 8 per server. Shards sharing a server each get a request now and then, so
/// every backend of every pool takes turns: split over the whole budget, 16 shards on
/// 2 servers cycled 16 backends per server (2 per shard), and Postgres spent 15–20 %
/// more CPU per write than with 2 shards; split over half, 8 per server (1 per shard),
/// it spent 4–5 % more, and the write rate went from 0.904–0.908 of 2 shards' to
/// 0.981–0.999 (`strata-bench --duration 20 shard-scaling`, bench/README.md). Before
/// any split, a pool of 16 per shard grew to about 26 backends per server and cost
/// 3–29 % more CPU per read.
pub fn shard_pool_size(server_budget: usize, sharing: usize) -> usize {
    match sharing {
        0 | 1 => server_budget.max(MIN_SHARD_POOL),
        shared => (server_budget / (2 * shared)).max(MIN_SHARD_POOL),
    }
}

/// How many of `shards` (each given by its hosts) have a host on each server.
pub fn shards_per_server<'a>(
    shards: impl IntoIterator<Item = &'a [HostAddr]>,
) -> HashMap<HostAddr, usize> {
    let mut sharing = HashMap::new();
    for hosts in shards {
        for host in hosts {
            *sharing.entry(host.clone()).or_insert(0) += 1;
        }
    }
    sharing
}

/// Builds the pool for one host of the map, on `database` (the shard's), of at most
/// `max_size` connections ([`shard_pool_size`]).
///
/// The pool hands out the connection returned last (LIFO). With first-in-first-out,
/// every request took the connection idle longest, so the work cycled through all of a
/// host's backends and each query ran on a backend whose memory had gone cold in the
/// CPU caches. With 16 shards on two cores that cost Postgres 79–89 µs of CPU per
/// primary-key read against 50–57 µs with LIFO, and the read rate 0.78–0.80 of the rate
/// with 2 shards against 0.94–0.96. Idle connections at the back of the queue stay
/// open; like any other, one found closed when handed out is replaced.
pub fn host_pool(
    map: &ShardMap,
    host: &HostAddr,
    database: &str,
    max_size: usize,
    settings: &RouterSettings,
) -> Pool {
    let mut pg = tokio_postgres::Config::new();
    pg.host(host.host())
        .port(host.port())
        .user(&map.user)
        .dbname(database)
        .application_name("strata")
        .connect_timeout(settings.connect_timeout())
        .keepalives(true);
    if let Some(password) = &map.password {
        pg.password(password);
    }
    let manager = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(max_size)
        .queue_mode(QueueMode::Lifo)
        .wait_timeout(Some(settings.connect_timeout()))
        .create_timeout(Some(settings.connect_timeout()))
        .runtime(Runtime::Tokio1)
        .build()
        .expect("a pool with a runtime and timeouts always builds")
}

/// True when a database error means the connection is gone (closed, an I/O failure, the
/// server ending the session) rather than a statement refused on a live connection.
/// A pooled connection can be dead before anyone notices (the server restarted, or an
/// operator ended its sessions): such a failure says nothing about the host, and a
/// statement that failed this way before its commit was sent is safe to run again on a
/// fresh connection.
pub fn is_connection_lost(e: &tokio_postgres::Error) -> bool {
    let io = std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>());
    let shutting_down = e.as_db_error().is_some_and(|db| {
        db.code().code().starts_with("57P") // admin_shutdown, crash_shutdown, cannot_connect_now
    });
    e.is_closed() || io || shutting_down
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(raw: &str) -> HostAddr {
        raw.parse().unwrap()
    }

    #[test]
    fn a_lone_shard_keeps_the_whole_budget_and_sharing_shards_split_half_of_it() {
        assert_eq!(shard_pool_size(16, 1), 16);
        assert_eq!(shard_pool_size(16, 0), 16, "a server no shard names");
        assert_eq!(shard_pool_size(16, 2), 4);
        assert_eq!(shard_pool_size(16, 3), 2);
        assert_eq!(
            shard_pool_size(16, 8),
            1,
            "16 shards on 2 servers: 8 per server"
        );
    }

    #[test]
    fn a_shard_keeps_its_floor_however_many_share_the_server() {
        assert_eq!(shard_pool_size(16, 64), MIN_SHARD_POOL);
        assert_eq!(shard_pool_size(0, 1), MIN_SHARD_POOL);
        assert_eq!(shard_pool_size(4, 2), MIN_SHARD_POOL);
    }

    #[test]
    fn sharing_is_counted_per_server_over_primaries_and_replicas() {
        let (a, b, c) = (addr("pg1:5432"), addr("pg2:5432"), addr("pg1:5433"));
        let shards = [
            vec![a.clone(), b.clone()],
            vec![a.clone(), c.clone()],
            vec![a.clone()],
        ];
        let sharing = shards_per_server(shards.iter().map(Vec::as_slice));
        assert_eq!(sharing[&a], 3);
        assert_eq!(sharing[&b], 1);
        assert_eq!(sharing[&c], 1, "another port is another server");
    }
}
