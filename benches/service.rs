//! The service's figures, against Apache Kafka (a single KRaft node the bench starts, from
//! `.tools/kafka`; or `KAFKA_BOOTSTRAP`), broker and service sharing the machine's cores:
//!
//! 1. throughput: the service vs a bare rdkafka consumer that only reads the same topic, side by
//!    side in one run (target: ≥ 0.9 of the bare consumer's rate); the service with the
//!    repartition step on (default) and off; and exactly-once (transactions) against
//!    at-least-once, as a ratio, on the same topic;
//! 2. latency from record ingest (its Kafka timestamp) to alert acknowledged, p50/p99, at steady
//!    loads (default 1000, 10000 and 50000 records/s);
//! 3. resident memory with 1M distinct principals held (engine only, no broker needed).
//!
//! Run with `make bench` (which installs the broker) or `cargo bench --bench service`. Sizes:
//! `SERVICE_BENCH_RECORDS` (default 200000), `SERVICE_BENCH_SECONDS` (10 per rate),
//! `SERVICE_BENCH_RATES` (`1000,10000,50000` records/s), `SERVICE_BENCH_PRINCIPALS` (1000000, the
//! memory figure), `SERVICE_BENCH_FETCH_WAIT_MS` (the
//! consumer's `fetch.wait.max.ms` in the latency runs; librdkafka's default 500 when unset:
//! Kafka answers a waiting fetch as soon as data arrives).

#[path = "../tests/it/broker.rs"]
mod broker;

use broker::Broker;
use cloudwarden::config::Config;
use cloudwarden::demo::{scenario_stream, Scenario};
use cloudwarden::engine::Engine;
use cloudwarden::kafka::config::Guarantee;
use cloudwarden::kafka::service::Service;
use cloudwarden::telemetry::Metrics;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn produce(brokers: &str, topic: &str, records: &[Vec<u8>]) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .create()
        .unwrap();
    for (i, r) in records.iter().enumerate() {
        let key = (i % 64).to_string();
        let mut rec = BaseRecord::to(topic)
            .key(key.as_bytes())
            .payload(r.as_slice());
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
    p.flush(Duration::from_secs(60)).unwrap();
}

fn bare_consumer_rate(brokers: &str, topic: &str, n: usize) -> f64 {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "bare-reader")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    let mut seen = 0usize;
    let mut started = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    while seen < n && Instant::now() < deadline {
        if let Some(Ok(_)) = c.poll(Duration::from_millis(100)) {
            started.get_or_insert_with(Instant::now);
            seen += 1;
        }
    }
    let elapsed = started.map_or(0.0, |s| s.elapsed().as_secs_f64());
    seen as f64 / elapsed.max(1e-9)
}

fn service_config(broker: &Broker, topic: &str, group: &str) -> Config {
    let mut c = cloudwarden::demo::demo_config();
    c.kafka.brokers = broker.addr.clone();
    c.kafka.group_id = broker.name(group);
    c.kafka.input_topics = vec![topic.into()];
    c.kafka.alerts_topic = broker.name("bench-alerts");
    c.kafka.dead_letter_topic = broker.name("bench-dead-letters");
    c.service.listen = "127.0.0.1:0".into();
    c
}

/// How a throughput run is configured.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// Defaults: repartition on, at-least-once.
    Default,
    /// `repartition.enabled = false`.
    NoRepartition,
    /// `processing.guarantee = "exactly_once"` (repartition on, default transaction interval).
    ExactlyOnce,
}

fn service_rate(broker: &Broker, topic: &str, n: usize, mode: Mode) -> (f64, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::default());
    let group = format!("bench-service-{mode:?}").to_lowercase();
    let mut cfg = service_config(broker, topic, &group);
    match mode {
        Mode::Default => {}
        Mode::NoRepartition => cfg.repartition.enabled = false,
        Mode::ExactlyOnce => {
            cfg.processing.guarantee = Guarantee::ExactlyOnce;
            cfg.processing.transactional_id = broker.name("bench-service-eos");
        }
    }
    let service = Service::new(cfg, metrics.clone()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let handle = std::thread::spawn(move || service.run(&s).unwrap());
    let consumed = || -> u64 { metrics.records_in.lock().unwrap().values().sum() };
    let deadline = Instant::now() + Duration::from_secs(600);
    while consumed() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    let started = Instant::now();
    while (consumed() as usize) < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    let rate = consumed() as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    handle.join().unwrap();
    (rate, metrics)
}

