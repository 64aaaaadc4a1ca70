//! Matching detection rules on one event and turning each match into an alert.
//!
//! [`SigmaDetector::evaluate`] is the one place rules meet events: the event's route picks its
//! rules' engine ([`RouteEngine`]), whose candidate index evaluates only the rules the event
//! could match, reading the raw event JSON lazily through [`SigmaEvent`].
//! [`SigmaDetector::match_event`] builds the alerts (`detector = "sigma"`); the caller passes them through the same suppression as the
//! built-in detectors'. For correlations, [`SigmaDetector::evaluate`] hands every match (the
//! rule's stable index and the event) to a callback, and [`SigmaDetector::field_value`] /
//! [`SigmaDetector::hit`] read group-by fields through the same mapping.

use super::event::SigmaEvent;
use super::fields::Route;
use super::hit::Hit;
use super::load::{DetectionRule, RouteEngine, Rules};
use super::meta::{severity, RuleRef};
use crate::alert::{Alert, AlertDraft, AlertStatus, Evidence};
use crate::event::CloudEvent;
use rsigma_eval::{EvaluationResult, ResultBody};
use std::borrow::Cow;
use std::sync::Arc;

pub const DETECTOR: &str = "sigma";

/// Counters: matches per rule (bounded by the rule count), allow-listed matches, events whose
/// raw JSON could not be read.
#[derive(Debug, Clone, Default)]
pub struct SigmaStats {
    pub matches: Vec<u64>,
    pub allowed: u64,
    pub unreadable: u64,
}

impl SigmaStats {
    pub fn matches_total(&self) -> u64 {
        self.matches.iter().sum()
    }
}

pub struct SigmaDetector {
    rules: Arc<Rules>,
    max_matched_fields: usize,
    stats: SigmaStats,
}

impl SigmaDetector {
    pub fn new(rules: Arc<Rules>, max_matched_fields: usize) -> Self {
        let n = rules.detections.len();
        SigmaDetector {
            rules,
            max_matched_fields,
            stats: SigmaStats {
                matches: vec![0; n],
                ..SigmaStats::default()
            },
        }
    }

    /// No rule runs: the engine skips the raw-text bookkeeping.
    pub fn is_off(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    pub fn stats(&self) -> &SigmaStats {
        &self.stats
    }

    /// Evaluates the event's route's running rules on its raw JSON; `on_match` gets the rule
    /// set, each matching rule (its `index` is stable for the loaded set), the event and the
    /// result. Returns the number of matches.
    pub fn evaluate(
        &mut self,
        ev: &CloudEvent<'_>,
        raw: &str,
        mut on_match: impl FnMut(&Rules, &DetectionRule, &SigmaEvent<'_>, &EvaluationResult),
    ) -> usize {
        let Some(route) = Route::of_event(ev) else {
            return 0;
        };
        let (rules, stats) = (&self.rules, &mut self.stats);
        let Some(engine) = rules.engine_of(route) else {
            return 0;
        };
        let sev = SigmaEvent::new(route, raw, ev);
        let results = engine.evaluate(&sev);
        if sev.unreadable() {
            stats.unreadable += 1;
            return 0;
        }
        let mut n = 0;
        for result in &results {
            let Some(rule) = RouteEngine::index_of(result).and_then(|i| rules.get(i)) else {
                continue;
            };
            stats.matches[usize::from(rule.index)] += 1;
            n += 1;
            on_match(rules, rule, &sev, result);
        }
        n
    }

    /// Matches one event and pushes one alert per matching rule (before suppression). Rules
    /// allow-listed for the event's scope are counted, not alerted; rules that only feed
    /// correlations (`generate: false`) raise no alert of their own.
    pub fn match_event(&mut self, ev: &CloudEvent<'_>, raw: &str, out: &mut Vec<Alert>) {
        self.match_event_hits(ev, raw, (0, 0, 0), false, out, &mut Vec::new());
    }

    /// [`Self::match_event`], and one [`Hit`] per (match, correlation that consumes it) into
    /// `hits`, for the correlation stage. `origin` and `late` are the event's.
    pub fn match_event_hits(
        &mut self,
        ev: &CloudEvent<'_>,
        raw: &str,
        origin: (i32, i64, u32),
        late: bool,
        out: &mut Vec<Alert>,
        hits: &mut Vec<Hit<'static>>,
    ) {
        let max = self.max_matched_fields;
        let mut allowed = 0;
        self.evaluate(ev, raw, |rules, rule, sev, result| {
            for c in rules.consumers(rule.index) {
                let hit = hit_of(
                    c.correlation,
                    rule.index,
                    sev,
                    &c.group_by,
                    c.value_field.as_deref(),
                    origin,
                    late,
                );
                hits.push(hit.into_owned());
            }
            if rules.quiet(rule.index) {
                return;
            }
            let scope = ev.cloud_account_uid.as_ref();
            if rule
                .allow_scopes
                .iter()
                .any(|p| crate::config::common::pattern_matches(p, scope))
            {
                allowed += 1;
                return;
            }
            out.push(alert(rule, ev, raw, result, max));
        });
        self.stats.allowed += allowed;
    }
}

/// The [`Hit`] a correlation consumes for a match of rule `detection` (absent group-by fields
/// are empty strings).
fn hit_of<'s>(
    correlation: u16,
    detection: u16,
    event: &'s SigmaEvent<'_>,
    group_by: &[String],
    value_field: Option<&str>,
    origin: (i32, i64, u32),
    late: bool,
) -> Hit<'s> {
    let ev = event.ev;
    Hit {
        correlation,
        detection,
        time: ev.time,
        origin,
        late,
        group: group_by
            .iter()
            .map(|f| event.text(f).unwrap_or(Cow::Borrowed("")))
            .collect(),
        value: value_field.and_then(|f| event.text(f)),
        provider: ev.cloud_provider,
        scope: Cow::Borrowed(ev.cloud_account_uid.as_ref()),
        region: Cow::Borrowed(ev.cloud_region.as_ref()),
        principal: Some(Cow::Borrowed(ev.actor_user_uid.as_ref())),
        event_id: Cow::Borrowed(ev.metadata_uid.as_deref().unwrap_or("")),
        operation: Cow::Borrowed(ev.api_operation.as_ref()),
    }
}

