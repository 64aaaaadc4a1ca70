//! Stage 2 of the topology: the detectors, their windows and baselines, suppression, and the
//! event-time checks. One instance owns the state of the keys routed to it: the whole key space
//! in the in-process engine (`replay`, or the service without a repartition step), one
//! repartition partition in the repartitioned service.
//!
//! Time is given from outside ([`Stateful::advance`]): the engine's watermark, or the minimum of
//! the watermark markers of every input partition. When it crosses the next check point (every
//! `time.check_interval` of event time) the detectors get `on_watermark` for expiry and silence.
//!
//! Sigma correlation rules ([`Correlations`], set with [`Stateful::with_correlations`]) live here
//! too: their hits ([`Stateful::sigma_hit`]) arrive in event-time order like events, their
//! windows expire at the same checks, and their state is checkpointed and restored with the
//! detectors' (as pseudo-detector [`correlation::STATE_INDEX`]).

use crate::alert::suppress::Suppressor;
use crate::alert::{Alert, AlertStatus};
use crate::catalog::{Catalog, Matches};
use crate::config::{ms, Config, Valid};
use crate::detect::{self, AnyDetector, Beat, DetectorSet, DetectorStats, EventCtx, RegionSeen};
use crate::event::CloudEvent;
use crate::sigma::correlation::{self, CorrelationStats, Correlations};
use crate::sigma::hit::Hit;
use crate::state::{self, Entry, StateError};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Counts of what the stateful stage emitted.
#[derive(Debug, Clone, Default)]
pub struct AlertStats {
    pub alerts: BTreeMap<&'static str, u64>,
    pub alerts_by_severity: BTreeMap<&'static str, u64>,
    pub dry_run_alerts: u64,
    pub resolved: u64,
}

pub struct Stateful {
    catalog: Arc<Catalog>,
    /// Each detector with its [`detect::DETECTOR_NAMES`] index.
    detectors: Vec<(usize, AnyDetector)>,
    suppressor: Suppressor,
    check_interval_ms: i64,
    next_check: Option<i64>,
    max_samples: usize,
    watermark: i64,
    raised: Vec<Alert>,
    stats: AlertStats,
    /// The Sigma correlation rules, when any are loaded.
    correlations: Option<Correlations>,
    /// Change tracking is on (so correlations set later track too).
    tracking: bool,
}

impl Stateful {
    /// The stateful stage of a checked config, with its compiled catalog.
    pub fn from_valid(config: &Valid) -> Stateful {
        Stateful::build(
            config,
            config.catalog().clone(),
            config.sigma().new_correlations(),
        )
    }

    fn build(
        config: &Config,
        catalog: Arc<Catalog>,
        correlations: Option<Correlations>,
    ) -> Stateful {
        let shared = detect::Shared {
            evidence_ring: config.alerts.evidence_ring,
        };
        Stateful {
            catalog,
            detectors: detect::build(&config.detectors, &shared)
                .into_iter()
                .map(|d| (d.index(), d))
                .collect(),
            suppressor: Suppressor::new(&config.alerts.suppression),
            check_interval_ms: ms(config.time.check_interval).max(1),
            next_check: None,
            max_samples: config.alerts.max_samples,
            watermark: i64::MIN,
            raised: Vec::new(),
            stats: AlertStats::default(),
            correlations,
            tracking: false,
        }
    }

    /// Runs these Sigma correlation rules too (replacing any set before, and their state).
    pub fn with_correlations(mut self, mut correlations: Correlations) -> Self {
        if self.tracking {
            correlations.track_changes();
        }
        self.correlations = Some(correlations);
        self
    }

    pub fn correlations(&self) -> Option<&Correlations> {
        self.correlations.as_ref()
    }

