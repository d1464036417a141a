//! Users and the login-name index in Postgres.
//!
//! Signup is three steps on up to three shards: claim each name on the name's shard,
//! create the user on the user's shard, confirm the claims. A crash between steps leaves
//! claims that expire. The next signup that wants such a name first *settles* the old
//! signup on the old user's shard, through `signup_outcomes`: it records 'abandoned'
//! unless 'created' is already there. The creating transaction writes 'created' with the
//! user row, and the primary key lets only one of the two win, so either the old user
//! exists and gets its name confirmed, or it never will and the name is free. No
//! orphan users, no duplicate names, no name blocked forever.

use std::time::Duration;

use strata_router::pools::is_connection_lost;
use strata_router::{RouterError, Topology, route_hash};
use time::OffsetDateTime;
use tokio_postgres::error::SqlState;

use crate::accounts::names::{Email, LoginName, Username};
use crate::auth::ids::UserId;
use crate::consistency::ConsistencyToken;
use crate::items::write::{
    FeedOp, RowChange, append_feed, commit, execute_logged, primary_for, reader_for, retry_write,
};

/// Why the store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Router(#[from] RouterError),
    #[error("database: {0}")]
    Db(tokio_postgres::Error),
    #[error("unexpected data: {0}")]
    Corrupt(String),
    /// The shard's fence refused the write: its slot is moving or has moved. The write
    /// path reloads placement and retries; callers see this only if that takes too long.
    #[error("the slot is not open for writes on this shard")]
    SlotMoved,
    /// The connection died under the statement (the host restarted, or ended the
    /// session). Before the commit was sent nothing was written, so the write path runs
    /// the write again on a fresh connection.
    #[error("connection lost: {0}")]
    ConnectionLost(tokio_postgres::Error),
    /// The connection died while the commit was on its way: the write may or may not
    /// have been applied, so it must not be run again blindly.
    #[error("connection lost during the commit: {0}")]
    CommitUncertain(tokio_postgres::Error),
}

/// The SQLSTATE the slot fence raises (migration V4).
const SLOT_NOT_OPEN: &str = "SR001";

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        if e.as_db_error()
            .is_some_and(|db| db.code().code() == SLOT_NOT_OPEN)
        {
            Self::SlotMoved
        } else if is_connection_lost(&e) {
            Self::ConnectionLost(e)
        } else {
            Self::Db(e)
        }
    }
}

/// Which name of a signup is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameField {
    Username,
    Email,
}

/// Why a signup did not happen.
#[derive(Debug, thiserror::Error)]
pub enum SignupError {
    #[error("{0:?} is taken")]
    Taken(NameField),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A user row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub username: String,
    pub email: String,
    pub roles: Vec<String>,
    pub created_at: OffsetDateTime,
    pub password_hash: String,
}

/// The result of claiming a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    Claimed,
    Taken,
}

/// How a signup ended, as recorded on the user's shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Abandoned,
}

/// Accounts over the shard router.
pub struct AccountStore<'a> {
    topology: &'a Topology,
}

/// Makes a user's claim on a name final ($1 name, $2 user id).
const CONFIRM_CLAIM: &str = "UPDATE login_names SET state = 'confirmed', expires_at = NULL \
                             WHERE name = $1 AND user_id = $2 AND state = 'claimed'";

/// Gives up a user's unconfirmed claim on a name ($1 name, $2 user id).
const DROP_CLAIM: &str =
    "DELETE FROM login_names WHERE name = $1 AND user_id = $2 AND state = 'claimed'";

const USER_COLUMNS: &str = "id, username, email, roles, created_at, password_hash";

fn user_from_row(row: &tokio_postgres::Row) -> Option<User> {
    Some(User {
        id: UserId::parse(row.get::<_, &str>(0))?,
        username: row.get(1),
        email: row.get(2),
        roles: row.get(3),
        created_at: row.get(4),
        password_hash: row.get(5),
    })
}

impl<'a> AccountStore<'a> {
    /// A store over a topology.
    pub fn new(topology: &'a Topology) -> Self {
        Self { topology }
    }

