//! Scale-out figures of the live service against Apache Kafka (a single KRaft node the bench
//! starts, or `KAFKA_BOOTSTRAP`), in one run:
//!
//! 1. **repartition overhead**: bytes the service writes to the repartition topic per input byte
//!    (`Metrics::repartition_bytes / Metrics::input_bytes`, markers included), the repartition
//!    records by kind per input record, and the throughput of one instance with
//!    `repartition.enabled = true` vs `false` on the same input and broker;
//! 2. **instances**: throughput of 1, 2 and 3 instances (repartition on), each a `Service` on its
//!    own thread with its own Kafka clients, in one consumer group;
//! 3. **where the time goes**: the broker floor (a bare producer, then a bare consumer, on the same
//!    records) and, per run, the CPU of each instance's processing thread (from
//!    `/proc/self/task/<tid>/stat`), of this whole process (service threads, librdkafka threads,
//!    the bench's producer) and of the broker's JVM, against the machine's cores.
//!
//! Input: `cloudwarden::demo::scenario_stream` (benign traffic, attacks, a few malformed records),
//! `SCALE_BENCH_RECORDS` records (default 300000, ~200 MB; the whole bench takes ~1 minute after
//! the build), produced round-robin over 6 input partitions with no key: a principal's events land
//! on every partition, which is what the repartition topic is for. Every run uses fresh topics and
//! a fresh group id on the same broker. The default is 300000 rather than 50000 because the
//! service publishes its counters every 500 ms: at 50000 records a run lasts ~1 s and that
//! cadence, not the service, decides the figure.
//!
//! Timing (the choice the brief allowed): the instances start on an empty input topic; the clock
//! starts when the group is stable (the members together own every input and repartition
//! partition, each member owns some, and that held for 2 s) and the producer starts; the producer
//! runs concurrently (it takes the first ~1-2 s; its time is printed). The clock stops when every
//! input record has been consumed (sum of `records_in` for the input topic = produced) and, with
//! repartition on, when (a) the repartition topic has been consumed up to what the instances had
//! written to it by then (sum of `records_in` for it ≥ sum of `repartition_out` at that moment)
//! and (b) stage 2's reorder buffers are drained (`reorder_buffered` ≤ 100 over all instances:
//! only the newest records of each input partition, past the slowest partition's clock, wait).
//! "Stops growing and equals `messages_out`" cannot be the criterion: stage 1 sends a marker to
//! every repartition partition every `marker_interval` forever, so that topic never goes quiet.
//! `time.allowed_lateness` is 0 here (the input is in event-time order on every partition, so
//! nothing is late): with the default 5 minutes the last 5 minutes of event time would wait for
//! the partitions to go idle, which is waiting, not work. Each end is known to ~0.5 s (the
//! counters' publication cadence).
//!
//! Every run uses the service's default assignor (cooperative-sticky) and librdkafka's default
//! fetch settings: Apache Kafka answers a waiting fetch as soon as data arrives.
//!
//! # How this scales on a real cluster
//!
//! Here the broker, every instance and the producer share one machine (2 cores where this was
//! written), so the 2- and 3-instance runs share the same cores: they show that the group splits
//! the work evenly and what the coordination costs, and they stop scaling when the cores are busy.
//! On a cluster, with input and repartition partitions spread over brokers and one core per
//! instance:
//!
//! - an instance's record processing (decode, route, stage 2 windows) is one thread, so its
//!   ceiling is `R1 = 1 / (processing-thread CPU per record)`, printed in the "projection" line
//!   (measured here: ~11 µs per record with repartition on, so ~90 k records/s per core; ~3.6 µs
//!   off); librdkafka's own threads (fetch, decompress, produce) need some more CPU beside it;
//! - `k` instances give `≈ k × R1` for `k ≤ min(input partitions, repartition partitions)` (6 and
//!   6 here: a 7th instance gets nothing), as long as routing keys spread evenly over the
//!   repartition partitions;
//! - bounded by the brokers: every input byte is written and read once on the input topic, and
//!   with repartition on `r = repartition_bytes / input_bytes` more bytes are written and read
//!   again on the repartition topic, so the cluster carries `(1 + r) × b` bytes per record each
//!   way (`b` = bytes per input record), times the replication factor RF for writes. With `B`
//!   brokers each absorbing `W` bytes/s of writes: `records/s ≤ B × W / ((1 + r) × b × RF)`.
//!   With this run's figures (r ≈ 0.70, b ≈ 668 B): 3 brokers at 100 MB/s with RF 3 carry
//!   3 × 100e6 / (1.70 × 668 × 3) ≈ 88 k records/s, about one instance's ceiling: past that, add
//!   brokers (or partitions on more brokers), not instances. With repartition off the same brokers
//!   carry `1 + r` = 1.7 times more (~150 k records/s), but per-scope detectors are then only
//!   right on one instance. The assumptions are `SCALE_BENCH_PROJECT_BROKERS`,
//!   `SCALE_BENCH_PROJECT_BROKER_MBPS` and `SCALE_BENCH_PROJECT_RF` (3, 100, 3);
//! - markers are part of `r` and are time-based (each instance sends one to every repartition
//!   partition every `marker_interval`), so at low input rates `r` is a little larger than
//!   printed, at high rates smaller; `r` is dominated by the routed events (~0.83 per record).
//!
//! Run: `make bench`, or `cargo bench --bench scale_out` once `tests/kafka/broker.sh install` ran.

