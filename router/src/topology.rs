//! The live view of every shard: which host is primary, how far each replica is behind,
//! which hosts are banned. A background poller refreshes it; requests read it to pick a
//! connection. Strata never promotes a host itself: it follows whatever promotion an
//! external tool made, on the next poll.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use deadpool_postgres::{Object, Pool};

use crate::conn::{ShardConn, ShardTimers};
use futures::future::join_all;
use serde::Serialize;
use tokio::task::JoinHandle;

use crate::catalog::{Catalog, CatalogError, CatalogShard, CatalogState, PlacementUpdate};
use crate::ids::{HostAddr, RouteHash, SLOT_COUNT, ShardId, Slot};
use crate::lag::PrimaryHistory;
use crate::lsn::Lsn;
use crate::placement::Placement;
use crate::pools::{host_pool, is_connection_lost, shard_pool_size, shards_per_server};
use crate::replica_choice::{HostView, read_candidates};
use crate::settings::RouterSettings;
use crate::shard_map::ShardMap;

/// Why the router could not hand out a connection.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("shard {shard} is not in the shard map")]
    UnknownShard { shard: ShardId },
    #[error("shard {shard} has no reachable primary: {reason}")]
    NoPrimary { shard: ShardId, reason: String },
    #[error("shard {shard} has no host that can serve this read")]
    NoReader { shard: ShardId },
}

/// The role a host answered with at its last poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HostRole {
    /// Not polled yet.
    Unknown,
    /// `pg_is_in_recovery()` is false: takes writes.
    Primary,
    /// `pg_is_in_recovery()` is true: a streaming replica.
    Replica,
    /// The last poll failed or timed out.
    Down,
}

/// What the poller knows about one host.
#[derive(Debug, Clone)]
struct Observation {
    role: HostRole,
    lsn: Option<Lsn>,
    lag: Duration,
    banned_until: Option<Instant>,
    last_error: Option<String>,
}

impl Observation {
    fn banned(&self, now: Instant) -> bool {
        self.banned_until.is_some_and(|until| until > now)
    }
}

struct Host {
    addr: HostAddr,
    pool: Pool,
    seen: Mutex<Observation>,
}

struct Shard {
    id: ShardId,
    hosts: Vec<Host>,
    timers: ShardTimers,
    /// Samples of the primary's WAL position, from which replica lag in seconds is derived.
    history: Mutex<PrimaryHistory>,
}

/// A host's state as reported to operators (`/readyz`, `/v1/admin/shards`, the CLI).
#[derive(Debug, Clone, Serialize)]
pub struct HostStatus {
    pub addr: String,
    pub role: HostRole,
    pub banned: bool,
    pub lsn: Option<String>,
    pub lag_seconds: f64,
    pub last_error: Option<String>,
    pub pool_size: usize,
    pub pool_available: usize,
    /// The most connections the pool opens: its share of the server's
    /// ([`shard_pool_size`]).
    pub pool_max_size: usize,
}

/// A shard's state as reported to operators.
#[derive(Debug, Clone, Serialize)]
pub struct ShardStatus {
    pub id: ShardId,
    pub slots: usize,
    pub has_primary: bool,
    pub hosts: Vec<HostStatus>,
}

/// Where every slot is served, as of one catalog epoch.
struct Routing {
    epoch: u64,
    placement: Placement,
    read_floors: Vec<Option<Lsn>>,
}

/// The router: placement (from the cluster catalog once attached, else from the shard
/// map) and the live state of every host.
pub struct Topology {
    routing: RwLock<Arc<Routing>>,
    /// Database, role and password for every host's pool.
    map: ShardMap,
    settings: RouterSettings,
    shards: RwLock<BTreeMap<ShardId, Arc<Shard>>>,
    /// Spreads reads over a shard's replicas.
    next_reader: AtomicUsize,
    /// The catalog this topology follows, once attached.
    catalog: OnceLock<Catalog>,
    /// One catalog reload at a time; writers stopped by a fence queue behind it. Holds
    /// when the last reload finished, so a burst (or a client claiming an epoch that
    /// does not exist yet) costs at most one reload per [`MIN_RELOAD_GAP`].
    reloading: tokio::sync::Mutex<Reloads>,
}