    /// Runs a whole signup: claim both names, create the user, confirm the claims.
    pub async fn signup(
        &self,
        user: &UserId,
        username: &Username,
        email: &Email,
        password_hash: &str,
        claim_ttl: Duration,
    ) -> Result<User, SignupError> {
        let names = [
            (NameField::Username, LoginName::of_username(username)),
            (NameField::Email, LoginName::of_email(email)),
        ];
        let mut claimed = Vec::new();
        for (field, name) in &names {
            match self.claim(name, user, claim_ttl).await {
                Ok(Claim::Claimed) => claimed.push(name),
                Ok(Claim::Taken) => {
                    self.release(&claimed, user).await;
                    return Err(SignupError::Taken(*field));
                }
                Err(e) => {
                    self.release(&claimed, user).await;
                    return Err(e.into());
                }
            }
        }
        if !self
            .create_user(user, username, email, password_hash)
            .await?
        {
            // A settlement declared this signup abandoned first: its names are gone.
            return Err(SignupError::Taken(NameField::Username));
        }
        for name in claimed {
            self.confirm(name, user).await?;
        }
        self.user(user)
            .await?
            .ok_or_else(|| SignupError::Taken(NameField::Username))
    }

    /// Step 1: claims a name for `user` for `ttl`. A confirmed name, or a live claim of
    /// another signup, is taken; an expired claim is settled first (see the module docs).
    pub async fn claim(
        &self,
        name: &LoginName,
        user: &UserId,
        ttl: Duration,
    ) -> Result<Claim, StoreError> {
        let hash = route_hash(name.as_str());
        let change = name_change(name, FeedOp::Upsert);
        let ttl_ms = ttl.as_millis() as i64;
        for _ in 0..3 {
            let inserted = execute_logged(
                self.topology,
                change,
                "INSERT INTO login_names (name, route_hash, slot, user_id, state, expires_at) \
                 VALUES ($1, $2, $3, $4, 'claimed', now() + $5::bigint * interval '1 millisecond') \
                 ON CONFLICT (name) DO NOTHING",
                &[
                    &name.as_str(),
                    &hash.as_i64(),
                    &i32::from(hash.slot().get()),
                    &user.as_str(),
                    &ttl_ms,
                ],
            )
            .await?;
            if inserted == 1 {
                return Ok(Claim::Claimed);
            }
            let (conn, _) = primary_for(self.topology, hash).await?;
            let Some(row) = conn
                .query_opt(
                    &conn.prepare_cached("SELECT user_id, state, expires_at < now() FROM login_names WHERE name = $1").await?,
                    &[&name.as_str()],
                )
                .await?
            else {
                continue; // released meanwhile: try again
            };
            drop(conn);
            let (holder, state, expired): (String, String, Option<bool>) =
                (row.get(0), row.get(1), row.get(2));
            if state == "confirmed" || !expired.unwrap_or(false) {
                return Ok(Claim::Taken);
            }
            let Some(holder) = UserId::parse(&holder) else {
                return Ok(Claim::Taken);
            };
            match self.settle(&holder).await? {
                Outcome::Created => {
                    self.confirm(name, &holder).await?;
                    return Ok(Claim::Taken);
                }
                Outcome::Abandoned => {
                    let took = execute_logged(
                        self.topology,
                        change,
                        "UPDATE login_names SET user_id = $3, claimed_at = now(), \
                         expires_at = now() + $4::bigint * interval '1 millisecond' \
                         WHERE name = $1 AND user_id = $2 AND state = 'claimed'",
                        &[&name.as_str(), &holder.as_str(), &user.as_str(), &ttl_ms],
                    )
                    .await?;
                    if took == 1 {
                        return Ok(Claim::Claimed);
                    }
                }
            }
        }
        Ok(Claim::Taken)
    }

