//! The service against librdkafka's mock cluster (a Kafka-protocol broker in process, over TCP):
//! control flow and fault injection. Throughput is never measured here (the mock returns one
//! record batch per partition per fetch), and session timeouts are shortened because the mock
//! waits `session.timeout − 1 s` per rebalance round.

use crate::util::fixture;
use cloudwarden::alert::format::AlertFormat;
use cloudwarden::alert::Alert;
use cloudwarden::config::Config;
use cloudwarden::kafka::service::Service;
use cloudwarden::telemetry::Metrics;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) const INPUT: &str = "audit";
pub(crate) const ALERTS: &str = "alerts";
pub(crate) const DLQ: &str = "dead-letters";
/// The repartition topic (the mock has no CreateTopics API, so the test makes it).
pub(crate) const REPARTITION: &str = "repartition";
pub(crate) const REPARTITION_PARTITIONS: i32 = 4;
pub(crate) const CHANGELOG: &str = "changelog";

pub(crate) fn cluster(
    partitions: i32,
) -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let c = MockCluster::new(1).expect("mock cluster");
    c.create_topic(INPUT, partitions, 1).unwrap();
    c.create_topic(ALERTS, 1, 1).unwrap();
    c.create_topic(DLQ, 1, 1).unwrap();
    c.create_topic(REPARTITION, REPARTITION_PARTITIONS, 1)
        .unwrap();
    c.create_topic(CHANGELOG, REPARTITION_PARTITIONS, 1)
        .unwrap();
    c
}

pub(crate) fn config(brokers: &str, group: &str) -> Config {
    let mut c = Config::default();
    c.kafka.brokers = brokers.to_owned();
    c.kafka.group_id = group.to_owned();
    c.kafka.input_topics = vec![INPUT.into()];
    c.kafka.alerts_topic = ALERTS.into();
    c.kafka.dead_letter_topic = DLQ.into();
    // The tests read the topic as alert.v1; the OCSF default has its own test below.
    c.alerts.format = AlertFormat::Json;
    // These tests cover the in-process path's delivery, commits and faults; the repartitioned
    // topology is tested end to end on Tansu (`scale_out.rs`) and by `repartitioned_service_*`.
    c.repartition.enabled = false;
    c.repartition.topic = REPARTITION.into();
    c.repartition.partitions = REPARTITION_PARTITIONS;
    c.state.changelog_topic = CHANGELOG.into();
    c.service.commit_interval = Duration::from_millis(200);
    c.service.drain_timeout = Duration::from_secs(10);
    c.kafka
        .consumer
        .insert("session.timeout.ms".into(), "6000".into());
    c.kafka
        .consumer
        .insert("heartbeat.interval.ms".into(), "500".into());
    c.kafka
        .producer
        .insert("message.timeout.ms".into(), "20000".into());
    c
}

pub(crate) struct Running {
    stop: Arc<AtomicBool>,
    pub(crate) metrics: Arc<Metrics>,
    running: cloudwarden::kafka::service::Running,
}

impl Running {
    pub(crate) fn start(config: Config) -> Running {
        let metrics = Arc::new(Metrics::default());
        let service = Service::new(config, metrics.clone()).expect("service starts");
        let running = service.spawn().expect("the processing thread starts");
        Running {
            stop: running.stopper(),
            metrics,
            running,
        }
    }

    fn consumed(&self) -> u64 {
        self.metrics.records_in.lock().unwrap().values().sum()
    }

    pub(crate) fn stop(self) -> Arc<Metrics> {
        self.stop.store(true, Ordering::Relaxed);
        self.running.join().expect("service runs");
        self.metrics
    }
}

pub(crate) fn produce(brokers: &str, records: &[Vec<u8>]) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    for (i, r) in records.iter().enumerate() {
        let key = i.to_string();
        p.send(
            BaseRecord::to(INPUT)
                .payload(r.as_slice())
                .key(key.as_bytes()),
        )
        .unwrap();
    }
    p.flush(Duration::from_secs(10)).unwrap();
}

