//! Failure tests on a cluster of their own: 4 shards × (primary + replica), a 3-master
//! Redis Cluster without replicas and one node, all with fast failure detection. Each test breaks only
//! the shard (or Redis server) it owns, so they can run side by side.

use std::time::Duration;

use strata_router::{HostRole, ShardId, Topology};
use strata_sandbox::Cluster;
use strata_sandbox::postgres::PgInstance;
use strata_tests::{SharedCluster, eventually, fast_router_settings, get, router, shard};

static CLUSTER: SharedCluster = SharedCluster::new();

fn cluster() -> &'static Cluster {
    CLUSTER.get(|| {
        Cluster::builder()
            .shards(4)
            .replicas(1)
            .redis_replicas(0)
            .nodes(1)
            .load_balancer(false)
            .router(fast_router_settings())
    })
}

/// Writes a row on the shard's primary through the router; returns the port of the
/// host that took it.
async fn write_probe(topology: &Topology, id: &ShardId, note: &str) -> Result<u16, String> {
    let conn = topology.primary(id).await.map_err(|e| e.to_string())?;
    conn.batch_execute("CREATE TABLE IF NOT EXISTS failover_probe (note text NOT NULL)")
        .await
        .map_err(|e| e.to_string())?;
    conn.execute("INSERT INTO failover_probe (note) VALUES ($1)", &[&note])
        .await
        .map_err(|e| e.to_string())?;
    let port: i32 = conn
        .query_one("SELECT inet_server_port()", &[])
        .await
        .map_err(|e| e.to_string())?
        .get(0);
    Ok(port as u16)
}

/// Reads through the router; returns the role of the host that served it.
async fn read_probe(topology: &Topology, id: &ShardId) -> Result<HostRole, String> {
    let (conn, role) = topology.reader(id, None).await.map_err(|e| e.to_string())?;
    conn.query_one("SELECT 1", &[])
        .await
        .map_err(|e| e.to_string())?;
    Ok(role)
}

async fn wait_for_reader(topology: &Topology, id: &ShardId, want: HostRole, what: &str) {
    eventually(what, Duration::from_secs(20), || async {
        match read_probe(topology, id).await? {
            role if role == want => Ok(()),
            role => Err(format!("read served by {role:?}")),
        }
    })
    .await
}

fn host_banned(topology: &Topology, id: &ShardId, pg: &PgInstance) -> bool {
    let status = topology.status();
    let shard = status
        .iter()
        .find(|s| &s.id == id)
        .expect("shard in status");
    shard
        .hosts
        .iter()
        .any(|h| h.addr == pg.addr.to_string() && h.banned)
}

/// The node's `/readyz`: status and body.
async fn readyz(cluster: &Cluster) -> (u16, String) {
    get(&format!("{}/readyz", cluster.nodes[0].url())).await
}

/// Resumes a paused instance however the test ends.
struct ResumeOnDrop<'a>(&'a PgInstance);

impl Drop for ResumeOnDrop<'_> {
    fn drop(&mut self) {
        self.0.resume();
    }
}

