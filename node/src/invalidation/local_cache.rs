//! One node-local cache of values checked a moment ago, trusted only while the node
//! hears the invalidation channel (see [`super`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Whether the node hears the invalidation channel: when it last heard anything on it.
pub struct Liveness {
    /// Milliseconds since `started`; 0: not listening.
    heard_at_ms: AtomicU64,
    started: Instant,
    window: Duration,
}

impl Liveness {
    /// Listening counts for `window` after each message heard.
    pub fn new(window: Duration) -> Self {
        Self {
            heard_at_ms: AtomicU64::new(0),
            started: Instant::now(),
            window,
        }
    }

    /// Records a message heard now.
    pub fn heard(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.heard_at_ms.store(now.max(1), Ordering::Release);
    }

    /// Records that the channel was lost.
    pub fn lost(&self) {
        self.heard_at_ms.store(0, Ordering::Release);
    }

    /// Whether something was heard within the window.
    pub fn listening(&self) -> bool {
        let heard = self.heard_at_ms.load(Ordering::Acquire);
        heard != 0
            && (self.started.elapsed().as_millis() as u64).saturating_sub(heard)
                < self.window.as_millis() as u64
    }
}

/// Values by key, each trusted for `max_age` while the channel is heard.
pub struct LocalCache<V> {
    entries: Mutex<Entries<V>>,
    liveness: Arc<Liveness>,
    max_age: Duration,
    capacity: usize,
}

struct Entries<V> {
    map: HashMap<String, (V, Instant)>,
    /// Bumped (under the lock) by every invalidation of this cache and every clearing.
    generation: u64,
}

impl<V: Clone> LocalCache<V> {
    /// A cache trusting values for `max_age` (zero: never used), holding at most
    /// `capacity` of them.
    pub fn new(max_age: Duration, capacity: usize, liveness: Arc<Liveness>) -> Self {
        Self {
            entries: Mutex::new(Entries {
                map: HashMap::new(),
                generation: 0,
            }),
            liveness,
            max_age,
            capacity,
        }
    }

    /// Whether the cache is configured at all.
    pub fn enabled(&self) -> bool {
        !self.max_age.is_zero()
    }

    /// The generation to hand back to [`Self::insert`]: read it before fetching the
    /// value from its source.
    pub fn generation(&self) -> u64 {
        if !self.enabled() {
            return 0;
        }
        self.lock().generation
    }

    /// The value, when a trusted one is cached.
    pub fn get(&self, key: &str) -> Option<V> {
        if !self.enabled() || !self.liveness.listening() {
            return None;
        }
        self.lock()
            .map
            .get(key)
            .filter(|(_, checked)| checked.elapsed() < self.max_age)
            .map(|(value, _)| value.clone())
    }

    /// Caches a value fetched after `seen_generation` was read, unless an invalidation
    /// of this cache came in between (the value may predate it).
    pub fn insert(&self, key: &str, value: V, seen_generation: u64) {
        if !self.enabled() || !self.liveness.listening() {
            return;
        }
        let mut entries = self.lock();
        if entries.generation != seen_generation {
            return;
        }
        if entries.map.len() >= self.capacity {
            let max_age = self.max_age;
            entries
                .map
                .retain(|_, (_, checked)| checked.elapsed() < max_age);
            if entries.map.len() >= self.capacity {
                entries.map.clear();
            }
        }
        entries.map.insert(key.to_owned(), (value, Instant::now()));
    }

    /// Drops the keys' values (an invalidation heard).
    pub fn invalidate<'k>(&self, keys: impl Iterator<Item = &'k str>) {
        let mut entries = self.lock();
        entries.generation += 1;
        for key in keys {
            entries.map.remove(key);
        }
    }

    /// Drops everything (invalidations may have gone by unheard).
    pub fn clear(&self) {
        let mut entries = self.lock();
        entries.generation += 1;
        entries.map.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries<V>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(max_age: Duration, capacity: usize) -> (LocalCache<u32>, Arc<Liveness>) {
        let liveness = Arc::new(Liveness::new(Duration::from_secs(60)));
        (
            LocalCache::new(max_age, capacity, Arc::clone(&liveness)),
            liveness,
        )
    }

    #[test]
    fn a_value_is_used_only_while_the_channel_is_heard() {
        let (cache, liveness) = cache(Duration::from_secs(5), 100);
        cache.insert("k", 1, cache.generation());
        assert_eq!(cache.get("k"), None, "not listening: nothing cached");
        liveness.heard();
        cache.insert("k", 1, cache.generation());
        assert_eq!(cache.get("k"), Some(1));
        liveness.lost();
        assert_eq!(cache.get("k"), None, "the channel was lost");
    }

    #[test]
    fn an_invalidation_drops_the_key_and_a_racing_fetch_is_not_cached() {
        let (cache, liveness) = cache(Duration::from_secs(5), 100);
        liveness.heard();
        cache.insert("a", 1, cache.generation());
        cache.insert("b", 2, cache.generation());
        let before_fetch = cache.generation();
        cache.invalidate(["a", "c"].into_iter());
        assert_eq!(cache.get("a"), None);
        assert_eq!(cache.get("b"), Some(2));
        cache.insert("c", 3, before_fetch);
        assert_eq!(cache.get("c"), None, "fetched before the invalidation");
        cache.clear();
        assert_eq!(cache.get("b"), None);
    }

    #[test]
    fn values_older_than_the_maximum_age_are_not_used() {
        let (cache, liveness) = cache(Duration::from_millis(20), 100);
        liveness.heard();
        cache.insert("k", 1, cache.generation());
        assert_eq!(cache.get("k"), Some(1));
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(cache.get("k"), None);
    }

    #[test]
    fn a_zero_maximum_age_disables_the_cache() {
        let (cache, liveness) = cache(Duration::ZERO, 100);
        liveness.heard();
        cache.insert("k", 1, cache.generation());
        assert_eq!(cache.get("k"), None);
    }

    #[test]
    fn a_full_cache_makes_room() {
        let (cache, liveness) = cache(Duration::from_secs(5), 2);
        liveness.heard();
        for (i, k) in ["a", "b", "c"].into_iter().enumerate() {
            cache.insert(k, i as u32, cache.generation());
        }
        assert_eq!(cache.get("c"), Some(2));
    }
}
