//! Replay semantics: the order of input files does not change the alerts; gzip and whole-document
//! inputs (a CloudTrail S3 log file) work; config and CLI behave as documented.

use crate::util::fixture;
use cloudwarden::config::Config;
use cloudwarden::engine::Engine;
use cloudwarden::replay::replay_files;
use std::io::Write;
use std::process::Command;

fn ids(paths: &[&std::path::Path]) -> Vec<String> {
    let mut engine = Engine::new(&Config::default()).unwrap();
    let alerts = replay_files(&mut engine, paths, 100_000).unwrap();
    alerts
        .iter()
        .map(|a| format!("{} {} {}", a.id, a.detector, a.time))
        .collect()
}

#[test]
fn alerts_do_not_depend_on_file_order() {
    // One input stream split into two files that interleave in time.
    let dir = tempfile::tempdir().unwrap();
    let input = std::fs::read_to_string(fixture("log_source_silence/input.ndjson")).unwrap();
    let (a, b) = (dir.path().join("a.ndjson"), dir.path().join("b.ndjson"));
    let (mut fa, mut fb) = (
        std::fs::File::create(&a).unwrap(),
        std::fs::File::create(&b).unwrap(),
    );
    for (i, line) in input.lines().enumerate() {
        writeln!(if i % 3 == 0 { &mut fa } else { &mut fb }, "{line}").unwrap();
    }
    drop((fa, fb));
    let whole = ids(&[&fixture("log_source_silence/input.ndjson")]);
    assert!(whole.len() >= 2, "the scenario alerts");
    assert_eq!(ids(&[&a, &b]), whole);
    assert_eq!(ids(&[&b, &a]), whole);
}

#[test]
fn cloudtrail_s3_log_file_and_gzip_inputs() {
    // The S3 delivery format: one pretty-printed {"Records": [...]} document, gzip-compressed.
    let records: Vec<serde_json::Value> = std::fs::read_to_string(fixture(
        "stratus/aws.defense-evasion.cloudtrail-stop.ndjson",
    ))
    .unwrap()
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect();
    let doc = serde_json::to_string_pretty(&serde_json::json!({ "Records": records })).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir
        .path()
        .join("111111111111_CloudTrail_us-east-1_20240731T1250Z_abc.json.gz");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&path).unwrap(),
        flate2::Compression::fast(),
    );
    gz.write_all(doc.as_bytes()).unwrap();
    gz.finish().unwrap();
    let mut engine = Engine::new(&Config::default()).unwrap();
    let alerts = replay_files(&mut engine, &[&path], 1000).unwrap();
    assert_eq!(engine.stats().events as usize, records.len());
    assert!(alerts.iter().any(|a| a.detector == "log_disable"));
}

#[test]
fn a_broken_first_line_costs_one_record_not_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken-first.ndjson");
    let good = std::fs::read_to_string(fixture(
        "stratus/aws.defense-evasion.cloudtrail-stop.ndjson",
    ))
    .unwrap();
    std::fs::write(&path, format!("{{\"eventTime\":\"2024-\n{good}")).unwrap();
    let mut engine = Engine::new(&Config::default()).unwrap();
    let alerts = replay_files(&mut engine, &[&path], 1000).unwrap();
    assert_eq!(engine.stats().events as usize, good.lines().count());
    assert_eq!(engine.stats().decode_errors.get("not_json"), Some(&1));
    assert!(alerts.iter().any(|a| a.detector == "log_disable"));
}

#[test]
fn deploy_config_is_the_documented_default() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/cloudwarden.toml");
    let file = Config::from_file(std::path::Path::new(path)).unwrap();
    let from_file = toml::Value::try_from(&file).unwrap();
    let default = toml::Value::try_from(Config::default()).unwrap();
    assert_eq!(
        from_file, default,
        "deploy/cloudwarden.toml must list exactly the defaults"
    );
    // and every key of the defaults appears in the file (not only by falling back to defaults)
    let text = std::fs::read_to_string(path).unwrap();
    let written: toml::Value = toml::from_str(&text).unwrap();
    fn keys(v: &toml::Value, prefix: &str, out: &mut Vec<String>) {
        if let toml::Value::Table(t) = v {
            for (k, v) in t {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                if let toml::Value::Table(inner) = v {
                    if inner.is_empty() {
                        continue; // empty `scopes` tables
                    }
                }
                out.push(p.clone());
                keys(v, &p, out);
            }
        }
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    keys(&default, "", &mut a);
    keys(&written, "", &mut b);
    a.sort();
    b.sort();
    assert_eq!(a, b, "keys documented in deploy/cloudwarden.toml");
}

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cloudwarden"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn check_config_names_the_offending_key() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[detectors.secret_fetch_rate]\nwindow = \"5m\"\ncount_treshold = 3\n",
    )
    .unwrap();
    let out = cli(&["check-config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("count_treshold"));
    let out = cli(&[
        "check-config",
        concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/cloudwarden.toml"),
    ]);
    assert!(out.status.success());
}

#[test]
fn normalize_prints_events_with_behaviours_and_errors_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ndjson");
    let good = std::fs::read_to_string(fixture(
        "stratus/aws.defense-evasion.cloudtrail-stop.ndjson",
    ))
    .unwrap();
    std::fs::write(&input, format!("{good}{{\"not\":\"audit\"}}\n")).unwrap();
    let out = cli(&["normalize", input.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "exit 1 when some record failed");
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let stop = lines
        .iter()
        .find(|l| l["api_operation"] == "StopLogging")
        .expect("StopLogging normalized");
    assert_eq!(stop["schema"], "cloud_event.v1");
    assert_eq!(stop["behaviours"][0], "log_disable");
    assert_eq!(stop["attack_technique_uids"][0], "T1562.008");
    let err = lines.last().unwrap();
    assert_eq!(err["error"], "unknown_shape");
    // normalize output is valid replay input.
    let norm = dir.path().join("norm.ndjson");
    let ok: Vec<String> = lines
        .iter()
        .filter(|l| l.get("error").is_none())
        .map(|l| l.to_string())
        .collect();
    std::fs::write(&norm, ok.join("\n")).unwrap();
    let out = cli(&["replay", "--no-progress", norm.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"detector\":\"log_disable\""));
}

#[test]
fn catalog_prints_coverage() {
    let out = cli(&["catalog"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for b in [
        "log_disable",
        "secret_fetch",
        "discovery",
        "quota_change",
        "tenant_settings",
        "event_trigger",
        "impair_defenses",
        "conditional_access",
        "serverless",
    ] {
        assert!(text.contains(b), "{b} row");
    }
}

#[test]
fn demo_raises_every_scenario() {
    let out = cli(&["demo", "--json"]);
    assert!(out.status.success());
    let alerts: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let has = |d: &str| alerts.iter().any(|a| a["detector"] == d);
    for d in [
        "secret_fetch_rate",
        "discovery_burst",
        "log_disable",
        "log_source_silence",
        "quota_change",
        "conditional_access",
    ] {
        assert!(has(d), "demo: no {d} alert");
    }
    let silence = alerts
        .iter()
        .find(|a| a["detector"] == "log_source_silence")
        .unwrap();
    assert_eq!(
        silence["evidence"]["details"]["last_log_disable"]["operation"],
        "StopLogging"
    );
}
