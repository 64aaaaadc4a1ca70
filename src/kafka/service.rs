//! The live service: consume audit records from Kafka, run the engine, produce alerts.
//!
//! One OS thread owns a `BaseConsumer`, a `BaseProducer` and the engine, and polls both in a loop
//! (the rust-rdkafka traps this avoids: rebalance callbacks run inside `poll`, and blocking in
//! them on a tokio worker stalls the runtime; split partition queues can miss wake-ups). Per
//! record: decode → engine → each alert produced to the alerts topic (key = alert id) or, for an
//! undecodable record, the record itself to the dead-letter topic with headers saying why and
//! from where.
//!
//! At-least-once, commit after the effect: automatic offset *storing* is off; the
//! [`OffsetTracker`] knows, per partition, the first record whose messages are not all
//! acknowledged (idempotent producer, `acks=all`), and only offsets before it are stored; the
//! auto-committer commits what is stored every `service.commit_interval`. A failed delivery is
//! sent again, never dropped. When more than `service.max_in_flight` messages await an
//! acknowledgement, consumption pauses (backpressure, not an error) until half have drained.
//!
//! Rebalance: on revocation, inside the callback, the producer is flushed (bounded by
//! `service.drain_timeout`), the revoked partitions' safe offsets are stored and committed
//! synchronously, and their tracking is dropped. State policy on assignment: *warm-up*. With the
//! repartition step (the default, `repartition.rs`) window state belongs to repartition
//! partitions and a moved partition starts empty on its new owner; without it the in-process
//! engine keeps what it has and keys first seen on a newly assigned partition start empty
//! (durable per-partition state is a later step). Alerts that the previous owner already raised
//! for the same window carry the same deterministic id, so the SIEM can drop them.
//!
//! Time: each partition has its own event-time clock (newest event time seen); the engine's
//! watermark is the minimum over partitions that had a record within
//! `service.partition_idle_timeout`, minus the allowed lateness. When no input arrives at all for
//! `service.idle_timeout`, the watermark advances with wall-clock time, so silence is still
//! detected when every source goes quiet.

use super::offsets::{OffsetTracker, TopicPartition};
use super::repartition::Topology;
use crate::alert::Alert;
use crate::config::{ms, Config};
use crate::engine::Engine;
use crate::telemetry::Metrics;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::statistics::Statistics;
use rdkafka::util::Timeout;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Why the service stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("invalid config: `{0}`: {1}")]
    Config(String, String),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("engine: {0}")]
    Engine(#[from] crate::config::ConfigError),
    #[error("state snapshot: {0}; the service stops so that a restart resumes from the file's last complete batch")]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    #[error("exactly-once: {0}; the service stops so that a restart resumes from the last committed transaction")]
    Transaction(String),
}

/// Bytes kept free in a dead letter for the record batch framing around key, headers and payload.
const DEAD_LETTER_OVERHEAD: usize = 512;

/// Exactly-once: rewinds without a commit in between before the service gives up.
const MAX_REWINDS_IN_A_ROW: u32 = 5;

/// Header on a message the service produced again after a failed delivery.
pub(super) const RESENT_HEADER: &str = "cloudwarden.resent";

/// What a produced message is acknowledging.
struct Ack {
    /// The input record it came from (`None`: raised by an idle watermark advance).
    source: Option<(Arc<TopicPartition>, i64)>,
    /// When the input record entered Kafka (its timestamp, epoch ms), or when we consumed it.
    ingested_ms: i64,
    event_time: Option<i64>,
    /// Exactly-once: the transaction it was sent in ([`Shared::txn_seq`]).
    txn: u64,
}

/// State shared by the processing loop, the delivery callback and the rebalance callback (all on
/// the processing thread, so the locks are never contended).
pub(super) struct Shared {
    tracker: Mutex<OffsetTracker>,
    /// Partitions revoked since the processing loop last looked (stage 2 drops their state).
    /// With how far each was processed (its records up to there are in the engine's state, which
    /// a single node with the snapshot file keeps if the partition comes back).
    revoked: Mutex<Vec<(TopicPartition, Option<i64>)>>,
    retries: Mutex<Vec<(OwnedMessage, Box<Ack>)>>,
    /// Assigned partitions and when they were assigned (an unseen partition holds the
    /// watermark back until it sends a record or `partition_idle_timeout` passes).
    assigned: Mutex<Vec<(TopicPartition, Instant)>>,
    stats_seen: AtomicBool,
    metrics: Arc<Metrics>,
    /// `processing.guarantee = "exactly_once"`: a transaction is open.
    eos: bool,
    /// Exactly-once: a message of the open transaction failed; it must be aborted.
    txn_failed: AtomicBool,
    /// Exactly-once: records were processed since the last commit.
    dirty: AtomicBool,
    /// Exactly-once: the open transaction was aborted on revocation; drop state and re-read.
    rewind: AtomicBool,
    /// `state.snapshot_path`: offsets are committed only from durable snapshot batches.
    local_state: bool,
    /// Exactly-once: bumped at every abort, so late delivery reports of an aborted transaction's
    /// messages do not fail the next one.
    txn_seq: AtomicU64,
}

impl Shared {
    /// What a message sent now acknowledges (in the open transaction, under exactly-once).
    fn ack(
        &self,
        source: Option<(Arc<TopicPartition>, i64)>,
        ingested_ms: i64,
        event_time: Option<i64>,
    ) -> Box<Ack> {
        Box::new(Ack {
            source,
            ingested_ms,
            event_time,
            txn: self.txn_seq.load(Ordering::Relaxed),
        })
    }
}

