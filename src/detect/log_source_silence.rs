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

use super::{Detector, DetectorStats, EventCtx};
use crate::alert::{Alert, AlertDraft, AlertStatus, Evidence, Severity};
use crate::catalog::Behaviour;
use crate::config::{ms, CommonSettings, LogSourceSilenceConfig, Mode};
use crate::event::time::format_rfc3339_ms;
use crate::event::Provider;
use crate::window::{stable_hash, BoundedMap, Heartbeat, SilenceSpec};

struct Source {
    heartbeat: Heartbeat,
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

/// The last log_disable seen in a scope.
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
    last_disable: BoundedMap<u64, LastDisable>,
}

impl LogSourceSilence {
    pub fn new(config: LogSourceSilenceConfig) -> Self {
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

impl Detector for LogSourceSilence {
    fn name(&self) -> &'static str {
        "log_source_silence"
    }

    fn on_event(&mut self, ctx: &EventCtx<'_, '_>, out: &mut Vec<Alert>) {
        if ctx.late {
            return;
        }
        let ev = ctx.ev;
        let t = ev.time;
        let scope_hash = stable_hash(&[ev.cloud_provider.as_str(), &ev.cloud_account_uid]);
        if ctx.matches.has(Behaviour::LogDisable) {
            let d = self
                .last_disable
                .get_or_insert_with(scope_hash, t, || LastDisable {
                    time: t,
                    operation: String::new(),
                    principal: String::new(),
                    event_uid: None,
                });
            if t >= d.time {
                d.time = t;
                d.operation = ev.api_operation.to_string();
                d.principal = ev.actor_user_uid.to_string();
                d.event_uid = ev.metadata_uid.as_ref().map(|u| u.to_string());
            }
        }
        let service: Option<&str> = self.config.per_service.then_some(&*ev.api_service_name);
        let key = stable_hash(&[
            ev.cloud_provider.as_str(),
            &ev.cloud_account_uid,
            &ev.cloud_region,
            &ev.metadata_log_name,
            service.unwrap_or(""),
        ]);
        let mut created = false;
        let source = self.sources.get_or_insert_with(key, t, || {
            created = true;
            Source {
                heartbeat: Heartbeat::new(t),
                provider: ev.cloud_provider,
                scope: ev.cloud_account_uid.as_ref().into(),
                region: ev.cloud_region.as_ref().into(),
                log_name: ev.metadata_log_name.as_ref().into(),
                service: service.map(Into::into),
            }
        });
        if created {
            return;
        }
        let Some(resumed) = source.heartbeat.beat(&self.spec, t) else {
            return;
        };
        if !self.config.emit_recovery {
            return;
        }
        let mode = self.config.mode(&ev.cloud_account_uid, "");
        if mode == Mode::Off {
            return;
        }
        let mut details = serde_json::Map::new();
        details.insert(
            "silent_for_ms".into(),
            (resumed.resumed_at - resumed.last_seen).into(),
        );
        let source = self.sources.peek(&key).expect("inserted above");
        out.push(self.alert(
            source,
            AlertStatus::Resolved,
            t,
            resumed.last_seen,
            details,
            None,
        ));
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Vec<Alert>) {
        self.sources
            .sweep_idle(watermark.saturating_sub(ms(self.config.forget_after)));
        let mut silent: Vec<(u64, crate::window::Silence)> = Vec::new();
        for (key, _, source) in self.sources.iter_mut() {
            if let Some(s) = source.heartbeat.check(&self.spec, watermark) {
                silent.push((*key, s));
            }
        }
        // Oldest silence first, so output order does not depend on map order.
        silent.sort_by_key(|(key, s)| (s.last_seen, *key));
        let lookback = ms(self.config.lookback);
        for (key, s) in silent {
            let Some(source) = self.sources.peek(&key) else {
                continue;
            };
            if self.config.mode(&source.scope, "") == Mode::Off {
                continue;
            }
            let time = s.last_seen.saturating_add(s.threshold_ms);
            let scope_hash = stable_hash(&[source.provider.as_str(), &source.scope]);
            let disable = self
                .last_disable
                .peek(&scope_hash)
                .filter(|d| d.time >= s.last_seen.saturating_sub(lookback) && d.time <= time);
            let mut details = serde_json::Map::new();
            details.insert("last_seen".into(), format_rfc3339_ms(s.last_seen).into());
            details.insert("learned_gap_ms".into(), s.learned_gap_ms.into());
            details.insert("threshold_ms".into(), s.threshold_ms.into());
            details.insert("events_seen".into(), source.heartbeat.events().into());
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
    }

    fn stats(&self) -> DetectorStats {
        DetectorStats {
            keys: self.sources.len(),
            evicted: self.sources.evicted(),
        }
    }
}