/// What catalog reloads keep between them.
#[derive(Default)]
struct Reloads {
    /// When the last one finished.
    last: Option<Instant>,
    /// A connection to the catalog, kept while it works.
    client: Option<tokio_postgres::Client>,
}

/// The least time between two catalog reloads asked for by requests.
const MIN_RELOAD_GAP: Duration = Duration::from_millis(20);

/// Stops the background poller when dropped, so a topology never outlives its owner's
/// interest in it.
pub struct PollerGuard(JoinHandle<()>);

impl Drop for PollerGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Topology {
    /// Builds pools for every host (without connecting) and polls every host once, so the
    /// first request already knows the roles. Placement comes from the map until a
    /// catalog is attached ([`Topology::follow_catalog`]).
    pub async fn connect(map: ShardMap, settings: RouterSettings) -> Arc<Self> {
        let placement = Placement::from_map(&map);
        let sharing = shards_per_server(map.shards.iter().map(|s| s.hosts.as_slice()));
        let shards = map
            .shards
            .iter()
            .map(|cfg| {
                let shard = Arc::new(new_shard(&map, &settings, &sharing, &cfg.id, &cfg.hosts));
                (cfg.id.clone(), shard)
            })
            .collect();
        let topology = Arc::new(Self {
            routing: RwLock::new(Arc::new(Routing {
                epoch: 0,
                placement,
                read_floors: vec![None; usize::from(SLOT_COUNT)],
            })),
            map,
            settings,
            shards: RwLock::new(shards),
            next_reader: AtomicUsize::new(0),
            catalog: OnceLock::new(),
            reloading: tokio::sync::Mutex::new(Reloads::default()),
        });
        topology.poll_all().await;
        topology
    }

    /// Takes placement and the shard list from the catalog from now on: applies `state`
    /// (read from `catalog` at start-up) and remembers the catalog for reloads.
    pub async fn follow_catalog(&self, catalog: Catalog, state: &CatalogState) {
        let _ = self.catalog.set(catalog);
        self.apply_catalog(state).await;
    }

    /// Makes the topology match a catalog state: pools for new shards (polled once before
    /// any request is routed to them), none for removed ones, the catalog's placement.
    pub async fn apply_catalog(&self, state: &CatalogState) {
        self.sync_shards(&state.shards).await;
        let mut routing = self.routing.write().expect("routing lock");
        if state.epoch >= routing.epoch {
            *routing = Arc::new(Routing {
                epoch: state.epoch,
                placement: state.placement.clone(),
                read_floors: state.read_floors.clone(),
            });
        }
        metrics::gauge!("strata_catalog_epoch").set(state.epoch as f64);
    }

    /// Applies what changed in the catalog since this topology's epoch.
    fn apply_update(&self, update: &PlacementUpdate) {
        let mut routing = self.routing.write().expect("routing lock");
        if update.epoch <= routing.epoch {
            return;
        }
        let mut placement = routing.placement.clone();
        let mut read_floors = routing.read_floors.clone();
        for (slot, owner, floor) in &update.slots {
            placement.set_owner(*slot, owner.clone());
            read_floors[usize::from(slot.get())] = *floor;
        }
        *routing = Arc::new(Routing {
            epoch: update.epoch,
            placement,
            read_floors,
        });
        metrics::gauge!("strata_catalog_epoch").set(update.epoch as f64);
    }

    /// Pools for shards the catalog has and this topology does not (each polled once
    /// before any request is routed to it); none for shards the catalog dropped. A
    /// server that gained or lost a shard has its pools resized, so its shards still
    /// split the node's connections to it ([`shard_pool_size`]).
    async fn sync_shards(&self, catalog_shards: &[CatalogShard]) {
        let sharing = shards_per_server(catalog_shards.iter().map(|s| s.hosts.as_slice()));
        let added: Vec<Arc<Shard>> = {
            let mut shards = self.shards.write().expect("shards lock");
            shards.retain(|id, _| catalog_shards.iter().any(|s| &s.id == id));
            let mut added = Vec::new();
            for s in catalog_shards {
                if !shards.contains_key(&s.id) {
                    let shard = Arc::new(new_shard(
                        &self.map,
                        &self.settings,
                        &sharing,
                        &s.id,
                        &s.hosts,
                    ));
                    shards.insert(s.id.clone(), Arc::clone(&shard));
                    added.push(shard);
                }
            }
            for host in shards.values().flat_map(|shard| &shard.hosts) {
                let size = pool_size(&self.settings, &sharing, &host.addr);
                if host.pool.status().max_size != size {
                    host.pool.resize(size);
                }
            }
            added
        };
        join_all(added.iter().map(|shard| self.poll_shard(shard))).await;
    }

