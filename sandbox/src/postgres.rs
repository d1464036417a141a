//! One PostgreSQL instance of the local cluster: a primary made with `initdb`, or a
//! streaming replica made with `pg_basebackup` from its shard's primary. Also the knobs
//! tests need: stop, kill, pause, promote, delay replay.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use strata_router::{HostAddr, ShardId};

use crate::error::SandboxError;
use crate::process::{self, make_postgres_dir, postgres_command, run, wait_until};
use crate::tools::Tools;

/// The application role and database created on every shard.
pub const APP_ROLE: &str = "strata";

/// The cluster catalog's database (the shard map's default), created on every primary.
pub const CATALOG_DATABASE: &str = "strata_catalog";

/// One Postgres server process and its data directory.
#[derive(Debug, Clone)]
pub struct PgInstance {
    pub shard: ShardId,
    /// Position in the shard's host list; 0 starts as the primary.
    pub index: usize,
    pub addr: HostAddr,
    /// The instance's folder: `data/` (PGDATA) and `postgres.log`.
    pub dir: PathBuf,
    pub(crate) tools: Tools,
    pub(crate) database: String,
    pub(crate) fsync: bool,
    /// The shard replicates synchronously (see [`PgInstance::require_standby`]).
    pub(crate) synchronous: bool,
}