/// Aborts the open transaction. librdkafka waits for the outstanding messages' delivery reports,
/// which a `BaseProducer` only serves when polled: poll between attempts.
fn abort_transaction(
    producer: &BaseProducer<ProducerCtx>,
    shared: &Shared,
    timeout: Duration,
) -> KafkaResult<()> {
    shared.txn_seq.fetch_add(1, Ordering::Relaxed);
    let deadline = Instant::now() + timeout;
    loop {
        producer.poll(Duration::ZERO);
        match producer.abort_transaction(Timeout::After(Duration::from_millis(500))) {
            Err(KafkaError::Transaction(e)) if e.is_retriable() && Instant::now() < deadline => {
                producer.poll(Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

struct ProducerCtx {
    shared: Arc<Shared>,
}

impl ClientContext for ProducerCtx {}

impl ProducerContext for ProducerCtx {
    type DeliveryOpaque = Box<Ack>;

    fn delivery(&self, result: &DeliveryResult<'_>, ack: Box<Ack>) {
        let m = &self.shared.metrics;
        match result {
            Ok(msg) => {
                if let Some((tp, offset)) = &ack.source {
                    lock(&self.shared.tracker).acked(tp, *offset);
                }
                Metrics::add(&m.messages_out, msg.topic(), 1);
                let now = now_ms();
                let ingest_us = (now - ack.ingested_ms).max(0) as u64 * 1000;
                let event_us = ack.event_time.map(|t| (now - t).max(0) as u64 * 1000);
                m.record_latency(ingest_us, event_us);
            }
            Err((_, _))
                if self.shared.eos && ack.txn != self.shared.txn_seq.load(Ordering::Relaxed) =>
            {
                // A message of an already aborted transaction: nothing to do.
            }
            Err((e, msg)) if self.shared.eos => {
                // Inside a transaction a lost message cannot be sent again: the transaction is
                // aborted and everything since the last commit is processed again.
                m.delivery_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(topic = msg.topic(), error = %e, "delivery failed; the transaction will be aborted");
                self.shared.txn_failed.store(true, Ordering::Relaxed);
            }
            Err((e, msg)) => {
                m.delivery_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(topic = msg.topic(), error = %e, "delivery failed; sending again");
                lock(&self.shared.retries).push((msg.detach(), ack));
            }
        }
    }
}

struct ConsumerCtx {
    shared: Arc<Shared>,
    producer: Arc<BaseProducer<ProducerCtx>>,
    drain_timeout: Duration,
    txn_timeout: Duration,
}

impl ClientContext for ConsumerCtx {
    fn stats(&self, stats: Statistics) {
        let m = &self.shared.metrics;
        for (topic, t) in &stats.topics {
            for (partition, p) in &t.partitions {
                if *partition >= 0 && p.consumer_lag >= 0 {
                    m.set_lag(topic, *partition, p.consumer_lag);
                }
            }
        }
        self.shared.stats_seen.store(true, Ordering::Relaxed);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::error!(%error, reason, "librdkafka error");
    }
}

impl ConsumerCtx {
    /// Exactly-once revocation: the open transaction is finished before the partitions go. It
    /// holds state changes that are only checkpointed at commit, so it is aborted (when records
    /// were processed since the last commit) and the processing loop rewinds to the last
    /// committed transaction; the next owner starts from that same point.
    fn revoke_transactional(&self, revoked: &TopicPartitionList) {
        if self.shared.dirty.swap(false, Ordering::Relaxed) {
            match abort_transaction(&self.producer, &self.shared, self.txn_timeout) {
                Ok(()) => {
                    Metrics::add(&self.shared.metrics.transactions, "aborted", 1);
                    self.shared.rewind.store(true, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::error!(error = %e, "aborting the transaction on revocation");
                    self.shared.txn_failed.store(true, Ordering::Relaxed);
                }
            }
        }
        self.forget(revoked, |_, _| {});
    }

    /// Stops tracking revoked partitions and queues them for the processing loop (stage 2 drops
    /// their state); `last` sees each one's tracking before it goes.
    fn forget(
        &self,
        revoked: &TopicPartitionList,
        mut last: impl FnMut(&OffsetTracker, &TopicPartition),
    ) {
        {
            let mut tracker = lock(&self.shared.tracker);
            let mut assigned = lock(&self.shared.assigned);
            for elem in revoked.elements() {
                let tp = TopicPartition {
                    topic: elem.topic().to_owned(),
                    partition: elem.partition(),
                };
                last(&tracker, &tp);
                tracker.remove(&tp);
                assigned.retain(|(a, _)| *a != tp);
                let until = tracker.processed_until(&tp);
                lock(&self.shared.revoked).push((tp, until));
            }
        }
        self.shared.metrics.clear_lag();
        tracing::info!(partitions = revoked.count(), "partitions revoked");
    }
}

impl ConsumerContext for ConsumerCtx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(revoked) = rebalance else {
            return;
        };
        self.shared
            .metrics
            .rebalances
            .fetch_add(1, Ordering::Relaxed);
        if self.shared.eos {
            self.revoke_transactional(revoked);
            return;
        }
        // Finish what is in flight for the revoked partitions: their alerts are acknowledged
        // (or time out), then their safe offsets are stored and committed before we return.
        if let Err(e) = self.producer.flush(self.drain_timeout) {
            tracing::warn!(error = %e, "drain on revocation timed out; uncommitted records will be re-read by the next owner");
        }
        let mut store = TopicPartitionList::new();
        self.forget(revoked, |tracker, tp| {
            if let Some(next) = tracker.next_offset(tp) {
                let _ = store.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(next));
            }
        });
        // With a local snapshot, offsets are committed only from its durable batches.
        if store.count() > 0 && !self.shared.local_state {
            if let Err(e) = consumer.store_offsets(&store) {
                tracing::debug!(error = %e, "storing offsets of revoked partitions");
            }
            if let Err(e) = consumer.commit(&store, CommitMode::Sync) {
                tracing::warn!(error = %e, "commit on revocation failed");
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(assigned) = rebalance {
            self.shared
                .metrics
                .rebalances
                .fetch_add(1, Ordering::Relaxed);
            let mut list = lock(&self.shared.assigned);
            let mut tracker = lock(&self.shared.tracker);
            for elem in assigned.elements() {
                let tp = TopicPartition {
                    topic: elem.topic().to_owned(),
                    partition: elem.partition(),
                };
                // Newly ours: start clean (no credit left from a previous ownership), tracked
                // before its first record.
                tracker.remove(&tp);
                tracker.touch(&tp);
                if !list.iter().any(|(a, _)| *a == tp) {
                    list.push((tp, Instant::now()));
                }
            }
            tracing::info!(partitions = assigned.count(), "partitions assigned");
        }
    }
}

/// A partition's event-time clock.
pub(super) struct PartitionClock {
    pub(super) max_event_time: i64,
    pub(super) last_record: Instant,
}

/// The engine's state in a local file (`state.snapshot_path`), for a single node without the
/// repartition step. The file is the truth for both state and offsets: a batch holds the state
/// changes and the input offsets they reflect, and offsets are committed only from a durable
/// batch, so the group's committed offsets never run ahead of the file. Records below the file's
/// offsets (committed offsets lag the file after a crash between append and commit) are skipped.
struct LocalState {
    log: crate::snapshot::SnapshotLog,
    /// Next offset per input partition as of the file (or as processed before a revocation);
    /// records below are already in the state.
    restored: HashMap<TopicPartition, i64>,
    /// The offset last written to the file per partition: a batch never writes a lower one.
    written: HashMap<TopicPartition, i64>,
    last: Instant,
}

/// The running service: the consumer, and everything a record touches.
pub struct Service {
    consumer: BaseConsumer<ConsumerCtx>,
    paused: bool,
    /// Exactly-once: when the open transaction began.
    last_txn: Instant,
    /// Exactly-once: rewinds since the last committed transaction.
    rewinds_in_a_row: u32,
    p: Processor,
}

/// Record processing (separate from the consumer, whose messages borrow it).
struct Processor {
    config: Config,
    engine: Engine,
    /// The repartitioned topology (`repartition.enabled`); `None`: the engine runs in process.
    topology: Option<Topology>,
    producer: Arc<BaseProducer<ProducerCtx>>,
    em: Emitter,
    shared: Arc<Shared>,
    clocks: HashMap<Arc<TopicPartition>, PartitionClock>,
    last_input: Instant,
    last_idle_advance: Instant,
    alerts: Vec<Alert>,
    /// `state.snapshot_path` (single node, repartition off): the local state file.
    snapshot: Option<LocalState>,
    /// The largest message the producer sends (`message.max.bytes`): dead letters are cut to fit.
    dead_letter_max: usize,
    /// Interned partitions (no allocation per record) with records consumed since the last
    /// metrics flush (counters are aggregated, not locked per record).
    partitions: Vec<(Arc<TopicPartition>, u64)>,
}

impl Service {
    /// Connects (lazily: librdkafka connects in the background) and subscribes.
    pub fn new(config: Config, metrics: Arc<Metrics>) -> Result<Service, ServiceError> {
        config.validate()?;
        let k = &config.kafka;
        k.validate()
            .map_err(|(key, msg)| ServiceError::Config(key, msg))?;
        let common = k
            .common_properties()
            .map_err(|m| ServiceError::Config("kafka.sasl".into(), m))?;
        let shared = Arc::new(Shared {
            tracker: Mutex::new(OffsetTracker::new()),
            revoked: Mutex::new(Vec::new()),
            retries: Mutex::new(Vec::new()),
            assigned: Mutex::new(Vec::new()),
            stats_seen: AtomicBool::new(false),
            metrics,
            eos: config.processing.exactly_once(),
            txn_failed: AtomicBool::new(false),
            dirty: AtomicBool::new(false),
            rewind: AtomicBool::new(false),
            txn_seq: AtomicU64::new(0),
            local_state: !config.repartition.enabled && !config.state.snapshot_path.is_empty(),
        });
        let eos = config.processing.exactly_once();
        let txn_timeout = config.processing.transaction_timeout;

        let mut pc = ClientConfig::new();
        for (key, v) in &common {
            pc.set(key, v);
        }
        pc.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("compression.type", "lz4");
        if eos {
            pc.set(
                "transactional.id",
                config.processing.transactional_id_for(&k.group_id),
            )
            .set("transaction.timeout.ms", ms(txn_timeout).to_string());
        }
        for (key, v) in &k.producer {
            pc.set(key, v);
        }
        let producer: BaseProducer<ProducerCtx> = pc.create_with_context(ProducerCtx {
            shared: shared.clone(),
        })?;
        let producer = Arc::new(producer);

        let mut cc = ClientConfig::new();
        for (key, v) in &common {
            cc.set(key, v);
        }
        cc.set("group.id", &k.group_id)
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set(
                "auto.commit.interval.ms",
                ms(config.service.commit_interval).max(1).to_string(),
            )
            .set("auto.offset.reset", "earliest")
            .set("statistics.interval.ms", "5000")
            .set("partition.assignment.strategy", "cooperative-sticky");
        if eos {
            // Offsets are committed inside the transactions; upstream transactional producers'
            // aborted records are never read.
            cc.set("enable.auto.commit", "false")
                .set("isolation.level", "read_committed");
        }
        for (key, v) in &k.consumer {
            cc.set(key, v);
        }
        let consumer: BaseConsumer<ConsumerCtx> = cc.create_with_context(ConsumerCtx {
            shared: shared.clone(),
            producer: producer.clone(),
            drain_timeout: config.service.drain_timeout,
            txn_timeout,
        })?;
        let mut topics: Vec<&str> = k.input_topics.iter().map(String::as_str).collect();
        let topology = if config.repartition.enabled {
            let topic = config.repartition.topic_for(&k.group_id);
            let r = &config.repartition;
            ensure_topic(
                &producer,
                &common,
                &topic,
                r.partitions,
                r.replication_factor,
                &[
                    ("retention.ms", ms(r.retention).to_string()),
                    ("cleanup.policy", "delete".into()),
                ],
                r.create_topic,
                "repartition",
            )?;
            let changelog = if config.state.changelog {
                let t = config.state.topic_for(&k.group_id);
                ensure_topic(
                    &producer,
                    &common,
                    &t,
                    r.partitions,
                    config.state.replication_factor,
                    &[("cleanup.policy", "compact".into())],
                    r.create_topic,
                    "state",
                )?;
                Some(t)
            } else {
                None
            };
            let inputs = input_partitions(&producer, &k.input_topics);
            Some(Topology::new(
                &config,
                topic,
                inputs,
                changelog,
                common.clone(),
            )?)
        } else {
            if crate::topology::router::Router::new(&config).uses(crate::detect::Route::Scope) {
                tracing::warn!("repartition is off: each instance sees only its own input partitions, so per-scope detectors (log_disable, log_source_silence, quota_change) are only right with one instance");
            }
            None
        };
        if let Some(t) = &topology {
            topics.push(&t.topic);
        }
        if eos {
            // Fences a predecessor with the same transactional id and aborts what it left open.
            producer.init_transactions(Timeout::After(txn_timeout))?;
            producer.begin_transaction()?;
            tracing::info!(
                transactional_id = %config.processing.transactional_id_for(&k.group_id),
                "exactly-once: transactions initialised"
            );
        }
        consumer.subscribe(&topics)?;
        let mut engine = Engine::new(&config)?.with_external_watermark();
        let snapshot = if topology.is_none() && !config.state.snapshot_path.is_empty() {
            Some(open_snapshot(&config, &mut engine, &shared.metrics)?)
        } else {
            None
        };
        Ok(Service {
            consumer,
            paused: false,
            last_txn: Instant::now(),
            rewinds_in_a_row: 0,
            p: Processor {
                engine,
                topology,
                em: Emitter {
                    producer: producer.clone(),
                    shared: shared.clone(),
                    alerts_topic: config.kafka.alerts_topic.clone(),
                    json: Vec::new(),
                },
                producer,
                shared,
                clocks: HashMap::new(),
                last_input: Instant::now(),
                last_idle_advance: Instant::now(),
                alerts: Vec::new(),
                snapshot,
                dead_letter_max: k
                    .producer
                    .get("message.max.bytes")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1_000_000),
                partitions: Vec::new(),
                config,
            },
        })
    }

    /// Runs until `shutdown` is set, then drains and commits.
    pub fn run(mut self, shutdown: &AtomicBool) -> Result<(), ServiceError> {
        let mut last_metrics = Instant::now();
        while !shutdown.load(Ordering::Relaxed) {
            self.p.producer.poll(Duration::ZERO);
            self.p.em.resend_failed();
            self.apply_backpressure();
            let polled = self.consumer.poll(Duration::from_millis(100));
            self.p.take_revoked();
            let shared = &self.p.shared;
            if shared.eos
                && (shared.rewind.load(Ordering::Relaxed)
                    || shared.txn_failed.load(Ordering::Relaxed))
            {
                // The record (if any) is read again after the rewind.
                drop(polled);
                self.abort_and_rewind("a message of the transaction was not delivered")?;
                continue;
            }
            match polled {
                Some(Ok(msg)) => self.p.handle(&msg),
                Some(Err(e)) => tracing::warn!(error = %e, "consumer error"),
                None => self.p.idle(),
            }
            self.tick();
            if self.p.shared.eos {
                if self.last_txn.elapsed() >= self.p.config.processing.transaction_interval {
                    self.commit_transaction()?;
                }
            } else if self.p.snapshot.is_some() {
                self.snapshot(false)?;
            } else {
                self.store_ready();
            }
            if last_metrics.elapsed() >= Duration::from_millis(500) {
                self.publish_metrics();
                last_metrics = Instant::now();
            }
        }
        self.shutdown();
        Ok(())
    }

    /// Unsubscribes and serves the revocation that follows before the consumer is dropped. A
    /// rebalance event still queued when the consumer closes makes rust-rdkafka's rebalance
    /// handler ask librdkafka for the rebalance protocol, which then never answers
    /// (librdkafka#4041): the drop would hang for good.
    fn leave_group(&mut self) {
        self.consumer.unsubscribe();
        let deadline = Instant::now() + self.p.config.service.drain_timeout;
        while Instant::now() < deadline {
            // Records still queued are dropped unprocessed: their offsets were not stored.
            let _ = self.consumer.poll(Duration::from_millis(100));
            if self.consumer.assignment().map_or(true, |a| a.count() == 0) {
                break;
            }
        }
    }

    /// Markers and due beats (repartitioned topology only). A partition counts as caught up when
    /// the consumer's position has reached its end as last seen in a fetch response (librdkafka's
    /// cached watermarks: no broker round trip).
    fn tick(&mut self) {
        let Some(t) = &mut self.p.topology else {
            return;
        };
        if !self.p.shared.eos {
            // Exactly-once checkpoints inside every transaction instead.
            t.checkpoint(&self.p.em, &self.p.shared.metrics, false);
        }
        if !t.tick_due() {
            return;
        }
        let assigned = lock(&self.p.shared.assigned).clone();
        let positions = self.consumer.position().ok();
        let consumer = &self.consumer;
        let caught_up = |tp: &TopicPartition| -> bool {
            let Some(high) = cached_high_watermark(consumer, tp) else {
                return false;
            };
            let position = positions
                .as_ref()
                .and_then(|p| p.find_partition(&tp.topic, tp.partition))
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                });
            match position {
                Some(pos) => pos >= high,
                // Nothing consumed yet: caught up only if the partition is empty.
                None => high <= 0,
            }
        };
        t.tick(
            &self.p.em,
            &assigned,
            &self.p.clocks,
            self.p.last_input,
            &caught_up,
        );
    }

    /// Exactly-once: checkpoints the state into the open transaction, adds the input offsets it
    /// reflects, commits, and begins the next one. An error that requires an abort rewinds; a
    /// fatal one (fenced by a newer instance with the same transactional id, ...) stops the
    /// service.
    fn commit_transaction(&mut self) -> Result<(), ServiceError> {
        let timeout = self.p.config.processing.transaction_timeout;
        if let Some(t) = &mut self.p.topology {
            if !t.checkpoint(&self.p.em, &self.p.shared.metrics, true)
                && !self.p.shared.txn_failed.load(Ordering::Relaxed)
            {
                // Messages still unacknowledged: the state is not in the transaction yet, so it
                // must not commit. It stays open; if it outlives transaction_timeout, the broker
                // aborts it and the next send fails, which rewinds.
                self.last_txn = Instant::now();
                return Ok(());
            }
        }
        // Every message of the transaction acknowledged (or failed), so the tracker's offsets
        // are final.
        let _ = self.p.producer.flush(timeout);
        if self.p.shared.txn_failed.load(Ordering::Relaxed) {
            return self.abort_and_rewind("a message of the transaction was not delivered");
        }
        let ready = lock(&self.p.shared.tracker).take_ready();
        let deadline = Instant::now() + timeout;
        let producer = self.p.producer.clone();
        if !ready.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for (tp, next) in &ready {
                let _ = tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*next));
            }
            let Some(group) = self.consumer.group_metadata() else {
                return Err(ServiceError::Transaction(
                    "no consumer group metadata".into(),
                ));
            };
            let sent = txn_call(deadline, || {
                producer.send_offsets_to_transaction(&tpl, &group, Timeout::After(timeout))
            });
            if let Err(e) = sent {
                return self.txn_error("sending offsets to the transaction", e);
            }
        }
        match txn_call(deadline, || {
            producer.commit_transaction(Timeout::After(timeout))
        }) {
            Ok(()) => {
                Metrics::add(&self.p.shared.metrics.transactions, "committed", 1);
                self.p.shared.dirty.store(false, Ordering::Relaxed);
                self.rewinds_in_a_row = 0;
                self.p.producer.begin_transaction()?;
                // The interval counts from here: a slow commit must not leave no time to
                // process records before the next one.
                self.last_txn = Instant::now();
                Ok(())
            }
            Err(e) => self.txn_error("committing the transaction", e),
        }
    }

    /// Fatal errors (fenced, ...) stop the service; errors that require an abort, retriable ones
    /// that outlasted the transaction timeout, and a flush that timed out abort and rewind.
    fn txn_error(&mut self, doing: &str, e: KafkaError) -> Result<(), ServiceError> {
        let abortable = match &e {
            KafkaError::Transaction(t) => {
                !t.is_fatal() && (t.txn_requires_abort() || t.is_retriable())
            }
            KafkaError::Flush(_) => true,
            _ => false,
        };
        if abortable {
            self.abort_and_rewind(&format!("{doing}: {e}"))
        } else {
            Err(ServiceError::Transaction(format!("{doing}: {e}")))
        }
    }

    /// Exactly-once: aborts the open transaction (unless the revocation callback already did)
    /// and rewinds: the in-memory state is dropped (stage 2 restores it from the changelog's
    /// committed records at first use) and every assigned partition is read again from its
    /// committed offset. The same as a restart, without leaving the group.
    fn abort_and_rewind(&mut self, why: &str) -> Result<(), ServiceError> {
        self.rewinds_in_a_row += 1;
        if self.rewinds_in_a_row > MAX_REWINDS_IN_A_ROW {
            // The same input fails the same way each time (a message that can never be
            // delivered): rewinding again would loop.
            return Err(ServiceError::Transaction(format!(
                "{MAX_REWINDS_IN_A_ROW} rewinds in a row without a commit; last: {why}"
            )));
        }
        let shared = self.p.shared.clone();
        let timeout = self.p.config.processing.transaction_timeout;
        if !shared.rewind.swap(false, Ordering::Relaxed) {
            tracing::warn!(reason = why, "exactly-once: aborting the transaction");
            abort_transaction(&self.p.producer, &shared, timeout)
                .map_err(|e| ServiceError::Transaction(format!("aborting ({why}): {e}")))?;
            Metrics::add(&shared.metrics.transactions, "aborted", 1);
        }
        shared.txn_failed.store(false, Ordering::Relaxed);
        shared.dirty.store(false, Ordering::Relaxed);
        lock(&shared.retries).clear();
        if let Some(t) = &mut self.p.topology {
            t.rewind();
        }
        self.p.clocks.clear();
        let assignment = self.consumer.assignment()?;
        {
            let mut tracker = lock(&shared.tracker);
            for e in assignment.elements() {
                let tp = TopicPartition {
                    topic: e.topic().to_owned(),
                    partition: e.partition(),
                };
                tracker.remove(&tp);
                tracker.touch(&tp);
            }
        }
        let committed = self
            .consumer
            .committed_offsets(assignment, Timeout::After(Duration::from_secs(30)))?;
        for e in committed.elements() {
            let offset = match e.offset() {
                Offset::Offset(o) => Offset::Offset(o),
                _ => Offset::Beginning,
            };
            if let Err(err) =
                self.consumer
                    .seek(e.topic(), e.partition(), offset, Duration::from_secs(10))
            {
                return Err(ServiceError::Transaction(format!(
                    "rewinding {}[{}] to {offset:?}: {err}",
                    e.topic(),
                    e.partition()
                )));
            }
        }
        shared.metrics.rewinds.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            partitions = committed.count(),
            "exactly-once: rewound to the last committed transaction"
        );
        self.p.producer.begin_transaction()?;
        self.last_txn = Instant::now();
        Ok(())
    }

    /// Every `state.checkpoint_interval` (and at shutdown): once every alert raised so far is
    /// acknowledged, appends the engine's changed state with the offsets it reflects to the
    /// snapshot file, then stores those offsets for commit. A failed write stops the service:
    /// the restart resumes from the file's last complete batch.
    fn snapshot(&mut self, force: bool) -> Result<(), ServiceError> {
        let Some(local) = &mut self.p.snapshot else {
            return Ok(());
        };
        let interval = self.p.config.state.checkpoint_interval;
        if !force && local.last.elapsed() < interval {
            return Ok(());
        }
        local.last = Instant::now();
        // The state reflects every processed record; the offsets must too.
        if !self.p.em.flush(self.p.config.service.drain_timeout) {
            tracing::warn!("snapshot postponed: alerts not yet acknowledged");
            return Ok(());
        }
        let mut ready = lock(&self.p.shared.tracker).take_ready();
        // After a revocation and re-assignment the tracker starts again below the file's offset
        // (the skipped records): never move the file back.
        ready.retain(|(tp, next)| match local.written.get(tp) {
            Some(w) if *w >= *next => false,
            _ => {
                local.written.insert(tp.clone(), *next);
                true
            }
        });
        let offsets: Vec<(String, i32, i64)> = ready
            .iter()
            .map(|(tp, next)| (tp.topic.clone(), tp.partition, *next))
            .collect();
        let entries = self.p.engine.checkpoint();
        let bytes = local.log.append(&entries, &offsets)?;
        let m = &self.p.shared.metrics;
        m.checkpoints.fetch_add(1, Ordering::Relaxed);
        m.snapshot_bytes
            .store(local.log.file_bytes(), Ordering::Relaxed);
        tracing::debug!(entries = entries.len(), bytes, "snapshot written");
        if !ready.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for (tp, next) in &ready {
                let _ = tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*next));
            }
            if let Err(e) = self.consumer.store_offsets(&tpl) {
                tracing::debug!(error = %e, "store_offsets");
            }
        }
        Ok(())
    }

    fn apply_backpressure(&mut self) {
        let in_flight = lock(&self.p.shared.tracker).in_flight();
        let max = self.p.config.service.max_in_flight;
        // Stage 2 must keep reading: markers release what stage 1's backlog waits on.
        let repartition = self.p.topology.as_ref().map(|t| t.topic.clone());
        let m = &self.p.shared.metrics;
        m.in_flight.store(in_flight as u64, Ordering::Relaxed);
        let input_only = |assignment: TopicPartitionList| -> TopicPartitionList {
            let mut out = TopicPartitionList::new();
            for e in assignment.elements() {
                if repartition.as_deref() != Some(e.topic()) {
                    out.add_partition(e.topic(), e.partition());
                }
            }
            out
        };
        if !self.paused && in_flight >= max {
            if let Ok(assignment) = self.consumer.assignment().map(input_only) {
                if self.consumer.pause(&assignment).is_ok() {
                    self.paused = true;
                    m.backpressure_pauses.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(in_flight, "backpressure: consumption paused");
                }
            }
        } else if self.paused && in_flight <= max / 2 {
            if let Ok(assignment) = self.consumer.assignment().map(input_only) {
                if self.consumer.resume(&assignment).is_ok() {
                    self.paused = false;
                    tracing::info!(in_flight, "backpressure: consumption resumed");
                }
            }
        }
    }

    fn store_ready(&self) {
        let ready = lock(&self.p.shared.tracker).take_ready();
        if ready.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (tp, next) in &ready {
            let _ = tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*next));
        }
        if let Err(e) = self.consumer.store_offsets(&tpl) {
            // `__STATE` after a revocation: the partition is no longer ours.
            tracing::debug!(error = %e, "store_offsets");
        }
    }

    fn publish_metrics(&mut self) {
        self.p.flush_counts();
        let m = &self.p.shared.metrics;
        m.assigned.store(
            lock(&self.p.shared.assigned).len() as u64,
            Ordering::Relaxed,
        );
        if let Some(t) = &mut self.p.topology {
            t.publish(m);
            let assigned = !lock(&self.p.shared.assigned).is_empty();
            let caught_up = self.p.shared.stats_seen.load(Ordering::Relaxed)
                && m.total_lag() <= self.p.config.service.ready_max_lag;
            m.ready.store(assigned && caught_up, Ordering::Relaxed);
            return;
        }
        let s = self.p.engine.stats();
        m.events.store(s.events, Ordering::Relaxed);
        m.late_events.store(s.late_events, Ordering::Relaxed);
        m.suppressed
            .store(self.p.engine.suppressed_total(), Ordering::Relaxed);
        m.watermark_ms
            .store(self.p.engine.watermark(), Ordering::Relaxed);
        for (detector, st) in self.p.engine.detector_stats() {
            Metrics::set_gauge(&m.keys, detector, st.keys as u64);
            Metrics::set_gauge(&m.evicted, detector, st.evicted);
        }
        let assigned = !lock(&self.p.shared.assigned).is_empty();
        let caught_up = self.p.shared.stats_seen.load(Ordering::Relaxed)
            && m.total_lag() <= self.p.config.service.ready_max_lag;
        m.ready.store(assigned && caught_up, Ordering::Relaxed);
    }

    /// Stop consuming, flush alerts, store and commit, leave the group.
    fn shutdown(mut self) {
        tracing::info!("shutting down: draining in-flight messages");
        self.p.shared.metrics.ready.store(false, Ordering::Relaxed);
        if self.p.shared.eos {
            if let Some(t) = &mut self.p.topology {
                t.flush_beats(&self.p.em);
            }
            if let Err(e) = self.commit_transaction() {
                tracing::error!(error = %e, "last transaction");
            }
            self.publish_metrics();
            self.leave_group();
            tracing::info!("stopped");
            return;
        }
        // A last checkpoint, so the next owner restores everything this one processed.
        if let Some(t) = &mut self.p.topology {
            t.flush_beats(&self.p.em);
            t.checkpoint(&self.p.em, &self.p.shared.metrics, true);
        }
        let deadline = Instant::now() + self.p.config.service.drain_timeout;
        loop {
            self.p.em.resend_failed();
            let _ = self.p.producer.flush(Duration::from_millis(200));
            let pending =
                lock(&self.p.shared.tracker).in_flight() + lock(&self.p.shared.retries).len();
            if pending == 0 || Instant::now() >= deadline {
                if pending > 0 {
                    tracing::warn!(pending, "drain timed out; those records will be read again");
                }
                break;
            }
        }
        if self.p.snapshot.is_some() {
            if let Err(e) = self.snapshot(true) {
                tracing::error!(error = %e, "last snapshot");
            }
        } else {
            self.store_ready();
        }
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(error = %e, "final commit");
        }
        self.publish_metrics();
        self.leave_group();
        self.p.clocks.clear();
        tracing::info!("stopped");
    }
}