    /// Reloads placement from the catalog now, unless another reload finished since
    /// `seen_epoch` was read (then that one is as fresh). Returns the epoch in force.
    pub async fn reload_catalog(&self, seen_epoch: u64) -> Result<u64, CatalogError> {
        self.reload(seen_epoch, false).await
    }

    async fn reload(&self, seen_epoch: u64, force: bool) -> Result<u64, CatalogError> {
        let Some(catalog) = self.catalog.get() else {
            return Ok(self.epoch());
        };
        let mut reloads = self.reloading.lock().await;
        let too_soon = !force && reloads.last.is_some_and(|at| at.elapsed() < MIN_RELOAD_GAP);
        if self.epoch() > seen_epoch || too_soon {
            return Ok(self.epoch());
        }
        let update = async {
            if reloads.client.as_ref().is_none_or(|c| c.is_closed()) {
                reloads.client = Some(catalog.connect().await?);
            }
            let client = reloads.client.as_ref().expect("connected above");
            crate::catalog::load_update(client, self.epoch()).await
        }
        .await;
        reloads.last = Some(Instant::now());
        let update = match update {
            Ok(update) => update,
            Err(e) => {
                reloads.client = None;
                return Err(e);
            }
        };
        drop(reloads);
        self.sync_shards(&update.shards).await;
        self.apply_update(&update);
        Ok(self.epoch())
    }

