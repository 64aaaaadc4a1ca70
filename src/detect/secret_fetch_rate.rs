//! `secret_fetch_rate` (T1555.006): a principal fetching unusually many secrets.
//!
//! Per principal (provider, scope, principal id): the number of secrets fetched and the number of
//! distinct secrets in a sliding window. A call that names N secrets counts N (SSM
//! `GetParameters names`, `BatchGetSecretValue secretIdList`); a filter-based bulk read counts
//! `bulk_filter_weight`, since the log does not say how many secrets it returned. Alerts on the
//! event that crosses an absolute threshold, or the principal's own learned baseline (EWMA of
//! window-long buckets, after warm-up); one alert per burst (see `burst`).

use super::burst::{Burst, BurstCore, BurstKey, BurstParams, Tripped};
use super::{tables, Detector, EventCtx, Route, Shared};
use crate::alert::{Alert, Severity};
use crate::catalog::Behaviour;
use crate::config::common::{at_least_one, finite_positive, ratio, window_and_pane};
use crate::config::{detector_config, invalid, CommonSettings, ConfigError, Mode, Section};
use crate::window::stable_hash;
use std::time::Duration;

detector_config! {
    /// `[detectors.secret_fetch_rate]`: a principal fetching unusually many secrets (T1555.006).
    pub struct SecretFetchRateConfig {
        severity = Severity::High;
        /// Sliding window length.
        #[serde(with = "humantime_serde")]
        pub window: Duration = Duration::from_secs(5 * 60),
        /// Pane width (window resolution).
        #[serde(with = "humantime_serde")]
        pub pane: Duration = Duration::from_secs(30),
        /// Alert when a principal fetches this many secrets in the window (0 disables).
        pub count_threshold: u32 = 20,
        /// Alert when a principal fetches this many distinct secrets in the window (0 disables).
        pub distinct_threshold: u32 = 15,
        /// Weight of a filter-based bulk read (`BatchGetSecretValue` with `filters`), whose
        /// number of secrets the log does not say.
        pub bulk_filter_weight: u32 = 10,
        /// Learn each principal's usual rate and alert above it after warm-up.
        pub baseline: bool = true,
        /// EWMA weight of the newest window-long bucket.
        pub baseline_alpha: f64 = 0.1,
        /// Buckets (window-long) before the baseline is trusted.
        pub baseline_warmup_buckets: u32 = 24,
        /// Standard deviations above the mean that count as unusual.
        pub baseline_k_sigma: f64 = 4.0,
        /// Never alert on the baseline below this count.
        pub baseline_min_count: f64 = 10.0,
        /// Principals tracked (least recently active evicted beyond).
        pub max_keys: usize = 200_000,
        /// Distinct secrets tracked per principal (at least `distinct_threshold`).
        pub max_distinct: usize = 32,
    }
}

impl Section for SecretFetchRateConfig {
    fn validate(&self, p: &str) -> Result<(), ConfigError> {
        window_and_pane(p, self.window, self.pane)?;
        ratio(&format!("{p}.baseline_alpha"), self.baseline_alpha)?;
        finite_positive(&format!("{p}.baseline_k_sigma"), self.baseline_k_sigma)?;
        at_least_one(&format!("{p}.max_keys"), self.max_keys)?;
        if self.max_distinct < self.distinct_threshold as usize {
            return Err(invalid(
                format!("{p}.max_distinct"),
                "must be at least distinct_threshold",
            ));
        }
        if self.count_threshold == 0 && self.distinct_threshold == 0 && !self.baseline {
            return Err(invalid(
                format!("{p}.count_threshold"),
                "every trigger is disabled (count_threshold, distinct_threshold and baseline)",
            ));
        }
        Ok(())
    }
}

pub struct SecretFetchRate {
    config: SecretFetchRateConfig,
    core: BurstCore,
}

