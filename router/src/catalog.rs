//! The cluster catalog: the one authority on placement once a cluster exists.
//!
//! It lives in its own database (`strata_catalog` by default) on the hosts named under
//! `[catalog]` in the shard map (by default the first shard's hosts, so it is replicated
//! like a shard). It holds the shard list (hosts, weights, draining), every slot's owner
//! and read floor, the moves of a rebalance, and an epoch that grows with every change of
//! placement. `shard-map.toml` only seeds a new catalog; afterwards a map that disagrees
//! is refused (see [`Disagreement`]). Every change is announced with
//! `NOTIFY strata_catalog`, and nodes also poll the epoch, so they follow without a
//! restart.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls};

use crate::ids::{HostAddr, SLOT_COUNT, ShardId, Slot};
use crate::lsn::Lsn;
use crate::placement::Placement;
use crate::shard_map::ShardMap;

/// The channel catalog changes are announced on.
pub const CHANNEL: &str = "strata_catalog";

/// Why the catalog could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("no catalog primary among {hosts}: {reasons}")]
    NoPrimary { hosts: String, reasons: String },
    #[error("catalog database: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error(
        "the cluster catalog does not exist yet: run `strata migrate` (it creates the catalog \
         from the shard map)"
    )]
    Missing,
    #[error("the catalog holds unreadable data: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Refused(String),
}

/// A shard as the catalog records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CatalogShard {
    pub id: ShardId,
    pub weight: u32,
    pub hosts: Vec<HostAddr>,
    /// Being emptied by `strata shard drain`: it takes no slots in a new plan.
    pub draining: bool,
}

/// Where slot moves stand (see [`Catalog::move_progress`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoveProgress {
    /// Moves started and not yet cleaned up or cancelled.
    pub unfinished: u64,
    /// Moves done, as recorded (the records of a removed shard are dropped with it).
    pub finished: u64,
    /// How long the least recently advanced unfinished move has gone without a phase
    /// change or progress record (zero when none is unfinished).
    pub stalled_for: std::time::Duration,
}

/// Where a slot's move stands. A move goes copying → catching_up → flipping → flipped →
/// cleaned, or ends cancelled; each phase is recorded before the next begins, so a killed
/// rebalance resumes from the phase it reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MovePhase {
    /// The target is marked incoming and the slot's rows are being copied.
    Copying,
    /// The bulk copy is done; changes made since are being applied from the feed.
    CatchingUp,
    /// Writes to the slot are fenced on the source; the flip is under way.
    Flipping,
    /// The catalog names the target; the source still holds the old copy.
    Flipped,
    /// The source's copy is gone.
    Cleaned,
    /// Given up; the slot stayed on its source.
    Cancelled,
}

impl MovePhase {
    fn as_str(self) -> &'static str {
        match self {
            Self::Copying => "copying",
            Self::CatchingUp => "catching_up",
            Self::Flipping => "flipping",
            Self::Flipped => "flipped",
            Self::Cleaned => "cleaned",
            Self::Cancelled => "cancelled",
        }
    }

    fn parse(raw: &str) -> Result<Self, CatalogError> {
        Ok(match raw {
            "copying" => Self::Copying,
            "catching_up" => Self::CatchingUp,
            "flipping" => Self::Flipping,
            "flipped" => Self::Flipped,
            "cleaned" => Self::Cleaned,
            "cancelled" => Self::Cancelled,
            other => return Err(CatalogError::Corrupt(format!("move phase {other:?}"))),
        })
    }

    /// Whether the move still has work to do before its slot is served by the target.
    pub fn in_progress(self) -> bool {
        matches!(self, Self::Copying | Self::CatchingUp | Self::Flipping)
    }
}

/// One slot's move, as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct MoveRecord {
    pub slot: Slot,
    pub source: ShardId,
    pub target: ShardId,
    pub phase: MovePhase,
    /// The source snapshot the target is consistent with (`pg_snapshot` text).
    #[serde(skip)]
    pub snapshot: Option<String>,
    pub rows_copied: i64,
    /// How long writes to the slot waited during the flip.
    pub pause_ms: Option<f64>,
    /// The target's last change-feed sequence at the flip (what `verify` compares up to).
    #[serde(skip)]
    pub flip_feed_seq: Option<i64>,
}

