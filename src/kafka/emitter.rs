//! Everything the processing thread writes to Kafka, and what each message acknowledges.
//!
//! One idempotent `BaseProducer` (`acks=all`) carries alerts, dead letters, repartition records
//! and changelog entries. Every message is sent with an [`Ack`] naming the input record it came
//! from; the delivery callback ([`ProducerCtx`]) credits it to [`Offsets`] when the broker
//! acknowledges it, so an input offset is committed only once all its effects are durable. A
//! failed delivery is queued and sent again by [`Emitter::resend_failed`], never dropped; under
//! exactly-once it marks the open transaction failed instead (a message of a transaction cannot
//! be sent again on its own: the transaction is aborted and its input read again). A full
//! producer queue is backpressure, not an error: [`Emitter::send`] polls and retries.

use super::offsets::{Offsets, TopicPartition};
use crate::alert::format::AlertFormat;
use crate::alert::Alert;
use crate::telemetry::Metrics;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::util::Timeout;
use rdkafka::ClientContext;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Header on a message the service produced again after a failed delivery.
pub const RESENT_HEADER: &str = "cloudwarden.resent";

/// Bytes kept free in a dead letter for the record batch framing around key, headers and payload.
const DEAD_LETTER_OVERHEAD: usize = 512;

/// The record a message acknowledges: its partition and offset.
pub type Source = (Arc<TopicPartition>, i64);

/// What a produced message is acknowledging.
pub struct Ack {
    /// The input record it came from (`None`: raised by an idle watermark advance, a marker).
    source: Option<Source>,
    /// When the input record entered Kafka (its timestamp, epoch ms), or when we consumed it.
    ingested_ms: i64,
    event_time: Option<i64>,
    /// An alert: its acknowledgement counts in the latency histograms (repartition records,
    /// changelog entries, markers and dead letters do not).
    alert: bool,
    /// Exactly-once: the transaction it was sent in ([`Transaction::seq`]).
    txn: u64,
}

/// Exactly-once: the open transaction's flags, shared by the emitter, the delivery callback,
/// the rebalance callback and the guarantee (all on the processing thread).
#[derive(Debug, Default)]
pub struct Transaction {
    /// Bumped at every abort, so late delivery reports of an aborted transaction's messages do
    /// not fail the next one.
    seq: AtomicU64,
    /// A message of the open transaction failed: it must be aborted.
    pub failed: AtomicBool,
    /// Records were processed since the last commit.
    pub dirty: AtomicBool,
    /// The open transaction was aborted on revocation: drop state and read again.
    pub rewind: AtomicBool,
    /// A transactional call did not return within its bound ([`bounded_txn_call`]): the
    /// producer is unusable and the service must stop.
    pub stuck: AtomicBool,
}

/// What the delivery callback needs.
pub struct Deliveries {
    offsets: Arc<Offsets>,
    metrics: Arc<Metrics>,
    retries: Mutex<Vec<(OwnedMessage, Box<Ack>)>>,
    /// `Some` under exactly-once.
    txn: Option<Arc<Transaction>>,
}

impl Deliveries {
    pub fn new(
        offsets: Arc<Offsets>,
        metrics: Arc<Metrics>,
        txn: Option<Arc<Transaction>>,
    ) -> Self {
        Deliveries {
            offsets,
            metrics,
            retries: Mutex::new(Vec::new()),
            txn,
        }
    }

    fn retries(&self) -> MutexGuard<'_, Vec<(OwnedMessage, Box<Ack>)>> {
        self.retries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The producer's context: serves delivery reports (inside `poll`, on the processing thread).
pub struct ProducerCtx {
    pub deliveries: Arc<Deliveries>,
}

impl ClientContext for ProducerCtx {}

impl ProducerContext for ProducerCtx {
    type DeliveryOpaque = Box<Ack>;

