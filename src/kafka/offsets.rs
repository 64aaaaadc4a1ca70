//! Offset tracking for at-least-once: which input offset may be stored (and so committed).
//!
//! A record is *done* when it is processed and every message it caused (alerts, dead letters)
//! is acknowledged by the broker. The offset to store for a partition is the first offset that is
//! not done; everything before it is safe to skip after a restart. Records that caused nothing
//! are done as soon as they are processed. Offsets are "next to consume" (last done + 1), the
//! form `store_offsets` and `commit` take.
//!
//! [`OffsetTracker`] is a pure data structure, no Kafka, tested on its own. [`Offsets`] is the
//! one owner of "commit after effect" in the service: every part of it that learns something
//! about a record's effects says so here, in the domain's words (a record is *done* with the
//! messages it caused, *buffered* until the watermark releases it, a message is *acked*, a
//! partition is *assigned* or *revoked*), and the guarantee in force takes what is *ready* to
//! store or commit. Nothing else touches the tracker.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

/// A topic partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

#[derive(Debug, Default)]
struct PartitionState {
    /// Offsets with acknowledgements still outstanding → how many. Negative: acknowledgements
    /// that arrived before the record was registered as processed (the producer serves delivery
    /// reports while a send waits for queue space, in the middle of a record).
    pending: BTreeMap<i64, i32>,
    /// The largest offset processed.
    max_processed: Option<i64>,
    /// Offsets read but not processed yet (stage 2's reorder buffer): not counted as in flight
    /// (they wait for the watermark, not for the broker), but never committed past.
    held: BTreeMap<i64, u32>,
    /// The last next-offset handed out by `take_ready`.
    stored: Option<i64>,
}

impl PartitionState {
    fn next_offset(&self) -> Option<i64> {
        let first_pending = self.pending.iter().find(|(_, n)| **n > 0).map(|(o, _)| *o);
        let first_held = self.held.keys().next().copied();
        match (first_pending, first_held) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (Some(a), None) | (None, Some(a)) => Some(a),
            (None, None) => self.max_processed.map(|m| m + 1),
        }
    }
}

/// Per-partition pending acknowledgements.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<TopicPartition, PartitionState>,
    in_flight: usize,
}

impl OffsetTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// The record at `offset` was processed and caused `messages` messages whose acknowledgements
    /// are awaited.
    pub fn processed(&mut self, tp: &TopicPartition, offset: i64, messages: u32) {
        let state = match self.partitions.get_mut(tp) {
            Some(s) => s,
            None => self.partitions.entry(tp.clone()).or_default(),
        };
        state.max_processed = Some(state.max_processed.map_or(offset, |m| m.max(offset)));
        if messages > 0 {
            let n = state.pending.entry(offset).or_insert(0);
            let before = (*n).max(0);
            *n += messages as i32;
            let after = (*n).max(0);
            if *n == 0 {
                state.pending.remove(&offset);
            }
            self.in_flight += (after - before) as usize;
        }
    }

    /// One message caused by the record at `offset` was acknowledged (or failed for good and was
    /// handled: the caller decides). An acknowledgement can arrive before `processed` registers
    /// the record (it is then credited); unknown partitions (revoked) are ignored.
    pub fn acked(&mut self, tp: &TopicPartition, offset: i64) {
        let Some(state) = self.partitions.get_mut(tp) else {
            return;
        };
        let n = state.pending.entry(offset).or_insert(0);
        let before = (*n).max(0);
        *n -= 1;
        let after = (*n).max(0);
        if *n == 0 {
            state.pending.remove(&offset);
        }
        self.in_flight = self.in_flight.saturating_sub((before - after) as usize);
    }

    /// Starts tracking a partition (before its first record sends anything, so an early
    /// acknowledgement is credited rather than ignored).
    pub fn touch(&mut self, tp: &TopicPartition) {
        if !self.partitions.contains_key(tp) {
            self.partitions
                .insert(tp.clone(), PartitionState::default());
        }
    }

    /// The record at `offset` was read and is held (buffered) until [`OffsetTracker::release`].
    pub fn hold(&mut self, tp: &TopicPartition, offset: i64) {
        let state = match self.partitions.get_mut(tp) {
            Some(s) => s,
            None => self.partitions.entry(tp.clone()).or_default(),
        };
        *state.held.entry(offset).or_insert(0) += 1;
    }

    /// A held record was processed (its own messages are tracked by `processed`).
    pub fn release(&mut self, tp: &TopicPartition, offset: i64) {
        let Some(state) = self.partitions.get_mut(tp) else {
            return;
        };
        if let Some(n) = state.held.get_mut(&offset) {
            *n -= 1;
            if *n == 0 {
                state.held.remove(&offset);
            }
        }
    }

    /// Partitions whose storable next-offset moved since the last call, with that offset.
    pub fn take_ready(&mut self) -> Vec<(TopicPartition, i64)> {
        let mut out = Vec::new();
        for (tp, state) in &mut self.partitions {
            if let Some(next) = state.next_offset() {
                if state.stored.is_none_or(|s| next > s) {
                    state.stored = Some(next);
                    out.push((tp.clone(), next));
                }
            }
        }
        out.sort();
        out
    }

    /// The storable next-offset of one partition, if any record of it was processed.
    pub fn next_offset(&self, tp: &TopicPartition) -> Option<i64> {
        self.partitions
            .get(tp)
            .and_then(PartitionState::next_offset)
    }

    /// One past the largest offset of `tp` processed, acknowledged or not.
    pub fn processed_until(&self, tp: &TopicPartition) -> Option<i64> {
        self.partitions
            .get(tp)
            .and_then(|s| s.max_processed)
            .map(|m| m + 1)
    }

    /// Whether `tp` still waits for acknowledgements.
    pub fn has_pending(&self, tp: &TopicPartition) -> bool {
        self.partitions
            .get(tp)
            .is_some_and(|s| s.pending.values().any(|n| *n > 0))
    }

    /// Forgets a partition (revoked or lost).
    pub fn remove(&mut self, tp: &TopicPartition) {
        if let Some(state) = self.partitions.remove(tp) {
            let n: i64 = state.pending.values().map(|n| i64::from((*n).max(0))).sum();
            self.in_flight = self.in_flight.saturating_sub(n as usize);
        }
    }

    /// Messages awaiting acknowledgement, over all partitions.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }
}

