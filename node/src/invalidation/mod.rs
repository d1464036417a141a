//! Node-local caches that cost no round trip, kept correct by invalidation messages:
//! the session checks a node made (so most authenticated requests make no Redis round
//! trip) and public posts (so a popular post is served without one), while a logout
//! still takes effect at once on every node and no node serves a post older than a
//! change already acknowledged.
//!
//! **How an invalidation reaches every node.** Every change that ends a session (logout,
//! logout-all, a password change, a reused refresh token) or changes a post is published
//! with `SPUBLISH` on [`CHANNEL`] before it is acknowledged. A sharded channel lives on
//! one Redis master (its slot's), and every node subscribes *on that master*, so the
//! server writes the message to every subscriber in the same step as it answers the
//! publish: the entry leaves every node's cache before the client can have the answer.
//! Each node listens from a thread of its own, so a busy runtime cannot delay it.
//!
//! **When a cached value is trusted.** Only while all of these hold:
//! - it is younger than its cache's maximum age (`auth.session_cache_ms`,
//!   `cache.local_post_ms`);
//! - the listener hears the channel: every node publishes a heartbeat there every
//!   [`HEARTBEAT`], and a listener that heard nothing for [`LIVENESS`], or lost its
//!   connection, empties the caches and stops them being used until it hears again;
//! - no invalidation of its cache arrived between reading the value from its source and
//!   caching it (a generation counter), so a fetch racing a change cannot cache the old
//!   value.
//!
//! A change whose invalidation cannot be published is retried for 4 s, longer than
//! [`LIVENESS`]: when the channel's master is unreachable, every node has stopped
//! trusting its caches by then. When that master fails over, the listener loses its
//! connection (the caches are bypassed) and subscribes again on the promoted replica.

pub mod local_cache;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use local_cache::{Liveness, LocalCache};

use crate::auth::sessions::LiveSession;
use crate::items::posts::Post;
use crate::redis_handle::{RedisError, RedisHandle, retry_idempotent};

/// The sharded channel invalidations and heartbeats travel on.
pub const CHANNEL: &str = "strata:invalidations";

/// How often each node publishes a heartbeat on the channel.
pub const HEARTBEAT: Duration = Duration::from_millis(500);

/// How long a listener may hear nothing before the caches stop being used.
pub const LIVENESS: Duration = Duration::from_millis(1_500);

/// How long the listener waits for the next message before it takes the connection
/// for dead and subscribes again.
const SILENCE: Duration = Duration::from_secs(3);

/// Most entries of each cache.
const CAPACITY: usize = 100_000;

/// What an invalidation names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// Sessions that ended (session ids).
    Sessions,
    /// Posts that changed (post ids).
    Posts,
}

impl Subject {
    fn tag(self) -> &'static str {
        match self {
            Self::Sessions => "s",
            Self::Posts => "p",
        }
    }
}

/// A session check as the cache keeps it: whose it is, and what it found.
#[derive(Debug, Clone)]
pub struct CachedSession {
    pub user: String,
    pub live: LiveSession,
}

/// The node's local caches and its hearing of the channel.
pub struct Invalidations {
    liveness: Arc<Liveness>,
    /// Session checks by session id.
    pub sessions: LocalCache<CachedSession>,
    /// Public posts by id.
    pub posts: LocalCache<Post>,
    stopped: AtomicBool,
}

impl Invalidations {
    /// Caches trusting session checks for `session_max_age` and public posts for
    /// `post_max_age` (zero turns a cache off).
    pub fn new(session_max_age: Duration, post_max_age: Duration) -> Self {
        let liveness = Arc::new(Liveness::new(LIVENESS));
        Self {
            sessions: LocalCache::new(session_max_age, CAPACITY, Arc::clone(&liveness)),
            posts: LocalCache::new(post_max_age, CAPACITY, Arc::clone(&liveness)),
            liveness,
            stopped: AtomicBool::new(false),
        }
    }

    /// Whether any cache is on (and the node must listen).
    pub fn enabled(&self) -> bool {
        self.sessions.enabled() || self.posts.enabled()
    }

    /// Handles one message of the channel: a heartbeat, or a subject tag followed by
    /// the ids it invalidates, separated by spaces.
    pub fn hear(&self, message: &str) {
        let mut words = message.split(' ');
        let subject = match words.next() {
            Some("s") => {
                self.sessions.invalidate(words);
                "sessions"
            }
            Some("p") => {
                self.posts.invalidate(words);
                "posts"
            }
            _ => "heartbeat",
        };
        metrics::counter!("strata_invalidations_heard_total", "subject" => subject).increment(1);
        self.liveness.heard();
    }

    /// Stops trusting anything cached: the listener lost the channel.
    pub fn deafen(&self) {
        self.liveness.lost();
        self.sessions.clear();
        self.posts.clear();
    }

    /// Asks the listener thread to end.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
    }

    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }
}

/// The heartbeat message (invalidations start with a subject tag, never equal to it).
pub const HEARTBEAT_MESSAGE: &str = "hb";

