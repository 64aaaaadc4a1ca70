//! The delivery guarantee in force, and the hooks the processing loop calls.
//!
//! One of three (chosen at start from `processing.guarantee`, `state.snapshot_path` and
//! `repartition.enabled`); the loop never tests a mode flag, it calls the hooks:
//!
//! - [`Guarantee::AtLeastOnce`]: commit after the effect. Automatic offset storing is off;
//!   offsets that [`Offsets`](super::offsets::Offsets) says are ready (every message of the
//!   records before them acknowledged) are stored, and the auto-committer commits them every
//!   `service.commit_interval`. With durable state, stage 2 checkpoints to the changelog every
//!   `state.checkpoint_interval` and its offsets wait for the checkpoint.
//! - [`Guarantee::SnapshotFile`] (`snapshot_file.rs`): a single node keeps the engine's state in
//!   a local file; offsets are committed only from the file's durable batches.
//! - [`Guarantee::ExactlyOnce`] (`transactions.rs`): one transactional producer; alerts, dead
//!   letters, repartition and changelog records and the input offsets commit together every
//!   `processing.transaction_interval`; a failure aborts and rewinds to the last commit.
//!
//! What a revocation must do first runs inside the rebalance callback
//! ([`OnRevoke`](super::rebalance::OnRevoke)), given by [`Guarantee::on_revoke`].

mod snapshot_file;
mod transactions;

use super::clock::Clocks;
use super::emitter::{Emitter, Transaction};
use super::error::ServiceError;
use super::offsets::{Revoked, TopicPartition};
use super::rebalance::{ConsumerCtx, OnRevoke};
use super::repartition::Topology;
use crate::config::Config;
use crate::engine::Engine;
use crate::telemetry::Metrics;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use snapshot_file::SnapshotFile;
pub use transactions::Transactions;

/// The guarantee in force.
// One per service, made once and never moved on the hot path: the size difference is moot.
#[allow(clippy::large_enum_variant)]
pub enum Guarantee {
    AtLeastOnce,
    SnapshotFile(SnapshotFile),
    ExactlyOnce(Transactions),
}

/// What the hooks work on: the consumer and the processing parts.
pub struct Parts<'a> {
    pub consumer: &'a BaseConsumer<ConsumerCtx>,
    /// The repartitioned topology, when it runs.
    pub topology: Option<&'a mut Topology>,
    /// The in-process engine, when it runs.
    pub engine: Option<&'a mut Engine>,
    pub em: &'a mut Emitter,
    /// The input partitions' clocks (a rewind reads every partition again).
    pub clocks: &'a mut Clocks,
    pub config: &'a Config,
    pub metrics: &'a Metrics,
}

/// What the loop must do after [`Guarantee::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Handle the polled record.
    Go,
    /// The state was rewound: drop the polled record (it is read again) and poll anew.
    Rewound,
}

impl Guarantee {
    /// The guarantee the config asks for. Exactly-once initialises the transactional producer
    /// (fencing a predecessor with the same id) and opens the first transaction; the snapshot
    /// file is opened and `engine` restored from it.
    pub fn new(
        config: &Config,
        em: &Emitter,
        engine: Option<&mut Engine>,
        metrics: &Metrics,
    ) -> Result<Guarantee, ServiceError> {
        if config.processing.exactly_once() {
            return Ok(Guarantee::ExactlyOnce(Transactions::begin(config, em)?));
        }
        match engine {
            Some(engine) if !config.state.snapshot_path.is_empty() => Ok(Guarantee::SnapshotFile(
                SnapshotFile::open(config, engine, metrics)?,
            )),
            _ => Ok(Guarantee::AtLeastOnce),
        }
    }

    /// The transaction flags exactly-once shares with the producer and the rebalance callback
    /// (made before the clients, which hold them).
    pub fn transaction_for(config: &Config) -> Option<Arc<Transaction>> {
        config
            .processing
            .exactly_once()
            .then(|| Arc::new(Transaction::default()))
    }

    /// What a revocation must finish first.
    pub fn on_revoke(config: &Config, txn: Option<&Arc<Transaction>>) -> OnRevoke {
        match txn {
            Some(txn) => OnRevoke::AbortTransaction {
                txn: txn.clone(),
                timeout: config.processing.transaction_call_timeout,
            },
            None if !config.repartition.enabled && !config.state.snapshot_path.is_empty() => {
                OnRevoke::KeepOffsets
            }
            None => OnRevoke::CommitRevoked {
                drain_timeout: config.service.drain_timeout,
            },
        }
    }