impl PgInstance {
    /// PGDATA.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The server log.
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// The last `lines` lines of the server's log, for an error that must say why.
    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_file()).unwrap_or_default();
        process::last_lines(&text, lines)
    }

    /// A name for logs and replication slots, e.g. `s0_1`.
    pub fn name(&self) -> String {
        format!("{}_{}", self.shard.as_str().replace('-', "_"), self.index)
    }

    fn initialized(&self) -> bool {
        self.data_dir().join("PG_VERSION").is_file()
    }

    /// Creates a primary's data directory (unless it exists) and starts it, then makes
    /// sure the application role and database exist.
    pub fn init_primary(&self) -> Result<(), SandboxError> {
        if !self.initialized() {
            make_postgres_dir(&self.dir)?;
            run(
                postgres_command(&self.tools.pg("initdb"))
                    .arg("-D")
                    .arg(self.data_dir())
                    .args([
                        "-U",
                        "postgres",
                        "--auth=trust",
                        "-E",
                        "UTF8",
                        "--no-instructions",
                    ]),
                &format!("initdb for {}", self.name()),
            )?;
            self.write_settings()?;
        }
        self.start()?;
        self.ensure_app_database()
    }

    /// Clones the primary with `pg_basebackup` into a streaming replica (unless it
    /// exists, with its own replication slot) and starts it.
    pub fn init_replica(&self, primary: &PgInstance) -> Result<(), SandboxError> {
        if !self.initialized() {
            make_postgres_dir(&self.dir)?;
            let slot = self.name();
            primary.psql(
                "postgres",
                &format!(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                     WHERE slot_name = '{slot}'"
                ),
            )?;
            run(
                postgres_command(&self.tools.pg("pg_basebackup"))
                    .args([
                        "-h",
                        primary.addr.host(),
                        "-p",
                        &primary.addr.port().to_string(),
                    ])
                    .args([
                        "-U", "postgres", "-X", "stream", "-c", "fast", "-R", "-C", "-S", &slot,
                    ])
                    .arg("-D")
                    .arg(self.data_dir()),
                &format!("pg_basebackup for {}", self.name()),
            )?;
            self.write_settings()?;
        }
        self.start()
    }

    /// Server settings of the local cluster, in `strata.conf` next to postgresql.conf.
    fn write_settings(&self) -> Result<(), SandboxError> {
        let fsync = if self.fsync { "on" } else { "off" };
        let settings = format!(
            "# Written by the Strata sandbox for {name}.\n\
             listen_addresses = '{host}'\nport = {port}\nunix_socket_directories = ''\n\
             max_connections = 200\nshared_buffers = 64MB\n\
             wal_level = replica\nmax_wal_senders = 10\nmax_replication_slots = 10\n\
             hot_standby = on\nhot_standby_feedback = on\nwal_receiver_status_interval = 1s\n\
             fsync = {fsync}\nsynchronous_commit = on\n\
             log_min_messages = warning\nlog_line_prefix = '%m [%p] {name} '\n",
            name = self.name(),
            host = self.addr.host(),
            port = self.addr.port(),
        );
        let conf = self.data_dir().join("strata.conf");
        self.write_as_postgres(&conf, &settings)?;
        let main = self.data_dir().join("postgresql.conf");
        let text =
            std::fs::read_to_string(&main).map_err(SandboxError::io("read postgresql.conf"))?;
        if !text.contains("include_if_exists = 'strata.conf'") {
            self.write_as_postgres(
                &main,
                &format!("{text}\ninclude_if_exists = 'strata.conf'\n"),
            )?;
        }
        Ok(())
    }

    fn write_as_postgres(&self, path: &Path, text: &str) -> Result<(), SandboxError> {
        std::fs::write(path, text)
            .map_err(SandboxError::io(format!("write {}", path.display())))?;
        if process::is_root() {
            run(
                Command::new("chown").arg("postgres:postgres").arg(path),
                "chown to postgres",
            )?;
        }
        Ok(())
    }

    /// Starts the server (no-op when it is already running) and waits for it.
    pub fn start(&self) -> Result<(), SandboxError> {
        if self.is_running() {
            return Ok(());
        }
        self.remove_stale_lock_file()?;
        let started = run(
            postgres_command(&self.tools.pg("pg_ctl"))
                .arg("-D")
                .arg(self.data_dir())
                .arg("-l")
                .arg(self.log_file())
                .args(["-w", "-t", "60", "start"]),
            &format!("start postgres {}", self.name()),
        );
        // pg_ctl only says to read the log; why the server stopped is in it.
        started.map(drop).map_err(|error| match error {
            SandboxError::Command {
                what,
                status,
                output,
            } => SandboxError::Command {
                what,
                status,
                output: format!("{output}\n{}", self.log_tail(8)),
            },
            other => other,
        })
    }

    /// Stops the server cleanly (fast shutdown).
    pub fn stop(&self) -> Result<(), SandboxError> {
        if !self.is_running() {
            return Ok(());
        }
        self.resume();
        run(
            postgres_command(&self.tools.pg("pg_ctl"))
                .arg("-D")
                .arg(self.data_dir())
                .args(["-m", "fast", "-w", "-t", "60", "stop"]),
            &format!("stop postgres {}", self.name()),
        )?;
        Ok(())
    }

    /// Kills the postmaster and every child with SIGKILL, like a crash, and waits until
    /// all of them are gone (a dying backend still holds the shared memory a restart
    /// needs). The postmaster is frozen first so it cannot fork while its children die.
    pub fn kill(&self) {
        let Some(pid) = self.postmaster_pid() else {
            return;
        };
        process::signal(pid, libc::SIGSTOP);
        let all = process::with_children(pid);
        for &p in all.iter().rev() {
            process::signal(p, libc::SIGKILL);
        }
        let _ = wait_until(
            "postgres to die",
            Duration::from_secs(10),
            &self.dir,
            || all.iter().all(|p| !process::alive(*p)),
        );
    }

    /// Freezes every process of the server with SIGSTOP: it holds connections but answers
    /// nothing and replays nothing.
    pub fn pause(&self) {
        if let Some(pid) = self.postmaster_pid() {
            for p in process::with_children(pid) {
                process::signal(p, libc::SIGSTOP);
            }
        }
    }

    /// Undoes [`PgInstance::pause`].
    pub fn resume(&self) {
        if let Some(pid) = self.postmaster_pid() {
            for p in process::with_children(pid) {
                process::signal(p, libc::SIGCONT);
            }
        }
    }

    /// Promotes a replica to primary (`pg_ctl promote`), as an HA tool would.
    pub fn promote(&self) -> Result<(), SandboxError> {
        run(
            postgres_command(&self.tools.pg("pg_ctl"))
                .arg("-D")
                .arg(self.data_dir())
                .args(["-w", "-t", "60", "promote"]),
            &format!("promote {}", self.name()),
        )?;
        Ok(())
    }

    /// Delays WAL replay on a replica by `delay` (`recovery_min_apply_delay`), reloaded
    /// without a restart. Zero removes the delay.
    pub fn set_apply_delay(&self, delay: Duration) -> Result<(), SandboxError> {
        self.psql(
            "postgres",
            &format!(
                "ALTER SYSTEM SET recovery_min_apply_delay = '{}ms'",
                delay.as_millis()
            ),
        )?;
        self.psql("postgres", "SELECT pg_reload_conf()")?;
        Ok(())
    }

    /// Removes `postmaster.pid` left by a crashed server. Postgres itself refuses to start
    /// while the pid in it exists, and a killed postmaster whose parent does not reap it
    /// (PID 1 in some containers) lingers as a zombie that still "exists".
    fn remove_stale_lock_file(&self) -> Result<(), SandboxError> {
        let lock = self.data_dir().join("postmaster.pid");
        if lock.exists() && self.postmaster_pid().is_none() {
            std::fs::remove_file(&lock)
                .map_err(SandboxError::io(format!("remove stale {}", lock.display())))?;
        }
        Ok(())
    }

    /// The postmaster's pid while the server runs.
    pub fn postmaster_pid(&self) -> Option<i32> {
        process::read_pid(&self.data_dir().join("postmaster.pid"))
            .filter(|pid| process::alive(*pid))
    }

    /// True while the postmaster runs.
    pub fn is_running(&self) -> bool {
        self.postmaster_pid().is_some()
    }

    /// On a synchronous shard's first primary, once its replicas run: commits wait for a
    /// replica from now on (`synchronous_standby_names`, kept in this server's
    /// `postgresql.auto.conf`, so a promoted replica does not inherit it). Applied after
    /// the replicas exist, since commits would otherwise wait for ever during set-up.
    pub fn require_standby(&self) -> Result<(), SandboxError> {
        if !self.synchronous || self.index != 0 {
            return Ok(());
        }
        self.psql(
            "postgres",
            "ALTER SYSTEM SET synchronous_standby_names = '*'",
        )?;
        self.psql("postgres", "SELECT pg_reload_conf()")?;
        Ok(())
    }

    /// Runs SQL as the superuser on `database` and returns psql's unaligned output.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, SandboxError> {
        run(
            Command::new(self.tools.pg("psql"))
                .args(["-h", self.addr.host(), "-p", &self.addr.port().to_string()])
                .args([
                    "-U",
                    "postgres",
                    "-d",
                    database,
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-Atq",
                    "-c",
                    sql,
                ]),
            &format!("psql on {}", self.name()),
        )
        .map(|out| out.trim().to_owned())
    }

    fn ensure_app_database(&self) -> Result<(), SandboxError> {
        let role_exists = self.psql(
            "postgres",
            &format!("SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}'"),
        )?;
        if role_exists.is_empty() {
            self.psql(
                "postgres",
                &format!("CREATE ROLE {APP_ROLE} LOGIN; GRANT pg_monitor TO {APP_ROLE}"),
            )?;
        }
        // The shard's database, and the catalog's (used on the hosts the map names for it).
        for database in [self.database.as_str(), CATALOG_DATABASE] {
            let exists = self.psql(
                "postgres",
                &format!("SELECT 1 FROM pg_database WHERE datname = '{database}'"),
            )?;
            if exists.is_empty() {
                self.psql(
                    "postgres",
                    &format!("CREATE DATABASE {database} OWNER {APP_ROLE}"),
                )?;
            }
        }
        Ok(())
    }
}
