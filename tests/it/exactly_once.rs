//! `processing.guarantee = "exactly_once"` against librdkafka's mock cluster: the control flow of
//! the transaction path and its error handling, not exactly-once *semantics*.
//!
//! What the mock cannot show (measured, `shared/kafka/RDKAFKA.md`): it accepts transactions but
//! never stores transactional offsets (`TxnOffsetCommit` is validated, not kept) and never hides
//! aborted records (`EndTxn` ignores commit/abort). So these tests assert what the service does:
//! commits, aborts and rewinds, stops when fenced, and raises every alert. That an aborted
//! transaction's alerts stay invisible and a restart resumes from the transaction's offsets needs a
//! broker with transactions; Tansu 0.6 does not advertise `EndTxn` (ApiKey 26) in its ApiVersions
//! response, so librdkafka refuses to commit against it.

use crate::kafka_mock::{
    alerts_of, cluster, config, produce, read_all, wait_until, Running, ALERTS, INPUT,
};
use cloudwarden::config::Config;
use cloudwarden::engine::Engine;
use cloudwarden::kafka::config::Guarantee;
use cloudwarden::kafka::service::Service;
use cloudwarden::telemetry::Metrics;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The demo data's alerts as `replay` computes them.
fn expected_alerts(records: &[Vec<u8>]) -> Vec<cloudwarden::alert::Alert> {
    let mut engine = Engine::new(&Config::default()).unwrap();
    let mut out = Vec::new();
    for r in records {
        let _ = engine.process_record(r, &mut out);
    }
    engine.finish(&mut out);
    out
}

/// Their ids.
fn expected(records: &[Vec<u8>]) -> BTreeSet<String> {
    expected_alerts(records).into_iter().map(|a| a.id).collect()
}

/// The alert ids are `replay`'s: none missing, none new.
fn assert_same_ids(want: &BTreeSet<String>, got: &BTreeSet<String>) {
    assert!(
        got == want,
        "missing {:?}, new {:?}",
        want.difference(got).collect::<Vec<_>>(),
        got.difference(want).collect::<Vec<_>>()
    );
}

fn eos_config(brokers: &str, group: &str) -> Config {
    let mut c = config(brokers, group);
    c.repartition.enabled = true;
    c.processing.guarantee = Guarantee::ExactlyOnce;
    c.processing.transaction_interval = Duration::from_millis(200);
    c.processing.transaction_timeout = Duration::from_secs(20);
    c.processing.transactional_id = format!("{group}-instance-0");
    c.service.partition_idle_timeout = Duration::from_secs(2);
    c
}

fn transactions(m: &Metrics, outcome: &str) -> u64 {
    m.transactions
        .lock()
        .unwrap()
        .get(outcome)
        .copied()
        .unwrap_or(0)
}

fn consumed_input(m: &Metrics) -> u64 {
    m.records_in
        .lock()
        .unwrap()
        .get(INPUT)
        .copied()
        .unwrap_or(0)
}

#[test]
fn transactions_commit_and_every_alert_arrives_once() {
    let c = cluster(2);
    let brokers = c.bootstrap_servers();
    let records = crate::util::records(&crate::util::input_files());
    let want = expected(&records);
    assert!(!want.is_empty());
    trace();
    let run = Running::start(eos_config(&brokers, "eos1"));
    produce(&brokers, &records);
    let got = alerts_of(&read_all(
        &brokers,
        ALERTS,
        want.len(),
        Duration::from_secs(90),
    ));
    assert!(wait_until(Duration::from_secs(10), || consumed_input(
        &run.metrics
    ) >= records.len()
        as u64));
    let m = run.stop();
    let ids: BTreeSet<String> = got.iter().map(|a| a.id.clone()).collect();
    assert_same_ids(&want, &ids);
    // Without faults nothing is processed twice, so no alert is written twice.
    assert_eq!(got.len(), ids.len(), "duplicates without any fault");
    assert!(transactions(&m, "committed") > 0);
    assert_eq!(transactions(&m, "aborted"), 0);
    assert_eq!(m.rewinds.load(Ordering::Relaxed), 0);
    assert!(m.checkpoints.load(Ordering::Relaxed) > 0);
}