/// How far a revoked partition got, as its tracking is dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Revoked {
    /// The storable next offset (every record before it is done).
    pub next: Option<i64>,
    /// One past the largest offset processed, acknowledged or not.
    pub processed_until: Option<i64>,
}

/// The service's offset bookkeeping, shared by the processing loop, the delivery callback and
/// the rebalance callback. They all run on the processing thread (librdkafka serves callbacks
/// inside `poll`), so the lock is never contended; it is only there because the callbacks reach
/// it through `&self`.
#[derive(Debug, Default)]
pub struct Offsets {
    tracker: Mutex<OffsetTracker>,
}

impl Offsets {
    fn lock(&self) -> MutexGuard<'_, OffsetTracker> {
        // A panic while holding it leaves plain counters behind: still usable.
        self.tracker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The record at `offset` is processed; `messages` messages it caused await acknowledgement.
    pub fn done(&self, tp: &TopicPartition, offset: i64, messages: u32) {
        self.lock().processed(tp, offset, messages);
    }

    /// The record at `offset` was read and waits (reorder buffer, a merging summary, a
    /// checkpoint): nothing at or past it is committed until [`Offsets::release`].
    pub fn buffer(&self, tp: &TopicPartition, offset: i64) {
        self.lock().hold(tp, offset);
    }

    /// A buffered record is processed, having caused `messages` messages.
    pub fn release(&self, tp: &TopicPartition, offset: i64, messages: u32) {
        let mut t = self.lock();
        t.processed(tp, offset, messages);
        t.release(tp, offset);
    }

    /// One message caused by the record at `offset` was acknowledged by the broker.
    pub fn acked(&self, tp: &TopicPartition, offset: i64) {
        self.lock().acked(tp, offset);
    }

    /// A partition became ours: tracked from a clean start, before its first record.
    pub fn assigned(&self, tp: &TopicPartition) {
        let mut t = self.lock();
        t.remove(tp);
        t.touch(tp);
    }

    /// A partition is no longer ours: its tracking goes, with how far it got.
    pub fn revoked(&self, tp: &TopicPartition) -> Revoked {
        let mut t = self.lock();
        let r = Revoked {
            next: t.next_offset(tp),
            processed_until: t.processed_until(tp),
        };
        t.remove(tp);
        r
    }

    /// Partitions whose storable next offset moved since the last call, with that offset.
    pub fn ready(&self) -> Vec<(TopicPartition, i64)> {
        self.lock().take_ready()
    }

