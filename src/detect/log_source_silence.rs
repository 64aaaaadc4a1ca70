//! `log_source_silence` (T1562.008): a log source that was active goes silent.
//!
//! A log source is (provider, scope, region, log type) by default, e.g. the management events of
//! one AWS account in one region, or the GCP Admin Activity log of one project; with
//! `per_service` also the service. Each source keeps a heartbeat that learns its usual gap
//! between bursts; when the watermark passes `last_seen + max(k × learned gap, floor)` the source
//! is silent: one alert per episode, naming the last `log_disable` seen in that scope within the
//! look-back (the usual cause), and a `resolved` record when the source speaks again.
//!
//! The alert time and id derive from the source's last event and threshold, not from when the
//! check ran, so a live run and a replay agree.
//!
//! Activity arrives as [`Beat`]s: per-pane summaries (count, first and last event time) of a
//! source, one pane being `resolution` wide. Summaries of the same pane merge, from any number
//! of input partitions and in any order. A pane is applied to the heartbeat only once it is
//! *closed* (the watermark passed its end, so every summary of it has arrived), in pane order.
//! Because gaps shorter than `resolution` are never learned, beating at each pane's first and last
//! event learns exactly what beating at every event would. Silence is judged at the last pane
//! boundary the watermark passed (everything before it is known), and also just before a pane is
//! applied (a gap that already ended is still an episode). So what fires, and with what content,
//! does not depend on how summaries were cut, when they arrived, or when checks ran: one
//! instance, several instances and `replay` agree.

use super::{tables, Beat, Detector, EventCtx, Route, Shared, Summarize, Summary};
use crate::alert::{Alert, AlertDraft, AlertStatus, Evidence, Severity};
use crate::catalog::{Behaviour, Matches};
use crate::config::common::{at_least_one, finite_positive, positive, ratio};
use crate::config::{detector_config, invalid, ms, CommonSettings, ConfigError, Mode, Section};
use crate::event::time::format_rfc3339_ms;
use crate::event::CloudEvent;
use crate::event::Provider;
use crate::window::{stable_hash, BoundedMap, Heartbeat, Resumed, SilenceSpec};
use std::borrow::Cow;
use std::time::Duration;

detector_config! {
    /// `[detectors.log_source_silence]`: a log source that was active goes silent (T1562.008).
    pub struct LogSourceSilenceConfig {
        severity = Severity::Medium;
        /// Key sources by service too (finer: a service that stops logging is noticed even when
        /// the account's other services keep talking).
        pub per_service: bool = false,
        /// Silence threshold = max(k × learned gap, floor).
        pub k: f64 = 10.0,
        /// Minimum silence that can alert.
        #[serde(with = "humantime_serde")]
        pub floor: Duration = Duration::from_secs(30 * 60),
        /// Gaps shorter than this are bursts, not gaps.
        #[serde(with = "humantime_serde")]
        pub resolution: Duration = Duration::from_secs(60),
        /// EWMA weight of the newest gap.
        pub alpha: f64 = 0.2,
        /// Events a source must have sent before its silence is meaningful.
        pub min_events: u32 = 20,
        /// How far back a `log_disable` in the same scope is named in the silence alert.
        #[serde(with = "humantime_serde")]
        pub lookback: Duration = Duration::from_secs(6 * 3600),
        /// Emit a `resolved` record when a silent source resumes.
        pub emit_recovery: bool = true,
        /// Log sources tracked (least recently active evicted beyond).
        pub max_sources: usize = 50_000,
        /// Sources idle this long are forgotten (they no longer count as "was active").
        #[serde(with = "humantime_serde")]
        pub forget_after: Duration = Duration::from_secs(7 * 24 * 3600),
    }
}

impl Section for LogSourceSilenceConfig {
    fn validate(&self, p: &str) -> Result<(), ConfigError> {
        finite_positive(&format!("{p}.k"), self.k)?;
        ratio(&format!("{p}.alpha"), self.alpha)?;
        positive(&format!("{p}.resolution"), self.resolution)?;
        if self.floor < self.resolution {
            // Activity is summarised per `resolution`-wide pane: a shorter silence cannot be seen.
            return Err(invalid(
                format!("{p}.floor"),
                "must be at least `resolution` (activity is tracked per resolution-wide pane)",
            ));
        }
        at_least_one(&format!("{p}.max_sources"), self.max_sources)?;
        positive(&format!("{p}.forget_after"), self.forget_after)?;
        Ok(())
    }
}

