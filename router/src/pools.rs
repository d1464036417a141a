//! One connection pool per Postgres host. Pools are built without connecting, so a host
//! that is down at start-up costs nothing until it comes back.

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::ids::HostAddr;
use crate::settings::RouterSettings;
use crate::shard_map::ShardMap;

/// Builds the pool for one host of the map.
pub fn host_pool(map: &ShardMap, host: &HostAddr, settings: &RouterSettings) -> Pool {
    let mut pg = tokio_postgres::Config::new();
    pg.host(host.host())
        .port(host.port())
        .user(&map.user)
        .dbname(&map.database)
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
        .max_size(settings.pool_max_size)
        .wait_timeout(Some(settings.connect_timeout()))
        .create_timeout(Some(settings.connect_timeout()))
        .runtime(Runtime::Tokio1)
        .build()
        .expect("a pool with a runtime and timeouts always builds")
}
