//! End to end against Apache Kafka (a KRaft node of the test's own, or `KAFKA_BOOTSTRAP`): produce the Stratus detonation logs and the invictus-ir stream into an
//! input topic, run `cloudwarden run` (the binary), read the alerts topic as a SIEM subscriber
//! would, and check the alerts equal what `replay` gives on the same files. Malformed records land
//! in the dead-letter topic with reasons, and the stream goes on.
//!
//! The broker is installed into `.tools/` by `tests/kafka/broker.sh install` (and `make test`).
//! Without it these tests fail with that instruction: they are never skipped silently.

use crate::broker::Broker;
use crate::util::{fixture, lines, stratus_files};
use cloudwarden::alert::Alert;
use cloudwarden::config::Config;
use cloudwarden::engine::Engine;
use cloudwarden::replay::replay_files;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeSet;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Every alert in the alerts topic (single partition), until `quiet` passes with nothing new.
fn read_alerts(
    brokers: &str,
    topic: &str,
    quiet: Duration,
    timeout: Duration,
) -> Vec<(Alert, Vec<u8>)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "siem")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    drop(tpl);
    let mut out = Vec::new();
    let mut last = Instant::now();
    let deadline = Instant::now() + timeout;
    while last.elapsed() < quiet && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            last = Instant::now();
            let alert: Alert = serde_json::from_slice(m.payload().unwrap()).expect("alert.v1");
            out.push((alert, m.key().unwrap_or_default().to_vec()));
        }
    }
    out
}

fn dead_letter_reasons(brokers: &str, topic: &str, want: usize) -> Vec<String> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "dlq-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    drop(tpl);
    let mut reasons = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while reasons.len() < want && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            let reason = m
                .headers()
                .and_then(|h| {
                    h.iter()
                        .find(|h| h.key == "cloudwarden.reason")
                        .and_then(|h| h.value)
                })
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            reasons.push(reason);
        }
    }
    reasons.sort();
    reasons
}