/// Retriable coordinator errors on EndTxn (librdkafka retries these itself) must not make the
/// service abort, rewind or stop.
#[test]
fn a_retriable_commit_error_is_retried_without_an_abort() {
    let c = cluster(1);
    let brokers = c.bootstrap_servers();
    let records = crate::util::records(&crate::util::input_files());
    let want = expected(&records);
    // The transaction coordinator answers the first commits with retriable errors.
    c.request_errors(
        RDKafkaApiKey::EndTxn,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_CONCURRENT_TRANSACTIONS,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
        ],
    );
    let run = Running::start(eos_config(&brokers, "eos2"));
    produce(&brokers, &records);
    let got = alerts_of(&read_all(
        &brokers,
        ALERTS,
        want.len(),
        Duration::from_secs(90),
    ));
    let m = run.stop();
    let ids: BTreeSet<String> = got.iter().map(|a| a.id.clone()).collect();
    assert_same_ids(&want, &ids);
    assert_eq!(transactions(&m, "aborted"), 0);
    assert!(transactions(&m, "committed") > 0);
}

#[test]
fn a_failed_delivery_aborts_the_transaction_and_rewinds() {
    let c = cluster(1);
    let brokers = c.bootstrap_servers();
    let records = crate::util::records(&crate::util::input_files());
    let want = expected(&records);
    let mut cfg = eos_config(&brokers, "eos3");
    cfg.kafka
        .producer
        .insert("message.timeout.ms".into(), "3000".into());
    let run = Running::start(cfg);
    let half = records.len() / 2;
    produce(&brokers, &records[..half]);
    assert!(wait_until(Duration::from_secs(30), || consumed_input(
        &run.metrics
    ) >= 50));
    // Every produce fails for longer than message.timeout.ms: the open transaction's messages
    // are lost, so it must be aborted and its records processed again.
    c.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 400],
    );
    assert!(
        wait_until(Duration::from_secs(60), || transactions(
            &run.metrics,
            "aborted"
        ) > 0),
        "no abort"
    );
    let committed_before = transactions(&run.metrics, "committed");
    c.clear_request_errors(RDKafkaApiKey::Produce);
    produce(&brokers, &records[half..]);
    let ids = read_until_all(&brokers, &want);
    let m = run.stop();
    // The mock shows aborted records and keeps no transactional offsets (a rewind re-reads from
    // the beginning), so only "nothing lost" is checkable here.
    assert!(
        want.is_subset(&ids),
        "missing {:?}",
        want.difference(&ids).collect::<Vec<_>>()
    );
    assert!(m.rewinds.load(Ordering::Relaxed) > 0);
    assert!(
        transactions(&m, "committed") > committed_before,
        "no commit after the rewind"
    );
}

/// A fenced producer (a newer instance took the same transactional id) must stop, not carry on
/// writing. The mock hands a second producer with the same transactional id a new producer id
/// instead of bumping the epoch, so it never fences; the coordinator's answer is injected instead.
#[test]
fn a_fenced_instance_stops_with_an_error() {
    let c = cluster(1);
    let brokers = c.bootstrap_servers();
    let records = crate::util::records(&crate::util::input_files());
    let cfg = eos_config(&brokers, "eos4");
    let metrics = Arc::new(Metrics::default());
    let service = Service::new(cfg, metrics.clone()).expect("service starts");
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let handle = std::thread::spawn(move || service.run(&s));
    let half = records.len() / 2;
    produce(&brokers, &records[..half]);
    assert!(wait_until(Duration::from_secs(30), || consumed_input(
        &metrics
    ) >= 50));
    c.request_errors(
        RDKafkaApiKey::EndTxn,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED],
    );
    produce(&brokers, &records[half..]);
    let finished = wait_until(Duration::from_secs(60), || handle.is_finished());
    stop.store(true, Ordering::Relaxed);
    let result = handle.join().expect("service thread");
    assert!(finished, "the fenced instance kept running");
    let err = result.expect_err("a fenced instance must stop").to_string();
    assert!(err.contains("exactly-once"), "{err}");
    assert!(err.to_lowercase().contains("fenc"), "{err}");
    assert!(transactions(&metrics, "committed") > 0);
    // Fatal: not aborted and retried, the service stops for its successor.
    assert_eq!(metrics.rewinds.load(Ordering::Relaxed), 0);
}

