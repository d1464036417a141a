//! `strata user grant-admin|revoke-admin <username>`: give or take a user's admin role.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Subcommand;
use strata_node::accounts::names::{LoginName, Username};
use strata_node::accounts::store::AccountStore;
use strata_router::{RouterSettings, ShardMap, Topology};

/// User commands.
#[derive(Subcommand)]
pub enum UserCommand {
    /// Give a user the `admin` role (takes effect on the user's next login or refresh).
    GrantAdmin {
        /// The user's username.
        username: String,
        /// The shard map.
        #[arg(long, default_value = "shard-map.toml", env = "STRATA_SHARD_MAP")]
        shard_map: PathBuf,
    },
    /// Take the `admin` role from a user (takes effect at once: admin actions check the
    /// account, not only the token).
    RevokeAdmin {
        /// The user's username.
        username: String,
        /// The shard map.
        #[arg(long, default_value = "shard-map.toml", env = "STRATA_SHARD_MAP")]
        shard_map: PathBuf,
    },
}

/// Runs one `user` subcommand.
pub fn run(cmd: UserCommand) -> anyhow::Result<()> {
    let (username, shard_map, grant) = match cmd {
        UserCommand::GrantAdmin {
            username,
            shard_map,
        } => (username, shard_map, true),
        UserCommand::RevokeAdmin {
            username,
            shard_map,
        } => (username, shard_map, false),
    };
    let username = Username::parse(&username).context("not a valid username")?;
    let map = ShardMap::load(&shard_map)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let topology = Topology::connect(map, RouterSettings::default()).await;
        let store = AccountStore::new(&topology);
        let Some(user) = store
            .user_id_for_login(&LoginName::of_username(&username))
            .await?
        else {
            bail!("no user named {}", username.as_str());
        };
        let changed = if grant {
            store.grant_role(&user, "admin").await?
        } else {
            store.revoke_role(&user, "admin").await?
        };
        if !changed {
            bail!("user {} vanished", username.as_str());
        }
        let now = if grant {
            "now an admin"
        } else {
            "no longer an admin"
        };
        println!("{} ({user}) is {now}", username.as_str());
        Ok(())
    })
}