/// The log source of an event as a one-event [`Beat`] (the repartition step merges these per
/// pane before sending them on).
pub fn beat_of<'a>(ev: &'a CloudEvent<'_>, per_service: bool, resolution_ms: i64) -> Beat<'a> {
    let service: Option<&str> = per_service.then_some(&*ev.api_service_name);
    let key = stable_hash(&[
        ev.cloud_provider.as_str(),
        &ev.cloud_account_uid,
        &ev.cloud_region,
        &ev.metadata_log_name,
        service.unwrap_or(""),
    ]);
    Beat {
        key,
        provider: ev.cloud_provider,
        scope: Cow::Borrowed(&ev.cloud_account_uid),
        region: Cow::Borrowed(&ev.cloud_region),
        log_name: Cow::Borrowed(&ev.metadata_log_name),
        service: service.map(Cow::Borrowed),
        pane: ev.time.div_euclid(resolution_ms.max(1)),
        count: 1,
        min: ev.time,
        max: ev.time,
    }
}

/// Stage 1 for this detector: every in-time event is a one-event [`Beat`] of its log source.
struct Beats {
    per_service: bool,
    resolution_ms: i64,
}

impl Summarize for Beats {
    fn summarize<'a>(&mut self, ev: &'a CloudEvent<'_>, _: &Matches) -> Option<Summary<'a>> {
        Some(Summary::Beat(beat_of(
            ev,
            self.per_service,
            self.resolution_ms,
        )))
    }
}

/// The pane being filled.
#[derive(Clone, Copy, serde::Serialize, serde::Deserialize)]
struct OpenPane {
    pane: i64,
    count: u32,
    min: i64,
    max: i64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Source {
    /// `None` until the first pane closes.
    heartbeat: Option<Heartbeat>,
    /// Panes not closed yet, oldest first (usually one).
    open: Vec<OpenPane>,
    provider: Provider,
    scope: Box<str>,
    region: Box<str>,
    log_name: Box<str>,
    service: Option<Box<str>>,
}

impl Source {
    fn name(&self) -> String {
        let mut s = format!(
            "{}/{}/{}/{}",
            self.provider, self.scope, self.region, self.log_name
        );
        if let Some(service) = &self.service {
            s.push('/');
            s.push_str(service);
        }
        s
    }
}

/// How many recent log_disable events are remembered per scope.
const DISABLE_HISTORY: usize = 4;

/// A log_disable seen in a scope.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct LastDisable {
    time: i64,
    operation: String,
    principal: String,
    event_uid: Option<String>,
}

pub struct LogSourceSilence {
    config: LogSourceSilenceConfig,
    spec: SilenceSpec,
    sources: BoundedMap<u64, Source>,
    /// Per scope, the latest log_disable events (newest last): a silence names the latest one
    /// before it began, whenever it is judged.
    last_disable: BoundedMap<u64, Vec<LastDisable>>,
}

impl LogSourceSilence {
    fn build(config: LogSourceSilenceConfig) -> Self {
        LogSourceSilence {
            spec: SilenceSpec {
                k: config.k,
                floor_ms: ms(config.floor),
                resolution_ms: ms(config.resolution),
                alpha: config.alpha,
                min_events: config.min_events,
            },
            sources: BoundedMap::new(config.max_sources),
            last_disable: BoundedMap::new(config.max_sources),
            config,
        }
    }

