//! Suppression: a governor rate limiter per (detector, dedup key), driven by event time.
//!
//! An alert that exceeds its key's quota is not emitted, but never silently dropped: it is
//! counted (`suppressed_total`) and the count per key rolls into the next alert emitted for that
//! key (`suppressed_count`). The limiter runs on governor's `FakeRelativeClock`, which the
//! suppressor moves forward to each alert's event time, so a replay suppresses exactly as the live
//! run did. Keys are bounded: past `max_keys`, idle keys are swept (`retain_recent`), and if that
//! is not enough the limiter is reset; both count as evictions.

use super::Alert;
use crate::config::SuppressionConfig;
use crate::window::{stable_hash, BoundedMap};
use governor::clock::FakeRelativeClock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use std::num::NonZeroU32;
use std::time::Duration;

type Limiter = RateLimiter<u64, DashMapStateStore<u64>, FakeRelativeClock, NoOpMiddleware<Nanos>>;

pub struct Suppressor {
    limiter: Limiter,
    clock: FakeRelativeClock,
    quota: Quota,
    /// Event time the clock's zero corresponds to.
    epoch: Option<i64>,
    /// Clock position in event-time ms since `epoch`.
    position: i64,
    pending: BoundedMap<u64, u64>,
    max_keys: usize,
    suppressed_total: u64,
    evicted: u64,
}

impl Suppressor {
    pub fn new(config: &SuppressionConfig) -> Self {
        let burst = NonZeroU32::new(config.burst.max(1)).expect("max(1) is non-zero");
        let period = config.period.max(Duration::from_millis(1));
        let quota = Quota::with_period(period / burst.get())
            .expect("period is positive")
            .allow_burst(burst);
        let clock = FakeRelativeClock::default();
        Suppressor {
            limiter: RateLimiter::dashmap_with_clock(quota, clock.clone()),
            clock,
            quota,
            epoch: None,
            position: 0,
            pending: BoundedMap::new(config.max_keys),
            max_keys: config.max_keys,
            suppressed_total: 0,
            evicted: 0,
        }
    }

    /// Whether to emit `alert`; when it is emitted, its `suppressed_count` carries the alerts
    /// suppressed for its key since the last one. Recovery records are never suppressed.
    pub fn admit(&mut self, alert: &mut Alert) -> bool {
        let key = stable_hash(&[&alert.detector, &alert.dedup_key]);
        self.advance(alert.time);
        if alert.status == super::AlertStatus::Resolved {
            return true;
        }
        if self.limiter.len() >= self.max_keys {
            self.limiter.retain_recent();
            if self.limiter.len() >= self.max_keys {
                self.evicted += self.limiter.len() as u64;
                self.limiter = RateLimiter::dashmap_with_clock(self.quota, self.clock.clone());
            }
        }
        if self.limiter.check_key(&key).is_ok() {
            if let Some(n) = self.pending.peek_mut(&key) {
                alert.suppressed_count = std::mem::take(n);
            }
            true
        } else {
            self.suppressed_total += 1;
            *self.pending.get_or_insert_with(key, alert.time, || 0) += 1;
            false
        }
    }

    fn advance(&mut self, t: i64) {
        let epoch = *self.epoch.get_or_insert(t);
        let target = t.saturating_sub(epoch);
        if target > self.position {
            self.clock
                .advance(Duration::from_millis((target - self.position) as u64));
            self.position = target;
        }
    }

    /// Alerts suppressed so far.
    pub fn suppressed_total(&self) -> u64 {
        self.suppressed_total
    }

    /// Suppressed alerts not yet rolled into an emitted alert, per key.
    pub fn pending_total(&self) -> u64 {
        self.pending.iter().map(|(_, _, n)| *n).sum()
    }

    pub fn keys(&self) -> usize {
        self.limiter.len()
    }

    pub fn evicted(&self) -> u64 {
        self.evicted + self.pending.evicted()
    }
}
