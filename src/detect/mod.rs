//! Detectors: one file each, one variant each in [`AnyDetector`] (the compiler keeps the registry
//! exhaustive), each owning its config section.
//!
//! A detector sees every event with its catalog matches ([`EventCtx`]) and reacts to the
//! behaviours it cares about; stateful detectors also get [`Detector::on_watermark`] when event
//! time moves on, for expiry and silence. Late events (older than the watermark) reach only the
//! stateless detectors. Detectors never read a clock and never emit directly: they push alerts
//! into a buffer the engine passes through suppression.

pub mod burst;
pub mod discovery_burst;
pub mod log_disable;
pub mod log_source_silence;
pub mod per_event;
pub mod quota_change;
pub mod secret_fetch_rate;

use crate::alert::{Alert, AlertDraft, AlertStatus, Evidence, Severity};
use crate::catalog::{Behaviour, Catalog, Matches};
use crate::config::{Config, PerEventConfig};
use crate::event::{CloudEvent, Provider};
use std::borrow::Cow;

/// Which key a detector's state is partitioned by: every event a detector needs for one key must
/// reach the same state owner (the repartition step routes by it, see `topology`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// (provider, scope, principal): per-principal windows and per-principal dedup keys.
    Principal,
    /// (provider, scope): per-scope windows, and the log sources of a scope together with the
    /// scope's log-disable events (the silence alert names the disable that caused it).
    Scope,
}

/// A set of detectors, as bits indexed by [`DETECTOR_NAMES`] position.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DetectorSet(pub u16);

impl DetectorSet {
    pub fn with(self, index: usize) -> Self {
        DetectorSet(self.0 | 1 << index)
    }

    pub fn has(self, index: usize) -> bool {
        self.0 & (1 << index) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// Position of a detector name in [`DETECTOR_NAMES`].
pub fn detector_index(name: &str) -> usize {
    DETECTOR_NAMES
        .iter()
        .position(|n| *n == name)
        .expect("every detector is registered")
}

/// A log source's activity in one heartbeat pane (`log_source_silence.resolution` wide): the
/// number of events and the first and last event time. Silence is judged on these summaries,
/// which is what lets the repartition step send one record per source and pane rather than one
/// per event; partial summaries of the same pane (from several input partitions) merge.
#[derive(Debug, Clone, PartialEq)]
pub struct Beat<'a> {
    /// Stable hash of the source (see `log_source_silence::source_key`).
    pub key: u64,
    pub provider: Provider,
    pub scope: Cow<'a, str>,
    pub region: Cow<'a, str>,
    pub log_name: Cow<'a, str>,
    pub service: Option<Cow<'a, str>>,
    /// Pane index: `min.div_euclid(resolution)`.
    pub pane: i64,
    pub count: u32,
    pub min: i64,
    pub max: i64,
}

impl Beat<'_> {
    pub fn into_owned(self) -> Beat<'static> {
        Beat {
            key: self.key,
            provider: self.provider,
            scope: Cow::Owned(self.scope.into_owned()),
            region: Cow::Owned(self.region.into_owned()),
            log_name: Cow::Owned(self.log_name.into_owned()),
            service: self.service.map(|s| Cow::Owned(s.into_owned())),
            pane: self.pane,
            count: self.count,
            min: self.min,
            max: self.max,
        }
    }

    /// Adds another summary of the same pane.
    pub fn merge(&mut self, count: u32, min: i64, max: i64) {
        self.count = self.count.saturating_add(count);
        self.min = self.min.min(min);
        self.max = self.max.max(max);
    }
}

/// A region a scope was active in, at (no later than) `time`: what `quota_change` needs of the
/// events that are not quota requests, to know which regions a scope uses.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionSeen<'a> {
    pub provider: Provider,
    pub scope: Cow<'a, str>,
    pub region: Cow<'a, str>,
    pub time: i64,
}

impl RegionSeen<'_> {
    pub fn into_owned(self) -> RegionSeen<'static> {
        RegionSeen {
            provider: self.provider,
            scope: Cow::Owned(self.scope.into_owned()),
            region: Cow::Owned(self.region.into_owned()),
            time: self.time,
        }
    }
}

/// One event as a detector sees it.
pub struct EventCtx<'c, 'e> {
    pub ev: &'c CloudEvent<'e>,
    pub matches: Matches,
    pub catalog: &'c Catalog,
    /// Older than the watermark: stateful detectors skip it.
    pub late: bool,
    pub watermark: i64,
    pub max_samples: usize,
}

impl EventCtx<'_, '_> {
    /// Technique ids of the rules matched for `behaviour` (deduplicated, catalog order).
    pub fn techniques(&self, behaviour: Behaviour) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for &id in self.matches.ids() {
            let rule = self.catalog.rule(id);
            if rule.behaviour == behaviour {
                for t in &rule.techniques {
                    if !out.contains(t) {
                        out.push(t.clone());
                    }
                }
            }
        }
        out
    }
}

