//! Stage 2's durable state: checkpoints to, and restores from, the compacted changelog topic
//! `<group_id>-changelog` (partition r holds repartition partition r's state).
//!
//! Every `state.checkpoint_interval`, once every alert raised so far is acknowledged, each
//! partition's changed entries are written, then its own entry ([`PartMeta`]: how far it read,
//! what was still buffered, the newest origins and markers), last. Each entry carries the
//! checkpoint's sequence number in [`CHECKPOINT_HEADER`], so a checkpoint torn by a crash is
//! recognised at restore and the version before it is used. The partition's repartition
//! offsets are committed only once its checkpoint is acknowledged. Restoring reads the
//! changelog partition from the start on the processing thread (it blocks: bounded by
//! `state.restore_timeout`).

use super::Topology;
use crate::kafka::clients::restore_consumer;
use crate::kafka::emitter::{Emitter, Out};
use crate::kafka::offsets::TopicPartition;
use crate::telemetry::Metrics;
use crate::topology::stateful::Stateful;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A partition's own checkpoint metadata (changelog entry `META/2`).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct PartMeta {
    pub(super) max_read: i64,
    pub(super) buffered: Vec<i64>,
    pub(super) arrived: Vec<(i32, u8, i64, u32)>,
    /// This checkpoint's sequence number; every entry of it carries the same number in the
    /// [`CHECKPOINT_HEADER`] header (0 and absent in changelogs written before it existed).
    #[serde(default)]
    pub(super) seq: u64,
    /// The newest marker of each input partition (topic, partition, watermark, idle): without
    /// them a restored partition would count the input partitions it has not heard from again
    /// as idle after `partition_idle_timeout`, and its watermark could jump past their events.
    #[serde(default)]
    pub(super) marks: Vec<(String, i32, i64, bool)>,
}

/// Changelog record header: the sequence number of the checkpoint the entry belongs to. The
/// partition's own entry is written last, so a checkpoint torn by a crash is recognised at
/// restore: its entries carry a number above the last complete checkpoint's, and the version
/// before them is used (still in the log: compaction never touches the active segment).
pub const CHECKPOINT_HEADER: &str = "cloudwarden.checkpoint";