    /// A record is about to be processed: records below the snapshot file's offsets are
    /// already in the state (`true`: skip it).
    pub fn skip(&mut self, tp: &TopicPartition, offset: i64) -> bool {
        match self {
            Guarantee::SnapshotFile(f) => f.skip(tp, offset),
            Guarantee::ExactlyOnce(t) => {
                t.processing();
                false
            }
            Guarantee::AtLeastOnce => false,
        }
    }

    /// A partition was revoked (the snapshot file remembers how far the engine got).
    pub fn revoked(&mut self, tp: TopicPartition, r: Revoked) {
        if let Guarantee::SnapshotFile(f) = self {
            f.revoked(tp, r);
        }
    }

    /// Before handling a polled record: exactly-once rewinds when the open transaction failed
    /// or was aborted on revocation.
    pub fn check(&mut self, parts: Parts<'_>) -> Result<Flow, ServiceError> {
        match self {
            Guarantee::ExactlyOnce(t) if t.stuck() => Err(t.stuck_error()),
            Guarantee::ExactlyOnce(t) if t.must_rewind() => {
                t.abort_and_rewind(parts, "a message of the transaction was not delivered")?;
                Ok(Flow::Rewound)
            }
            _ => Ok(Flow::Go),
        }
    }

    /// Every loop iteration: checkpoint and store (at-least-once), append to the snapshot file,
    /// or commit the transaction when their intervals are due.
    pub fn tick(&mut self, parts: Parts<'_>) -> Result<(), ServiceError> {
        match self {
            Guarantee::AtLeastOnce => {
                if let Some(t) = parts.topology {
                    t.checkpoint(parts.em, parts.metrics, false);
                }
                store_ready(parts.consumer, parts.em);
                Ok(())
            }
            Guarantee::SnapshotFile(f) => f.append(parts, false),
            Guarantee::ExactlyOnce(t) => t.commit_if_due(parts),
        }
    }

    /// At shutdown, after the merging beats were sent: the last checkpoint, snapshot or
    /// transaction, and the final commit.
    pub fn shutdown(&mut self, mut parts: Parts<'_>) {
        if let Guarantee::ExactlyOnce(t) = self {
            if let Err(e) = t.commit(parts) {
                tracing::error!(error = %e, "last transaction");
            }
            return;
        }
        // A last checkpoint, so the next owner restores everything this one processed.
        if let Some(t) = parts.topology.as_deref_mut() {
            t.checkpoint(parts.em, parts.metrics, true);
        }
        drain(parts.em, parts.config.service.drain_timeout);
        let consumer = parts.consumer;
        match self {
            Guarantee::SnapshotFile(f) => {
                if let Err(e) = f.append(parts, true) {
                    tracing::error!(error = %e, "last snapshot");
                }
            }
            _ => store_ready(consumer, parts.em),
        }
        if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(error = %e, "final commit");
        }
    }
}

/// Sends again what failed and waits for every acknowledgement, bounded by `timeout`.
fn drain(em: &Emitter, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        em.resend_failed();
        let _ = super::emitter::flush(em.producer(), Duration::from_millis(200));
        let pending = em.offsets().in_flight() + em.retries_pending();
        if pending == 0 || Instant::now() >= deadline {
            if pending > 0 {
                tracing::warn!(pending, "drain timed out; those records will be read again");
            }
            break;
        }
    }
}

/// The offsets in a list for the consumer.
fn offset_list(ready: &[(TopicPartition, i64)]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for (tp, next) in ready {
        let _ = tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*next));
    }
    tpl
}

/// Stores the offsets that are ready, for the auto-committer.
fn store_ready(consumer: &BaseConsumer<ConsumerCtx>, em: &Emitter) {
    let ready = em.offsets().ready();
    if ready.is_empty() {
        return;
    }
    if let Err(e) = consumer.store_offsets(&offset_list(&ready)) {
        // `__STATE` after a revocation: the partition is no longer ours.
        tracing::debug!(error = %e, "store_offsets");
    }
}