/// Steady load: `rate` records/s for `seconds`, one in 200 a StopLogging (an alert each).
fn latency_under_load(broker: &Broker, rate: usize, seconds: usize) -> Arc<Metrics> {
    let topic = broker.name(&format!("bench-latency-{rate}"));
    broker.create_topics(&[(topic.as_str(), 1)]);
    let topic = topic.as_str();
    let brokers = broker.addr.as_str();
    let metrics = Arc::new(Metrics::default());
    let mut cfg = service_config(broker, topic, &format!("bench-latency-{rate}"));
    cfg.alerts.suppression.burst = 1_000_000;
    // Latency tuning, passed through as a user would.
    if let Ok(wait) = std::env::var("SERVICE_BENCH_FETCH_WAIT_MS") {
        cfg.kafka.consumer.insert("fetch.wait.max.ms".into(), wait);
    }
    cfg.kafka.producer.insert("linger.ms".into(), "1".into());
    let service = Service::new(cfg, metrics.clone()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let handle = std::thread::spawn(move || service.run(&s).unwrap());
    let benign = scenario_stream(&Scenario {
        minutes: 60,
        benign_per_minute: (rate * seconds / 60).max(1) as u32,
        attacks: false,
        malformed: false,
        ..Scenario::default()
    });
    let stop_logging = |i: usize| {
        format!(
            r#"{{"eventTime":"2026-11-01T00:00:00Z","eventSource":"cloudtrail.amazonaws.com","eventName":"StopLogging","awsRegion":"us-east-1","recipientAccountId":"111111111111","eventID":"lat-{i}","userIdentity":{{"arn":"arn:aws:iam::111111111111:user/u{i}"}},"requestParameters":{{"name":"trail"}}}}"#
        )
        .into_bytes()
    };
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "1")
        .create()
        .unwrap();
    // Give the consumer time to join before the clock starts.
    std::thread::sleep(Duration::from_secs(5));
    let started = Instant::now();
    for (i, r) in benign.iter().take(rate * seconds).enumerate() {
        let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let payload = if i % 200 == 0 {
            stop_logging(i)
        } else {
            r.clone()
        };
        let _ = p.send(BaseRecord::to(topic).key("k").payload(payload.as_slice()));
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(30)).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    handle.join().unwrap();
    metrics
}

/// The broker's own floor: a bare producer's acknowledgement time and a bare consumer's
/// produce→consume time for single records, in ms (p50, p90). `rust_flush`: wait for the
/// acknowledgement with rust-rdkafka's `Producer::flush` (which polls in 100 ms steps) instead
/// of the service's `emitter::flush`.
fn broker_floor(brokers: &str, topic: &str, rust_flush: bool) -> ((u128, u128), (i64, i64)) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "bench-floor")
        .set("auto.offset.reset", "latest")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "1")
        .set("acks", "all")
        .create()
        .unwrap();
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_secs(6) {
        c.poll(Duration::from_millis(100));
    }
    let (mut acks, mut e2e) = (Vec::new(), Vec::new());
    for i in 0..40 {
        let t0 = Instant::now();
        let payload = i.to_string();
        p.send(BaseRecord::to(topic).key("k").payload(payload.as_str()))
            .unwrap();
        if rust_flush {
            p.flush(Duration::from_secs(10)).unwrap();
        } else {
            cloudwarden::kafka::emitter::flush(&p, Duration::from_secs(10)).unwrap();
        }
        acks.push(t0.elapsed().as_millis());
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(5)) {
                use rdkafka::message::Message;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as i64;
                e2e.push(now - m.timestamp().to_millis().unwrap_or(now));
                break;
            }
        }
    }
    acks.sort();
    e2e.sort();
    let q = |v: usize, f: f64| ((v as f64 - 1.0) * f) as usize;
    (
        (acks[q(acks.len(), 0.5)], acks[q(acks.len(), 0.9)]),
        (e2e[q(e2e.len(), 0.5)], e2e[q(e2e.len(), 0.9)]),
    )
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn rss_with_principals(n: usize) -> (u64, u64, usize) {
    let mut cfg = Config::default();
    cfg.detectors.secret_fetch_rate.max_keys = n + 1;
    cfg.detectors.discovery_burst.max_keys = n + 1;
    let mut engine = Engine::new(&cfg).unwrap();
    let before = rss_kib();
    let mut alerts = Vec::new();
    for i in 0..n {
        let r = format!(
            r#"{{"eventTime":"2026-11-01T00:{:02}:{:02}Z","eventSource":"secretsmanager.amazonaws.com","eventName":"GetSecretValue","awsRegion":"us-east-1","recipientAccountId":"111111111111","userIdentity":{{"arn":"arn:aws:iam::111111111111:user/p{i}"}},"requestParameters":{{"secretId":"s{}"}}}}"#,
            (i / 60_000) % 60,
            (i / 1000) % 60,
            i % 10
        );
        let _ = engine.process_record(r.as_bytes(), &mut alerts);
        alerts.clear();
    }
    let after = rss_kib();
    let keys = engine
        .detector_stats()
        .iter()
        .find(|(d, _)| *d == "secret_fetch_rate")
        .map_or(0, |(_, s)| s.keys);
    (before, after, keys)
}

