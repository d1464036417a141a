//! A pooled connection to one shard host that knows whose it is, so the time spent on
//! it is measured per shard and role: `strata_db_query_seconds`, from the moment the
//! pool hands the connection out until it goes back (one read's statements, or one
//! write's transaction, pipelined or not; the wait for the pool is
//! `strata_db_pool_wait_seconds`).

use std::ops::{Deref, DerefMut};
use std::time::Instant;

use deadpool_postgres::Object;

use crate::ids::ShardId;
use crate::topology::HostRole;

/// A connection checked out of a shard host's pool. Derefs to the pooled client;
/// dropping it returns the connection and records how long it was used.
pub struct ShardConn {
    /// Always `Some` until dropped or taken apart.
    conn: Option<Object>,
    shard: ShardId,
    role: &'static str,
    since: Instant,
}

impl ShardConn {
    pub(crate) fn new(conn: Object, shard: &ShardId, role: HostRole) -> Self {
        Self {
            conn: Some(conn),
            shard: shard.clone(),
            role: role_label(role),
            since: Instant::now(),
        }
    }

    /// Closes the connection instead of returning it to the pool (it broke), without
    /// recording its time: a dead connection's time says nothing about the host.
    pub fn discard(mut self) {
        if let Some(conn) = self.conn.take() {
            drop(Object::take(conn));
        }
    }
}

/// The label of a host's role.
pub fn role_label(role: HostRole) -> &'static str {
    match role {
        HostRole::Primary => "primary",
        _ => "replica",
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
            metrics::histogram!(
                "strata_db_query_seconds",
                "shard" => self.shard.to_string(),
                "role" => self.role
            )
            .record(self.since.elapsed().as_secs_f64());
        }
    }
}
