//! The consumer's context: what happens when partitions come and go, and the statistics.
//!
//! librdkafka calls these inside `consumer.poll`, on the processing thread. On assignment a
//! partition is tracked from a clean start. On revocation, before the partitions go, the
//! guarantee in force finishes what is in flight for them ([`OnRevoke`]): at-least-once flushes
//! the producer (bounded by `service.drain_timeout`) and commits the revoked partitions' safe
//! offsets synchronously; the snapshot file commits nothing (offsets are committed only from its
//! durable batches); exactly-once aborts the open transaction if it holds records, and the loop
//! then rewinds to the last committed one. Either way the partitions' tracking is dropped and
//! they are queued for the processing loop ([`ConsumerCtx::take_revoked`]), which drops their
//! stage-2 state. Nothing here blocks beyond the drain and the abort.

use super::emitter::{abort_transaction, flush, ProducerCtx, Transaction};
use super::offsets::{Offsets, Revoked, TopicPartition};
use crate::telemetry::Metrics;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::producer::BaseProducer;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What a revocation must finish first, per guarantee.
pub enum OnRevoke {
    /// At-least-once: drain, then commit the revoked partitions' safe offsets.
    CommitRevoked { drain_timeout: Duration },
    /// The snapshot file: offsets are committed only from its durable batches.
    KeepOffsets,
    /// Exactly-once: abort the open transaction (it holds state changes only checkpointed at
    /// commit); the loop rewinds, and the next owner starts from the same committed point.
    AbortTransaction {
        txn: Arc<Transaction>,
        timeout: Duration,
    },
}

/// The consumer's context.
pub struct ConsumerCtx {
    offsets: Arc<Offsets>,
    metrics: Arc<Metrics>,
    producer: Arc<BaseProducer<ProducerCtx>>,
    on_revoke: OnRevoke,
    /// Assigned partitions and when they were assigned (an unseen partition holds the
    /// watermark back until it sends a record or `partition_idle_timeout` passes).
    assigned: Mutex<Vec<(TopicPartition, Instant)>>,
    /// Partitions revoked since the processing loop last looked, with how far each was
    /// processed.
    revoked: Mutex<Vec<(TopicPartition, Revoked)>>,
    stats_seen: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ConsumerCtx {
    pub fn new(
        offsets: Arc<Offsets>,
        metrics: Arc<Metrics>,
        producer: Arc<BaseProducer<ProducerCtx>>,
        on_revoke: OnRevoke,
    ) -> Self {
        ConsumerCtx {
            offsets,
            metrics,
            producer,
            on_revoke,
            assigned: Mutex::new(Vec::new()),
            revoked: Mutex::new(Vec::new()),
            stats_seen: AtomicBool::new(false),
        }
    }

    /// The assigned partitions, with when each was assigned.
    pub fn assigned(&self) -> Vec<(TopicPartition, Instant)> {
        lock(&self.assigned).clone()
    }

    /// `f` over the assigned partitions, without copying them (the in-process watermark reads
    /// them for every record).
    pub fn with_assigned<R>(&self, f: impl FnOnce(&[(TopicPartition, Instant)]) -> R) -> R {
        f(&lock(&self.assigned))
    }

    pub fn assigned_count(&self) -> usize {
        lock(&self.assigned).len()
    }

    /// Partitions revoked since the last call.
    pub fn take_revoked(&self) -> Vec<(TopicPartition, Revoked)> {
        std::mem::take(&mut *lock(&self.revoked))
    }

    /// Whether librdkafka has reported statistics (consumer lag) yet.
    pub fn stats_seen(&self) -> bool {
        self.stats_seen.load(Ordering::Relaxed)
    }

    /// Drops the revoked partitions' tracking and queues them for the processing loop.
    fn forget(&self, revoked: &TopicPartitionList) -> Vec<(TopicPartition, Revoked)> {
        let mut out = Vec::new();
        {
            let mut assigned = lock(&self.assigned);
            for elem in revoked.elements() {
                let tp = TopicPartition {
                    topic: elem.topic().to_owned(),
                    partition: elem.partition(),
                };
                let r = self.offsets.revoked(&tp);
                assigned.retain(|(a, _)| *a != tp);
                out.push((tp, r));
            }
        }
        lock(&self.revoked).extend(out.iter().cloned());
        self.metrics.clear_lag();
        tracing::info!(partitions = revoked.count(), "partitions revoked");
        out
    }
}

impl ClientContext for ConsumerCtx {
    fn stats(&self, stats: Statistics) {
        let m = &self.metrics;
        for (topic, t) in &stats.topics {
            for (partition, p) in &t.partitions {
                if *partition >= 0 && p.consumer_lag >= 0 {
                    m.set_lag(topic, *partition, p.consumer_lag);
                }
            }
        }
        self.stats_seen.store(true, Ordering::Relaxed);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::error!(%error, reason, "librdkafka error");
    }
}

impl ConsumerContext for ConsumerCtx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(revoked) = rebalance else {
            return;
        };
        self.metrics.rebalances.fetch_add(1, Ordering::Relaxed);
        match &self.on_revoke {
            OnRevoke::AbortTransaction { txn, timeout } => {
                if txn.dirty.swap(false, Ordering::Relaxed) {
                    match abort_transaction(&self.producer, txn, *timeout) {
                        Ok(Ok(())) => {
                            Metrics::add(&self.metrics.transactions, "aborted", 1);
                            txn.rewind.store(true, Ordering::Relaxed);
                        }
                        Ok(Err(e)) => {
                            tracing::error!(error = %e, "aborting the transaction on revocation");
                            txn.failed.store(true, Ordering::Relaxed);
                        }
                        // `txn.stuck` is set: the processing loop stops the service.
                        Err(e) => {
                            tracing::error!(error = %e, "aborting the transaction on revocation")
                        }
                    }
                }
                self.forget(revoked);
            }
            OnRevoke::KeepOffsets => {
                self.forget(revoked);
            }
            OnRevoke::CommitRevoked { drain_timeout } => {
                // Finish what is in flight for the revoked partitions: their alerts are
                // acknowledged (or time out), then their safe offsets are stored and committed
                // before we return.
                if let Err(e) = flush(&self.producer, *drain_timeout) {
                    tracing::warn!(error = %e, "drain on revocation timed out; uncommitted records will be re-read by the next owner");
                }
                let mut store = TopicPartitionList::new();
                for (tp, r) in self.forget(revoked) {
                    if let Some(next) = r.next {
                        let _ = store.add_partition_offset(
                            &tp.topic,
                            tp.partition,
                            Offset::Offset(next),
                        );
                    }
                }
                if store.count() > 0 {
                    if let Err(e) = consumer.store_offsets(&store) {
                        tracing::debug!(error = %e, "storing offsets of revoked partitions");
                    }
                    if let Err(e) = consumer.commit(&store, CommitMode::Sync) {
                        tracing::warn!(error = %e, "commit on revocation failed");
                    }
                }
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(assigned) = rebalance {
            self.metrics.rebalances.fetch_add(1, Ordering::Relaxed);
            let mut list = lock(&self.assigned);
            for elem in assigned.elements() {
                let tp = TopicPartition {
                    topic: elem.topic().to_owned(),
                    partition: elem.partition(),
                };
                // Newly ours: start clean (no credit left from a previous ownership), tracked
                // before its first record.
                self.offsets.assigned(&tp);
                if !list.iter().any(|(a, _)| *a == tp) {
                    list.push((tp, Instant::now()));
                }
            }
            tracing::info!(partitions = assigned.count(), "partitions assigned");
        }
    }
}
