//! Broker faults on a 3-node Apache Kafka cluster (replication 3, `min.insync.replicas` 2):
//! `kill -9` the leader of an input partition and the leader of the alerts topic mid-stream, one
//! after the other (each restarted before the next), while two services run side by side on
//! their own topics: one at-least-once, one exactly-once. Nothing is lost by either (the alert ids
//! are `replay`'s), and the exactly-once one commits each alert once.
//!
//! Each service runs under a supervisor that starts it again when it stops with an error, as an
//! orchestrator would: a fatal transaction error (a transaction the coordinator aborted while it
//! moved) stops an exactly-once instance by design. The restarts are counted and printed.

use crate::broker::Broker;
use crate::exactly_once_kafka::{read_isolated, replay_ids};
use crate::scale_out::{config, INPUT_PARTITIONS};
use crate::util::{input_files, records};
use cloudwarden::config::Config;
use cloudwarden::kafka::config::Guarantee;
use cloudwarden::kafka::service::Service;
use cloudwarden::telemetry::Metrics;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A service on its own thread, started again whenever it stops with an error.
struct Supervised {
    stop: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    errors: Arc<Mutex<Vec<String>>>,
    handle: JoinHandle<()>,
}

impl Supervised {
    fn start(c: Config) -> Supervised {
        let metrics = Arc::new(Metrics::default());
        let stop = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let (m, s, e) = (metrics.clone(), stop.clone(), errors.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let result = Service::new(c.clone(), m.clone()).and_then(|svc| svc.run(&s));
                match result {
                    Ok(()) => return,
                    Err(err) => {
                        e.lock().unwrap().push(err.to_string());
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            }
        });
        Supervised {
            stop,
            metrics,
            errors,
            handle,
        }
    }

    /// Until it owns every input and repartition partition (6 + 6) for 2 s.
    fn wait_stable(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut since: Option<Instant> = None;
        loop {
            if self.metrics.assigned.load(Ordering::Relaxed) == 12 {
                if since.get_or_insert_with(Instant::now).elapsed() >= Duration::from_secs(2) {
                    return;
                }
            } else {
                since = None;
            }
            assert!(Instant::now() < deadline, "never owned every partition");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops it; the errors it was restarted after, or `None` if it did not stop within 120 s
    /// (an exactly-once shutdown commits its last transaction, each call bounded by
    /// `processing.transaction_call_timeout`, 10 s, then drains and leaves the group).
    fn stop(self) -> Option<Vec<String>> {
        self.stop.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(120);
        while !self.handle.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if !self.handle.is_finished() {
            return None;
        }
        self.handle.join().expect("supervisor thread");
        let errors = self.errors.lock().unwrap().clone();
        Some(errors)
    }
}

/// Produces `records` round-robin over the input partitions in `chunks` chunks a second apart,
/// with an idempotent producer: its retries across a leader change write no input twice.
fn feed(brokers: String, topic: String, records: Vec<Vec<u8>>, chunks: usize) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "10")
        .create()
        .unwrap();
    let per = records.len().div_ceil(chunks);
    for (i, r) in records.iter().enumerate() {
        let mut rec = BaseRecord::<(), [u8]>::to(&topic)
            .payload(r.as_slice())
            .partition(i as i32 % INPUT_PARTITIONS);
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((_, back)) => {
                    p.poll(Duration::from_millis(20));
                    rec = back;
                }
            }
        }
        if (i + 1) % per == 0 {
            p.flush(Duration::from_secs(60)).unwrap();
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    p.flush(Duration::from_secs(60)).unwrap();
}

fn service_config(broker: &Broker, run: &str, guarantee: Guarantee) -> Config {
    let mut c = config(broker, run);
    c.repartition.replication_factor = 3;
    c.state.replication_factor = 3;
    c.processing.guarantee = guarantee;
    if guarantee == Guarantee::ExactlyOnce {
        c.processing.transactional_id = broker.name(&format!("{run}-instance"));
        c.processing.transaction_interval = Duration::from_millis(200);
    }
    c
}

