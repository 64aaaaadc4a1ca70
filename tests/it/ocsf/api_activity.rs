//! OCSF API Activity (class 6003) input: the Stratus CloudTrail records converted to 6003
//! (`tests/fixtures/ocsf/api_activity/`, by `make_api_activity.py`) conform to the resolved class,
//! decode to the events their CloudTrail originals decode to, and raise the same alerts.

use super::resolver::Schema;
use crate::util::{fixture, lines};
use cloudwarden::config::Config;
use cloudwarden::engine::Engine;
use cloudwarden::event::{decode_record, CloudEvent, DecodeLimits};
use cloudwarden::replay::replay_files;
use serde_json::Value;
use std::path::PathBuf;

/// (6003 file, its CloudTrail original).
fn pairs() -> Vec<(PathBuf, PathBuf)> {
    let mut out: Vec<(PathBuf, PathBuf)> = std::fs::read_dir(fixture("ocsf/api_activity"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "ndjson"))
        .map(|p| {
            let original = fixture("stratus").join(p.file_name().unwrap());
            (p, original)
        })
        .collect();
    out.sort();
    assert_eq!(out.len(), 6, "the converted techniques");
    out
}

fn decode(line: &[u8]) -> CloudEvent<'static> {
    let mut out = Vec::new();
    decode_record(line, &DecodeLimits::default(), &mut out)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(line)));
    assert_eq!(out.len(), 1);
    out.pop().unwrap().into_owned()
}

#[test]
fn api_activity_inputs_conform_to_class_6003() {
    let schema = Schema::shipped();
    let class = schema.class("api_activity");
    let mut failures = Vec::new();
    let mut n = 0;
    for (path, _) in pairs() {
        for (i, line) in lines(&path).iter().enumerate() {
            let doc: Value = serde_json::from_slice(line).unwrap();
            for e in schema.check(&class, &doc) {
                failures.push(format!("{}:{}: {e}", path.display(), i + 1));
            }
            n += 1;
        }
    }
    assert!(n >= 70, "{n} records");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    super::resolver::print_trace();
}

#[test]
fn api_activity_decodes_to_the_event_of_its_cloudtrail_original() {
    for (ocsf, original) in pairs() {
        let (a, b) = (lines(&ocsf), lines(&original));
        assert_eq!(a.len(), b.len(), "{}", ocsf.display());
        for (i, (o, c)) in a.iter().zip(&b).enumerate() {
            let (from_ocsf, from_cloudtrail) = (decode(o), decode(c));
            assert_eq!(from_ocsf, from_cloudtrail, "{}:{}", ocsf.display(), i + 1);
        }
    }
}

#[test]
fn api_activity_raises_the_alerts_cloudtrail_does() {
    let mut detectors = std::collections::BTreeSet::new();
    for (ocsf, original) in pairs() {
        let run = |p: &PathBuf| {
            let mut engine = Engine::new(&Config::default()).unwrap();
            let alerts = replay_files(&mut engine, &[p], 1000).unwrap();
            assert_eq!(engine.stats().decode_errors_total(), 0, "{}", p.display());
            alerts
        };
        let (from_ocsf, from_cloudtrail) = (run(&ocsf), run(&original));
        assert_eq!(from_ocsf, from_cloudtrail, "{}", ocsf.display());
        detectors.extend(from_ocsf.into_iter().map(|a| a.detector));
    }
    let want = [
        "event_trigger",
        "log_disable",
        "secret_fetch_rate",
        "serverless",
    ];
    assert_eq!(
        detectors.iter().map(String::as_str).collect::<Vec<_>>(),
        want
    );
}
