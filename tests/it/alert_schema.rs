//! The JSON Schema of `Alert` v1 (`schemas/alert.v1.schema.json`) against the struct: the golden
//! alerts and the demo's alerts validate, the schema's fields, required lists and enums are
//! exactly what serde writes, and documents the engine never writes are refused.

use crate::util::fixture;
use cloudwarden::alert::{Alert, AlertDraft, AlertStatus, Evidence, Severity, ALERT_SCHEMA};
use cloudwarden::detect::DETECTOR_NAMES;
use cloudwarden::event::Provider;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

fn schema() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemas/alert.v1.schema.json");
    let text = std::fs::read_to_string(&path).expect("schema file");
    serde_json::from_str(&text).expect("schema is JSON")
}

fn validator() -> jsonschema::Validator {
    jsonschema::validator_for(&schema()).expect("schema compiles")
}

/// Schema errors of `doc`, one string each (empty when valid).
fn errors(v: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    v.iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect()
}

const SEVERITIES: [Severity; 5] = [
    Severity::Informational,
    Severity::Low,
    Severity::Medium,
    Severity::High,
    Severity::Critical,
];

/// An alert with every optional field (of the alert and of its evidence) set.
fn full_alert() -> Alert {
    let techniques = [
        "T1562.008".to_owned(),
        "T1556.009".to_owned(),
        "T9999".to_owned(),
    ];
    let mut details = serde_json::Map::new();
    details.insert("request".into(), json!({"trail_name": "trail-a"}));
    details.insert("status".into(), json!("success"));
    let mut alert = Alert::new(AlertDraft {
        detector: "log_source_silence",
        title: "Log source silent: aws/143434273843/cloudtrail".to_owned(),
        severity: Severity::Critical,
        dry_run: true,
        status: AlertStatus::Resolved,
        techniques: &techniques,
        time: 1_722_431_184_000,
        window_start: 1_722_430_000_000,
        window_end: 1_722_431_184_000,
        provider: Provider::Aws.as_str(),
        scope: "143434273843",
        region: "us-east-1",
        principal: Some("arn:aws:iam::143434273843:user/christophe"),
        log_source: Some("aws/143434273843/cloudtrail".to_owned()),
        evidence: Evidence {
            count: Some(42),
            distinct_count: Some(7),
            threshold: Some(20.0),
            baseline_mean: Some(3.5),
            baseline_stddev: Some(1.25),
            deviation: Some(30.8),
            trigger: "baseline".to_owned(),
            samples: vec!["secret-a".to_owned(), "secret-b".to_owned()],
            event_uids: vec!["10163ed2-2253-469d-a5ee-cbc6651f8934".to_owned()],
            operations: vec!["GetSecretValue".to_owned()],
            details,
        },
        dedup_key: "aws/143434273843/cloudtrail".to_owned(),
        instance: "1722430000000".to_owned(),
    });
    alert.sigma = Some(cloudwarden::sigma::meta::RuleRef {
        id: "4db60cc0-36fb-4c7f-8d5e-2b4ca7f27b1a".to_owned(),
        title: "AWS CloudTrail Important Change".to_owned(),
        level: "medium".to_owned(),
        kind: "detection".to_owned(),
        author: Some("vitaliy0x1".to_owned()),
        matched: vec![("eventName".to_owned(), "StopLogging".to_owned())],
    });
    alert
}

/// An alert with every optional field left out.
fn minimal_alert(severity: Severity) -> Alert {
    Alert::new(AlertDraft {
        detector: "discovery_burst",
        title: "t".to_owned(),
        severity,
        dry_run: false,
        status: AlertStatus::New,
        techniques: &[],
        time: 0,
        window_start: 0,
        window_end: 0,
        provider: Provider::Gcp.as_str(),
        scope: "p",
        region: "global",
        principal: None,
        log_source: None,
        evidence: Evidence {
            trigger: "distinct_threshold".to_owned(),
            ..Evidence::default()
        },
        dedup_key: "k".to_owned(),
        instance: "0".to_owned(),
    })
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().expect("object").keys().cloned().collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_str().expect("string").to_owned())
        .collect()
}

fn set(v: &Value) -> BTreeSet<String> {
    strings(v).into_iter().collect()
}

/// Serialized name of a unit enum variant.
fn name<T: serde::Serialize>(x: T) -> String {
    serde_json::to_value(x)
        .unwrap()
        .as_str()
        .expect("serializes as a string")
        .to_owned()
}