/// At-least-once: kill -9 the leaders of the alerts partition and of input partition 0 (one
/// node at a time, each restarted before the next kill) mid-stream: no alert is lost.
#[test]
fn killing_partition_leaders_loses_no_alert() {
    leader_kills(Guarantee::AtLeastOnce);
}

/// Exactly-once under the same leader kills: nothing lost and nothing committed twice. Every
/// transactional call is bounded by `processing.transaction_call_timeout`: a call librdkafka does
/// not return from stops the instance, and its supervisor starts it again (fencing the stuck
/// producer).
#[test]
fn killing_partition_leaders_under_exactly_once_loses_and_doubles_nothing() {
    leader_kills(Guarantee::ExactlyOnce);
}

fn leader_kills(guarantee: Guarantee) {
    let mut broker = Broker::cluster(3);
    let name = match guarantee {
        Guarantee::AtLeastOnce => "at-least-once",
        Guarantee::ExactlyOnce => "exactly-once",
    };
    let c = service_config(&broker, &format!("leaders-{}", guarantee as u8), guarantee);
    broker.create_topics(&[
        (c.kafka.input_topics[0].as_str(), INPUT_PARTITIONS),
        (c.kafka.alerts_topic.as_str(), 1),
        (c.kafka.dead_letter_topic.as_str(), 1),
    ]);
    if std::env::var_os("CW_TRACE").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .with_writer(std::io::stderr)
            .try_init();
    }
    let want = replay_ids();
    assert!(!want.is_empty());
    let service = Supervised::start(c.clone());
    service.wait_stable();

    let records = records(&input_files());
    let feeder = {
        let (addr, topic) = (broker.addr.clone(), c.kafka.input_topics[0].clone());
        std::thread::spawn(move || feed(addr, topic, records, 60))
    };
    // One node down at a time (the cluster keeps 2 in sync): the leader of the alerts
    // partition, then of input partition 0, twice, each restarted before the next kill.
    let mut killed = Vec::new();
    for (topic, partition) in [
        (c.kafka.alerts_topic.as_str(), 0),
        (c.kafka.input_topics[0].as_str(), 0),
        (c.kafka.alerts_topic.as_str(), 0),
        (c.kafka.input_topics[0].as_str(), 0),
    ] {
        std::thread::sleep(Duration::from_secs(4));
        let leader = broker
            .leader(topic, partition)
            .unwrap_or_else(|| panic!("{topic}/{partition} has no leader"));
        broker.kill(leader);
        eprintln!("killed node {leader}, the leader of {topic}/{partition}");
        killed.push((topic.to_owned(), leader));
        std::thread::sleep(Duration::from_secs(6));
        broker.restart(leader);
    }
    feeder.join().unwrap();
    let alerts = read_isolated(
        &broker.addr,
        &c.kafka.alerts_topic,
        "read_committed",
        Duration::from_secs(15),
    );
    let ids: BTreeSet<String> = alerts.iter().map(|a| a.id.clone()).collect();
    assert!(
        ids == want,
        "{name} after killing leaders {killed:?}: missing {:?}, new {:?}",
        want.difference(&ids).collect::<Vec<_>>(),
        ids.difference(&want).collect::<Vec<_>>()
    );
    if guarantee == Guarantee::ExactlyOnce {
        assert_eq!(
            alerts.len(),
            ids.len(),
            "exactly-once committed an alert twice"
        );
    }
    // Every transactional call is bounded, so the last commit and the drain end in time.
    let errors = service.stop();
    assert!(
        errors.is_some(),
        "the {name} service did not stop within 120 s after the leader kills"
    );
    eprintln!(
        "leaders killed {killed:?}: {name} {} alerts ({} duplicates, restarted after {errors:?})",
        alerts.len(),
        alerts.len() - ids.len(),
    );
}