    fn alert(
        &self,
        source: &Source,
        status: AlertStatus,
        time: i64,
        last_seen: i64,
        details: serde_json::Map<String, serde_json::Value>,
        disable: Option<&LastDisable>,
    ) -> Alert {
        let log_source = source.name();
        let dry_run = self.config.mode(&source.scope, "") == Mode::DryRun;
        let (title, severity, trigger) = match status {
            AlertStatus::New => {
                let mut title = format!(
                    "Log source silent: {log_source} has sent nothing since {}",
                    format_rfc3339_ms(last_seen)
                );
                let mut severity = self.config.severity;
                if let Some(d) = disable {
                    title.push_str(&format!(" (after {} by {})", d.operation, d.principal));
                    severity = severity.max(Severity::High);
                }
                (title, severity, "silence")
            }
            AlertStatus::Resolved => (
                format!(
                    "Log source resumed: {log_source} after {} of silence",
                    humantime::format_duration(std::time::Duration::from_millis(
                        (time - last_seen).max(0) as u64
                    ))
                ),
                Severity::Informational,
                "resumed",
            ),
        };
        let techniques = ["T1562.008".to_owned()];
        Alert::new(AlertDraft {
            detector: "log_source_silence",
            title,
            severity,
            dry_run,
            status,
            techniques: &techniques,
            time,
            window_start: last_seen,
            window_end: time,
            provider: source.provider.as_str(),
            scope: &source.scope,
            region: &source.region,
            principal: disable.map(|d| d.principal.as_str()),
            log_source: Some(log_source.clone()),
            evidence: Evidence {
                trigger: trigger.to_owned(),
                event_uids: disable
                    .and_then(|d| d.event_uid.clone())
                    .into_iter()
                    .collect(),
                operations: disable.map(|d| d.operation.clone()).into_iter().collect(),
                details,
                ..Evidence::default()
            },
            dedup_key: log_source,
            // The episode is named by the last event before the silence.
            instance: last_seen.to_string(),
        })
    }
}

impl LogSourceSilence {
    /// The `resolved` record for a source that spoke again.
    fn resumed(&self, key: u64, resumed: Resumed, out: &mut Vec<Alert>) {
        if !self.config.emit_recovery {
            return;
        }
        let Some(source) = self.sources.peek(&key) else {
            return;
        };
        if self.config.mode(&source.scope, "") == Mode::Off {
            return;
        }
        let mut details = serde_json::Map::new();
        details.insert(
            "silent_for_ms".into(),
            (resumed.resumed_at - resumed.last_seen).into(),
        );
        out.push(self.alert(
            source,
            AlertStatus::Resolved,
            resumed.resumed_at,
            resumed.last_seen,
            details,
            None,
        ));
    }
}

impl Detector for LogSourceSilence {
    type Config = LogSourceSilenceConfig;
    /// A scope's sources live together with the scope's log-disable events.
    const ROUTE: Route = Route::Scope;

    fn new(config: LogSourceSilenceConfig, _shared: &Shared) -> Self {
        LogSourceSilence::build(config)
    }

