//! `strata migrate`: apply pending migrations to every shard's primary, then create the
//! cluster catalog from the map if there is none (and open each shard's slots).

use std::path::Path;

use strata_router::{RouterSettings, ShardMap, Topology, migrations, rebalance};

/// Migrates every shard of the map and reports each shard's version.
pub fn run(shard_map: &Path) -> anyhow::Result<()> {
    let map = ShardMap::load(shard_map)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let topology = Topology::connect(map.clone(), RouterSettings::default()).await;
        for shard in migrations::migrate_all(&topology).await? {
            let applied = if shard.applied_now.is_empty() {
                "nothing to apply".into()
            } else {
                shard.applied_now.join(", ")
            };
            println!(
                "shard {}: version {} ({applied})",
                shard.shard, shard.version
            );
        }
        let catalog = rebalance::bootstrap(&topology, &map).await?;
        println!(
            "catalog: epoch {}, {} shards",
            catalog.epoch,
            catalog.shards.len()
        );
        Ok(())
    })
}