impl Processor {
    /// The interned partition of a message, its consumed count bumped.
    fn partition_of(&mut self, msg: &BorrowedMessage<'_>) -> Arc<TopicPartition> {
        let (topic, partition) = (msg.topic(), msg.partition());
        let i = match self
            .partitions
            .iter()
            .position(|(tp, _)| tp.partition == partition && tp.topic == topic)
        {
            Some(i) => i,
            None => {
                let tp = TopicPartition {
                    topic: topic.to_owned(),
                    partition,
                };
                self.partitions.push((Arc::new(tp), 0));
                self.partitions.len() - 1
            }
        };
        self.partitions[i].1 += 1;
        self.partitions[i].0.clone()
    }

    /// Adds the records consumed since the last call to the metrics.
    fn flush_counts(&mut self) {
        let m = &self.shared.metrics;
        for (tp, n) in &mut self.partitions {
            if *n > 0 {
                Metrics::add(&m.records_in, &tp.topic, std::mem::take(n));
            }
        }
    }

    fn handle(&mut self, msg: &BorrowedMessage<'_>) {
        if self.shared.eos {
            self.shared.dirty.store(true, Ordering::Relaxed);
        }
        let tp = self.partition_of(msg);
        let offset = msg.offset();
        let consumed = Instant::now();
        if self
            .topology
            .as_ref()
            .is_none_or(|t| msg.topic() != t.topic)
        {
            self.last_input = consumed;
        }
        let ingested_ms = msg.timestamp().to_millis().unwrap_or_else(now_ms);
        let m = self.shared.metrics.clone();
        let payload = msg.payload().unwrap_or(&[]);
        self.alerts.clear();
        let mut produced = 0u32;
        let result = match &mut self.topology {
            Some(t) if msg.topic() == t.topic => {
                let resent = msg
                    .headers()
                    .is_some_and(|h| h.iter().any(|h| h.key == RESENT_HEADER));
                let n = t.stage2(&mut self.em, &tp, offset, payload, resent, &m);
                lock(&self.shared.tracker).processed(&tp, offset, n);
                return;
            }
            Some(t) => {
                m.input_bytes
                    .fetch_add(payload.len() as u64, Ordering::Relaxed);
                let clock = self.clocks.entry(tp.clone()).or_insert(PartitionClock {
                    max_event_time: i64::MIN,
                    last_record: consumed,
                });
                clock.last_record = consumed;
                match t.stage1(&self.em, &tp, offset, payload, clock) {
                    Ok(n) => {
                        lock(&self.shared.tracker).processed(&tp, offset, n);
                        return;
                    }
                    Err(e) => Err(e),
                }
            }
            None => {
                if let Some(local) = &mut self.snapshot {
                    if let Some(&next) = local.restored.get(tp.as_ref()) {
                        if offset < next {
                            // Already in the restored state (read again: the commit lagged).
                            lock(&self.shared.tracker).processed(&tp, offset, 0);
                            return;
                        }
                        local.restored.remove(tp.as_ref());
                    }
                }
                m.input_bytes
                    .fetch_add(payload.len() as u64, Ordering::Relaxed);
                self.engine.process_record(payload, &mut self.alerts)
            }
        };
        match result {
            Ok(_) => {
                let event_time = self.engine.last_record_time();
                if let Some(t) = event_time {
                    self.tick_partition(&tp, t);
                }
                let alerts = std::mem::take(&mut self.alerts);
                for alert in &alerts {
                    self.em.produce_alert_at(
                        alert,
                        Some((tp.clone(), offset)),
                        ingested_ms,
                        event_time,
                    );
                    produced += 1;
                }
                self.alerts = alerts;
            }
            Err(e) => {
                if self.topology.is_some() {
                    self.engine.count_decode_error(&e);
                }
                let reason = e.reason();
                Metrics::add(&m.decode_errors, &reason, 1);
                m.dead_letters.fetch_add(1, Ordering::Relaxed);
                let headers = OwnedHeaders::new()
                    .insert(Header {
                        key: "cloudwarden.reason",
                        value: Some(reason.as_bytes()),
                    })
                    .insert(Header {
                        key: "cloudwarden.error",
                        value: Some(e.to_string().as_bytes()),
                    })
                    .insert(Header {
                        key: "cloudwarden.source.topic",
                        value: Some(msg.topic().as_bytes()),
                    })
                    .insert(Header {
                        key: "cloudwarden.source.partition",
                        value: Some(msg.partition().to_string().as_bytes()),
                    })
                    .insert(Header {
                        key: "cloudwarden.source.offset",
                        value: Some(offset.to_string().as_bytes()),
                    });
                let headers = copy_headers(msg, headers);
                // A dead letter larger than the producer accepts could never be sent (and would
                // stall the partition): its payload is cut to fit, the original size in a header.
                let key_len = msg.key().map_or(0, <[u8]>::len);
                let header_len: usize = headers
                    .iter()
                    .map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len) + 16)
                    .sum();
                let room = self
                    .dead_letter_max
                    .saturating_sub(key_len + header_len + DEAD_LETTER_OVERHEAD);
                let (payload, headers) = if payload.len() > room {
                    let original = payload.len().to_string();
                    let headers = headers.insert(Header {
                        key: "cloudwarden.truncated",
                        value: Some(original.as_bytes()),
                    });
                    (&payload[..room], headers)
                } else {
                    (payload, headers)
                };
                let topic = self.config.kafka.dead_letter_topic.clone();
                let ack = self
                    .shared
                    .ack(Some((tp.clone(), offset)), ingested_ms, None);
                let mut record = BaseRecord::with_opaque_to(&topic, ack)
                    .payload(payload)
                    .headers(headers);
                if let Some(key) = msg.key() {
                    record = record.key(key);
                }
                self.em.send(record);
                produced += 1;
            }
        }
        lock(&self.shared.tracker).processed(&tp, offset, produced);
    }

    /// Moves a partition's clock and the engine's watermark (the minimum over active partitions).
    fn tick_partition(&mut self, tp: &Arc<TopicPartition>, t: i64) {
        let now = Instant::now();
        let clock = self.clocks.entry(tp.clone()).or_insert(PartitionClock {
            max_event_time: t,
            last_record: now,
        });
        clock.max_event_time = clock.max_event_time.max(t);
        clock.last_record = now;
        self.recompute_watermark(Some(tp));
    }

    /// The engine's watermark from the partition clocks: the minimum over partitions heard from
    /// (or assigned) within `partition_idle_timeout`, minus the allowed lateness. A partition
    /// assigned but not heard from yet counts as "the beginning of time" until it is idle:
    /// otherwise a partition read first would make every other one late. When every partition
    /// is idle, all their data has been read, and the newest partition clock is the bound.
    fn recompute_watermark(&mut self, current: Option<&Arc<TopicPartition>>) {
        let now = Instant::now();
        let idle_after = self.config.service.partition_idle_timeout;
        let assigned = lock(&self.shared.assigned);
        let mut active_min: Option<i64> = None;
        let mut newest: Option<i64> = None;
        let current = current.map(|tp| (tp.as_ref(), now));
        let entries = assigned
            .iter()
            .map(|(tp, at)| (tp, *at))
            .chain(current)
            .map(|(tp, at)| match self.clocks.get(tp) {
                Some(c) => (c.max_event_time, c.last_record),
                None => (i64::MIN, at),
            });
        for (t, last) in entries {
            if t > i64::MIN {
                newest = Some(newest.map_or(t, |n| n.max(t)));
            }
            if now.duration_since(last) < idle_after {
                active_min = Some(active_min.map_or(t, |m| m.min(t)));
            }
        }
        drop(assigned);
        let bound = match active_min {
            Some(m) => Some(m),
            None => newest,
        };
        if let Some(b) = bound.filter(|b| *b > i64::MIN) {
            let wm = b.saturating_sub(self.engine.allowed_lateness_ms());
            if wm > self.engine.watermark() {
                self.advance(wm);
            }
        }
    }

    /// No record this poll: if the input has been idle long enough, event time moves with the
    /// wall clock.
    fn idle(&mut self) {
        if self.topology.is_some() {
            return;
        }
        // Partitions that went idle stop holding the watermark back.
        self.recompute_watermark(None);
        let now = Instant::now();
        if now.duration_since(self.last_input) < self.config.service.idle_timeout {
            self.last_idle_advance = now;
            return;
        }
        let step = now.duration_since(self.last_idle_advance).as_millis() as i64;
        if step >= 1000 && self.engine.watermark() > i64::MIN {
            self.last_idle_advance = now;
            let wm = self.engine.watermark().saturating_add(step);
            self.advance(wm);
        }
    }

    fn advance(&mut self, wm: i64) {
        let mut raised = Vec::new();
        self.engine.advance_watermark(wm, &mut raised);
        for alert in &raised {
            self.em.produce_alert_at(alert, None, now_ms(), None);
        }
    }

    /// Stage 2 drops the state of revoked repartition partitions; with the snapshot file, the
    /// engine remembers how far it processed a revoked partition, to skip those records if it
    /// comes back (its state still holds them).
    fn take_revoked(&mut self) {
        let revoked = std::mem::take(&mut *lock(&self.shared.revoked));
        for (tp, until) in revoked {
            if let Some(t) = &mut self.topology {
                t.revoked(&tp);
            }
            if let (Some(local), Some(until)) = (&mut self.snapshot, until) {
                let e = local.restored.entry(tp).or_insert(until);
                *e = (*e).max(until);
            }
        }
    }
}

