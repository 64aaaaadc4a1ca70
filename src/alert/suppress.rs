//! Suppression: a rate limit per (detector, dedup key), in event time.
//!
//! An alert that exceeds its key's quota is not emitted, but never silently dropped: it is
//! counted (`suppressed_total`) and the count per key rolls into the next alert emitted for that
//! key (`suppressed_count`). The limit is GCRA (the token bucket governor implements), kept per
//! key with that key's own event time: each key's "theoretical arrival time" moves only with its
//! own alerts, so whether an alert is suppressed does not depend on other keys' alerts, on the
//! order they were emitted in, or on which instance owns the key. A replay, one instance or
//! several suppress the same alerts. (governor's keyed limiter shares one clock between keys, and
//! an event-time clock cannot go back for an older key, so it is not used here.) Keys are bounded
//! (`max_keys`): the least recently alerting key is evicted, counted.

use super::Alert;
use crate::config::SuppressionConfig;
use crate::window::{stable_hash, BoundedMap};

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct KeyState {
    /// GCRA theoretical arrival time, event-time ms.
    tat: i64,
    /// Suppressed since the last emitted alert.
    pending: u64,
}

pub struct Suppressor {
    /// `period / burst`: one more alert is allowed per this many ms.
    emission_ms: i64,
    /// How far ahead of an alert's time the arrival time may run: `(burst - 1) × emission_ms`.
    tolerance_ms: i64,
    keys: BoundedMap<u64, KeyState>,
    suppressed_total: u64,
}

impl Suppressor {
    pub fn new(config: &SuppressionConfig) -> Self {
        let burst = i64::from(config.burst.max(1));
        let period = (config.period.as_millis() as i64).max(1);
        let emission_ms = (period / burst).max(1);
        Suppressor {
            emission_ms,
            tolerance_ms: emission_ms * (burst - 1),
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
            tat: i64::MIN,
            pending: 0,
        });
        let tat = state.tat.max(t);
        if tat.saturating_sub(self.tolerance_ms) <= t {
            state.tat = tat.saturating_add(self.emission_ms);
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

    /// Suppressed alerts not yet rolled into an emitted alert, per key.
    pub fn pending_total(&self) -> u64 {
        self.keys.iter().map(|(_, _, s)| s.pending).sum()
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
    fn each_key_is_limited_in_its_own_event_time() {
        let mut s = Suppressor::new(&SuppressionConfig {
            burst: 2,
            period: Duration::from_secs(60),
            max_keys: 10,
        });
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
        // Two at once, the third within the period is suppressed.
        assert!(s.admit(&mut alert("a", 0)));
        assert!(s.admit(&mut alert("a", 1_000)));
        assert!(!s.admit(&mut alert("a", 2_000)));
        // Another key far in the future changes nothing for "a".
        assert!(s.admit(&mut alert("b", 10_000_000)));
        assert!(!s.admit(&mut alert("a", 3_000)));
        // After period/burst, one more, carrying the two suppressed.
        let mut later = alert("a", 31_000);
        assert!(s.admit(&mut later));
        assert_eq!(later.suppressed_count, 2);
        assert_eq!(s.suppressed_total(), 2);
    }
}
