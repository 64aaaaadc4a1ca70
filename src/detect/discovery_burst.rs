//! `discovery_burst` (T1526, T1580, T1046): a principal enumerating many different APIs.
//!
//! Per principal: the distinct (service, operation) pairs among the catalog's discovery calls
//! (list / describe / get, denied calls) in a sliding window. Breadth, not volume, marks
//! enumeration: a CI job that polls one Describe call a thousand times is normal, a principal that
//! touches 30 different read APIs in five minutes is mapping the account. Alerts at an absolute
//! distinct threshold or above the principal's learned baseline of new operations per window;
//! one alert per burst (see `burst`).

use super::burst::{burst_alert, BurstCore, BurstKey, BurstParams, BurstReport, Tripped};
use super::{Detector, DetectorStats, EventCtx};
use crate::alert::Alert;
use crate::catalog::Behaviour;
use crate::config::{CommonSettings, DiscoveryBurstConfig, Mode};
use crate::window::stable_hash;

pub struct DiscoveryBurst {
    config: DiscoveryBurstConfig,
    core: BurstCore,
}

impl DiscoveryBurst {
    pub fn new(config: DiscoveryBurstConfig, ring: usize) -> Self {
        DiscoveryBurst {
            core: BurstCore::new(BurstParams {
                window: config.window,
                pane: config.pane,
                baseline_alpha: config.baseline_alpha,
                baseline_warmup_buckets: config.baseline_warmup_buckets,
                baseline_k_sigma: config.baseline_k_sigma,
                baseline_min_count: config.baseline_min_count,
                max_keys: config.max_keys,
                evidence_ring: ring,
            }),
            config,
        }
    }
}

impl Detector for DiscoveryBurst {
    fn name(&self) -> &'static str {
        "discovery_burst"
    }

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
        if !state.count.add(&self.core.pane, t, 1) {
            return;
        }
        state.newest = state.newest.max(t);
        let now = state.newest;
        let item = stable_hash(&[&ev.api_service_name, &ev.api_operation]);
        let new_in_window = state.distinct.add(&self.core.pane, t, item, c.max_distinct);
        // The baseline learns how many *new* operations a window usually brings for this key.
        state
            .baseline
            .observe(&self.core.baseline, t, u32::from(new_in_window));
        if new_in_window {
            self.core
                .ring
                .push(key_hash, t, &ev.api_operation, ev.metadata_uid.as_deref());
        }
        let distinct = state.distinct.distinct(&self.core.pane, now);
        let tripped = if distinct >= c.distinct_threshold {
            Some(Tripped {
                trigger: "distinct_threshold",
                threshold: f64::from(c.distinct_threshold),
            })
        } else if c.baseline {
            state
                .baseline
                .threshold(&self.core.baseline)
                .filter(|th| f64::from(distinct) > *th)
                .map(|th| Tripped {
                    trigger: "baseline",
                    threshold: (th * 100.0).round() / 100.0,
                })
        } else {
            None
        };
        let Some(tripped) = tripped else {
            state.armed = true;
            return;
        };
        if !state.armed {
            return;
        }
        state.armed = false;
        let count = state.count.total(&self.core.pane, now);
        let techniques = ctx.techniques(Behaviour::Discovery);
        let title = format!(
            "Discovery burst: {distinct} distinct list/describe/get operations ({count} calls) by {} in {} {} within {}",
            ev.actor_user_uid,
            ev.cloud_provider,
            ev.cloud_account_uid,
            humantime::format_duration(c.window)
        );
        out.push(burst_alert(BurstReport {
            detector: "discovery_burst",
            title,
            severity: c.severity,
            dry_run,
            techniques: &techniques,
            ev,
            key_hash,
            state,
            pane: &self.core.pane,
            baseline: &self.core.baseline,
            tripped,
            ring: &self.core.ring,
            max_samples: ctx.max_samples,
        }));
    }

    fn track_changes(&mut self) {
        self.core.keys.track_changes();
    }

    fn checkpoint(&mut self, out: &mut Vec<crate::state::Entry>) {
        crate::state::checkpoint_map(&mut self.core.keys, 0, out);
    }

    fn restore(
        &mut self,
        table: u8,
        key: u64,
        bytes: &[u8],
    ) -> Result<(), crate::state::StateError> {
        match table {
            0 => crate::state::restore_map(&mut self.core.keys, key, bytes),
            _ => Err(crate::state::StateError::UnknownTable),
        }
    }

    fn stats(&self) -> DetectorStats {
        DetectorStats {
            keys: self.core.keys.len(),
            evicted: self.core.keys.evicted(),
        }
    }
}
