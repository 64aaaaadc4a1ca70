//! The throughput cost of the delivery guarantees, each as a ratio to the service without them,
//! in one run:
//!
//! 1. **baseline**: repartition on, `state.changelog = false`, at-least-once;
//! 2. **at-least-once + durable state**: `state.changelog = true` (checkpoints every
//!    `state.checkpoint_interval`, 5 s by default);
//! 3. **exactly-once**: `state.changelog = true`, `processing.guarantee = "exactly_once"`
//!    (Kafka transactions, committed every `processing.transaction_interval`, 500 ms by default),
//!    a fresh `processing.transactional_id` per run.
//!
//! # Mock-cluster figures
//!
//! Every mode runs on librdkafka's mock cluster (`rdkafka::mocking::MockCluster`: in process,
//! Kafka protocol over TCP on localhost); `benches/service.rs` measures the
//! exactly-once/at-least-once ratio on Apache Kafka. The absolute figures here are
//! **mock-cluster figures**: the mock returns one record batch per partition per fetch, keeps everything in this
//! process's memory and shares its cores, and its latencies are not a real cluster's. It also
//! neither stores transactional offsets nor hides aborted records (see `tests/it/exactly_once.rs`).
//! Only the ratios between modes measured in the same run mean something; the three modes are run
//! twice in the same process to show how much they move from one repetition to the next.
//!
//! # What is measured
//!
//! Each mode gets a fresh mock cluster with the topics made up front (the mock has no
//! CreateTopics): input, alerts, dead letters, repartition and changelog, the three of them
//! `GUARANTEE_BENCH_PARTITIONS` partitions (default 12, the service's default
//! `repartition.partitions`). The same input, `GUARANTEE_BENCH_RECORDS` records (default 400000,
//! ~270 MB) of `cloudwarden::demo::scenario_stream` (benign traffic, attacks, a few malformed
//! records; the generator `benches/service.rs` and `benches/scale_out.rs` use), is produced
//! round-robin over the input partitions with no key, lz4-compressed (as the service's own
//! producer), **before** the service starts, so the measurement is consumption, not the producer.
//! Then one service instance (`cloudwarden::kafka::service::Service` on its own thread) starts.
//!
//! Why 12 partitions and 400000 records: the mock keeps about 5 MB per partition and silently
//! deletes the oldest batches past that (`max_size` in librdkafka's `rdkafka_mock.c`, not
//! configurable), so 4 input partitions hold at most ~160000 of these records even compressed
//! (the producer here checks that every record is still there), and at that size a mode lasts
//! ~1 s (stage 1) to ~2.5 s (stage 2 done), too short against the service's 500 ms metric
//! publication: the ratios moved by ±30 % between repetitions. `GUARANTEE_BENCH_PARTITIONS=4
//! GUARANTEE_BENCH_RECORDS=150000` runs that smaller set-up. The repartition topic has the same
//! cap: a mode whose stage 2 fell more than ~5 MB per partition behind would lose records, and is
//! flagged INVALID (the topic's low watermarks are checked).
//!
//! Two clocks, both from the first input record consumed:
//!
//! - **seconds**: until every input record is consumed and `Metrics::in_flight` is 0. With
//!   repartition on, that is stage 1 (decode, route, write to the repartition topic), plus
//!   whatever stage 2 did meanwhile: while the input is backlogged, stage 2 reads little of the
//!   repartition topic (the input partitions' big batches fill the fetches);
//! - **e2e**: until stage 2 has caught up too: the repartition records written by the end of the
//!   first clock consumed, and at most 100 events left in the reorder buffers (as
//!   `benches/scale_out.rs`). Checkpoints and most of the windows' work happen in stage 2, so this
//!   is the clock that includes everything the guarantees cost.
//!
//! The first record consumed is when more than 100 messages were first in flight (stage 1's
//! first repartition records; `in_flight` is updated every poll loop, markers alone are one per
//! repartition partition every 200 ms). The ends come from `records_in`, which the service
//! publishes every ~500 ms: they are interpolated linearly between the publication before and the
//! one that showed the target (the per-run lines also give the times as observed at the
//! publications). Printed beside them: alerts acknowledged on the alerts topic (`messages_out`),
//! dead letters, checkpoints, exactly-once transactions committed / aborted, rewinds, rebalances
//! and backpressure pauses. Every mode has a deadline (`GUARANTEE_BENCH_DEADLINE_SECS`, default
//! 40 s from the service's start) and reports "did not finish" instead of hanging.
//!
//! Service settings shared by every mode (as `benches/scale_out.rs`): `demo_config()`,
//! `time.allowed_lateness = 0` (the input is in event-time order on every partition, so stage 2
//! releases its reorder buffer as markers arrive instead of holding the last 5 minutes of event
//! time), `service.partition_idle_timeout = 2 s`, `session.timeout.ms = 6000` (the mock waits
//! `session.timeout − 1 s` per rebalance round), `heartbeat.interval.ms = 500`.
//!
//! Run: `cargo bench --bench guarantee` (~1.5 minutes after the build on 2 cores). The service's
//! log goes to stderr when `RUST_LOG` is set (`RUST_LOG=info cargo bench --bench guarantee`);
//! `GUARANTEE_BENCH_TRACE=1` prints the published counters of each run; `GUARANTEE_BENCH_REPEATS`
//! (default 2) sets how many times the three modes run.