#[tokio::test]
async fn writes_follow_a_promoted_replica_without_a_restart() {
    let cluster = cluster();
    let s0 = shard("s0");
    let (old_primary, replica) = (cluster.pg(&s0, 0), cluster.pg(&s0, 1));
    let (topology, _poller) = router(cluster, fast_router_settings()).await;
    assert_eq!(
        write_probe(&topology, &s0, "before failover")
            .await
            .unwrap(),
        old_primary.addr.port()
    );

    old_primary.stop().unwrap();
    eventually(
        "writes to s0 to fail with no primary",
        Duration::from_secs(10),
        || async {
            match write_probe(&topology, &s0, "during outage").await {
                Err(e) if e.contains("no reachable primary") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    eventually(
        "the node's /readyz to name shard s0",
        Duration::from_secs(10),
        || async {
            let (status, body) = readyz(cluster).await;
            if status == 503 && body.contains("shard s0 has no reachable primary") {
                Ok(())
            } else {
                Err(body)
            }
        },
    )
    .await;

    replica.promote().unwrap();
    let port = eventually(
        "writes to reach the promoted replica",
        Duration::from_secs(20),
        || write_probe(&topology, &s0, "after failover"),
    )
    .await;
    assert_eq!(
        port,
        replica.addr.port(),
        "the promoted replica takes the writes"
    );
    let notes = replica
        .psql(
            "strata",
            "SELECT string_agg(note, ',' ORDER BY note) FROM failover_probe",
        )
        .unwrap();
    assert_eq!(
        notes, "after failover,before failover",
        "nothing acknowledged was lost"
    );
    eventually(
        "the node to follow the promotion",
        Duration::from_secs(10),
        || async {
            let (status, body) = readyz(cluster).await;
            if status == 503 && body.contains("shard s0") {
                Err(body)
            } else {
                Ok(())
            }
        },
    )
    .await;
}

#[tokio::test]
async fn a_killed_replica_is_banned_and_reads_go_to_the_primary_until_it_returns() {
    let cluster = cluster();
    let s1 = shard("s1");
    let replica = cluster.pg(&s1, 1);
    let (topology, _poller) = router(cluster, fast_router_settings()).await;
    wait_for_reader(
        &topology,
        &s1,
        HostRole::Replica,
        "reads from the healthy replica",
    )
    .await;

    replica.kill();
    wait_for_reader(
        &topology,
        &s1,
        HostRole::Primary,
        "reads to fall back to the primary",
    )
    .await;
    assert!(
        host_banned(&topology, &s1, replica),
        "the killed replica is banned"
    );

    replica.start().unwrap();
    wait_for_reader(
        &topology,
        &s1,
        HostRole::Replica,
        "the restarted replica to be re-admitted",
    )
    .await;
}

#[tokio::test]
async fn a_replica_delayed_by_recovery_min_apply_delay_is_treated_as_lagging() {
    let cluster = cluster();
    let s2 = shard("s2");
    let replica = cluster.pg(&s2, 1);
    let (topology, _poller) = router(cluster, fast_router_settings()).await;
    wait_for_reader(
        &topology,
        &s2,
        HostRole::Replica,
        "reads from the healthy replica",
    )
    .await;

    replica.set_apply_delay(Duration::from_secs(60)).unwrap();
    eventually(
        "the delayed replica to be banned for lag",
        Duration::from_secs(20),
        || async {
            // Lag only shows once the primary writes something the replica holds back.
            write_probe(&topology, &s2, "tick").await?;
            if host_banned(&topology, &s2, replica) {
                Ok(())
            } else {
                Err("not banned yet".into())
            }
        },
    )
    .await;
    assert_eq!(read_probe(&topology, &s2).await.unwrap(), HostRole::Primary);

    replica.set_apply_delay(Duration::ZERO).unwrap();
    wait_for_reader(
        &topology,
        &s2,
        HostRole::Replica,
        "the caught-up replica to be re-admitted",
    )
    .await;
}

#[tokio::test]
async fn a_frozen_replica_is_treated_as_lagging_and_readmitted_when_it_thaws() {
    let cluster = cluster();
    let s3 = shard("s3");
    let replica = cluster.pg(&s3, 1);
    let (topology, _poller) = router(cluster, fast_router_settings()).await;
    wait_for_reader(
        &topology,
        &s3,
        HostRole::Replica,
        "reads from the healthy replica",
    )
    .await;

    replica.pause();
    let _thaw = ResumeOnDrop(replica);
    eventually(
        "the frozen replica to be banned",
        Duration::from_secs(20),
        || async {
            write_probe(&topology, &s3, "tick").await?;
            if host_banned(&topology, &s3, replica) {
                Ok(())
            } else {
                Err("not banned yet".into())
            }
        },
    )
    .await;
    assert_eq!(read_probe(&topology, &s3).await.unwrap(), HostRole::Primary);

    replica.resume();
    wait_for_reader(
        &topology,
        &s3,
        HostRole::Replica,
        "the thawed replica to be re-admitted",
    )
    .await;
}

/// A Redis master lost with no replica to take over: its slots go unserved, but the
/// node stays ready (every node shares Redis: failing them all would take the whole
/// service out of the load balancer) and reports the unserved slots.
#[tokio::test]
async fn readyz_reports_unserved_redis_slots_and_stays_ready_while_a_master_is_down() {
    let cluster = cluster();
    let redis = cluster.redis.as_ref().expect("the cluster has Redis");
    let port = redis.ports[0];
    redis.stop_server(port);
    eventually(
        "/readyz to report unserved Redis slots",
        Duration::from_secs(20),
        || async {
            let (status, body) = readyz(cluster).await;
            let ready: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            match ready["redis_slots_ok"].as_u64() {
                Some(ok) if status == 200 && ok < 16384 => Ok(()),
                _ => Err(format!("{status} {body}")),
            }
        },
    )
    .await;

    redis.start().unwrap();
    eventually(
        "/readyz to report every Redis slot served again",
        Duration::from_secs(30),
        || async {
            let (status, body) = readyz(cluster).await;
            let ready: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            match ready["redis_slots_ok"].as_u64() {
                Some(16384) if status == 200 => Ok(()),
                _ => Err(format!("{status} {body}")),
            }
        },
    )
    .await;
}
