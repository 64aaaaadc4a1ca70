//! The engine: one code path from a raw record to emitted alerts, shared by `replay` and the live
//! service.
//!
//! decode → watermark → classify (catalog) → route (stage 1, [`Router`]) → detectors and
//! suppression (stage 2, [`Stateful`]) → out. It is the repartitioned topology of the live
//! service with the repartition topic taken out: stage 1 hands its output straight to stage 2,
//! so `replay` runs the very same code as every instance of a scaled-out service.
//!
//! The engine owns the watermark: every event moves it (max event time − allowed lateness); when
//! it crosses the next check point (every `time.check_interval` of event time) the stateful
//! detectors get `on_watermark` for expiry and silence. The caller owns I/O and ordering; at end
//! of input (or when the input goes idle) it calls [`Engine::advance_watermark`] or
//! [`Engine::finish`].

use crate::alert::Alert;
use crate::catalog::{Catalog, Matches};
use crate::config::{ms, ConfigError, ToValid};
use crate::detect::{Beat, DetectorSet, DetectorStats, RegionSeen};
use crate::event::{decode_record, decode_record_raw, CloudEvent, DecodeError, DecodeLimits};
use crate::sigma::SigmaDetector;
use crate::topology::router::{Router, Sink};
use crate::topology::stateful::Stateful;
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
    watermark: Watermark,
    limits: DecodeLimits,
    router: Router,
    stateful: Stateful,
    /// Reused decode buffer (see `process_record`).
    events: Vec<CloudEvent<'static>>,
    /// Sigma detection rules, matched on each event's raw JSON (off: no rules).
    sigma: SigmaDetector,
    /// Reused buffer of each event's raw text, for Sigma.
    raws: Vec<&'static str>,
    /// Reused buffer of Sigma alerts before suppression.
    sigma_alerts: Vec<Alert>,
    /// Reused buffer of Sigma hits for the correlation rules.
    sigma_hits: Vec<crate::sigma::hit::Hit<'static>>,
    /// Newest event time of the last record processed.
    last_record_time: Option<i64>,
    stats: EngineStats,
}

/// The in-process sink: stage 1 hands its output straight to stage 2.
struct Local<'a> {
    stateful: &'a mut Stateful,
    out: &'a mut Vec<Alert>,
}

impl Sink for Local<'_> {
    fn event(
        &mut self,
        _route: u64,
        detectors: DetectorSet,
        ev: &CloudEvent<'_>,
        matches: &Matches,
        late: bool,
    ) {
        self.stateful
            .event(ev, Some(*matches), detectors, late, self.out);
    }

    fn beat(&mut self, _route: u64, beat: Beat<'_>) {
        self.stateful.beat(&beat, self.out);
    }

    fn region(&mut self, _route: u64, region: RegionSeen<'_>) {
        self.stateful.region(&region);
    }
}