    /// Messages awaiting acknowledgement.
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_acknowledgement_before_registration_is_credited() {
        let tp = TopicPartition {
            topic: "in".into(),
            partition: 0,
        };
        let mut t = OffsetTracker::new();
        t.processed(&tp, 0, 0);
        // Record 1 sends 3 messages; one is acknowledged while the others are still being sent.
        t.acked(&tp, 1);
        t.processed(&tp, 1, 3);
        assert_eq!(t.in_flight(), 2);
        assert_eq!(t.next_offset(&tp), Some(1));
        t.acked(&tp, 1);
        t.acked(&tp, 1);
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.next_offset(&tp), Some(2));
    }

    #[test]
    fn held_records_block_the_commit_but_not_backpressure() {
        let tp = TopicPartition {
            topic: "rep".into(),
            partition: 0,
        };
        let mut t = OffsetTracker::new();
        t.processed(&tp, 0, 0);
        t.hold(&tp, 1);
        t.processed(&tp, 1, 0);
        t.processed(&tp, 2, 0);
        assert_eq!(t.next_offset(&tp), Some(1));
        assert_eq!(t.in_flight(), 0);
        // Released with one alert to acknowledge.
        t.processed(&tp, 1, 1);
        t.release(&tp, 1);
        assert_eq!(t.next_offset(&tp), Some(1));
        t.acked(&tp, 1);
        assert_eq!(t.next_offset(&tp), Some(3));
    }
    use proptest::prelude::*;

    fn tp(p: i32) -> TopicPartition {
        TopicPartition {
            topic: "in".into(),
            partition: p,
        }
    }

    #[test]
    fn stores_only_past_fully_acknowledged_prefixes() {
        let mut t = OffsetTracker::new();
        t.processed(&tp(0), 10, 0);
        assert_eq!(t.take_ready(), vec![(tp(0), 11)]);
        t.processed(&tp(0), 11, 2); // two alerts
        t.processed(&tp(0), 12, 0);
        t.processed(&tp(0), 13, 1);
        assert_eq!(t.take_ready(), vec![], "11 is not done");
        t.acked(&tp(0), 11);
        t.acked(&tp(0), 13);
        assert_eq!(t.take_ready(), vec![], "11 still waits for one ack");
        t.acked(&tp(0), 11);
        assert_eq!(t.take_ready(), vec![(tp(0), 14)]);
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn partitions_are_independent_and_removal_forgets() {
        let mut t = OffsetTracker::new();
        t.processed(&tp(0), 5, 1);
        t.processed(&tp(1), 7, 0);
        // Partition 0 may only resume at 5 (its record still waits); partition 1 is past 7.
        assert_eq!(t.take_ready(), vec![(tp(0), 5), (tp(1), 8)]);
        assert!(t.has_pending(&tp(0)));
        t.remove(&tp(0));
        assert_eq!(t.in_flight(), 0);
        t.acked(&tp(0), 5); // a late ack for a revoked partition: ignored
        assert_eq!(t.take_ready(), vec![]);
    }

    proptest! {
        /// Whatever order acks arrive in, the stored offset never passes a record that still
        /// waits for an ack, and ends one past the last record once all are acked.
        #[test]
        fn never_stores_past_an_unacked_record(
            messages in proptest::collection::vec(0u32..3, 1..40),
            order in proptest::collection::vec(any::<prop::sample::Index>(), 0..120),
        ) {
            let mut t = OffsetTracker::new();
            let mut outstanding: Vec<i64> = Vec::new();
            for (offset, &m) in messages.iter().enumerate() {
                t.processed(&tp(0), offset as i64, m);
                for _ in 0..m { outstanding.push(offset as i64); }
            }
            let mut stored = None;
            for idx in order {
                if outstanding.is_empty() { break; }
                let i = idx.index(outstanding.len());
                let off = outstanding.swap_remove(i);
                t.acked(&tp(0), off);
                for (_, next) in t.take_ready() { stored = Some(next); }
                if let (Some(s), Some(min)) = (stored, outstanding.iter().min()) {
                    prop_assert!(s <= *min, "stored {s} past unacked {min}");
                }
            }
            for off in outstanding.drain(..) { t.acked(&tp(0), off); }
            for (_, next) in t.take_ready() { stored = Some(next); }
            prop_assert_eq!(stored, Some(messages.len() as i64));
            prop_assert_eq!(t.in_flight(), 0);
        }
    }
}