/// Everything the catalog says, read in one transaction.
#[derive(Debug, Clone)]
pub struct CatalogState {
    pub epoch: u64,
    pub virtual_nodes: u32,
    pub shards: Vec<CatalogShard>,
    /// The owner of every slot.
    pub placement: Placement,
    /// Per slot: the owner's WAL position at which the slot opened there after a move. A
    /// replica serves the slot only once it has replayed this far, so a read never sees
    /// the slot before its rows arrived (and a token from the old shard still gets its
    /// writes back).
    pub read_floors: Vec<Option<Lsn>>,
    pub moves: Vec<MoveRecord>,
}

impl CatalogState {
    /// A shard by id.
    pub fn shard(&self, id: &ShardId) -> Option<&CatalogShard> {
        self.shards.iter().find(|s| &s.id == id)
    }

    /// The placement the ring gives the current shards and weights (draining shards
    /// excluded): what a rebalance moves towards.
    pub fn desired_placement(&self) -> Result<Placement, CatalogError> {
        let active: Vec<(ShardId, u32)> = self
            .shards
            .iter()
            .filter(|s| !s.draining)
            .map(|s| (s.id.clone(), s.weight))
            .collect();
        if active.is_empty() {
            return Err(CatalogError::Refused(
                "every shard is draining: no shard could take the slots".into(),
            ));
        }
        Ok(Placement::from_weights(&active, self.virtual_nodes))
    }
}

/// How a shard map differs from the catalog, named so the operator can act.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "shard-map.toml disagrees with the cluster catalog (epoch {epoch}): {}. The catalog is \
     the authority once a cluster exists: change the cluster with `strata shard add` / \
     `strata shard drain` / `strata shard remove`, then make the map list the catalog's \
     shards (`strata shard status` shows them)",
    differences.join("; ")
)]
pub struct Disagreement {
    pub epoch: u64,
    pub differences: Vec<String>,
}

/// Refuses a map whose shards, hosts or weights are not the catalog's.
pub fn check_map_agrees(map: &ShardMap, state: &CatalogState) -> Result<(), Disagreement> {
    let mut differences = Vec::new();
    for shard in &map.shards {
        match state.shard(&shard.id) {
            None => differences.push(format!(
                "the map lists shard {} that the catalog does not have",
                shard.id
            )),
            Some(known) => {
                let map_hosts: BTreeSet<_> = shard.hosts.iter().collect();
                let catalog_hosts: BTreeSet<_> = known.hosts.iter().collect();
                if map_hosts != catalog_hosts {
                    differences.push(format!(
                        "shard {} has hosts {} in the map but {} in the catalog",
                        shard.id,
                        join(&shard.hosts),
                        join(&known.hosts)
                    ));
                }
                if shard.weight != known.weight {
                    differences.push(format!(
                        "shard {} has weight {} in the map but {} in the catalog",
                        shard.id, shard.weight, known.weight
                    ));
                }
            }
        }
    }
    for known in &state.shards {
        if map.shard(&known.id).is_none() {
            differences.push(format!(
                "the catalog has shard {} (hosts {}) that the map does not list",
                known.id,
                join(&known.hosts)
            ));
        }
    }
    if differences.is_empty() {
        Ok(())
    } else {
        Err(Disagreement {
            epoch: state.epoch,
            differences,
        })
    }
}

