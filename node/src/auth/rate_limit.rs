//! Rate limits kept in Redis, so attempts on every node draw from one budget: a counter
//! per (scope, subject) that expires a window after its first hit.

use std::time::Duration;

use redis::Script;

use crate::redis_handle::{RedisError, RedisHandle};

const HIT: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {n, ttl}";

/// The answer to one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// Over the limit: try again after this long.
    Limited {
        retry_after: Duration,
    },
}

/// Counts one attempt of `scope` (e.g. `login-ip`) by `subject` and decides on it.
pub async fn hit(
    redis: &RedisHandle,
    scope: &str,
    subject: &str,
    limit: u64,
    window: Duration,
) -> Result<Decision, RedisError> {
    let mut conn = redis.connection().await?;
    let key = format!("strata:rl:{{{scope}:{subject}}}");
    let (count, ttl_ms): (u64, i64) = Script::new(HIT)
        .key(key)
        .arg(window.as_millis() as u64)
        .invoke_async(&mut conn)
        .await
        .map_err(|e| RedisError::Unreachable(e.to_string()))?;
    if count <= limit {
        return Ok(Decision::Allowed);
    }
    metrics::counter!("strata_rate_limited_total", "scope" => scope.to_owned()).increment(1);
    Ok(Decision::Limited {
        retry_after: Duration::from_millis(ttl_ms.max(1000) as u64),
    })
}
