//! A first-seen set with a warm-up period: "has this scope ever used this region / has this
//! principal ever called this operation?"
//!
//! Novelty is only meaningful once the set has watched the key for a while: during the first
//! `warmup_ms` after the key's first activity every item is learned silently. Items are stable
//! 64-bit hashes; the set is capped (`max_items`) and, when full, stops learning and reports
//! [`Novelty::Full`] rather than growing or calling everything new.

/// The answer for one observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Novelty {
    /// Never seen before, and the key is past its warm-up: worth an alert.
    New,
    /// Seen before.
    Known,
    /// Not seen before, but the key is still warming up (learned, not reported).
    WarmingUp,
    /// Not seen before, but the set is at its cap (not learned, not reported).
    Full,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FirstSeen {
    first_activity: i64,
    items: Vec<u64>,
}

impl FirstSeen {
    /// A set whose key was first active at `t`.
    pub fn new(t: i64) -> Self {
        FirstSeen {
            first_activity: t,
            items: Vec::new(),
        }
    }

    /// Observes `item` at event time `t`.
    pub fn observe(&mut self, t: i64, item: u64, warmup_ms: i64, max_items: usize) -> Novelty {
        self.first_activity = self.first_activity.min(t);
        if self.items.contains(&item) {
            return Novelty::Known;
        }
        if self.items.len() >= max_items {
            return Novelty::Full;
        }
        self.items.push(item);
        if t < self.first_activity.saturating_add(warmup_ms) {
            Novelty::WarmingUp
        } else {
            Novelty::New
        }
    }

    pub fn contains(&self, item: u64) -> bool {
        self.items.contains(&item)
    }

    pub fn first_activity(&self) -> i64 {
        self.first_activity
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}