/// Everything that writes to Kafka from the processing thread: alerts, dead letters,
/// repartition records, with their acknowledgements tied to the offsets that caused them.
pub(super) struct Emitter {
    producer: Arc<BaseProducer<ProducerCtx>>,
    shared: Arc<Shared>,
    alerts_topic: String,
    json: Vec<u8>,
}

impl Emitter {
    /// Produces an alert (key = its id), acknowledged against `source`.
    pub(super) fn produce_alert(
        &mut self,
        alert: &Alert,
        source: Option<(Arc<TopicPartition>, i64)>,
        event_time: Option<i64>,
    ) {
        self.produce_alert_at(alert, source, now_ms(), event_time);
    }

    fn produce_alert_at(
        &mut self,
        alert: &Alert,
        source: Option<(Arc<TopicPartition>, i64)>,
        ingested_ms: i64,
        event_time: Option<i64>,
    ) {
        self.shared
            .metrics
            .alert(&alert.detector, alert.severity.as_str());
        self.json.clear();
        if serde_json::to_writer(&mut self.json, alert).is_err() {
            tracing::error!(id = %alert.id, "alert did not serialize");
            return;
        }
        let json = std::mem::take(&mut self.json);
        let ack = self
            .shared
            .ack(source, ingested_ms, event_time.or(Some(alert.time)));
        let headers = OwnedHeaders::new().insert(Header {
            key: "cloudwarden.detector",
            value: Some(alert.detector.as_bytes()),
        });
        let record = BaseRecord::with_opaque_to(&self.alerts_topic, ack)
            .key(alert.id.as_bytes())
            .payload(json.as_slice())
            .headers(headers);
        self.send(record);
        self.json = json;
    }

