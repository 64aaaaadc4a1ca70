//! A keyed map with a hard bound: at most `max_keys` entries, the least recently active evicted
//! first, idle entries swept, every eviction counted.
//!
//! An attacker who floods random principals must not exhaust memory; the price is that an evicted
//! key starts fresh (its window and baseline are forgotten), which the eviction counter makes
//! visible. Built on the `lru` crate; recency is "last touched", which with event-time-ordered
//! input is "last active".

use lru::LruCache;
use std::collections::HashSet;
use std::hash::Hash;

/// What changed since the last checkpoint (only when tracking is on: durable state).
struct Changes<K> {
    dirty: HashSet<K, super::FastBuildHasher>,
    removed: Vec<K>,
    /// Everything may have changed (a mutable iteration).
    all: bool,
}

pub struct BoundedMap<K: Hash + Eq + Clone, V> {
    /// Unbounded to the `lru` crate (which would allocate its table for the full capacity up
    /// front: 15 MB per engine); the bound is enforced here.
    map: LruCache<K, (i64, V), super::FastBuildHasher>,
    max_keys: usize,
    evicted: u64,
    changes: Option<Changes<K>>,
}

impl<K: Hash + Eq + Clone, V> BoundedMap<K, V> {
    pub fn new(max_keys: usize) -> Self {
        BoundedMap {
            map: LruCache::unbounded_with_hasher(super::FastBuildHasher::default()),
            max_keys: max_keys.max(1),
            evicted: 0,
            changes: None,
        }
    }

    /// Starts recording which keys change, for incremental checkpoints ([`Self::drain_changes`]).
    pub fn track_changes(&mut self) {
        self.changes.get_or_insert_with(|| Changes {
            dirty: HashSet::default(),
            removed: Vec::new(),
            all: false,
        });
    }

    /// Calls `f` with every key changed since the last call: `Some((last active, value))` for a
    /// live key, `None` for a removed one. No-op unless tracking.
    pub fn drain_changes(&mut self, mut f: impl FnMut(&K, Option<(i64, &V)>)) {
        let Some(c) = self.changes.as_mut() else {
            return;
        };
        for k in c.removed.drain(..) {
            if !self.map.contains(&k) {
                f(&k, None);
            }
        }
        if std::mem::take(&mut c.all) {
            c.dirty.clear();
            for (k, (t, v)) in self.map.iter() {
                f(k, Some((*t, v)));
            }
            return;
        }
        for k in c.dirty.drain() {
            if let Some((t, v)) = self.map.peek(&k) {
                f(&k, Some((*t, v)));
            }
        }
    }

    /// Puts back a restored entry (not recorded as a change).
    pub fn restore(&mut self, key: K, t: i64, value: V) {
        if self.map.len() >= self.max_keys && !self.map.contains(&key) {
            self.map.pop_lru();
            self.evicted += 1;
        }
        self.map.put(key, (t, value));
    }

    fn touched(&mut self, key: &K) {
        if let Some(c) = self.changes.as_mut() {
            if !c.all {
                c.dirty.insert(key.clone());
            }
        }
    }

    fn gone(&mut self, key: K) {
        if let Some(c) = self.changes.as_mut() {
            c.dirty.remove(&key);
            c.removed.push(key);
        }
    }

    /// The entry for `key`, created with `init` if absent (evicting the least recently active
    /// entry when full), marked active at `t`.
    pub fn get_or_insert_with(&mut self, key: K, t: i64, init: impl FnOnce() -> V) -> &mut V {
        if self.map.len() >= self.max_keys && !self.map.contains(&key) {
            if let Some((k, _)) = self.map.pop_lru() {
                self.gone(k);
            }
            self.evicted += 1;
        }
        self.touched(&key);
        let entry = self.map.get_or_insert_mut(key, || (t, init()));
        entry.0 = entry.0.max(t);
        &mut entry.1
    }

    /// The entry for `key` without changing its recency.
    pub fn peek(&self, key: &K) -> Option<&V> {
        self.map.peek(key).map(|(_, v)| v)
    }

    pub fn peek_mut(&mut self, key: &K) -> Option<&mut V> {
        if self.map.contains(key) {
            self.touched(key);
        }
        self.map.peek_mut(key).map(|(_, v)| v)
    }

    /// Removes entries not active since `before` (least recent first). Returns how many.
    pub fn sweep_idle(&mut self, before: i64) -> usize {
        let mut removed = 0;
        while self.map.peek_lru().is_some_and(|(_, (t, _))| *t < before) {
            if let Some((k, _)) = self.map.pop_lru() {
                self.gone(k);
            }
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
        if let Some(c) = self.changes.as_mut() {
            c.all = true;
        }
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