impl Topology {
    /// Every `state.checkpoint_interval`: write each partition's changed state to the changelog,
    /// acknowledged against the partition's checkpoint hold (so its offsets are committed only
    /// once the checkpoint is durable).
    /// Returns whether the state is checkpointed up to what was read (`false`: postponed).
    pub fn checkpoint(&mut self, em: &Emitter, metrics: &Metrics, force: bool) -> bool {
        let Some(changelog) = &self.changelog else {
            return true;
        };
        if !force && self.last_checkpoint.elapsed() < self.config.state.checkpoint_interval {
            return true;
        }
        self.last_checkpoint = Instant::now();
        if !self.parts.values().any(|p| p.cp_hold.is_some()) {
            return true;
        }
        // Every alert raised so far must be acknowledged before the state that raised it is
        // checkpointed: a restore skips the records behind the checkpoint.
        if !em.flush(self.config.service.drain_timeout) {
            tracing::warn!("checkpoint postponed: alerts not yet acknowledged");
            return false;
        }
        for (&r, part) in &mut self.parts {
            let Some(hold) = part.cp_hold.take() else {
                continue; // nothing read since the last checkpoint
            };
            let tp = Arc::new(TopicPartition {
                topic: self.topic.clone(),
                partition: r,
            });
            let mut entries = part.stateful.checkpoint();
            part.cp_seq += 1;
            let seq = part.cp_seq;
            let seq_header = seq.to_string();
            let meta = PartMeta {
                seq,
                max_read: part.max_read,
                buffered: part.reorder.iter().map(|p| p.offset).collect(),
                arrived: part
                    .arrived
                    .iter()
                    .map(|((s, t), (o, i))| (*s, *t, *o, *i))
                    .collect(),
                marks: part
                    .marks
                    .iter()
                    .map(|((t, p), m)| (t.clone(), *p, m.w, m.idle))
                    .collect(),
            };
            entries.push(crate::state::Entry {
                detector: crate::state::META,
                table: 2,
                key: 0,
                value: Some(crate::state::encode(0, &meta)),
            });
            let mut bytes = 0u64;
            for e in &entries {
                let key = e.record_key(r);
                bytes += (key.len() + e.value.as_ref().map_or(0, Vec::len)) as u64;
                em.send_to(Out {
                    topic: changelog,
                    partition: Some(r),
                    key: Some(key.as_bytes()),
                    payload: e.value.as_deref(),
                    header: Some((CHECKPOINT_HEADER, seq_header.as_bytes())),
                    source: Some((tp.clone(), hold)),
                });
            }
            em.offsets().release(&tp, hold, entries.len() as u32);
            metrics.checkpoints.fetch_add(1, Ordering::Relaxed);
            metrics.changelog_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
        true
    }
}

/// Reads changelog partition `partition` from the start and restores it into `stateful`.
/// Returns the partition's own checkpoint metadata, if any.
pub(super) fn restore_part(
    common: &[(String, String)],
    changelog: &str,
    partition: i32,
    timeout: Duration,
    stateful: &mut Stateful,
    metrics: &Metrics,
) -> Option<PartMeta> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    use rdkafka::{Offset, TopicPartitionList};
    let started = Instant::now();
    let consumer: BaseConsumer = match restore_consumer(common) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "restore consumer");
            return None;
        }
    };
    let (low, mut high) = consumer
        .fetch_watermarks(changelog, partition, Duration::from_secs(10))
        .unwrap_or((0, 0));
    if high <= low {
        return None;
    }
    let mut tpl = TopicPartitionList::new();
    let _ = tpl.add_partition_offset(changelog, partition, Offset::Beginning);
    if consumer.assign(&tpl).is_err() {
        return None;
    }
    drop(tpl);
    // Per key, the two versions of the highest checkpoint numbers (last write wins within one
    // checkpoint; tombstones remove): if the newest belongs to a checkpoint torn by a crash, the
    // one before it is what the last complete checkpoint holds.
    let mut versions: HashMap<Vec<u8>, KeyVersions> = HashMap::new();
    let mut next = low;
    let mut quiet_since = Instant::now();
    // At the end: the last record read, or the consumer's position past it (a transactional
    // changelog ends with a commit marker, which is never delivered but moves the position).
    let at_end = |next: i64, high: i64| {
        next >= high
            || consumer
                .position()
                .ok()
                .and_then(|p| {
                    p.find_partition(changelog, partition)
                        .and_then(|e| e.offset().to_raw())
                })
                .is_some_and(|pos| pos >= high)
    };
    while started.elapsed() < timeout {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                next = m.offset() + 1;
                quiet_since = Instant::now();
                if let Some(k) = m.key() {
                    let seq = m
                        .headers()
                        .and_then(|h| h.iter().find(|h| h.key == CHECKPOINT_HEADER))
                        .and_then(|h| std::str::from_utf8(h.value?).ok()?.parse().ok())
                        .unwrap_or(0u64);
                    versions
                        .entry(k.to_vec())
                        .or_default()
                        .push(seq, m.payload().map(<[u8]>::to_vec));
                }
            }
            Some(Err(e)) => tracing::warn!(error = %e, "restoring state"),
            None => {
                let quiet = quiet_since.elapsed();
                if quiet < Duration::from_millis(300) {
                    continue;
                }
                // A pause: the end offset read at the start may be stale (a broker can answer old
                // ones under load), so ask again before calling this the end: stopping early
                // would restore part of the state.
                if let Ok((_, h)) =
                    consumer.fetch_watermarks(changelog, partition, Duration::from_secs(10))
                {
                    high = high.max(h);
                }
                // Nothing more arrives although the broker says there is more (an end offset
                // that is stale the other way): stop waiting, reported below.
                if at_end(next, high) || quiet >= Duration::from_secs(5) {
                    break;
                }
            }
        }
    }
    if !at_end(next, high) {
        tracing::error!(
            partition,
            read = next,
            end = high,
            "state restore timed out; the rest starts fresh"
        );
        Metrics::add(&metrics.state_errors, "timeout", 1);
    }
    let mut meta = None;
    let mut restored = 0u64;
    // The last complete checkpoint: the newest partition entry (written last in each).
    let meta_key = crate::state::Entry {
        detector: crate::state::META,
        table: 2,
        key: 0,
        value: None,
    }
    .record_key(partition);
    let complete = versions
        .get(meta_key.as_bytes())
        .and_then(|v| v.newest.as_ref().map(|(seq, _)| *seq))
        .unwrap_or(0);
    let mut torn = 0u64;
    let mut entries: Vec<crate::state::Entry> = Vec::with_capacity(versions.len());
    for (k, v) in versions {
        let Some(v) = v.into_restored(complete, &mut torn) else {
            continue; // first written by the torn checkpoint
        };
        let Some((p, detector, table, key)) = crate::state::Entry::parse_record_key(&k) else {
            Metrics::add(&metrics.state_errors, "bad_key", 1);
            continue;
        };
        if p != partition {
            continue;
        }
        entries.push(crate::state::Entry {
            detector,
            table,
            key,
            value: v,
        });
    }
    if torn > 0 {
        tracing::warn!(
            partition,
            entries = torn,
            "the last checkpoint was torn by a crash: its entries are ignored, the one before is restored"
        );
        Metrics::add(&metrics.state_errors, "torn_checkpoint", torn);
    }
    // Time first (META), then keys.
    entries.sort_by_key(|e| std::cmp::Reverse(e.detector == crate::state::META));
    for e in &entries {
        if e.detector == crate::state::META && e.table == 2 {
            match e.value.as_deref().map(crate::state::decode::<PartMeta>) {
                Some(Ok((_, m))) => meta = Some(m),
                Some(Err(err)) => Metrics::add(&metrics.state_errors, err.reason(), 1),
                None => {}
            }
            continue;
        }
        match stateful.restore(e) {
            Ok(()) => restored += u64::from(e.value.is_some()),
            Err(err) => {
                tracing::warn!(partition, detector = e.detector, table = e.table, key = e.key, error = %err, "state entry skipped; its key starts fresh");
                Metrics::add(&metrics.state_errors, err.reason(), 1);
            }
        }
    }
    metrics
        .state_restored
        .fetch_add(restored, Ordering::Relaxed);
    tracing::info!(
        partition,
        entries = restored,
        ms = started.elapsed().as_millis() as u64,
        "state restored"
    );
    meta
}

