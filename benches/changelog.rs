//! Durable state figures: changelog size and restore time per 1M keys.
//!
//! Feeds an engine with change tracking on N = 1,000,000 distinct principals (each one
//! `GetSecretValue` and one `DescribeInstances`, so two keyed detectors hold N keys each),
//! takes a checkpoint (every key is new, so every key is written), and restores it into a fresh
//! engine. Prints entries, bytes per entry as the changelog stores them (record key + value),
//! checkpoint (encode) time and restore (decode + insert) time. In-process: the broker's share of
//! a restore (reading the changelog partition) comes on top, at the broker's fetch rate.
//! Run: `cargo bench --bench changelog` (`CHANGELOG_BENCH_KEYS` to change N).

use cloudwarden::config::Config;
use cloudwarden::engine::Engine;
use cloudwarden::event::time::format_rfc3339_ms;
use serde_json::json;
use std::time::Instant;

/// 2026-11-01T00:00:00Z
const T0: i64 = 1_793_491_200_000;

fn record(i: usize, t: i64, name: &str, source: &str, request: serde_json::Value) -> Vec<u8> {
    let account = format!("{:012}", 100_000_000_000u64 + (i % 100) as u64);
    serde_json::to_vec(&json!({
        "eventVersion": "1.09",
        "userIdentity": {"type": "IAMUser", "arn": format!("arn:aws:iam::{account}:user/svc-{i:07}"), "accountId": account},
        "eventTime": format_rfc3339_ms(t),
        "eventSource": source,
        "eventName": name,
        "awsRegion": "us-east-1",
        "requestParameters": request,
        "eventID": format!("00000000-0000-4000-8000-{i:012x}"),
        "eventType": "AwsApiCall",
        "managementEvent": true,
        "recipientAccountId": account,
    }))
    .expect("a json! value serializes")
}

fn main() {
    let n: usize = std::env::var("CHANGELOG_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let mut config = Config::default();
    config.detectors.secret_fetch_rate.max_keys = n + 1;
    config.detectors.discovery_burst.max_keys = n + 1;
    let mut engine = Engine::new(&config).expect("valid config");
    engine.track_changes();
    let mut alerts = Vec::new();
    for i in 0..n {
        // All within the detectors' windows: nothing expires before the checkpoint.
        let t = T0 + (i / 10) as i64;
        let r = record(
            i,
            t,
            "GetSecretValue",
            "secretsmanager.amazonaws.com",
            json!({"secretId": format!("prod/app-{i:07}/db")}),
        );
        let _ = engine.process_record(&r, &mut alerts);
        let r = record(
            i,
            t,
            "DescribeInstances",
            "ec2.amazonaws.com",
            json!({"maxResults": 100}),
        );
        let _ = engine.process_record(&r, &mut alerts);
    }
    let keys: usize = engine.detector_stats().iter().map(|(_, s)| s.keys).sum();

    let started = Instant::now();
    let entries = engine.checkpoint();
    let checkpoint = started.elapsed();
    let bytes: usize = entries
        .iter()
        .map(|e| e.record_key(0).len() + e.value.as_ref().map_or(0, Vec::len))
        .sum();

    let mut restored = Engine::new(&config).expect("valid config");
    let started = Instant::now();
    let failed = restored.restore(&entries);
    let restore = started.elapsed();
    assert!(failed.is_empty());
    let back: usize = restored.detector_stats().iter().map(|(_, s)| s.keys).sum();
    assert_eq!(back, keys, "every key restored");

    let per_m = 1_000_000.0 / keys as f64;
    println!(
        "changelog: {keys} keys ({n} principals in 2 detectors) -> {} entries, {:.1} MB ({:.0} B/entry: key + version byte + CBOR); {:.0} MB per 1M keys",
        entries.len(),
        bytes as f64 / 1e6,
        bytes as f64 / entries.len() as f64,
        bytes as f64 / 1e6 * per_m
    );
    println!(
        "checkpoint (encode every key): {:.2} s = {:.2} s per 1M keys; restore (decode + insert): {:.2} s = {:.2} s per 1M keys",
        checkpoint.as_secs_f64(),
        checkpoint.as_secs_f64() * per_m,
        restore.as_secs_f64(),
        restore.as_secs_f64() * per_m
    );
}
