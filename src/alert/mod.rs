//! Alerts (`alert.v1`, named after OCSF Detection Finding, class 2004), their ATT&CK enrichment,
//! the evidence ring that supplies samples, and suppression.
//!
//! Detectors build an [`Alert`] with what tripped them; [`Alert::new`] fills the constant parts
//! and a deterministic id (the same detection gets the same id in a live run, a re-run or a
//! replay), `attack` adds tactics for the technique ids, and `suppress` rate-limits per
//! (detector, dedup key) without ever dropping the count; `format` is the one place an alert
//! becomes bytes (an OCSF Detection Finding, `alert.v1` JSON or a text line), for every writer;
//! `ocsf` maps an alert onto OCSF 1.8.0 class 2004.

pub mod attack;
pub mod evidence;
pub mod format;
pub mod ocsf;
pub mod suppress;

use crate::event::time::format_rfc3339_ms;
use serde::{Deserialize, Serialize};

/// The schema tag of a serialized alert.
pub const ALERT_SCHEMA: &str = "alert.v1";

/// OCSF severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Informational,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// OCSF `severity_id`.
    pub fn id(self) -> u8 {
        match self {
            Severity::Informational => 1,
            Severity::Low => 2,
            Severity::Medium => 3,
            Severity::High => 4,
            Severity::Critical => 5,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Informational => "informational",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// One step lower (failed attempts).
    pub fn lower(self) -> Severity {
        match self {
            Severity::Critical => Severity::High,
            Severity::High => Severity::Medium,
            Severity::Medium => Severity::Low,
            Severity::Low | Severity::Informational => Severity::Informational,
        }
    }
}

/// `new` for a detection, `resolved` for the end of a silence episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    New,
    Resolved,
}

/// An ATT&CK technique (id and name); its tactics are listed in the alert's `attack_tactics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Technique {
    pub uid: String,
    pub name: String,
}

/// An ATT&CK tactic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tactic {
    pub uid: String,
    pub name: String,
}

/// What tripped the detector.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    /// Events (or weighted items) counted in the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Distinct items (secrets, operations, regions) in the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distinct_count: Option<u64>,
    /// The absolute threshold crossed, if that was the trigger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// The learned baseline mean (per window) of this key, when warm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_mean: Option<f64>,
    /// The learned baseline standard deviation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_stddev: Option<f64>,
    /// Standard deviations above the baseline mean.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deviation: Option<f64>,
    /// What triggered: `count_threshold`, `distinct_threshold`, `baseline`, `novel_region`,
    /// `region_threshold`, `match`, `novelty`, `silence`, `resumed`.
    pub trigger: String,
    /// Up to `alerts.max_samples` sample values (secret ids, operations, regions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<String>,
    /// Up to `alerts.max_samples` source event ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub event_uids: Vec<String>,
    /// Operation(s) involved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operations: Vec<String>,
    /// Free-form facts specific to a detector (request fields, the last log_disable, …).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// One alert (`alert.v1`). See `schemas/alert.v1.schema.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alert {
    /// Always [`ALERT_SCHEMA`].
    pub schema: String,
    /// OCSF Detection Finding: 2004.
    pub class_uid: u32,
    /// "Detection Finding".
    pub class_name: String,
    /// Deterministic: hash of (detector, dedup key, instance, status), where the instance is the
    /// window start, the silence episode (last event before it) or the event id.
    pub id: String,
    /// Event time at which the alert was raised, epoch ms.
    pub time: i64,
    /// `time` as RFC 3339 UTC.
    pub time_dt: String,
    /// The detector that raised it (one of `detect::DETECTOR_NAMES`).
    pub detector: String,
    /// One line a human can act on.
    pub title: String,
    pub severity: Severity,
    /// OCSF `severity_id` of `severity`.
    pub severity_id: u8,
    pub status: AlertStatus,
    /// Raised by a detector in dry-run mode.
    pub dry_run: bool,
    /// ATT&CK tactics of the techniques below.
    pub attack_tactics: Vec<Tactic>,
    /// ATT&CK techniques the catalog (or the detector) assigns.
    pub attack_techniques: Vec<Technique>,
    /// Start of the window the evidence covers, epoch ms.
    pub window_start: i64,
    /// End of the window the evidence covers, epoch ms.
    pub window_end: i64,
    /// OCSF `cloud.provider`.
    pub cloud_provider: String,
    /// The scope (account, project, subscription, tenant, customer).
    pub cloud_account_uid: String,
    pub cloud_region: String,
    /// The principal, when the detection has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_user_uid: Option<String>,
    /// The log source, for silence alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_source: Option<String>,
    pub evidence: Evidence,
    /// Alerts with the same dedup key describe the same ongoing thing.
    pub dedup_key: String,
    /// Alerts for this (detector, key) suppressed since the last one emitted.
    pub suppressed_count: u64,
    /// The Sigma rule that raised it (detectors `sigma` and `sigma_correlation` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigma: Option<crate::sigma::meta::RuleRef>,
}

/// What a detector provides; the rest is derived.
pub struct AlertDraft<'a> {
    pub detector: &'static str,
    pub title: String,
    pub severity: Severity,
    pub dry_run: bool,
    pub status: AlertStatus,
    pub techniques: &'a [String],
    pub time: i64,
    pub window_start: i64,
    pub window_end: i64,
    pub provider: &'a str,
    pub scope: &'a str,
    pub region: &'a str,
    pub principal: Option<&'a str>,
    pub log_source: Option<String>,
    pub evidence: Evidence,
    /// The key the detector tracks (principal, scope, log source, event).
    pub dedup_key: String,
    /// What makes this detection distinct under its key: the window start, the episode start,
    /// or the event id.
    pub instance: String,
}

impl Alert {
    pub fn new(d: AlertDraft<'_>) -> Alert {
        let id = alert_id(d.detector, &d.dedup_key, &d.instance, d.status);
        let (tactics, techniques) = attack::enrich(d.techniques);
        Alert {
            schema: ALERT_SCHEMA.to_owned(),
            class_uid: 2004,
            class_name: "Detection Finding".to_owned(),
            id,
            time: d.time,
            time_dt: format_rfc3339_ms(d.time),
            detector: d.detector.to_owned(),
            title: d.title,
            severity: d.severity,
            severity_id: d.severity.id(),
            status: d.status,
            dry_run: d.dry_run,
            attack_tactics: tactics,
            attack_techniques: techniques,
            window_start: d.window_start,
            window_end: d.window_end,
            cloud_provider: d.provider.to_owned(),
            cloud_account_uid: d.scope.to_owned(),
            cloud_region: d.region.to_owned(),
            actor_user_uid: d.principal.map(str::to_owned),
            log_source: d.log_source,
            evidence: d.evidence,
            dedup_key: d.dedup_key,
            suppressed_count: 0,
            sigma: None,
        }
    }
}

/// 128-bit deterministic id, hex.
pub fn alert_id(detector: &str, dedup_key: &str, instance: &str, status: AlertStatus) -> String {
    let status = match status {
        AlertStatus::New => "new",
        AlertStatus::Resolved => "resolved",
    };
    let h = xxhash_rust::xxh3::xxh3_128(
        format!("{detector}\u{1f}{dedup_key}\u{1f}{instance}\u{1f}{status}").as_bytes(),
    );
    format!("{h:032x}")
}