    fn delivery(&self, result: &DeliveryResult<'_>, ack: Box<Ack>) {
        let d = &self.deliveries;
        let m = &d.metrics;
        match (result, &d.txn) {
            (Ok(msg), _) => {
                if let Some((tp, offset)) = &ack.source {
                    d.offsets.acked(tp, *offset);
                }
                Metrics::add(&m.messages_out, msg.topic(), 1);
                if ack.alert {
                    let now = now_ms();
                    let ingest_us = (now - ack.ingested_ms).max(0) as u64 * 1000;
                    let event_us = ack.event_time.map(|t| (now - t).max(0) as u64 * 1000);
                    m.record_latency(ingest_us, event_us);
                }
            }
            (Err(_), Some(txn)) if ack.txn != txn.seq.load(Ordering::Relaxed) => {
                // A message of an already aborted transaction: nothing to do.
            }
            (Err((e, msg)), Some(txn)) => {
                // Inside a transaction a lost message cannot be sent again: the transaction is
                // aborted and everything since the last commit is processed again.
                m.delivery_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(topic = msg.topic(), error = %e, "delivery failed; the transaction will be aborted");
                txn.failed.store(true, Ordering::Relaxed);
            }
            (Err((e, msg)), None) => {
                m.delivery_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(topic = msg.topic(), error = %e, "delivery failed; sending again");
                d.retries().push((msg.detach(), ack));
            }
        }
    }
}

/// One message to send.
pub struct Out<'a> {
    pub topic: &'a str,
    /// `None`: the producer's partitioner (by key).
    pub partition: Option<i32>,
    pub key: Option<&'a [u8]>,
    /// `None`: a tombstone.
    pub payload: Option<&'a [u8]>,
    /// One header of ours, if any.
    pub header: Option<(&'a str, &'a [u8])>,
    /// The record it acknowledges.
    pub source: Option<Source>,
}

/// Why a record is a dead letter, and where it came from.
pub struct DeadLetter<'a> {
    pub reason: &'a str,
    pub error: &'a str,
    pub msg: &'a BorrowedMessage<'a>,
    pub source: Source,
    pub ingested_ms: i64,
}

/// Everything that writes to Kafka from the processing thread.
pub struct Emitter {
    producer: Arc<BaseProducer<ProducerCtx>>,
    deliveries: Arc<Deliveries>,
    alerts_topic: String,
    dead_letter_topic: String,
    /// The largest message the producer sends (`message.max.bytes`): dead letters are cut to fit.
    dead_letter_max: usize,
    /// How an alert becomes the record value.
    format: AlertFormat,
    json: Vec<u8>,
}

impl Emitter {
    pub fn new(
        producer: Arc<BaseProducer<ProducerCtx>>,
        alerts_topic: String,
        dead_letter_topic: String,
        dead_letter_max: usize,
        format: AlertFormat,
    ) -> Self {
        Emitter {
            deliveries: producer.context().deliveries.clone(),
            producer,
            alerts_topic,
            dead_letter_topic,
            dead_letter_max,
            format,
            json: Vec::new(),
        }
    }

    pub fn producer(&self) -> &Arc<BaseProducer<ProducerCtx>> {
        &self.producer
    }

    /// Exactly-once: the open transaction's flags.
    pub fn transaction(&self) -> Option<Arc<Transaction>> {
        self.deliveries.txn.clone()
    }

    /// The offset bookkeeping the messages are acknowledged against.
    pub fn offsets(&self) -> &Offsets {
        &self.deliveries.offsets
    }

    fn ack(
        &self,
        source: Option<Source>,
        ingested_ms: i64,
        event_time: Option<i64>,
        alert: bool,
    ) -> Box<Ack> {
        Box::new(Ack {
            source,
            ingested_ms,
            event_time,
            alert,
            txn: self
                .deliveries
                .txn
                .as_ref()
                .map_or(0, |t| t.seq.load(Ordering::Relaxed)),
        })
    }

