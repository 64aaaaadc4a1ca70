//! Replaying each Stratus Red Team detonation log alone raises exactly the detectors of its
//! technique: log tampering → `log_disable`, secret theft → `secret_fetch_rate`, Lambda
//! backdoors → `serverless` (and `event_trigger` for a public invoke permission); every other
//! technique (outside DS0025, or too small to be a burst) raises nothing.

use crate::util::fixture;
use cloudwarden::config::Config;
use cloudwarden::engine::Engine;
use cloudwarden::replay::replay_files;
use std::collections::BTreeSet;

fn expected(technique: &str) -> &'static [&'static str] {
    match technique {
        "aws.defense-evasion.cloudtrail-delete"
        | "aws.defense-evasion.cloudtrail-event-selectors"
        | "aws.defense-evasion.cloudtrail-stop"
        | "aws.defense-evasion.dns-delete-logs"
        | "aws.defense-evasion.organizations-leave"
        | "aws.defense-evasion.vpc-remove-flow-logs" => &["log_disable"],
        "aws.credential-access.secretsmanager-batch-retrieve-secrets"
        | "aws.credential-access.secretsmanager-retrieve-secrets"
        | "aws.credential-access.ssm-retrieve-securestring-parameters" => &["secret_fetch_rate"],
        "aws.persistence.lambda-backdoor-function" => &["event_trigger", "serverless"],
        "aws.persistence.lambda-layer-extension" | "aws.persistence.lambda-overwrite-code" => {
            &["serverless"]
        }
        _ => &[],
    }
}

#[test]
fn each_technique_raises_its_alerts_and_benign_files_nothing() {
    let dir = fixture("stratus");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixture dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "ndjson"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 35, "all Stratus detonation logs are fixtures");
    let mut failures = Vec::new();
    let mut attack_files = 0;
    for path in &files {
        let technique = path.file_stem().unwrap().to_string_lossy().to_string();
        let mut engine = Engine::new(&Config::default()).unwrap();
        let alerts = replay_files(&mut engine, &[path], 1000).unwrap();
        assert_eq!(
            engine.stats().decode_errors_total(),
            0,
            "{technique}: decode errors"
        );
        let got: BTreeSet<&str> = alerts.iter().map(|a| a.detector.as_str()).collect();
        let want: BTreeSet<&str> = expected(&technique).iter().copied().collect();
        if !want.is_empty() {
            attack_files += 1;
        }
        if got != want {
            failures.push(format!("{technique}: expected {want:?}, got {got:?}"));
        }
        for a in &alerts {
            assert!(
                !a.attack_techniques.is_empty(),
                "{technique}: alert without ATT&CK ids"
            );
        }
    }
    assert_eq!(attack_files, 12);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn secret_alerts_name_the_secrets_and_the_technique() {
    let path = fixture("stratus/aws.credential-access.ssm-retrieve-securestring-parameters.ndjson");
    let mut engine = Engine::new(&Config::default()).unwrap();
    let alerts = replay_files(&mut engine, &[&path], 1000).unwrap();
    let a = alerts
        .iter()
        .find(|a| a.detector == "secret_fetch_rate")
        .expect("an alert");
    assert_eq!(a.attack_techniques[0].uid, "T1555.006");
    assert!(a.attack_tactics.iter().any(|t| t.uid == "TA0006"));
    let e = &a.evidence;
    // GetParameters names up to 10 parameters per call: each counts.
    assert!(e.count.unwrap() >= 15, "{e:?}");
    assert!(
        e.samples
            .iter()
            .all(|s| s.starts_with("/credentials/stratus-red-team/")),
        "{e:?}"
    );
    assert!(!e.event_uids.is_empty());
    assert!(a.window_start <= a.window_end);
    assert_eq!(a.id.len(), 32);
}
