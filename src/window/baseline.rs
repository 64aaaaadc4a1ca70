//! A per-key baseline of "normal" activity: the exponentially weighted mean and variance of the
//! key's per-bucket counts (West's EWMA variance).
//!
//! Activity is summed into buckets of `bucket_ms`; when a bucket closes its count updates the
//! EWMA, and every whole bucket that passed with no activity updates it with 0 (capped, so a key
//! idle for a month costs constant time). The open bucket never feeds its own baseline: a burst is
//! compared with the past, not with itself. The baseline is *warm* after `warmup_buckets` buckets.
//! State: 24 bytes per key.

/// Baseline parameters, shared by every key of a detector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BaselineSpec {
    pub bucket_ms: i64,
    /// EWMA weight of the newest bucket, in (0, 1].
    pub alpha: f64,
    /// Buckets observed (including empty ones) before the baseline is trusted.
    pub warmup_buckets: u32,
    /// Deviation, in standard deviations above the mean, that counts as unusual.
    pub k_sigma: f64,
    /// Never call a count unusual below this (a quiet principal fetching 3 secrets is not news).
    pub min_count: f64,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RateBaseline {
    bucket_start: i64,
    bucket_count: u32,
    buckets_seen: u32,
    mean: f32,
    var: f32,
}

/// Same as [`RateBaseline::new`]: `bucket_start` must start at the "no bucket yet" sentinel, not
/// at 0, or the first event would close the bucket at the epoch and every empty bucket since.
impl Default for RateBaseline {
    fn default() -> Self {
        Self::new()
    }
}

/// Empty buckets folded in one go at most; after that many the baseline is ~0 anyway.
const MAX_EMPTY_FOLD: i64 = 512;

impl RateBaseline {
    pub fn new() -> Self {
        RateBaseline {
            bucket_start: i64::MIN,
            bucket_count: 0,
            buckets_seen: 0,
            mean: 0.0,
            var: 0.0,
        }
    }

    /// Adds `n` at event time `t` (events older than the open bucket are folded into it).
    pub fn observe(&mut self, spec: &BaselineSpec, t: i64, n: u32) {
        self.roll(spec, t);
        self.bucket_count = self.bucket_count.saturating_add(n);
    }

    /// Closes every bucket that ended before `t`'s bucket.
    pub fn roll(&mut self, spec: &BaselineSpec, t: i64) {
        let start = t.div_euclid(spec.bucket_ms) * spec.bucket_ms;
        if self.bucket_start == i64::MIN {
            self.bucket_start = start;
            return;
        }
        if start <= self.bucket_start {
            return;
        }
        self.fold(spec, f64::from(self.bucket_count));
        let empty = ((start - self.bucket_start) / spec.bucket_ms - 1).clamp(0, MAX_EMPTY_FOLD);
        for _ in 0..empty {
            self.fold(spec, 0.0);
        }
        self.bucket_start = start;
        self.bucket_count = 0;
    }

    fn fold(&mut self, spec: &BaselineSpec, x: f64) {
        let (mean, var) = (f64::from(self.mean), f64::from(self.var));
        if self.buckets_seen == 0 {
            self.mean = x as f32;
            self.var = 0.0;
        } else {
            let diff = x - mean;
            let incr = spec.alpha * diff;
            self.mean = (mean + incr) as f32;
            self.var = ((1.0 - spec.alpha) * (var + diff * incr)) as f32;
        }
        self.buckets_seen = self.buckets_seen.saturating_add(1);
    }

    pub fn is_warm(&self, spec: &BaselineSpec) -> bool {
        self.buckets_seen >= spec.warmup_buckets
    }

    pub fn mean(&self) -> f64 {
        f64::from(self.mean)
    }

    pub fn stddev(&self) -> f64 {
        f64::from(self.var).max(0.0).sqrt()
    }

    pub fn buckets_seen(&self) -> u32 {
        self.buckets_seen
    }

    /// The count above which activity is unusual for this key, once warm:
    /// `max(mean + k·σ, min_count)`. `None` while warming up.
    pub fn threshold(&self, spec: &BaselineSpec) -> Option<f64> {
        self.is_warm(spec)
            .then(|| (self.mean() + spec.k_sigma * self.stddev()).max(spec.min_count))
    }

    /// How many standard deviations `count` lies above the mean (σ floored at 1 so a perfectly
    /// regular key does not produce infinite deviations).
    pub fn deviation(&self, count: f64) -> f64 {
        (count - self.mean()) / self.stddev().max(1.0)
    }
}