fn main() {
    // `cargo test --benches` runs bench targets with `--test`: nothing to check here.
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let n = env_usize("SERVICE_BENCH_RECORDS", 200_000);
    let seconds = env_usize("SERVICE_BENCH_SECONDS", 10);

    let (before, after, keys) =
        rss_with_principals(env_usize("SERVICE_BENCH_PRINCIPALS", 1_000_000));
    println!(
        "rss: {keys} principals held in secret_fetch_rate: RSS {:.1} MiB -> {:.1} MiB, {:.0} bytes/principal",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        (after.saturating_sub(before) * 1024) as f64 / keys.max(1) as f64
    );

    let broker = Broker::start();
    let (input, floor) = (broker.name("bench-input"), broker.name("bench-floor"));
    broker.create_topics(&[
        (input.as_str(), 3),
        (broker.name("bench-alerts").as_str(), 1),
        (broker.name("bench-dead-letters").as_str(), 1),
        (floor.as_str(), 1),
    ]);
    for rust_flush in [true, false] {
        let ((ack50, ack90), (e2e50, e2e90)) = broker_floor(&broker.addr, &floor, rust_flush);
        let how = if rust_flush {
            "rust-rdkafka Producer::flush"
        } else {
            "emitter::flush"
        };
        println!(
            "broker floor (bare clients, one record at a time, ack awaited with {how}): produce ack p50 {ack50} ms p90 {ack90} ms; produce -> consume p50 {e2e50} ms p90 {e2e90} ms"
        );
    }
    let records = scenario_stream(&Scenario {
        minutes: (n / 1000).max(10) as i64,
        benign_per_minute: 1000,
        ..Scenario::default()
    });
    let records = &records[..n.min(records.len())];
    let bytes: usize = records.iter().map(Vec::len).sum();
    let t = Instant::now();
    produce(&broker.addr, &input, records);
    println!(
        "produced {} records ({:.1} MB, {:.0} B/record) in {:.1}s",
        records.len(),
        bytes as f64 / 1e6,
        bytes as f64 / records.len() as f64,
        t.elapsed().as_secs_f64()
    );
    let bare = bare_consumer_rate(&broker.addr, &input, records.len());
    let (service, _) = service_rate(&broker, &input, records.len(), Mode::Default);
    println!(
        "throughput: bare consumer {bare:.0} records/s, service {service:.0} records/s, ratio {:.2}",
        service / bare
    );
    let (flat, _) = service_rate(&broker, &input, records.len(), Mode::NoRepartition);
    println!(
        "throughput: repartition on {service:.0} records/s, off {flat:.0} records/s, on/off {:.2}",
        service / flat
    );
    let (eos, m) = service_rate(&broker, &input, records.len(), Mode::ExactlyOnce);
    let committed = m
        .transactions
        .lock()
        .unwrap()
        .get("committed")
        .copied()
        .unwrap_or(0);
    println!(
        "throughput: exactly-once {eos:.0} records/s ({committed} transactions committed), at-least-once {service:.0} records/s, exactly-once/at-least-once {:.2}",
        eos / service
    );

    let rates = std::env::var("SERVICE_BENCH_RATES").unwrap_or_else(|_| "1000,10000,50000".into());
    for rate in rates
        .split(',')
        .filter_map(|r| r.trim().parse::<usize>().ok())
    {
        let m = latency_under_load(&broker, rate, seconds);
        let (q, count) = m.latency_quantiles();
        let at = |i: usize| q[i].1 * 1000.0;
        let consumed: u64 = m.records_in.lock().unwrap().values().sum();
        println!(
            "latency at {rate} records/s for {seconds}s ({consumed} records consumed), record ingest -> alert acknowledged: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms ({count} alerts)",
            at(0),
            at(1),
            at(2)
        );
    }
}
