//! `secret_fetch_rate` (T1555.006): a principal fetching unusually many secrets.
//!
//! Per principal (provider, scope, principal id): the number of secrets fetched and the number of
//! distinct secrets in a sliding window. A call that names N secrets counts N (SSM
//! `GetParameters names`, `BatchGetSecretValue secretIdList`); a filter-based bulk read counts
//! `bulk_filter_weight`, since the log does not say how many secrets it returned. Alerts on the
//! event that crosses an absolute threshold, or the principal's own learned baseline (EWMA of
//! window-long buckets, after warm-up); one alert per burst (see `burst`).

use super::burst::{burst_alert, BurstCore, BurstKey, BurstParams, BurstReport, Tripped};
use super::{Detector, DetectorStats, EventCtx};
use crate::alert::Alert;
use crate::catalog::Behaviour;
use crate::config::{CommonSettings, Mode, SecretFetchRateConfig};
use crate::window::stable_hash;

pub struct SecretFetchRate {
    config: SecretFetchRateConfig,
    core: BurstCore,
}

impl SecretFetchRate {
    pub fn new(config: SecretFetchRateConfig, ring: usize) -> Self {
        SecretFetchRate {
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

impl Detector for SecretFetchRate {
    fn name(&self) -> &'static str {
        "secret_fetch_rate"
    }

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
        if !state.count.add(&self.core.pane, t, weight) {
            return;
        }
        state.newest = state.newest.max(t);
        let now = state.newest;
        state.baseline.observe(&self.core.baseline, t, weight);
        let uid = ev.metadata_uid.as_deref();
        if ev.resources.is_empty() {
            // No secret named (a filter-based bulk read): the operation stands in for it.
            state.distinct.add(
                &self.core.pane,
                t,
                stable_hash(&[&ev.api_operation]),
                c.max_distinct,
            );
            self.core.ring.push(key_hash, t, &ev.api_operation, uid);
        }
        for secret in &ev.resources {
            state
                .distinct
                .add(&self.core.pane, t, stable_hash(&[secret]), c.max_distinct);
            self.core.ring.push(key_hash, t, secret, uid);
        }
        let count = state.count.total(&self.core.pane, now);
        let distinct = state.distinct.distinct(&self.core.pane, now);
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
            state
                .baseline
                .threshold(&self.core.baseline)
                .filter(|th| count as f64 > *th)
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
        let techniques = ctx.techniques(Behaviour::SecretFetch);
        let title = format!(
            "Unusually many secrets fetched: {count} fetches of {distinct} distinct secrets by {} in {} {} within {}",
            ev.actor_user_uid,
            ev.cloud_provider,
            ev.cloud_account_uid,
            humantime::format_duration(c.window)
        );
        out.push(burst_alert(BurstReport {
            detector: "secret_fetch_rate",
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
