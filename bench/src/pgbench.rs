//! Same-run baselines with pgbench against the cluster's own Postgres hosts: a closed
//! loop at N clients for the maximum rate, and a throttled run (`-R`) whose
//! per-transaction log gives latency percentiles including schedule lag, pgbench's
//! answer to coordinated omission, comparable with the open loop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Serialize;

/// What one pgbench run measured.
#[derive(Debug, Clone, Serialize)]
pub struct PgbenchRun {
    pub script: String,
    pub host: String,
    pub clients: usize,
    pub rate_limit: Option<f64>,
    pub transactions: u64,
    pub tps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Every transaction's latency (µs, schedule lag included), sorted: for pooling
    /// turns ([`pooled`]); not reported.
    #[serde(skip)]
    pub latencies_us: Vec<f64>,
}

/// The value at quantile `q` of `sorted` latencies (µs), in ms (NaN when empty).
fn quantile_ms(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        f64::NAN
    } else {
        sorted[((sorted.len() - 1) as f64 * q).round() as usize] / 1000.0
    }
}

/// Turns of one pgbench load pooled into one run: all their transactions, the mean of
/// their rates, the percentiles of all their latencies together (None without turns).
pub fn pooled(turns: &[PgbenchRun]) -> Option<PgbenchRun> {
    let first = turns.first()?;
    let mut latencies_us: Vec<f64> = turns
        .iter()
        .flat_map(|t| t.latencies_us.iter().copied())
        .collect();
    latencies_us.sort_by(f64::total_cmp);
    Some(PgbenchRun {
        script: first.script.clone(),
        host: first.host.clone(),
        clients: first.clients,
        rate_limit: first.rate_limit,
        transactions: turns.iter().map(|t| t.transactions).sum(),
        tps: turns.iter().map(|t| t.tps).sum::<f64>() / turns.len() as f64,
        p50_ms: quantile_ms(&latencies_us, 0.50),
        p99_ms: quantile_ms(&latencies_us, 0.99),
        latencies_us,
    })
}

/// Where pgbench is: `STRATA_PG_BIN` or Debian's PostgreSQL 15 directory.
pub fn binary() -> PathBuf {
    std::env::var_os("STRATA_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
        .join("pgbench")
}

/// One pgbench invocation.
#[derive(Debug, Clone)]
pub struct PgbenchJob<'a> {
    /// `host:port`.
    pub addr: &'a str,
    pub database: &'a str,
    pub user: &'a str,
    /// The script arguments (`-S`, or `-f <file>`).
    pub script_args: &'a [&'a str],
    /// A name for the report and the log directory.
    pub script_name: &'a str,
    pub clients: usize,
    /// pgbench's threads (`-j`): each drives its share of the clients.
    pub threads: usize,
    pub duration: Duration,
    /// Throttle to this many transactions per second (`-R`).
    pub rate: Option<f64>,
}

