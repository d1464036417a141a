//! Node-local caches that cost no round trip, kept correct by invalidation messages:
//! the session checks a node made (so most authenticated requests make no Redis round
//! trip) and public posts (so a popular post is served without one), while a logout
//! still takes effect at once on every node and no node serves a post older than a
//! change already acknowledged.
//!
//! **How an invalidation reaches every node.** Every change that ends a session (logout,
//! logout-all, a password change, a reused refresh token) or changes a post is published
//! with `SPUBLISH` on [`CHANNEL`], a sharded channel that lives on one Redis master (its
//! slot's); every node subscribes on that master from a thread of its own, drops the
//! entries named, and answers with an ack on the channel.
//!
//! **The change is acknowledged only once every node applied it.** The publishing node
//! waits for the ack of every node it heard lately (see [`acks`]), usually well under a
//! millisecond. A node that does not answer within [`ACK_DEADLINE`] is not hearing its
//! own heartbeats either (they travel after the invalidation on the same connection),
//! so it has stopped trusting its caches by then: the wait ends there at the latest. So
//! when a client has the answer to a logout, no node serves that session from memory,
//! however late a node's listener thread would have got to the message.
//!
//! **When a cached value is trusted.** Only while all of these hold:
//! - it is younger than its cache's maximum age (`cache.session_checks_ms`,
//!   `cache.public_posts_ms`);
//! - the node hears itself on the channel: every node publishes a heartbeat there every
//!   [`HEARTBEAT`], and a node that has not heard its own for [`LIVENESS`], or lost its
//!   connection, empties the caches and stops them being used until it hears again;
//! - no invalidation of its cache arrived between reading the value from its source and
//!   caching it (a generation counter), so a fetch racing a change cannot cache the old
//!   value.
//!
//! A change whose invalidation cannot be published is retried for 4 s, longer than
//! [`LIVENESS`]: when the channel's master is unreachable, every node has stopped
//! trusting its caches by then. When that master fails over, the listener loses its
//! connection (the caches are bypassed) and subscribes again on the promoted replica.
//! Every node of a cluster must run with the same cache settings: a node whose caches
//! are off does not listen, so it publishes without waiting for acks.

pub mod acks;
pub mod local_cache;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use acks::Acks;
use local_cache::{Liveness, LocalCache};

use crate::auth::sessions::LiveSession;
use crate::items::posts::Post;
use crate::redis_handle::{RedisError, RedisHandle, retry_idempotent};

/// The sharded channel invalidations and heartbeats travel on.
pub const CHANNEL: &str = "strata:invalidations";

/// How often each node publishes a heartbeat on the channel.
pub const HEARTBEAT: Duration = Duration::from_millis(500);

/// How long a node may not hear its own heartbeat before its caches stop being used.
pub const LIVENESS: Duration = Duration::from_millis(1_500);

/// The longest a change waits for the acks of its invalidation: by then a node that did
/// not answer has not heard its own heartbeat for [`LIVENESS`], so trusts nothing.
pub const ACK_DEADLINE: Duration = LIVENESS
    .saturating_add(HEARTBEAT)
    .saturating_add(Duration::from_millis(250));

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
    /// This node's id, as it signs its heartbeats and acks.
    node_id: String,
    liveness: Arc<Liveness>,
    acks: Acks,
    /// Session checks by session id.
    pub sessions: LocalCache<CachedSession>,
    /// Public posts by id.
    pub posts: LocalCache<Post>,
    stopped: AtomicBool,
}