fn join(hosts: &[HostAddr]) -> String {
    hosts
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS cluster (
    id            boolean     PRIMARY KEY DEFAULT true CHECK (id),
    epoch         bigint      NOT NULL,
    virtual_nodes integer     NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS shards (
    id       text    PRIMARY KEY,
    weight   integer NOT NULL,
    hosts    text[]  NOT NULL,
    draining boolean NOT NULL DEFAULT false
);
CREATE TABLE IF NOT EXISTS slots (
    slot       integer PRIMARY KEY CHECK (slot >= 0 AND slot < 4096),
    shard      text    NOT NULL REFERENCES shards (id),
    read_floor pg_lsn,
    epoch      bigint  NOT NULL
);
CREATE TABLE IF NOT EXISTS moves (
    slot          integer     PRIMARY KEY CHECK (slot >= 0 AND slot < 4096),
    source        text        NOT NULL,
    target        text        NOT NULL,
    phase         text        NOT NULL,
    snapshot      text,
    rows_copied   bigint      NOT NULL DEFAULT 0,
    pause_ms      float8,
    flip_feed_seq bigint,
    started_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
";

/// Serializes catalog creation and placement changes (an arbitrary fixed key).
const CATALOG_LOCK_KEY: i64 = 0x5354_5241_5441_0002;

/// How to reach the catalog database.
#[derive(Debug, Clone)]
pub struct Catalog {
    hosts: Vec<HostAddr>,
    database: String,
    user: String,
    password: Option<String>,
    connect_timeout: Duration,
}

impl Catalog {
    /// The catalog of the cluster a shard map describes.
    pub fn from_map(map: &ShardMap) -> Self {
        Self {
            hosts: map.catalog_hosts().to_vec(),
            database: map.catalog.database.clone(),
            user: map.user.clone(),
            password: map.password.clone(),
            connect_timeout: Duration::from_secs(3),
        }
    }

    fn config(&self, host: &HostAddr, database: &str) -> tokio_postgres::Config {
        let mut pg = tokio_postgres::Config::new();
        pg.host(host.host())
            .port(host.port())
            .user(&self.user)
            .dbname(database)
            .application_name("strata-catalog")
            .connect_timeout(self.connect_timeout);
        if let Some(password) = &self.password {
            pg.password(password);
        }
        pg
    }

    /// A connection to the catalog's primary. Notifications, when wanted, go to `notify`.
    async fn connect_on(
        &self,
        database: &str,
        notify: Option<mpsc::UnboundedSender<String>>,
    ) -> Result<Client, CatalogError> {
        let mut reasons = Vec::new();
        for host in &self.hosts {
            let attempt = async {
                let (client, mut connection) = self.config(host, database).connect(NoTls).await?;
                let notify = notify.clone();
                tokio::spawn(async move {
                    let mut messages =
                        futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(Ok(message)) = messages.next().await {
                        if let (AsyncMessage::Notification(n), Some(tx)) = (message, &notify) {
                            let _ = tx.send(n.payload().to_owned());
                        }
                    }
                });
                let in_recovery: bool = client
                    .query_one("SELECT pg_is_in_recovery()", &[])
                    .await?
                    .get(0);
                Ok::<_, tokio_postgres::Error>((client, in_recovery))
            };
            match tokio::time::timeout(self.connect_timeout, attempt).await {
                Ok(Ok((client, false))) => return Ok(client),
                Ok(Ok((_, true))) => reasons.push(format!("{host} is a replica")),
                Ok(Err(e)) => reasons.push(format!("{host}: {e}")),
                Err(_) => reasons.push(format!("{host}: no answer")),
            }
        }
        Err(CatalogError::NoPrimary {
            hosts: join(&self.hosts),
            reasons: reasons.join("; "),
        })
    }

    /// A connection to the catalog database on its primary.
    pub async fn connect(&self) -> Result<Client, CatalogError> {
        self.connect_on(&self.database, None).await
    }

    /// Where slot moves stand, for monitoring: how many are unfinished, and how long
    /// the least recently advanced of them has gone without progress.
    pub async fn move_progress(&self) -> Result<MoveProgress, CatalogError> {
        let client = self.connect().await?;
        let row = client
            .query_one(
                "SELECT count(*) FILTER (WHERE phase NOT IN ('cleaned', 'cancelled')), \
                        count(*) FILTER (WHERE phase = 'cleaned'), \
                        coalesce(extract(epoch FROM now() - min(updated_at) \
                            FILTER (WHERE phase NOT IN ('cleaned', 'cancelled'))), 0)::float8 \
                 FROM moves",
                &[],
            )
            .await?;
        Ok(MoveProgress {
            unfinished: row.get::<_, i64>(0) as u64,
            finished: row.get::<_, i64>(1) as u64,
            stalled_for: std::time::Duration::from_secs_f64(row.get::<_, f64>(2).max(0.0)),
        })
    }

    /// A connection that receives the catalog's change announcements.
    pub async fn listen(&self) -> Result<(Client, mpsc::UnboundedReceiver<String>), CatalogError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let client = self.connect_on(&self.database, Some(tx)).await?;
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        Ok((client, rx))
    }

    /// Creates the catalog database (when the role may) and its tables, then seeds it
    /// from the map if it is empty. Returns the catalog's state either way.
    pub async fn create_or_open(&self, map: &ShardMap) -> Result<CatalogState, CatalogError> {
        self.ensure_database().await?;
        let mut client = self.connect().await?;
        client.batch_execute(SCHEMA).await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CATALOG_LOCK_KEY])
            .await?;
        let exists = tx
            .query_opt("SELECT epoch FROM cluster", &[])
            .await?
            .is_some();
        if !exists {
            let placement = Placement::from_map(map);
            tx.execute(
                "INSERT INTO cluster (epoch, virtual_nodes) VALUES (1, $1)",
                &[&(map.ring.virtual_nodes as i32)],
            )
            .await?;
            for shard in &map.shards {
                let hosts: Vec<String> = shard.hosts.iter().map(ToString::to_string).collect();
                tx.execute(
                    "INSERT INTO shards (id, weight, hosts) VALUES ($1, $2, $3)",
                    &[&shard.id.as_str(), &(shard.weight as i32), &hosts],
                )
                .await?;
            }
            let slots: Vec<i32> = Slot::all().map(|s| i32::from(s.get())).collect();
            let owners: Vec<&str> = Slot::all()
                .map(|s| placement.shard_of_slot(s).as_str())
                .collect();
            tx.execute(
                "INSERT INTO slots (slot, shard, epoch) SELECT s, o, 1 FROM unnest($1::int[], $2::text[]) AS t(s, o)",
                &[&slots, &owners],
            )
            .await?;
            tracing::info!("cluster catalog created from the shard map");
        }
        tx.commit().await?;
        load(&client).await
    }

    async fn ensure_database(&self) -> Result<(), CatalogError> {
        if self.connect().await.is_ok() {
            return Ok(());
        }
        // The catalog database may not exist yet: create it from the maintenance database.
        let admin = self.connect_on("postgres", None).await?;
        let exists = admin
            .query_opt(
                "SELECT 1 FROM pg_database WHERE datname = $1",
                &[&self.database],
            )
            .await?
            .is_some();
        if !exists {
            admin
                .batch_execute(&format!("CREATE DATABASE {}", self.database))
                .await?;
        }
        Ok(())
    }

    /// Reads the whole catalog.
    pub async fn load(&self) -> Result<CatalogState, CatalogError> {
        let client = self.connect().await?;
        load(&client).await
    }
}