fn stratus(name: &str) -> Vec<Vec<u8>> {
    std::fs::read_to_string(fixture(&format!("stratus/{name}.ndjson")))
        .unwrap()
        .lines()
        .map(|l| l.as_bytes().to_vec())
        .collect()
}

/// Everything in `topic`, read by a fresh consumer until `want` messages or `timeout`.
pub(crate) fn read_all(
    brokers: &str,
    topic: &str,
    want: usize,
    timeout: Duration,
) -> Vec<rdkafka::message::OwnedMessage> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("reader-{topic}-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    drop(tpl);
    let mut out = Vec::new();
    let deadline = Instant::now() + timeout;
    while out.len() < want && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            out.push(m.detach());
        }
    }
    // A little longer, to see anything beyond `want` (duplicates, strays).
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            out.push(m.detach());
        }
    }
    out
}

/// Committed next-offsets of `group` for the input partitions.
pub(crate) fn committed(brokers: &str, group: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(INPUT, p);
    }
    let result = c.committed_offsets(tpl, Duration::from_secs(5)).unwrap();
    let out = result
        .elements()
        .iter()
        .map(|e| (e.partition(), e.offset().to_raw().unwrap_or(-1)))
        .collect();
    // Drop the list before the consumer (a live list makes the consumer's drop hang).
    drop(result);
    out
}

pub(crate) fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

/// `n` copies of the Stratus StopLogging record with distinct event ids: `n` log_disable alerts.
fn stop_logging_copies(n: usize) -> Vec<Vec<u8>> {
    let base = String::from_utf8(
        stratus("aws.defense-evasion.cloudtrail-stop")
            .into_iter()
            .find(|r| String::from_utf8_lossy(r).contains("\"StopLogging\""))
            .unwrap(),
    )
    .unwrap();
    (0..n)
        .map(|i| {
            base.replace("\"eventID\":\"", &format!("\"eventID\":\"{i:04}-"))
                .into_bytes()
        })
        .collect()
}

pub(crate) fn alerts_of(messages: &[rdkafka::message::OwnedMessage]) -> Vec<Alert> {
    messages
        .iter()
        .map(|m| serde_json::from_slice::<Alert>(m.payload().unwrap()).expect("alert.v1 JSON"))
        .collect()
}

#[test]
fn alerts_dead_letters_and_commits_after_acknowledgement() {
    let c = cluster(2);
    let brokers = c.bootstrap_servers();
    let mut records = stratus("aws.defense-evasion.cloudtrail-stop");
    records.push(b"{\"truncated\":".to_vec());
    records.push(b"{\"not\":\"an audit record\"}".to_vec());
    let n = records.len();
    produce(&brokers, &records);
    let run = Running::start(config(&brokers, "g1"));
    assert!(
        wait_until(Duration::from_secs(30), || run.consumed() as usize >= n),
        "consumed all"
    );
    let metrics = run.stop();

    let alerts = read_all(&brokers, ALERTS, 1, Duration::from_secs(10));
    let parsed = alerts_of(&alerts);
    let stop = parsed
        .iter()
        .find(|a| a.detector == "log_disable")
        .expect("a log_disable alert");
    let msg = &alerts[parsed.iter().position(|a| a.id == stop.id).unwrap()];
    assert_eq!(
        msg.key(),
        Some(stop.id.as_bytes()),
        "the alerts topic is keyed by the alert id"
    );

    let dead = read_all(&brokers, DLQ, 2, Duration::from_secs(10));
    assert_eq!(dead.len(), 2, "each undecodable record once");
    let header = |m: &rdkafka::message::OwnedMessage, k: &str| {
        m.headers()
            .and_then(|h| h.iter().find(|h| h.key == k).and_then(|h| h.value))
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let mut reasons: Vec<String> = dead
        .iter()
        .filter_map(|m| header(m, "cloudwarden.reason"))
        .collect();
    reasons.sort();
    assert_eq!(reasons, ["not_json", "unknown_shape"]);
    for m in &dead {
        assert_eq!(
            header(m, "cloudwarden.source.topic").as_deref(),
            Some(INPUT)
        );
        assert!(header(m, "cloudwarden.source.offset").is_some());
        assert!(
            records.iter().any(|r| Some(r.as_slice()) == m.payload()),
            "dead letter is the record unchanged"
        );
    }
    assert_eq!(metrics.dead_letters.load(Ordering::Relaxed), 2);

    // Everything was acknowledged, so the group's committed offsets are at the end of the input
    // (a partition that received nothing has no committed offset).
    let committed = committed(&brokers, "g1", 2);
    assert_eq!(
        committed.values().filter(|o| **o >= 0).sum::<i64>(),
        n as i64,
        "{committed:?}"
    );
}

#[test]
fn produce_errors_and_a_broker_outage_lose_no_alert() {
    let c = cluster(1);
    let brokers = c.bootstrap_servers();
    let records = stratus("aws.defense-evasion.cloudtrail-stop");
    let mut cfg = config(&brokers, "g2");
    cfg.kafka
        .producer
        .insert("retry.backoff.ms".into(), "50".into());
    let run = Running::start(cfg);
    // Retriable errors on the first produce requests: the idempotent producer retries them.
    c.request_errors(
        RDKafkaApiKey::Produce,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__TRANSPORT,
        ],
    );
    produce(&brokers, &records);
    assert!(wait_until(Duration::from_secs(30), || run.consumed()
        as usize
        >= records.len()));
    // Then the broker goes away for a while mid-run and comes back.
    c.broker_down(1).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    c.broker_up(1).unwrap();
    assert!(wait_until(Duration::from_secs(30), || run
        .metrics
        .in_flight
        .load(Ordering::Relaxed)
        == 0));
    run.stop();
    let alerts = alerts_of(&read_all(&brokers, ALERTS, 1, Duration::from_secs(10)));
    assert!(
        alerts.iter().any(|a| a.detector == "log_disable"),
        "{alerts:?}"
    );
    assert_eq!(
        committed(&brokers, "g2", 1).get(&0),
        Some(&(records.len() as i64))
    );
}

