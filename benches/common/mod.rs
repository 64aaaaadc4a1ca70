//! Inputs and the bare-parse baseline shared by the benchmark binaries.
//!
//! Every bench reads its inputs from the repository (`benches/data/`) or generates them
//! (`cloudwarden::demo`), so `cargo bench` runs on a fresh checkout. Not every binary uses every
//! helper, hence the `dead_code` allowance.
#![allow(dead_code)]

use cloudwarden::event::time::{format_rfc3339_ms, parse_rfc3339_ms};
use cloudwarden::event::{decode_record, CloudEvent, DecodeLimits};
use serde::Deserialize;
use std::borrow::Cow;
use std::path::PathBuf;

/// The first 1,000 records of invictus-ir/aws_dataset (MIT), see `benches/data/README.md`.
pub const INVICTUS_SLICE: &str = "benches/data/cloudtrail-invictus-1000.ndjson";

pub fn repo_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The non-empty lines of an NDJSON file, each an owned raw record.
pub fn read_ndjson(rel: &str) -> Vec<Vec<u8>> {
    let path = repo_path(rel);
    let text = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("cannot read bench input {}: {e}", path.display()));
    text.split(|&b| b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .map(<[u8]>::to_vec)
        .collect()
}

pub fn total_bytes(records: &[Vec<u8>]) -> u64 {
    records.iter().map(|r| r.len() as u64).sum()
}

/// A string borrowed from the record unless JSON escapes force a copy.
///
/// serde borrows a `Cow<'a, str>` field only when the field's type is exactly that: inside an
/// `Option` (or a `Vec`) `#[serde(borrow)]` does not reach it and serde's `Cow` impl always
/// allocates a `String`. The newtype puts the `Cow` back in field position.
#[derive(Deserialize)]
pub struct Str<'a>(#[serde(borrow)] pub Cow<'a, str>);

/// The `userIdentity` part of [`Bare`].
#[derive(Deserialize)]
pub struct BareIdentity<'a> {
    #[serde(borrow, default)]
    pub arn: Option<Str<'a>>,
}

/// The baseline the spec asks for: a bare borrowed serde_json parse of the ten CloudTrail fields
/// the engine needs, and nothing else (no shape recognition, no time parsing, no request fields).
/// Every field is optional so records lacking one (`errorCode` mostly) still parse; no field
/// allocates unless it holds a JSON escape.
#[allow(non_snake_case)]
#[derive(Deserialize)]
pub struct Bare<'a> {
    #[serde(borrow, default)]
    pub eventTime: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub eventSource: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub eventName: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub awsRegion: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub sourceIPAddress: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub userAgent: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub errorCode: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub recipientAccountId: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub eventID: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub userIdentity: Option<BareIdentity<'a>>,
}

/// Bare parse of one record, the same way `decode_record` reads its input (UTF-8 check, then
/// `from_str`, which PERF.md §4 measured faster than `from_slice`).
#[inline]
pub fn bare_parse(raw: &[u8]) -> Option<Bare<'_>> {
    let text = std::str::from_utf8(raw).ok()?;
    serde_json::from_str(text).ok()
}

/// Each raw record decoded and re-serialized as `CloudEvent` v1 (the exact `cloud_event.v1`
/// form `cloudwarden normalize` writes). Records that do not decode are left out.
pub fn to_cloud_event_v1(records: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let limits = DecodeLimits::default();
    let mut out = Vec::with_capacity(records.len());
    let mut events: Vec<CloudEvent<'_>> = Vec::new();
    for raw in records {
        events.clear();
        if decode_record(raw, &limits, &mut events).is_ok() {
            for ev in &events {
                out.push(serde_json::to_vec(ev).expect("a CloudEvent serializes"));
            }
        }
    }
    out
}

/// `records` repeated `passes` times, each pass with every `eventTime` moved `shift_ms` later, so
/// a real slice can be cycled through an engine as a stream whose time moves forward (cycling
/// the same times would make every later pass "late" and skip the stateful detectors). Only the
/// `eventTime` value changes; the rest of each record stays byte for byte as captured.
pub fn shifted_passes(records: &[Vec<u8>], passes: usize, shift_ms: i64) -> Vec<Vec<u8>> {
    const KEY: &[u8] = b"\"eventTime\":\"";
    let mut out = Vec::with_capacity(records.len() * passes);
    for pass in 0..passes {
        let delta = shift_ms * pass as i64;
        for raw in records {
            let Some(at) = find(raw, KEY) else {
                out.push(raw.clone());
                continue;
            };
            let start = at + KEY.len();
            let Some(len) = raw[start..].iter().position(|&b| b == b'"') else {
                out.push(raw.clone());
                continue;
            };
            let old = std::str::from_utf8(&raw[start..start + len]).ok();
            let Some(t) = old.and_then(parse_rfc3339_ms) else {
                out.push(raw.clone());
                continue;
            };
            let new = format_rfc3339_ms(t + delta).replace(".000Z", "Z");
            let mut rec = Vec::with_capacity(raw.len() + 4);
            rec.extend_from_slice(&raw[..start]);
            rec.extend_from_slice(new.as_bytes());
            rec.extend_from_slice(&raw[start + len..]);
            out.push(rec);
        }
    }
    out
}

/// Span of event time in `records` (max − min `eventTime`), in ms.
pub fn time_span_ms(records: &[Vec<u8>]) -> i64 {
    let limits = DecodeLimits::default();
    let mut events: Vec<CloudEvent<'_>> = Vec::new();
    for raw in records {
        let _ = decode_record(raw, &limits, &mut events);
    }
    let min = events.iter().map(|e| e.time).min().unwrap_or(0);
    let max = events.iter().map(|e| e.time).max().unwrap_or(0);
    max - min
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// 2026-11-01T00:00:00Z
pub const T0: i64 = 1_793_491_200_000;

/// A CloudTrail record of principal `i` (one of 100 accounts) at `t`.
pub fn principal_record(
    i: usize,
    t: i64,
    name: &str,
    source: &str,
    request: serde_json::Value,
) -> Vec<u8> {
    let account = format!("{:012}", 100_000_000_000u64 + (i % 100) as u64);
    serde_json::to_vec(&serde_json::json!({
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

/// An engine with change tracking on, fed `principals` distinct principals, each one
/// `GetSecretValue` and one `DescribeInstances` within the detectors' windows: two keyed
/// detectors hold `principals` keys each, all changed since the start. With its config (bounds
/// raised to fit).
pub fn tracked_engine(
    principals: usize,
) -> (cloudwarden::config::Config, cloudwarden::engine::Engine) {
    let mut config = cloudwarden::config::Config::default();
    config.detectors.secret_fetch_rate.max_keys = principals + 1;
    config.detectors.discovery_burst.max_keys = principals + 1;
    let mut engine = cloudwarden::engine::Engine::new(&config).expect("valid config");
    engine.track_changes();
    let mut alerts = Vec::new();
    for i in 0..principals {
        // All within the detectors' windows: nothing expires before the checkpoint.
        let t = T0 + (i / 10) as i64;
        let r = principal_record(
            i,
            t,
            "GetSecretValue",
            "secretsmanager.amazonaws.com",
            serde_json::json!({"secretId": format!("prod/app-{i:07}/db")}),
        );
        let _ = engine.process_record(&r, &mut alerts);
        let r = principal_record(
            i,
            t,
            "DescribeInstances",
            "ec2.amazonaws.com",
            serde_json::json!({"maxResults": 100}),
        );
        let _ = engine.process_record(&r, &mut alerts);
    }
    (config, engine)
}
