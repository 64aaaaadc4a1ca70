//! Sliding count over aligned panes (as Arroyo builds windows: a `VecDeque` of panes).
//!
//! The window `[now − width, now]` is approximated by the panes whose start lies in
//! `(now − width, now]`, each pane `pane_ms` wide and aligned to multiples of `pane_ms`. Memory
//! per key is at most `panes` entries of 12 bytes, whatever the event rate. Thresholds fire on the
//! event that crosses them (the count is read right after the add), not at window close.

use std::collections::VecDeque;

/// Pane geometry, shared by every key of a detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaneSpec {
    pub pane_ms: i64,
    /// Number of panes in the window; the window is `pane_ms × panes` wide.
    pub panes: u32,
}

impl PaneSpec {
    /// Panes of `pane_ms` covering a window of `window_ms` (rounded up to whole panes).
    pub fn new(window_ms: i64, pane_ms: i64) -> Self {
        let pane_ms = pane_ms.max(1);
        let panes = ((window_ms.max(1) + pane_ms - 1) / pane_ms).clamp(1, 4096) as u32;
        PaneSpec { pane_ms, panes }
    }

    pub fn window_ms(&self) -> i64 {
        self.pane_ms * i64::from(self.panes)
    }

    /// Start of the pane that contains `t`.
    pub fn pane_start(&self, t: i64) -> i64 {
        t.div_euclid(self.pane_ms) * self.pane_ms
    }

    /// Oldest pane start still inside the window that ends in the pane containing `now`.
    pub fn oldest_live_pane(&self, now: i64) -> i64 {
        self.pane_start(now) - self.pane_ms * (i64::from(self.panes) - 1)
    }
}

/// A sliding sum of weights, per key.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct SlidingCount {
    /// (pane start, count), oldest first, starts strictly increasing.
    panes: VecDeque<(i64, u32)>,
}

impl SlidingCount {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `n` at event time `t`. Returns `false` (and adds nothing) when `t` falls before the
    /// window of the newest pane held: too old to matter.
    pub fn add(&mut self, spec: &PaneSpec, t: i64, n: u32) -> bool {
        let start = spec.pane_start(t);
        if let Some(&(newest, _)) = self.panes.back() {
            if start < spec.oldest_live_pane(newest) {
                return false;
            }
        }
        // Find the pane (usually the last) or insert it in order.
        match self.panes.iter().rposition(|&(s, _)| s <= start) {
            Some(i) if self.panes[i].0 == start => {
                self.panes[i].1 = self.panes[i].1.saturating_add(n);
            }
            Some(i) => self.panes.insert(i + 1, (start, n)),
            None => self.panes.push_front((start, n)),
        }
        if let Some(&(newest, _)) = self.panes.back() {
            self.expire(spec, newest);
        }
        true
    }

    /// The sum over the window ending at `now` (panes after `now` are not counted).
    pub fn total(&self, spec: &PaneSpec, now: i64) -> u64 {
        let oldest = spec.oldest_live_pane(now);
        let newest = spec.pane_start(now);
        self.panes
            .iter()
            .filter(|&&(s, _)| s >= oldest && s <= newest)
            .map(|&(_, c)| u64::from(c))
            .sum()
    }

    /// Drops panes that are out of the window ending at `now`.
    pub fn expire(&mut self, spec: &PaneSpec, now: i64) {
        let oldest = spec.oldest_live_pane(now);
        while self.panes.front().is_some_and(|&(s, _)| s < oldest) {
            self.panes.pop_front();
        }
    }

    /// Start of the oldest pane held (the window's start, for alerts).
    pub fn window_start(&self) -> Option<i64> {
        self.panes.front().map(|&(s, _)| s)
    }

    pub fn is_empty(&self) -> bool {
        self.panes.is_empty()
    }

    /// Panes held (for memory accounting and tests).
    pub fn pane_count(&self) -> usize {
        self.panes.len()
    }

    pub fn clear(&mut self) {
        self.panes.clear();
    }
}