/// The event's id: the provider's, or a hash of its raw text when it has none.
fn event_id(ev: &CloudEvent<'_>, raw: &str) -> String {
    match ev.metadata_uid.as_deref() {
        Some(id) if !id.is_empty() => id.to_owned(),
        _ => format!("{:016x}", xxhash_rust::xxh3::xxh3_64(raw.as_bytes())),
    }
}

fn json_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn alert(
    rule: &DetectionRule,
    ev: &CloudEvent<'_>,
    raw: &str,
    result: &EvaluationResult,
    max_matched: usize,
) -> Alert {
    let event_id = event_id(ev, raw);
    let matched: Vec<(String, String)> = match &result.body {
        ResultBody::Detection(d) => d
            .matched_fields
            .iter()
            .take(max_matched)
            .map(|m| (m.field.clone(), json_text(&m.value)))
            .collect(),
        _ => Vec::new(),
    };
    let mut details = serde_json::Map::new();
    for (f, v) in &matched {
        details.insert(f.clone(), serde_json::Value::String(v.clone()));
    }
    let principal = ev.actor_user_uid.as_ref();
    let mut a = Alert::new(AlertDraft {
        detector: DETECTOR,
        title: rule.title.clone(),
        severity: severity(rule.level),
        dry_run: rule.dry_run,
        status: AlertStatus::New,
        techniques: &rule.techniques,
        time: ev.time,
        window_start: ev.time,
        window_end: ev.time,
        provider: ev.cloud_provider.as_str(),
        scope: &ev.cloud_account_uid,
        region: &ev.cloud_region,
        principal: (!principal.is_empty()).then_some(principal),
        log_source: Some(ev.metadata_log_name.to_string()),
        evidence: Evidence {
            trigger: "match".to_owned(),
            event_uids: vec![event_id.clone()],
            operations: vec![ev.api_operation.to_string()],
            details,
            ..Evidence::default()
        },
        dedup_key: format!(
            "sigma|{}|{}|{}",
            rule.id, ev.cloud_account_uid, ev.actor_user_uid
        ),
        instance: event_id,
    });
    a.sigma = Some(RuleRef {
        id: rule.id.clone(),
        title: rule.title.clone(),
        level: rule.level_text().to_owned(),
        kind: "detection".to_owned(),
        author: rule.author.clone(),
        matched,
    });
    a
}
