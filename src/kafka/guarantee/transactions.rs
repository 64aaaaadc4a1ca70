//! Exactly-once (`processing.guarantee = "exactly_once"`): one transactional producer per
//! instance (fenced by group generation, KIP-447).
//!
//! Every `processing.transaction_interval`: stage 2 writes its changed state to the changelog
//! inside the open transaction, every message is acknowledged, the input and repartition offsets
//! that state reflects go in through `send_offsets_to_transaction`, and the transaction commits;
//! alerts, dead letters, repartition records, changelog records and offsets become visible
//! together. Retriable errors are retried; errors that need an abort, retriable ones still
//! failing at the deadline, and flush timeouts abort and *rewind*: state is dropped (stage 2
//! restores from the changelog's committed records) and every assigned partition is read again
//! from its committed offset — a restart without leaving the group. Fatal errors (fenced) stop
//! the service, and so do five rewinds in a row without a commit.
//!
//! Every transactional call is bounded: send offsets, commit and abort by
//! `processing.transaction_call_timeout` (retries included), init by `transaction_timeout`. Each
//! runs on a helper thread ([`bounded_txn_call`]); one librdkafka has not returned from 5 s past
//! its bound stops the service with an error (the producer is stuck; a restart fences it).

use super::{offset_list, Parts};
use crate::config::Config;
use crate::kafka::emitter::{
    abort_transaction, bounded_txn_call, flush, Emitter, ProducerCtx, Stuck, Transaction,
};
use crate::kafka::error::ServiceError;
use crate::kafka::offsets::TopicPartition;
use crate::telemetry::Metrics;
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::util::Timeout;
use rdkafka::Offset;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Rewinds without a commit in between before the service gives up.
const MAX_REWINDS_IN_A_ROW: u32 = 5;

pub struct Transactions {
    txn: Arc<Transaction>,
    /// When the open transaction began.
    last_txn: Instant,
    /// Rewinds since the last committed transaction.
    rewinds_in_a_row: u32,
}

impl Transactions {
    /// Fences a predecessor with the same transactional id, aborts what it left open, and
    /// begins the first transaction.
    pub fn begin(config: &Config, em: &Emitter) -> Result<Transactions, ServiceError> {
        let Some(txn) = em.transaction() else {
            return Err(ServiceError::Transaction(
                "the producer was made without transactions".into(),
            ));
        };
        let producer = em.producer();
        let limit = config.processing.transaction_timeout;
        bounded_txn_call(producer, &txn, "init_transactions", limit, move |p| {
            p.init_transactions(Timeout::After(limit))
        })
        .map_err(stuck)??;
        producer.begin_transaction()?;
        tracing::info!(
            transactional_id = %config.processing.transactional_id_for(&config.kafka.group_id),
            "exactly-once: transactions initialised"
        );
        Ok(Transactions {
            txn,
            last_txn: Instant::now(),
            rewinds_in_a_row: 0,
        })
    }

    /// A record is being processed: the open transaction holds something.
    pub(super) fn processing(&self) {
        self.txn.dirty.store(true, Ordering::Relaxed);
    }

    /// A message of the open transaction failed, or the revocation callback aborted it.
    pub(super) fn must_rewind(&self) -> bool {
        self.txn.rewind.load(Ordering::Relaxed) || self.txn.failed.load(Ordering::Relaxed)
    }

    /// A transactional call is stuck in librdkafka: the service must stop.
    pub(super) fn stuck(&self) -> bool {
        self.txn.stuck.load(Ordering::Relaxed)
    }

    pub(super) fn stuck_error(&self) -> ServiceError {
        ServiceError::Transaction(
            "a transactional call is stuck in librdkafka (see processing.transaction_call_timeout)"
                .into(),
        )
    }

    pub(super) fn commit_if_due(&mut self, parts: Parts<'_>) -> Result<(), ServiceError> {
        if self.last_txn.elapsed() >= parts.config.processing.transaction_interval {
            self.commit(parts)
        } else {
            Ok(())
        }
    }

    /// Checkpoints the state into the open transaction, adds the input offsets it reflects,
    /// commits, and begins the next one. An error that requires an abort rewinds; a fatal one
    /// (fenced by a newer instance with the same transactional id, ...) stops the service.
    pub(super) fn commit(&mut self, mut parts: Parts<'_>) -> Result<(), ServiceError> {
        let timeout = parts.config.processing.transaction_timeout;
        if let Some(t) = parts.topology.as_deref_mut() {
            if !t.checkpoint(parts.em, parts.metrics, true)
                && !self.txn.failed.load(Ordering::Relaxed)
            {
                // Messages still unacknowledged: the state is not in the transaction yet, so it
                // must not commit. It stays open; if it outlives transaction_timeout, the broker
                // aborts it and the next send fails, which rewinds.
                self.last_txn = Instant::now();
                return Ok(());
            }
        }
        let call = parts.config.processing.transaction_call_timeout;
        let producer = parts.em.producer().clone();
        // Every message of the transaction acknowledged (or failed), so the offsets are final.
        let _ = flush(&producer, call.min(timeout));
        if self.txn.failed.load(Ordering::Relaxed) {
            return self.abort_and_rewind(parts, "a message of the transaction was not delivered");
        }
        let ready = parts.em.offsets().ready();
        if !ready.is_empty() {
            let Some(group) = parts.consumer.group_metadata() else {
                return Err(ServiceError::Transaction(
                    "no consumer group metadata".into(),
                ));
            };
            let args = Arc::new((offset_list(&ready), group));
            let sent = txn_call(
                &producer,
                &self.txn,
                "send_offsets_to_transaction",
                call,
                move |p, left| {
                    p.send_offsets_to_transaction(&args.0, &args.1, Timeout::After(left))
                },
            )
            .map_err(stuck)?;
            if let Err(e) = sent {
                return self.txn_error(parts, "sending offsets to the transaction", e);
            }
        }
        let committed = txn_call(
            &producer,
            &self.txn,
            "commit_transaction",
            call,
            |p, left| p.commit_transaction(Timeout::After(left)),
        )
        .map_err(stuck)?;
        match committed {
            Ok(()) => {
                Metrics::add(&parts.metrics.transactions, "committed", 1);
                self.txn.dirty.store(false, Ordering::Relaxed);
                self.rewinds_in_a_row = 0;
                producer.begin_transaction()?;
                // The interval counts from here: a slow commit must not leave no time to
                // process records before the next one.
                self.last_txn = Instant::now();
                Ok(())
            }
            Err(e) => self.txn_error(parts, "committing the transaction", e),
        }
    }

