//! `discovery_burst` (T1526, T1580, T1046): a principal enumerating many different APIs.
//!
//! Per principal: the distinct (service, operation) pairs among the catalog's discovery calls
//! (list / describe / get, denied calls) in a sliding window. Breadth, not volume, marks
//! enumeration: a CI job that polls one Describe call a thousand times is normal, a principal that
//! touches 30 different read APIs in five minutes is mapping the account. Alerts at an absolute
//! distinct threshold or above the principal's learned baseline of new operations per window;
//! one alert per burst (see `burst`).

use super::burst::{Burst, BurstCore, BurstKey, BurstParams, Tripped};
use super::{tables, Detector, EventCtx, Route, Shared};
use crate::alert::{Alert, Severity};
use crate::catalog::Behaviour;
use crate::config::common::{at_least_one, finite_positive, ratio, window_and_pane};
use crate::config::{detector_config, invalid, CommonSettings, ConfigError, Mode, Section};
use crate::window::stable_hash;
use std::time::Duration;

detector_config! {
    /// `[detectors.discovery_burst]`: many distinct list/describe/get calls (T1526, T1580, T1046).
    pub struct DiscoveryBurstConfig {
        severity = Severity::Medium;
        #[serde(with = "humantime_serde")]
        pub window: Duration = Duration::from_secs(5 * 60),
        #[serde(with = "humantime_serde")]
        pub pane: Duration = Duration::from_secs(30),
        /// Alert at this many distinct (service, operation) in the window.
        pub distinct_threshold: u32 = 25,
        pub baseline: bool = true,
        pub baseline_alpha: f64 = 0.1,
        pub baseline_warmup_buckets: u32 = 24,
        pub baseline_k_sigma: f64 = 4.0,
        pub baseline_min_count: f64 = 10.0,
        pub max_keys: usize = 200_000,
        /// Distinct operations tracked per principal (at least `distinct_threshold`).
        pub max_distinct: usize = 64,
    }
}

impl Section for DiscoveryBurstConfig {
    fn validate(&self, p: &str) -> Result<(), ConfigError> {
        window_and_pane(p, self.window, self.pane)?;
        ratio(&format!("{p}.baseline_alpha"), self.baseline_alpha)?;
        finite_positive(&format!("{p}.baseline_k_sigma"), self.baseline_k_sigma)?;
        at_least_one(&format!("{p}.max_keys"), self.max_keys)?;
        if self.distinct_threshold == 0 {
            return Err(invalid(
                format!("{p}.distinct_threshold"),
                "must be at least 1",
            ));
        }
        if self.max_distinct < self.distinct_threshold as usize {
            return Err(invalid(
                format!("{p}.max_distinct"),
                "must be at least distinct_threshold",
            ));
        }
        Ok(())
    }
}

pub struct DiscoveryBurst {
    config: DiscoveryBurstConfig,
    core: BurstCore,
}

impl Detector for DiscoveryBurst {
    type Config = DiscoveryBurstConfig;
    const ROUTE: Route = Route::Principal;

    fn new(config: DiscoveryBurstConfig, shared: &Shared) -> Self {
        DiscoveryBurst {
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
        "discovery_burst"
    }

    fn behaviour(&self) -> Behaviour {
        Behaviour::Discovery
    }

    tables! { 0 => core.keys }

    fn on_event(&mut self, ctx: &EventCtx<'_, '_>, out: &mut Vec<Alert>) {
        if ctx.late || !ctx.matches.has(Behaviour::Discovery) {
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
        let state = self
            .core
            .keys
            .get_or_insert_with(key_hash, t, BurstKey::new);
        if !state.count.add(&spec.pane, t, 1) {
            return;
        }
        state.newest = state.newest.max(t);
        let now = state.newest;
        let item = stable_hash(&[&ev.api_service_name, &ev.api_operation]);
        let new_in_window = state.distinct.add(&spec.pane, t, item, c.max_distinct);
        // The baseline learns how many *new* operations a window usually brings for this key.
        state
            .baseline
            .observe(&spec.baseline, t, u32::from(new_in_window));
        if new_in_window {
            spec.ring
                .push(key_hash, t, &ev.api_operation, ev.metadata_uid.as_deref());
        }
        let distinct = state.distinct.distinct(&spec.pane, now);
        let tripped = if distinct >= c.distinct_threshold {
            Some(Tripped {
                trigger: "distinct_threshold",
                threshold: f64::from(c.distinct_threshold),
            })
        } else if c.baseline {
            spec.baseline_trip(state, f64::from(distinct))
        } else {
            None
        };
        let burst = Burst {
            detector: "discovery_burst",
            behaviour: Behaviour::Discovery,
            severity: c.severity,
            dry_run,
            key_hash,
        };
        spec.raise(state, tripped, burst, ctx, |count, distinct| {
            format!(
                "Discovery burst: {distinct} distinct list/describe/get operations ({count} calls) by {} in {} {} within {}",
                ev.actor_user_uid,
                ev.cloud_provider,
                ev.cloud_account_uid,
                humantime::format_duration(c.window)
            )
        }, out);
    }
}