/// The two newest versions of one changelog key, by checkpoint number.
#[derive(Default)]
struct KeyVersions {
    newest: Option<(u64, Option<Vec<u8>>)>,
    before: Option<(u64, Option<Vec<u8>>)>,
}

impl KeyVersions {
    fn push(&mut self, seq: u64, value: Option<Vec<u8>>) {
        match &self.newest {
            Some((s, _)) if seq < *s => {
                if self.before.as_ref().is_none_or(|(b, _)| seq >= *b) {
                    self.before = Some((seq, value));
                }
            }
            Some((s, _)) if seq == *s => self.newest = Some((seq, value)),
            _ => self.before = self.newest.replace((seq, value)),
        }
    }

    /// The value as of checkpoint `complete` (`None`: the key did not exist then), counting
    /// versions skipped because a later, torn checkpoint wrote them.
    fn into_restored(self, complete: u64, torn: &mut u64) -> Option<Option<Vec<u8>>> {
        match self.newest {
            Some((s, v)) if s <= complete => Some(v),
            Some(_) => {
                *torn += 1;
                self.before.filter(|(b, _)| *b <= complete).map(|(_, v)| v)
            }
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::KeyVersions;

    fn restore(writes: &[(u64, Option<&str>)], complete: u64) -> (Option<Option<String>>, u64) {
        let mut v = KeyVersions::default();
        for (seq, value) in writes {
            v.push(*seq, value.map(|s| s.as_bytes().to_vec()));
        }
        let mut torn = 0;
        let got = v
            .into_restored(complete, &mut torn)
            .map(|o| o.map(|b| String::from_utf8(b).unwrap()));
        (got, torn)
    }

    #[test]
    fn a_torn_checkpoint_falls_back_to_the_version_before() {
        // Complete checkpoints 1 and 2; checkpoint 3 was torn (its partition entry missing).
        assert_eq!(
            restore(&[(1, Some("a")), (2, Some("b")), (3, Some("c"))], 2),
            (Some(Some("b".into())), 1)
        );
        assert_eq!(
            restore(&[(1, Some("a")), (2, Some("b"))], 2),
            (Some(Some("b".into())), 0)
        );
        // First written by the torn checkpoint: the key did not exist.
        assert_eq!(restore(&[(3, Some("c"))], 2), (None, 1));
        // A tombstone in a complete checkpoint removes; in a torn one it is ignored.
        assert_eq!(restore(&[(1, Some("a")), (2, None)], 2), (Some(None), 0));
        assert_eq!(
            restore(&[(1, Some("a")), (3, None)], 2),
            (Some(Some("a".into())), 1)
        );
        // Within one checkpoint the last write wins; a re-sent older write never replaces a newer.
        assert_eq!(
            restore(&[(2, Some("x")), (2, Some("y")), (1, Some("a"))], 2),
            (Some(Some("y".into())), 0)
        );
        // Changelogs written before checkpoint numbers: all 0, last write wins.
        assert_eq!(
            restore(&[(0, Some("a")), (0, Some("b"))], 0),
            (Some(Some("b".into())), 0)
        );
    }
}