/// Runs pgbench, logging every transaction under `work_dir`; returns the measured figures.
pub fn run(job: &PgbenchJob<'_>, work_dir: &Path) -> anyhow::Result<PgbenchRun> {
    let PgbenchJob {
        addr,
        database,
        user,
        script_args: extra,
        script_name,
        clients,
        threads,
        duration,
        rate,
    } = job.clone();
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("bad host {addr}"))?;
    let log_dir = work_dir.join(format!(
        "pgbench-{script_name}-{}",
        rate.map(|r| r as u64).unwrap_or(0)
    ));
    let _ = std::fs::remove_dir_all(&log_dir);
    std::fs::create_dir_all(&log_dir)?;
    let mut cmd = Command::new(binary());
    cmd.current_dir(&log_dir)
        .args(["-h", host, "-p", port, "-U", user, "-n", "-M", "prepared"])
        .args([
            "-c",
            &clients.to_string(),
            "-j",
            &threads.min(clients).max(1).to_string(),
            "-T",
            &duration.as_secs().to_string(),
        ])
        .args(["-l", "--log-prefix", "tx"])
        .args(extra);
    if let Some(rate) = rate {
        cmd.args(["-R", &format!("{rate:.0}")]);
    }
    cmd.arg(database);
    let output = cmd.output().map_err(|e| {
        anyhow::anyhow!(
            "cannot run {}: {e} (install postgresql-15)",
            binary().display()
        )
    })?;
    anyhow::ensure!(
        output.status.success(),
        "pgbench failed: {}",
        String::from_utf8_lossy(&output.stderr)
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let mut latencies_us = Vec::new();
    for entry in std::fs::read_dir(&log_dir)? {
        let text = std::fs::read_to_string(entry?.path())?;
        for line in text.lines() {
            // client_id transaction_no time script_no time_epoch time_us [schedule_lag]
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(time), lag) = (
                fields.get(2).and_then(|t| t.parse::<f64>().ok()),
                fields.get(6).and_then(|l| l.parse::<f64>().ok()),
            ) else {
                continue;
            };
            latencies_us.push(time + lag.unwrap_or(0.0));
        }
    }
    latencies_us.sort_by(f64::total_cmp);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let tps = stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("tps = ")
                .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        })
        .unwrap_or(latencies_us.len() as f64 / duration.as_secs_f64());
    Ok(PgbenchRun {
        script: script_name.to_owned(),
        host: addr.to_owned(),
        clients,
        rate_limit: rate,
        transactions: latencies_us.len() as u64,
        tps,
        p50_ms: quantile_ms(&latencies_us, 0.50),
        p99_ms: quantile_ms(&latencies_us, 0.99),
        latencies_us,
    })
}