/// Keys held and keys evicted, for metrics and summaries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DetectorStats {
    pub keys: usize,
    pub evicted: u64,
}

/// The detector interface: one required method, defaulted hooks.
pub trait Detector {
    fn name(&self) -> &'static str;

    /// Called for every decoded event, late or not.
    fn on_event(&mut self, ctx: &EventCtx<'_, '_>, out: &mut Vec<Alert>);

    /// Called when the watermark passes a check point (and at end of input).
    fn on_watermark(&mut self, _watermark: i64, _out: &mut Vec<Alert>) {}

    /// A log source's activity summary (`log_source_silence` only).
    fn on_beat(&mut self, _beat: &Beat<'_>, _out: &mut Vec<Alert>) {}

    /// A region a scope was active in (`quota_change` only).
    fn on_region(&mut self, _region: &RegionSeen<'_>) {}

    fn stats(&self) -> DetectorStats {
        DetectorStats::default()
    }

    /// Starts recording changed keys (durable state on).
    fn track_changes(&mut self) {}

    /// The entries changed since the last call (`detector` left 0: the caller sets it).
    fn checkpoint(&mut self, _out: &mut Vec<crate::state::Entry>) {}

    /// Puts one checkpointed entry back.
    fn restore(
        &mut self,
        _table: u8,
        _key: u64,
        _bytes: &[u8],
    ) -> Result<(), crate::state::StateError> {
        Err(crate::state::StateError::UnknownTable)
    }
}

/// The registry of detectors.
pub enum AnyDetector {
    LogDisable(log_disable::LogDisable),
    LogSourceSilence(log_source_silence::LogSourceSilence),
    SecretFetchRate(secret_fetch_rate::SecretFetchRate),
    DiscoveryBurst(discovery_burst::DiscoveryBurst),
    QuotaChange(quota_change::QuotaChange),
    PerEvent(per_event::PerEvent),
}

macro_rules! dispatch {
    ($self:expr, $d:ident => $body:expr) => {
        match $self {
            AnyDetector::LogDisable($d) => $body,
            AnyDetector::LogSourceSilence($d) => $body,
            AnyDetector::SecretFetchRate($d) => $body,
            AnyDetector::DiscoveryBurst($d) => $body,
            AnyDetector::QuotaChange($d) => $body,
            AnyDetector::PerEvent($d) => $body,
        }
    };
}

impl Detector for AnyDetector {
    fn name(&self) -> &'static str {
        dispatch!(self, d => d.name())
    }

    fn on_event(&mut self, ctx: &EventCtx<'_, '_>, out: &mut Vec<Alert>) {
        dispatch!(self, d => d.on_event(ctx, out))
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Vec<Alert>) {
        dispatch!(self, d => d.on_watermark(watermark, out))
    }

    fn on_beat(&mut self, beat: &Beat<'_>, out: &mut Vec<Alert>) {
        dispatch!(self, d => d.on_beat(beat, out))
    }

    fn on_region(&mut self, region: &RegionSeen<'_>) {
        dispatch!(self, d => d.on_region(region))
    }

    fn stats(&self) -> DetectorStats {
        dispatch!(self, d => d.stats())
    }

    fn track_changes(&mut self) {
        dispatch!(self, d => d.track_changes())
    }

    fn checkpoint(&mut self, out: &mut Vec<crate::state::Entry>) {
        dispatch!(self, d => d.checkpoint(out))
    }

    fn restore(
        &mut self,
        table: u8,
        key: u64,
        bytes: &[u8],
    ) -> Result<(), crate::state::StateError> {
        dispatch!(self, d => d.restore(table, key, bytes))
    }
}

impl AnyDetector {
    /// The behaviour whose events this detector reads, how its state is keyed, and whether it
    /// still wants events older than the watermark (the stateless ones do).
    pub fn consumes(&self) -> (Behaviour, Route, bool) {
        match self {
            AnyDetector::LogDisable(_) => (Behaviour::LogDisable, Route::Scope, true),
            AnyDetector::LogSourceSilence(_) => (Behaviour::LogDisable, Route::Scope, false),
            AnyDetector::SecretFetchRate(_) => (Behaviour::SecretFetch, Route::Principal, false),
            AnyDetector::DiscoveryBurst(_) => (Behaviour::Discovery, Route::Principal, false),
            AnyDetector::QuotaChange(_) => (Behaviour::QuotaChange, Route::Scope, false),
            AnyDetector::PerEvent(d) => (d.behaviour(), Route::Principal, true),
        }
    }
}

/// Every detector name, in registry order.
pub const DETECTOR_NAMES: [&str; 10] = [
    "log_disable",
    "log_source_silence",
    "secret_fetch_rate",
    "discovery_burst",
    "quota_change",
    "tenant_settings",
    "event_trigger",
    "impair_defenses",
    "conditional_access",
    "serverless",
];

/// Builds the enabled detectors from the config.
pub fn build(config: &Config) -> Vec<AnyDetector> {
    let d = &config.detectors;
    let ring = config.alerts.evidence_ring;
    let mut out = Vec::new();
    if d.log_disable.enabled || !d.log_disable.scopes.is_empty() {
        out.push(AnyDetector::LogDisable(log_disable::LogDisable::new(
            d.log_disable.clone(),
        )));
    }
    if d.log_source_silence.enabled || !d.log_source_silence.scopes.is_empty() {
        out.push(AnyDetector::LogSourceSilence(
            log_source_silence::LogSourceSilence::new(d.log_source_silence.clone()),
        ));
    }
    if d.secret_fetch_rate.enabled || !d.secret_fetch_rate.scopes.is_empty() {
        out.push(AnyDetector::SecretFetchRate(
            secret_fetch_rate::SecretFetchRate::new(d.secret_fetch_rate.clone(), ring),
        ));
    }
    if d.discovery_burst.enabled || !d.discovery_burst.scopes.is_empty() {
        out.push(AnyDetector::DiscoveryBurst(
            discovery_burst::DiscoveryBurst::new(d.discovery_burst.clone(), ring),
        ));
    }
    if d.quota_change.enabled || !d.quota_change.scopes.is_empty() {
        out.push(AnyDetector::QuotaChange(quota_change::QuotaChange::new(
            d.quota_change.clone(),
            ring,
        )));
    }
    let per_event: [(Behaviour, PerEventConfig); 5] = [
        (Behaviour::TenantSettings, d.tenant_settings.clone().into()),
        (Behaviour::EventTrigger, d.event_trigger.clone().into()),
        (Behaviour::ImpairDefenses, d.impair_defenses.clone().into()),
        (
            Behaviour::ConditionalAccess,
            d.conditional_access.clone().into(),
        ),
        (Behaviour::Serverless, d.serverless.clone().into()),
    ];
    for (behaviour, c) in per_event {
        if c.enabled || !c.scopes.is_empty() {
            out.push(AnyDetector::PerEvent(per_event::PerEvent::new(
                behaviour, c,
            )));
        }
    }
    out
}

/// The alert for a single matching event (log_disable and the per-event detectors).
pub(crate) fn single_event_alert(
    ctx: &EventCtx<'_, '_>,
    detector: &'static str,
    behaviour: Behaviour,
    title: String,
    severity: Severity,
    dry_run: bool,
    trigger: &str,
) -> Alert {
    let ev = ctx.ev;
    let mut details = serde_json::Map::new();
    if !ev.api_request.is_empty() {
        if let Ok(v) = serde_json::to_value(&ev.api_request) {
            details.insert("request".into(), v);
        }
    }
    details.insert(
        "status".into(),
        serde_json::Value::String(
            match ev.status {
                crate::event::Outcome::Success => "success",
                crate::event::Outcome::Failure => "failure",
            }
            .into(),
        ),
    );
    if let Some(code) = &ev.status_code {
        details.insert("status_code".into(), code.as_ref().into());
    }
    if let Some(ip) = &ev.src_endpoint_ip {
        details.insert("src_endpoint_ip".into(), ip.as_ref().into());
    }
    if let Some(ua) = &ev.http_request_user_agent {
        details.insert("user_agent".into(), ua.as_ref().into());
    }
    let evidence = Evidence {
        count: Some(1),
        trigger: trigger.to_owned(),
        samples: ev
            .resources
            .iter()
            .take(ctx.max_samples)
            .map(|r| r.to_string())
            .collect(),
        event_uids: ev.metadata_uid.iter().map(|u| u.to_string()).collect(),
        operations: vec![ev.api_operation.to_string()],
        details,
        ..Evidence::default()
    };
    let dedup_key = format!(
        "{}|{}|{}|{}",
        ev.cloud_provider, ev.cloud_account_uid, ev.actor_user_uid, ev.api_operation
    );
    let instance = match &ev.metadata_uid {
        Some(uid) => uid.to_string(),
        None => format!(
            "{}|{}",
            ev.time,
            ev.resources.first().map_or("", |r| r.as_ref())
        ),
    };
    let techniques = ctx.techniques(behaviour);
    Alert::new(AlertDraft {
        detector,
        title,
        severity,
        dry_run,
        status: AlertStatus::New,
        techniques: &techniques,
        time: ev.time,
        window_start: ev.time,
        window_end: ev.time,
        provider: ev.cloud_provider.as_str(),
        scope: &ev.cloud_account_uid,
        region: &ev.cloud_region,
        principal: Some(&ev.actor_user_uid),
        log_source: None,
        evidence,
        dedup_key,
        instance,
    })
}
