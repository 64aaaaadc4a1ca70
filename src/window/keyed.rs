//! A keyed map with a hard bound: at most `max_keys` entries, the least recently active evicted
//! first, idle entries swept, every eviction counted.
//!
//! An attacker who floods random principals must not exhaust memory; the price is that an evicted
//! key starts fresh (its window and baseline are forgotten), which the eviction counter makes
//! visible. Built on the `lru` crate; recency is "last touched", which with event-time-ordered
//! input is "last active".

use lru::LruCache;
use std::hash::Hash;

pub struct BoundedMap<K: Hash + Eq, V> {
    /// Unbounded to the `lru` crate (which would allocate its table for the full capacity up
    /// front: 15 MB per engine); the bound is enforced here.
    map: LruCache<K, (i64, V), super::FastBuildHasher>,
    max_keys: usize,
    evicted: u64,
}

impl<K: Hash + Eq, V> BoundedMap<K, V> {
    pub fn new(max_keys: usize) -> Self {
        BoundedMap {
            map: LruCache::unbounded_with_hasher(super::FastBuildHasher::default()),
            max_keys: max_keys.max(1),
            evicted: 0,
        }
    }

    /// The entry for `key`, created with `init` if absent (evicting the least recently active
    /// entry when full), marked active at `t`.
    pub fn get_or_insert_with(&mut self, key: K, t: i64, init: impl FnOnce() -> V) -> &mut V {
        if self.map.len() >= self.max_keys && !self.map.contains(&key) {
            self.map.pop_lru();
            self.evicted += 1;
        }
        let entry = self.map.get_or_insert_mut(key, || (t, init()));
        entry.0 = entry.0.max(t);
        &mut entry.1
    }

    /// The entry for `key` without changing its recency.
    pub fn peek(&self, key: &K) -> Option<&V> {
        self.map.peek(key).map(|(_, v)| v)
    }

    pub fn peek_mut(&mut self, key: &K) -> Option<&mut V> {
        self.map.peek_mut(key).map(|(_, v)| v)
    }

    /// Removes entries not active since `before` (least recent first). Returns how many.
    pub fn sweep_idle(&mut self, before: i64) -> usize {
        let mut removed = 0;
        while self.map.peek_lru().is_some_and(|(_, (t, _))| *t < before) {
            self.map.pop_lru();
            removed += 1;
        }
        self.evicted += removed as u64;
        removed
    }

    /// Every entry, most recent first, with its last-active time.
    pub fn iter(&self) -> impl Iterator<Item = (&K, i64, &V)> {
        self.map.iter().map(|(k, (t, v))| (k, *t, v))
    }

    /// Every entry, most recent first, with its last-active time, mutably.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&K, i64, &mut V)> {
        self.map.iter_mut().map(|(k, (t, v))| (k, *t, v))
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    pub fn capacity(&self) -> usize {
        self.max_keys
    }
}