    /// Follows the catalog in the background until the guard is dropped: reloads on every
    /// `NOTIFY strata_catalog`, and polls the epoch every `poll` in case a notification was
    /// missed (a dropped connection, a catalog failover).
    pub fn spawn_catalog_follower(self: &Arc<Self>, poll: Duration) -> PollerGuard {
        let topology = Arc::clone(self);
        PollerGuard(tokio::spawn(async move {
            loop {
                let Some(catalog) = topology.catalog.get() else {
                    return;
                };
                match catalog.listen().await {
                    Ok((client, mut notices)) => loop {
                        let notified = tokio::time::timeout(poll, notices.recv()).await;
                        if let Ok(None) = notified {
                            break; // connection gone: listen again
                        }
                        let current = match crate::catalog::epoch(&client).await {
                            Ok(epoch) => epoch,
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot read the catalog epoch");
                                break;
                            }
                        };
                        let seen = topology.epoch();
                        if current > seen
                            && let Err(e) = topology.reload(seen, true).await
                        {
                            tracing::warn!(error = %e, "cannot reload the catalog");
                        }
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot reach the catalog; keeping the last placement")
                    }
                }
                tokio::time::sleep(poll).await;
            }
        }))
    }

    /// The catalog this topology follows, once attached.
    pub fn catalog(&self) -> Option<&Catalog> {
        self.catalog.get()
    }

    /// The catalog epoch the current placement comes from (0 before a catalog).
    pub fn epoch(&self) -> u64 {
        self.routing.read().expect("routing lock").epoch
    }

    /// The WAL position a replica of the slot's owner must have replayed before it may
    /// serve the slot (set when the slot moved in).
    pub fn read_floor(&self, slot: Slot) -> Option<Lsn> {
        self.routing.read().expect("routing lock").read_floors[usize::from(slot.get())]
    }

    /// Starts polling every host in the background until the guard is dropped.
    pub fn spawn_poller(self: &Arc<Self>) -> PollerGuard {
        let topology = Arc::clone(self);
        PollerGuard(tokio::spawn(async move {
            let mut tick = tokio::time::interval(topology.settings.poll_interval());
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                topology.poll_all().await;
            }
        }))
    }

    /// Every shard id, in order.
    pub fn shard_ids(&self) -> Vec<ShardId> {
        self.shards
            .read()
            .expect("shards lock")
            .keys()
            .cloned()
            .collect()
    }

    /// The shard that owns a route hash.
    pub fn shard_for(&self, hash: RouteHash) -> ShardId {
        self.routing
            .read()
            .expect("routing lock")
            .placement
            .shard_of(hash)
            .clone()
    }

    /// Polls every host of every shard once, concurrently.
    pub async fn poll_all(&self) {
        let shards: Vec<Arc<Shard>> = self
            .shards
            .read()
            .expect("shards lock")
            .values()
            .cloned()
            .collect();
        join_all(shards.iter().map(|shard| self.poll_shard(shard))).await;
    }

    async fn poll_shard(&self, shard: &Shard) {
        let probes = shard
            .hosts
            .iter()
            .map(|host| probe(host, self.settings.poll_timeout()));
        let results = join_all(probes).await;
        let now = Instant::now();
        let primaries: Vec<Lsn> = results
            .iter()
            .filter_map(|r| match r {
                Ok((false, lsn)) => Some(*lsn),
                _ => None,
            })
            .collect();
        let mut history = shard.history.lock().expect("history lock");
        if let [only] = primaries[..] {
            history.record(now, only);
        }
        // With no primary answering, a replica's lag cannot be measured: the dead
        // primary's last position may include WAL it never sent. Its replicas hold all
        // that anyone can read now, so they keep serving (a token that needs more still
        // finds no host).
        let primary_alive = !primaries.is_empty();
        for (host, result) in shard.hosts.iter().zip(results) {
            let mut seen = host.seen.lock().expect("host lock");
            match result {
                Ok((in_recovery, lsn)) => {
                    seen.role = if in_recovery {
                        HostRole::Replica
                    } else {
                        HostRole::Primary
                    };
                    seen.lsn = Some(lsn);
                    seen.lag = if in_recovery && primary_alive {
                        history.lag_of(lsn, now)
                    } else {
                        Duration::ZERO
                    };
                    seen.last_error = None;
                    if in_recovery && seen.lag > self.settings.max_replica_lag() {
                        self.ban(
                            &shard.id,
                            host,
                            &mut seen,
                            now,
                            "replica lag past the bound",
                        );
                    }
                }
                Err(reason) => {
                    seen.role = HostRole::Down;
                    seen.last_error = Some(reason.clone());
                    self.ban(&shard.id, host, &mut seen, now, &reason);
                }
            }
            record_host_metrics(&shard.id, host, &seen, now);
        }
    }

    fn ban(&self, shard: &ShardId, host: &Host, seen: &mut Observation, now: Instant, why: &str) {
        if !seen.banned(now) {
            tracing::warn!(shard = %shard, host = %host.addr, reason = why, "host banned from serving");
        }
        seen.banned_until = Some(now + self.settings.ban());
    }

    fn shard(&self, id: &ShardId) -> Result<Arc<Shard>, RouterError> {
        self.shards
            .read()
            .expect("shards lock")
            .get(id)
            .cloned()
            .ok_or_else(|| RouterError::UnknownShard { shard: id.clone() })
    }

    /// A connection to the shard's primary, for writes. When no primary is known, the
    /// shard is polled once more first (a promotion may just have happened).
    pub async fn primary(&self, id: &ShardId) -> Result<ShardConn, RouterError> {
        let shard = self.shard(id)?;
        if primary_index(&shard).is_none() {
            self.poll_shard(&shard).await;
        }
        let Some(index) = primary_index(&shard) else {
            return Err(RouterError::NoPrimary {
                shard: id.clone(),
                reason: no_primary_reason(&shard),
            });
        };
        let host = &shard.hosts[index];
        let waited = Instant::now();
        let conn = host.pool.get().await;
        shard.timers.record_pool_wait(HostRole::Primary, waited);
        conn.map(|conn| shard.timers.checked_out(conn, HostRole::Primary))
            .map_err(|e| {
                let mut seen = host.seen.lock().expect("host lock");
                seen.role = HostRole::Down;
                seen.last_error = Some(e.to_string());
                RouterError::NoPrimary {
                    shard: id.clone(),
                    reason: format!("{}: {e}", host.addr),
                }
            })
    }

    /// A connection for a read: a healthy replica that has replayed at least `min_lsn`
    /// (when given), else the primary. A replica that fails to hand out a connection is
    /// banned and the next candidate is tried. Returns the connection and the role of the
    /// host that serves it.
    pub async fn reader(
        &self,
        id: &ShardId,
        min_lsn: Option<Lsn>,
    ) -> Result<(ShardConn, HostRole), RouterError> {
        let shard = self.shard(id)?;
        let now = Instant::now();
        let views: Vec<HostView> = shard.hosts.iter().map(|h| view(h, now)).collect();
        let rotate = self.next_reader.fetch_add(1, Ordering::Relaxed);
        for index in read_candidates(&views, min_lsn, self.settings.max_replica_lag(), rotate) {
            let host = &shard.hosts[index];
            let waited = Instant::now();
            match host.pool.get().await {
                Ok(conn) => {
                    let role = if views[index].is_primary {
                        HostRole::Primary
                    } else {
                        HostRole::Replica
                    };
                    shard.timers.record_pool_wait(role, waited);
                    return Ok((shard.timers.checked_out(conn, role), role));
                }
                Err(e) => {
                    let mut seen = host.seen.lock().expect("host lock");
                    seen.last_error = Some(e.to_string());
                    self.ban(id, host, &mut seen, Instant::now(), "connection failed");
                }
            }
        }
        Err(RouterError::NoReader { shard: id.clone() })
    }

    /// Every shard's state, for health checks and operators.
    pub fn status(&self) -> Vec<ShardStatus> {
        let now = Instant::now();
        let slots = self
            .routing
            .read()
            .expect("routing lock")
            .placement
            .slot_counts();
        self.shards
            .read()
            .expect("shards lock")
            .values()
            .map(|shard| ShardStatus {
                id: shard.id.clone(),
                slots: slots.get(&shard.id).copied().unwrap_or(0),
                has_primary: primary_index(shard).is_some(),
                hosts: shard.hosts.iter().map(|h| host_status(h, now)).collect(),
            })
            .collect()
    }
}

