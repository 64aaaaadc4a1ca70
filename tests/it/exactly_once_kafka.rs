//! `processing.guarantee = "exactly_once"` on Apache Kafka: the semantics the mock cluster cannot
//! show (`exactly_once.rs`). Alerts of an open transaction are in the log but invisible to a
//! `read_committed` reader (the SIEM); a second instance with the same transactional id fences
//! the first (which stops with an error) and aborts its open transaction, whose alerts stay
//! invisible for good; the committed alerts are exactly `replay`'s, each once. The kill -9 × 10
//! version is in `faults.rs`.

use crate::broker::Broker;
use crate::scale_out::{config, produce, INPUT_PARTITIONS};
use crate::util::{input_files, records};
use cloudwarden::alert::Alert;
use cloudwarden::config::Config;
use cloudwarden::engine::Engine;
use cloudwarden::kafka::config::Guarantee;
use cloudwarden::kafka::service::Service;
use cloudwarden::replay::replay_files;
use cloudwarden::telemetry::Metrics;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Every message of `topic` (partition 0) read with `isolation` (`read_committed` or
/// `read_uncommitted`), until nothing new arrives for `quiet`.
pub(crate) fn read_isolated(
    brokers: &str,
    topic: &str,
    isolation: &str,
    quiet: Duration,
) -> Vec<Alert> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "siem")
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    drop(tpl);
    let mut out = Vec::new();
    let mut last = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(180);
    while last.elapsed() < quiet && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            last = Instant::now();
            out.push(serde_json::from_slice(m.payload().unwrap()).expect("alert.v1"));
        }
    }
    out
}

/// `replay`'s alert ids for the test data.
pub(crate) fn replay_ids() -> BTreeSet<String> {
    let mut engine = Engine::new(&Config::default()).unwrap();
    let files = input_files();
    let paths: Vec<&std::path::Path> = files.iter().map(|p| p.as_path()).collect();
    replay_files(&mut engine, &paths, 100_000)
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect()
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}

fn count(map: &std::sync::Mutex<std::collections::BTreeMap<String, u64>>, key: &str) -> u64 {
    map.lock().unwrap().get(key).copied().unwrap_or(0)
}

struct Running {
    stop: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    handle: JoinHandle<Result<(), cloudwarden::kafka::service::ServiceError>>,
}

fn start(c: Config) -> Running {
    let metrics = Arc::new(Metrics::default());
    let service = Service::new(c, metrics.clone()).expect("service starts");
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let handle = std::thread::spawn(move || service.run(&s));
    Running {
        stop,
        metrics,
        handle,
    }
}

#[test]
fn open_and_aborted_transactions_are_invisible_and_a_zombie_is_fenced() {
    let broker = Broker::start();
    let mut c = config(&broker, "eos-zombie");
    c.processing.guarantee = Guarantee::ExactlyOnce;
    c.processing.transactional_id = broker.name("eos-zombie-instance");
    // Long transactions: the first one is still open when the test looks.
    c.processing.transaction_interval = Duration::from_secs(10);
    c.processing.transaction_timeout = Duration::from_secs(60);
    broker.create_topics(&[
        (c.kafka.input_topics[0].as_str(), INPUT_PARTITIONS),
        (c.kafka.alerts_topic.as_str(), 1),
        (c.kafka.dead_letter_topic.as_str(), 1),
    ]);
    let alerts_topic = c.kafka.alerts_topic.clone();
    let want = replay_ids();
    assert!(!want.is_empty());

    let zombie = start(c.clone());
    produce(
        &broker.addr,
        &c.kafka.input_topics[0],
        &records(&input_files()),
    );
    // Alerts acknowledged by the broker inside the first, open transaction.
    assert!(
        wait_until(Duration::from_secs(60), || count(
            &zombie.metrics.messages_out,
            &alerts_topic
        ) > 0),
        "no alert written"
    );
    // While a transaction is open (no commit between the two looks), its alerts are in the log
    // (read_uncommitted) and invisible to read_committed.
    let look = || {
        let before = count(&zombie.metrics.transactions, "committed");
        let all = read_isolated(
            &broker.addr,
            &alerts_topic,
            "read_uncommitted",
            Duration::from_secs(1),
        );
        let visible = read_isolated(
            &broker.addr,
            &alerts_topic,
            "read_committed",
            Duration::from_secs(1),
        );
        let same_txn = count(&zombie.metrics.transactions, "committed") == before;
        (same_txn, all.len(), visible.len())
    };
    let mut hidden = 0;
    let seen = wait_until(Duration::from_secs(60), || {
        let (same_txn, all, visible) = look();
        hidden = all.saturating_sub(visible);
        same_txn && hidden > 0
    });
    assert!(
        seen,
        "never saw an open transaction's alerts hidden from read_committed"
    );
    // Its successor takes the same transactional id: the zombie is fenced and stops with an
    // error; its open transaction is aborted, its alerts written again by the successor.
    let successor = start(c.clone());
    assert!(
        wait_until(Duration::from_secs(60), || zombie.handle.is_finished()),
        "the fenced instance kept running"
    );
    let err = zombie
        .handle
        .join()
        .expect("service thread")
        .expect_err("a fenced instance must stop with an error")
        .to_string();
    assert!(err.to_lowercase().contains("fenc"), "{err}");

    let committed = read_isolated(
        &broker.addr,
        &alerts_topic,
        "read_committed",
        Duration::from_secs(15),
    );
    successor.stop.store(true, Ordering::Relaxed);
    successor
        .handle
        .join()
        .expect("service thread")
        .expect("the successor runs");
    assert!(count(&successor.metrics.transactions, "committed") > 0);
    let ids: BTreeSet<String> = committed.iter().map(|a| a.id.clone()).collect();
    assert!(
        ids == want,
        "committed alerts vs replay: missing {:?}, new {:?}",
        want.difference(&ids).collect::<Vec<_>>(),
        ids.difference(&want).collect::<Vec<_>>()
    );
    assert_eq!(committed.len(), ids.len(), "an alert committed twice");
    // The aborted transaction's alerts are still in the log, read_uncommitted sees them.
    let all = read_isolated(
        &broker.addr,
        &alerts_topic,
        "read_uncommitted",
        Duration::from_secs(3),
    );
    assert!(
        all.len() >= committed.len() + hidden,
        "aborted alerts: {} in the log, {} committed, {hidden} were in the open transaction",
        all.len(),
        committed.len(),
    );
}