/// A broker outage mid-stream on the repartitioned topology with durable state: every detection
/// arrives (the same ids as `replay` of the file), and the input is committed to its end.
#[test]
fn repartitioned_a_broker_outage_mid_stream_loses_nothing() {
    use cloudwarden::engine::Engine;
    let c = cluster(1);
    let brokers = c.bootstrap_servers();
    let records = crate::util::records(&crate::util::input_files());
    let mut engine = Engine::new(&Config::default()).unwrap();
    let mut expected = Vec::new();
    for r in &records {
        let _ = engine.process_record(r, &mut expected);
    }
    engine.finish(&mut expected);
    let expected: std::collections::BTreeSet<String> = expected.into_iter().map(|a| a.id).collect();
    assert!(!expected.is_empty());
    let mut cfg = config(&brokers, "g2r");
    cfg.repartition.enabled = true;
    cfg.service.partition_idle_timeout = Duration::from_secs(2);
    cfg.state.checkpoint_interval = Duration::from_millis(300);
    cfg.kafka
        .producer
        .insert("retry.backoff.ms".into(), "50".into());
    let run = Running::start(cfg);
    let half = records.len() / 2;
    produce(&brokers, &records[..half]);
    assert!(wait_until(Duration::from_secs(30), || {
        run.metrics
            .records_in
            .lock()
            .unwrap()
            .get(INPUT)
            .copied()
            .unwrap_or(0)
            >= 100
    }));
    if std::env::var_os("CW_NO_OUTAGE").is_none() {
        c.broker_down(1).unwrap();
        std::thread::sleep(Duration::from_secs(2));
        c.broker_up(1).unwrap();
    }
    produce(&brokers, &records[half..]);
    let got = alerts_of(&read_all(
        &brokers,
        ALERTS,
        expected.len(),
        Duration::from_secs(60),
    ));
    let got: std::collections::BTreeSet<String> = got.into_iter().map(|a| a.id).collect();
    assert!(wait_until(Duration::from_secs(30), || run
        .metrics
        .in_flight
        .load(Ordering::Relaxed)
        == 0));
    run.stop();
    assert!(
        got == expected,
        "missing {:?}, new {:?}",
        expected.difference(&got).collect::<Vec<_>>(),
        got.difference(&expected).collect::<Vec<_>>()
    );
    assert_eq!(
        committed(&brokers, "g2r", 1).get(&0),
        Some(&(records.len() as i64))
    );
}