use cloudwarden::config::Config;
use cloudwarden::demo::{scenario_stream, Scenario};
use cloudwarden::kafka::config::Guarantee;
use cloudwarden::kafka::service::Service;
use cloudwarden::telemetry::Metrics;
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const INPUT: &str = "audit";
const ALERTS: &str = "alerts";
const DLQ: &str = "dead-letters";
const REPARTITION: &str = "repartition";
const CHANGELOG: &str = "changelog";
/// Messages in flight that only stage 1 at work produces (markers: one per repartition partition
/// every 200 ms): the first record has been consumed.
const BUSY: u64 = 100;
/// Stage-2 events still buffered when stage 2 counts as caught up (as `benches/scale_out.rs`).
const DRAINED: u64 = 100;

/// Partitions of the input, repartition and changelog topics (`GUARANTEE_BENCH_PARTITIONS`).
fn partitions() -> i32 {
    static P: std::sync::OnceLock<i32> = std::sync::OnceLock::new();
    *P.get_or_init(|| env_usize("GUARANTEE_BENCH_PARTITIONS", 12).max(1) as i32)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Baseline,
    Checkpoints,
    ExactlyOnce,
}

impl Mode {
    const ALL: [Mode; 3] = [Mode::Baseline, Mode::Checkpoints, Mode::ExactlyOnce];

    fn label(self) -> &'static str {
        match self {
            Mode::Baseline => "baseline (at-least-once, no changelog)",
            Mode::Checkpoints => "at-least-once + changelog checkpoints",
            Mode::ExactlyOnce => "exactly-once (transactions)",
        }
    }
}

fn cluster() -> MockCluster<'static, DefaultProducerContext> {
    let c = MockCluster::new(1).expect("mock cluster");
    for (topic, partitions) in [
        (INPUT, partitions()),
        (ALERTS, 1),
        (DLQ, 1),
        (REPARTITION, partitions()),
        (CHANGELOG, partitions()),
    ] {
        c.create_topic(topic, partitions, 1).expect("create topic");
    }
    c
}

fn config(brokers: &str, mode: Mode, run: &str) -> Config {
    let mut c = cloudwarden::demo::demo_config();
    c.kafka.brokers = brokers.to_owned();
    c.kafka.group_id = format!("cw-{run}");
    c.kafka.input_topics = vec![INPUT.into()];
    c.kafka.alerts_topic = ALERTS.into();
    c.kafka.dead_letter_topic = DLQ.into();
    c.repartition.enabled = true;
    c.repartition.topic = REPARTITION.into();
    c.repartition.partitions = partitions();
    c.state.changelog_topic = CHANGELOG.into();
    c.state.changelog = mode != Mode::Baseline;
    if mode == Mode::ExactlyOnce {
        c.processing.guarantee = Guarantee::ExactlyOnce;
        c.processing.transactional_id = format!("cw-{run}-0");
    }
    c.time.allowed_lateness = Duration::ZERO;
    c.service.partition_idle_timeout = Duration::from_secs(2);
    c.service.listen = "127.0.0.1:0".into();
    for (k, v) in [
        ("session.timeout.ms", "6000"),
        ("heartbeat.interval.ms", "500"),
    ] {
        c.kafka.consumer.insert(k.into(), v.into());
    }
    c
}