/// Reads the catalog's epoch (cheap: what the poll asks).
pub async fn epoch(client: &Client) -> Result<u64, CatalogError> {
    let row = client
        .query_opt("SELECT epoch FROM cluster", &[])
        .await
        .map_err(missing_if_undefined)?
        .ok_or(CatalogError::Missing)?;
    Ok(row.get::<_, i64>(0) as u64)
}

fn missing_if_undefined(e: tokio_postgres::Error) -> CatalogError {
    if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) {
        CatalogError::Missing
    } else {
        CatalogError::Db(e)
    }
}

/// Reads the whole catalog on `client`, in one repeatable-read transaction.
pub async fn load(client: &Client) -> Result<CatalogState, CatalogError> {
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await?;
    let result = load_in_transaction(client).await;
    let _ = client.batch_execute("COMMIT").await;
    result
}

async fn load_in_transaction(client: &Client) -> Result<CatalogState, CatalogError> {
    let cluster = client
        .query_opt("SELECT epoch, virtual_nodes FROM cluster", &[])
        .await
        .map_err(missing_if_undefined)?
        .ok_or(CatalogError::Missing)?;
    let epoch = cluster.get::<_, i64>(0) as u64;
    let virtual_nodes = cluster.get::<_, i32>(1) as u32;
    let shards = load_shards(client).await?;
    let mut owners: Vec<Option<ShardId>> = vec![None; usize::from(SLOT_COUNT)];
    let mut read_floors = vec![None; usize::from(SLOT_COUNT)];
    for row in client
        .query("SELECT slot, shard, read_floor::text FROM slots", &[])
        .await?
    {
        let (slot, owner, floor) = slot_from_row(&row)?;
        let index = usize::from(slot.get());
        owners[index] = Some(owner);
        read_floors[index] = floor;
    }
    let owners = owners
        .into_iter()
        .enumerate()
        .map(|(slot, owner)| {
            owner.ok_or_else(|| CatalogError::Corrupt(format!("slot {slot} has no owner")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let moves = client
        .query(
            "SELECT slot, source, target, phase, snapshot, rows_copied, pause_ms, flip_feed_seq \
             FROM moves ORDER BY slot",
            &[],
        )
        .await?
        .iter()
        .map(move_from_row)
        .collect::<Result<_, _>>()?;
    Ok(CatalogState {
        epoch,
        virtual_nodes,
        shards,
        placement: Placement::from_owners(owners),
        read_floors,
        moves,
    })
}

/// What a node needs to catch up from an epoch it knows: the epoch now, every shard, and
/// the slots whose owner or read floor changed after that epoch.
#[derive(Debug, Clone)]
pub struct PlacementUpdate {
    pub epoch: u64,
    pub shards: Vec<CatalogShard>,
    pub slots: Vec<SlotRow>,
}

/// Reads what changed since `since` on `client`, in one repeatable-read transaction
/// (each flip stamps its slot with the epoch it created).
pub async fn load_update(client: &Client, since: u64) -> Result<PlacementUpdate, CatalogError> {
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await?;
    let result = async {
        let epoch = epoch(client).await?;
        let shards = load_shards(client).await?;
        let mut slots = Vec::new();
        for row in client
            .query(
                "SELECT slot, shard, read_floor::text FROM slots WHERE epoch > $1",
                &[&(since as i64)],
            )
            .await?
        {
            slots.push(slot_from_row(&row)?);
        }
        Ok(PlacementUpdate {
            epoch,
            shards,
            slots,
        })
    }
    .await;
    let _ = client.batch_execute("COMMIT").await;
    result
}

async fn load_shards(client: &Client) -> Result<Vec<CatalogShard>, CatalogError> {
    let mut shards = Vec::new();
    for row in client
        .query(
            "SELECT id, weight, hosts, draining FROM shards ORDER BY id",
            &[],
        )
        .await?
    {
        let id = ShardId::parse(row.get(0)).map_err(|e| CatalogError::Corrupt(e.to_string()))?;
        let hosts = row
            .get::<_, Vec<String>>(2)
            .iter()
            .map(|h| h.parse::<HostAddr>())
            .collect::<Result<_, _>>()
            .map_err(|e| CatalogError::Corrupt(e.to_string()))?;
        shards.push(CatalogShard {
            id,
            weight: row.get::<_, i32>(1) as u32,
            hosts,
            draining: row.get(3),
        });
    }
    Ok(shards)
}

/// A slot, its owner and its read floor.
type SlotRow = (Slot, ShardId, Option<Lsn>);

fn slot_from_row(row: &tokio_postgres::Row) -> Result<SlotRow, CatalogError> {
    let corrupt = |e: String| CatalogError::Corrupt(e);
    let slot = Slot::new(row.get::<_, i32>(0) as u32).map_err(|e| corrupt(e.to_string()))?;
    let owner = ShardId::parse(row.get(1)).map_err(|e| corrupt(e.to_string()))?;
    let floor: Option<String> = row.get(2);
    let floor = floor
        .map(|f| f.parse::<Lsn>())
        .transpose()
        .map_err(|e| corrupt(e.to_string()))?;
    Ok((slot, owner, floor))
}

fn move_from_row(row: &tokio_postgres::Row) -> Result<MoveRecord, CatalogError> {
    let corrupt = |e: crate::ids::IdError| CatalogError::Corrupt(e.to_string());
    Ok(MoveRecord {
        slot: Slot::new(row.get::<_, i32>(0) as u32).map_err(corrupt)?,
        source: ShardId::parse(row.get(1)).map_err(corrupt)?,
        target: ShardId::parse(row.get(2)).map_err(corrupt)?,
        phase: MovePhase::parse(row.get(3))?,
        snapshot: row.get(4),
        rows_copied: row.get(5),
        pause_ms: row.get(6),
        flip_feed_seq: row.get(7),
    })
}

/// Changes to the catalog, each in its own transaction under the catalog lock, each
/// announced to the nodes.
pub struct CatalogWriter<'a> {
    client: &'a mut Client,
}

impl<'a> CatalogWriter<'a> {
    /// Writes through `client` (a connection to the catalog primary).
    pub fn new(client: &'a mut Client) -> Self {
        Self { client }
    }

    /// Registers a shard with no slots; bumps the epoch so nodes build its pools.
    pub async fn add_shard(
        &mut self,
        id: &ShardId,
        hosts: &[HostAddr],
        weight: u32,
    ) -> Result<u64, CatalogError> {
        let hosts: Vec<String> = hosts.iter().map(ToString::to_string).collect();
        let id = id.clone();
        self.change(move |tx| {
            Box::pin(async move {
                let known = tx
                    .query_opt("SELECT hosts FROM shards WHERE id = $1", &[&id.as_str()])
                    .await?;
                if let Some(row) = known {
                    let existing: Vec<String> = row.get(0);
                    if existing == hosts {
                        return Ok(false);
                    }
                    return Err(CatalogError::Refused(format!(
                        "shard {id} is already registered with hosts {}",
                        existing.join(", ")
                    )));
                }
                tx.execute(
                    "INSERT INTO shards (id, weight, hosts) VALUES ($1, $2, $3)",
                    &[&id.as_str(), &(weight as i32), &hosts],
                )
                .await?;
                Ok(true)
            })
        })
        .await
    }

    /// Marks a shard draining (it gets no slots in the next plan).
    pub async fn set_draining(&mut self, id: &ShardId) -> Result<u64, CatalogError> {
        let id = id.clone();
        self.change(move |tx| {
            Box::pin(async move {
                let changed = tx
                    .execute(
                        "UPDATE shards SET draining = true WHERE id = $1",
                        &[&id.as_str()],
                    )
                    .await?;
                if changed == 0 {
                    return Err(CatalogError::Refused(format!(
                        "no shard {id} in the catalog"
                    )));
                }
                Ok(true)
            })
        })
        .await
    }

    /// Forgets a shard that owns no slot and has no move left to finish.
    pub async fn remove_shard(&mut self, id: &ShardId) -> Result<u64, CatalogError> {
        let id = id.clone();
        self.change(move |tx| {
            Box::pin(async move {
                let owned: i64 = tx
                    .query_one("SELECT count(*) FROM slots WHERE shard = $1", &[&id.as_str()])
                    .await?
                    .get(0);
                if owned > 0 {
                    return Err(CatalogError::Refused(format!(
                        "shard {id} still owns {owned} slots: run `strata shard drain {id}` first"
                    )));
                }
                let pending: i64 = tx
                    .query_one(
                        "SELECT count(*) FROM moves WHERE (source = $1 OR target = $1) \
                         AND phase NOT IN ('cleaned', 'cancelled')",
                        &[&id.as_str()],
                    )
                    .await?
                    .get(0);
                if pending > 0 {
                    return Err(CatalogError::Refused(format!(
                        "shard {id} has {pending} moves not cleaned up: run `strata shard rebalance` \
                         and `strata shard cleanup` first"
                    )));
                }
                let removed = tx
                    .execute("DELETE FROM shards WHERE id = $1", &[&id.as_str()])
                    .await?;
                if removed == 0 {
                    return Err(CatalogError::Refused(format!("no shard {id} in the catalog")));
                }
                tx.execute("DELETE FROM moves WHERE source = $1 OR target = $1", &[&id.as_str()])
                    .await?;
                Ok(true)
            })
        })
        .await
    }

    /// Records the start of a slot's move (or returns the unfinished one already there).
    pub async fn begin_move(
        &mut self,
        slot: Slot,
        source: &ShardId,
        target: &ShardId,
    ) -> Result<MoveRecord, CatalogError> {
        let tx = self.client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CATALOG_LOCK_KEY])
            .await?;
        let slot_i = i32::from(slot.get());
        let existing = tx
            .query_opt(
                "SELECT slot, source, target, phase, snapshot, rows_copied, pause_ms, flip_feed_seq \
                 FROM moves WHERE slot = $1",
                &[&slot_i],
            )
            .await?
            .map(|r| move_from_row(&r))
            .transpose()?;
        if let Some(existing) = existing.filter(|m| m.phase.in_progress()) {
            tx.commit().await?;
            return Ok(existing);
        }
        let owner: String = tx
            .query_one("SELECT shard FROM slots WHERE slot = $1", &[&slot_i])
            .await?
            .get(0);
        if owner != source.as_str() {
            return Err(CatalogError::Refused(format!(
                "slot {slot} is owned by {owner}, not {source}"
            )));
        }
        let row = tx
            .query_one(
                "INSERT INTO moves (slot, source, target, phase) VALUES ($1, $2, $3, 'copying') \
                 ON CONFLICT (slot) DO UPDATE SET source = $2, target = $3, phase = 'copying', \
                 snapshot = NULL, rows_copied = 0, pause_ms = NULL, flip_feed_seq = NULL, \
                 started_at = now(), updated_at = now() \
                 RETURNING slot, source, target, phase, snapshot, rows_copied, pause_ms, flip_feed_seq",
                &[&slot_i, &source.as_str(), &target.as_str()],
            )
            .await?;
        tx.commit().await?;
        move_from_row(&row)
    }

    /// Records a move's progress (no epoch change: placement is the same).
    pub async fn record_phase(
        &mut self,
        slot: Slot,
        phase: MovePhase,
        snapshot: Option<&str>,
        rows_copied: Option<i64>,
    ) -> Result<(), CatalogError> {
        self.client
            .execute(
                "UPDATE moves SET phase = $2, snapshot = coalesce($3, snapshot), \
                 rows_copied = coalesce($4, rows_copied), updated_at = now() WHERE slot = $1",
                &[
                    &i32::from(slot.get()),
                    &phase.as_str(),
                    &snapshot,
                    &rows_copied,
                ],
            )
            .await?;
        Ok(())
    }

    /// Flips a slot to its move's target: the owner, the read floor, the epoch and the
    /// move's phase in one statement, announced to every node. It runs inside the
    /// slot's write pause, so it is one round trip, and it takes no catalog lock: the
    /// epoch row's own lock orders concurrent flips.
    pub async fn flip(
        &mut self,
        slot: Slot,
        target: &ShardId,
        read_floor: Lsn,
        flip_feed_seq: i64,
        pause_ms: f64,
    ) -> Result<u64, CatalogError> {
        let row = self
            .client
            .query_one(
                "WITH bumped AS (UPDATE cluster SET epoch = epoch + 1 RETURNING epoch), \
                 owner AS (UPDATE slots SET shard = $2, read_floor = $3::text::pg_lsn, \
                   epoch = (SELECT epoch FROM bumped) WHERE slot = $1), \
                 phase AS (UPDATE moves SET phase = 'flipped', pause_ms = $4, flip_feed_seq = $5, \
                   updated_at = now() WHERE slot = $1) \
                 SELECT epoch, pg_notify($6, epoch::text) FROM bumped",
                &[
                    &i32::from(slot.get()),
                    &target.as_str(),
                    &read_floor.to_string(),
                    &pause_ms,
                    &flip_feed_seq,
                    &CHANNEL,
                ],
            )
            .await?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    /// Runs one change under the catalog lock; when it changed anything, bumps the epoch
    /// and announces it. Returns the epoch after the change.
    async fn change<F>(&mut self, apply: F) -> Result<u64, CatalogError>
    where
        F: for<'t> FnOnce(
            &'t tokio_postgres::Transaction<'t>,
        ) -> futures::future::BoxFuture<'t, Result<bool, CatalogError>>,
    {
        let tx = self.client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CATALOG_LOCK_KEY])
            .await?;
        let changed = apply(&tx).await?;
        let epoch: i64 = if changed {
            let epoch: i64 = tx
                .query_one("UPDATE cluster SET epoch = epoch + 1 RETURNING epoch", &[])
                .await?
                .get(0);
            tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &epoch.to_string()])
                .await?;
            epoch
        } else {
            tx.query_one("SELECT epoch FROM cluster", &[]).await?.get(0)
        };
        tx.commit().await?;
        Ok(epoch as u64)
    }
}

/// Slots per shard in a placement, every catalog shard listed (zero included).
pub fn slot_counts(state: &CatalogState) -> BTreeMap<ShardId, usize> {
    let mut counts: BTreeMap<ShardId, usize> =
        state.shards.iter().map(|s| (s.id.clone(), 0)).collect();
    for (shard, n) in state.placement.slot_counts() {
        counts.insert(shard, n);
    }
    counts
}
