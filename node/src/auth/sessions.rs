//! Sessions in Redis Cluster. Every key of a user carries the hash tag `{u:<user id>}`,
//! so all of one user's keys share a cluster slot and multi-key updates run atomically
//! as Lua scripts on one server. A session is a hash (owner, times, client, the hash of
//! the current refresh secret and of the one before it); the user's set of session ids
//! makes logout-all and the session list one-slot operations. Every revocation (logout,
//! logout-all, a reused refresh token) waits for the slot's replica before it returns,
//! so a Redis failover cannot bring a revoked session back (see
//! [`RedisHandle::replicated`]).

use std::time::Duration;

use redis::Script;

use crate::auth::ids::{SessionId, UserId};
use crate::auth::tokens::unix_now;
use crate::invalidation::local_cache::LocalCache;
use crate::invalidation::{CachedSession, Invalidations, Subject};
use crate::redis_handle::{RedisError, RedisHandle, retry_idempotent};

/// How stale `last_seen_at` may get before a request refreshes it (one write a minute
/// per session, not one per request).
const LAST_SEEN_RESOLUTION_SECS: u64 = 60;

/// A global sorted set of live sessions (score: expiry in ms), for the active-sessions
/// gauge. Kept apart from the per-user slots, so updated outside the scripts.
pub const ACTIVE_SESSIONS_KEY: &str = "strata:active-sessions";

fn session_key(user: &UserId, session: &str) -> String {
    format!("strata:{{u:{user}}}:session:{session}")
}

fn sessions_key(user: &UserId) -> String {
    format!("strata:{{u:{user}}}:sessions")
}

/// The user's credentials generation: bumped by every password change, in the same
/// script that ends the other sessions. A login reads it before it reads the password
/// hash and creates its session only if it is unchanged, so a login that checked the old
/// password just before a change cannot outlive the change.
fn credentials_key(user: &UserId) -> String {
    format!("strata:{{u:{user}}}:credentials")
}

/// What a new session records.
#[derive(Debug, Clone)]
pub struct NewSession<'a> {
    pub user: &'a UserId,
    pub session: &'a SessionId,
    pub refresh_hash: String,
    /// SHA-256 of the CSRF token, for browser-mode sessions.
    pub csrf_hash: Option<String>,
    pub user_agent: &'a str,
    pub ip: String,
    /// The credentials generation the password was checked under (see
    /// [`SessionStore::credentials`]); `None` for a brand-new account.
    pub credentials: Option<u64>,
}

/// A live session as the owner sees it in the session list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    pub id: String,
    pub created_at: u64,
    pub last_seen_at: u64,
    pub user_agent: String,
    pub ip: String,
}

/// What checking a session found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSession {
    /// SHA-256 of the session's CSRF token (browser mode only).
    pub csrf_hash: Option<String>,
}

/// What presenting a refresh token did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// The token was current (or just rotated and presented again within the grace):
    /// the new secret is now current.
    Rotated,
    /// The session does not exist (logged out, expired, revoked).
    Missing,
    /// A spent token was presented again: the session has been revoked.
    Reused,
}

/// The session store.
pub struct SessionStore<'a> {
    redis: &'a RedisHandle,
    ttl: Duration,
    /// The node's caches; its session checks are `invalidations.sessions`.
    invalidations: &'a Invalidations,
}

const CREATE: &str = r"
if ARGV[9] ~= '' and (redis.call('GET', KEYS[3]) or '0') ~= ARGV[9] then return 0 end
redis.call('HSET', KEYS[1], 'uid', ARGV[1], 'created_at', ARGV[2], 'last_seen_at', ARGV[2],
  'ua', ARGV[3], 'ip', ARGV[4], 'rh', ARGV[5], 'csrf', ARGV[6])
redis.call('EXPIRE', KEYS[1], ARGV[7])
redis.call('SADD', KEYS[2], ARGV[8])
redis.call('EXPIRE', KEYS[2], ARGV[7])
return 1";