#[test]
fn a_slow_alerts_topic_pauses_consumption_and_commits_nothing_unacknowledged() {
    let c = cluster(1);
    let brokers = c.bootstrap_servers();
    // 40 StopLogging events: 40 alerts, more than the in-flight bound.
    let records = stop_logging_copies(40);
    produce(&brokers, &records);
    let mut cfg = config(&brokers, "g3");
    cfg.service.max_in_flight = 4;
    cfg.alerts.suppression.burst = 1000;
    let run = Running::start(cfg);
    // Every acknowledgement now takes 300 ms.
    c.broker_round_trip_time(1, Duration::from_millis(300))
        .unwrap();
    assert!(wait_until(Duration::from_secs(60), || run.consumed()
        as usize
        >= records.len()));
    let paused = run.metrics.backpressure_pauses.load(Ordering::Relaxed);
    assert!(wait_until(Duration::from_secs(60), || run
        .metrics
        .in_flight
        .load(Ordering::Relaxed)
        == 0));
    c.broker_round_trip_time(1, Duration::ZERO).unwrap();
    let metrics = run.stop();
    assert!(paused > 0, "consumption paused under backpressure");
    assert!(metrics.in_flight.load(Ordering::Relaxed) <= 4 + 1);
    let alerts = alerts_of(&read_all(&brokers, ALERTS, 40, Duration::from_secs(20)));
    let distinct: std::collections::BTreeSet<&str> = alerts.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(distinct.len(), 40, "every alert delivered");
    assert_eq!(committed(&brokers, "g3", 1).get(&0), Some(&40));
}

/// The same fault on the repartitioned topology with durable state: input consumption pauses
/// (the repartition topic keeps being read, or the watermark could never move), every alert
/// arrives, and the input is committed only once everything it caused is acknowledged.
#[test]
fn repartitioned_a_slow_alerts_topic_pauses_input_and_loses_nothing() {
    let c = cluster(1);
    let brokers = c.bootstrap_servers();
    let records = stop_logging_copies(40);
    produce(&brokers, &records);
    let mut cfg = config(&brokers, "g3r");
    cfg.repartition.enabled = true;
    cfg.service.max_in_flight = 4;
    cfg.service.partition_idle_timeout = Duration::from_secs(2);
    cfg.alerts.suppression.burst = 1000;
    let run = Running::start(cfg);
    c.broker_round_trip_time(1, Duration::from_millis(300))
        .unwrap();
    let alerts = alerts_of(&read_all(&brokers, ALERTS, 40, Duration::from_secs(90)));
    let distinct: std::collections::BTreeSet<&str> = alerts.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(distinct.len(), 40, "every alert delivered");
    let paused = run.metrics.backpressure_pauses.load(Ordering::Relaxed);
    assert!(wait_until(Duration::from_secs(60), || run
        .metrics
        .in_flight
        .load(Ordering::Relaxed)
        == 0));
    c.broker_round_trip_time(1, Duration::ZERO).unwrap();
    let metrics = run.stop();
    assert!(paused > 0, "input paused under backpressure");
    assert!(metrics.in_flight.load(Ordering::Relaxed) <= 4 + 1);
    assert_eq!(committed(&brokers, "g3r", 1).get(&0), Some(&40));
}