#[path = "../tests/it/broker.rs"]
mod broker;

use broker::Broker;
use cloudwarden::config::Config;
use cloudwarden::demo::{scenario_stream, Scenario};
use cloudwarden::kafka::service::Service;
use cloudwarden::telemetry::Metrics;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const INPUT_PARTITIONS: i32 = 6;
const REPARTITION_PARTITIONS: i32 = 6;
/// Clock ticks per second of `/proc/*/stat` (`getconf CLK_TCK`, 100 on Linux x86_64).
const CLK_TCK: f64 = 100.0;
/// Stage-2 events still buffered when the run counts as processed (see `measure`).
const DRAINED: u64 = 100;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// utime + stime of a `/proc/.../stat` file, in seconds.
fn cpu_secs(stat_path: &str) -> Option<f64> {
    let s = std::fs::read_to_string(stat_path).ok()?;
    // Fields after the command name (which may contain spaces): state is field 3, utime 14.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / CLK_TCK)
}

fn unique(label: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{label}-{nanos}")
}

/// Produces round-robin over the input partitions, as fast as the broker takes it; returns the
/// time until every record is acknowledged.
fn produce(brokers: &str, topic: &str, records: &[Vec<u8>]) -> Duration {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .create()
        .unwrap();
    let t = Instant::now();
    for (i, r) in records.iter().enumerate() {
        let mut rec = BaseRecord::<(), [u8]>::to(topic)
            .payload(r.as_slice())
            .partition(i as i32 % INPUT_PARTITIONS);
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
    p.flush(Duration::from_secs(120)).unwrap();
    t.elapsed()
}

/// A bare consumer reading `n` records of `topic` (same fetch settings as the service): records/s
/// from its first record to the last.
fn bare_consumer_rate(brokers: &str, topic: &str, n: usize) -> f64 {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("bare-reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    let mut seen = 0usize;
    let mut started = None;
    let deadline = Instant::now() + Duration::from_secs(300);
    while seen < n && Instant::now() < deadline {
        if let Some(Ok(_)) = c.poll(Duration::from_millis(100)) {
            started.get_or_insert_with(Instant::now);
            seen += 1;
        }
    }
    let elapsed = started.map_or(0.0, |s| s.elapsed().as_secs_f64());
    seen as f64 / elapsed.max(1e-9)
}

/// Durable state (the changelog) in the runs that follow; switched off for one comparison run.
static STATE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

fn config(brokers: &str, run: &str, repartition: bool) -> Config {
    let mut c = cloudwarden::demo::demo_config();
    c.state.changelog = STATE.load(std::sync::atomic::Ordering::Relaxed);
    c.state.replication_factor = 1;
    c.kafka.brokers = brokers.to_owned();
    c.kafka.group_id = format!("cw-{run}");
    c.kafka.input_topics = vec![format!("audit-{run}")];
    c.kafka.alerts_topic = format!("alerts-{run}");
    c.kafka.dead_letter_topic = format!("dlq-{run}");
    c.repartition.enabled = repartition;
    c.repartition.partitions = REPARTITION_PARTITIONS;
    c.repartition.replication_factor = 1;
    c.service.partition_idle_timeout = Duration::from_secs(2);
    // The input is in event-time order on every partition, so nothing is late with no lateness,
    // and stage 2 releases its reorder buffer as the markers arrive instead of holding the last
    // 5 minutes of event time until the partitions go idle (which would be waiting, not work).
    c.time.allowed_lateness = Duration::ZERO;
    c.service.listen = "127.0.0.1:0".into();
    for (k, v) in [
        ("session.timeout.ms", "6000"),
        ("heartbeat.interval.ms", "500"),
    ] {
        c.kafka.consumer.insert(k.into(), v.into());
    }
    c
}

/// One service instance on its own thread.
struct Instance {
    stop: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    /// `/proc/self/task/<tid>/stat` of the processing thread.
    stat: Arc<Mutex<Option<String>>>,
    handle: JoinHandle<()>,
}

impl Instance {
    fn start(config: Config) -> Instance {
        let metrics = Arc::new(Metrics::default());
        let service = Service::new(config, metrics.clone()).expect("service starts");
        let stop = Arc::new(AtomicBool::new(false));
        let stat = Arc::new(Mutex::new(None));
        let (s, st) = (stop.clone(), stat.clone());
        let handle = std::thread::spawn(move || {
            if let Ok(link) = std::fs::read_link("/proc/thread-self") {
                *st.lock().unwrap() = Some(format!("/proc/{}/stat", link.display()));
            }
            service.run(&s).expect("service runs")
        });
        Instance {
            stop,
            metrics,
            stat,
            handle,
        }
    }

    fn thread_cpu(&self) -> f64 {
        self.stat
            .lock()
            .unwrap()
            .as_deref()
            .and_then(cpu_secs)
            .unwrap_or(0.0)
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("service thread");
    }
}

fn sum_map(instances: &[Instance], f: impl Fn(&Metrics) -> u64) -> u64 {
    instances.iter().map(|i| f(&i.metrics)).sum()
}

fn topic_count(map: &Mutex<BTreeMap<String, u64>>, topic: &str) -> u64 {
    map.lock().unwrap().get(topic).copied().unwrap_or(0)
}

fn all_kinds(map: &Mutex<BTreeMap<String, u64>>) -> u64 {
    map.lock().unwrap().values().sum()
}

/// Waits until the members together own every partition, each owns some, held for 2 s.
fn wait_stable(instances: &[Instance], want: u64) -> Result<(), Vec<u64>> {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut since: Option<Instant> = None;
    loop {
        let each: Vec<u64> = instances
            .iter()
            .map(|i| i.metrics.assigned.load(Ordering::Relaxed))
            .collect();
        if each.iter().sum::<u64>() == want && each.iter().all(|a| *a > 0) {
            if since.get_or_insert_with(Instant::now).elapsed() >= Duration::from_secs(2) {
                return Ok(());
            }
        } else {
            since = None;
        }
        if Instant::now() >= deadline {
            return Err(each);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What one run measured.
#[derive(Default)]
struct Run {
    ok: bool,
    note: String,
    join_s: f64,
    /// Producer start → all input consumed; → repartition consumed too (= `total_s` when off).
    input_s: f64,
    rep_s: f64,
    total_s: f64,
    produce_s: f64,
    input_bytes: u64,
    rep_bytes: u64,
    rep_out: BTreeMap<String, u64>,
    rep_consumed: u64,
    rep_acked: u64,
    buffered: u64,
    alerts: u64,
    dead_letters: u64,
    rebalances: u64,
    service_cpu: f64,
    /// CPU seconds of each instance's processing thread over the run.
    thread_cpu: Vec<f64>,
    process_cpu: f64,
    broker_cpu: Option<f64>,
    per_instance_input: Vec<u64>,
}

impl Run {
    fn rate(&self, n: usize) -> f64 {
        n as f64 / self.total_s.max(1e-9)
    }
}

fn measure(broker: &Broker, records: &[Vec<u8>], instances: usize, repartition: bool) -> Run {
    let run = unique(&format!(
        "{}{instances}",
        if repartition { "on" } else { "off" }
    ));
    let cfg = config(&broker.addr, &run, repartition);
    let input = cfg.kafka.input_topics[0].clone();
    let rep_topic = cfg.repartition.topic_for(&cfg.kafka.group_id);
    broker.create_topics(&[
        (input.as_str(), INPUT_PARTITIONS),
        (cfg.kafka.alerts_topic.as_str(), 1),
        (cfg.kafka.dead_letter_topic.as_str(), 1),
    ]);
    let mut r = Run::default();
    let started = Instant::now();
    // One after the other: the first creates the repartition topic.
    let list: Vec<Instance> = (0..instances)
        .map(|_| Instance::start(cfg.clone()))
        .collect();
    let want = (INPUT_PARTITIONS
        + if repartition {
            REPARTITION_PARTITIONS
        } else {
            0
        }) as u64;
    if let Err(each) = wait_stable(&list, want) {
        r.note =
            format!("group never settled (assigned per instance {each:?}, want {want} in all)");
        for i in list {
            i.stop();
        }
        return r;
    }
    r.join_s = started.elapsed().as_secs_f64();
    let broker_jvm = broker.pid(1);
    let broker_cpu = || broker_jvm.and_then(|p| cpu_secs(&format!("/proc/{p}/stat")));
    let (svc0, proc0, broker0) = (
        list.iter().map(Instance::thread_cpu).collect::<Vec<f64>>(),
        cpu_secs("/proc/self/stat").unwrap_or(0.0),
        broker_cpu(),
    );

    let rebalances0 = sum_map(&list, |m| m.rebalances.load(Ordering::Relaxed));
    let n = records.len() as u64;
    let t0 = Instant::now();
    let produced = std::thread::scope(|s| {
        let brokers = broker.addr.clone();
        let topic = input.clone();
        let producer = s.spawn(move || produce(&brokers, &topic, records));
        let deadline = t0 + Duration::from_secs(600);
        let consumed_in = || sum_map(&list, |m| topic_count(&m.records_in, &input));
        while consumed_in() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        r.input_s = t0.elapsed().as_secs_f64();
        r.rep_s = r.input_s;
        let buffered = || sum_map(&list, |m| m.reorder_buffered.load(Ordering::Relaxed));
        if repartition {
            let sent = sum_map(&list, |m| all_kinds(&m.repartition_out));
            let consumed_rep = || sum_map(&list, |m| topic_count(&m.records_in, &rep_topic));
            while consumed_rep() < sent && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            r.rep_s = t0.elapsed().as_secs_f64();
            // Stage 2 done: its reorder buffers hold only the newest records of each input
            // partition (those past the slowest partition's clock), a handful.
            while buffered() > DRAINED && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        r.total_s = t0.elapsed().as_secs_f64();
        r.ok = consumed_in() >= n && Instant::now() < deadline;
        if !r.ok {
            r.note = format!(
                "timed out: {} of {n} input records consumed, {} stage-2 events buffered",
                consumed_in(),
                buffered()
            );
        }
        r.thread_cpu = list
            .iter()
            .zip(&svc0)
            .map(|(i, c0)| i.thread_cpu() - c0)
            .collect();
        r.service_cpu = r.thread_cpu.iter().sum();
        r.process_cpu = cpu_secs("/proc/self/stat").unwrap_or(0.0) - proc0;
        r.broker_cpu = broker_cpu().zip(broker0).map(|(a, b)| a - b);
        r.buffered = buffered();
        r.rebalances = sum_map(&list, |m| m.rebalances.load(Ordering::Relaxed)) - rebalances0;
        producer.join().expect("producer")
    });
    r.produce_s = produced.as_secs_f64();
    let metrics: Vec<Arc<Metrics>> = list.iter().map(|i| i.metrics.clone()).collect();
    for i in list {
        i.stop();
    }
    for m in &metrics {
        r.input_bytes += m.input_bytes.load(Ordering::Relaxed);
        r.rep_bytes += m.repartition_bytes.load(Ordering::Relaxed);
        for (k, v) in m.repartition_out.lock().unwrap().iter() {
            *r.rep_out.entry(k.clone()).or_default() += v;
        }
        r.rep_consumed += topic_count(&m.records_in, &rep_topic);
        r.rep_acked += topic_count(&m.messages_out, &rep_topic);
        r.alerts += m.alerts.lock().unwrap().values().sum::<u64>();
        r.dead_letters += m.dead_letters.load(Ordering::Relaxed);
        r.per_instance_input
            .push(topic_count(&m.records_in, &input));
    }
    r
}

/// Utilisation (of one core) of each instance's processing thread over the run.
fn thread_util(r: &Run) -> Vec<f64> {
    r.thread_cpu
        .iter()
        .map(|c| c / r.total_s.max(1e-9))
        .collect()
}

/// Share of the machine's cores (bench process + broker) used over the run.
fn machine_util(r: &Run, cores: usize) -> f64 {
    (r.process_cpu + r.broker_cpu.unwrap_or(0.0)) / (r.total_s.max(1e-9) * cores as f64)
}

fn verdict(r: &Run, cores: usize) -> &'static str {
    if machine_util(r, cores) >= 0.75 {
        "the machine's cores are (nearly) saturated"
    } else if thread_util(r).iter().any(|u| *u >= 0.8) {
        "an instance's processing thread is saturated (one core)"
    } else {
        "no CPU saturated: waiting on broker round trips"
    }
}

fn describe(label: &str, r: &Run, n: usize, cores: usize) -> String {
    if !r.ok && r.total_s == 0.0 {
        return format!("{label}: FAILED: {}", r.note);
    }
    let wall = r.total_s.max(1e-9);
    let broker = r.broker_cpu.map_or("n/a".to_owned(), |t| {
        format!("{t:.1} s ({:.0}% of a core)", 100.0 * t / wall)
    });
    let threads: Vec<String> = thread_util(r)
        .iter()
        .map(|u| format!("{:.0}%", 100.0 * u))
        .collect();
    format!(
        "{label}: {:.0} records/s ({n} records in {:.2} s: input consumed at {:.2} s, repartition consumed at {:.2} s, stage 2 drained at {:.2} s; producer done at {:.2} s; group stable {:.1} s after start, before the clock; input records per instance {:?}; rebalances during the run {}) | cpu over the run: processing thread of each instance {} of a core, whole bench process {:.1} s, broker {broker}, machine {:.0}% of {cores} cores -> {}{}",
        r.rate(n),
        r.total_s,
        r.input_s,
        r.rep_s,
        r.total_s,
        r.produce_s,
        r.join_s,
        r.per_instance_input,
        r.rebalances,
        threads.join("/"),
        r.process_cpu,
        100.0 * machine_util(r, cores),
        verdict(r, cores),
        if r.ok { String::new() } else { format!(" [{}]", r.note) },
    )
}

fn main() {
    // `cargo test --benches` runs bench targets with `--test`: nothing to check here.
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let n = env_usize("SCALE_BENCH_RECORDS", 300_000);
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let records = scenario_stream(&Scenario {
        // ~1/6 of the benign records stop after the +90 min silence: generate enough.
        minutes: (n / 800 + 10) as i64,
        benign_per_minute: 1000,
        ..Scenario::default()
    });
    let records = &records[..n.min(records.len())];
    let n = records.len();
    let bytes: usize = records.iter().map(Vec::len).sum();

    let broker = Broker::start();
    println!(
        "setup: Apache Kafka (single KRaft node, JVM) at {}, {cores} cores shared by broker, instances and producer; {n} records from demo::scenario_stream ({:.1} MB, {:.0} B/record), produced round-robin over {INPUT_PARTITIONS} input partitions; repartition topic {REPARTITION_PARTITIONS} partitions, rf 1; consumer: cooperative-sticky assignor (default), session.timeout.ms 6000, heartbeat.interval.ms 500; service.partition_idle_timeout 2 s, time.allowed_lateness 0 (input in event-time order per partition); fresh topics and group per run; clock: producer start (group already stable) -> all input consumed and, repartition on, the repartition records written by then consumed and stage 2's reorder buffers drained (<= {DRAINED}); metrics are published every 500 ms, so each end is known to ~0.5 s",
        broker.addr,
        bytes as f64 / 1e6,
        bytes as f64 / n as f64
    );

    // The broker floor: the same records into a fresh topic with nobody reading, then a bare
    // consumer reading them back.
    let floor_topic = unique("floor");
    broker.create_topics(&[(floor_topic.as_str(), INPUT_PARTITIONS)]);
    let broker_jvm = broker.pid(1);
    let broker_cpu = || broker_jvm.and_then(|p| cpu_secs(&format!("/proc/{p}/stat")));
    let (tc0, pc0) = (broker_cpu(), cpu_secs("/proc/self/stat").unwrap_or(0.0));
    let pt = produce(&broker.addr, &floor_topic, records).as_secs_f64();
    let (tc1, pc1) = (broker_cpu(), cpu_secs("/proc/self/stat").unwrap_or(0.0));
    let bare = bare_consumer_rate(&broker.addr, &floor_topic, n);
    let produce_broker = tc1
        .zip(tc0)
        .map_or("n/a".into(), |(a, b)| format!("{:.1} s", a - b));
    println!(
        "broker floor: bare producer {:.0} records/s ({:.1} MB/s; {n} records acknowledged in {pt:.2} s; cpu: producer {:.1} s, broker {produce_broker}); bare consumer (no processing) {bare:.0} records/s",
        n as f64 / pt.max(1e-9),
        bytes as f64 / 1e6 / pt.max(1e-9),
        pc1 - pc0,
    );

    let off = measure(&broker, records, 1, false);
    println!(
        "{}",
        describe("repartition off, 1 instance", &off, n, cores)
    );
    let on1 = measure(&broker, records, 1, true);
    println!("{}", describe("repartition on, 1 instance", &on1, n, cores));
    STATE.store(false, std::sync::atomic::Ordering::Relaxed);
    let nostate = measure(&broker, records, 1, true);
    STATE.store(true, std::sync::atomic::Ordering::Relaxed);
    println!(
        "{}",
        describe(
            "repartition on, durable state off, 1 instance",
            &nostate,
            n,
            cores
        )
    );
    println!(
        "durable state cost (1 instance, same run): with checkpoints {:.0} records/s, without {:.0} records/s, ratio {:.2}; without the repartition step {:.0} records/s",
        on1.rate(n),
        nostate.rate(n),
        on1.rate(n) / nostate.rate(n),
        off.rate(n)
    );
    let on2 = measure(&broker, records, 2, true);
    println!(
        "{}",
        describe("repartition on, 2 instances", &on2, n, cores)
    );
    let on3 = measure(&broker, records, 3, true);
    println!(
        "{}",
        describe("repartition on, 3 instances", &on3, n, cores)
    );

    // 1. Repartition overhead (the 1-instance repartition-on run).
    let ratio = on1.rep_bytes as f64 / on1.input_bytes.max(1) as f64;
    let per_record = |k: &str| *on1.rep_out.get(k).unwrap_or(&0) as f64 / n as f64;
    println!(
        "repartition overhead (1 instance): {ratio:.3} bytes written to the repartition topic per input byte ({} B for {} B of input, markers included); repartition records per input record: events {:.3}, beats {:.3}, regions {:.4}, markers {:.4} (time-based: {} in the run); repartition records written {} (acknowledged {}), consumed by stage 2 {} by shutdown",
        on1.rep_bytes,
        on1.input_bytes,
        per_record("event"),
        per_record("beat"),
        per_record("region"),
        per_record("marker"),
        on1.rep_out.get("marker").unwrap_or(&0),
        on1.rep_out.values().sum::<u64>(),
        on1.rep_acked,
        on1.rep_consumed,
    );
    println!(
        "repartition throughput cost (1 instance, same input, same broker): off {:.0} records/s, on {:.0} records/s, on/off {:.2}; processing thread cpu per input record off {:.1} us, on {:.1} us; alerts off {} / on {}, dead letters off {} / on {}",
        off.rate(n),
        on1.rate(n),
        on1.rate(n) / off.rate(n).max(1e-9),
        1e6 * off.service_cpu / n as f64,
        1e6 * on1.service_cpu / n as f64,
        off.alerts,
        on1.alerts,
        off.dead_letters,
        on1.dead_letters,
    );
    // 2. Instances.
    let base = on1.rate(n).max(1e-9);
    println!(
        "scale-out (repartition on, one consumer group, instances = threads of one process on {cores} cores): 1 instance {:.0} records/s, 2 instances {:.0} records/s (x{:.2}), 3 instances {:.0} records/s (x{:.2}); processing thread cpu per input record, all instances: {:.1} / {:.1} / {:.1} us",
        on1.rate(n),
        on2.rate(n),
        on2.rate(n) / base,
        on3.rate(n),
        on3.rate(n) / base,
        1e6 * on1.service_cpu / n as f64,
        1e6 * on2.service_cpu / n as f64,
        1e6 * on3.service_cpu / n as f64,
    );
    // 3. Where the bottleneck is.
    let util = |r: &Run| {
        format!(
            "{:.0}% (broker {:.0}%)",
            100.0 * machine_util(r, cores),
            100.0 * r.broker_cpu.unwrap_or(0.0) / (r.total_s.max(1e-9) * cores as f64),
        )
    };
    println!(
        "bottleneck: machine cpu off/on1/on2/on3 = {} / {} / {} / {} of {cores} cores; bare consumer {bare:.0} records/s vs service off {:.0} (x{:.2}) and on {:.0} (x{:.2}); on1: {}; on3: {}",
        util(&off),
        util(&on1),
        util(&on2),
        util(&on3),
        off.rate(n),
        off.rate(n) / bare.max(1e-9),
        on1.rate(n),
        on1.rate(n) / bare.max(1e-9),
        verdict(&on1, cores),
        verdict(&on3, cores),
    );
    // The arithmetic of the doc comment with this run's figures.
    let brokers = env_usize("SCALE_BENCH_PROJECT_BROKERS", 3) as f64;
    let write_mbps = env_usize("SCALE_BENCH_PROJECT_BROKER_MBPS", 100) as f64;
    let rf = env_usize("SCALE_BENCH_PROJECT_RF", 3) as f64;
    let b = bytes as f64 / n as f64;
    let core_rate = n as f64 / on1.service_cpu.max(1e-9);
    let bound_on = brokers * write_mbps * 1e6 / ((1.0 + ratio) * b * rf);
    let bound_off = brokers * write_mbps * 1e6 / (b * rf);
    let producer_cpu = pc1 - pc0;
    let all_threads_us = 1e6 * (on1.process_cpu - producer_cpu).max(on1.service_cpu) / n as f64;
    println!(
        "projection (real cluster, one core per instance; assumed {brokers} brokers x {write_mbps} MB/s of writes, rf {rf}): per-instance ceiling = 1 / processing-thread cpu per record = 1 / {:.1} us = {core_rate:.0} records/s (with librdkafka's threads counted, ~{all_threads_us:.1} us/record = {:.0} records/s if they share that core); k instances ~ k x {core_rate:.0} for k <= {} (partitions); broker write bound = {brokers} x {write_mbps} MB/s / ((1 + {ratio:.2}) x {b:.0} B x {rf}) = {bound_on:.0} records/s with repartition (off: {bound_off:.0}), reached at ~{:.1} instances",
        1e6 * on1.service_cpu / n as f64,
        1e6 / all_threads_us.max(1e-9),
        INPUT_PARTITIONS.min(REPARTITION_PARTITIONS),
        bound_on / core_rate.max(1e-9),
    );
}
