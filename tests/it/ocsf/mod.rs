//! OCSF conformance of what cloudwarden writes and reads, against the OCSF 1.8.0 schema sources
//! resolved by [`resolver`]: every golden alert and every alert of replaying the public
//! CloudTrail datasets, as Detection Findings (class 2004); the API Activity (class 6003) inputs
//! in `tests/fixtures/ocsf/`.

mod api_activity;
pub(crate) mod resolver;

use crate::util::{fixture, input_files};
use cloudwarden::alert::ocsf::{to_ocsf, OcsfContext};
use cloudwarden::alert::{Alert, AlertStatus};
use cloudwarden::config::Config;
use cloudwarden::engine::Engine;
use cloudwarden::replay::replay_files;
use resolver::{Def, Schema};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::PathBuf;

fn finding(a: &Alert) -> Value {
    to_ocsf(a, &OcsfContext::default())
}

fn golden_alerts() -> Vec<(String, Alert)> {
    let mut out = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixture(""))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("expected.ndjson"))
        .filter(|p| p.exists())
        .collect();
    dirs.sort();
    for path in dirs {
        let text = std::fs::read_to_string(&path).unwrap();
        for (i, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
            let a: Alert = serde_json::from_str(line).unwrap();
            out.push((format!("{}:{}", path.display(), i + 1), a));
        }
    }
    out
}

pub(crate) fn assert_conformant(schema: &Schema, class: &Def, docs: &[(String, Value)]) {
    let mut failures = Vec::new();
    for (name, doc) in docs {
        for e in schema.check(class, doc) {
            failures.push(format!("{name}: {e}"));
        }
    }
    resolver::print_trace();
    assert!(
        failures.is_empty(),
        "{} violations:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_golden_alert_is_a_conformant_detection_finding() {
    let schema = Schema::shipped();
    let class = schema.class("detection_finding");
    let alerts = golden_alerts();
    assert!(alerts.len() >= 20, "{} golden alerts", alerts.len());
    let detectors: BTreeSet<&str> = alerts.iter().map(|(_, a)| a.detector.as_str()).collect();
    assert_eq!(
        detectors.len(),
        cloudwarden::detect::DETECTOR_NAMES.len(),
        "{detectors:?}"
    );
    let docs: Vec<(String, Value)> = alerts
        .iter()
        .map(|(n, a)| (n.clone(), finding(a)))
        .collect();
    assert_conformant(&schema, &class, &docs);
}

#[test]
fn a_silence_episode_is_one_finding_created_then_closed() {
    let alerts: Vec<Alert> = golden_alerts()
        .into_iter()
        .map(|(_, a)| a)
        .filter(|a| a.detector == "log_source_silence")
        .collect();
    let closed: Vec<&Alert> = alerts
        .iter()
        .filter(|a| a.status == AlertStatus::Resolved)
        .collect();
    assert!(!closed.is_empty(), "the golden silence scenario resolves");
    for c in closed {
        let close = finding(c);
        let created = alerts
            .iter()
            .filter(|a| a.status == AlertStatus::New)
            .find(|a| finding(a)["finding_info"]["uid"] == close["finding_info"]["uid"])
            .unwrap_or_else(|| panic!("no Create for the Close of {}", c.id));
        let create = finding(created);
        assert_eq!(
            (
                create["activity_name"].as_str(),
                close["activity_name"].as_str()
            ),
            (Some("Create"), Some("Close"))
        );
        assert_eq!(close["status"], "Resolved");
        assert_eq!(created.dedup_key, c.dedup_key);
        assert!(created.time < c.time);
    }
}

#[test]
fn every_alert_of_the_public_datasets_is_a_conformant_detection_finding() {
    let schema = Schema::shipped();
    let class = schema.class("detection_finding");
    let mut docs = Vec::new();
    for path in input_files() {
        let mut engine = Engine::new(&Config::default()).unwrap();
        for a in replay_files(&mut engine, &[&path], 100_000).unwrap() {
            docs.push((format!("{} {}", path.display(), a.id), finding(&a)));
        }
    }
    assert!(docs.len() >= 20, "{} alerts", docs.len());
    assert_conformant(&schema, &class, &docs);
}

#[test]
fn every_alert_of_the_shared_public_data_is_a_conformant_detection_finding() {
    // ../shared/data/public whole (also the TrailDiscover and OTRF sets that have no fixture
    // copy): each file on its own, each dataset folder as one replay, and everything as one
    // (where silence episodes open and close).
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/public");
    if !root.exists() {
        eprintln!("SKIPPED: no {}", root.display());
        return;
    }
    let schema = Schema::shipped();
    let class = schema.class("detection_finding");
    let mut docs = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    let mut everything = Vec::new();
    for dir in dirs {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "ndjson"))
            .collect();
        files.sort();
        let mut runs: Vec<Vec<&std::path::Path>> =
            files.iter().map(|f| vec![f.as_path()]).collect();
        runs.push(files.iter().map(PathBuf::as_path).collect());
        for run in runs {
            let mut engine = Engine::new(&Config::default()).unwrap();
            for a in replay_files(&mut engine, &run, 100_000).unwrap() {
                docs.push((format!("{} {}", run[0].display(), a.id), finding(&a)));
            }
        }
        everything.extend(files);
    }
    let all: Vec<&std::path::Path> = everything.iter().map(PathBuf::as_path).collect();
    let mut engine = Engine::new(&Config::default()).unwrap();
    let one_replay: Vec<Value> = replay_files(&mut engine, &all, 100_000)
        .unwrap()
        .iter()
        .map(finding)
        .collect();
    let closes: Vec<&Value> = one_replay
        .iter()
        .filter(|f| f["activity_id"] == 3)
        .collect();
    assert!(
        !closes.is_empty(),
        "a silence episode closes in the one replay"
    );
    for close in closes {
        let uid = &close["finding_info"]["uid"];
        assert!(
            one_replay
                .iter()
                .any(|f| f["activity_id"] == 1 && &f["finding_info"]["uid"] == uid),
            "Close {uid} has no Create"
        );
    }
    docs.extend(
        one_replay
            .into_iter()
            .map(|f| ("all public data".to_owned(), f)),
    );
    assert!(docs.len() >= 40, "{} alerts", docs.len());
    assert_conformant(&schema, &class, &docs);
}

