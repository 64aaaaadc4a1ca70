//! Bytes of detector state per tracked key (target ≤ 300 B/key). Not a timing, so no criterion:
//! a counting global allocator tracks live heap bytes and allocations, and the engine is fed
//! N = 100,000 distinct principals, each doing one `GetSecretValue` and one `DescribeInstances`
//! (raw CloudTrail records built with `serde_json::json!`, all generated before measuring).
//!
//! Three points are measured: A before `Engine::new`, B after it (empty engine), C after the
//! feed. Reported per detector (an engine with only that detector enabled) and for the whole
//! default engine:
//! - `incremental` = (C − B) / keys: what one more key costs (map node, window buffers);
//! - `all-in` = (C − A) / keys: also the engine's fixed cost, chiefly the key maps, which the
//!   `lru` crate sizes for `max_keys` up front (`LruCache::new` → `HashMap::with_capacity`).
//!
//! Counted bytes are what the code asked for; glibc adds ~8–16 B per allocation (header and
//! 16-byte rounding), so `allocs/key` is printed too, and the process RSS growth as a rough
//! cross-check (meaningful for the first engine only: later ones reuse pages freed before).
//! `log_source_silence` keys on (provider, scope, region, log); it is measured on a second feed of
//! 40,000 distinct accounts (its default `max_sources` is 50,000).
//! Run: `cargo bench --bench state`.

mod common;

use cloudwarden::config::Config;
use cloudwarden::engine::Engine;
use cloudwarden::event::time::format_rfc3339_ms;
use cloudwarden::event::{decode_record, CloudEvent, DecodeLimits};
use serde_json::json;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};

struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static LIVE_ALLOCS: AtomicIsize = AtomicIsize::new(0);
/// Every allocation ever made (monotonic), for allocations per record.
static ALLOC_CALLS: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; the counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as isize, Relaxed);
            LIVE_ALLOCS.fetch_add(1, Relaxed);
            ALLOC_CALLS.fetch_add(1, Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as isize, Relaxed);
            LIVE_ALLOCS.fetch_add(1, Relaxed);
            ALLOC_CALLS.fetch_add(1, Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE_BYTES.fetch_sub(layout.size() as isize, Relaxed);
        LIVE_ALLOCS.fetch_sub(1, Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            LIVE_BYTES.fetch_add(new_size as isize - layout.size() as isize, Relaxed);
            ALLOC_CALLS.fetch_add(1, Relaxed);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Clone, Copy)]
struct Snapshot {
    bytes: isize,
    allocs: isize,
    rss: isize,
}

fn snapshot() -> Snapshot {
    Snapshot {
        bytes: LIVE_BYTES.load(Relaxed),
        allocs: LIVE_ALLOCS.load(Relaxed),
        rss: rss_bytes(),
    }
}

/// Resident set size from `/proc/self/statm` (0 where unavailable).
fn rss_bytes() -> isize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<isize>().ok())
        .map_or(0, |pages| pages * 4096)
}

const N: usize = 100_000;
const SILENCE_SOURCES: usize = 40_000;
/// 2026-11-01T00:00:00Z
const T0: i64 = 1_793_491_200_000;

fn record(
    i: usize,
    t: i64,
    account: &str,
    name: &str,
    source: &str,
    request: serde_json::Value,
) -> Vec<u8> {
    let r = json!({
        "eventVersion": "1.09",
        "userIdentity": {
            "type": "IAMUser",
            "principalId": format!("AIDA{i:016X}"),
            "arn": format!("arn:aws:iam::{account}:user/svc-{i:06}"),
            "accountId": account,
        },
        "eventTime": format_rfc3339_ms(t),
        "eventSource": source,
        "eventName": name,
        "awsRegion": "us-east-1",
        "sourceIPAddress": format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255),
        "userAgent": "aws-cli/2.15.0 Python/3.11 Linux/6.1",
        "requestParameters": request,
        "responseElements": null,
        "requestID": format!("{i:016x}"),
        "eventID": format!("00000000-0000-4000-8000-{i:012x}"),
        "readOnly": true,
        "eventType": "AwsApiCall",
        "managementEvent": true,
        "recipientAccountId": account,
        "eventCategory": "Management",
    });
    serde_json::to_vec(&r).expect("a json! value serializes")
}

/// N principals (spread over 100 accounts), each one GetSecretValue and one DescribeInstances,
/// all within 200 s of event time so no window expires before the measurement.
fn principals_feed() -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(2 * N);
    for i in 0..N {
        let account = format!("{:012}", 100_000_000_000u64 + (i % 100) as u64);
        let t = T0 + i as i64 * 2;
        out.push(record(
            i,
            t,
            &account,
            "GetSecretValue",
            "secretsmanager.amazonaws.com",
            json!({"secretId": format!("prod/app-{i:06}/db")}),
        ));
        out.push(record(
            i,
            t + 1,
            &account,
            "DescribeInstances",
            "ec2.amazonaws.com",
            json!({"maxResults": 100}),
        ));
    }
    out
}

/// One DescribeInstances in each of `SILENCE_SOURCES` accounts: that many log sources.
fn sources_feed() -> Vec<Vec<u8>> {
    (0..SILENCE_SOURCES)
        .map(|i| {
            let account = format!("{:012}", 200_000_000_000u64 + i as u64);
            record(
                i,
                T0 + i as i64 * 5,
                &account,
                "DescribeInstances",
                "ec2.amazonaws.com",
                json!({"maxResults": 100}),
            )
        })
        .collect()
}