// A retry of the last rotation within the grace (a client that lost the answer, a second
// tab) gets another current secret *beside* the first ('alts'), so whichever answer the
// client kept works next time; presenting any current secret rotates and clears the
// alternates.
const ROTATE: &str = r"
local s = redis.call('HMGET', KEYS[1], 'rh', 'prh', 'rot_at', 'alts')
if not s[1] then return 'missing' end
local now = tonumber(ARGV[3])
local alts = s[4] or ''
local current = s[1] == ARGV[1] or string.find(',' .. alts .. ',', ',' .. ARGV[1] .. ',', 1, true)
if current then
  redis.call('HSET', KEYS[1], 'rh', ARGV[2], 'prh', ARGV[1], 'rot_at', ARGV[3], 'alts', '')
elseif s[2] and s[2] == ARGV[1] and now - tonumber(s[3]) <= tonumber(ARGV[4]) then
  local joined = ARGV[2]
  if alts ~= '' then joined = alts .. ',' .. ARGV[2] end
  redis.call('HSET', KEYS[1], 'alts', joined)
else
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[6])
  return 'reused'
end
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[5])
return 'rotated'";

const DELETE: &str = r"
local n = redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
return n";

const DELETE_ALL: &str = r"
local ids = redis.call('SMEMBERS', KEYS[1])
local removed = {}
for _, id in ipairs(ids) do
  if id ~= ARGV[2] then
    redis.call('DEL', ARGV[1] .. id)
    redis.call('SREM', KEYS[1], id)
    table.insert(removed, id)
  end
end
if ARGV[3] == '1' then redis.call('INCR', KEYS[2]) end
return removed";

fn failed(e: redis::RedisError) -> RedisError {
    RedisError::Unreachable(e.to_string())
}

impl<'a> SessionStore<'a> {
    /// A store whose sessions live `ttl` after their last refresh, with the node's
    /// cache of recent checks.
    pub fn new(redis: &'a RedisHandle, ttl: Duration, invalidations: &'a Invalidations) -> Self {
        Self {
            redis,
            ttl,
            invalidations,
        }
    }

    fn cache(&self) -> &LocalCache<CachedSession> {
        &self.invalidations.sessions
    }

    /// The user's credentials generation now (0 before any password change).
    pub async fn credentials(&self, user: &UserId) -> Result<u64, RedisError> {
        retry_idempotent(|| self.credentials_once(user)).await
    }

    async fn credentials_once(&self, user: &UserId) -> Result<u64, RedisError> {
        let mut conn = self.redis.connection().await?;
        let generation: Option<u64> = redis::cmd("GET")
            .arg(credentials_key(user))
            .query_async(&mut conn)
            .await
            .map_err(failed)?;
        Ok(generation.unwrap_or(0))
    }

    /// Records a new session, unless the password changed since it was checked
    /// (`new.credentials` no longer current): then nothing is recorded and the answer is
    /// false.
    pub async fn create(&self, new: NewSession<'_>) -> Result<bool, RedisError> {
        let mut conn = self.redis.connection().await?;
        let now = unix_now();
        let created: i64 = Script::new(CREATE)
            .key(session_key(new.user, new.session.as_str()))
            .key(sessions_key(new.user))
            .key(credentials_key(new.user))
            .arg(new.user.as_str())
            .arg(now)
            .arg(truncate(new.user_agent, 256))
            .arg(&new.ip)
            .arg(&new.refresh_hash)
            .arg(new.csrf_hash.as_deref().unwrap_or(""))
            .arg(self.ttl.as_secs())
            .arg(new.session.as_str())
            .arg(new.credentials.map(|g| g.to_string()).unwrap_or_default())
            .invoke_async(&mut conn)
            .await
            .map_err(failed)?;
        if created == 0 {
            return Ok(false);
        }
        self.mark_active(new.user, new.session).await;
        Ok(true)
    }

