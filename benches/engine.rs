//! Whole-engine throughput (decode → classify → detect → suppress), each group with its
//! baseline in the same run so the ratio is visible at once:
//!
//! - `engine_demo_1m`: ~1M raw records of the demo stream (`demo::scenario_stream`: CloudTrail
//!   plus a few Entra ID and malformed records, with the attack scenarios), fed to a fresh
//!   `Engine::new(&demo_config())` by `process_record`; baseline `bare_borrowed`, the bare
//!   borrowed parse of the same records.
//! - `engine_cloudtrail_invictus`: real CloudTrail (the 1,000-record slice of `benches/data/`,
//!   cycled with event time moved forward each pass) through `process_record`: decode + detect,
//!   target ≥ 450k records/s. Also `process_predecoded` (classify + detect + suppress only, the
//!   same events decoded beforehand) and `bare_borrowed`.
//! - `engine_cloud_event_v1`: the same events as `cloud_event.v1` records through
//!   `process_record`, target ≥ 1.5M records/s.
//!
//! Engine construction (catalog compile, pre-sized key maps) is left out of the timing
//! (`iter_batched` setup), and so is dropping it.
//! - `engine_sigma_aws`: the invictus records with the 57 SigmaHQ AWS CloudTrail rules loaded
//!   (`aws_rules_57`) vs none (`no_rules`), same run.
//!
//! Run: `cargo bench --bench engine`.

mod common;

use cloudwarden::alert::Alert;
use cloudwarden::demo::{demo_config, scenario_stream, Scenario};
use cloudwarden::engine::Engine;
use cloudwarden::event::{decode_record, CloudEvent, DecodeLimits};
use common::{
    bare_parse, read_ndjson, shifted_passes, time_span_ms, to_cloud_event_v1, total_bytes,
    INVICTUS_SLICE,
};
use criterion::{
    black_box, criterion_group, criterion_main, BatchSize, BenchmarkGroup, Criterion, Throughput,
};
use std::time::{Duration, Instant};

/// Passes over the invictus slice per iteration (each pass moved forward in event time).
const INVICTUS_PASSES: usize = 20;

fn new_engine() -> Engine {
    Engine::new(&demo_config()).expect("the demo config is valid")
}

/// Feeds every record to `engine`; returns (events, alerts).
fn feed(engine: &mut Engine, records: &[Vec<u8>], alerts: &mut Vec<Alert>) -> (usize, usize) {
    let mut events = 0;
    let mut raised = 0;
    for raw in records {
        if let Ok(n) = engine.process_record(raw, alerts) {
            events += n;
        }
        raised += alerts.len();
        alerts.clear();
    }
    (events, raised)
}

fn bench_bare(group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>, r: &[Vec<u8>]) {
    group.bench_function("bare_borrowed", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for raw in r {
                let bare = bare_parse(raw);
                n += usize::from(bare.is_some());
                black_box(&bare);
            }
            n
        })
    });
}

fn bench_engine(group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>, r: &[Vec<u8>]) {
    group.bench_function("process_record", |b| {
        let mut alerts = Vec::with_capacity(64);
        b.iter_batched(
            new_engine,
            |mut engine| {
                black_box(feed(&mut engine, r, &mut alerts));
                engine
            },
            BatchSize::PerIteration,
        )
    });
}

/// One untimed run, to print what the stream does (events, alerts, decode errors).
fn describe(name: &str, records: &[Vec<u8>]) {
    let mut engine = new_engine();
    let mut alerts = Vec::new();
    let start = Instant::now();
    let (events, raised) = feed(&mut engine, records, &mut alerts);
    let secs = start.elapsed().as_secs_f64();
    let stats = engine.stats();
    eprintln!(
        "{name}: {} records ({} bytes, {} B/record) → {events} events, {raised} alerts, {} decode errors {:?}, {} late; one untimed pass {:.0} records/s",
        records.len(),
        total_bytes(records),
        total_bytes(records) / records.len().max(1) as u64,
        stats.decode_errors_total(),
        stats.decode_errors,
        stats.late_events,
        records.len() as f64 / secs,
    );
}