#[test]
fn golden_alerts_validate() {
    let v = validator();
    let mut alerts = 0;
    for detector in DETECTOR_NAMES {
        let rel = format!("{detector}/expected.ndjson");
        let text = std::fs::read_to_string(fixture(&rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        let mut n_detector = 0;
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let doc: Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{rel}:{}: {e}", n + 1));
            let errs = errors(&v, &doc);
            assert!(errs.is_empty(), "{rel}:{}: {errs:#?}\n{doc:#}", n + 1);
            assert_eq!(doc["detector"], json!(detector), "{rel}:{}", n + 1);
            // And the struct reads it back to the same document.
            let alert: Alert =
                serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{rel}: {e}"));
            assert_eq!(
                serde_json::to_value(&alert).unwrap(),
                doc,
                "{rel}:{}",
                n + 1
            );
            n_detector += 1;
        }
        assert!(n_detector > 0, "{rel} has no alerts");
        alerts += n_detector;
    }
    assert!(alerts >= DETECTOR_NAMES.len());
}

#[test]
fn demo_alerts_validate() {
    let out = Command::new(env!("CARGO_BIN_EXE_cloudwarden"))
        .args(["demo", "--json"])
        .output()
        .expect("run cloudwarden demo");
    assert!(
        out.status.success(),
        "demo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("UTF-8 output");
    let v = validator();
    let mut alerts = 0;
    let mut detectors = BTreeSet::new();
    for (n, line) in stdout.lines().enumerate() {
        let doc: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("line {}: {e}: {line}", n + 1));
        let errs = errors(&v, &doc);
        assert!(errs.is_empty(), "demo alert {}: {errs:#?}\n{doc:#}", n + 1);
        detectors.insert(doc["detector"].as_str().unwrap().to_owned());
        alerts += 1;
    }
    assert!(alerts > 0, "the demo raised no alerts");
    assert!(detectors.len() > 1, "the demo exercised one detector only");
}

#[test]
fn full_and_minimal_alerts_validate() {
    let v = validator();
    let mut docs = vec![serde_json::to_value(full_alert()).unwrap()];
    docs.extend(SEVERITIES.map(|s| serde_json::to_value(minimal_alert(s)).unwrap()));
    for doc in docs {
        assert_eq!(errors(&v, &doc), Vec::<String>::new(), "{doc:#}");
    }
}

/// The schema names exactly the fields serde writes, requires exactly the ones it always writes,
/// and its enums and constants are exactly what the code writes.
#[test]
fn schema_matches_struct() {
    let schema = schema();
    let props = &schema["properties"];
    let ev_props = &props["evidence"]["properties"];
    let tactic = &props["attack_tactics"]["items"];
    let technique = &props["attack_techniques"]["items"];
    let full = serde_json::to_value(full_alert()).unwrap();
    assert!(!full["attack_tactics"].as_array().unwrap().is_empty());

    assert_eq!(keys(props), keys(&full), "top-level properties");
    assert_eq!(
        keys(ev_props),
        keys(&full["evidence"]),
        "evidence properties"
    );
    assert_eq!(
        keys(&tactic["properties"]),
        keys(&full["attack_tactics"][0]),
        "tactic properties"
    );
    assert_eq!(
        keys(&technique["properties"]),
        keys(&full["attack_techniques"][0]),
        "technique properties"
    );

    let minimal = serde_json::to_value(minimal_alert(Severity::Low)).unwrap();
    assert_eq!(set(&schema["required"]), keys(&minimal), "required");
    assert_eq!(
        set(&props["evidence"]["required"]),
        keys(&minimal["evidence"]),
        "evidence required"
    );
    assert_eq!(set(&tactic["required"]), keys(&tactic["properties"]));
    assert_eq!(set(&technique["required"]), keys(&technique["properties"]));

    // Enums.
    let mut detectors: Vec<&str> = DETECTOR_NAMES.to_vec();
    detectors.extend(["sigma", "sigma_correlation"]);
    assert_eq!(strings(&props["detector"]["enum"]), detectors);
    let severities: Vec<String> = SEVERITIES.iter().map(name).collect();
    assert_eq!(strings(&props["severity"]["enum"]), severities);
    for s in SEVERITIES {
        assert_eq!(name(s), s.as_str());
    }
    let statuses: Vec<String> = [AlertStatus::New, AlertStatus::Resolved]
        .iter()
        .map(name)
        .collect();
    assert_eq!(strings(&props["status"]["enum"]), statuses);
    let providers: BTreeSet<String> = Provider::ALL
        .iter()
        .map(|p| p.as_str().to_owned())
        .collect();
    assert_eq!(set(&props["cloud_provider"]["enum"]), providers);
    assert_eq!(
        strings(&ev_props["trigger"]["enum"]),
        documented_triggers(),
        "evidence.trigger enum = the triggers documented on `Evidence::trigger`"
    );

    // Constants are what `Alert::new` writes.
    assert_eq!(props["schema"]["const"], json!(ALERT_SCHEMA));
    assert_eq!(props["schema"]["const"], full["schema"]);
    assert_eq!(props["class_uid"]["const"], full["class_uid"]);
    assert_eq!(props["class_name"]["const"], full["class_name"]);
    assert_eq!(
        schema["$schema"],
        json!("https://json-schema.org/draft/2020-12/schema")
    );
    assert!(schema["description"]
        .as_str()
        .unwrap()
        .contains("Detection Finding"));
    assert!(schema["description"].as_str().unwrap().contains("2004"));

    // Closed everywhere except `evidence.details`.
    for (what, obj) in [
        ("alert", &schema),
        ("evidence", &props["evidence"]),
        ("tactic", tactic),
        ("technique", technique),
    ] {
        assert_eq!(obj["additionalProperties"], json!(false), "{what}");
    }
    assert_eq!(ev_props["details"]["type"], json!("object"));
    assert!(ev_props["details"].get("additionalProperties").is_none());
    assert!(ev_props["details"].get("properties").is_none());

    // Every property documents itself.
    for obj in [
        props,
        ev_props,
        &tactic["properties"],
        &technique["properties"],
    ] {
        for (name, p) in obj.as_object().unwrap() {
            let d = p["description"].as_str().unwrap_or("");
            assert!(!d.trim().is_empty(), "property `{name}` has no description");
        }
    }
}

/// The backquoted names in the doc comment of `Evidence::trigger` in src/alert/mod.rs.
fn documented_triggers() -> Vec<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/alert/mod.rs");
    let src = std::fs::read_to_string(path).expect("src/alert/mod.rs");
    let lines: Vec<&str> = src.lines().map(str::trim).collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("pub trigger:"))
        .expect("Evidence::trigger");
    let mut doc = Vec::new();
    for l in lines[..at].iter().rev() {
        match l.strip_prefix("///") {
            Some(d) => doc.push(d),
            None => break,
        }
    }
    doc.reverse();
    doc.join(" ")
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// `severity_id` is the id of `severity`, and nothing else.
#[test]
fn severity_id_must_match_severity() {
    let v = validator();
    for s in SEVERITIES {
        let base = serde_json::to_value(minimal_alert(s)).unwrap();
        assert_eq!(base["severity_id"], json!(s.id()));
        for id in 0..=6u8 {
            let mut doc = base.clone();
            doc["severity_id"] = json!(id);
            assert_eq!(
                v.is_valid(&doc),
                id == s.id(),
                "severity {} with severity_id {id}",
                s.as_str()
            );
        }
    }
}