/// A second instance joins mid-stream: the first finishes its open transaction inside the
/// revocation callback (an abort when records were processed since the last commit, then a rewind)
/// and both keep running; every alert still arrives.
#[test]
fn a_revocation_finishes_the_open_transaction() {
    let c = cluster(4);
    let brokers = c.bootstrap_servers();
    let records = crate::util::records(&crate::util::input_files());
    let want_alerts = expected_alerts(&records);
    let mut a_cfg = eos_config(&brokers, "eos5");
    a_cfg.processing.transactional_id = "eos5-a".into();
    // Long transactions: the revocation almost surely finds one open with records in it (right
    // after a commit there is nothing to abort, which is correct but not what this tests).
    a_cfg.processing.transaction_interval = Duration::from_secs(5);
    let mut b_cfg = a_cfg.clone();
    b_cfg.processing.transactional_id = "eos5-b".into();
    trace();
    let a = Running::start(a_cfg);
    let half = records.len() / 2;
    produce(&brokers, &records[..half]);
    assert!(wait_until(Duration::from_secs(30), || consumed_input(
        &a.metrics
    ) >= 50));
    // A record every few milliseconds while the second instance joins (about 8 s), so the
    // first has processed some since its last commit (every 200 ms) when its partitions are
    // revoked.
    let feeder = {
        let (brokers, rest) = (brokers.clone(), records[half..].to_vec());
        std::thread::spawn(move || {
            let p: BaseProducer = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("linger.ms", "0")
                .create()
                .unwrap();
            for (i, r) in rest.iter().enumerate() {
                let key = format!("late-{i}");
                let mut rec = BaseRecord::to(INPUT)
                    .payload(r.as_slice())
                    .key(key.as_bytes());
                while let Err((_, back)) = p.send(rec) {
                    p.poll(Duration::from_millis(10));
                    rec = back;
                }
                p.poll(Duration::ZERO);
                std::thread::sleep(Duration::from_millis(5));
            }
            p.flush(Duration::from_secs(10)).unwrap();
        })
    };
    let b = Running::start(b_cfg);
    assert!(
        wait_until(Duration::from_secs(60), || a
            .metrics
            .rebalances
            .load(Ordering::Relaxed)
            >= 3),
        "no rebalance"
    );
    feeder.join().unwrap();
    let want: BTreeSet<String> = want_alerts.iter().map(|a| a.id.clone()).collect();
    let ids = read_until_all(&brokers, &want);
    let (ma, mb) = (a.stop(), b.stop());
    let missing: Vec<_> = want_alerts
        .iter()
        .filter(|a| !ids.contains(&a.id))
        .map(|a| (a.detector.clone(), a.dedup_key.clone(), a.window_start))
        .collect();
    assert!(missing.is_empty(), "missing {missing:?}");
    // The revocation found a transaction with records in it: aborted, then rewound.
    assert!(transactions(&ma, "aborted") >= 1, "no abort on revocation");
    assert_eq!(
        transactions(&ma, "aborted"),
        ma.rewinds.load(Ordering::Relaxed)
    );
    assert!(transactions(&mb, "committed") > 0);
}

/// The distinct alert ids in the alerts topic, read until they include `want` or 90 s pass.
/// After a rewind alerts are delivered again (the mock shows aborted records), so a message
/// count says nothing; silence alerts come last, after the idle timeout.
fn read_until_all(brokers: &str, want: &BTreeSet<String>) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while std::time::Instant::now() < deadline && !want.is_subset(&ids) {
        let got = alerts_of(&read_all(
            brokers,
            ALERTS,
            usize::MAX,
            Duration::from_secs(3),
        ));
        ids = got.into_iter().map(|a| a.id).collect();
    }
    ids
}

/// The service's log on stderr when `CW_TRACE` is set (`CW_TRACE=1 cargo test exactly_once`).
fn trace() {
    if std::env::var_os("CW_TRACE").is_none() {
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .try_init();
}