/// A record still waiting in stage 2's reorder buffer at the checkpoint is read again after a
/// restart; its stateless detectors already ran (their alert went out, their suppression count
/// is in the checkpoint), so it must not raise the same alert a second time.
#[test]
fn a_restart_does_not_re_raise_the_stateless_alerts_of_buffered_records() {
    let c = cluster(1);
    let brokers = c.bootstrap_servers();
    let records = stop_logging_copies(1);
    produce(&brokers, &records);
    let mut cfg = config(&brokers, "g5r");
    cfg.repartition.enabled = true;
    // The input partition stays active, so the watermark stays 5 min behind its newest event.
    cfg.service.partition_idle_timeout = Duration::from_secs(600);
    let first = Running::start(cfg.clone());
    let alerts = alerts_of(&read_all(&brokers, ALERTS, 1, Duration::from_secs(30)));
    assert_eq!(alerts.len(), 1);
    // (One record: the suppressor allows 3 alerts per key and period, so more copies would hide
    // a repeat.) The StopLogging records also feed log_source_silence, which waits for the watermark
    // (5 min behind the newest event): at shutdown they are still buffered.
    let m = first.stop();
    assert!(m.checkpoints.load(Ordering::Relaxed) > 0);
    let second = Running::start(cfg);
    assert!(wait_until(Duration::from_secs(30), || second
        .metrics
        .records_in
        .lock()
        .unwrap()
        .get(REPARTITION)
        .copied()
        .unwrap_or(0)
        > 0));
    std::thread::sleep(Duration::from_secs(2));
    let restored = second.metrics.state_restored.load(Ordering::Relaxed);
    second.stop();
    assert!(restored > 0, "the second run restored the checkpoint");
    let alerts = alerts_of(&read_all(&brokers, ALERTS, 1, Duration::from_secs(10)));
    let ids: Vec<&str> = alerts.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(
        ids.len(),
        1,
        "the alert once, not again after the restart: {ids:?}"
    );
}