    /// Produces `payload` to `topic` (to `partition` if given), acknowledged against `source`.
    pub(super) fn send_to(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        payload: &[u8],
        source: Option<(Arc<TopicPartition>, i64)>,
    ) {
        let ack = self.shared.ack(source, now_ms(), None);
        let mut record = BaseRecord::with_opaque_to(topic, ack).payload(payload);
        if let Some(p) = partition {
            record = record.partition(p);
        }
        if let Some(k) = key {
            record = record.key(k);
        }
        self.send(record);
    }

    /// Produces a changelog entry (`None`: a tombstone) of checkpoint number `checkpoint`,
    /// acknowledged against `source`.
    pub(super) fn send_state(
        &self,
        topic: &str,
        partition: i32,
        key: &[u8],
        value: Option<&[u8]>,
        checkpoint: &str,
        source: (Arc<TopicPartition>, i64),
    ) {
        let ack = self.shared.ack(Some(source), now_ms(), None);
        let headers = OwnedHeaders::new().insert(Header {
            key: super::repartition::CHECKPOINT_HEADER,
            value: Some(checkpoint.as_bytes()),
        });
        let mut record = BaseRecord::with_opaque_to(topic, ack)
            .key(key)
            .partition(partition)
            .headers(headers);
        if let Some(v) = value {
            record = record.payload(v);
        }
        self.send(record);
    }