    /// Decides how an unfinished signup ended: 'abandoned', unless its user was created.
    pub async fn settle(&self, user: &UserId) -> Result<Outcome, StoreError> {
        let hash = user.route_hash();
        execute_logged(
            self.topology,
            RowChange {
                hash,
                entity: "signup_outcome",
                entity_id: user.as_str(),
                op: FeedOp::Upsert,
            },
            "INSERT INTO signup_outcomes (user_id, outcome, route_hash, slot) \
             VALUES ($1, 'abandoned', $2, $3) ON CONFLICT (user_id) DO NOTHING",
            &[
                &user.as_str(),
                &hash.as_i64(),
                &i32::from(hash.slot().get()),
            ],
        )
        .await?;
        let (conn, _) = primary_for(self.topology, hash).await?;
        let outcome: String = conn
            .query_one(
                &conn
                    .prepare_cached("SELECT outcome FROM signup_outcomes WHERE user_id = $1")
                    .await?,
                &[&user.as_str()],
            )
            .await?
            .get(0);
        Ok(if outcome == "created" {
            Outcome::Created
        } else {
            Outcome::Abandoned
        })
    }

    /// Step 2: creates the user, recording the signup as 'created' in the same
    /// transaction. False when a settlement already declared it abandoned.
    pub async fn create_user(
        &self,
        user: &UserId,
        username: &Username,
        email: &Email,
        password_hash: &str,
    ) -> Result<bool, StoreError> {
        let hash = user.route_hash();
        let slot = i32::from(hash.slot().get());
        retry_write(self.topology, || async {
            let (mut conn, _) = primary_for(self.topology, hash).await?;
            let tx = conn.transaction().await?;
            let decided = tx
                .execute(
                    &tx.prepare_cached("INSERT INTO signup_outcomes (user_id, outcome, route_hash, slot) \
                     VALUES ($1, 'created', $2, $3)").await?,
                    &[&user.as_str(), &hash.as_i64(), &slot],
                )
                .await;
            if let Err(e) = decided {
                if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
                    return Ok(false);
                }
                return Err(e.into());
            }
            tx.execute(
                &tx.prepare_cached("INSERT INTO users (id, route_hash, slot, username, email, password_hash) VALUES ($1, $2, $3, $4, $5, $6)").await?,
                &[&user.as_str(), &hash.as_i64(), &slot, &username.as_str(), &email.as_str(), &password_hash],
            )
            .await?;
            append_feed(&tx, hash, "signup_outcome", user.as_str(), 0, FeedOp::Upsert, None)
                .await?;
            append_feed(&tx, hash, "user", user.as_str(), 1, FeedOp::Upsert, None).await?;
            commit(tx).await?;
            Ok(true)
        })
        .await
    }

    /// Step 3: confirms a claim, making the name the user's for good.
    pub async fn confirm(&self, name: &LoginName, user: &UserId) -> Result<(), StoreError> {
        execute_logged(
            self.topology,
            name_change(name, FeedOp::Upsert),
            CONFIRM_CLAIM,
            &[&name.as_str(), &user.as_str()],
        )
        .await?;
        Ok(())
    }

    /// Gives back claims of a signup that will not go ahead (best effort: a claim left
    /// behind expires and is settled).
    async fn release(&self, names: &[&LoginName], user: &UserId) {
        for name in names {
            let _ = execute_logged(
                self.topology,
                name_change(name, FeedOp::Delete),
                DROP_CLAIM,
                &[&name.as_str(), &user.as_str()],
            )
            .await;
        }
    }

    /// Settles every expired claim on every shard (a periodic sweep, so claims of
    /// crashed signups do not linger until someone wants the name). Returns how many.
    pub async fn settle_expired_claims(&self) -> Result<usize, StoreError> {
        let mut settled = 0;
        for shard in self.topology.shard_ids() {
            let conn = self.topology.primary(&shard).await?;
            let rows = conn
                .query(
                    &conn.prepare_cached("SELECT name, user_id FROM login_names WHERE state = 'claimed' AND expires_at < now() LIMIT 100").await?,
                    &[],
                )
                .await?;
            drop(conn);
            for row in rows {
                let (name, holder): (String, String) = (row.get(0), row.get(1));
                let Some(holder) = UserId::parse(&holder) else {
                    continue;
                };
                let (sql, op) = match self.settle(&holder).await? {
                    Outcome::Created => (CONFIRM_CLAIM, FeedOp::Upsert),
                    Outcome::Abandoned => (DROP_CLAIM, FeedOp::Delete),
                };
                let change = RowChange {
                    hash: route_hash(&name),
                    entity: "login_name",
                    entity_id: &name,
                    op,
                };
                execute_logged(self.topology, change, sql, &[&name, &holder.as_str()]).await?;
                settled += 1;
            }
        }
        Ok(settled)
    }

    /// The user a confirmed login name belongs to. Read on the primary: a login right
    /// after signup or a password change must see it.
    pub async fn user_id_for_login(&self, name: &LoginName) -> Result<Option<UserId>, StoreError> {
        let (conn, _) = primary_for(self.topology, route_hash(name.as_str())).await?;
        let row = conn
            .query_opt(
                &conn
                    .prepare_cached(
                        "SELECT user_id FROM login_names WHERE name = $1 AND state = 'confirmed'",
                    )
                    .await?,
                &[&name.as_str()],
            )
            .await?;
        Ok(row.and_then(|r| UserId::parse(r.get::<_, &str>(0))))
    }

    /// A user, read on the primary (for authentication decisions).
    pub async fn user_for_auth(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        let (conn, _) = primary_for(self.topology, id.route_hash()).await?;
        let row = conn
            .query_opt(
                &conn
                    .prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
                    .await?,
                &[&id.as_str()],
            )
            .await?;
        Ok(row.as_ref().and_then(user_from_row))
    }

    /// A user, read from a replica; a miss is checked on the primary, so a user created
    /// a moment ago on another node is still found.
    pub async fn user(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        let conn = reader_for(self.topology, id.route_hash(), &ConsistencyToken::default()).await?;
        if let Some(row) = conn
            .query_opt(&conn.prepare_cached(&sql).await?, &[&id.as_str()])
            .await?
        {
            return Ok(user_from_row(&row));
        }
        self.user_for_auth(id).await
    }

    /// Replaces a user's password hash.
    pub async fn set_password_hash(
        &self,
        id: &UserId,
        password_hash: &str,
    ) -> Result<(), StoreError> {
        execute_logged(
            self.topology,
            user_change(id),
            "UPDATE users SET password_hash = $2, password_changed_at = now(), version = version + 1 WHERE id = $1",
            &[&id.as_str(), &password_hash],
        )
        .await?;
        Ok(())
    }

    /// Removes a role from a user (no-op if absent). Returns false when there is no such
    /// user.
    pub async fn revoke_role(&self, id: &UserId, role: &str) -> Result<bool, StoreError> {
        let updated = execute_logged(
            self.topology,
            user_change(id),
            "UPDATE users SET roles = array_remove(roles, $2), version = version + 1 WHERE id = $1",
            &[&id.as_str(), &role],
        )
        .await?;
        Ok(updated == 1)
    }

    /// Adds a role to a user (no-op if present). Returns false when there is no such user.
    pub async fn grant_role(&self, id: &UserId, role: &str) -> Result<bool, StoreError> {
        let updated = execute_logged(
            self.topology,
            user_change(id),
            "UPDATE users SET roles = CASE WHEN $2 = ANY(roles) THEN roles ELSE array_append(roles, $2) END, \
             version = version + 1 WHERE id = $1",
            &[&id.as_str(), &role],
        )
        .await?;
        Ok(updated == 1)
    }
}

/// The feed entry of a change to a login name.
fn name_change(name: &LoginName, op: FeedOp) -> RowChange<'_> {
    RowChange {
        hash: route_hash(name.as_str()),
        entity: "login_name",
        entity_id: name.as_str(),
        op,
    }
}

/// The feed entry of a change to a user row.
fn user_change(id: &UserId) -> RowChange<'_> {
    RowChange {
        hash: id.route_hash(),
        entity: "user",
        entity_id: id.as_str(),
        op: FeedOp::Upsert,
    }
}