/// An undecodable record too large to be sent on whole (with the dead-letter headers it exceeds
/// the producer's `message.max.bytes`) is dead-lettered cut to fit, with its original size, and
/// the stream goes on.
#[test]
fn a_dead_letter_too_large_to_send_is_cut_and_the_stream_goes_on() {
    let c = cluster(1);
    let brokers = c.bootstrap_servers();
    // Sent by a producer that allows it; the service's producer allows 1,000,000 bytes.
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("message.max.bytes", "2000000")
        .create()
        .unwrap();
    let big = vec![b'x'; 1_200_000];
    p.send(BaseRecord::<[u8], [u8]>::to(INPUT).payload(big.as_slice()))
        .map_err(|(e, _)| e)
        .unwrap();
    p.flush(Duration::from_secs(10)).unwrap();
    produce(&brokers, &stop_logging_copies(1));
    let mut cfg = config(&brokers, "g6");
    cfg.decode.max_record_bytes = 2 << 20;
    let run = Running::start(cfg);
    let alerts = alerts_of(&read_all(&brokers, ALERTS, 1, Duration::from_secs(30)));
    let dead = read_all(&brokers, DLQ, 1, Duration::from_secs(10));
    run.stop();
    assert_eq!(
        alerts.len(),
        1,
        "the record after the big one was processed"
    );
    assert_eq!(dead.len(), 1);
    let d = &dead[0];
    let header = |k: &str| {
        d.headers()
            .and_then(|h| h.iter().find(|h| h.key == k))
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(header("cloudwarden.truncated").as_deref(), Some("1200000"));
    assert_eq!(header("cloudwarden.reason").as_deref(), Some("not_json"));
    let len = d.payload().map_or(0, <[u8]>::len);
    assert!(
        len > 990_000 && len < 1_000_000,
        "payload cut to fit: {len}"
    );
}

#[test]
fn two_instances_share_the_partitions_and_commit_on_revocation() {
    let c = cluster(4);
    let brokers = c.bootstrap_servers();
    let first = Running::start(config(&brokers, "g4"));
    let records = stratus("aws.defense-evasion.cloudtrail-stop");
    produce(&brokers, &records);
    assert!(wait_until(Duration::from_secs(30), || first.consumed()
        as usize
        >= records.len()));
    // A second member joins: cooperative rebalance, some partitions revoked from the first.
    let second = Running::start(config(&brokers, "g4"));
    assert!(
        wait_until(Duration::from_secs(40), || first
            .metrics
            .rebalances
            .load(Ordering::Relaxed)
            >= 2),
        "the first instance saw a revocation"
    );
    // Revoked partitions were committed inside the callback: everything read so far is committed.
    let committed_after_revoke = committed(&brokers, "g4", 4);
    assert_eq!(
        committed_after_revoke
            .values()
            .filter(|o| **o >= 0)
            .sum::<i64>(),
        records.len() as i64,
        "{committed_after_revoke:?}"
    );
    let more = stratus("aws.defense-evasion.cloudtrail-delete");
    produce(&brokers, &more);
    let total = records.len() + more.len();
    assert!(wait_until(
        Duration::from_secs(40),
        || (first.consumed() + second.consumed()) as usize >= total
    ));
    let (m1, m2) = (first.stop(), second.stop());
    let (c1, c2): (u64, u64) = (
        m1.records_in.lock().unwrap().values().sum(),
        m2.records_in.lock().unwrap().values().sum(),
    );
    assert_eq!(
        (c1 + c2) as usize,
        total,
        "no record read twice after a clean handover"
    );
    assert!(c2 > 0, "the second instance got partitions");
}

/// CloudTrail-like record at epoch ms `t` from `account`.
fn record_at(t: i64, account: &str, i: usize) -> Vec<u8> {
    format!(
        r#"{{"eventTime":"{}","eventSource":"ec2.amazonaws.com","eventName":"DescribeInstances","awsRegion":"us-east-1","recipientAccountId":"{account}","eventID":"idle-{i}","userIdentity":{{"arn":"arn:aws:iam::{account}:role/app"}}}}"#,
        cloudwarden::event::time::format_rfc3339_ms(t)
    )
    .into_bytes()
}

#[test]
fn when_all_input_stops_event_time_moves_on_and_silence_fires() {
    let c = cluster(1);
    let brokers = c.bootstrap_servers();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // One source, active for the last 10 seconds, then nothing at all.
    let records: Vec<Vec<u8>> = (0..20)
        .map(|i| record_at(now - 10_000 + i as i64 * 500, "555555555555", i))
        .collect();
    produce(&brokers, &records);
    let mut cfg = config(&brokers, "g5");
    cfg.time.allowed_lateness = Duration::from_secs(1);
    cfg.time.check_interval = Duration::from_millis(200);
    cfg.detectors.log_source_silence.floor = Duration::from_secs(3);
    cfg.detectors.log_source_silence.resolution = Duration::from_millis(100);
    cfg.detectors.log_source_silence.min_events = 10;
    cfg.service.idle_timeout = Duration::from_secs(1);
    cfg.service.partition_idle_timeout = Duration::from_secs(1);
    let run = Running::start(cfg);
    assert!(wait_until(Duration::from_secs(30), || run.consumed()
        as usize
        >= records.len()));
    // No more input: only wall-clock advance of the watermark can reveal the silence.
    let fired = wait_until(Duration::from_secs(30), || {
        run.metrics
            .alerts
            .lock()
            .unwrap()
            .keys()
            .any(|(d, _)| d == "log_source_silence")
    });
    let started = Instant::now();
    run.stop();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "shutdown is bounded (no drop hang)"
    );
    assert!(fired, "silence detected with no input at all");
    let alerts = alerts_of(&read_all(&brokers, ALERTS, 1, Duration::from_secs(10)));
    let silence = alerts
        .iter()
        .find(|a| a.detector == "log_source_silence")
        .expect("in the alerts topic");
    assert_eq!(
        silence.log_source.as_deref(),
        Some("aws/555555555555/us-east-1/management")
    );
}

fn secret_fetch(t: i64, i: usize) -> Vec<u8> {
    format!(
        r#"{{"eventTime":"{}","eventSource":"secretsmanager.amazonaws.com","eventName":"GetSecretValue","awsRegion":"us-east-1","recipientAccountId":"666666666666","eventID":"sf-{i}","userIdentity":{{"arn":"arn:aws:iam::666666666666:user/x"}},"requestParameters":{{"secretId":"prod/s{i}"}}}}"#,
        cloudwarden::event::time::format_rfc3339_ms(t)
    )
    .into_bytes()
}

fn produce_to(brokers: &str, partition: i32, records: &[Vec<u8>]) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    for r in records {
        p.send(
            BaseRecord::<(), _>::to(INPUT)
                .payload(r.as_slice())
                .partition(partition),
        )
        .unwrap();
    }
    p.flush(Duration::from_secs(10)).unwrap();
}