    /// One Sigma detection-rule match for the correlation rules, in event-time order; a hit
    /// older than the watermark counts as late (skipped by the correlations, and counted).
    pub fn sigma_hit(&mut self, hit: &Hit<'_>, out: &mut Vec<Alert>) {
        let Some(c) = self.correlations.as_mut() else {
            return;
        };
        if !hit.late && hit.time < self.watermark {
            let late = Hit {
                late: true,
                ..hit.clone()
            };
            c.on_hit(&late, &mut self.raised);
        } else {
            c.on_hit(hit, &mut self.raised);
        }
        self.emit(out);
    }

    /// The detectors that need no event-time order (the stateless ones: `log_disable` and the
    /// per-event detectors): the repartitioned service runs them as soon as an event arrives,
    /// the others once the watermark has passed it.
    pub fn immediate(&self) -> DetectorSet {
        let mut set = DetectorSet::default();
        for (index, d) in &self.detectors {
            if d.late_events() {
                set = set.with(*index);
            }
        }
        set
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// One event for the detectors in `detectors`; `matches` is classified here when `None`
    /// (an event that came over the repartition topic).
    pub fn event(
        &mut self,
        ev: &CloudEvent<'_>,
        matches: Option<Matches>,
        detectors: DetectorSet,
        late: bool,
        out: &mut Vec<Alert>,
    ) {
        let matches = matches.unwrap_or_else(|| self.catalog.classify(ev));
        let ctx = EventCtx {
            ev,
            matches,
            catalog: &self.catalog,
            late,
            watermark: self.watermark,
            max_samples: self.max_samples,
        };
        for (index, d) in &mut self.detectors {
            if detectors.has(*index) {
                d.on_event(&ctx, &mut self.raised);
            }
        }
        self.emit(out);
    }

    pub fn beat(&mut self, beat: &Beat<'_>, out: &mut Vec<Alert>) {
        for (_, d) in &mut self.detectors {
            d.on_beat(beat, &mut self.raised);
        }
        self.emit(out);
    }

    pub fn region(&mut self, region: &RegionSeen<'_>) {
        for (_, d) in &mut self.detectors {
            d.on_region(region);
        }
    }

    /// Moves the watermark forward to `t` (never back) and runs the checks it crosses.
    pub fn advance(&mut self, t: i64, out: &mut Vec<Alert>) {
        if t <= self.watermark {
            return;
        }
        self.watermark = t;
        let interval = self.check_interval_ms;
        let next = *self
            .next_check
            .get_or_insert(t.div_euclid(interval) * interval + interval);
        if t < next {
            return;
        }
        // Check at the watermark itself; silence alert times derive from each source's own
        // last event, so skipping intermediate check points changes nothing.
        self.next_check = Some(t.div_euclid(interval) * interval + interval);
        self.check_at(t, out);
    }

    /// Runs every detector's watermark check at `t`.
    fn check_at(&mut self, t: i64, out: &mut Vec<Alert>) {
        for (_, d) in &mut self.detectors {
            d.on_watermark(t, &mut self.raised);
        }
        if let Some(c) = self.correlations.as_mut() {
            c.on_watermark(t, &mut self.raised);
        }
        self.emit(out);
    }

    /// Moves the watermark forward to `t` and runs every check there, whatever the check
    /// interval: the repartitioned service's watermark moves in steps that depend on marker
    /// timing, and checking at each step (silence is judged the same at any check time, see
    /// `log_source_silence`) keeps what fires independent of them.
    pub fn advance_and_check(&mut self, t: i64, out: &mut Vec<Alert>) {
        if t <= self.watermark {
            return;
        }
        self.watermark = t;
        self.check_at(t, out);
    }

    /// End of input: every check runs at `t` (the newest event time).
    pub fn finish(&mut self, t: i64, out: &mut Vec<Alert>) {
        self.watermark = self.watermark.max(t);
        self.check_at(self.watermark, out);
    }

    /// An alert raised outside the detectors (a Sigma rule match), through the same
    /// suppression and counts.
    pub fn emit_external(&mut self, alert: Alert, out: &mut Vec<Alert>) {
        self.raised.push(alert);
        self.emit(out);
    }

    fn emit(&mut self, out: &mut Vec<Alert>) {
        for mut alert in self.raised.drain(..) {
            if !self.suppressor.admit(&mut alert) {
                continue;
            }
            let detector = detect::DETECTOR_NAMES
                .iter()
                .chain(&["sigma", "sigma_correlation"])
                .find(|n| **n == alert.detector)
                .copied()
                .unwrap_or("unknown");
            *self.stats.alerts.entry(detector).or_insert(0) += 1;
            *self
                .stats
                .alerts_by_severity
                .entry(alert.severity.as_str())
                .or_insert(0) += 1;
            if alert.dry_run {
                self.stats.dry_run_alerts += 1;
            }
            if alert.status == AlertStatus::Resolved {
                self.stats.resolved += 1;
            }
            out.push(alert);
        }
    }

    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    pub fn stats(&self) -> &AlertStats {
        &self.stats
    }

    pub fn suppressed_total(&self) -> u64 {
        self.suppressor.suppressed_total()
    }

    /// Turns on change tracking for incremental checkpoints (durable state).
    pub fn track_changes(&mut self) {
        for (_, d) in &mut self.detectors {
            d.track_changes();
        }
        self.suppressor.track_changes();
        if let Some(c) = self.correlations.as_mut() {
            c.track_changes();
        }
        self.tracking = true;
    }

    /// Every entry changed since the last checkpoint, and this stage's own time.
    pub fn checkpoint(&mut self) -> Vec<Entry> {
        let mut out = Vec::new();
        for (index, d) in &mut self.detectors {
            let from = out.len();
            d.checkpoint(&mut out);
            for e in &mut out[from..] {
                e.detector = *index as u8;
            }
        }
        if let Some(c) = self.correlations.as_mut() {
            c.checkpoint(&mut out);
        }
        let from = out.len();
        self.suppressor.checkpoint(&mut out);
        for e in &mut out[from..] {
            e.detector = state::SUPPRESSION;
        }
        out.push(Entry {
            detector: state::META,
            table: 0,
            key: 0,
            value: Some(state::encode(
                self.watermark,
                &(self.watermark, self.next_check),
            )),
        });
        out
    }

    /// Puts one checkpointed entry back. An entry that cannot be read is an error for the
    /// caller to report; its key simply starts fresh.
    pub fn restore(&mut self, e: &Entry) -> Result<(), StateError> {
        let Some(bytes) = e.value.as_deref() else {
            return Ok(()); // a tombstone: the key is gone
        };
        match e.detector {
            state::META if e.table == 0 => {
                let (_, (watermark, next_check)): (i64, (i64, Option<i64>)) = state::decode(bytes)?;
                self.watermark = self.watermark.max(watermark);
                self.next_check = next_check;
                Ok(())
            }
            state::META => Ok(()), // the service's own metadata
            state::SUPPRESSION => self.suppressor.restore(e.key, bytes),
            correlation::STATE_INDEX => match self.correlations.as_mut() {
                Some(c) => c.restore(e.table, e.key, bytes),
                // No correlation rules loaded any more: their state is dropped.
                None => Ok(()),
            },
            d => match self.detectors.iter_mut().find(|(i, _)| *i == d as usize) {
                Some((_, det)) => det.restore(e.table, e.key, bytes),
                // A detector disabled since: its state is dropped.
                None => Ok(()),
            },
        }
    }

    /// Keys held and evicted per detector (`sigma_correlation` last, when loaded).
    pub fn detector_stats(&self) -> Vec<(&'static str, DetectorStats)> {
        let mut out: Vec<(&'static str, DetectorStats)> = self
            .detectors
            .iter()
            .map(|(_, d)| (d.name(), d.stats()))
            .collect();
        if let Some(s) = self.correlation_stats() {
            out.push((
                "sigma_correlation",
                DetectorStats {
                    keys: s.keys,
                    evicted: s.evicted,
                },
            ));
        }
        out
    }

    /// The correlation rules' groups held and evicted, and late hits skipped.
    pub fn correlation_stats(&self) -> Option<CorrelationStats> {
        self.correlations.as_ref().map(Correlations::stats)
    }
}
