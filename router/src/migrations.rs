//! Forward-only SQL migrations from `migrations/`, embedded in the binary, applied to
//! every shard's primary and recorded per shard in `strata_schema_history` (refinery).
//! Nodes check that every shard is current before serving.

use deadpool_postgres::Object;

use crate::ids::ShardId;
use crate::topology::{RouterError, Topology};

mod embedded {
    refinery::embed_migrations!("../migrations");
}

/// Where per-shard migration history is kept.
const HISTORY_TABLE: &str = "strata_schema_history";

/// Serializes concurrent `migrate` runs against one shard (an arbitrary fixed key).
const MIGRATION_LOCK_KEY: i64 = 0x5354_5241_5441_0001;

/// Why migrating or checking a shard failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error(transparent)]
    Router(#[from] RouterError),
    #[error("shard {shard}: {source}")]
    Db {
        shard: ShardId,
        source: tokio_postgres::Error,
    },
    #[error("shard {shard}: migration failed: {detail}")]
    Refinery { shard: ShardId, detail: String },
    #[error(
        "shard {shard} is behind on migrations: at version {applied}, this build needs {latest}; \
         run `strata migrate`"
    )]
    Behind {
        shard: ShardId,
        applied: i64,
        latest: i64,
    },
    #[error(
        "shard {shard} is at migration version {applied}, newer than this build knows ({latest})"
    )]
    Ahead {
        shard: ShardId,
        applied: i64,
        latest: i64,
    },
}

/// What one shard's migration run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ShardMigration {
    pub shard: ShardId,
    pub applied_now: Vec<String>,
    pub version: i64,
}

/// The newest migration version this build carries.
pub fn latest_version() -> i64 {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| i64::from(m.version()))
        .max()
        .unwrap_or(0)
}

fn runner() -> refinery::Runner {
    let mut runner = embedded::migrations::runner();
    runner.set_migration_table_name(HISTORY_TABLE);
    runner.set_abort_divergent(true)
}

/// Applies every pending migration to every shard's primary, one shard at a time.
pub async fn migrate_all(topology: &Topology) -> Result<Vec<ShardMigration>, MigrationError> {
    let mut done = Vec::new();
    for shard in topology.shard_ids() {
        done.push(migrate_one(topology, &shard).await?);
    }
    Ok(done)
}

/// Applies every pending migration to one shard's primary.
pub async fn migrate_one(
    topology: &Topology,
    shard: &ShardId,
) -> Result<ShardMigration, MigrationError> {
    let mut conn = topology.primary(shard).await?;
    migrate_shard(shard, &mut conn).await
}

async fn migrate_shard(
    shard: &ShardId,
    conn: &mut Object,
) -> Result<ShardMigration, MigrationError> {
    let db = |source| MigrationError::Db {
        shard: shard.clone(),
        source,
    };
    conn.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .map_err(db)?;
    let outcome = runner().run_async(&mut ***conn).await;
    conn.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .map_err(db)?;
    let report = outcome.map_err(|e| MigrationError::Refinery {
        shard: shard.clone(),
        detail: e.to_string(),
    })?;
    Ok(ShardMigration {
        shard: shard.clone(),
        applied_now: report
            .applied_migrations()
            .iter()
            .map(|m| m.to_string())
            .collect(),
        version: applied_version(shard, conn).await?,
    })
}

async fn applied_version(shard: &ShardId, conn: &mut Object) -> Result<i64, MigrationError> {
    // A shard never migrated has no history table: it is at version 0, not in error.
    let has_history: bool = conn
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&HISTORY_TABLE])
        .await
        .map_err(|source| MigrationError::Db {
            shard: shard.clone(),
            source,
        })?
        .get(0);
    if !has_history {
        return Ok(0);
    }
    let last = runner()
        .get_last_applied_migration_async(&mut ***conn)
        .await
        .map_err(|e| MigrationError::Refinery {
            shard: shard.clone(),
            detail: e.to_string(),
        })?;
    Ok(last.map(|m| i64::from(m.version())).unwrap_or(0))
}

/// The migration version every shard is at, read from any host of the shard.
pub async fn versions(topology: &Topology) -> Result<Vec<(ShardId, i64)>, MigrationError> {
    let mut out = Vec::new();
    for shard in topology.shard_ids() {
        let (mut conn, _) = topology.reader(&shard, None).await?;
        let version = applied_version(&shard, &mut conn).await?;
        out.push((shard, version));
    }
    Ok(out)
}

/// Fails unless every shard is exactly at this build's latest version.
pub async fn ensure_current(topology: &Topology) -> Result<(), MigrationError> {
    let latest = latest_version();
    for (shard, applied) in versions(topology).await? {
        if applied < latest {
            return Err(MigrationError::Behind {
                shard,
                applied,
                latest,
            });
        }
        if applied > latest {
            return Err(MigrationError::Ahead {
                shard,
                applied,
                latest,
            });
        }
    }
    Ok(())
}
