//! Sessions this node checked a moment ago, so most authenticated requests make no Redis
//! round trip, while a logout still takes effect at once on every node.
//!
//! **How a revocation reaches every node.** Every revocation (logout, logout-all, a
//! password change, a reused refresh token) is published with `SPUBLISH` on
//! [`REVOCATIONS_CHANNEL`] before it is acknowledged. A sharded channel lives on one
//! Redis master (its slot's), and every node subscribes *on that master*, so the server
//! writes the message to every subscriber in the same step as it answers the publish:
//! the revoked session leaves every node's cache before the client can have the answer.
//! Each node listens from a thread of its own, so a busy runtime cannot delay it.
//!
//! **When a cached check is trusted.** Only while all of these hold:
//! - it is younger than `max_age` (`auth.session_cache_ms`; this also bounds how long a
//!   session outlives its own expiry);
//! - the listener hears the channel: every node publishes a heartbeat there every
//!   [`HEARTBEAT`], and a listener that heard nothing for [`LIVENESS`], or lost its
//!   connection, empties the cache and stops it being used until it hears again;
//! - no revocation arrived between the Redis check and the moment it was cached (a
//!   generation counter), so a check racing a logout cannot cache the session as live.
//!
//! When the channel's master fails over, the listener loses its connection (the cache
//! is bypassed: every check goes to Redis) and subscribes again on the promoted replica.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::auth::sessions::LiveSession;

/// The sharded channel revocations and heartbeats travel on.
pub const REVOCATIONS_CHANNEL: &str = "strata:revocations";

/// How often each node publishes a heartbeat on the channel.
pub const HEARTBEAT: Duration = Duration::from_millis(500);

/// How long a listener may hear nothing before the cache stops being used.
pub const LIVENESS: Duration = Duration::from_millis(1_500);

/// The heartbeat message (revocations carry session ids, which never equal it).
pub const HEARTBEAT_MESSAGE: &str = "hb";

/// Recently checked sessions, by session id.
pub struct SessionCache {
    entries: Mutex<HashMap<String, Entry>>,
    /// Bumped by every revocation heard and every time the cache is emptied.
    generation: AtomicU64,
    /// When the listener last heard the channel (ms since `started`); 0: not listening.
    heard_at_ms: AtomicU64,
    started: Instant,
    max_age: Duration,
    capacity: usize,
    stopped: AtomicBool,
}

struct Entry {
    user: String,
    live: LiveSession,
    checked: Instant,
}

impl SessionCache {
    /// A cache trusting checks for `max_age` (zero: never used), holding at most
    /// `capacity` sessions.
    pub fn new(max_age: Duration, capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            heard_at_ms: AtomicU64::new(0),
            started: Instant::now(),
            max_age,
            capacity,
            stopped: AtomicBool::new(false),
        }
    }

    /// Whether the cache is configured at all.
    pub fn enabled(&self) -> bool {
        !self.max_age.is_zero()
    }

    /// The generation to hand back to [`Self::insert`] after a Redis check.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The session, when a trusted check of it is cached.
    pub fn get(&self, user: &str, session: &str) -> Option<LiveSession> {
        if !self.enabled() || !self.listening() {
            return None;
        }
        let entries = self.entries.lock().expect("session cache lock");
        entries
            .get(session)
            .filter(|e| e.user == user && e.checked.elapsed() < self.max_age)
            .map(|e| e.live.clone())
    }

    /// Caches a check that found the session live, unless a revocation was heard since
    /// `seen_generation` was read (before the check was sent).
    pub fn insert(&self, user: &str, session: &str, live: &LiveSession, seen_generation: u64) {
        if !self.enabled() || !self.listening() {
            return;
        }
        let mut entries = self.entries.lock().expect("session cache lock");
        // Read under the lock: a revocation bumps the generation under it too.
        if self.generation.load(Ordering::Acquire) != seen_generation {
            return;
        }
        if entries.len() >= self.capacity {
            let max_age = self.max_age;
            entries.retain(|_, e| e.checked.elapsed() < max_age);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(
            session.to_owned(),
            Entry {
                user: user.to_owned(),
                live: live.clone(),
                checked: Instant::now(),
            },
        );
    }

    /// Handles one message of the channel: a heartbeat, or revoked session ids
    /// separated by spaces.
    pub fn hear(&self, message: &str) {
        if message != HEARTBEAT_MESSAGE {
            let mut entries = self.entries.lock().expect("session cache lock");
            self.generation.fetch_add(1, Ordering::AcqRel);
            for session in message.split(' ') {
                entries.remove(session);
            }
        }
        let now = self.started.elapsed().as_millis() as u64;
        self.heard_at_ms.store(now.max(1), Ordering::Release);
    }

    /// Stops trusting anything cached: the listener lost the channel (revocations may
    /// have gone by unheard).
    pub fn deafen(&self) {
        let mut entries = self.entries.lock().expect("session cache lock");
        self.heard_at_ms.store(0, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.clear();
    }

    /// Whether the listener heard the channel within [`LIVENESS`].
    pub fn listening(&self) -> bool {
        let heard = self.heard_at_ms.load(Ordering::Acquire);
        heard != 0
            && (self.started.elapsed().as_millis() as u64).saturating_sub(heard)
                < LIVENESS.as_millis() as u64
    }

    /// Asks the listener thread to end.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
    }

    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }
}