    /// Waits until every message sent so far is acknowledged (bounded). Failed deliveries are
    /// queued for resending, so `false` also when any is waiting there.
    pub(super) fn flush(&self, timeout: Duration) -> bool {
        self.producer.flush(timeout).is_ok() && lock(&self.shared.retries).is_empty()
    }

    pub(super) fn hold(&self, tp: &TopicPartition, offset: i64) {
        lock(&self.shared.tracker).hold(tp, offset);
    }

    pub(super) fn release(&self, tp: &TopicPartition, offset: i64) {
        lock(&self.shared.tracker).release(tp, offset);
    }

    pub(super) fn processed(&self, tp: &TopicPartition, offset: i64, messages: u32) {
        lock(&self.shared.tracker).processed(tp, offset, messages);
    }

    /// Sends, waiting while the producer queue is full (backpressure, not an error).
    fn send(&self, mut record: BaseRecord<'_, [u8], [u8], Box<Ack>>) {
        loop {
            match self.producer.send(record) {
                Ok(()) => return,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    self.producer.poll(Duration::from_millis(50));
                    record = back;
                }
                Err((e, back)) if self.shared.eos => {
                    // The transaction is in an error state: abort it and process again.
                    tracing::warn!(error = %e, topic = back.topic, "produce failed; the transaction will be aborted");
                    self.shared
                        .metrics
                        .delivery_failures
                        .fetch_add(1, Ordering::Relaxed);
                    self.shared.txn_failed.store(true, Ordering::Relaxed);
                    return;
                }
                Err((e, back)) => {
                    tracing::error!(error = %e, topic = back.topic, "produce failed; retrying");
                    self.shared
                        .metrics
                        .delivery_failures
                        .fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(100));
                    self.producer.poll(Duration::ZERO);
                    record = back;
                }
            }
        }
    }

    fn resend_failed(&self) {
        let failed = std::mem::take(&mut *lock(&self.shared.retries));
        for (msg, ack) in failed {
            let mut record = BaseRecord::with_opaque_to(msg.topic(), ack);
            if let Some(p) = msg.payload() {
                record = record.payload(p);
            }
            if let Some(k) = msg.key() {
                record = record.key(k);
            }
            // Marked as re-sent: it may land after records sent later from the same input
            // partition, so stage 2 must not take it for a duplicate of an earlier origin.
            let headers = msg
                .headers()
                .cloned()
                .unwrap_or_else(OwnedHeaders::new)
                .insert(Header {
                    key: RESENT_HEADER,
                    value: Some(b"1".as_slice()),
                });
            record = record.headers(headers);
            // Repartition records were sent to a chosen partition: keep it.
            record = record.partition(msg.partition());
            self.send(record);
        }
    }
}