    /// Fatal errors (fenced, ...) stop the service; errors that require an abort, retriable ones
    /// that outlasted the transaction timeout, and a flush that timed out abort and rewind.
    fn txn_error(
        &mut self,
        parts: Parts<'_>,
        doing: &str,
        e: KafkaError,
    ) -> Result<(), ServiceError> {
        let abortable = match &e {
            KafkaError::Transaction(t) => {
                !t.is_fatal() && (t.txn_requires_abort() || t.is_retriable())
            }
            KafkaError::Flush(_) => true,
            _ => false,
        };
        if abortable {
            self.abort_and_rewind(parts, &format!("{doing}: {e}"))
        } else {
            Err(ServiceError::Transaction(format!("{doing}: {e}")))
        }
    }

    /// Aborts the open transaction (unless the revocation callback already did) and rewinds:
    /// the in-memory state is dropped (stage 2 restores it from the changelog's committed
    /// records at first use) and every assigned partition is read again from its committed
    /// offset. The same as a restart, without leaving the group.
    pub(super) fn abort_and_rewind(
        &mut self,
        parts: Parts<'_>,
        why: &str,
    ) -> Result<(), ServiceError> {
        self.rewinds_in_a_row += 1;
        if self.rewinds_in_a_row > MAX_REWINDS_IN_A_ROW {
            // The same input fails the same way each time (a message that can never be
            // delivered): rewinding again would loop.
            return Err(ServiceError::Transaction(format!(
                "{MAX_REWINDS_IN_A_ROW} rewinds in a row without a commit; last: {why}"
            )));
        }
        let call = parts.config.processing.transaction_call_timeout;
        let producer = parts.em.producer().clone();
        if !self.txn.rewind.swap(false, Ordering::Relaxed) {
            tracing::warn!(reason = why, "exactly-once: aborting the transaction");
            abort_transaction(&producer, &self.txn, call)
                .map_err(stuck)?
                .map_err(|e| ServiceError::Transaction(format!("aborting ({why}): {e}")))?;
            Metrics::add(&parts.metrics.transactions, "aborted", 1);
        }
        self.txn.failed.store(false, Ordering::Relaxed);
        self.txn.dirty.store(false, Ordering::Relaxed);
        parts.em.drop_retries();
        if let Some(t) = parts.topology {
            t.rewind();
        }
        parts.clocks.clear();
        let consumer = parts.consumer;
        let assignment = consumer.assignment()?;
        for e in assignment.elements() {
            parts.em.offsets().assigned(&TopicPartition {
                topic: e.topic().to_owned(),
                partition: e.partition(),
            });
        }
        let committed =
            consumer.committed_offsets(assignment, Timeout::After(Duration::from_secs(30)))?;
        for e in committed.elements() {
            let offset = match e.offset() {
                Offset::Offset(o) => Offset::Offset(o),
                _ => Offset::Beginning,
            };
            if let Err(err) =
                consumer.seek(e.topic(), e.partition(), offset, Duration::from_secs(10))
            {
                return Err(ServiceError::Transaction(format!(
                    "rewinding {}[{}] to {offset:?}: {err}",
                    e.topic(),
                    e.partition()
                )));
            }
        }
        parts.metrics.rewinds.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            partitions = committed.count(),
            "exactly-once: rewound to the last committed transaction"
        );
        producer.begin_transaction()?;
        self.last_txn = Instant::now();
        Ok(())
    }
}

/// A transactional call that did not return: the service stops (a restart fences the producer).
fn stuck(e: Stuck) -> ServiceError {
    ServiceError::Transaction(e.to_string())
}

/// Runs a transactional call, retrying what librdkafka calls retriable, all within `limit`;
/// each attempt gets what is left of it (`f`'s second argument) and runs under
/// [`bounded_txn_call`].
fn txn_call(
    producer: &Arc<BaseProducer<ProducerCtx>>,
    txn: &Transaction,
    what: &str,
    limit: Duration,
    f: impl Fn(&BaseProducer<ProducerCtx>, Duration) -> KafkaResult<()> + Send + Sync + 'static,
) -> Result<KafkaResult<()>, Stuck> {
    let f = Arc::new(f);
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100));
        let attempt = f.clone();
        match bounded_txn_call(producer, txn, what, left, move |p| attempt(p, left))? {
            Err(KafkaError::Transaction(e)) if e.is_retriable() && Instant::now() < deadline => {
                tracing::debug!(error = %e, call = what, "transaction call retried");
                std::thread::sleep(Duration::from_millis(100));
            }
            other => return Ok(other),
        }
    }
}
