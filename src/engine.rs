//! The engine: one code path from a raw record to emitted alerts, shared by `replay` and the live
//! service.
//!
//! decode → classify (catalog) → watermark → detectors → suppression → out. The engine owns the
//! watermark: every event moves it (max event time − allowed lateness); when it crosses the next
//! check point (every `time.check_interval` of event time) the stateful detectors get
//! `on_watermark` for expiry and silence. The caller owns I/O and ordering; at end of input (or
//! when the input goes idle) it calls [`Engine::advance_watermark`] or [`Engine::finish`].

use crate::alert::suppress::Suppressor;
use crate::alert::Alert;
use crate::catalog::Catalog;
use crate::config::{ms, Config, ConfigError};
use crate::detect::{self, AnyDetector, Detector, DetectorStats, EventCtx};
use crate::event::{decode_record, CloudEvent, DecodeError, DecodeLimits};
use crate::window::Watermark;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// Counters an engine keeps; the live service exports them as metrics.
#[derive(Debug, Clone, Default)]
pub struct EngineStats {
    pub records: u64,
    pub events: u64,
    pub late_events: u64,
    pub decode_errors: BTreeMap<Cow<'static, str>, u64>,
    pub alerts: BTreeMap<&'static str, u64>,
    pub alerts_by_severity: BTreeMap<&'static str, u64>,
    pub dry_run_alerts: u64,
    pub resolved: u64,
}

impl EngineStats {
    pub fn decode_errors_total(&self) -> u64 {
        self.decode_errors.values().sum()
    }

    pub fn alerts_total(&self) -> u64 {
        self.alerts.values().sum()
    }
}

pub struct Engine {
    catalog: Catalog,
    detectors: Vec<AnyDetector>,
    watermark: Watermark,
    suppressor: Suppressor,
    limits: DecodeLimits,
    check_interval_ms: i64,
    next_check: Option<i64>,
    max_samples: usize,
    raised: Vec<Alert>,
    /// Reused decode buffer (see `process_record`).
    events: Vec<CloudEvent<'static>>,
    /// Newest event time of the last record processed.
    last_record_time: Option<i64>,
    stats: EngineStats,
}

impl Engine {
    pub fn new(config: &Config) -> Result<Engine, ConfigError> {
        config.validate()?;
        Ok(Engine {
            catalog: config.catalog()?,
            detectors: detect::build(config),
            watermark: Watermark::new(ms(config.time.allowed_lateness)),
            suppressor: Suppressor::new(&config.alerts.suppression),
            limits: DecodeLimits {
                max_record_bytes: config.decode.max_record_bytes,
            },
            check_interval_ms: ms(config.time.check_interval).max(1),
            next_check: None,
            max_samples: config.alerts.max_samples,
            raised: Vec::new(),
            events: Vec::new(),
            last_record_time: None,
            stats: EngineStats::default(),
        })
    }

    /// Lets the caller drive the watermark ([`Engine::advance_watermark`]) instead of the events:
    /// the live service combines one watermark per input partition.
    pub fn with_external_watermark(mut self) -> Self {
        self.watermark = Watermark::external(self.watermark.allowed_lateness_ms());
        self
    }

    /// The newest event time of the last record given to [`Engine::process_record`].
    pub fn last_record_time(&self) -> Option<i64> {
        self.last_record_time
    }

    /// Allowed lateness, ms.
    pub fn allowed_lateness_ms(&self) -> i64 {
        self.watermark.allowed_lateness_ms()
    }