/// The pool size of a shard's host on server `addr`, given how many shards each server
/// holds.
fn pool_size(
    settings: &RouterSettings,
    sharing: &HashMap<HostAddr, usize>,
    addr: &HostAddr,
) -> usize {
    shard_pool_size(
        settings.pool_max_size,
        sharing.get(addr).copied().unwrap_or(1),
    )
}

fn new_shard(
    map: &ShardMap,
    settings: &RouterSettings,
    sharing: &HashMap<HostAddr, usize>,
    id: &ShardId,
    hosts: &[HostAddr],
) -> Shard {
    let database = map.database_of(id);
    let hosts = hosts
        .iter()
        .map(|addr| Host {
            addr: addr.clone(),
            pool: host_pool(
                map,
                addr,
                database,
                pool_size(settings, sharing, addr),
                settings,
            ),
            seen: Mutex::new(Observation {
                role: HostRole::Unknown,
                lsn: None,
                lag: Duration::ZERO,
                banned_until: None,
                last_error: None,
            }),
        })
        .collect();
    Shard {
        id: id.clone(),
        hosts,
        timers: ShardTimers::new(id),
        history: Mutex::new(PrimaryHistory::new(256)),
    }
}

/// Asks a host whether it is in recovery and where its WAL is (replay position on a
/// replica, current position on a primary).
async fn probe(host: &Host, deadline: Duration) -> Result<(bool, Lsn), String> {
    let attempt = async {
        // A pooled connection may have died unnoticed (the host restarted, its sessions
        // were ended): that is not the host being down, so it is dropped and the probe
        // asks again on another, up to a fresh one.
        let mut tries = 0;
        let row = loop {
            tries += 1;
            let conn = host.pool.get().await.map_err(|e| e.to_string())?;
            // Prepared once per connection: every later probe is one round trip.
            let asked = match conn.prepare_cached(PROBE).await {
                Ok(statement) => conn.query_one(&statement, &[]).await,
                Err(e) => Err(e),
            };
            match asked {
                Ok(row) => break row,
                Err(e) if is_connection_lost(&e) && tries <= STALE_RETRIES => {
                    drop(Object::take(conn));
                }
                Err(e) => return Err(e.to_string()),
            }
        };
        let in_recovery: bool = row.get(0);
        let lsn: Option<String> = row.get(1);
        let lsn = lsn
            .unwrap_or_else(|| "0/0".into())
            .parse::<Lsn>()
            .map_err(|e| e.to_string())?;
        Ok((in_recovery, lsn))
    };
    match tokio::time::timeout(deadline, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {} ms", deadline.as_millis())),
    }
}