impl Detector for SecretFetchRate {
    type Config = SecretFetchRateConfig;
    const ROUTE: Route = Route::Principal;

    fn new(config: SecretFetchRateConfig, shared: &Shared) -> Self {
        SecretFetchRate {
            core: BurstCore::new(BurstParams {
                window: config.window,
                pane: config.pane,
                baseline_alpha: config.baseline_alpha,
                baseline_warmup_buckets: config.baseline_warmup_buckets,
                baseline_k_sigma: config.baseline_k_sigma,
                baseline_min_count: config.baseline_min_count,
                max_keys: config.max_keys,
                evidence_ring: shared.evidence_ring,
            }),
            config,
        }
    }

    fn name(&self) -> &'static str {
        "secret_fetch_rate"
    }

    fn behaviour(&self) -> Behaviour {
        Behaviour::SecretFetch
    }

    tables! { 0 => core.keys }

    fn on_event(&mut self, ctx: &EventCtx<'_, '_>, out: &mut Vec<Alert>) {
        if ctx.late || !ctx.matches.has(Behaviour::SecretFetch) {
            return;
        }
        let ev = ctx.ev;
        let dry_run = match self.config.mode(&ev.cloud_account_uid, &ev.actor_user_uid) {
            Mode::Off => return,
            Mode::Live => false,
            Mode::DryRun => true,
        };
        let c = &self.config;
        let spec = &mut self.core.spec;
        let t = ev.time;
        let key_hash = stable_hash(&[
            ev.cloud_provider.as_str(),
            &ev.cloud_account_uid,
            &ev.actor_user_uid,
        ]);
        let weight = if ev.api_request.bulk_filter == Some(true) {
            c.bulk_filter_weight.max(1)
        } else {
            u32::try_from(ev.resources.len()).unwrap_or(u32::MAX).max(1)
        };
        let state = self
            .core
            .keys
            .get_or_insert_with(key_hash, t, BurstKey::new);
        if !state.count.add(&spec.pane, t, weight) {
            return;
        }
        state.newest = state.newest.max(t);
        let now = state.newest;
        state.baseline.observe(&spec.baseline, t, weight);
        let uid = ev.metadata_uid.as_deref();
        if ev.resources.is_empty() {
            // No secret named (a filter-based bulk read): the operation stands in for it.
            state.distinct.add(
                &spec.pane,
                t,
                stable_hash(&[&ev.api_operation]),
                c.max_distinct,
            );
            spec.ring.push(key_hash, t, &ev.api_operation, uid);
        }
        for secret in &ev.resources {
            state
                .distinct
                .add(&spec.pane, t, stable_hash(&[secret]), c.max_distinct);
            spec.ring.push(key_hash, t, secret, uid);
        }
        let count = state.count.total(&spec.pane, now);
        let distinct = state.distinct.distinct(&spec.pane, now);
        let tripped = if c.count_threshold > 0 && count >= u64::from(c.count_threshold) {
            Some(Tripped {
                trigger: "count_threshold",
                threshold: f64::from(c.count_threshold),
            })
        } else if c.distinct_threshold > 0 && distinct >= c.distinct_threshold {
            Some(Tripped {
                trigger: "distinct_threshold",
                threshold: f64::from(c.distinct_threshold),
            })
        } else if c.baseline {
            spec.baseline_trip(state, count as f64)
        } else {
            None
        };
        let burst = Burst {
            detector: "secret_fetch_rate",
            behaviour: Behaviour::SecretFetch,
            severity: c.severity,
            dry_run,
            key_hash,
        };
        spec.raise(state, tripped, burst, ctx, |count, distinct| {
            format!(
                "Unusually many secrets fetched: {count} fetches of {distinct} distinct secrets by {} in {} {} within {}",
                ev.actor_user_uid,
                ev.cloud_provider,
                ev.cloud_account_uid,
                humantime::format_duration(c.window)
            )
        }, out);
    }
}
