//! Scale-out on Apache Kafka: the repartitioned topology gives the same alerts on 1, 2
//! and 3 instances of one consumer group, whatever input partition a principal's or a source's
//! events arrive on; a stopped instance's partitions are taken over; a quiet repartition
//! partition still sees silence fire at the right event time.
//!
//! Instances are `Service`s on their own threads, each with its own Kafka clients (separate
//! group members, as separate processes would be), with the service's default assignor
//! (cooperative-sticky).

use crate::broker::Broker;
use crate::util::{input_files, records};
use cloudwarden::alert::Alert;
use cloudwarden::config::Config;
use cloudwarden::engine::Engine;
use cloudwarden::kafka::service::Service;
use cloudwarden::replay::replay_files;
use cloudwarden::telemetry::Metrics;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub(crate) const INPUT_PARTITIONS: i32 = 6;
const REPARTITION_PARTITIONS: i32 = 6;

/// Produces round-robin over the input partitions: a principal's events, and a log source's,
/// land on every partition on purpose.
pub(crate) fn produce(brokers: &str, topic: &str, records: &[Vec<u8>]) {
    produce_spread(brokers, topic, records, INPUT_PARTITIONS)
}

/// Produces `records` round-robin over `partitions` partitions of `topic`.
pub(crate) fn produce_spread(brokers: &str, topic: &str, records: &[Vec<u8>], partitions: i32) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "10")
        .create()
        .unwrap();
    for (i, r) in records.iter().enumerate() {
        let mut rec = BaseRecord::<(), [u8]>::to(topic)
            .payload(r.as_slice())
            .partition(i as i32 % partitions);
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((_, back)) => {
                    p.poll(Duration::from_millis(20));
                    rec = back;
                }
            }
        }
    }
    p.flush(Duration::from_secs(60)).unwrap();
}

/// The config of test `run` on `broker` (topics and group named for this broker handle).
pub(crate) fn config(broker: &Broker, run: &str) -> Config {
    let run = broker.name(run);
    let mut c = Config::default();
    c.kafka.brokers = broker.addr.clone();
    c.kafka.group_id = format!("cw-{run}");
    c.kafka.input_topics = vec![format!("audit-{run}")];
    c.kafka.alerts_topic = format!("alerts-{run}");
    c.kafka.dead_letter_topic = format!("dlq-{run}");
    // Read back as alert.v1 (the default, OCSF, is checked by kafka_mock).
    c.alerts.format = cloudwarden::alert::format::AlertFormat::Json;
    c.repartition.partitions = REPARTITION_PARTITIONS;
    c.repartition.replication_factor = 1;
    c.repartition.marker_interval = Duration::from_millis(100);
    // Input partitions that are done count as idle soon; the wall clock never moves event time
    // in these tests (that would make the end of the stream depend on timing).
    c.service.partition_idle_timeout = Duration::from_secs(3);
    c.service.idle_timeout = Duration::from_secs(3600);
    c.service.commit_interval = Duration::from_millis(200);
    c.service.listen = "127.0.0.1:0".into();
    for (k, v) in [
        ("session.timeout.ms", "6000"),
        ("heartbeat.interval.ms", "500"),
    ] {
        c.kafka.consumer.insert(k.into(), v.into());
    }
    c
}

pub(crate) struct Instance {
    stop: Arc<AtomicBool>,
    pub(crate) metrics: Arc<Metrics>,
    handle: JoinHandle<()>,
}

impl Instance {
    pub(crate) fn start(config: Config) -> Instance {
        let metrics = Arc::new(Metrics::default());
        let service = Service::new(config, metrics.clone()).expect("service starts");
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || service.run(&s).expect("service runs"));
        Instance {
            stop,
            metrics,
            handle,
        }
    }

    fn assigned(&self) -> u64 {
        self.metrics.assigned.load(Ordering::Relaxed)
    }

    pub(crate) fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("service thread");
    }
}