/// Counts failed deliveries (a plain `BaseProducer` drops them silently).
#[derive(Default)]
struct Deliveries {
    failed: std::sync::atomic::AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl rdkafka::ClientContext for Deliveries {}

impl rdkafka::producer::ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            self.first_error
                .lock()
                .unwrap()
                .get_or_insert_with(|| e.to_string());
        }
    }
}

/// Round-robin over the input partitions, no key, as fast as the mock takes it; panics unless
/// every record was acknowledged.
fn produce(brokers: &str, records: &[Vec<u8>]) -> Duration {
    let p: BaseProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        // The mock keeps ~5 MB per partition (older batches are deleted): compressed, the input
        // fits. lz4, as the service's own producer.
        .set("compression.type", "lz4")
        .create_with_context(Deliveries::default())
        .expect("producer");
    let t = Instant::now();
    for (i, r) in records.iter().enumerate() {
        let mut rec = BaseRecord::<(), [u8]>::to(INPUT)
            .payload(r.as_slice())
            .partition(i as i32 % partitions());
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((_, back)) => {
                    p.poll(Duration::from_millis(10));
                    rec = back;
                }
            }
        }
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(120)).expect("flush");
    let elapsed = t.elapsed();
    let mut stored = 0;
    for partition in 0..partitions() {
        let (low, high) = p
            .client()
            .fetch_watermarks(INPUT, partition, Duration::from_secs(10))
            .expect("watermarks");
        stored += high - low;
    }
    let ctx = p.context();
    let failed = ctx.failed.load(Ordering::Relaxed);
    assert_eq!(
        failed,
        0,
        "deliveries failed, first: {:?}",
        ctx.first_error.lock().unwrap()
    );
    assert_eq!(
        stored,
        records.len() as i64,
        "the mock cluster kept {stored} of {} records: it keeps ~5 MB per partition \
         (rdkafka_mock.c, max_size), deleting older batches; use fewer records",
        records.len()
    );
    elapsed
}

/// Records the mock has deleted from the start of `topic` (the sum of its low watermarks).
fn trimmed(brokers: &str, topic: &str) -> i64 {
    let client: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("client");
    (0..partitions())
        .map(|p| {
            client
                .client()
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .map_or(0, |(low, _)| low)
        })
        .sum()
}

fn count(map: &Mutex<BTreeMap<String, u64>>, key: &str) -> u64 {
    map.lock().unwrap().get(key).copied().unwrap_or(0)
}

fn sum(map: &Mutex<BTreeMap<String, u64>>) -> u64 {
    map.lock().unwrap().values().sum()
}

/// What one mode measured. Times in seconds; `None`: not reached before the deadline.
#[derive(Default)]
struct Run {
    /// Finished before the deadline; otherwise `note` says what was left.
    ok: bool,
    note: String,
    produce_s: f64,
    /// Service start → first input record consumed, as observed (group join, assignment).
    join_s: f64,
    /// The brief's clock: first input record consumed → every input record consumed and nothing
    /// in flight; interpolated within the service's 500 ms publications (see [`crossing`]), and
    /// as observed at the publications.
    seconds: f64,
    observed_s: f64,
    /// First input record consumed → stage 2 caught up too (interpolated; as observed).
    e2e_s: Option<f64>,
    e2e_observed_s: Option<f64>,
    alerts: u64,
    dead_letters: u64,
    checkpoints: u64,
    committed: u64,
    aborted: u64,
    rewinds: u64,
    rebalances: u64,
    backpressure: u64,
}

fn rate(n: usize, seconds: f64) -> f64 {
    n as f64 / seconds.max(1e-9)
}

/// A counter as observed at the service's publications: (seconds since start, value), one entry
/// per change.
type Series = Vec<(f64, u64)>;