/// The service process, killed if the test fails before stopping it (no process outlives it).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn service_on_a_real_broker_gives_the_alerts_replay_gives() {
    let broker = Broker::start();
    let (audit, alerts_topic, dead_letters) = (
        broker.name("audit"),
        broker.name("alerts"),
        broker.name("dead-letters"),
    );
    broker.create_topics(&[(&audit, 3), (&alerts_topic, 1), (&dead_letters, 1)]);

    // The pipeline: all Stratus records in time order under one key, the invictus stream under
    // another (so each principal's events stay in order within a partition), and junk.
    let stratus = stratus_files();
    let mut stratus_records: Vec<(i64, Vec<u8>)> = Vec::new();
    for f in &stratus {
        for l in lines(f) {
            let v: serde_json::Value = serde_json::from_slice(&l).unwrap();
            let t = cloudwarden::event::time::parse_rfc3339_ms(v["eventTime"].as_str().unwrap())
                .unwrap();
            stratus_records.push((t, l));
        }
    }
    stratus_records.sort_by_key(|(t, _)| *t);
    let invictus = fixture("invictus/cloudtrail.ndjson.gz");
    let invictus_records = lines(&invictus);
    let junk: Vec<Vec<u8>> = vec![
        b"{\"eventTime\":\"2024-".to_vec(),
        b"{\"hello\":\"world\"}".to_vec(),
        b"\xff\xfe".to_vec(),
    ];
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("linger.ms", "10")
        .create()
        .unwrap();
    let send = |key: &str, payload: &[u8]| {
        let mut r = BaseRecord::to(&audit).key(key).payload(payload);
        loop {
            match producer.send(r) {
                Ok(()) => break,
                Err((_, back)) => {
                    producer.poll(Duration::from_millis(20));
                    r = back;
                }
            }
        }
    };
    for (_, r) in &stratus_records {
        send("stratus", r);
    }
    for (i, r) in invictus_records.iter().enumerate() {
        send("invictus", r);
        if i == 1000 {
            for j in &junk {
                send("invictus", j); // malformed records in the middle of a stream
            }
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let total = stratus_records.len() + invictus_records.len() + junk.len();

    // `cloudwarden run`, the binary, with a config file.
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("cloudwarden.toml");
    let metrics_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        &config_path,
        format!(
            r#"
[kafka]
brokers = "{}"
group_id = "{group}"
input_topics = ["{audit}"]
alerts_topic = "{alerts_topic}"
dead_letter_topic = "{dead_letters}"
[alerts]
format = "cloudwarden.v1"
[kafka.consumer]
"session.timeout.ms" = "10000"
[service]
listen = "127.0.0.1:{metrics_port}"
commit_interval = "200ms"
# Input partitions that are done stop holding stateful detection back after 2 s.
partition_idle_timeout = "2s"
[repartition]
replication_factor = 1
marker_interval = "100ms"
"#,
            broker.addr,
            group = broker.name("cloudwarden-e2e"),
        ),
    )
    .unwrap();
    let mut service = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_cloudwarden"))
            .args([
                "--log-format",
                "json",
                "run",
                "--config",
                config_path.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let metrics_url = format!("127.0.0.1:{metrics_port}");
    let scrape = |path: &str| -> Option<String> {
        use std::io::Write;
        let mut s = TcpStream::connect(&metrics_url).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        Some(body)
    };
    // Wait until every record is consumed (from /metrics).
    let deadline = Instant::now() + Duration::from_secs(120);
    let consumed = |text: &str| -> u64 {
        text.lines()
            .filter(|l| {
                l.starts_with(&format!(
                    "cloudwarden_records_in_total{{topic=\"{audit}\"}}"
                ))
            })
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
            .sum()
    };
    loop {
        let text = scrape("/metrics").unwrap_or_default();
        if consumed(&text) as usize >= total {
            assert!(
                text.contains("cloudwarden_decode_errors_total{reason=\"not_json\"} 1"),
                "{text}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "service did not consume everything: {text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let health = scrape("/health").unwrap_or_default();
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    // Ready once assigned and caught up (lag comes from librdkafka statistics, every 5 s).
    let ready_by = Instant::now() + Duration::from_secs(20);
    loop {
        let ready = scrape("/ready").unwrap_or_default();
        if ready.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < ready_by, "never ready: {ready}");
        std::thread::sleep(Duration::from_millis(250));
    }

    let alerts = read_alerts(
        &broker.addr,
        &alerts_topic,
        Duration::from_secs(10),
        Duration::from_secs(90),
    );
    // SIGTERM: graceful shutdown, exit 0.
    let _ = Command::new("kill")
        .args(["-TERM", &service.0.id().to_string()])
        .status();
    let status = service.0.wait().unwrap();
    assert!(status.success(), "graceful shutdown exits 0: {status}");

    for (a, key) in &alerts {
        assert_eq!(key, a.id.as_bytes(), "keyed by alert id");
    }
    // The same files through `replay`.
    let mut engine = Engine::new(&Config::default()).unwrap();
    let mut paths: Vec<&std::path::Path> = stratus.iter().map(|p| p.as_path()).collect();
    paths.push(invictus.as_path());
    let replayed = replay_files(&mut engine, &paths, 100_000).unwrap();
    let summarize = |a: &Alert| {
        (
            a.detector.clone(),
            a.dedup_key.clone(),
            a.evidence.count,
            a.evidence.distinct_count,
            a.id.clone(),
        )
    };
    // Once every input partition is idle the live watermark reaches the last event, where replay
    // judges silence at end of input: every alert compares, silence included.
    let live: BTreeSet<_> = alerts.iter().map(|(a, _)| a).map(summarize).collect();
    let offline: BTreeSet<_> = replayed.iter().map(summarize).collect();
    assert!(!offline.is_empty());
    let missing: Vec<_> = offline.difference(&live).collect();
    let extra: Vec<_> = live.difference(&offline).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing live: {missing:#?}\nextra live: {extra:#?}"
    );

    assert_eq!(
        dead_letter_reasons(&broker.addr, &dead_letters, 3),
        ["invalid_utf8", "not_json", "unknown_shape"]
    );
}
