//! Sigma detection rules: loading SigmaHQ's cloud rules, the field mapping and log-source
//! routing on real records, case sensitivity, config errors, alerts.

use cloudwarden::alert::Alert;
use cloudwarden::config::Config;
use cloudwarden::engine::Engine;
use cloudwarden::sigma::{Rules, SigmaAllow};
use std::path::{Path, PathBuf};

fn fixture(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/sigma")
        .join(p)
}

fn config(rules: &[&str]) -> Config {
    let mut c = Config::default();
    c.sigma.rules = rules
        .iter()
        .map(|r| fixture(r).display().to_string())
        .collect();
    c
}

/// Every record of an events fixture (one JSON document, or NDJSON) through one engine.
fn sigma_alerts(engine: &mut Engine, events: &str) -> Vec<Alert> {
    let text = std::fs::read_to_string(fixture(&format!("events/{events}"))).unwrap();
    let mut out = Vec::new();
    let records: Vec<&str> = if events.ends_with(".ndjson") {
        text.lines().filter(|l| !l.trim().is_empty()).collect()
    } else {
        vec![text.as_str()]
    };
    for r in records {
        engine.process_record(r.as_bytes(), &mut out).unwrap();
    }
    out.retain(|a| a.detector == "sigma");
    out
}

fn ids(alerts: &[Alert]) -> Vec<String> {
    let mut v: Vec<String> = alerts
        .iter()
        .map(|a| a.sigma.as_ref().unwrap().id.clone())
        .collect();
    v.sort();
    v
}

#[test]
fn sigmahq_cloud_rules_all_parse_and_most_load() {
    let files = cloudwarden::sigma::load::expand(&fixture("rules").display().to_string()).unwrap();
    assert_eq!(files.len(), 225, "the copied SigmaHQ cloud rules");
    let rules = Rules::load_files(&files, &[]);
    assert!(
        rules.file_errors.is_empty(),
        "every file parses: {:?}",
        rules.file_errors
    );
    let total = rules.detections.len() + rules.unsupported.len();
    assert_eq!(total, 225, "one detection rule per file");
    println!("log source                      loaded  unsupported");
    for (ls, loaded, unsupported) in rules.summary() {
        println!("{ls:32}{loaded:6}  {unsupported:6}");
    }
    for u in &rules.unsupported {
        println!("unsupported {} ({}): {}", u.file, u.title, u.reason);
        assert!(!u.reason.is_empty(), "{} has a reason", u.file);
    }
    let share = rules.detections.len() as f64 / total as f64;
    println!(
        "loaded {} of {total} ({:.1}%)",
        rules.detections.len(),
        share * 100.0
    );
    // Floor measured at 222/225 (the 3 google_workspace.login rules use Cloud Logging fields).
    assert!(share >= 0.98, "loaded share {share}");
    let aws = rules
        .detections
        .iter()
        .filter(|r| r.route.as_str() == "aws/cloudtrail")
        .count();
    assert_eq!(aws, 57, "every AWS CloudTrail rule loads");
    // Stable indices, and rules found by reference (as correlations refer to them).
    for (i, r) in rules.detections.iter().enumerate() {
        assert_eq!(usize::from(r.index), i);
        assert_eq!(rules.by_reference(&r.id).unwrap().index, r.index);
    }
}

#[test]
fn aws_stop_logging_matches_the_sigmahq_rule_on_a_real_record() {
    let mut engine = Engine::new(&config(&["rules/aws"])).unwrap();
    let alerts = sigma_alerts(&mut engine, "aws.defense-evasion.cloudtrail-stop.ndjson");
    let a = alerts
        .iter()
        .find(|a| a.title == "AWS CloudTrail Important Change")
        .expect("StopLogging matches aws_cloudtrail_disable_logging");
    let s = a.sigma.as_ref().unwrap();
    assert_eq!(s.id, "4db60cc0-36fb-42b7-9b58-a5b53019fb74");
    assert_eq!(s.kind, "detection");
    assert!(s
        .matched
        .iter()
        .any(|(f, v)| f == "eventName" && v == "StopLogging"));
    assert_eq!(a.severity, cloudwarden::alert::Severity::Medium);
    let rule = engine.sigma().rules().by_reference(&s.id).unwrap();
    assert_eq!(
        rule.techniques,
        ["T1685.002"],
        "from the rule's attack.t1685.002 tag"
    );
    assert_eq!(a.cloud_provider, "aws");
    // Deterministic id: the same record in a new engine gives the same alert id.
    let mut again = Engine::new(&config(&["rules/aws"])).unwrap();
    let alerts2 = sigma_alerts(&mut again, "aws.defense-evasion.cloudtrail-stop.ndjson");
    assert_eq!(
        alerts.iter().map(|a| &a.id).collect::<Vec<_>>(),
        alerts2.iter().map(|a| &a.id).collect::<Vec<_>>()
    );
    // Routing: no non-AWS rule sees the CloudTrail record.
    let mut others = Engine::new(&config(&["rules/azure", "rules/gcp", "rules/m365"])).unwrap();
    assert!(sigma_alerts(&mut others, "aws.defense-evasion.cloudtrail-stop.ndjson").is_empty());
}