    /// Produces an alert (key = its id), acknowledged against `source`. `ingested_ms`: when the
    /// record that raised it entered Kafka (latency metrics); `None`: now.
    pub fn produce_alert(
        &mut self,
        alert: &Alert,
        source: Option<Source>,
        ingested_ms: Option<i64>,
        event_time: Option<i64>,
    ) {
        self.deliveries
            .metrics
            .alert(&alert.detector, alert.severity.as_str());
        self.json.clear();
        if let Err(e) = self.format.write(alert, &mut self.json) {
            tracing::error!(id = %alert.id, error = %e, "alert not written");
            return;
        }
        let json = std::mem::take(&mut self.json);
        let ack = self.ack(
            source,
            ingested_ms.unwrap_or_else(now_ms),
            event_time.or(Some(alert.time)),
            true,
        );
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

    /// Produces one message (repartition records, changelog entries, markers).
    pub fn send_to(&self, out: Out<'_>) {
        let ack = self.ack(out.source, now_ms(), None, false);
        let mut record = BaseRecord::with_opaque_to(out.topic, ack);
        if let Some(p) = out.payload {
            record = record.payload(p);
        }
        if let Some(p) = out.partition {
            record = record.partition(p);
        }
        if let Some(k) = out.key {
            record = record.key(k);
        }
        if let Some((key, value)) = out.header {
            record = record.headers(OwnedHeaders::new().insert(Header {
                key,
                value: Some(value),
            }));
        }
        self.send(record);
    }

    /// Sends an undecodable record to the dead-letter topic, unchanged, with headers saying why
    /// and from where (the original headers follow ours). A record larger than the producer
    /// accepts could never be sent (and would stall its partition): its payload is cut to fit,
    /// the original size in `cloudwarden.truncated`.
    pub fn dead_letter(&self, d: DeadLetter<'_>) {
        let msg = d.msg;
        let payload = msg.payload().unwrap_or(&[]);
        let partition = msg.partition().to_string();
        let offset = msg.offset().to_string();
        let mut headers = OwnedHeaders::new();
        for (key, value) in [
            ("cloudwarden.reason", d.reason.as_bytes()),
            ("cloudwarden.error", d.error.as_bytes()),
            ("cloudwarden.source.topic", msg.topic().as_bytes()),
            ("cloudwarden.source.partition", partition.as_bytes()),
            ("cloudwarden.source.offset", offset.as_bytes()),
        ] {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        if let Some(h) = msg.headers() {
            for header in h.iter() {
                headers = headers.insert(Header {
                    key: header.key,
                    value: header.value,
                });
            }
        }
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
        let ack = self.ack(Some(d.source), d.ingested_ms, None, false);
        let mut record = BaseRecord::with_opaque_to(&self.dead_letter_topic, ack)
            .payload(payload)
            .headers(headers);
        if let Some(key) = msg.key() {
            record = record.key(key);
        }
        self.send(record);
    }

    /// Serves delivery reports.
    pub fn poll(&self) {
        self.producer.poll(Duration::ZERO);
    }

    /// Waits until every message sent so far is acknowledged (bounded). Failed deliveries are
    /// queued for resending, so `false` also when any is waiting there.
    pub fn flush(&self, timeout: Duration) -> bool {
        flush(&self.producer, timeout).is_ok() && self.deliveries.retries().is_empty()
    }

    /// Messages waiting to be sent again.
    pub fn retries_pending(&self) -> usize {
        self.deliveries.retries().len()
    }

    /// Exactly-once rewind: what failed belongs to the aborted transaction.
    pub fn drop_retries(&self) {
        self.deliveries.retries().clear();
    }

    /// Sends, waiting while the producer queue is full (backpressure, not an error).
    fn send(&self, mut record: BaseRecord<'_, [u8], [u8], Box<Ack>>) {
        let m = &self.deliveries.metrics;
        loop {
            match self.producer.send(record) {
                Ok(()) => return,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    self.producer.poll(Duration::from_millis(50));
                    record = back;
                }
                Err((e, back)) => match &self.deliveries.txn {
                    Some(txn) => {
                        // The transaction is in an error state: abort it and process again.
                        tracing::warn!(error = %e, topic = back.topic, "produce failed; the transaction will be aborted");
                        m.delivery_failures.fetch_add(1, Ordering::Relaxed);
                        txn.failed.store(true, Ordering::Relaxed);
                        return;
                    }
                    None => {
                        tracing::error!(error = %e, topic = back.topic, "produce failed; retrying");
                        m.delivery_failures.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(100));
                        self.producer.poll(Duration::ZERO);
                        record = back;
                    }
                },
            }
        }
    }