    /// Whether the session still exists (every authenticated request asks), refreshing
    /// its last-seen time at most once a minute. Asked again through a failover (see
    /// [`retry_idempotent`]): it changes nothing but the last-seen time.
    ///
    /// A check this node made a moment ago answers without Redis while the node hears
    /// every revocation (see [`crate::invalidation`]).
    pub async fn check(
        &self,
        user: &UserId,
        session: &SessionId,
    ) -> Result<Option<LiveSession>, RedisError> {
        if let Some(cached) = self
            .cache()
            .get(session.as_str())
            .filter(|c| c.user == user.as_str())
        {
            metrics::counter!("strata_cache_requests_total", "cache" => "session", "result" => "hit")
                .increment(1);
            return Ok(Some(cached.live));
        }
        if self.cache().enabled() {
            metrics::counter!("strata_cache_requests_total", "cache" => "session", "result" => "miss")
                .increment(1);
        }
        let generation = self.cache().generation();
        let live = retry_idempotent(|| self.check_once(user, session)).await?;
        if let Some(live) = &live {
            let cached = CachedSession {
                user: user.as_str().to_owned(),
                live: live.clone(),
            };
            self.cache().insert(session.as_str(), cached, generation);
        }
        Ok(live)
    }

    async fn check_once(
        &self,
        user: &UserId,
        session: &SessionId,
    ) -> Result<Option<LiveSession>, RedisError> {
        let mut conn = self.redis.connection().await?;
        let key = session_key(user, session.as_str());
        let (owner, last_seen, csrf): (Option<String>, Option<u64>, Option<String>) =
            redis::cmd("HMGET")
                .arg(&key)
                .arg("uid")
                .arg("last_seen_at")
                .arg("csrf")
                .query_async(&mut conn)
                .await
                .map_err(failed)?;
        if owner.as_deref() != Some(user.as_str()) {
            return Ok(None);
        }
        let now = unix_now();
        if last_seen.is_none_or(|seen| now.saturating_sub(seen) >= LAST_SEEN_RESOLUTION_SECS) {
            let _: Result<i64, _> = redis::cmd("HSET")
                .arg(&key)
                .arg("last_seen_at")
                .arg(now)
                .query_async(&mut conn)
                .await;
        }
        Ok(Some(LiveSession {
            csrf_hash: csrf.filter(|c| !c.is_empty()),
        }))
    }

    /// Rotates a session's refresh secret from `presented` to `next` (see [`Rotation`]).
    pub async fn rotate(
        &self,
        user: &UserId,
        session: &SessionId,
        presented: &str,
        next: &str,
        grace: Duration,
    ) -> Result<Rotation, RedisError> {
        let mut conn = self.redis.connection().await?;
        let outcome: String = Script::new(ROTATE)
            .key(session_key(user, session.as_str()))
            .key(sessions_key(user))
            .arg(presented)
            .arg(next)
            .arg(unix_millis())
            .arg(grace.as_millis() as u64)
            .arg(self.ttl.as_secs())
            .arg(session.as_str())
            .invoke_async(&mut conn)
            .await
            .map_err(failed)?;
        Ok(match outcome.as_str() {
            "rotated" => {
                self.mark_active(user, session).await;
                Rotation::Rotated
            }
            "reused" => {
                self.redis.replicated(&sessions_key(user)).await;
                self.revoked(user, &[session.to_string()]).await?;
                Rotation::Reused
            }
            _ => Rotation::Missing,
        })
    }

    /// Ends one session. Returns whether it existed.
    pub async fn delete(&self, user: &UserId, session: &str) -> Result<bool, RedisError> {
        let mut conn = self.redis.connection().await?;
        let deleted: i64 = Script::new(DELETE)
            .key(session_key(user, session))
            .key(sessions_key(user))
            .arg(session)
            .invoke_async(&mut conn)
            .await
            .map_err(failed)?;
        self.redis.replicated(&sessions_key(user)).await;
        self.revoked(user, &[session.to_owned()]).await?;
        Ok(deleted > 0)
    }