/// Several pgbench runs at once, one thread each (`jobs`: each job and the directory its
/// log goes to): the same statements sent straight to several servers together.
pub fn run_at_once(jobs: &[(PgbenchJob<'_>, PathBuf)]) -> anyhow::Result<Vec<PgbenchRun>> {
    std::thread::scope(|scope| {
        let running: Vec<_> = jobs
            .iter()
            .map(|(job, dir)| scope.spawn(move || run(job, dir)))
            .collect();
        running
            .into_iter()
            .map(|r| {
                r.join()
                    .map_err(|_| anyhow::anyhow!("a pgbench thread panicked"))?
            })
            .collect()
    })
}

/// The pgbench script equivalent to `POST /v1/tasks`: the item and its feed row (with a
/// payload the size of a task's) in one transaction, in a slot the primary owns
/// (`-D slot=N`; the slot fence refuses any other), then the WAL position a consistency
/// token carries.
pub const INSERT_TASK_SCRIPT: &str = r#"\set r random(1, 2000000000)
BEGIN;
INSERT INTO tasks (id, owner_id, route_hash, slot, title, notes) VALUES ('pgbench_' || :client_id || '_' || :r || '_' || txid_current(), 'pgbench-owner', 0, :slot, 'bench task', '');
INSERT INTO change_feed (route_hash, slot, entity, entity_id, version, op, payload) VALUES (0, :slot, 'pgbench', 'pgbench_' || :client_id || '_' || :r, 1, 'upsert', '{"id": "pgbench", "owner_id": "pgbench-owner", "title": "bench task", "notes": "", "due_at": null, "done": false, "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z", "version": 1}');
END;
SELECT pg_current_wal_insert_lsn();
"#;

/// The same work as [`INSERT_TASK_SCRIPT`], statement for statement what the node sends
/// (`node/src/items/write.rs`): the two rows as one statement, pipelined with the WAL
/// position query, one round trip. The floor a node could reach with no cost of its own.
pub const NODE_STATEMENTS_SCRIPT: &str = r#"\set r random(1, 2000000000)
\startpipeline
WITH item AS (INSERT INTO tasks (id, owner_id, route_hash, slot, title, notes) VALUES ('pgbench_' || :client_id || '_' || :r || '_' || txid_current(), 'pgbench-owner', 0, :slot, 'bench task', '')) INSERT INTO change_feed (route_hash, slot, entity, entity_id, version, op, payload) VALUES (0, :slot, 'pgbench', 'pgbench_' || :client_id || '_' || :r, 1, 'upsert', '{"id": "pgbench", "owner_id": "pgbench-owner", "title": "bench task", "notes": "", "due_at": null, "done": false, "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z", "version": 1}');
SELECT pg_current_wal_insert_lsn();
\endpipeline
"#;

/// The columns the node's read of one post returns (`node/src/items/posts.rs`), for the
/// baselines that send the same read.
pub const POST_COLUMNS: &str =
    "id, owner_id, title, body, tags, visibility, created_at, updated_at, version";

/// How many scripts one pgbench run takes at most (its own limit).
pub const MAX_SCRIPTS: usize = 128;

/// One script per post of `ids` (at most [`MAX_SCRIPTS`], taken evenly), each the
/// node's read of that post by primary key; pgbench picks one at random per
/// transaction, so a run reads the posts the way the node's read load does.
pub fn read_post_scripts(ids: &[String]) -> Vec<String> {
    let step = ids.len().div_ceil(MAX_SCRIPTS).max(1);
    ids.iter()
        .step_by(step)
        .map(|id| {
            format!(
                "SELECT {POST_COLUMNS} FROM posts WHERE id = '{}';\n",
                id.replace('\'', "''")
            )
        })
        .collect()
}

/// A slot the shard in `database` at `primary` owns: where a pgbench insert passes the
/// slot fence.
pub fn owned_slot(primary: &str, database: &str) -> anyhow::Result<String> {
    let slot = psql(
        primary,
        database,
        "SELECT slot FROM shard_slots WHERE state = 'owned' ORDER BY slot LIMIT 1",
    )?;
    anyhow::ensure!(!slot.is_empty(), "{primary} owns no slot");
    Ok(slot)
}

/// `sql` through psql as the `postgres` user on `database` at `addr`; the rows, one per
/// line, columns separated by `|`.
pub fn psql(addr: &str, database: &str, sql: &str) -> anyhow::Result<String> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("bad host {addr}"))?;
    let output = std::process::Command::new("psql")
        .args([
            "-h",
            host,
            "-p",
            port,
            "-U",
            "postgres",
            "-d",
            database,
            "-Atq",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The pgbench tables (scale 10) in a database of their own on the primary; the replica
/// receives them by streaming replication.
pub fn ensure_select_tables(primary: &str) -> anyhow::Result<()> {
    if psql(
        primary,
        "postgres",
        "SELECT 1 FROM pg_database WHERE datname = 'strata_pgbench'",
    )?
    .is_empty()
    {
        psql(primary, "postgres", "CREATE DATABASE strata_pgbench")?;
    }
    if psql(
        primary,
        "strata_pgbench",
        "SELECT to_regclass('pgbench_accounts') IS NULL",
    )? == "t"
    {
        let (host, port) = primary.rsplit_once(':').expect("host:port");
        let status = std::process::Command::new(binary())
            .args([
                "-i",
                "-s",
                "10",
                "-q",
                "-h",
                host,
                "-p",
                port,
                "-U",
                "postgres",
                "strata_pgbench",
            ])
            .output()?;
        anyhow::ensure!(
            status.status.success(),
            "pgbench -i failed: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        std::thread::sleep(Duration::from_secs(2)); // let the replica replay it
    }
    Ok(())
}

/// Removes what the insert baseline wrote, so it never reaches search or a rebalance.
pub fn remove_inserted_rows(primary: &str) -> anyhow::Result<()> {
    psql(
        primary,
        "strata",
        "DELETE FROM tasks WHERE owner_id = 'pgbench-owner'; DELETE FROM change_feed WHERE entity = 'pgbench'",
    )?;
    Ok(())
}

/// `pgbench -S` (select-only by primary key) on `replica` against the scale-10 tables
/// created on `primary` if missing.
pub fn select_only(
    primary: &str,
    replica: &str,
    clients: usize,
    duration: Duration,
    rate: Option<f64>,
    work_dir: &Path,
) -> anyhow::Result<PgbenchRun> {
    ensure_select_tables(primary)?;
    let job = PgbenchJob {
        addr: replica,
        database: "strata_pgbench",
        user: "postgres",
        script_args: &["-S"],
        script_name: "select-only",
        clients,
        threads: 2,
        duration,
        rate,
    };
    run(&job, work_dir)
}

/// The task insert as a plain transaction ([`INSERT_TASK_SCRIPT`]): the write goal's
/// yardstick, named for reports.
pub const TASK_INSERT: (&str, &str) = ("insert-task", INSERT_TASK_SCRIPT);

/// The task insert as the node sends it ([`NODE_STATEMENTS_SCRIPT`]), named for reports.
pub const TASK_INSERT_AS_THE_NODE: (&str, &str) =
    ("insert-task-node-statements", NODE_STATEMENTS_SCRIPT);

/// A task insert script (`script_name` for reports: [`INSERT_TASK_SCRIPT`] or
/// [`NODE_STATEMENTS_SCRIPT`]) on `primary`, its rows removed afterwards.
pub fn insert_task(
    script: (&'static str, &str),
    primary: &str,
    clients: usize,
    duration: Duration,
    rate: Option<f64>,
    work_dir: &Path,
) -> anyhow::Result<PgbenchRun> {
    let inserts = TaskInserts::prepare(script, primary, work_dir)?;
    let result = inserts.run(clients, duration, rate);
    remove_inserted_rows(primary)?;
    result
}

/// A task insert script written once, with the slot it writes in looked up once, for
/// runs of it in turns; the caller removes the rows ([`remove_inserted_rows`]) after
/// the last.
pub struct TaskInserts<'a> {
    script_name: &'static str,
    primary: &'a str,
    /// `-D slot=N`'s value.
    slot: String,
    script: String,
    work_dir: &'a Path,
}

impl<'a> TaskInserts<'a> {
    /// Writes `script_text` under `work_dir` and finds a slot `primary` owns.
    pub fn prepare(
        (script_name, script_text): (&'static str, &str),
        primary: &'a str,
        work_dir: &'a Path,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(work_dir)?;
        let script = work_dir.join(format!("{script_name}.sql"));
        std::fs::write(&script, script_text)?;
        Ok(Self {
            script_name,
            primary,
            slot: format!("slot={}", owned_slot(primary, "strata")?),
            script: script.canonicalize()?.to_string_lossy().into_owned(),
            work_dir,
        })
    }

    /// One run of the script.
    pub fn run(
        &self,
        clients: usize,
        duration: Duration,
        rate: Option<f64>,
    ) -> anyhow::Result<PgbenchRun> {
        let job = PgbenchJob {
            addr: self.primary,
            database: "strata",
            user: "strata",
            script_args: &["-D", &self.slot, "-f", &self.script],
            script_name: self.script_name,
            clients,
            threads: 2,
            duration,
            rate,
        };
        run(&job, self.work_dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_scripts_quote_the_ids_and_stay_within_pgbench_limit() {
        let ids: Vec<String> = (0..300).map(|i| format!("p{i}")).collect();
        let scripts = read_post_scripts(&ids);
        assert!(scripts.len() <= MAX_SCRIPTS && scripts.len() >= MAX_SCRIPTS / 2);
        assert_eq!(
            scripts[1],
            format!("SELECT {POST_COLUMNS} FROM posts WHERE id = 'p3';\n")
        );
        let odd = read_post_scripts(&["it's".to_owned()]);
        assert_eq!(
            odd,
            vec![format!(
                "SELECT {POST_COLUMNS} FROM posts WHERE id = 'it''s';\n"
            )]
        );
    }

    #[test]
    fn pooled_turns_take_the_percentiles_of_all_their_transactions() {
        let turn = |tps: f64, ms: std::ops::RangeInclusive<u32>| {
            let latencies_us: Vec<f64> = ms.map(|m| f64::from(m) * 1000.0).collect();
            PgbenchRun {
                script: "insert-task".into(),
                host: "127.0.0.1:1".into(),
                clients: 16,
                rate_limit: Some(100.0),
                transactions: latencies_us.len() as u64,
                tps,
                p50_ms: quantile_ms(&latencies_us, 0.5),
                p99_ms: quantile_ms(&latencies_us, 0.99),
                latencies_us,
            }
        };
        // A quiet turn and one that met a stall: pooled, the stall is the tail.
        let pooled = pooled(&[turn(100.0, 1..=95), turn(50.0, 501..=505)]).unwrap();
        assert_eq!(pooled.transactions, 100);
        assert_eq!(pooled.tps, 75.0);
        assert_eq!(pooled.p50_ms, 51.0);
        assert_eq!(pooled.p99_ms, 504.0);
        assert!(super::pooled(&[]).is_none());
    }
}