#[test]
fn the_resolver_rejects_what_ocsf_does_not_allow() {
    let schema = Schema::shipped();
    let class = schema.class("detection_finding");
    let (_, alert) = golden_alerts()
        .into_iter()
        .find(|(_, a)| a.detector == "log_disable")
        .unwrap();
    let good = finding(&alert);
    assert_eq!(schema.check(&class, &good), Vec::<String>::new());
    /// (what, how to break the good finding, a piece of the expected error).
    type Case = (&'static str, fn(&mut Value), &'static str);
    let cases: Vec<Case> = vec![
        (
            "unknown top-level attribute",
            |f| f["cloud_account_uid"] = json!("1"),
            "cloud_account_uid: unknown attribute",
        ),
        (
            "unknown nested attribute",
            |f| f["finding_info"]["analytic"]["rule"] = json!("x"),
            "finding_info.analytic.rule: unknown",
        ),
        (
            "unknown attribute in an array item",
            |f| f["evidences"][0]["actor"]["user"]["arn"] = json!("x"),
            "evidences[0].actor.user.arn: unknown",
        ),
        (
            "wrong severity caption",
            |f| f["severity"] = json!("high"),
            "severity_id: 4 is \"High\"",
        ),
        (
            "wrong status caption",
            |f| f["status"] = json!("Success"),
            "status_id: 1 is \"New\"",
        ),
        (
            "unlisted enum value",
            |f| f["status_id"] = json!(7),
            "status_id: 7 is not one of",
        ),
        (
            "type_uid not class*100+activity",
            |f| f["type_uid"] = json!(200402),
            "type_name",
        ),
        (
            "another class",
            |f| f["class_uid"] = json!(2001),
            "class_uid: 2001 is not one of",
        ),
        (
            "missing required",
            |f| {
                f["metadata"].as_object_mut().unwrap().remove("product");
            },
            "required attribute product of metadata",
        ),
        (
            "missing required finding_info.uid",
            |f| {
                f["finding_info"].as_object_mut().unwrap().remove("uid");
            },
            "required attribute uid of finding_info",
        ),
        (
            "profile not applied",
            |f| f["metadata"]["profiles"] = json!(["datetime"]),
            "cloud: attribute of profile cloud",
        ),
        (
            "datetime not applied",
            |f| f["metadata"]["profiles"] = json!(["cloud"]),
            "time_dt: attribute of profile datetime",
        ),
        (
            "wrong type",
            |f| f["time"] = json!("2026-01-01"),
            "time: \"2026-01-01\" is not a",
        ),
        (
            "bad datetime",
            |f| f["time_dt"] = json!("yesterday"),
            "time_dt:",
        ),
        (
            "bad ip",
            |f| f["evidences"][0]["src_endpoint"]["ip"] = json!("not-an-ip"),
            "src_endpoint.ip",
        ),
        (
            "empty actor",
            |f| f["evidences"][0]["actor"] = json!({}),
            "actor needs one of",
        ),
        (
            "not an array",
            |f| f["resources"] = json!({"uid": "x"}),
            "resources: not an array",
        ),
    ];
    for (what, mutate, want) in cases {
        let mut bad = good.clone();
        mutate(&mut bad);
        let errors = schema.check(&class, &bad);
        assert!(
            errors.iter().any(|e| e.contains(want)),
            "{what}: expected {want:?} in {errors:?}"
        );
    }
}

#[test]
fn the_shipped_schema_is_the_published_one() {
    // The copies under tests/fixtures/ocsf/schema are byte-identical to the 1.8.0 sources.
    let upstream = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/ocsf-schema-1.8.0");
    if !upstream.exists() {
        eprintln!("SKIPPED: no {} to compare with", upstream.display());
        return;
    }
    let shipped = fixture("ocsf/schema");
    let mut n = 0;
    let mut stack = vec![shipped.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "json") || p.ends_with("LICENSE") {
                let rel = p.strip_prefix(&shipped).unwrap();
                assert_eq!(
                    std::fs::read(&p).unwrap(),
                    std::fs::read(upstream.join(rel)).unwrap(),
                    "{}",
                    rel.display()
                );
                n += 1;
            }
        }
    }
    assert!(n > 20, "{n} schema files");
}

#[test]
fn replay_format_ocsf_writes_conformant_findings() {
    let schema = Schema::shipped();
    let class = schema.class("detection_finding");
    let input = fixture("stratus/aws.credential-access.secretsmanager-retrieve-secrets.ndjson");
    let run = |format: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cloudwarden"))
            .args(["replay", "--no-progress", "--format", format])
            .arg(&input)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let ocsf: Vec<(String, Value)> = run("ocsf")
        .lines()
        .map(|l| {
            (
                "replay --format ocsf".to_owned(),
                serde_json::from_str(l).unwrap(),
            )
        })
        .collect();
    let alerts: Vec<Alert> = run("cloudwarden.v1")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!ocsf.is_empty());
    assert_eq!(ocsf.len(), alerts.len());
    for ((_, f), a) in ocsf.iter().zip(&alerts) {
        assert_eq!(f, &finding(a));
    }
    assert_conformant(&schema, &class, &ocsf);
}
