//! The Postgres floor of the shard-count comparison: the node's own read and write
//! statements sent by pgbench straight to the primaries of a cluster at once, the
//! connections spread evenly over those holding the bench's users (16 connections: 8
//! on each of 2 primaries; 1 or 2 on each of 16), each connection driven by a pgbench
//! thread of its own in every layout. Its rate with 16 shards over its rate with 2 is
//! what Postgres alone keeps on these cores when the same work is spread over more
//! servers; the node's ratio beside it says what routing adds.
//!
//! A thread per connection keeps the client side alike in every layout. With pgbench's
//! usual two threads per run, 2 shards meant 2 runs of 8 connections on 4 threads and 16
//! shards 13 runs on 16: on one server (1 database against 8), 8 connections per thread
//! kept 16.2k writes/s where a thread per 2 connections kept 14.0k in the *same*
//! database, while the database count itself cost nothing measurable (14.0k against
//! 14.4k). The floor had been charging the client's threading to the shard count.

use std::path::PathBuf;
use std::time::Duration;

use strata_sandbox::Cluster;

use crate::pgbench::{self, PgbenchJob};

/// pgbench's share of one cluster: a job per primary.
pub struct ShardFloor {
    hosts: Vec<FloorHost>,
}

/// One primary's part of the floor.
struct FloorHost {
    addr: String,
    database: String,
    user: String,
    clients: usize,
    /// `-f` for each of the node's post reads (one post per script).
    read_args: Vec<String>,
    /// `-D slot=N -f` the node's task insert, in a slot this primary owns.
    write_args: Vec<String>,
    dir: PathBuf,
}

/// What the floor's turns of one kind added up to.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FloorTotals {
    /// Each turn's rate (all primaries together), summed over the turns.
    pub rate_sum: f64,
    /// Turns added.
    pub turns: u32,
    /// Transactions pgbench logged over the turns, all primaries together.
    pub transactions: u64,
    /// CPU seconds of all the cluster's Postgres servers over the turns.
    pub postgres_secs: f64,
}

impl FloorTotals {
    /// The mean rate of a turn, all primaries together.
    pub fn rate(&self) -> f64 {
        self.rate_sum / f64::from(self.turns.max(1))
    }

    /// Adds one turn.
    pub fn add(&mut self, runs: &[pgbench::PgbenchRun], postgres_secs: f64) {
        self.rate_sum += runs.iter().map(|r| r.tps).sum::<f64>();
        self.turns += 1;
        self.transactions += runs.iter().map(|r| r.transactions).sum::<u64>();
        self.postgres_secs += postgres_secs;
    }
}

/// The read or the write half of the floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloorLoad {
    Read,
    Write,
}

impl ShardFloor {
    /// Writes the scripts for the primaries of `cluster` that hold the seeded users (the
    /// shards the node's load reaches) and spreads `connections` evenly over them.
    pub fn prepare(cluster: &Cluster, connections: usize) -> anyhow::Result<Self> {
        let map = &cluster.spec.shard_map;
        let mut loaded = Vec::new();
        for pg in cluster.postgres.iter().filter(|pg| pg.index == 0) {
            let (addr, database) = (pg.addr.to_string(), map.database_of(&pg.shard).to_owned());
            let ids: Vec<String> =
                pgbench::psql(&addr, &database, "SELECT id FROM posts ORDER BY id")?
                    .lines()
                    .map(str::to_owned)
                    .collect();
            if !ids.is_empty() {
                loaded.push((pg, addr, database, ids));
            }
        }
        anyhow::ensure!(!loaded.is_empty(), "no shard holds a post to read");
        let shares = spread(connections, loaded.len());
        let mut hosts = Vec::new();
        for ((pg, addr, database, ids), clients) in loaded.into_iter().zip(shares) {
            if clients == 0 {
                continue;
            }
            let dir = cluster
                .spec
                .data_dir
                .join("pgbench-floor")
                .join(pg.shard.to_string());
            std::fs::create_dir_all(&dir)?;
            let mut read_args = Vec::new();
            for (k, script) in pgbench::read_post_scripts(&ids).into_iter().enumerate() {
                let path = dir.join(format!("read-{k}.sql"));
                std::fs::write(&path, script)?;
                read_args.extend(["-f".to_owned(), path.to_string_lossy().into_owned()]);
            }
            let slot = pgbench::owned_slot(&addr, &database)?;
            let write = dir.join("write.sql");
            std::fs::write(&write, pgbench::NODE_STATEMENTS_SCRIPT)?;
            let write_args = vec![
                "-D".to_owned(),
                format!("slot={slot}"),
                "-f".to_owned(),
                write.to_string_lossy().into_owned(),
            ];
            hosts.push(FloorHost {
                addr,
                database,
                user: map.user.clone(),
                clients,
                read_args,
                write_args,
                dir,
            });
        }
        Ok(Self { hosts })
    }

    /// One turn of `load` on all the floor's primaries at once, for `turn` rounded up
    /// to whole seconds (pgbench's unit). Blocks.
    pub fn turn(
        &self,
        load: FloorLoad,
        turn: Duration,
    ) -> anyhow::Result<Vec<pgbench::PgbenchRun>> {
        let duration = Duration::from_secs(turn.as_secs_f64().ceil().max(1.0) as u64);
        let args: Vec<Vec<&str>> = self
            .hosts
            .iter()
            .map(|h| {
                let args = match load {
                    FloorLoad::Read => &h.read_args,
                    FloorLoad::Write => &h.write_args,
                };
                args.iter().map(String::as_str).collect()
            })
            .collect();
        let name = match load {
            FloorLoad::Read => "floor-read",
            FloorLoad::Write => "floor-write",
        };
        let jobs: Vec<(PgbenchJob<'_>, PathBuf)> = self
            .hosts
            .iter()
            .zip(&args)
            .map(|(h, args)| {
                let job = PgbenchJob {
                    addr: &h.addr,
                    database: &h.database,
                    user: &h.user,
                    script_args: args,
                    script_name: name,
                    clients: h.clients,
                    threads: h.clients,
                    duration,
                    rate: None,
                };
                (job, h.dir.clone())
            })
            .collect();
        pgbench::run_at_once(&jobs)
    }
}

/// `connections` spread as evenly as they go over `hosts` (the first ones get one more
/// when they do not divide).
fn spread(connections: usize, hosts: usize) -> Vec<usize> {
    (0..hosts)
        .map(|i| connections / hosts + usize::from(i < connections % hosts))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_spread_evenly_and_all_of_them() {
        assert_eq!(spread(16, 2), vec![8, 8]);
        assert_eq!(spread(16, 13).iter().sum::<usize>(), 16);
        assert_eq!(spread(16, 13)[..4], [2, 2, 2, 1]);
        assert_eq!(spread(2, 3), vec![1, 1, 0]);
    }

    #[test]
    fn totals_average_the_turns_and_add_up_the_transactions() {
        let run = |tps: f64, transactions: u64| pgbench::PgbenchRun {
            script: "floor-write".into(),
            host: "127.0.0.1:1".into(),
            clients: 1,
            rate_limit: None,
            transactions,
            tps,
            p50_ms: 1.0,
            p99_ms: 2.0,
            latencies_us: Vec::new(),
        };
        let mut totals = FloorTotals::default();
        totals.add(&[run(100.0, 200), run(300.0, 600)], 1.5);
        totals.add(&[run(200.0, 400), run(200.0, 400)], 0.5);
        assert_eq!(totals.rate(), 400.0);
        assert_eq!(totals.transactions, 1600);
        assert_eq!(totals.postgres_secs, 2.0);
    }
}