/// Opens (or creates) the snapshot file and restores the engine from it.
fn open_snapshot(
    config: &Config,
    engine: &mut Engine,
    metrics: &Metrics,
) -> Result<LocalState, ServiceError> {
    let path = std::path::Path::new(&config.state.snapshot_path);
    let (log, loaded) = crate::snapshot::SnapshotLog::open(path)
        .map_err(|e| ServiceError::Config("state.snapshot_path".into(), e.to_string()))?;
    if loaded.discarded_bytes > 0 {
        tracing::warn!(
            path = %path.display(),
            bytes = loaded.discarded_bytes,
            "snapshot: an incomplete last batch was cut off (a crash while writing); the state is that of the batch before"
        );
        Metrics::add(&metrics.state_errors, "torn_batch", 1);
    }
    engine.track_changes();
    let failed = engine.restore(&loaded.entries);
    for (e, err) in &failed {
        tracing::warn!(detector = e.detector, table = e.table, key = e.key, error = %err, "state entry skipped; its key starts fresh");
        Metrics::add(&metrics.state_errors, err.reason(), 1);
    }
    let restored = (loaded.entries.len() - failed.len()) as u64;
    metrics
        .state_restored
        .fetch_add(restored, Ordering::Relaxed);
    metrics
        .snapshot_bytes
        .store(log.file_bytes(), Ordering::Relaxed);
    tracing::info!(
        path = %path.display(),
        entries = restored,
        batches = loaded.batches,
        partitions = loaded.offsets.len(),
        "snapshot restored"
    );
    let restored: HashMap<TopicPartition, i64> = loaded
        .offsets
        .into_iter()
        .map(|(topic, partition, next)| (TopicPartition { topic, partition }, next))
        .collect();
    Ok(LocalState {
        log,
        written: restored.clone(),
        restored,
        last: Instant::now(),
    })
}