/// Starts the listener thread: subscribes to [`REVOCATIONS_CHANNEL`] on the master
/// that holds it (found from any of `seeds` through its redirect) and feeds the cache,
/// reconnecting whenever the connection fails. Ends after [`SessionCache::stop`].
pub fn listen(cache: Arc<SessionCache>, seeds: Vec<String>) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("session-revocations".into())
        .spawn(move || {
            let mut next_seed = 0;
            let mut target: Option<String> = None;
            while !cache.is_stopped() {
                let addr = target
                    .take()
                    .unwrap_or_else(|| seeds[next_seed % seeds.len()].clone());
                next_seed += 1;
                match subscribe_and_hear(&cache, &addr) {
                    Ok(()) => {}
                    Err(Redirect(Some(moved))) => {
                        target = Some(moved);
                        continue;
                    }
                    Err(Redirect(None)) => {}
                }
                cache.deafen();
                std::thread::sleep(Duration::from_millis(100));
            }
        })
        .expect("the revocation listener thread starts")
}

/// Why a subscription ended: `Some(addr)` when the server said the channel lives
/// elsewhere.
struct Redirect(Option<String>);

fn subscribe_and_hear(cache: &SessionCache, addr: &str) -> Result<(), Redirect> {
    let fail = |e: redis::RedisError| {
        tracing::debug!(error = %e, addr, "revocation listener lost its connection");
        Redirect(None)
    };
    let client = redis::Client::open(addr).map_err(fail)?;
    let mut conn = client
        .get_connection_with_timeout(Duration::from_millis(500))
        .map_err(fail)?;
    conn.set_read_timeout(Some(Duration::from_millis(250)))
        .map_err(fail)?;
    let subscribed: Result<redis::Value, _> = redis::cmd("SSUBSCRIBE")
        .arg(REVOCATIONS_CHANNEL)
        .query(&mut conn);
    if let Err(e) = subscribed {
        if let Some((host, port)) = e.redirect_node() {
            return Err(Redirect(Some(format!("redis://{host}:{port}"))));
        }
        return Err(fail(e));
    }
    // Whatever went by before this subscription is unknown: start empty.
    cache.deafen();
    tracing::info!(addr, "listening for session revocations");
    while !cache.is_stopped() {
        match conn.recv_response() {
            Ok(value) => match message_of(value) {
                Some(Message::Payload(text)) => cache.hear(&text),
                // The channel's slot moved (or the server unsubscribed us): find it again.
                Some(Message::Unsubscribed) => return Err(Redirect(None)),
                None => {}
            },
            Err(e) if e.is_timeout() => {}
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

    fn live() -> LiveSession {
        LiveSession { csrf_hash: None }
    }

    fn listening_cache() -> SessionCache {
        let cache = SessionCache::new(Duration::from_secs(5), 100);
        cache.hear(HEARTBEAT_MESSAGE);
        cache
    }

    #[test]
    fn a_cached_check_is_used_only_while_the_listener_hears_the_channel() {
        let cache = SessionCache::new(Duration::from_secs(5), 100);
        cache.insert("u1", "s1", &live(), cache.generation());
        assert!(
            cache.get("u1", "s1").is_none(),
            "not listening: nothing cached"
        );
        cache.hear(HEARTBEAT_MESSAGE);
        cache.insert("u1", "s1", &live(), cache.generation());
        assert!(cache.get("u1", "s1").is_some());
        assert!(cache.get("u2", "s1").is_none(), "another user's token");
        cache.deafen();
        assert!(
            cache.get("u1", "s1").is_none(),
            "the listener lost the channel"
        );
        cache.hear(HEARTBEAT_MESSAGE);
        assert!(cache.get("u1", "s1").is_none(), "emptied when it lost it");
    }

    #[test]
    fn a_revocation_removes_the_session_and_a_racing_check_is_not_cached() {
        let cache = listening_cache();
        cache.insert("u1", "s1", &live(), cache.generation());
        cache.insert("u1", "s2", &live(), cache.generation());
        let before_check = cache.generation();
        cache.hear("s1 s3");
        assert!(cache.get("u1", "s1").is_none());
        assert!(cache.get("u1", "s2").is_some());
        cache.insert("u1", "s3", &live(), before_check);
        assert!(
            cache.get("u1", "s3").is_none(),
            "checked before the revocation"
        );
    }

    #[test]
    fn checks_older_than_the_maximum_age_are_not_used() {
        let cache = SessionCache::new(Duration::from_millis(20), 100);
        cache.hear(HEARTBEAT_MESSAGE);
        cache.insert("u1", "s1", &live(), cache.generation());
        assert!(cache.get("u1", "s1").is_some());
        std::thread::sleep(Duration::from_millis(30));
        cache.hear(HEARTBEAT_MESSAGE);
        assert!(cache.get("u1", "s1").is_none());
    }

    #[test]
    fn a_zero_maximum_age_disables_the_cache() {
        let cache = SessionCache::new(Duration::ZERO, 100);
        cache.hear(HEARTBEAT_MESSAGE);
        cache.insert("u1", "s1", &live(), cache.generation());
        assert!(cache.get("u1", "s1").is_none());
    }

    #[test]
    fn a_full_cache_makes_room() {
        let cache = SessionCache::new(Duration::from_secs(5), 2);
        cache.hear(HEARTBEAT_MESSAGE);
        for s in ["s1", "s2", "s3"] {
            cache.insert("u1", s, &live(), cache.generation());
        }
        assert!(cache.get("u1", "s3").is_some());
    }
}
