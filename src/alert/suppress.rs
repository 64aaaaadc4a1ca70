//! Suppression: a rate limit per (detector, dedup key), in event time.
//!
//! At most `burst` alerts per (detector, key) in each `period`-long event-time window (windows
//! aligned to the epoch). An alert over the limit is not emitted, but never silently dropped: it
//! is counted (`suppressed_total`) and the count per key rolls into the next alert emitted for
//! that key (`suppressed_count`). The decision depends only on the alert's own time and the
//! alerts of its key in the same window, never on other keys or on a shared clock, and the
//! window count does not care in which order the alerts arrive: a replay, one instance or
//! several, in order or not, suppress the same alerts whenever a window holds at most `burst`
//! of them (beyond that, which ones get through follows arrival order). Each key remembers its
//! last few windows; keys are bounded (`max_keys`), least recently alerting evicted, counted.

use super::Alert;
use crate::config::SuppressionConfig;
use crate::window::{stable_hash, BoundedMap};

/// Windows remembered per key (alerts older than these are admitted and counted in none).
const WINDOWS: usize = 4;

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct KeyState {
    /// (window index, alerts admitted in it), for the key's latest windows.
    windows: [(i64, u32); WINDOWS],
    /// Suppressed since the last emitted alert.
    pending: u64,
}

pub struct Suppressor {
    period_ms: i64,
    burst: u32,
    keys: BoundedMap<u64, KeyState>,
    suppressed_total: u64,
}

impl Suppressor {
    pub fn new(config: &SuppressionConfig) -> Self {
        Suppressor {
            period_ms: (config.period.as_millis() as i64).max(1),
            burst: config.burst.max(1),
            keys: BoundedMap::new(config.max_keys.max(1)),
            suppressed_total: 0,
        }
    }

    /// Whether to emit `alert`; when it is emitted, its `suppressed_count` carries the alerts
    /// suppressed for its key since the last one. Recovery records are never suppressed.
    pub fn admit(&mut self, alert: &mut Alert) -> bool {
        if alert.status == super::AlertStatus::Resolved {
            return true;
        }
        let key = stable_hash(&[&alert.detector, &alert.dedup_key]);
        let t = alert.time;
        let state = self.keys.get_or_insert_with(key, t, || KeyState {
            windows: [(i64::MIN, 0); WINDOWS],
            pending: 0,
        });
        let window = t.div_euclid(self.period_ms);
        let slot = match state.windows.iter().position(|(w, _)| *w == window) {
            Some(i) => Some(i),
            None => {
                // Reuse the oldest slot if this window is newer than it.
                let (i, (oldest, _)) = state
                    .windows
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, (w, _))| *w)
                    .expect("WINDOWS > 0");
                (window > *oldest).then(|| {
                    state.windows[i] = (window, 0);
                    i
                })
            }
        };
        let admitted = match slot {
            Some(i) if state.windows[i].1 < self.burst => {
                state.windows[i].1 += 1;
                true
            }
            Some(_) => false,
            None => true, // older than every remembered window
        };
        if admitted {
            alert.suppressed_count = std::mem::take(&mut state.pending);
            true
        } else {
            state.pending += 1;
            self.suppressed_total += 1;
            false
        }
    }

    /// Alerts suppressed so far.
    pub fn suppressed_total(&self) -> u64 {
        self.suppressed_total
    }

    pub fn keys(&self) -> usize {
        self.keys.len()
    }

    pub fn evicted(&self) -> u64 {
        self.keys.evicted()
    }

    pub fn track_changes(&mut self) {
        self.keys.track_changes();
    }

    /// Changed keys since the last call (`detector` left 0: the caller sets it).
    pub fn checkpoint(&mut self, out: &mut Vec<crate::state::Entry>) {
        crate::state::checkpoint_map(&mut self.keys, 0, out);
    }

    pub fn restore(&mut self, key: u64, bytes: &[u8]) -> Result<(), crate::state::StateError> {
        crate::state::restore_map(&mut self.keys, key, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn each_key_is_limited_per_window_in_its_own_event_time_and_any_order() {
        let config = SuppressionConfig {
            burst: 2,
            period: Duration::from_secs(60),
            max_keys: 10,
        };
        let alert = |dedup: &str, t: i64| {
            let mut a: Alert = serde_json::from_str(
                include_str!("../../tests/fixtures/log_disable/expected.ndjson")
                    .lines()
                    .next()
                    .unwrap(),
            )
            .unwrap();
            a.dedup_key = dedup.into();
            a.time = t;
            a
        };
        let mut s = Suppressor::new(&config);
        // Two per minute; the third in the same minute is suppressed.
        assert!(s.admit(&mut alert("a", 0)));
        assert!(s.admit(&mut alert("a", 1_000)));
        assert!(!s.admit(&mut alert("a", 2_000)));
        // Another key far in the future changes nothing for "a".
        assert!(s.admit(&mut alert("b", 10_000_000)));
        assert!(!s.admit(&mut alert("a", 3_000)));
        // The next minute admits again, carrying the two suppressed.
        let mut later = alert("a", 61_000);
        assert!(s.admit(&mut later));
        assert_eq!(later.suppressed_count, 2);
        assert_eq!(s.suppressed_total(), 2);
        // Out of order: a later alert first does not starve earlier windows.
        let mut s = Suppressor::new(&config);
        assert!(s.admit(&mut alert("a", 200_000)));
        assert!(s.admit(&mut alert("a", 10_000)));
        assert!(s.admit(&mut alert("a", 130_000)));
        assert_eq!(s.suppressed_total(), 0);
    }
}