#[test]
fn gcp_filebeat_names_and_case_sensitivity() {
    let mut engine = Engine::new(&config(&["local/gcp_sink_deleted.yml"])).unwrap();
    let alerts = sigma_alerts(&mut engine, "delete_sink.json");
    // Lower-case pattern matches (Sigma is case-insensitive); `|cased` with the wrong case does
    // not; `|cased` with the right case does.
    assert_eq!(
        ids(&alerts),
        [
            "7d1c4a7e-0000-4000-8000-000000000001",
            "7d1c4a7e-0000-4000-8000-000000000003"
        ]
    );
    assert!(sigma_alerts(&mut engine, "diagnostic_settings_delete_rest.json").is_empty());
    assert!(sigma_alerts(&mut engine, "change_application_setting.json").is_empty());
}

#[test]
fn azure_entra_m365_names_map_to_the_raw_records() {
    let mut engine = Engine::new(&config(&["local/microsoft.yml"])).unwrap();
    assert_eq!(
        ids(&sigma_alerts(
            &mut engine,
            "diagnostic_settings_delete_rest.json"
        )),
        ["7d1c4a7e-0000-4000-8000-000000000010"]
    );
    assert_eq!(
        ids(&sigma_alerts(
            &mut engine,
            "update_ca_policy_diagnostic_export.json"
        )),
        ["7d1c4a7e-0000-4000-8000-000000000011"]
    );
    let aad = sigma_alerts(&mut engine, "AADAuditEvents.ndjson");
    assert!(!aad.is_empty());
    assert!(aad
        .iter()
        .all(|a| a.sigma.as_ref().unwrap().id == "7d1c4a7e-0000-4000-8000-000000000012"));
    assert_eq!(
        ids(&sigma_alerts(
            &mut engine,
            "set_admin_audit_log_config_disabled.json"
        )),
        ["7d1c4a7e-0000-4000-8000-000000000013"]
    );
    let office = sigma_alerts(&mut engine, "OfficeActivityEvents.ndjson");
    assert!(!office.is_empty());
    assert!(office
        .iter()
        .all(|a| a.sigma.as_ref().unwrap().id == "7d1c4a7e-0000-4000-8000-000000000014"));
    // Negative: a GCP record reaches none of them.
    assert!(sigma_alerts(&mut engine, "delete_sink.json").is_empty());
}

#[test]
fn workspace_event_name_service_and_parameters() {
    let mut engine = Engine::new(&config(&["local/workspace.yml"])).unwrap();
    let alerts = sigma_alerts(&mut engine, "change_application_setting.json");
    assert_eq!(ids(&alerts), ["7d1c4a7e-0000-4000-8000-000000000020"]);
    assert!(sigma_alerts(&mut engine, "set_admin_audit_log_config_disabled.json").is_empty());
}

#[test]
fn disabled_dry_run_and_allow_lists() {
    let mut c = config(&["local/gcp_sink_deleted.yml"]);
    c.sigma.disabled = vec!["7d1c4a7e-0000-4000-8000-000000000003".into()];
    c.sigma.dry_run = vec!["attack.t1562.008".into()];
    let mut engine = Engine::new(&c).unwrap();
    let alerts = sigma_alerts(&mut engine, "delete_sink.json");
    assert_eq!(ids(&alerts), ["7d1c4a7e-0000-4000-8000-000000000001"]);
    assert!(alerts[0].dry_run);

    let scope = alerts[0].cloud_account_uid.clone();
    c.sigma.allow = vec![SigmaAllow {
        scope,
        rules: vec!["7d1c4a7e-0000-4000-8000-000000000001".into()],
    }];
    let mut engine = Engine::new(&c).unwrap();
    assert!(sigma_alerts(&mut engine, "delete_sink.json").is_empty());
    assert_eq!(engine.sigma().stats().allowed, 1);
}

