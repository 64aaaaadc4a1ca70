//! Sliding distinct count over aligned panes: how many different items (secrets, API operations)
//! a key touched in the window.
//!
//! Items are 64-bit stable hashes, each with the newest pane it was seen in. The number of items
//! held per key is capped (`cap`): the detector only needs to know whether the distinct count
//! reached its threshold, so the cap is set at or above the threshold and an item beyond it only
//! refreshes the oldest entry. Memory per key ≤ `cap × 16` bytes.

use super::sliding::PaneSpec;

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct SlidingDistinct {
    /// (item hash, newest pane start it was seen in).
    items: Vec<(u64, i64)>,
}

impl SlidingDistinct {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `item` at `t`. Returns `true` when the item was not in the window before.
    pub fn add(&mut self, spec: &PaneSpec, t: i64, item: u64, cap: usize) -> bool {
        let pane = spec.pane_start(t);
        let newest = self
            .items
            .iter()
            .map(|&(_, p)| p)
            .max()
            .unwrap_or(pane)
            .max(pane);
        if pane < spec.oldest_live_pane(newest) {
            return false;
        }
        self.expire(spec, newest);
        if let Some(entry) = self.items.iter_mut().find(|(h, _)| *h == item) {
            entry.1 = entry.1.max(pane);
            return false;
        }
        if self.items.len() >= cap.max(1) {
            // Full: replace the entry seen longest ago, so the count stays at the cap while the
            // key keeps touching new items.
            if let Some(oldest) = self.items.iter_mut().min_by_key(|(_, p)| *p) {
                *oldest = (item, pane);
            }
            return true;
        }
        self.items.push((item, pane));
        true
    }

    /// Distinct items seen in the window ending at `now`.
    pub fn distinct(&self, spec: &PaneSpec, now: i64) -> u32 {
        let oldest = spec.oldest_live_pane(now);
        let newest = spec.pane_start(now);
        self.items
            .iter()
            .filter(|&&(_, p)| p >= oldest && p <= newest)
            .count() as u32
    }

    /// Drops items last seen before the window ending at `now`.
    pub fn expire(&mut self, spec: &PaneSpec, now: i64) {
        let oldest = spec.oldest_live_pane(now);
        self.items.retain(|&(_, p)| p >= oldest);
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn clear(&mut self) {
        self.items.clear();
    }
}