fn push_change(series: &mut Series, t: f64, v: u64) {
    if v > 0 && series.last().is_none_or(|l| l.1 != v) {
        series.push((t, v));
    }
}

/// When the counter reached `target`: linear between the publication before and the one that
/// showed it (the service processes continuously in between), or that publication when no
/// earlier one exists; and the time of that publication.
fn crossing(series: &Series, target: u64) -> Option<(f64, f64)> {
    let i = series.iter().position(|s| s.1 >= target)?;
    let (t1, c1) = series[i];
    if i == 0 {
        return Some((t1, t1));
    }
    let (t0, c0) = series[i - 1];
    Some((t0 + (t1 - t0) * (target - c0) as f64 / (c1 - c0) as f64, t1))
}

/// When the first record was consumed: the first publication showing records, less the time
/// those records took at the rate of the next interval (at most one interval back). The
/// publication itself when there is no next one.
fn first_record(series: &Series) -> Option<f64> {
    let (t1, c1) = *series.first()?;
    let Some(&(t2, c2)) = series.get(1) else {
        return Some(t1);
    };
    let back = (t2 - t1) * c1 as f64 / (c2 - c1) as f64;
    Some(t1 - back.min(t2 - t1))
}

fn measure(mode: Mode, records: &[Vec<u8>], deadline_after: Duration, rep: usize) -> Run {
    let mut r = Run::default();
    let c = cluster();
    let brokers = c.bootstrap_servers();
    r.produce_s = produce(&brokers, records).as_secs_f64();
    let n = records.len() as u64;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let run = format!("guarantee-{rep}-{}-{nanos}", mode as u8);

    let metrics = Arc::new(Metrics::default());
    let service = Service::new(config(&brokers, mode, &run), metrics.clone()).expect("service");
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let handle: JoinHandle<Result<(), String>> =
        std::thread::spawn(move || service.run(&s).map_err(|e| e.to_string()));

    let started = Instant::now();
    let deadline = started + deadline_after;
    let m = &metrics;
    let (mut input, mut repartition) = (Series::new(), Series::new());
    // Observed: all input consumed with nothing in flight (time, repartition records written by
    // then); stage 2 caught up.
    let mut done: Option<(f64, u64)> = None;
    let mut caught_up: Option<f64> = None;
    // First seen with more than `BUSY` messages awaiting acknowledgement.
    let mut busy: Option<f64> = None;
    let (mut consumed, mut in_flight): (u64, u64);
    loop {
        let t = started.elapsed().as_secs_f64();
        let (inp, rep) = {
            let g = m.records_in.lock().unwrap();
            let get = |k: &str| g.get(k).copied().unwrap_or(0);
            (get(INPUT), get(REPARTITION))
        };
        (consumed, in_flight) = (inp, m.in_flight.load(Ordering::Relaxed));
        if busy.is_none() && in_flight > BUSY {
            busy = Some(t);
        }
        push_change(&mut input, t, inp);
        push_change(&mut repartition, t, rep);
        if done.is_none() && inp >= n && in_flight == 0 {
            // `repartition_out` is published just after `records_in`.
            std::thread::sleep(Duration::from_millis(20));
            done = Some((t, sum(&m.repartition_out)));
        }
        if let Some((_, sent)) = done {
            if rep >= sent && m.reorder_buffered.load(Ordering::Relaxed) <= DRAINED {
                caught_up = Some(t);
                break;
            }
        }
        if handle.is_finished() || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    if std::env::var_os("GUARANTEE_BENCH_TRACE").is_some() {
        eprintln!("{} input {input:?}", mode.label());
        eprintln!("{} repartition {repartition:?}", mode.label());
        eprintln!("{} busy {busy:?}", mode.label());
    }
    if let (Some((done_t, sent)), Some(estimate)) = (done, first_record(&input)) {
        r.ok = true;
        let observed_first = input[0].0;
        // The first record consumed: when stage 1's first repartition records were seen in
        // flight (real time, not published), if that is consistent with the publications.
        let first = busy
            .filter(|b| *b <= observed_first + 0.01 && *b >= observed_first - 1.0)
            .unwrap_or(estimate);
        r.join_s = observed_first;
        r.observed_s = done_t - observed_first;
        // The interpolated end, unless `in_flight` only reached 0 at a later publication.
        let end = match crossing(&input, n) {
            Some((e, at)) if done_t - at < 0.1 => e,
            _ => done_t,
        };
        r.seconds = end - first;
        if let Some(c) = caught_up {
            r.e2e_observed_s = Some(c - observed_first);
            // Likewise, unless the reorder buffers drained only at a later publication.
            let end = match crossing(&repartition, sent) {
                Some((e, at)) if c - at < 0.1 => e,
                _ => c,
            };
            r.e2e_s = Some(end - first);
        }
    } else {
        r.note = format!(
            "did not finish: {consumed} of {n} input records consumed, {in_flight} messages in flight after {:.0} s{}",
            started.elapsed().as_secs_f64(),
            if handle.is_finished() {
                " (the service stopped)"
            } else {
                ""
            }
        );
    }

    // The mock deletes a partition's oldest batches past ~5 MB: had stage 2 fallen that far
    // behind, records would have been skipped, not processed.
    let lost = trimmed(&brokers, REPARTITION);
    if lost > 0 {
        r.note = format!(
            "{} INVALID: the mock deleted {lost} unread repartition records (5 MB per partition cap); use more partitions or fewer records",
            r.note
        );
    }

    // Stop; the last checkpoint / transaction is not part of the measurement.
    stop.store(true, Ordering::Relaxed);
    let stop_deadline = Instant::now() + Duration::from_secs(15);
    while !handle.is_finished() && Instant::now() < stop_deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut note = |s: &str| {
        r.note = format!("{} {s}", r.note).trim().to_owned();
    };
    if handle.is_finished() {
        match handle.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => note(&format!("service error: {e}")),
            Err(_) => note("service panicked"),
        }
    } else {
        note("service did not stop within 15 s (left running)");
        // Its clients still talk to the mock: keep both alive rather than risk a hang in drop.
        std::mem::forget(handle);
        std::mem::forget(c);
    }
    r.alerts = count(&m.messages_out, ALERTS);
    r.dead_letters = m.dead_letters.load(Ordering::Relaxed);
    r.checkpoints = m.checkpoints.load(Ordering::Relaxed);
    r.committed = count(&m.transactions, "committed");
    r.aborted = count(&m.transactions, "aborted");
    r.rewinds = m.rewinds.load(Ordering::Relaxed);
    r.rebalances = m.rebalances.load(Ordering::Relaxed);
    r.backpressure = m.backpressure_pauses.load(Ordering::Relaxed);
    r
}