/// The documented state policy on assignment, "warm-up": an instance keeps the window state it
/// has across a rebalance; a partition's new owner starts its keys empty.
#[test]
fn state_policy_on_rebalance_is_warm_up() {
    let c = cluster(2);
    let brokers = c.bootstrap_servers();
    let t0 = 1_767_225_600_000i64;
    let first = Running::start(config(&brokers, "g6"));
    // Ten distinct secrets (threshold 15) in partition 0, read by the only member.
    produce_to(
        &brokers,
        0,
        &(0..10)
            .map(|i| secret_fetch(t0 + i as i64 * 1000, i))
            .collect::<Vec<_>>(),
    );
    assert!(wait_until(Duration::from_secs(30), || first.consumed() >= 10));
    let second = Running::start(config(&brokers, "g6"));
    assert!(
        wait_until(Duration::from_secs(40), || second
            .metrics
            .rebalances
            .load(Ordering::Relaxed)
            >= 1),
        "the second member got an assignment"
    );
    let before = (first.consumed(), second.consumed());
    // Ten more in the same window and partition.
    produce_to(
        &brokers,
        0,
        &(10..20)
            .map(|i| secret_fetch(t0 + i as i64 * 1000, i))
            .collect::<Vec<_>>(),
    );
    assert!(wait_until(Duration::from_secs(30), || first.consumed()
        + second.consumed()
        >= before.0 + before.1 + 10));
    let first_kept_partition = first.consumed() > before.0;
    let (m1, m2) = (first.stop(), second.stop());
    let fired = |m: &Metrics| {
        m.alerts
            .lock()
            .unwrap()
            .keys()
            .any(|(d, _)| d == "secret_fetch_rate")
    };
    if first_kept_partition {
        // Same instance: its windows survived the rebalance, 20 distinct secrets ≥ 15.
        assert!(fired(&m1), "state kept across the rebalance");
        let alerts = alerts_of(&read_all(&brokers, ALERTS, 1, Duration::from_secs(10)));
        let a = alerts
            .iter()
            .find(|a| a.detector == "secret_fetch_rate")
            .unwrap();
        assert!(a.evidence.distinct_count.unwrap() >= 15);
    } else {
        // New owner: warm-up, its window holds only the ten it read itself.
        assert!(
            !fired(&m2) && !fired(&m1),
            "a new owner starts its keys empty"
        );
    }
}

/// With the default `alerts.format`, the SIEM reads OCSF Detection Findings: every record on the
/// alerts topic conforms to class 2004 as resolved from the schema sources, and its
/// `finding_info.uid` is the record key (the alert id).
#[test]
fn the_alerts_topic_carries_conformant_ocsf_findings_by_default() {
    let c = cluster(1);
    let brokers = c.bootstrap_servers();
    let records = crate::util::records(&crate::util::input_files());
    let n = records.len();
    produce(&brokers, &records);
    let mut cfg = config(&brokers, "ocsf-default");
    cfg.alerts.format = cloudwarden::config::Config::default().alerts.format;
    assert_eq!(cfg.alerts.format, AlertFormat::Ocsf, "the default");
    let run = Running::start(cfg);
    assert!(
        wait_until(Duration::from_secs(60), || run.consumed() as usize >= n),
        "consumed all"
    );
    run.stop();
    let messages = read_all(&brokers, ALERTS, 10, Duration::from_secs(10));
    assert!(messages.len() >= 10, "{} alerts", messages.len());
    let schema = crate::ocsf::resolver::Schema::shipped();
    let class = schema.class("detection_finding");
    let mut docs = Vec::new();
    for m in &messages {
        let doc: serde_json::Value =
            serde_json::from_slice(m.payload().expect("a value")).expect("JSON");
        assert_eq!(doc["class_uid"], 2004);
        assert_eq!(
            doc["finding_info"]["uid"].as_str().map(str::as_bytes),
            m.key(),
            "keyed by the finding uid"
        );
        docs.push((format!("offset {}", m.offset()), doc));
    }
    crate::ocsf::assert_conformant(&schema, &class, &docs);
}
