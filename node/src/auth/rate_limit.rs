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

const PEEK: &str = r"
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
return {n, redis.call('PTTL', KEYS[1])}";

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
    let (count, ttl_ms) = run(redis, HIT, scope, subject, window).await?;
    Ok(decide(scope, count <= limit, ttl_ms))
}

/// Whether `subject` has already used up `limit` in `scope`, without counting this
/// attempt: for limits on failures, checked before the work and counted (with [`hit`])
/// only when the attempt fails.
pub async fn peek(
    redis: &RedisHandle,
    scope: &str,
    subject: &str,
    limit: u64,
) -> Result<Decision, RedisError> {
    let (count, ttl_ms) = run(redis, PEEK, scope, subject, Duration::ZERO).await?;
    Ok(decide(scope, count < limit, ttl_ms))
}

async fn run(
    redis: &RedisHandle,
    script: &str,
    scope: &str,
    subject: &str,
    window: Duration,
) -> Result<(u64, i64), RedisError> {
    let mut conn = redis.connection().await?;
    let key = format!("strata:rl:{{{scope}:{subject}}}");
    Script::new(script)
        .key(key)
        .arg(window.as_millis() as u64)
        .invoke_async(&mut conn)
        .await
        .map_err(|e| RedisError::Unreachable(e.to_string()))
}

fn decide(scope: &str, allowed: bool, ttl_ms: i64) -> Decision {
    if allowed {
        return Decision::Allowed;
    }
    metrics::counter!("strata_rate_limited_total", "scope" => scope.to_owned()).increment(1);
    Decision::Limited {
        retry_after: Duration::from_millis(ttl_ms.max(1000) as u64),
    }
}