fn main() {
    // `cargo test --benches` runs bench targets with `--test`: nothing to check here.
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(std::env::var("RUST_LOG").unwrap_or_default())
            .with_writer(std::io::stderr)
            .try_init();
    }
    let n = env_usize("GUARANTEE_BENCH_RECORDS", 400_000);
    let repeats = env_usize("GUARANTEE_BENCH_REPEATS", 2).max(1);
    let deadline = Duration::from_secs(env_usize("GUARANTEE_BENCH_DEADLINE_SECS", 40) as u64);
    let records = scenario_stream(&Scenario {
        // ~1/6 of the benign records stop after the +90 min silence: generate enough.
        minutes: (n / 800 + 10) as i64,
        benign_per_minute: 1000,
        ..Scenario::default()
    });
    let records = &records[..n.min(records.len())];
    let n = records.len();
    let bytes: usize = records.iter().map(Vec::len).sum();
    let env: Vec<String> = [
        "GUARANTEE_BENCH_RECORDS",
        "GUARANTEE_BENCH_PARTITIONS",
        "GUARANTEE_BENCH_REPEATS",
        "GUARANTEE_BENCH_DEADLINE_SECS",
        "GUARANTEE_BENCH_TRACE",
        "RUST_LOG",
    ]
    .iter()
    .filter_map(|k| std::env::var(k).ok().map(|v| format!("{k}={v} ")))
    .collect();
    println!("command: {}cargo bench --bench guarantee", env.concat());
    println!(
        "setup: librdkafka mock cluster (in process, 1 broker), a fresh one per mode. MOCK-CLUSTER FIGURES: the mock returns one record batch per partition per fetch and its latencies are not a real cluster's, so only the ratios within this run mean something. {n} records of demo::scenario_stream ({:.1} MB, {:.0} B/record, lz4), produced round-robin over {p} input partitions before the service starts; repartition and changelog topics {p} partitions; one instance. Clocks from the first input record consumed (first seen > {BUSY} messages in flight): -> every input record consumed and in_flight == 0 (\"seconds\"; stage 1, mostly), and -> stage 2 caught up too (\"e2e\": repartition records consumed, reorder buffers <= {DRAINED}); the service publishes its counters every ~500 ms, the ends are interpolated between publications (the per-run lines also give them as observed at the publications). Deadline {} s per mode; the 3 modes {repeats} times in this process",
        bytes as f64 / 1e6,
        bytes as f64 / n.max(1) as f64,
        deadline.as_secs(),
        p = partitions(),
    );

    let opt = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.2} s"));
    let mut table = Vec::new();
    for rep in 1..=repeats {
        let mut runs = Vec::new();
        for mode in Mode::ALL {
            let r = measure(mode, records, deadline, rep);
            let result = if r.ok {
                format!(
                    "{:.0} records/s ({:.2} s; observed {:.2} s), e2e {} (observed {})",
                    rate(n, r.seconds),
                    r.seconds,
                    r.observed_s,
                    opt(r.e2e_s),
                    opt(r.e2e_observed_s)
                )
            } else {
                "did not finish".to_owned()
            };
            println!(
                "rep {rep} {}: {result} | produced in {:.1} s; service start -> first record observed {:.1} s; alerts {}, dead letters {}, checkpoints {}, transactions committed {} / aborted {}, rewinds {}, rebalances {}, backpressure pauses {}{}",
                mode.label(),
                r.produce_s,
                r.join_s,
                r.alerts,
                r.dead_letters,
                r.checkpoints,
                r.committed,
                r.aborted,
                r.rewinds,
                r.rebalances,
                r.backpressure,
                if r.note.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", r.note)
                },
            );
            runs.push((mode, r));
        }
        table.push(runs);
    }

    println!();
    println!("MOCK-CLUSTER FIGURES (librdkafka mock, not a real cluster): compare the ratios only");
    let row = |c: [&str; 11]| {
        println!(
            "{:<3} {:<38} {:>7} {:>7} {:>9} {:>5} {:>7} {:>9} {:>5} {:>6} {:>4}",
            c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], c[10]
        )
    };
    row([
        "rep",
        "mode",
        "records",
        "seconds",
        "records/s",
        "ratio",
        "e2e s",
        "e2e rec/s",
        "ratio",
        "alerts",
        "txns",
    ]);
    for (rep, runs) in table.iter().enumerate() {
        let base = runs
            .iter()
            .find(|(m, r)| *m == Mode::Baseline && r.ok)
            .map(|(_, r)| r);
        for (mode, r) in runs {
            let f = |secs: Option<f64>, base: Option<f64>| match secs {
                Some(s) => (
                    format!("{s:.2}"),
                    format!("{:.0}", rate(n, s)),
                    base.map_or("n/a".to_owned(), |b| format!("{:.2}", b / s)),
                ),
                None => ("-".into(), "-".into(), "-".into()),
            };
            let (secs, rps, ratio) = f(r.ok.then_some(r.seconds), base.map(|b| b.seconds));
            let (e2e, e2e_rps, e2e_ratio) = f(r.e2e_s, base.and_then(|b| b.e2e_s));
            let rps = if r.ok { rps } else { "did not finish".into() };
            let txns = if *mode == Mode::ExactlyOnce {
                r.committed.to_string()
            } else {
                "-".to_owned()
            };
            row([
                &(rep + 1).to_string(),
                mode.label(),
                &n.to_string(),
                &secs,
                &rps,
                &ratio,
                &e2e,
                &e2e_rps,
                &e2e_ratio,
                &r.alerts.to_string(),
                &txns,
            ]);
        }
    }
}
