//! Detectors: one file each, each owning its config section, listed once in the registry (the
//! `registry!` invocation below), which generates [`AnyDetector`] (the compiler keeps it
//! exhaustive), the dispatch, [`DETECTOR_NAMES`], the build arms and the `[detectors.*]` config
//! table.
//!
//! A detector sees every event with its catalog matches ([`EventCtx`]) and reacts to the
//! behaviours it cares about; stateful detectors also get [`Detector::on_watermark`] when event
//! time moves on, for expiry and silence. Late events (older than the watermark) reach only the
//! detectors that ask for them (the stateless ones). Detectors never read a clock and never emit
//! directly: they push alerts into a buffer the engine passes through suppression.
//!
//! A detector describes itself to the rest of the system through the [`Detector`] trait: its
//! config section, the behaviour it reads, how its state is keyed ([`Route`]), whether it wants
//! late events, what stage 1 must summarise for it ([`Detector::summarizer`]), and the keyed
//! tables it persists ([`Detector::table`]; checkpoint, restore and stats follow from them). So
//! the topology never names a detector, and adding one is its file plus one registry line.

pub mod burst;
pub mod discovery_burst;
pub mod log_disable;
pub mod log_source_silence;
pub mod per_event;
pub mod quota_change;
pub mod secret_fetch_rate;