impl Invalidations {
    /// Caches of node `node_id` trusting session checks for `session_max_age` and
    /// public posts for `post_max_age` (zero turns a cache off).
    pub fn new(node_id: &str, session_max_age: Duration, post_max_age: Duration) -> Self {
        let liveness = Arc::new(Liveness::new(LIVENESS));
        Self {
            node_id: node_id.to_owned(),
            acks: Acks::default(),
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

    /// Handles one message of the channel, words separated by spaces, and returns the
    /// ack to publish for an invalidation it applied:
    /// - `hb <node>`: a heartbeat;
    /// - `s|p <origin> <nonce> <id>...`: sessions or posts that changed;
    /// - `a <origin> <nonce> <node>`: `node` applied `origin`'s invalidation `nonce`.
    pub fn hear(&self, message: &str) -> Option<String> {
        let mut words = message.split(' ');
        let tag = words.next().unwrap_or_default();
        let (subject, ack) = match tag {
            "s" | "p" => {
                let (origin, nonce) = (words.next()?, words.next()?);
                let subject = if tag == "s" {
                    self.sessions.invalidate(words);
                    "sessions"
                } else {
                    self.posts.invalidate(words);
                    "posts"
                };
                (
                    subject,
                    Some(format!("a {origin} {nonce} {}", self.node_id)),
                )
            }
            "a" => {
                let (origin, nonce, node) = (words.next()?, words.next()?, words.next()?);
                self.acks.seen(node);
                if origin == self.node_id
                    && let Ok(nonce) = nonce.parse()
                {
                    self.acks.acked(nonce, node);
                }
                ("ack", None)
            }
            _ => {
                let node = words.next().unwrap_or_default();
                self.acks.seen(node);
                if node == self.node_id {
                    self.liveness.heard();
                }
                ("heartbeat", None)
            }
        };
        metrics::counter!("strata_invalidations_heard_total", "subject" => subject).increment(1);
        ack
    }

    /// Publishes an invalidation and returns once every node applied it (see the
    /// module's documentation), or the master did not take it (retried through a
    /// failover).
    pub async fn publish(
        &self,
        redis: &RedisHandle,
        subject: Subject,
        ids: &[&str],
    ) -> Result<(), RedisError> {
        if ids.is_empty() {
            return Ok(());
        }
        let hearing = self.liveness.listening();
        let expected = self.acks.expect(LIVENESS);
        let message = format!(
            "{} {} {} {}",
            subject.tag(),
            self.node_id,
            expected.nonce,
            ids.join(" ")
        );
        let sent = publish_message(redis, &message).await;
        if sent.is_ok() && self.enabled() {
            let all_acked = if hearing {
                tokio::time::timeout(ACK_DEADLINE, expected.all_acked)
                    .await
                    .is_ok()
            } else {
                // Deaf: no ack can be heard, so wait until no node can still trust a
                // cache the change makes stale.
                tokio::time::sleep(ACK_DEADLINE).await;
                false
            };
            if !all_acked {
                metrics::counter!("strata_invalidation_ack_timeouts_total").increment(1);
            }
        }
        self.acks.forget(expected.nonce);
        sent
    }

    /// The heartbeat this node publishes.
    pub fn heartbeat(&self) -> String {
        format!("{HEARTBEAT_MESSAGE} {}", self.node_id)
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

/// The heartbeat message's tag (invalidations start with a subject tag, never equal
/// to it).
pub const HEARTBEAT_MESSAGE: &str = "hb";

/// Publishes one message on the channel; returns once the channel's master took it
/// (retried through a failover).
async fn publish_message(redis: &RedisHandle, message: &str) -> Result<(), RedisError> {
    retry_idempotent(|| async {
        let mut conn = redis.connection().await?;
        redis::cmd("SPUBLISH")
            .arg(CHANNEL)
            .arg(message)
            .query_async::<i64>(&mut conn)
            .await
            .map(drop)
            .map_err(|e| RedisError::Unreachable(e.to_string()))
    })
    .await
}

/// Tells every node's listener this node is there, and this node that the channel
/// works (see [`LIVENESS`]).
pub async fn publish_heartbeat(node: &Invalidations, redis: &RedisHandle) {
    let Ok(mut conn) = redis.connection().await else {
        return;
    };
    let sent: Result<i64, _> = redis::cmd("SPUBLISH")
        .arg(CHANNEL)
        .arg(node.heartbeat())
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
    // Acks go out on a connection of their own to the same master (a subscribed
    // connection cannot publish), opened again whenever it fails.
    let mut acks: Option<redis::Connection> = None;
    while !node.is_stopped() {
        match conn.recv_response() {
            Ok(value) => match message_of(value) {
                Some(Message::Payload(text)) => {
                    if let Some(ack) = node.hear(&text) {
                        send_ack(&client, &mut acks, &ack);
                    }
                }
                // The channel's slot moved (or the server unsubscribed us): find it again.
                Some(Message::Unsubscribed) => return Err(Redirect(None)),
                None => {}
            },
            Err(e) => return Err(fail(e)),
        }
    }
    Ok(())
}

/// Publishes an ack; on failure the connection is dropped and the ack lost (the node
/// that waits for it stops waiting at [`ACK_DEADLINE`]).
fn send_ack(client: &redis::Client, acks: &mut Option<redis::Connection>, ack: &str) {
    if acks.is_none() {
        *acks = client
            .get_connection_with_timeout(Duration::from_millis(500))
            .ok();
        if let Some(conn) = acks {
            let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
        }
    }
    let Some(conn) = acks else {
        return;
    };
    let sent: Result<i64, _> = redis::cmd("SPUBLISH").arg(CHANNEL).arg(ack).query(conn);
    if let Err(e) = sent {
        tracing::debug!(error = %e, "invalidation ack not sent");
        *acks = None;
    }
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
    fn messages_reach_the_cache_they_name_and_are_acked() {
        let node = Invalidations::new("node-1", Duration::from_secs(5), Duration::from_secs(5));
        node.hear("hb node-2");
        assert!(
            node.sessions.get("any").is_none() && !node.liveness.listening(),
            "another node's heartbeat is not this node hearing itself"
        );
        node.hear(&node.heartbeat());
        assert!(node.liveness.listening());
        let live = CachedSession {
            user: "u".into(),
            live: LiveSession { csrf_hash: None },
        };
        node.sessions
            .insert("s1", live.clone(), node.sessions.generation());
        node.sessions.insert("s2", live, node.sessions.generation());
        assert_eq!(
            node.hear("p node-2 7 s1").as_deref(),
            Some("a node-2 7 node-1")
        );
        assert!(
            node.sessions.get("s1").is_some(),
            "a post id is not a session"
        );
        assert_eq!(
            node.hear("s node-2 8 s1 s3").as_deref(),
            Some("a node-2 8 node-1")
        );
        assert!(node.sessions.get("s1").is_none());
        assert!(node.sessions.get("s2").is_some());
        node.deafen();
        assert!(node.sessions.get("s2").is_none());
    }

    #[test]
    fn an_invalidation_waits_for_the_ack_of_every_node_heard_lately() {
        let node = Invalidations::new("node-1", Duration::from_secs(5), Duration::from_secs(5));
        node.hear(&node.heartbeat());
        node.hear("hb node-2");
        let mut expected = node.acks.expect(LIVENESS);
        let nonce = expected.nonce;
        node.hear(&format!("a node-1 {nonce} node-2"));
        assert!(
            expected.all_acked.try_recv().is_err(),
            "node-1 itself has not acked"
        );
        node.hear(&format!("a node-3 {nonce} node-1"));
        assert!(
            expected.all_acked.try_recv().is_err(),
            "an ack of another node's invalidation"
        );
        node.hear(&format!("a node-1 {nonce} node-1"));
        assert!(expected.all_acked.try_recv().is_ok());
    }
}