impl Engine {
    /// An engine for a checked config ([`crate::config::Valid`], taken as is), or for a
    /// [`crate::config::Config`], checked here (and its catalog compiled).
    pub fn new(config: &impl ToValid) -> Result<Engine, ConfigError> {
        let config = config.to_valid()?;
        Ok(Engine {
            watermark: Watermark::new(ms(config.time.allowed_lateness)),
            limits: DecodeLimits {
                max_record_bytes: config.decode.max_record_bytes,
            },
            router: Router::new(&config),
            stateful: Stateful::from_valid(&config),
            events: Vec::new(),
            sigma: SigmaDetector::new(config.sigma().clone(), config.sigma.max_matched_fields),
            raws: Vec::new(),
            sigma_alerts: Vec::new(),
            sigma_hits: Vec::new(),
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
        let mut buf = std::mem::take(&mut self.events);
        let limits = self.limits;
        let result = if self.sigma.is_off() {
            with_decoded(raw, &limits, &mut buf, |events| {
                self.last_record_time = events.iter().map(|e| e.time).max();
                for ev in events {
                    self.process(ev, out);
                }
                events.len()
            })
        } else {
            let mut raws = std::mem::take(&mut self.raws);
            let r = with_decoded_raw(raw, &limits, &mut buf, &mut raws, |events, texts| {
                self.last_record_time = events.iter().map(|e| e.time).max();
                for (ev, text) in events.iter().zip(texts) {
                    self.process(ev, out);
                    self.match_sigma(ev, text, out);
                }
                events.len()
            });
            self.raws = raws;
            r
        };
        self.events = buf;
        if let Err(e) = &result {
            self.last_record_time = None;
            self.count_decode_error(e);
        }
        result
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
        let matches = self.stateful.catalog().classify(ev);
        self.router.route(
            ev,
            &matches,
            late,
            &mut Local {
                stateful: &mut self.stateful,
                out,
            },
        );
        self.stateful.advance(self.watermark.current(), out);
    }

    /// Matches the Sigma detection rules on one event (its raw JSON text) and passes the alerts
    /// through suppression. Stateless, so late events match too.
    pub fn match_sigma(&mut self, ev: &CloudEvent<'_>, raw: &str, out: &mut Vec<Alert>) {
        let mut alerts = std::mem::take(&mut self.sigma_alerts);
        let mut hits = std::mem::take(&mut self.sigma_hits);
        let late = ev.time < self.watermark.current();
        let origin = (0, i64::try_from(self.stats.records).unwrap_or(i64::MAX), 0);
        self.sigma
            .match_event_hits(ev, raw, origin, late, &mut alerts, &mut hits);
        for a in alerts.drain(..) {
            self.stateful.emit_external(a, out);
        }
        for h in hits.drain(..) {
            self.stateful.sigma_hit(&h, out);
        }
        self.sigma_alerts = alerts;
        self.sigma_hits = hits;
    }

    /// The Sigma detector (loaded rules, match counts).
    pub fn sigma(&self) -> &SigmaDetector {
        &self.sigma
    }

    /// Moves the watermark forward to `t` (idle input, end of input) and runs the checks.
    pub fn advance_watermark(&mut self, t: i64, out: &mut Vec<Alert>) {
        self.watermark.advance_to(t);
        self.stateful.advance(self.watermark.current(), out);
    }

    /// End of input: the watermark moves to the newest event time seen (lateness no longer
    /// matters) and silence is evaluated there.
    pub fn finish(&mut self, out: &mut Vec<Alert>) {
        if let Some(max) = self.watermark.max_event_time() {
            self.watermark.advance_to(max);
            self.stateful.finish(self.watermark.current(), out);
        }
    }

    /// Counters, with the alert counts of the stateful stage.
    pub fn stats(&self) -> EngineStats {
        let a = self.stateful.stats();
        EngineStats {
            alerts: a.alerts.clone(),
            alerts_by_severity: a.alerts_by_severity.clone(),
            dry_run_alerts: a.dry_run_alerts,
            resolved: a.resolved,
            ..self.stats.clone()
        }
    }

    pub fn suppressed_total(&self) -> u64 {
        self.stateful.suppressed_total()
    }

    /// Keys held and evicted per detector.
    pub fn detector_stats(&self) -> Vec<(&'static str, DetectorStats)> {
        self.stateful.detector_stats()
    }

    pub fn limits(&self) -> DecodeLimits {
        self.limits
    }

    pub fn watermark(&self) -> i64 {
        self.watermark.current()
    }

    pub fn catalog(&self) -> &Catalog {
        self.stateful.catalog()
    }

    /// Turns on change tracking, for [`Engine::checkpoint`].
    pub fn track_changes(&mut self) {
        self.stateful.track_changes();
    }

    /// The state entries changed since the last checkpoint, with the engine's own clock.
    pub fn checkpoint(&mut self) -> Vec<crate::state::Entry> {
        let mut out = self.stateful.checkpoint();
        let max = self.watermark.max_event_time().unwrap_or(i64::MIN);
        out.push(crate::state::Entry {
            detector: crate::state::META,
            table: 1,
            key: 0,
            value: Some(crate::state::encode(max, &(max, self.watermark.current()))),
        });
        out
    }

    /// Restores checkpointed entries (oldest checkpoint first); returns the entries that could
    /// not be read, with why (their keys start fresh).
    pub fn restore<'e>(
        &mut self,
        entries: impl IntoIterator<Item = &'e crate::state::Entry>,
    ) -> Vec<(crate::state::Entry, crate::state::StateError)> {
        let mut failed = Vec::new();
        for e in entries {
            let result = if e.detector == crate::state::META && e.table == 1 {
                e.value
                    .as_deref()
                    .map(crate::state::decode::<(i64, i64)>)
                    .transpose()
                    .map(|v| {
                        if let Some((_, (max, wm))) = v {
                            self.watermark.observe(max);
                            self.watermark.advance_to(wm);
                        }
                    })
            } else {
                self.stateful.restore(e)
            };
            if let Err(err) = result {
                failed.push((e.clone(), err));
            }
        }
        failed
    }
}

/// [`with_decoded`], with each event's raw JSON text (see [`decode_record_raw`]).
pub fn with_decoded_raw<R>(
    raw: &[u8],
    limits: &DecodeLimits,
    buf: &mut Vec<CloudEvent<'static>>,
    texts: &mut Vec<&'static str>,
    f: impl FnOnce(&[CloudEvent<'_>], &[&str]) -> R,
) -> Result<R, DecodeError> {
    let mut events: Vec<CloudEvent<'_>> = std::mem::take(buf)
        .into_iter()
        .map(|_| unreachable!("the buffer is empty"))
        .collect();
    let mut raws: Vec<&str> = std::mem::take(texts)
        .into_iter()
        .map(|_| unreachable!("the buffer is empty"))
        .collect();
    let result =
        decode_record_raw(raw, limits, &mut events, Some(&mut raws)).map(|()| f(&events, &raws));
    events.clear();
    raws.clear();
    *buf = events
        .into_iter()
        .map(|_| unreachable!("the buffer was cleared"))
        .collect();
    *texts = raws
        .into_iter()
        .map(|_| unreachable!("the buffer was cleared"))
        .collect();
    result
}

/// Decodes `raw` into `buf` (whose allocation is reused across records of any lifetime) and
/// runs `f` on the events.
pub fn with_decoded<R>(
    raw: &[u8],
    limits: &DecodeLimits,
    buf: &mut Vec<CloudEvent<'static>>,
    f: impl FnOnce(&[CloudEvent<'_>]) -> R,
) -> Result<R, DecodeError> {
    // An empty Vec is converted in place (same layout, so `collect` keeps the allocation).
    let mut events: Vec<CloudEvent<'_>> = std::mem::take(buf)
        .into_iter()
        .map(|_| unreachable!("the buffer is empty"))
        .collect();
    let result = decode_record(raw, limits, &mut events).map(|()| f(&events));
    events.clear();
    *buf = events
        .into_iter()
        .map(|_| unreachable!("the buffer was cleared"))
        .collect();
    result
}