    /// Decodes one raw record and processes its events. Returns the number of events, or the
    /// decode error (already counted by reason; the caller dead-letters the record).
    pub fn process_record(
        &mut self,
        raw: &[u8],
        out: &mut Vec<Alert>,
    ) -> Result<usize, DecodeError> {
        self.stats.records += 1;
        // Reuse the decode buffer's allocation across records of different lifetimes: an empty
        // Vec is converted in place (same layout, so `collect` keeps the allocation).
        let mut events: Vec<CloudEvent<'_>> = std::mem::take(&mut self.events)
            .into_iter()
            .map(|_| unreachable!("the buffer is empty"))
            .collect();
        let result = decode_record(raw, &self.limits, &mut events);
        let n = events.len();
        self.last_record_time = events.iter().map(|e| e.time).max();
        match &result {
            Ok(()) => {
                for ev in &events {
                    self.process(ev, out);
                }
            }
            Err(e) => self.count_decode_error(e),
        }
        events.clear();
        self.events = events
            .into_iter()
            .map(|_| unreachable!("the buffer was cleared"))
            .collect();
        result.map(|()| n)
    }

    /// Counts a decode error by reason (for records decoded elsewhere).
    pub fn count_decode_error(&mut self, e: &DecodeError) {
        *self.stats.decode_errors.entry(e.reason()).or_insert(0) += 1;
    }

    /// Processes one decoded event.
    pub fn process(&mut self, ev: &CloudEvent<'_>, out: &mut Vec<Alert>) {
        self.stats.events += 1;
        let late = self.watermark.observe(ev.time);
        if late {
            self.stats.late_events += 1;
        }
        let ctx = EventCtx {
            ev,
            matches: self.catalog.classify(ev),
            catalog: &self.catalog,
            late,
            watermark: self.watermark.current(),
            max_samples: self.max_samples,
        };
        for d in &mut self.detectors {
            d.on_event(&ctx, &mut self.raised);
        }
        self.maybe_check();
        self.emit(out);
    }

    /// Moves the watermark forward to `t` (idle input, end of input) and runs the checks.
    pub fn advance_watermark(&mut self, t: i64, out: &mut Vec<Alert>) {
        self.watermark.advance_to(t);
        self.maybe_check();
        self.emit(out);
    }

    /// End of input: the watermark moves to the newest event time seen (lateness no longer
    /// matters) and silence is evaluated there.
    pub fn finish(&mut self, out: &mut Vec<Alert>) {
        if let Some(max) = self.watermark.max_event_time() {
            self.watermark.advance_to(max);
            let wm = self.watermark.current();
            for d in &mut self.detectors {
                d.on_watermark(wm, &mut self.raised);
            }
            self.emit(out);
        }
    }

    fn maybe_check(&mut self) {
        let wm = self.watermark.current();
        if wm == i64::MIN {
            return;
        }
        let interval = self.check_interval_ms;
        let next = *self
            .next_check
            .get_or_insert(wm.div_euclid(interval) * interval + interval);
        if wm < next {
            return;
        }
        // Check at the watermark itself; silence alert times derive from each source's own
        // last event, so skipping intermediate check points changes nothing.
        for d in &mut self.detectors {
            d.on_watermark(wm, &mut self.raised);
        }
        self.next_check = Some(wm.div_euclid(interval) * interval + interval);
    }

    fn emit(&mut self, out: &mut Vec<Alert>) {
        for mut alert in self.raised.drain(..) {
            if !self.suppressor.admit(&mut alert) {
                continue;
            }
            let detector = crate::detect::DETECTOR_NAMES
                .iter()
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
            if alert.status == crate::alert::AlertStatus::Resolved {
                self.stats.resolved += 1;
            }
            out.push(alert);
        }
    }

    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    pub fn suppressed_total(&self) -> u64 {
        self.suppressor.suppressed_total()
    }

    pub fn suppressed_pending(&self) -> u64 {
        self.suppressor.pending_total()
    }

    /// Keys held and evicted per detector.
    pub fn detector_stats(&self) -> Vec<(&'static str, DetectorStats)> {
        self.detectors
            .iter()
            .map(|d| (d.name(), d.stats()))
            .collect()
    }

    pub fn limits(&self) -> DecodeLimits {
        self.limits
    }

    pub fn watermark(&self) -> i64 {
        self.watermark.current()
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }
}