/// Waits until the group's members together own every partition, once, and that holds for a
/// moment (no rebalance mid-stream: state would be dropped, see the README).
pub(crate) fn wait_stable(instances: &[&Instance]) {
    let want = (INPUT_PARTITIONS + REPARTITION_PARTITIONS) as u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut since: Option<Instant> = None;
    loop {
        let total: u64 = instances.iter().map(|i| i.assigned()).sum();
        let all_have = instances.iter().all(|i| i.assigned() > 0);
        if total == want && all_have {
            let s = *since.get_or_insert_with(Instant::now);
            if s.elapsed() >= Duration::from_secs(2) {
                return;
            }
        } else {
            since = None;
        }
        assert!(
            Instant::now() < deadline,
            "group never settled: {:?}",
            instances.iter().map(|i| i.assigned()).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every alert in the alerts topic as a `read_committed` SIEM reads it, until nothing new
/// arrives for `quiet`.
pub(crate) fn read_alerts(brokers: &str, topic: &str, quiet: Duration) -> Vec<Alert> {
    crate::exactly_once_kafka::read_isolated(brokers, topic, "read_committed", quiet)
}

/// What makes two detections the same: detector, key, window, counts (and so the id).
type Summary = (
    String,
    String,
    String,
    i64,
    i64,
    Option<u64>,
    Option<u64>,
    String,
);

fn summarize(a: &Alert) -> Summary {
    (
        a.detector.clone(),
        a.dedup_key.clone(),
        format!("{:?}", a.status),
        a.window_start,
        a.window_end,
        a.evidence.count,
        a.evidence.distinct_count,
        a.id.clone(),
    )
}

/// Runs `n` instances over the records and returns the distinct alerts.
fn run_group(broker: &Broker, run: &str, n: usize, records: &[Vec<u8>]) -> BTreeSet<Summary> {
    // Quiet for longer than the partition idle timeout: every input partition is idle, the
    // watermark reaches the end of the stream, and the last silence checks have run.
    run_instances(
        broker,
        &config(broker, run),
        n,
        records,
        Duration::from_secs(10),
    )
    .iter()
    .map(summarize)
    .collect()
}

/// Runs `n` instances of `c` over the records; every alert read back until the alerts topic
/// has been quiet for `quiet`.
pub(crate) fn run_instances(
    broker: &Broker,
    c: &Config,
    n: usize,
    records: &[Vec<u8>],
    quiet: Duration,
) -> Vec<Alert> {
    broker.create_topics(&[
        (c.kafka.input_topics[0].as_str(), INPUT_PARTITIONS),
        (c.kafka.alerts_topic.as_str(), 1),
        (c.kafka.dead_letter_topic.as_str(), 1),
    ]);
    let instances: Vec<Instance> = (0..n).map(|_| Instance::start(c.clone())).collect();
    wait_stable(&instances.iter().collect::<Vec<_>>());
    produce(&broker.addr, &c.kafka.input_topics[0], records);
    let alerts = read_alerts(&broker.addr, &c.kafka.alerts_topic, quiet);
    for i in instances {
        i.stop();
    }
    alerts
}

#[test]
fn one_two_and_three_instances_raise_the_same_alerts() {
    let broker = Broker::start();
    let records = records(&input_files());
    let one = run_group(&broker, "n1", 1, &records);
    let two = run_group(&broker, "n2", 2, &records);
    let three = run_group(&broker, "n3", 3, &records);

    let detectors: BTreeSet<&str> = one.iter().map(|s| s.0.as_str()).collect();
    for d in [
        "secret_fetch_rate",
        "discovery_burst",
        "log_disable",
        "log_source_silence",
    ] {
        assert!(detectors.contains(d), "{d} raised nothing: {detectors:?}");
    }
    let diff = |a: &BTreeSet<Summary>, b: &BTreeSet<Summary>| -> Vec<Summary> {
        a.symmetric_difference(b).cloned().collect()
    };
    // The stateful detectors run in event-time order: exactly the same detections. The stateless
    // ones run on arrival (a StopLogging alert must not wait for the watermark), so when their
    // suppression limit is hit, which alert of a burst gets through can depend on arrival order:
    // for them the same (detector, key) pairs must fire.
    let stateless = |s: &Summary| {
        matches!(
            s.0.as_str(),
            "log_disable"
                | "tenant_settings"
                | "event_trigger"
                | "impair_defenses"
                | "conditional_access"
                | "serverless"
        )
    };
    let ordered = |set: &BTreeSet<Summary>| -> BTreeSet<Summary> {
        set.iter().filter(|s| !stateless(s)).cloned().collect()
    };
    let keys = |set: &BTreeSet<Summary>| -> BTreeSet<(String, String)> {
        set.iter()
            .filter(|s| stateless(s))
            .map(|s| (s.0.clone(), s.1.clone()))
            .collect()
    };
    for (name, other) in [("2", &two), ("3", &three)] {
        assert!(
            diff(&ordered(&one), &ordered(other)).is_empty(),
            "1 vs {name} instances: {:#?}",
            diff(&ordered(&one), &ordered(other))
        );
        assert_eq!(keys(&one), keys(other), "1 vs {name} instances");
    }

    // And `replay` of the same files makes the same detections: once every input partition is
    // idle, the group's watermark reaches the last event, where replay judges silence at end of
    // input.
    let mut engine = Engine::new(&Config::default()).unwrap();
    let files = input_files();
    let paths: Vec<&std::path::Path> = files.iter().map(|p| p.as_path()).collect();
    let replayed: BTreeSet<Summary> = replay_files(&mut engine, &paths, 100_000)
        .unwrap()
        .iter()
        .map(summarize)
        .collect();
    assert!(
        diff(&ordered(&one), &ordered(&replayed)).is_empty(),
        "live vs replay: {:#?}",
        diff(&ordered(&one), &ordered(&replayed))
    );
    assert_eq!(keys(&one), keys(&replayed), "live vs replay");
}

/// A CloudTrail record of `account` at `t` (epoch ms).
fn cloudtrail(account: &str, t: i64, n: usize) -> Vec<u8> {
    let time = cloudwarden::event::time::format_rfc3339_ms(t);
    format!(
        r#"{{"eventVersion":"1.08","eventTime":"{time}","eventSource":"ec2.amazonaws.com","eventName":"DescribeInstances","awsRegion":"us-east-1","recipientAccountId":"{account}","userIdentity":{{"type":"IAMUser","arn":"arn:aws:iam::{account}:user/app","accountId":"{account}"}},"eventID":"{account}-{n}","eventType":"AwsApiCall","managementEvent":true}}"#
    )
    .into_bytes()
}

#[test]
fn a_quiet_repartition_partition_still_sees_silence_at_the_right_time() {
    use cloudwarden::kafka::repartition::partition_of;
    use cloudwarden::window::stable_hash;
    // Two accounts whose scope keys land on different repartition partitions.
    let part = |a: &str| partition_of(stable_hash(&["aws", a]), REPARTITION_PARTITIONS);
    let quiet = "111111111111";
    let busy = (200_000_000_000u64..)
        .map(|n| n.to_string())
        .find(|a| part(a) != part(quiet))
        .unwrap();
    // The quiet account logs every minute for an hour, then stops; the busy one goes on for
    // three more hours. After the quiet account stops, its repartition partition receives
    // nothing but watermark markers.
    let t0 = 1_767_225_600_000i64;
    let minute = 60_000;
    let mut recs: Vec<(i64, Vec<u8>)> = Vec::new();
    for i in 0..60 {
        recs.push((
            t0 + i * minute,
            cloudtrail(quiet, t0 + i * minute, i as usize),
        ));
    }
    for i in 0..240 {
        recs.push((
            t0 + i * minute,
            cloudtrail(&busy, t0 + i * minute, i as usize),
        ));
    }
    recs.sort_by_key(|(t, _)| *t);
    let records: Vec<Vec<u8>> = recs.into_iter().map(|(_, r)| r).collect();

    let broker = Broker::start();
    let c = config(&broker, "quiet");
    broker.create_topics(&[
        (c.kafka.input_topics[0].as_str(), INPUT_PARTITIONS),
        (c.kafka.alerts_topic.as_str(), 1),
        (c.kafka.dead_letter_topic.as_str(), 1),
    ]);
    let instance = Instance::start(c.clone());
    wait_stable(&[&instance]);
    produce(&broker.addr, &c.kafka.input_topics[0], &records);
    let alerts = read_alerts(&broker.addr, &c.kafka.alerts_topic, Duration::from_secs(8));
    instance.stop();

    let silent: Vec<&Alert> = alerts
        .iter()
        .filter(|a| a.detector == "log_source_silence")
        .collect();
    let last_seen = t0 + 59 * minute;
    // Threshold: max(k × learned gap (10 × 1 min), floor 30 min) = 30 min after the last event.
    let expected = last_seen + 30 * minute;
    assert_eq!(silent.len(), 1, "{silent:#?}");
    let a = silent[0];
    assert_eq!(a.dedup_key, format!("aws/{quiet}/us-east-1/management"));
    assert_eq!((a.window_start, a.time), (last_seen, expected));
}

#[test]
fn stopping_one_of_two_instances_mid_stream_loses_no_partition() {
    stop_one_mid_stream(2);
}

/// `n` instances; one stops mid-stream (gracefully: Tansu 0.6 never reassigns a SIGKILLed
/// member's partitions while other members remain). The others take its partitions, restore
/// their state, and every detection survives.
fn stop_one_mid_stream(n: usize) {
    let broker = Broker::start();
    let records = records(&input_files());
    let c = config(&broker, &format!("stop1of{n}"));
    broker.create_topics(&[
        (c.kafka.input_topics[0].as_str(), INPUT_PARTITIONS),
        (c.kafka.alerts_topic.as_str(), 1),
        (c.kafka.dead_letter_topic.as_str(), 1),
    ]);
    let mut instances: Vec<Instance> = (0..n).map(|_| Instance::start(c.clone())).collect();
    wait_stable(&instances.iter().collect::<Vec<_>>());
    let half = records.len() / 2;
    produce(&broker.addr, &c.kafka.input_topics[0], &records[..half]);
    let consumed = |is: &[Instance]| -> u64 {
        is.iter()
            .map(|i| {
                i.metrics
                    .records_in
                    .lock()
                    .unwrap()
                    .get(&c.kafka.input_topics[0])
                    .copied()
                    .unwrap_or(0)
            })
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while consumed(&instances) < half as u64 {
        assert!(Instant::now() < deadline, "first half not consumed");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Graceful stop (SIGTERM): it commits what it finished and leaves the group.
    instances.pop().unwrap().stop();
    wait_stable(&instances.iter().collect::<Vec<_>>());
    produce(&broker.addr, &c.kafka.input_topics[0], &records[half..]);
    let alerts = read_alerts(&broker.addr, &c.kafka.alerts_topic, Duration::from_secs(10));
    for i in instances {
        i.stop();
    }
    check_handover(&broker, &c, &records, half, &alerts);
}

/// After a handover mid-stream (the first `half` of `records` produced before it, the rest
/// after; the group stopped): the group's committed offsets reach the end of every input
/// partition, no stateless detection is lost and no stateful one is lost or invented.
pub(crate) fn check_handover(
    broker: &Broker,
    c: &Config,
    records: &[Vec<u8>],
    half: usize,
    alerts: &[Alert],
) {
    // The group's committed offsets reach the end of every input partition: the survivors read
    // the stopped instance's partitions to the end.
    let check: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("group.id", &c.kafka.group_id)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..INPUT_PARTITIONS {
        tpl.add_partition(&c.kafka.input_topics[0], p);
    }
    let committed = check
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    // Each `produce` call goes round-robin from partition 0: the computed ends must also be
    // the broker's.
    let per_partition = |n: usize, p: i32| {
        ((n + (INPUT_PARTITIONS - 1 - p) as usize) / INPUT_PARTITIONS as usize) as i64
    };
    for e in committed.elements() {
        let end =
            per_partition(half, e.partition()) + per_partition(records.len() - half, e.partition());
        let (_, high) = check
            .fetch_watermarks(
                &c.kafka.input_topics[0],
                e.partition(),
                Duration::from_secs(10),
            )
            .unwrap();
        assert_eq!(high, end, "partition {} end offset", e.partition());
        assert_eq!(
            e.offset(),
            Offset::Offset(end),
            "partition {} committed to its end",
            e.partition()
        );
    }
    drop(check);

    // Nothing stateless is lost, and no stateful detection is lost or invented.
    let mut engine = Engine::new(&Config::default()).unwrap();
    let files = input_files();
    let paths: Vec<&std::path::Path> = files.iter().map(|p| p.as_path()).collect();
    let replayed: Vec<Alert> = replay_files(&mut engine, &paths, 100_000).unwrap();
    let stateless = [
        "log_disable",
        "tenant_settings",
        "event_trigger",
        "impair_defenses",
        "conditional_access",
        "serverless",
    ];
    let key_set = |a: &[&Alert]| -> BTreeSet<(String, String)> {
        a.iter()
            .map(|a| (a.detector.clone(), a.dedup_key.clone()))
            .collect()
    };
    let live_stateless: Vec<&Alert> = alerts
        .iter()
        .filter(|a| stateless.contains(&a.detector.as_str()))
        .collect();
    let replay_stateless: Vec<&Alert> = replayed
        .iter()
        .filter(|a| stateless.contains(&a.detector.as_str()))
        .collect();
    assert_eq!(key_set(&live_stateless), key_set(&replay_stateless));
    let live_stateful: Vec<&Alert> = alerts
        .iter()
        .filter(|a| !stateless.contains(&a.detector.as_str()))
        .collect();
    let replay_stateful: Vec<&Alert> = replayed
        .iter()
        .filter(|a| !stateless.contains(&a.detector.as_str()))
        .collect();
    // With durable state the moved repartition partitions are restored on their new owner:
    // every stateful detection is the same as without the handover.
    let ids = |a: &[&Alert]| -> BTreeSet<String> { a.iter().map(|a| a.id.clone()).collect() };
    let (live_ids, replay_ids) = (ids(&live_stateful), ids(&replay_stateful));
    assert!(!live_ids.is_empty());
    assert_eq!(
        live_ids,
        replay_ids,
        "stateful detections across the handover: missing {:?}, new {:?}",
        replay_ids.difference(&live_ids).collect::<Vec<_>>(),
        live_ids.difference(&replay_ids).collect::<Vec<_>>()
    );
}