#[test]
fn unknown_properties_are_rejected() {
    let v = validator();
    let base = serde_json::to_value(full_alert()).unwrap();
    assert!(v.is_valid(&base));

    let cases: [(&str, &[&str]); 4] = [
        ("top level", &[]),
        ("evidence", &["evidence"]),
        ("tactic", &["attack_tactics", "0"]),
        ("technique", &["attack_techniques", "0"]),
    ];
    for (what, path) in cases {
        let mut doc = base.clone();
        let mut target = &mut doc;
        for p in path {
            target = match p.parse::<usize>() {
                Ok(i) => &mut target[i],
                Err(_) => &mut target[*p],
            };
        }
        target["finding_uid"] = json!("x");
        assert!(!v.is_valid(&doc), "{what}: extra property accepted");
    }

    // `evidence.details` is free-form.
    let mut doc = base.clone();
    doc["evidence"]["details"]["anything"] = json!({"nested": [1, null, "x"]});
    assert_eq!(errors(&v, &doc), Vec::<String>::new());
}

/// Breaks one thing in a valid document.
type Mutation = fn(&mut Value);

/// Documents the engine never writes are refused.
#[test]
fn schema_rejects_invalid_documents() {
    let v = validator();
    let base = serde_json::to_value(full_alert()).unwrap();
    assert_eq!(errors(&v, &base), Vec::<String>::new());
    let cases: [(&str, Mutation); 16] = [
        ("schema v2", |d| d["schema"] = json!("alert.v2")),
        ("class_uid", |d| d["class_uid"] = json!(2003)),
        ("class_name", |d| d["class_name"] = json!("Finding")),
        ("id uppercase", |d| {
            d["id"] = json!("0123456789ABCDEF0123456789ABCDEF")
        }),
        ("id short", |d| d["id"] = json!("0123456789abcdef")),
        ("time fractional", |d| d["time"] = json!(1.5)),
        ("time_dt no millis", |d| {
            d["time_dt"] = json!("2024-07-31T13:06:24Z")
        }),
        ("unknown detector", |d| d["detector"] = json!("brute_force")),
        ("unknown status", |d| d["status"] = json!("open")),
        ("optional as null", |d| d["actor_user_uid"] = Value::Null),
        ("evidence optional as null", |d| {
            d["evidence"]["threshold"] = Value::Null
        }),
        ("unknown trigger", |d| {
            d["evidence"]["trigger"] = json!("magic")
        }),
        ("empty samples", |d| d["evidence"]["samples"] = json!([])),
        ("bad technique uid", |d| {
            d["attack_techniques"][0]["uid"] = json!("T1562.8")
        }),
        ("bad tactic uid", |d| {
            d["attack_tactics"][0]["uid"] = json!("T0005")
        }),
        ("trigger missing", |d| {
            d["evidence"].as_object_mut().unwrap().remove("trigger");
        }),
    ];
    for (name, mutate) in cases {
        let mut doc = base.clone();
        mutate(&mut doc);
        assert!(!v.is_valid(&doc), "{name}: schema accepted {doc}");
    }
}
