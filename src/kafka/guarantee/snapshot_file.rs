//! The engine's state in a local file (`state.snapshot_path`), for a single node without the
//! repartition step.
//!
//! The file is the truth for both state and offsets: a batch holds the state changes and the
//! input offsets they reflect, and offsets are committed only from a durable batch, so the
//! group's committed offsets never run ahead of the file. Records below the file's offsets
//! (committed offsets lag the file after a crash between append and commit) are skipped.

use super::{offset_list, Parts};
use crate::config::Config;
use crate::engine::Engine;
use crate::kafka::error::ServiceError;
use crate::kafka::offsets::{Revoked, TopicPartition};
use crate::state::snapshot::SnapshotLog;
use crate::telemetry::Metrics;
use rdkafka::consumer::Consumer;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

pub struct SnapshotFile {
    log: SnapshotLog,
    /// Next offset per input partition as of the file (or as processed before a revocation);
    /// records below are already in the state.
    restored: HashMap<TopicPartition, i64>,
    /// The offset last written to the file per partition: a batch never writes a lower one.
    written: HashMap<TopicPartition, i64>,
    last: Instant,
}

impl SnapshotFile {
    /// Opens (or creates) the snapshot file and restores the engine from it.
    pub fn open(
        config: &Config,
        engine: &mut Engine,
        metrics: &Metrics,
    ) -> Result<SnapshotFile, ServiceError> {
        let path = std::path::Path::new(&config.state.snapshot_path);
        let (log, loaded) = SnapshotLog::open(path)
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
        Ok(SnapshotFile {
            log,
            written: restored.clone(),
            restored,
            last: Instant::now(),
        })
    }

    /// Whether the record is already in the restored state (read again: the commit lagged).
    pub(super) fn skip(&mut self, tp: &TopicPartition, offset: i64) -> bool {
        if let Some(&next) = self.restored.get(tp) {
            if offset < next {
                return true;
            }
            self.restored.remove(tp);
        }
        false
    }

    /// A revoked partition's records up to where it was processed are in the engine's state:
    /// skipped if it comes back.
    pub(super) fn revoked(&mut self, tp: TopicPartition, r: Revoked) {
        if let Some(until) = r.processed_until {
            let e = self.restored.entry(tp).or_insert(until);
            *e = (*e).max(until);
        }
    }

    /// Every `state.checkpoint_interval` (and at shutdown, `force`): once every alert raised so
    /// far is acknowledged, appends the engine's changed state with the offsets it reflects,
    /// then stores those offsets for commit. A failed write stops the service: the restart
    /// resumes from the file's last complete batch.
    pub(super) fn append(&mut self, parts: Parts<'_>, force: bool) -> Result<(), ServiceError> {
        let interval = parts.config.state.checkpoint_interval;
        if !force && self.last.elapsed() < interval {
            return Ok(());
        }
        self.last = Instant::now();
        let Some(engine) = parts.engine else {
            return Ok(());
        };
        // The state reflects every processed record; the offsets must too.
        if !parts.em.flush(parts.config.service.drain_timeout) {
            tracing::warn!("snapshot postponed: alerts not yet acknowledged");
            return Ok(());
        }
        let mut ready = parts.em.offsets().ready();
        // After a revocation and re-assignment the tracker starts again below the file's offset
        // (the skipped records): never move the file back.
        ready.retain(|(tp, next)| match self.written.get(tp) {
            Some(w) if *w >= *next => false,
            _ => {
                self.written.insert(tp.clone(), *next);
                true
            }
        });
        let offsets: Vec<(String, i32, i64)> = ready
            .iter()
            .map(|(tp, next)| (tp.topic.clone(), tp.partition, *next))
            .collect();
        let entries = engine.checkpoint();
        let bytes = self.log.append(&entries, &offsets)?;
        let m = parts.metrics;
        m.checkpoints.fetch_add(1, Ordering::Relaxed);
        m.snapshot_bytes
            .store(self.log.file_bytes(), Ordering::Relaxed);
        tracing::debug!(entries = entries.len(), bytes, "snapshot written");
        if !ready.is_empty() {
            if let Err(e) = parts.consumer.store_offsets(&offset_list(&ready)) {
                tracing::debug!(error = %e, "store_offsets");
            }
        }
        Ok(())
    }
}
