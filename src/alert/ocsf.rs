//! An [`Alert`] as an OCSF 1.8.0 Detection Finding (class 2004, category Findings), with the
//! `cloud` and `datetime` profiles: the record a SIEM or Security Lake accepts as it is.
//!
//! The mapping is a pure function of the alert and a small [`OcsfContext`] (the product that
//! writes the finding), so every writer (the Kafka emitter, `replay`) gets the same finding for the
//! same alert, and a later change in a detector only has to put what it knows on the alert.
//! Where each `alert.v1` field goes is the table in README.md ("OCSF output"); what OCSF has no
//! attribute for (the trigger, counts, threshold, baseline, deviation, samples, the dedup key,
//! the detector's details) is kept under `unmapped` with its `alert.v1` name.
//!
//! A silence episode is one finding: its `new` alert is activity Create (status New), its
//! `resolved` alert is activity Close (status Resolved), and both carry the same
//! `finding_info.uid` ([`finding_uid`]); `metadata.uid` stays the alert id, distinct per record.
//!
//! The finding is built as a `serde_json::Value`: alerts are few (after suppression), and a
//! document built in one place reads like the mapping table; `tests/it/ocsf.rs` checks the result
//! against the class resolved from the schema sources.

use super::{alert_id, attack, Alert, AlertStatus, Severity};
use serde_json::{json, Map, Value};

/// The OCSF schema version findings conform to (`metadata.version`).
pub const OCSF_VERSION: &str = "1.8.0";
/// Detection Finding.
pub const CLASS_UID: u32 = 2004;
/// Findings.
pub const CATEGORY_UID: u32 = 2;
/// The ATT&CK version of `attack::enrich`'s table (Enterprise ATT&CK v15).
const ATTACK_VERSION: &str = "15";

/// Who writes the finding (`metadata.product`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OcsfContext {
    pub product_name: String,
    pub vendor_name: String,
    pub product_version: String,
}