/// Publishes an invalidation; returns once the channel's master took it (retried
/// through a failover).
pub async fn publish(
    redis: &RedisHandle,
    subject: Subject,
    ids: &[&str],
) -> Result<(), RedisError> {
    if ids.is_empty() {
        return Ok(());
    }
    let message = format!("{} {}", subject.tag(), ids.join(" "));
    retry_idempotent(|| async {
        let mut conn = redis.connection().await?;
        redis::cmd("SPUBLISH")
            .arg(CHANNEL)
            .arg(&message)
            .query_async::<i64>(&mut conn)
            .await
            .map(drop)
            .map_err(|e| RedisError::Unreachable(e.to_string()))
    })
    .await
}

/// Tells every node's listener the channel works (see [`LIVENESS`]).
pub async fn publish_heartbeat(redis: &RedisHandle) {
    let Ok(mut conn) = redis.connection().await else {
        return;
    };
    let sent: Result<i64, _> = redis::cmd("SPUBLISH")
        .arg(CHANNEL)
        .arg(HEARTBEAT_MESSAGE)
        .query_async(&mut conn)
        .await;
    if let Err(e) = sent {
        tracing::debug!(error = %e, "invalidation heartbeat not sent");
    }
}

/// Starts the listener thread: subscribes to [`CHANNEL`] on the master that holds it
/// (found from any of `seeds` through its redirect) and feeds the caches, reconnecting
/// whenever the connection fails. Ends after [`Invalidations::stop`].
pub fn listen(node: Arc<Invalidations>, seeds: Vec<String>) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("invalidations".into())
        .spawn(move || {
            let mut next_seed = 0;
            let mut target: Option<String> = None;
            while !node.is_stopped() {
                let addr = target
                    .take()
                    .unwrap_or_else(|| seeds[next_seed % seeds.len()].clone());
                next_seed += 1;
                match subscribe_and_hear(&node, &addr) {
                    Ok(()) => {}
                    Err(Redirect(Some(moved))) => {
                        target = Some(moved);
                        continue;
                    }
                    Err(Redirect(None)) => {}
                }
                node.deafen();
                std::thread::sleep(Duration::from_millis(100));
            }
        })
        .expect("the invalidation listener thread starts")
}

/// Why a subscription ended: `Some(addr)` when the server said the channel lives
/// elsewhere.
struct Redirect(Option<String>);

fn subscribe_and_hear(node: &Invalidations, addr: &str) -> Result<(), Redirect> {
    let fail = |e: redis::RedisError| {
        tracing::debug!(error = %e, addr, "invalidation listener lost its connection");
        Redirect(None)
    };
    let client = redis::Client::open(addr).map_err(fail)?;
    let mut conn = client
        .get_connection_with_timeout(Duration::from_millis(500))
        .map_err(fail)?;
    // Heartbeats come every HEARTBEAT from every node: this much silence means the
    // server or the link is gone. The connection is then dropped, never read again: a
    // read cut off by its timeout leaves the client expecting a late reply, and it would
    // skip the next message as that reply.
    conn.set_read_timeout(Some(SILENCE)).map_err(fail)?;
    let subscribed: Result<redis::Value, _> =
        redis::cmd("SSUBSCRIBE").arg(CHANNEL).query(&mut conn);
    if let Err(e) = subscribed {
        if let Some((host, port)) = e.redirect_node() {
            return Err(Redirect(Some(format!("redis://{host}:{port}"))));
        }
        return Err(fail(e));
    }
    // Whatever went by before this subscription is unknown: start empty.
    node.deafen();
    tracing::info!(addr, "listening for cache invalidations");
    while !node.is_stopped() {
        match conn.recv_response() {
            Ok(value) => match message_of(value) {
                Some(Message::Payload(text)) => node.hear(&text),
                // The channel's slot moved (or the server unsubscribed us): find it again.
                Some(Message::Unsubscribed) => return Err(Redirect(None)),
                None => {}
            },
            Err(e) => return Err(fail(e)),
        }
    }
    Ok(())
}

enum Message {
    Payload(String),
    Unsubscribed,
}

/// A pushed `smessage` (its payload) or `sunsubscribe`.
fn message_of(value: redis::Value) -> Option<Message> {
    let parts = match value {
        redis::Value::Array(parts) | redis::Value::Push { data: parts, .. } => parts,
        _ => return None,
    };
    let text = |v: &redis::Value| match v {
        redis::Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        redis::Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    match parts.first().and_then(text).as_deref() {
        Some("smessage") => parts.get(2).and_then(text).map(Message::Payload),
        Some("sunsubscribe") => Some(Message::Unsubscribed),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_the_cache_they_name() {
        let node = Invalidations::new(Duration::from_secs(5), Duration::from_secs(5));
        node.hear(HEARTBEAT_MESSAGE);
        let live = CachedSession {
            user: "u".into(),
            live: LiveSession { csrf_hash: None },
        };
        node.sessions
            .insert("s1", live.clone(), node.sessions.generation());
        node.sessions.insert("s2", live, node.sessions.generation());
        node.hear("p s1");
        assert!(
            node.sessions.get("s1").is_some(),
            "a post id is not a session"
        );
        node.hear("s s1 s3");
        assert!(node.sessions.get("s1").is_none());
        assert!(node.sessions.get("s2").is_some());
        node.deafen();
        assert!(node.sessions.get("s2").is_none());
    }
}