fn demo_mix(c: &mut Criterion) {
    // 180 minutes keeps every attack scenario (they sit at +60 … +150 min); account
    // 222222222222 us-east-1 goes silent after +90 min, which drops 1/12 of the benign traffic.
    let scenario = Scenario {
        minutes: 180,
        benign_per_minute: 6_060,
        ..Scenario::default()
    };
    let start = Instant::now();
    let records = scenario_stream(&scenario);
    eprintln!(
        "engine_demo_1m: generated {} records in {:.1}s (outside the timing)",
        records.len(),
        start.elapsed().as_secs_f64()
    );
    describe("engine_demo_1m", &records);
    let mut group = c.benchmark_group("engine_demo_1m");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(15))
        .throughput(Throughput::Elements(records.len() as u64));
    bench_engine(&mut group, &records);
    bench_bare(&mut group, &records);
    group.finish();
}

fn invictus(c: &mut Criterion) {
    let slice = read_ndjson(INVICTUS_SLICE);
    // Move each pass past the previous one, rounded up to the next minute.
    let shift = (time_span_ms(&slice) / 60_000 + 1) * 60_000;
    let records = shifted_passes(&slice, INVICTUS_PASSES, shift);
    describe("engine_cloudtrail_invictus", &records);

    let mut group = c.benchmark_group("engine_cloudtrail_invictus");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(records.len() as u64));
    bench_engine(&mut group, &records);
    // The same events decoded beforehand: what classify + detect + suppress cost on their own.
    let limits = DecodeLimits::default();
    let mut decoded: Vec<CloudEvent<'_>> = Vec::with_capacity(records.len());
    for raw in &records {
        decode_record(raw, &limits, &mut decoded).expect("the slice decodes");
    }
    group.bench_function("process_predecoded", |b| {
        let mut alerts = Vec::with_capacity(64);
        b.iter_batched(
            new_engine,
            |mut engine| {
                for ev in &decoded {
                    engine.process(ev, &mut alerts);
                    alerts.clear();
                }
                engine
            },
            BatchSize::PerIteration,
        )
    });
    bench_bare(&mut group, &records);
    group.finish();

    let v1 = to_cloud_event_v1(&records);
    describe("engine_cloud_event_v1", &v1);
    let mut group = c.benchmark_group("engine_cloud_event_v1");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(v1.len() as u64));
    bench_engine(&mut group, &v1);
    group.finish();
}

/// The same CloudTrail records with the 57 SigmaHQ AWS CloudTrail rules loaded vs none, in one
/// run (goal: ≥ 0.7× of the rule-less throughput).
fn sigma_aws(c: &mut Criterion) {
    let slice = read_ndjson(INVICTUS_SLICE);
    let shift = (time_span_ms(&slice) / 60_000 + 1) * 60_000;
    let records = shifted_passes(&slice, INVICTUS_PASSES, shift);
    let none = demo_config().validated().expect("the demo config is valid");
    let mut with = demo_config();
    with.sigma.rules = vec![concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/sigma/rules/aws/cloudtrail"
    )
    .to_owned()];
    let with = with.validated().expect("the AWS rules load");
    assert_eq!(with.sigma().detections.len(), 57);
    let mut group = c.benchmark_group("engine_sigma_aws");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(records.len() as u64));
    for (name, valid) in [("no_rules", &none), ("aws_rules_57", &with)] {
        group.bench_function(name, |b| {
            let mut alerts = Vec::with_capacity(64);
            b.iter_batched(
                || Engine::new(valid).expect("valid"),
                |mut engine| {
                    black_box(feed(&mut engine, &records, &mut alerts));
                    engine
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(engine, invictus, demo_mix, sigma_aws);
criterion_main!(engine);