    /// Sends again what failed, to the same partition, marked [`RESENT_HEADER`].
    pub fn resend_failed(&self) {
        let failed = std::mem::take(&mut *self.deliveries.retries());
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

/// Waits until every message the producer holds is acknowledged (its delivery report served),
/// bounded by `timeout`, returning as soon as that is so.
///
/// Not `Producer::flush`: rust-rdkafka's (0.38+) asks librdkafka once without waiting and, when
/// anything is in flight, polls for `min(100 ms, what is left)`, and its `BaseProducer::poll`
/// does not return before that time is up. So every flush with a message in flight took at least
/// 100 ms: the stall at each checkpoint and each exactly-once commit, and the ~100 ms "broker
/// floor" the service bench measured with it.
pub fn flush<C: ProducerContext>(producer: &BaseProducer<C>, timeout: Duration) -> KafkaResult<()> {
    let deadline = Instant::now() + timeout;
    loop {
        producer.poll(Duration::ZERO);
        if producer.in_flight_count() == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut));
        }
        producer.poll(Duration::from_millis(1));
    }
}

/// How long past its own timeout a transactional call may take to return before the producer is
/// taken for stuck.
pub const STUCK_GRACE: Duration = Duration::from_secs(5);

/// The producer did not return from a transactional call within its bound.
#[derive(Debug)]
pub struct Stuck(pub String);

impl std::fmt::Display for Stuck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Runs the transactional call `f` on a helper thread and waits at most `timeout` +
/// [`STUCK_GRACE`] for it, serving the producer's delivery reports meanwhile (librdkafka's commit
/// and abort wait for them, and a `BaseProducer` serves them only when polled).
///
/// librdkafka's transactional calls wait for the transaction manager's answer with no bound of
/// their own (`rd_kafka_txn_op_req1(…, RD_POLL_INFINITE)`); the timeout they are given is
/// enforced by the manager, and some paths never answer (seen after a coordinator's node was
/// killed). A call still running past the bound is left behind on its thread (it holds its own
/// handle on the producer) and [`Transaction::stuck`] is set: the caller must stop the service.
pub fn bounded_txn_call<T: Send + 'static>(
    producer: &Arc<BaseProducer<ProducerCtx>>,
    txn: &Transaction,
    what: &str,
    timeout: Duration,
    f: impl FnOnce(&BaseProducer<ProducerCtx>) -> KafkaResult<T> + Send + 'static,
) -> Result<KafkaResult<T>, Stuck> {
    if txn.stuck.load(Ordering::Relaxed) {
        return Err(Stuck(format!(
            "{what} not attempted: an earlier transactional call is stuck in librdkafka"
        )));
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let p = producer.clone();
    let spawned = std::thread::Builder::new()
        .name("cw-txn-call".into())
        .spawn(move || {
            let _ = tx.send(f(&p));
        });
    if let Err(e) = spawned {
        return Err(Stuck(format!("{what}: cannot start its thread: {e}")));
    }
    let deadline = Instant::now() + timeout + STUCK_GRACE;
    loop {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(result) => return Ok(result),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Stuck(format!("{what}: its thread panicked")));
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        if Instant::now() >= deadline {
            txn.stuck.store(true, Ordering::Relaxed);
            tracing::error!(call = what, "transactional call stuck in librdkafka");
            return Err(Stuck(format!(
                "{what} did not return within {} s (its timeout + {} s): the producer is stuck in librdkafka",
                (timeout + STUCK_GRACE).as_secs(),
                STUCK_GRACE.as_secs()
            )));
        }
        producer.poll(Duration::ZERO);
    }
}

/// Aborts the open transaction, retrying retriable errors until `timeout`, each attempt bounded
/// by [`bounded_txn_call`].
pub fn abort_transaction(
    producer: &Arc<BaseProducer<ProducerCtx>>,
    txn: &Transaction,
    timeout: Duration,
) -> Result<KafkaResult<()>, Stuck> {
    txn.seq.fetch_add(1, Ordering::Relaxed);
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(500));
        match bounded_txn_call(producer, txn, "abort_transaction", left, move |p| {
            p.abort_transaction(Timeout::After(left))
        })? {
            Err(KafkaError::Transaction(e)) if e.is_retriable() && Instant::now() < deadline => {
                producer.poll(Duration::from_millis(100));
            }
            other => return Ok(other),
        }
    }
}