use crate::alert::{Alert, AlertDraft, AlertStatus, Evidence, Severity};
use crate::catalog::{Behaviour, Catalog, Matches};
use crate::config::{CommonSettings, ConfigError, Section};
use crate::event::{CloudEvent, Provider};
use crate::state::{Entry, StateError};
use crate::window::BoundedMap;
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
    pub const fn with(self, index: usize) -> Self {
        DetectorSet(self.0 | 1 << index)
    }

    pub const fn has(self, index: usize) -> bool {
        self.0 & (1 << index) != 0
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
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

/// What every detector may read besides its own section (from `[alerts]`).
#[derive(Debug, Clone, Copy)]
pub struct Shared {
    /// Recent evidence entries kept per stateful detector (`alerts.evidence_ring`).
    pub evidence_ring: usize,
}

/// One of a detector's persisted keyed maps. Implemented for every [`BoundedMap`] keyed by a
/// stable hash whose values serialize; the bytes are [`crate::state`]'s entry encoding.
pub trait Table {
    /// Starts recording changed keys (durable state on).
    fn track_changes(&mut self);
    /// The entries changed since the last call, as table `table` (`detector` left 0: the caller
    /// sets it).
    fn checkpoint(&mut self, table: u8, out: &mut Vec<Entry>);
    /// Puts one checkpointed entry back.
    fn restore(&mut self, key: u64, bytes: &[u8]) -> Result<(), StateError>;
    fn stats(&self) -> DetectorStats;
}

impl<V: serde::Serialize + serde::de::DeserializeOwned> Table for BoundedMap<u64, V> {
    fn track_changes(&mut self) {
        BoundedMap::track_changes(self);
    }

    fn checkpoint(&mut self, table: u8, out: &mut Vec<Entry>) {
        crate::state::checkpoint_map(self, table, out);
    }

    fn restore(&mut self, key: u64, bytes: &[u8]) -> Result<(), StateError> {
        crate::state::restore_map(self, key, bytes)
    }

    fn stats(&self) -> DetectorStats {
        DetectorStats {
            keys: self.len(),
            evicted: self.evicted(),
        }
    }
}

/// Declares a detector's persisted tables inside its `impl Detector`, as `number => field`
/// (numbers from 0, without gaps; they are persisted, so never renumber): generates
/// [`Detector::table`] and [`Detector::table_mut`], from which checkpoint, restore and stats
/// follow. `tables! { 0 => sources, 1 => last_disable }`.
macro_rules! tables {
    ($($id:literal => $($field:ident).+),+ $(,)?) => {
        fn table(&self, id: u8) -> Option<&dyn $crate::detect::Table> {
            match id {
                $($id => Some(&self.$($field).+),)+
                _ => None,
            }
        }

        fn table_mut(&mut self, id: u8) -> Option<&mut dyn $crate::detect::Table> {
            match id {
                $($id => Some(&mut self.$($field).+),)+
                _ => None,
            }
        }
    };
}
pub(crate) use tables;

/// A summary stage 1 sends a detector instead of events one by one (the repartition topic
/// carries each kind as its own item, see `topology::wire`).
#[derive(Debug, Clone, PartialEq)]
pub enum Summary<'a> {
    /// Log-source activity (for `log_source_silence`).
    Beat(Beat<'a>),
    /// A region a scope is active in (for `quota_change`).
    Region(RegionSeen<'a>),
}

/// Stage 1's part of a detector: sees every event in time (late ones are not summarised) and
/// says what to send on, routed by the detector's [`Route`] key.
pub trait Summarize: Send {
    fn summarize<'a>(&mut self, ev: &'a CloudEvent<'_>, matches: &Matches) -> Option<Summary<'a>>;
}

/// The detector interface: a config section, a constructor, [`Detector::on_event`], and
/// defaulted hooks.
pub trait Detector: Sized {
    /// Its `[detectors.<name>]` section (declared with `config::detector_config!`).
    type Config: Section;

    /// How its state is keyed: every event it needs for one key must reach the same state
    /// owner (the repartition step routes by it).
    const ROUTE: Route;

    /// Whether it still wants events older than the watermark (the stateless ones do); the
    /// repartitioned service runs these as soon as an event arrives, the others in event-time
    /// order.
    const LATE_EVENTS: bool = false;

    fn new(config: Self::Config, shared: &Shared) -> Self;

    fn name(&self) -> &'static str;

    /// The catalog behaviour whose events it reads.
    fn behaviour(&self) -> Behaviour;

    /// Called for every event of its behaviour routed to it (late ones only with
    /// [`Detector::LATE_EVENTS`]).
    fn on_event(&mut self, ctx: &EventCtx<'_, '_>, out: &mut Vec<Alert>);

    /// Called when the watermark passes a check point (and at end of input).
    fn on_watermark(&mut self, _watermark: i64, _out: &mut Vec<Alert>) {}

    /// Stage 1's summariser for this detector, if it needs one: what it must learn of the
    /// events that are not of its behaviour.
    fn summarizer(&self) -> Option<Box<dyn Summarize>> {
        None
    }

    /// A log source's activity summary (from a [`Summary::Beat`]).
    fn on_beat(&mut self, _beat: &Beat<'_>, _out: &mut Vec<Alert>) {}

    /// A region a scope was active in (from a [`Summary::Region`]).
    fn on_region(&mut self, _region: &RegionSeen<'_>) {}

    /// Persisted table `id` (declared with `tables!`); none by default (a stateless detector).
    fn table(&self, _id: u8) -> Option<&dyn Table> {
        None
    }

    fn table_mut(&mut self, _id: u8) -> Option<&mut dyn Table> {
        None
    }

    /// Keys held and evicted, of table 0.
    fn stats(&self) -> DetectorStats {
        self.table(0).map(Table::stats).unwrap_or_default()
    }

    /// Starts recording changed keys (durable state on).
    fn track_changes(&mut self) {
        let mut id = 0;
        while let Some(t) = self.table_mut(id) {
            t.track_changes();
            id += 1;
        }
    }

    /// The entries changed since the last call (`detector` left 0: the caller sets it).
    fn checkpoint(&mut self, out: &mut Vec<Entry>) {
        let mut id = 0;
        while let Some(t) = self.table_mut(id) {
            t.checkpoint(id, out);
            id += 1;
        }
    }

    /// Puts one checkpointed entry back.
    fn restore(&mut self, table: u8, key: u64, bytes: &[u8]) -> Result<(), StateError> {
        match self.table_mut(table) {
            Some(t) => t.restore(key, bytes),
            None => Err(StateError::UnknownTable),
        }
    }
}

/// Generates the registry from one line per detector: `index name: Variant = Type`.
macro_rules! registry {
    ($($index:literal $name:ident: $variant:ident = $ty:ty,)+) => {
        /// Every registered detector.
        pub enum AnyDetector {
            $($variant($ty),)+
        }

        /// Every detector name, in registry order. A name's position is its persisted index.
        pub const DETECTOR_NAMES: [&str; [$(stringify!($name)),+].len()] =
            [$(stringify!($name)),+];

        // The index written on each registry line is its position (so a moved line fails to
        // compile rather than renumbering persisted state).
        const _: () = {
            let mut position = 0usize;
            $(
                assert!($index == position, concat!(
                    "registry line `", stringify!($name), "` is not at its persisted index"
                ));
                position += 1;
            )+
            let _ = position;
        };

        /// `[detectors.*]`: one section per detector, named as the detector.
        #[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct DetectorsConfig {
            $(pub $name: <$ty as Detector>::Config,)+
        }

        impl DetectorsConfig {
            /// Each section's own checks, in registry order.
            pub fn validate(&self) -> Result<(), ConfigError> {
                $(Section::validate(&self.$name, concat!("detectors.", stringify!($name)))?;)+
                Ok(())
            }
        }

        /// Builds the enabled detectors (registry order).
        pub fn build(sections: &DetectorsConfig, shared: &Shared) -> Vec<AnyDetector> {
            let mut out = Vec::new();
            $(
                if sections.$name.runs() {
                    out.push(AnyDetector::$variant(<$ty as Detector>::new(
                        sections.$name.clone(),
                        shared,
                    )));
                }
            )+
            out
        }

        /// The detectors whose state is keyed by scope ([`Route::Scope`]), enabled or not.
        pub fn scope_keyed() -> DetectorSet {
            let mut set = DetectorSet(0);
            $(
                if matches!(<$ty as Detector>::ROUTE, Route::Scope) {
                    set = set.with($index);
                }
            )+
            set
        }

        impl AnyDetector {
            /// Its [`DETECTOR_NAMES`] index (persisted).
            pub fn index(&self) -> usize {
                match self {
                    $(AnyDetector::$variant(_) => $index,)+
                }
            }

            pub fn route(&self) -> Route {
                match self {
                    $(AnyDetector::$variant(_) => <$ty as Detector>::ROUTE,)+
                }
            }

            /// Whether it wants events older than the watermark.
            pub fn late_events(&self) -> bool {
                match self {
                    $(AnyDetector::$variant(_) => <$ty as Detector>::LATE_EVENTS,)+
                }
            }

            pub fn name(&self) -> &'static str {
                match self {
                    $(AnyDetector::$variant(d) => d.name(),)+
                }
            }

            pub fn behaviour(&self) -> Behaviour {
                match self {
                    $(AnyDetector::$variant(d) => d.behaviour(),)+
                }
            }

            pub fn on_event(&mut self, ctx: &EventCtx<'_, '_>, out: &mut Vec<Alert>) {
                match self {
                    $(AnyDetector::$variant(d) => d.on_event(ctx, out),)+
                }
            }

            pub fn on_watermark(&mut self, watermark: i64, out: &mut Vec<Alert>) {
                match self {
                    $(AnyDetector::$variant(d) => d.on_watermark(watermark, out),)+
                }
            }

            pub fn summarizer(&self) -> Option<Box<dyn Summarize>> {
                match self {
                    $(AnyDetector::$variant(d) => d.summarizer(),)+
                }
            }

            pub fn on_beat(&mut self, beat: &Beat<'_>, out: &mut Vec<Alert>) {
                match self {
                    $(AnyDetector::$variant(d) => d.on_beat(beat, out),)+
                }
            }

            pub fn on_region(&mut self, region: &RegionSeen<'_>) {
                match self {
                    $(AnyDetector::$variant(d) => d.on_region(region),)+
                }
            }

            pub fn stats(&self) -> DetectorStats {
                match self {
                    $(AnyDetector::$variant(d) => d.stats(),)+
                }
            }

            pub fn track_changes(&mut self) {
                match self {
                    $(AnyDetector::$variant(d) => d.track_changes(),)+
                }
            }

            pub fn checkpoint(&mut self, out: &mut Vec<Entry>) {
                match self {
                    $(AnyDetector::$variant(d) => d.checkpoint(out),)+
                }
            }

            pub fn restore(&mut self, table: u8, key: u64, bytes: &[u8]) -> Result<(), StateError> {
                match self {
                    $(AnyDetector::$variant(d) => d.restore(table, key, bytes),)+
                }
            }
        }
    };
}

// The registry. APPEND ONLY: a detector's index (its position) is persisted: the state entry's
// detector byte, the changelog record key, the snapshot file and the repartition `DetectorSet`
// bits all carry it. Never move, remove or reuse a line; a retired detector keeps its slot.
// `tests/it/registry.rs` (`persisted_indices_are_pinned`) holds the shipped list.
registry! {
    0 log_disable: LogDisable = log_disable::LogDisable,
    1 log_source_silence: LogSourceSilence = log_source_silence::LogSourceSilence,
    2 secret_fetch_rate: SecretFetchRate = secret_fetch_rate::SecretFetchRate,
    3 discovery_burst: DiscoveryBurst = discovery_burst::DiscoveryBurst,
    4 quota_change: QuotaChange = quota_change::QuotaChange,
    5 tenant_settings: TenantSettings = per_event::TenantSettings,
    6 event_trigger: EventTrigger = per_event::EventTrigger,
    7 impair_defenses: ImpairDefenses = per_event::ImpairDefenses,
    8 conditional_access: ConditionalAccess = per_event::ConditionalAccess,
    9 serverless: Serverless = per_event::Serverless,
}

// A DetectorSet holds one bit per detector.
const _: () = assert!(DETECTOR_NAMES.len() <= 16, "DetectorSet is a u16");

/// Position of a detector name in [`DETECTOR_NAMES`].
pub fn detector_index(name: &str) -> usize {
    DETECTOR_NAMES
        .iter()
        .position(|n| *n == name)
        .expect("every detector is registered")
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

#[cfg(test)]
mod tests {
    use super::*;

    fn all_enabled() -> Vec<AnyDetector> {
        let sections = DetectorsConfig::default();
        build(&sections, &Shared { evidence_ring: 16 })
    }

    #[test]
    fn every_detector_is_built_by_default_and_named_by_its_slot() {
        let built = all_enabled();
        assert_eq!(built.len(), DETECTOR_NAMES.len());
        for (position, d) in built.iter().enumerate() {
            assert_eq!(d.index(), position);
            assert_eq!(d.name(), DETECTOR_NAMES[position]);
        }
    }

    #[test]
    fn scope_keyed_is_every_scope_routed_detector() {
        for d in all_enabled() {
            assert_eq!(scope_keyed().has(d.index()), d.route() == Route::Scope);
        }
    }

    /// The shipped detectors (a detector appended to the registry needs no line here).
    #[test]
    fn behaviours_routes_and_lateness_are_as_shipped() {
        let described: Vec<(&str, Behaviour, Route, bool)> = all_enabled()
            .iter()
            .map(|d| (d.name(), d.behaviour(), d.route(), d.late_events()))
            .collect();
        assert_eq!(
            described[..10],
            [
                ("log_disable", Behaviour::LogDisable, Route::Scope, true),
                (
                    "log_source_silence",
                    Behaviour::LogDisable,
                    Route::Scope,
                    false
                ),
                (
                    "secret_fetch_rate",
                    Behaviour::SecretFetch,
                    Route::Principal,
                    false
                ),
                (
                    "discovery_burst",
                    Behaviour::Discovery,
                    Route::Principal,
                    false
                ),
                ("quota_change", Behaviour::QuotaChange, Route::Scope, false),
                (
                    "tenant_settings",
                    Behaviour::TenantSettings,
                    Route::Principal,
                    true
                ),
                (
                    "event_trigger",
                    Behaviour::EventTrigger,
                    Route::Principal,
                    true
                ),
                (
                    "impair_defenses",
                    Behaviour::ImpairDefenses,
                    Route::Principal,
                    true
                ),
                (
                    "conditional_access",
                    Behaviour::ConditionalAccess,
                    Route::Principal,
                    true
                ),
                ("serverless", Behaviour::Serverless, Route::Principal, true),
            ]
        );
    }

    #[test]
    fn silence_and_quota_summarise_in_stage_1() {
        let with: Vec<&str> = all_enabled()
            .iter()
            .filter(|d| d.index() < 10 && d.summarizer().is_some())
            .map(|d| d.name())
            .collect();
        assert_eq!(with, ["log_source_silence", "quota_change"]);
    }
}