/// The default config with only `only` enabled (`None`: all detectors, as shipped).
fn config(only: Option<&str>) -> Config {
    let mut c = Config::default();
    if let Some(name) = only {
        let d = &mut c.detectors;
        d.log_disable.enabled = name == "log_disable";
        d.log_source_silence.enabled = name == "log_source_silence";
        d.secret_fetch_rate.enabled = name == "secret_fetch_rate";
        d.discovery_burst.enabled = name == "discovery_burst";
        d.quota_change.enabled = name == "quota_change";
        d.tenant_settings.enabled = name == "tenant_settings";
        d.event_trigger.enabled = name == "event_trigger";
        d.impair_defenses.enabled = name == "impair_defenses";
        d.conditional_access.enabled = name == "conditional_access";
        d.serverless.enabled = name == "serverless";
    }
    c
}

fn per_key(delta: isize, keys: usize) -> f64 {
    delta as f64 / keys.max(1) as f64
}

/// Feeds `records` to an engine built from `config`, prints the state per key.
fn measure(label: &str, config: &Config, records: &[Vec<u8>]) -> (f64, f64) {
    let mut alerts = Vec::with_capacity(1024);
    let a = snapshot();
    let mut engine = Engine::new(config).expect("valid config");
    let b = snapshot();
    let mut raised = 0;
    for raw in records {
        engine
            .process_record(raw, &mut alerts)
            .expect("generated records decode");
        raised += alerts.len();
        alerts.clear();
    }
    let c = snapshot();
    let stats = engine.detector_stats();
    let keys: usize = stats.iter().map(|(_, s)| s.keys).sum();
    let evicted: u64 = stats.iter().map(|(_, s)| s.evicted).sum();
    let held: Vec<String> = stats
        .iter()
        .filter(|(_, s)| s.keys > 0)
        .map(|(n, s)| format!("{n}={}", s.keys))
        .collect();
    let incremental = per_key(c.bytes - b.bytes, keys);
    let all_in = per_key(c.bytes - a.bytes, keys);
    println!(
        "state: {label} {keys} keys [{}], {incremental:.0} bytes/key incremental, {all_in:.0} bytes/key all-in \
         (engine fixed {:.1} MB), {:.2} allocs/key, RSS +{:.0} bytes/key; {evicted} evicted, {raised} alerts",
        held.join(" "),
        (b.bytes - a.bytes) as f64 / 1e6,
        per_key(c.allocs - b.allocs, keys),
        per_key(c.rss - b.rss, keys),
    );
    drop(engine);
    (incremental, all_in)
}

/// Heap allocations per record on the hot path (should be ~0 for borrowed decoding): decode
/// alone, the bare borrowed parse, and the whole engine in steady state (second pass).
fn allocations_per_record() {
    let cloudtrail = common::read_ndjson(common::INVICTUS_SLICE);
    let v1 = common::to_cloud_event_v1(&cloudtrail);
    let limits = DecodeLimits::default();
    for (name, records) in [("cloudtrail", &cloudtrail), ("cloud_event_v1", &v1)] {
        let mut out: Vec<CloudEvent<'_>> = Vec::with_capacity(8);
        let before = ALLOC_CALLS.load(Relaxed);
        for raw in records.iter() {
            out.clear();
            decode_record(raw, &limits, &mut out).expect("bench input decodes");
        }
        let decode = per_key(ALLOC_CALLS.load(Relaxed) - before, records.len());
        let before = ALLOC_CALLS.load(Relaxed);
        for raw in records.iter() {
            std::hint::black_box(common::bare_parse(raw));
        }
        let bare = per_key(ALLOC_CALLS.load(Relaxed) - before, records.len());
        let mut engine = Engine::new(&cloudwarden::demo::demo_config()).expect("valid config");
        let mut alerts = Vec::with_capacity(1024);
        let shift = (common::time_span_ms(&cloudtrail) / 60_000 + 1) * 60_000;
        let passes = common::shifted_passes(records, 2, shift);
        let (first, second) = passes.split_at(records.len());
        for raw in first {
            let _ = engine.process_record(raw, &mut alerts);
            alerts.clear();
        }
        let before = ALLOC_CALLS.load(Relaxed);
        for raw in second {
            let _ = engine.process_record(raw, &mut alerts);
            alerts.clear();
        }
        let engine_allocs = per_key(ALLOC_CALLS.load(Relaxed) - before, second.len());
        println!(
            "allocs: {name}: {decode:.2} allocations/record in decode_record, {bare:.2} in the bare \
             borrowed parse, {engine_allocs:.2} in Engine::process_record (steady state)"
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter that names nothing here skips the run.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if !filter.is_empty() && !filter.iter().any(|f| "state".contains(f.as_str())) {
        return;
    }
    allocations_per_record();
    let principals = principals_feed();
    let sources = sources_feed();
    println!(
        "state: feed of {N} principals × (GetSecretValue + DescribeInstances) = {} records; \
         {SILENCE_SOURCES} log sources for log_source_silence",
        principals.len()
    );
    let mut worst: f64 = 0.0;
    for name in ["secret_fetch_rate", "discovery_burst"] {
        let (inc, all_in) = measure(name, &config(Some(name)), &principals);
        worst = worst.max(inc).max(all_in);
    }
    let (inc, all_in) = measure(
        "log_source_silence",
        &config(Some("log_source_silence")),
        &sources,
    );
    worst = worst.max(inc).max(all_in);
    let (inc, all_in) = measure("overall (all detectors)", &config(None), &principals);
    worst = worst.max(inc).max(all_in);
    println!(
        "state: worst {worst:.0} bytes/key; target ≤ 300: {}",
        if worst <= 300.0 { "met" } else { "MISSED" }
    );
}
