//! A pooled connection to one shard host that knows whose it is, so the time spent on
//! it is measured per shard and role: `strata_db_query_seconds`, from the moment the
//! pool hands the connection out until it goes back (one read's statements, or one
//! write's transaction, pipelined or not; the wait for the pool is
//! `strata_db_pool_wait_seconds`).

use std::ops::{Deref, DerefMut};
use std::time::Instant;

use deadpool_postgres::Object;
use metrics::Histogram;

use crate::ids::ShardId;
use crate::topology::HostRole;

/// One shard's connection histograms, registered once when the shard is built, so a
/// checkout records into them without building labels or looking them up.
pub(crate) struct ShardTimers {
    /// Pool waits: primary, replica.
    pool_wait: [Histogram; 2],
    /// Time connections were held: primary, replica.
    query: [Histogram; 2],
}

impl ShardTimers {
    pub(crate) fn new(shard: &ShardId) -> Self {
        let by_role = |name: &'static str| {
            [HostRole::Primary, HostRole::Replica].map(|role| {
                metrics::histogram!(name, "shard" => shard.to_string(), "role" => role_label(role))
            })
        };
        Self {
            pool_wait: by_role("strata_db_pool_wait_seconds"),
            query: by_role("strata_db_query_seconds"),
        }
    }

    /// Records how long a request waited for a pooled connection (a full pool makes it
    /// queue).
    pub(crate) fn record_pool_wait(&self, role: HostRole, since: Instant) {
        self.pool_wait[role_index(role)].record(since.elapsed().as_secs_f64());
    }

    /// Wraps a connection the pool handed out for a host in `role`.
    pub(crate) fn checked_out(&self, conn: Object, role: HostRole) -> ShardConn {
        ShardConn {
            conn: Some(conn),
            held: self.query[role_index(role)].clone(),
            since: Instant::now(),
        }
    }
}

/// A connection checked out of a shard host's pool. Derefs to the pooled client;
/// dropping it returns the connection and records how long it was used.
pub struct ShardConn {
    /// Always `Some` until dropped or taken apart.
    conn: Option<Object>,
    /// Where its time goes: `strata_db_query_seconds` of its shard and role.
    held: Histogram,
    since: Instant,
}

impl ShardConn {
    /// Closes the connection instead of returning it to the pool (it broke), without
    /// recording its time: a dead connection's time says nothing about the host.
    pub fn discard(mut self) {
        if let Some(conn) = self.conn.take() {
            drop(Object::take(conn));
        }
    }
}

/// The label of a host's role.
fn role_label(role: HostRole) -> &'static str {
    match role {
        HostRole::Primary => "primary",
        _ => "replica",
    }
}

fn role_index(role: HostRole) -> usize {
    match role {
        HostRole::Primary => 0,
        _ => 1,
    }
}

impl Deref for ShardConn {
    type Target = Object;

    fn deref(&self) -> &Object {
        self.conn.as_ref().expect("a connection until dropped")
    }
}

impl DerefMut for ShardConn {
    fn deref_mut(&mut self) -> &mut Object {
        self.conn.as_mut().expect("a connection until dropped")
    }
}

impl Drop for ShardConn {
    fn drop(&mut self) {
        if self.conn.take().is_some() {
            self.held.record(self.since.elapsed().as_secs_f64());
        }
    }
}