/// The health probe: is the host in recovery, and how far has its WAL gone.
const PROBE: &str = "SELECT pg_is_in_recovery(), (CASE WHEN pg_is_in_recovery() \
                     THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text";

/// How many dead pooled connections a probe discards before it believes the host is
/// down (the pool may hold several after a restart).
const STALE_RETRIES: usize = 4;

fn primary_index(shard: &Shard) -> Option<usize> {
    let now = Instant::now();
    let primaries: Vec<usize> = shard
        .hosts
        .iter()
        .enumerate()
        .filter(|(_, h)| {
            let seen = h.seen.lock().expect("host lock");
            seen.role == HostRole::Primary && !seen.banned(now)
        })
        .map(|(i, _)| i)
        .collect();
    // Two hosts both claiming to be primary is a split brain: refuse writes rather than
    // guess, until the HA tool fences one of them.
    match primaries[..] {
        [only] => Some(only),
        _ => None,
    }
}

fn no_primary_reason(shard: &Shard) -> String {
    let primaries = shard
        .hosts
        .iter()
        .filter(|h| h.seen.lock().expect("host lock").role == HostRole::Primary)
        .count();
    if primaries > 1 {
        return format!("{primaries} hosts claim to be primary");
    }
    shard
        .hosts
        .iter()
        .map(|h| {
            let seen = h.seen.lock().expect("host lock");
            let detail = seen
                .last_error
                .clone()
                .unwrap_or_else(|| format!("{:?}", seen.role));
            format!("{} {}", h.addr, detail.to_lowercase())
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn view(host: &Host, now: Instant) -> HostView {
    let seen = host.seen.lock().expect("host lock");
    HostView {
        is_primary: seen.role == HostRole::Primary,
        is_replica: seen.role == HostRole::Replica,
        banned: seen.banned(now),
        lsn: seen.lsn,
        lag: seen.lag,
    }
}

fn host_status(host: &Host, now: Instant) -> HostStatus {
    let seen = host.seen.lock().expect("host lock");
    let pool = host.pool.status();
    HostStatus {
        addr: host.addr.to_string(),
        role: seen.role,
        banned: seen.banned(now),
        lsn: seen.lsn.map(|l| l.to_string()),
        lag_seconds: seen.lag.as_secs_f64(),
        last_error: seen.last_error.clone(),
        pool_size: pool.size,
        pool_available: pool.available,
        pool_max_size: pool.max_size,
    }
}

fn record_host_metrics(shard: &ShardId, host: &Host, seen: &Observation, now: Instant) {
    let labels = [
        ("shard", shard.to_string()),
        ("host", host.addr.to_string()),
    ];
    let up = !matches!(seen.role, HostRole::Down | HostRole::Unknown);
    metrics::gauge!("strata_db_host_up", &labels).set(if up { 1.0 } else { 0.0 });
    metrics::gauge!("strata_db_host_primary", &labels).set(if seen.role == HostRole::Primary {
        1.0
    } else {
        0.0
    });
    metrics::gauge!("strata_db_host_banned", &labels).set(if seen.banned(now) { 1.0 } else { 0.0 });
    if seen.role == HostRole::Replica {
        metrics::gauge!("strata_replica_lag_seconds", &labels).set(seen.lag.as_secs_f64());
    }
    let pool = host.pool.status();
    metrics::gauge!("strata_db_pool_connections", &labels).set(pool.size as f64);
    metrics::gauge!("strata_db_pool_idle_connections", &labels).set(pool.available as f64);
    metrics::gauge!("strata_db_pool_waiting", &labels).set(pool.waiting as f64);
}