/// Runs a transactional call, retrying what librdkafka calls retriable until `deadline`.
fn txn_call(deadline: Instant, mut f: impl FnMut() -> KafkaResult<()>) -> KafkaResult<()> {
    loop {
        match f() {
            Err(KafkaError::Transaction(e)) if e.is_retriable() && Instant::now() < deadline => {
                tracing::debug!(error = %e, "transaction call retried");
                std::thread::sleep(Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

/// The end offset of a partition as of the last fetch response (librdkafka's cache,
/// `rd_kafka_get_watermark_offsets`: no broker round trip; rust-rdkafka only wraps the querying
/// variant).
fn cached_high_watermark(consumer: &BaseConsumer<ConsumerCtx>, tp: &TopicPartition) -> Option<i64> {
    let topic = std::ffi::CString::new(tp.topic.as_str()).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid while `consumer` lives, the topic is a valid C string,
    // and librdkafka only writes the two out-parameters.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            tp.partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some(high)
}

/// Creates an internal topic if it is missing (and allowed to), and checks its partition count:
/// a different count would send keys to other owners than before. `section` names the config
/// section in errors (`repartition` or `state`).
#[allow(clippy::too_many_arguments)]
fn ensure_topic(
    producer: &BaseProducer<ProducerCtx>,
    common: &[(String, String)],
    topic: &str,
    partitions: i32,
    replication_factor: i32,
    settings: &[(&str, String)],
    create: bool,
    section: &str,
) -> Result<(), ServiceError> {
    match topic_partitions(producer, topic) {
        Some(n) if n == partitions as usize => return Ok(()),
        Some(n) => {
            return Err(ServiceError::Config(
                "repartition.partitions".into(),
                format!("topic {topic} exists with {n} partitions, the config says {partitions}: use the topic's count or a new topic"),
            ))
        }
        None if !create => {
            return Err(ServiceError::Config(
                "repartition.create_topic".into(),
                format!("topic {topic} does not exist and create_topic is false"),
            ))
        }
        None => {}
    }
    let mut ac = ClientConfig::new();
    for (key, v) in common {
        ac.set(key, v);
    }
    let admin: AdminClient<DefaultClientContext> = ac.create()?;
    let mut new = NewTopic::new(
        topic,
        partitions,
        TopicReplication::Fixed(replication_factor),
    );
    for (k, v) in settings {
        new = new.set(k, v);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ServiceError::Config(format!("{section}.topic"), e.to_string()))?;
    let results = rt.block_on(admin.create_topics(
        [&new],
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
    ))?;
    for res in results {
        if let Err((t, code)) = res {
            if code != RDKafkaErrorCode::TopicAlreadyExists {
                return Err(ServiceError::Config(
                    format!("{section}.topic"),
                    format!("cannot create topic {t}: {code}"),
                ));
            }
        }
    }
    tracing::info!(topic, partitions, "created an internal topic");
    Ok(())
}

/// The partition count of a topic, `None` when it does not exist. Asks for every topic's
/// metadata: a producer's request for one named topic lets the broker auto-create it (Apache
/// Kafka's default `auto.create.topics.enable=true`) with the broker's default partition count.
fn topic_partitions(producer: &BaseProducer<ProducerCtx>, topic: &str) -> Option<usize> {
    let md = producer
        .client()
        .fetch_metadata(None, Duration::from_secs(10))
        .ok()?;
    md.topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.partitions().len())
}

/// Every partition of the input topics (stage 2 waits for a marker from each).
fn input_partitions(producer: &BaseProducer<ProducerCtx>, topics: &[String]) -> Vec<(String, i32)> {
    let mut out = Vec::new();
    for t in topics {
        if let Some(n) = topic_partitions(producer, t) {
            out.extend((0..n as i32).map(|p| (t.clone(), p)));
        }
    }
    out
}

/// Keeps the original record's headers on a dead letter (after ours).
fn copy_headers(msg: &BorrowedMessage<'_>, mut headers: OwnedHeaders) -> OwnedHeaders {
    if let Some(h) = msg.headers() {
        for header in h.iter() {
            headers = headers.insert(Header {
                key: header.key,
                value: header.value,
            });
        }
    }
    headers
}