    /// Ends every session of the user except `keep`. Returns how many ended. With
    /// `credentials_changed` (a password change) it also bumps the credentials
    /// generation, so logins checked against the old password make no session.
    pub async fn delete_all(
        &self,
        user: &UserId,
        keep: Option<&SessionId>,
        credentials_changed: bool,
    ) -> Result<usize, RedisError> {
        let mut conn = self.redis.connection().await?;
        let prefix = format!("strata:{{u:{user}}}:session:");
        let removed: Vec<String> = Script::new(DELETE_ALL)
            .key(sessions_key(user))
            .key(credentials_key(user))
            .arg(prefix)
            .arg(keep.map(SessionId::as_str).unwrap_or(""))
            .arg(if credentials_changed { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await
            .map_err(failed)?;
        self.redis.replicated(&sessions_key(user)).await;
        self.revoked(user, &removed).await?;
        Ok(removed.len())
    }

    /// The user's live sessions, oldest first. Ids whose session expired are dropped
    /// from the set on the way.
    pub async fn list(&self, user: &UserId) -> Result<Vec<SessionView>, RedisError> {
        let mut conn = self.redis.connection().await?;
        let ids: Vec<String> = redis::cmd("SMEMBERS")
            .arg(sessions_key(user))
            .query_async(&mut conn)
            .await
            .map_err(failed)?;
        let mut views = Vec::with_capacity(ids.len());
        for id in ids {
            let fields: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
                .arg(session_key(user, &id))
                .query_async(&mut conn)
                .await
                .map_err(failed)?;
            if fields.is_empty() {
                let _: Result<i64, _> = redis::cmd("SREM")
                    .arg(sessions_key(user))
                    .arg(&id)
                    .query_async(&mut conn)
                    .await;
                continue;
            }
            let number = |name: &str| fields.get(name).and_then(|v| v.parse().ok()).unwrap_or(0);
            views.push(SessionView {
                created_at: number("created_at"),
                last_seen_at: number("last_seen_at"),
                user_agent: fields.get("ua").cloned().unwrap_or_default(),
                ip: fields.get("ip").cloned().unwrap_or_default(),
                id,
            });
        }
        views.sort_by_key(|v| (v.created_at, v.id.clone()));
        Ok(views)
    }

    /// Sessions alive across the cluster, dropping expired entries first.
    pub async fn count_active(&self) -> Result<u64, RedisError> {
        let mut conn = self.redis.connection().await?;
        let _: i64 = redis::cmd("ZREMRANGEBYSCORE")
            .arg(ACTIVE_SESSIONS_KEY)
            .arg("-inf")
            .arg(unix_millis())
            .query_async(&mut conn)
            .await
            .map_err(failed)?;
        redis::cmd("ZCARD")
            .arg(ACTIVE_SESSIONS_KEY)
            .query_async(&mut conn)
            .await
            .map_err(failed)
    }

    async fn mark_active(&self, user: &UserId, session: &SessionId) {
        if let Ok(mut conn) = self.redis.connection().await {
            let expires = unix_millis() + self.ttl.as_millis() as u64;
            let _: Result<i64, _> = redis::cmd("ZADD")
                .arg(ACTIVE_SESSIONS_KEY)
                .arg(expires)
                .arg(format!("{user}:{session}"))
                .query_async(&mut conn)
                .await;
        }
    }

    /// Tells every node's cache that `sessions` ended (before the revocation is
    /// acknowledged), and takes them off the active-sessions gauge. A revocation that
    /// cannot be published fails (503): the session is gone from Redis, but a node
    /// could still trust its cached check for up to `cache.session_checks_ms`.
    async fn revoked(&self, user: &UserId, sessions: &[String]) -> Result<(), RedisError> {
        if sessions.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = sessions.iter().map(String::as_str).collect();
        self.invalidations
            .publish(self.redis, Subject::Sessions, &ids)
            .await?;
        self.unmark_active(user, sessions).await;
        Ok(())
    }

    async fn unmark_active(&self, user: &UserId, sessions: &[String]) {
        if sessions.is_empty() {
            return;
        }
        if let Ok(mut conn) = self.redis.connection().await {
            let mut cmd = redis::cmd("ZREM");
            cmd.arg(ACTIVE_SESSIONS_KEY);
            for session in sessions {
                cmd.arg(format!("{user}:{session}"));
            }
            let _: Result<i64, _> = cmd.query_async(&mut conn).await;
        }
    }
}

fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}