    fn name(&self) -> &'static str {
        "log_source_silence"
    }

    fn behaviour(&self) -> Behaviour {
        Behaviour::LogDisable
    }

    fn summarizer(&self) -> Option<Box<dyn Summarize>> {
        Some(Box::new(Beats {
            per_service: self.config.per_service,
            resolution_ms: ms(self.config.resolution).max(1),
        }))
    }

    tables! { 0 => sources, 1 => last_disable }

    fn on_event(&mut self, ctx: &EventCtx<'_, '_>, _out: &mut Vec<Alert>) {
        if ctx.late {
            return;
        }
        let ev = ctx.ev;
        let t = ev.time;
        let scope_hash = stable_hash(&[ev.cloud_provider.as_str(), &ev.cloud_account_uid]);
        if ctx.matches.has(Behaviour::LogDisable) {
            let history = self
                .last_disable
                .get_or_insert_with(scope_hash, t, Vec::new);
            let d = LastDisable {
                time: t,
                operation: ev.api_operation.to_string(),
                principal: ev.actor_user_uid.to_string(),
                event_uid: ev.metadata_uid.as_ref().map(|u| u.to_string()),
            };
            let at = history.partition_point(|h| h.time <= t);
            history.insert(at, d);
            if history.len() > DISABLE_HISTORY {
                history.remove(0);
            }
        }
    }

    fn on_beat(&mut self, b: &Beat<'_>, _out: &mut Vec<Alert>) {
        let source = self.sources.get_or_insert_with(b.key, b.max, || Source {
            heartbeat: None,
            open: Vec::new(),
            provider: b.provider,
            scope: b.scope.as_ref().into(),
            region: b.region.as_ref().into(),
            log_name: b.log_name.as_ref().into(),
            service: b.service.as_deref().map(Into::into),
        });
        match source.open.binary_search_by_key(&b.pane, |o| o.pane) {
            Ok(i) => {
                let o = &mut source.open[i];
                o.count = o.count.saturating_add(b.count);
                o.min = o.min.min(b.min);
                o.max = o.max.max(b.max);
            }
            Err(i) => source.open.insert(
                i,
                OpenPane {
                    pane: b.pane,
                    count: b.count,
                    min: b.min,
                    max: b.max,
                },
            ),
        }
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Vec<Alert>) {
        let resolution = self.spec.resolution_ms.max(1);
        // Every pane before this boundary is closed and applied: silence is known up to here.
        let known_until = watermark.div_euclid(resolution).saturating_mul(resolution);
        let mut silent: Vec<(u64, crate::window::Silence, u32)> = Vec::new();
        let mut resumed: Vec<(u64, Resumed)> = Vec::new();
        for (key, _, source) in self.sources.iter_mut() {
            let closed = source.open.partition_point(|o| {
                o.pane.saturating_add(1).saturating_mul(resolution) <= watermark
            });
            for o in source.open.drain(..closed).collect::<Vec<_>>() {
                match &mut source.heartbeat {
                    None => {
                        source.heartbeat =
                            Some(Heartbeat::from_pane(&self.spec, o.count, o.min, o.max));
                    }
                    Some(h) => {
                        // A gap that ended with this pane was still a silence episode.
                        if let Some(s) = h.check(&self.spec, o.min) {
                            silent.push((*key, s, h.events()));
                        }
                        if let Some(r) = h.beat_pane(&self.spec, o.count, o.min, o.max) {
                            resumed.push((*key, r));
                        }
                    }
                }
            }
            if let Some(h) = source.heartbeat.as_mut() {
                if let Some(s) = h.check(&self.spec, known_until) {
                    silent.push((*key, s, h.events()));
                }
            }
        }
        // Oldest first, so output order does not depend on map order.
        silent.sort_by_key(|(key, s, _)| (s.last_seen, *key));
        resumed.sort_by_key(|(key, r)| (r.resumed_at, *key));
        let lookback = ms(self.config.lookback);
        for (key, s, events) in silent {
            let Some(source) = self.sources.peek(&key) else {
                continue;
            };
            if self.config.mode(&source.scope, "") == Mode::Off {
                continue;
            }
            let time = s.last_seen.saturating_add(s.threshold_ms);
            let scope_hash = stable_hash(&[source.provider.as_str(), &source.scope]);
            let disable = self.last_disable.peek(&scope_hash).and_then(|history| {
                history
                    .iter()
                    .rev()
                    .find(|d| d.time >= s.last_seen.saturating_sub(lookback) && d.time <= time)
            });
            let mut details = serde_json::Map::new();
            details.insert("last_seen".into(), format_rfc3339_ms(s.last_seen).into());
            details.insert("learned_gap_ms".into(), s.learned_gap_ms.into());
            details.insert("threshold_ms".into(), s.threshold_ms.into());
            details.insert("events_seen".into(), events.into());
            if let Some(d) = disable {
                details.insert(
                    "last_log_disable".into(),
                    serde_json::json!({
                        "operation": d.operation,
                        "principal": d.principal,
                        "time": format_rfc3339_ms(d.time),
                        "event_uid": d.event_uid,
                    }),
                );
            }
            out.push(self.alert(
                source,
                AlertStatus::New,
                time,
                s.last_seen,
                details,
                disable,
            ));
        }
        for (key, r) in resumed {
            self.resumed(key, r, out);
        }
        // Forget long-silent sources only after judging them: the watermark can jump (a
        // repartitioned group catching up), and a source must not vanish unreported.
        self.sources
            .sweep_idle(watermark.saturating_sub(ms(self.config.forget_after)));
    }
}