#[test]
fn config_errors_name_the_key() {
    let err = |c: &Config| c.validate().unwrap_err().to_string();
    let mut c = config(&["local/gcp_sink_deleted.yml"]);
    c.sigma.disabled = vec!["no-such-rule".into()];
    assert!(err(&c).contains("`sigma.disabled[0]`"), "{}", err(&c));

    let mut c = config(&["local/gcp_sink_deleted.yml"]);
    c.sigma.rules.push("tests/fixtures/sigma/[bad".into());
    assert!(err(&c).contains("`sigma.rules[1]`"), "{}", err(&c));

    let c = config(&["no/such/dir"]);
    assert!(err(&c).contains("`sigma.rules[0]`"), "{}", err(&c));

    let mut c = config(&["rules/aws"]);
    c.sigma.max_rules = 10;
    assert!(err(&c).contains("`sigma.max_rules`"), "{}", err(&c));

    let text = "[sigma]\nrulez = []\n";
    let e = Config::from_toml(text).unwrap_err().to_string();
    assert!(e.contains("rulez"), "{e}");

    // Off by default.
    let engine = Engine::new(&Config::default()).unwrap();
    assert!(engine.sigma().is_off());
}

#[test]
fn ocsf_finding_names_the_rule() {
    let mut engine = Engine::new(&config(&["rules/aws"])).unwrap();
    let alerts = sigma_alerts(&mut engine, "aws.defense-evasion.cloudtrail-stop.ndjson");
    let a = &alerts[0];
    let f = cloudwarden::alert::ocsf::to_ocsf(a, &Default::default());
    let analytic = &f["finding_info"]["analytic"];
    assert_eq!(analytic["uid"], a.sigma.as_ref().unwrap().id.as_str());
    assert_eq!(analytic["name"], a.title.as_str());
    assert_eq!(analytic["type"], "Rule");
}

#[test]
fn metrics_count_matches_per_rule_and_rules_loaded() {
    let mut engine = Engine::new(&config(&["rules/aws"])).unwrap();
    let alerts = sigma_alerts(&mut engine, "aws.defense-evasion.cloudtrail-stop.ndjson");
    assert!(!alerts.is_empty());
    let m = cloudwarden::telemetry::Metrics::default();
    m.sigma(engine.sigma());
    let text = m.render();
    assert!(
        text.contains(
            "cloudwarden_sigma_matches_total{rule=\"4db60cc0-36fb-42b7-9b58-a5b53019fb74\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains("cloudwarden_sigma_rules_loaded{state=\"loaded\"} 57"));
    assert!(text.contains("cloudwarden_sigma_rules_loaded{state=\"unsupported\"} 0"));
}

/// Every Sigma alert of the AWS rules on the public-data excerpt: a valid `alert.v1` document
/// and a conformant OCSF Detection Finding.
#[test]
fn sigma_alerts_validate_as_alert_v1_and_ocsf() {
    let mut engine = Engine::new(&config(&["rules", "local"])).unwrap();
    let mut alerts = Vec::new();
    for f in [
        "aws.defense-evasion.cloudtrail-stop.ndjson",
        "AADAuditEvents.ndjson",
        "OfficeActivityEvents.ndjson",
        "delete_sink.json",
        "change_application_setting.json",
        "diagnostic_settings_delete_rest.json",
    ] {
        alerts.extend(sigma_alerts(&mut engine, f));
    }
    assert!(alerts.len() >= 6, "{} alerts", alerts.len());
    let schema_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/alert.v1.schema.json");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(schema_path).unwrap()).unwrap();
    let v = jsonschema::validator_for(&schema).unwrap();
    for a in &alerts {
        let doc = serde_json::to_value(a).unwrap();
        let errs: Vec<String> = v.iter_errors(&doc).map(|e| e.to_string()).collect();
        assert!(errs.is_empty(), "{}: {errs:?}", a.title);
    }
    let ocsf = crate::ocsf::resolver::Schema::shipped();
    let class = ocsf.class("detection_finding");
    let docs: Vec<(String, serde_json::Value)> = alerts
        .iter()
        .map(|a| {
            (
                a.title.clone(),
                cloudwarden::alert::ocsf::to_ocsf(a, &Default::default()),
            )
        })
        .collect();
    crate::ocsf::assert_conformant(&ocsf, &class, &docs);
}