impl Default for OcsfContext {
    /// cloudwarden, at the version of this build.
    fn default() -> Self {
        OcsfContext {
            product_name: "cloudwarden".to_owned(),
            vendor_name: "cloudwarden project".to_owned(),
            product_version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

/// OCSF finding `activity_id` and its caption: a detection creates a finding, a resolution
/// (the end of a silence episode) closes it.
pub fn activity(status: AlertStatus) -> (u32, &'static str) {
    match status {
        AlertStatus::New => (1, "Create"),
        AlertStatus::Resolved => (3, "Close"),
    }
}

/// OCSF finding `status_id` and its caption.
pub fn finding_status(status: AlertStatus) -> (u32, &'static str) {
    match status {
        AlertStatus::New => (1, "New"),
        AlertStatus::Resolved => (4, "Resolved"),
    }
}

/// The OCSF `severity` caption of a severity (`severity_id` is [`Severity::id`]).
pub fn severity_caption(s: Severity) -> &'static str {
    match s {
        Severity::Informational => "Informational",
        Severity::Low => "Low",
        Severity::Medium => "Medium",
        Severity::High => "High",
        Severity::Critical => "Critical",
    }
}

/// `finding_info.uid`: the alert id of a detection; for a resolution, the id of the detection
/// it resolves, so Create and Close name one finding. A resolution says which with
/// `evidence.details.finding_uid`; without it the id is derived the way the detection's was:
/// `log_source_silence` names both records of an episode by the episode's start, which is the
/// alert's `window_start`.
pub fn finding_uid(a: &Alert) -> String {
    match a.status {
        AlertStatus::New => a.id.clone(),
        AlertStatus::Resolved => match a.evidence.details.get("finding_uid") {
            Some(Value::String(uid)) => uid.clone(),
            _ => alert_id(
                &a.detector,
                &a.dedup_key,
                &a.window_start.to_string(),
                AlertStatus::New,
            ),
        },
    }
}

/// `finding_info.analytic.type_id` and caption for a trigger.
fn analytic_type(trigger: &str) -> (u32, &'static str) {
    match trigger {
        "baseline" => (3, "Statistical"),
        "novelty" | "novel_region" | "silence" | "resumed" => (2, "Behavioral"),
        // `match` and the count/distinct/region thresholds.
        _ => (1, "Rule"),
    }
}

/// What a detector's `evidence.samples` are: affected resources for most, but
/// `discovery_burst` samples operations and `quota_change` regions (kept under `unmapped`).
fn samples_are_resources(detector: &str) -> bool {
    !matches!(detector, "discovery_burst" | "quota_change")
}

/// The alert as an OCSF Detection Finding.
pub fn to_ocsf(a: &Alert, ctx: &OcsfContext) -> Value {
    let (activity_id, activity_name) = activity(a.status);
    let (status_id, status) = finding_status(a.status);
    let mut f = Map::new();
    f.insert("activity_id".into(), activity_id.into());
    f.insert("activity_name".into(), activity_name.into());
    f.insert("category_uid".into(), CATEGORY_UID.into());
    f.insert("category_name".into(), "Findings".into());
    f.insert("class_uid".into(), CLASS_UID.into());
    f.insert("class_name".into(), "Detection Finding".into());
    f.insert(
        "type_uid".into(),
        (u64::from(CLASS_UID) * 100 + u64::from(activity_id)).into(),
    );
    f.insert(
        "type_name".into(),
        format!("Detection Finding: {activity_name}").into(),
    );
    f.insert("time".into(), a.time.into());
    f.insert("time_dt".into(), a.time_dt.clone().into());
    f.insert("start_time".into(), a.window_start.into());
    f.insert("start_time_dt".into(), dt(a.window_start));
    f.insert("end_time".into(), a.window_end.into());
    f.insert("end_time_dt".into(), dt(a.window_end));
    f.insert("severity_id".into(), a.severity.id().into());
    f.insert("severity".into(), severity_caption(a.severity).into());
    f.insert("status_id".into(), status_id.into());
    f.insert("status".into(), status.into());
    f.insert("message".into(), a.title.clone().into());
    f.insert("is_alert".into(), (a.status == AlertStatus::New).into());
    if let Some(count) = a.evidence.count {
        f.insert("count".into(), count.into());
    }
    f.insert("metadata".into(), metadata(a, ctx));
    f.insert("finding_info".into(), finding_info(a));
    f.insert("cloud".into(), cloud(a));
    let evidences = evidences(a);
    if !evidences.is_empty() {
        f.insert("evidences".into(), evidences.into());
    }
    let resources = resources(a);
    if !resources.is_empty() {
        f.insert("resources".into(), resources.into());
    }
    f.insert("observables".into(), observables(a).into());
    f.insert("unmapped".into(), unmapped(a));
    Value::Object(f)
}

fn dt(ms: i64) -> Value {
    crate::event::time::format_rfc3339_ms(ms).into()
}

fn metadata(a: &Alert, ctx: &OcsfContext) -> Value {
    json!({
        "product": {
            "name": ctx.product_name,
            "vendor_name": ctx.vendor_name,
            "version": ctx.product_version,
        },
        "version": OCSF_VERSION,
        "profiles": ["cloud", "datetime"],
        "uid": a.id,
        "correlation_uid": a.dedup_key,
    })
}

fn finding_info(a: &Alert) -> Value {
    let (type_id, type_caption) = analytic_type(&a.evidence.trigger);
    let mut info = json!({
        "uid": finding_uid(a),
        "title": a.title,
        "analytic": match &a.sigma {
            // A Sigma rule: the rule itself is the analytic.
            Some(rule) => json!({"uid": rule.id, "name": rule.title, "type_id": 1, "type": "Rule"}),
            None => json!({"name": a.detector, "type_id": type_id, "type": type_caption}),
        },
        "first_seen_time": a.window_start,
        "first_seen_time_dt": dt(a.window_start),
        "last_seen_time": a.window_end,
        "last_seen_time_dt": dt(a.window_end),
    });
    let attacks = attacks(a);
    if !attacks.is_empty() {
        info["attacks"] = attacks.into();
    }
    info
}

/// One `attack` per (technique, tactic) pair; a sub-technique (`T1562.008`) names its parent as
/// `technique` and itself as `sub_technique`.
fn attacks(a: &Alert) -> Vec<Value> {
    let mut out = Vec::new();
    for t in &a.attack_techniques {
        let (tactics, _) = attack::enrich(std::slice::from_ref(&t.uid));
        let mut entry = Map::new();
        entry.insert("version".into(), ATTACK_VERSION.into());
        match t.uid.split_once('.') {
            Some((parent, _)) => {
                let (parent_name, sub_name) = t.name.split_once(": ").unwrap_or(("", &t.name));
                entry.insert("technique".into(), entity(parent, parent_name));
                entry.insert("sub_technique".into(), entity(&t.uid, sub_name));
            }
            None => {
                entry.insert("technique".into(), entity(&t.uid, &t.name));
            }
        }
        for tactic in &tactics {
            let mut e = entry.clone();
            e.insert("tactic".into(), entity(&tactic.uid, &tactic.name));
            out.push(Value::Object(e));
        }
        if tactics.is_empty() {
            out.push(Value::Object(entry));
        }
    }
    out
}

/// `{uid, name}`, without an empty name (an unknown technique keeps its id).
fn entity(uid: &str, name: &str) -> Value {
    if name.is_empty() {
        json!({ "uid": uid })
    } else {
        json!({ "uid": uid, "name": name })
    }
}

/// `cloud.provider` as OCSF producers write it (Security Lake: `AWS`); providers without a
/// common spelling keep cloudwarden's name.
pub fn provider_name(provider: &str) -> &str {
    match provider {
        "aws" => "AWS",
        "gcp" => "GCP",
        "azure" => "Azure",
        other => other,
    }
}

fn cloud(a: &Alert) -> Value {
    json!({
        "provider": provider_name(&a.cloud_provider),
        "region": a.cloud_region,
        "account": {"uid": a.cloud_account_uid},
    })
}

/// One evidence per sampled source event (`uid` = the event id), with the principal, the
/// operation when the alert has one, and, for a single-event alert, the source IP, user agent,
/// response error and request fields its details carry.
fn evidences(a: &Alert) -> Vec<Value> {
    let ev = &a.evidence;
    let single = ev.event_uids.len() <= 1;
    let operation = match ev.operations.as_slice() {
        [op] if single || samples_are_resources(&a.detector) => Some(op),
        _ => None,
    };
    let detail = |k: &str| ev.details.get(k).and_then(Value::as_str);
    let mut template = Map::new();
    if let Some(principal) = &a.actor_user_uid {
        template.insert("actor".into(), json!({"user": {"uid": principal}}));
    }
    if let Some(op) = operation {
        let mut api = json!({ "operation": op });
        if single {
            if let Some(code) = detail("status_code") {
                api["response"] = json!({ "error": code });
            }
        }
        template.insert("api".into(), api);
    }
    if single {
        if let Some(endpoint) = detail("src_endpoint_ip").and_then(src_endpoint) {
            template.insert("src_endpoint".into(), endpoint);
        }
        if let Some(ua) = detail("user_agent") {
            template.insert("http_request".into(), json!({ "user_agent": ua }));
        }
        if let Some(request) = ev.details.get("request") {
            template.insert("data".into(), json!({ "request": request }));
        }
        if samples_are_resources(&a.detector) && !ev.samples.is_empty() {
            let res: Vec<Value> = ev.samples.iter().map(|s| json!({ "uid": s })).collect();
            template.insert("resources".into(), res.into());
        }
    }
    if template.is_empty() {
        // OCSF wants at least one of actor, api, resources, … in an evidence; an event id alone
        // stays in `unmapped.event_uids`.
        return Vec::new();
    }
    if ev.event_uids.is_empty() {
        return vec![Value::Object(template)];
    }
    ev.event_uids
        .iter()
        .map(|uid| {
            let mut e = template.clone();
            e.insert("uid".into(), uid.clone().into());
            Value::Object(e)
        })
        .collect()
}

/// The caller's endpoint: an IP address as `ip`; a service principal's name (CloudTrail writes
/// `lambda.amazonaws.com` where a service called) as `svc_name`; anything else (the anonymised
/// `08.1.250.216` of some public logs, which no IP parser accepts) stays in `unmapped` only.
fn src_endpoint(value: &str) -> Option<Value> {
    if value.parse::<std::net::IpAddr>().is_ok() {
        Some(json!({ "ip": value }))
    } else if value.bytes().any(|b| b.is_ascii_alphabetic()) && !value.contains(':') {
        Some(json!({ "svc_name": value }))
    } else {
        None
    }
}

/// The affected resources: the samples of detectors whose samples are resources, and the silent
/// log source.
fn resources(a: &Alert) -> Vec<Value> {
    let mut out = Vec::new();
    if samples_are_resources(&a.detector) {
        for s in &a.evidence.samples {
            out.push(json!({ "uid": s, "region": a.cloud_region }));
        }
    }
    if let Some(source) = &a.log_source {
        out.push(json!({ "uid": source, "type": "log_source", "region": a.cloud_region }));
    }
    out
}

/// The principal (User: uid, 31), source IPs (IP Address, 2) and the account (Account: uid, 35).
fn observables(a: &Alert) -> Vec<Value> {
    let mut out = Vec::new();
    if let Some(principal) = &a.actor_user_uid {
        out.push(json!({"name": "evidences.actor.user.uid", "type_id": 31, "value": principal}));
    }
    if a.evidence.event_uids.len() <= 1 {
        let ip = a.evidence.details.get("src_endpoint_ip");
        if let Some(ip) = ip
            .and_then(Value::as_str)
            .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok())
        {
            out.push(json!({"name": "evidences.src_endpoint.ip", "type_id": 2, "value": ip}));
        }
    }
    out.push(json!({"name": "cloud.account.uid", "type_id": 35, "value": a.cloud_account_uid}));
    out
}

/// What OCSF has no attribute for, under its `alert.v1` name.
fn unmapped(a: &Alert) -> Value {
    let ev = &a.evidence;
    let mut u = Map::new();
    u.insert("schema".into(), super::ALERT_SCHEMA.into());
    u.insert("detector".into(), a.detector.clone().into());
    u.insert("trigger".into(), ev.trigger.clone().into());
    let numbers = [
        ("count", ev.count.map(Value::from)),
        ("distinct_count", ev.distinct_count.map(Value::from)),
        ("threshold", ev.threshold.map(Value::from)),
        ("baseline_mean", ev.baseline_mean.map(Value::from)),
        ("baseline_stddev", ev.baseline_stddev.map(Value::from)),
        ("deviation", ev.deviation.map(Value::from)),
    ];
    for (k, v) in numbers {
        if let Some(v) = v {
            u.insert(k.into(), v);
        }
    }
    let lists = [
        ("samples", &ev.samples),
        ("event_uids", &ev.event_uids),
        ("operations", &ev.operations),
    ];
    for (k, v) in lists {
        if !v.is_empty() {
            u.insert(k.into(), v.clone().into());
        }
    }
    if !ev.details.is_empty() {
        u.insert("details".into(), Value::Object(ev.details.clone()));
    }
    if let Some(source) = &a.log_source {
        u.insert("log_source".into(), source.clone().into());
    }
    u.insert("dedup_key".into(), a.dedup_key.clone().into());
    u.insert("suppressed_count".into(), a.suppressed_count.into());
    u.insert("dry_run".into(), a.dry_run.into());
    Value::Object(u)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{AlertDraft, Evidence};

    fn alert(status: AlertStatus, detector: &'static str, evidence: Evidence) -> Alert {
        Alert::new(AlertDraft {
            detector,
            title: "t".into(),
            severity: Severity::High,
            dry_run: false,
            status,
            techniques: &["T1562.008".into(), "T1526".into(), "T0000".into()],
            time: 1_767_229_800_000,
            window_start: 1_767_228_000_000,
            window_end: 1_767_229_800_000,
            provider: "aws",
            scope: "222222222222",
            region: "us-east-1",
            principal: Some("arn:aws:iam::222222222222:user/mallory"),
            log_source: None,
            evidence,
            dedup_key: "k".into(),
            instance: "1767228000000".into(),
        })
    }

    fn single_event() -> Evidence {
        let mut details = Map::new();
        details.insert("src_endpoint_ip".into(), "203.0.113.10".into());
        details.insert("user_agent".into(), "aws-cli/2.15.0".into());
        details.insert("request".into(), json!({"trail_name": "org-trail"}));
        Evidence {
            count: Some(1),
            trigger: "match".into(),
            samples: vec!["org-trail".into()],
            event_uids: vec!["e-1".into()],
            operations: vec!["StopLogging".into()],
            details,
            ..Evidence::default()
        }
    }

    #[test]
    fn classification_and_captions() {
        let f = to_ocsf(
            &alert(AlertStatus::New, "log_disable", single_event()),
            &OcsfContext::default(),
        );
        assert_eq!(f["class_uid"], 2004);
        assert_eq!(f["category_uid"], 2);
        assert_eq!(f["activity_id"], 1);
        assert_eq!(f["type_uid"], 200401);
        assert_eq!(f["type_name"], "Detection Finding: Create");
        assert_eq!(
            (f["severity_id"].clone(), f["severity"].clone()),
            (json!(4), json!("High"))
        );
        assert_eq!(
            (f["status_id"].clone(), f["status"].clone()),
            (json!(1), json!("New"))
        );
        assert_eq!(f["metadata"]["version"], OCSF_VERSION);
        assert_eq!(f["metadata"]["product"]["name"], "cloudwarden");
        assert_eq!(
            f["metadata"]["product"]["version"],
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(f["metadata"]["profiles"], json!(["cloud", "datetime"]));
        assert_eq!(
            f["cloud"],
            json!({"provider": "AWS", "region": "us-east-1", "account": {"uid": "222222222222"}})
        );
        assert_eq!(f["start_time"], 1_767_228_000_000i64);
        assert_eq!(f["end_time_dt"], "2026-01-01T01:10:00.000Z");
        assert_eq!(
            f["finding_info"]["analytic"],
            json!({"name": "log_disable", "type_id": 1, "type": "Rule"})
        );
        assert_eq!(f["is_alert"], true);
    }

    #[test]
    fn attacks_split_sub_techniques_and_keep_unknown_ids() {
        let f = to_ocsf(
            &alert(AlertStatus::New, "log_disable", single_event()),
            &OcsfContext::default(),
        );
        let attacks = f["finding_info"]["attacks"].as_array().unwrap();
        assert_eq!(attacks.len(), 3, "{attacks:?}");
        assert_eq!(
            attacks[0]["technique"],
            json!({"uid": "T1562", "name": "Impair Defenses"})
        );
        assert_eq!(
            attacks[0]["sub_technique"],
            json!({"uid": "T1562.008", "name": "Disable or Modify Cloud Logs"})
        );
        assert_eq!(
            attacks[0]["tactic"],
            json!({"uid": "TA0005", "name": "Defense Evasion"})
        );
        assert_eq!(attacks[1]["technique"]["uid"], "T1526");
        assert!(attacks[1].get("sub_technique").is_none());
        assert_eq!(attacks[1]["tactic"]["uid"], "TA0007");
        assert_eq!(
            attacks[2],
            json!({"version": "15", "technique": {"uid": "T0000"}})
        );
    }

    #[test]
    fn single_event_evidence_and_observables() {
        let f = to_ocsf(
            &alert(AlertStatus::New, "log_disable", single_event()),
            &OcsfContext::default(),
        );
        assert_eq!(
            f["evidences"],
            json!([{
                "uid": "e-1",
                "actor": {"user": {"uid": "arn:aws:iam::222222222222:user/mallory"}},
                "api": {"operation": "StopLogging"},
                "src_endpoint": {"ip": "203.0.113.10"},
                "http_request": {"user_agent": "aws-cli/2.15.0"},
                "data": {"request": {"trail_name": "org-trail"}},
                "resources": [{"uid": "org-trail"}],
            }])
        );
        assert_eq!(
            f["resources"],
            json!([{"uid": "org-trail", "region": "us-east-1"}])
        );
        let obs: Vec<(&str, i64)> = f["observables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| (o["name"].as_str().unwrap(), o["type_id"].as_i64().unwrap()))
            .collect();
        assert_eq!(
            obs,
            [
                ("evidences.actor.user.uid", 31),
                ("evidences.src_endpoint.ip", 2),
                ("cloud.account.uid", 35)
            ]
        );
        assert_eq!(f["count"], 1);
    }

    #[test]
    fn only_an_ip_address_is_an_ip() {
        assert_eq!(
            src_endpoint("2001:db8::1"),
            Some(json!({"ip": "2001:db8::1"}))
        );
        assert_eq!(
            src_endpoint("lambda.amazonaws.com"),
            Some(json!({"svc_name": "lambda.amazonaws.com"}))
        );
        assert_eq!(src_endpoint("08.1.250.216"), None);
        let mut ev = single_event();
        ev.details
            .insert("src_endpoint_ip".into(), "08.1.250.216".into());
        let f = to_ocsf(
            &alert(AlertStatus::New, "log_disable", ev),
            &OcsfContext::default(),
        );
        assert!(f["evidences"][0].get("src_endpoint").is_none());
        assert_eq!(
            f["observables"].as_array().unwrap().len(),
            2,
            "principal and account"
        );
        assert_eq!(f["unmapped"]["details"]["src_endpoint_ip"], "08.1.250.216");
    }

    #[test]
    fn counts_threshold_baseline_and_deviation_are_unmapped() {
        let ev = Evidence {
            count: Some(11),
            distinct_count: Some(4),
            threshold: Some(10.0),
            baseline_mean: Some(2.7),
            baseline_stddev: Some(1.0),
            deviation: Some(8.3),
            trigger: "baseline".into(),
            samples: vec!["app/s0".into()],
            event_uids: vec!["e-1".into(), "e-2".into()],
            operations: vec!["GetSecretValue".into()],
            ..Evidence::default()
        };
        let f = to_ocsf(
            &alert(AlertStatus::New, "secret_fetch_rate", ev),
            &OcsfContext::default(),
        );
        let u = &f["unmapped"];
        for (k, v) in [
            ("count", json!(11)),
            ("distinct_count", json!(4)),
            ("threshold", json!(10.0)),
            ("baseline_mean", json!(2.7)),
            ("baseline_stddev", json!(1.0)),
            ("deviation", json!(8.3)),
            ("trigger", json!("baseline")),
            ("detector", json!("secret_fetch_rate")),
        ] {
            assert_eq!(u[k], v, "{k}");
        }
        assert_eq!(f["finding_info"]["analytic"]["type"], "Statistical");
        let evidences = f["evidences"].as_array().unwrap();
        assert_eq!(evidences.len(), 2, "one per sampled event");
        assert_eq!(evidences[1]["uid"], "e-2");
        assert_eq!(evidences[1]["api"]["operation"], "GetSecretValue");
        assert!(
            evidences[1].get("resources").is_none(),
            "samples are not per event"
        );
    }

    #[test]
    fn a_resolution_closes_the_finding_its_detection_created() {
        let silence = Evidence {
            trigger: "silence".into(),
            ..Evidence::default()
        };
        let resumed = Evidence {
            trigger: "resumed".into(),
            ..Evidence::default()
        };
        let created = alert(AlertStatus::New, "log_source_silence", silence);
        let closed = alert(AlertStatus::Resolved, "log_source_silence", resumed);
        assert_ne!(created.id, closed.id);
        let (c, r) = (
            to_ocsf(&created, &OcsfContext::default()),
            to_ocsf(&closed, &OcsfContext::default()),
        );
        assert_eq!(c["finding_info"]["uid"], json!(created.id));
        assert_eq!(r["finding_info"]["uid"], c["finding_info"]["uid"]);
        assert_eq!(r["metadata"]["uid"], json!(closed.id));
        assert_eq!(
            (r["activity_id"].clone(), r["type_uid"].clone()),
            (json!(3), json!(200403))
        );
        assert_eq!(
            (r["status_id"].clone(), r["status"].clone()),
            (json!(4), json!("Resolved"))
        );
        assert_eq!(r["is_alert"], false);

        let mut told = closed.clone();
        told.evidence
            .details
            .insert("finding_uid".into(), "explicit".into());
        assert_eq!(finding_uid(&told), "explicit");
    }
}
