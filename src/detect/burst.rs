//! Shared state and alert shape of the per-principal burst detectors (`secret_fetch_rate`,
//! `discovery_burst`): a sliding count, a sliding distinct count, a learned baseline, and an
//! arming flag so a burst raises one alert when it crosses a threshold, not one per event; the
//! key re-arms once its window falls back below every threshold. The tail both share (the
//! baseline trigger, arming, and the alert) is [`BurstSpec::raise`].

use super::EventCtx;
use crate::alert::evidence::EvidenceRing;
use crate::alert::{Alert, AlertDraft, AlertStatus, Evidence, Severity};
use crate::catalog::Behaviour;
use crate::event::CloudEvent;
use crate::window::{
    BaselineSpec, BoundedMap, PaneSpec, RateBaseline, SlidingCount, SlidingDistinct,
};
use std::time::Duration;

/// The per-detector part: the keys, and the rest ([`BurstSpec`]) apart from them, so a key's
/// state can be held while the spec is read.
pub struct BurstCore {
    pub keys: BoundedMap<u64, BurstKey>,
    pub spec: BurstSpec,
}

/// Window geometry, baseline parameters, the evidence ring.
pub struct BurstSpec {
    pub pane: PaneSpec,
    pub baseline: BaselineSpec,
    pub ring: EvidenceRing,
}

/// The settings a burst detector's config gives its core.
pub struct BurstParams {
    pub window: Duration,
    pub pane: Duration,
    pub baseline_alpha: f64,
    pub baseline_warmup_buckets: u32,
    pub baseline_k_sigma: f64,
    pub baseline_min_count: f64,
    pub max_keys: usize,
    pub evidence_ring: usize,
}

impl BurstCore {
    pub fn new(p: BurstParams) -> Self {
        let window = crate::config::ms(p.window);
        BurstCore {
            keys: BoundedMap::new(p.max_keys),
            spec: BurstSpec {
                pane: PaneSpec::new(window, crate::config::ms(p.pane)),
                // The baseline learns per window-long bucket, so it compares like with like.
                baseline: BaselineSpec {
                    bucket_ms: window,
                    alpha: p.baseline_alpha,
                    warmup_buckets: p.baseline_warmup_buckets,
                    k_sigma: p.baseline_k_sigma,
                    min_count: p.baseline_min_count,
                },
                ring: EvidenceRing::new(p.evidence_ring),
            },
        }
    }
}

/// Who raises a burst alert, and how.
pub struct Burst {
    pub detector: &'static str,
    pub behaviour: Behaviour,
    pub severity: Severity,
    pub dry_run: bool,
    pub key_hash: u64,
}

impl BurstSpec {
    /// The baseline trigger: `value` above the key's learned threshold (once warm).
    pub fn baseline_trip(&self, state: &BurstKey, value: f64) -> Option<Tripped> {
        state
            .baseline
            .threshold(&self.baseline)
            .filter(|th| value > *th)
            .map(|th| Tripped {
                trigger: "baseline",
                threshold: (th * 100.0).round() / 100.0,
            })
    }

    /// The end of a burst detector's event: no trigger re-arms the key; the first event over a
    /// threshold disarms it and raises one alert, titled by `title(count, distinct)` (the
    /// key's window as of its newest event).
    pub fn raise(
        &self,
        state: &mut BurstKey,
        tripped: Option<Tripped>,
        burst: Burst,
        ctx: &EventCtx<'_, '_>,
        title: impl FnOnce(u64, u32) -> String,
        out: &mut Vec<Alert>,
    ) {
        let Some(tripped) = tripped else {
            state.armed = true;
            return;
        };
        if !state.armed {
            return;
        }
        state.armed = false;
        let now = state.newest;
        let count = state.count.total(&self.pane, now);
        let distinct = state.distinct.distinct(&self.pane, now);
        let techniques = ctx.techniques(burst.behaviour);
        out.push(burst_alert(BurstReport {
            detector: burst.detector,
            title: title(count, distinct),
            severity: burst.severity,
            dry_run: burst.dry_run,
            techniques: &techniques,
            ev: ctx.ev,
            key_hash: burst.key_hash,
            state,
            pane: &self.pane,
            baseline: &self.baseline,
            tripped,
            ring: &self.ring,
            max_samples: ctx.max_samples,
        }));
    }
}

/// Per-principal state.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct BurstKey {
    pub count: SlidingCount,
    pub distinct: SlidingDistinct,
    pub baseline: RateBaseline,
    pub armed: bool,
    /// Newest event time seen for the key: windows are read as of this time, so an event that
    /// arrives out of order (another partition, a late batch) cannot make the count look lower
    /// and re-arm a burst that is still going on.
    pub newest: i64,
}

impl BurstKey {
    pub fn new() -> Self {
        BurstKey {
            count: SlidingCount::new(),
            distinct: SlidingDistinct::new(),
            baseline: RateBaseline::new(),
            armed: true,
            newest: i64::MIN,
        }
    }
}

impl Default for BurstKey {
    fn default() -> Self {
        Self::new()
    }
}

/// Which threshold tripped, with the numbers for the evidence.
pub struct Tripped {
    pub trigger: &'static str,
    pub threshold: f64,
}

/// Everything needed to describe a burst.
pub struct BurstReport<'a> {
    pub detector: &'static str,
    pub title: String,
    pub severity: Severity,
    pub dry_run: bool,
    pub techniques: &'a [String],
    pub ev: &'a CloudEvent<'a>,
    pub key_hash: u64,
    pub state: &'a BurstKey,
    pub pane: &'a PaneSpec,
    pub baseline: &'a BaselineSpec,
    pub tripped: Tripped,
    pub ring: &'a EvidenceRing,
    pub max_samples: usize,
}

pub fn burst_alert(r: BurstReport<'_>) -> Alert {
    let t = r.ev.time.max(r.state.newest);
    let window_start = r
        .state
        .count
        .window_start()
        .unwrap_or(t)
        .max(r.pane.oldest_live_pane(t));
    let count = r.state.count.total(r.pane, t);
    let distinct = r.state.distinct.distinct(r.pane, t);
    let warm = r.state.baseline.is_warm(r.baseline);
    let (samples, event_uids) = r.ring.samples(r.key_hash, window_start, r.max_samples);
    let evidence = Evidence {
        count: Some(count),
        distinct_count: Some(u64::from(distinct)),
        threshold: Some(r.tripped.threshold),
        baseline_mean: warm.then(|| round2(r.state.baseline.mean())),
        baseline_stddev: warm.then(|| round2(r.state.baseline.stddev())),
        deviation: warm.then(|| round2(r.state.baseline.deviation(count as f64))),
        trigger: r.tripped.trigger.to_owned(),
        samples,
        event_uids,
        operations: vec![r.ev.api_operation.to_string()],
        details: serde_json::Map::new(),
    };
    let ev = r.ev;
    let dedup_key = format!(
        "{}|{}|{}",
        ev.cloud_provider, ev.cloud_account_uid, ev.actor_user_uid
    );
    Alert::new(AlertDraft {
        detector: r.detector,
        title: r.title,
        severity: r.severity,
        dry_run: r.dry_run,
        status: AlertStatus::New,
        techniques: r.techniques,
        time: t,
        window_start,
        window_end: t,
        provider: ev.cloud_provider.as_str(),
        scope: &ev.cloud_account_uid,
        region: &ev.cloud_region,
        principal: Some(&ev.actor_user_uid),
        log_source: None,
        evidence,
        dedup_key,
        instance: window_start.to_string(),
    })
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
