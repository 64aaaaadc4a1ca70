//! Stage 2, on repartition partitions: one `Stateful` per partition (windows, baselines,
//! suppression), fed in event-time order.
//!
//! A partition's watermark is [`combine`] over the latest marker of every input partition,
//! never going back. Events and region sightings for the stateful detectors wait in a
//! [`Reorder`] buffer until the watermark passes them and are then processed in (event time,
//! origin) order, so the detectors see the same sequence whatever the number of instances;
//! stateless detectors run on arrival (an alert on StopLogging must not wait). Beats merge per
//! pane and are applied when the watermark closes the pane. Sigma hits (for the correlation
//! rules) wait in the same buffer and reach [`Stateful::sigma_hit`] in the same order.
//!
//! Offsets: a repartition record is done once it left the reorder buffer and its alerts are
//! acknowledged and, with durable state, once a checkpoint that contains it is acknowledged. A
//! partition is restored from its changelog partition at first use; records the checkpoint
//! already contains are skipped, and records stage 1 sent again after its own restart are
//! recognised by their origin (per stream) and skipped too.

use super::changelog::restore_part;
use super::Topology;
use crate::detect::DetectorSet;
use crate::kafka::clock::{combine, InputTime};
use crate::kafka::emitter::Emitter;
use crate::kafka::offsets::TopicPartition;
use crate::telemetry::Metrics;
use crate::topology::reorder::Reorder;
use crate::topology::stateful::Stateful;
use crate::topology::wire::{self, Item};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A buffered repartition record (re-decoded when released: cheaper than owning an event).
pub(super) struct Pending {
    bytes: Vec<u8>,
    pub(super) offset: i64,
    /// The detectors still to run (the stateless ones ran on arrival).
    detectors: DetectorSet,
}

/// The latest marker of one input partition.
#[derive(Debug, Clone, Copy)]
pub(super) struct MarkState {
    pub(super) w: i64,
    pub(super) idle: bool,
}

/// Stage 2 of one repartition partition.
pub(super) struct Part {
    pub(super) stateful: Stateful,
    immediate: DetectorSet,
    pub(super) reorder: Reorder<Pending>,
    pub(super) marks: HashMap<(String, i32), MarkState>,
    assigned_at: Instant,
    pub(super) watermark: i64,
    /// The highest repartition offset read.
    pub(super) max_read: i64,
    /// The first repartition offset read since the last checkpoint, buffered in the offset
    /// bookkeeping until that checkpoint is acknowledged (durable state only).
    pub(super) cp_hold: Option<i64>,
    /// Per input slot, the newest origin (offset, index) that reached this partition: a record
    /// re-sent by stage 1 after a crash is recognised and skipped.
    pub(super) arrived: HashMap<(i32, u8), (i64, u32)>,
    /// What the restored checkpoint already contains: records up to this offset, except the
    /// ones that were still buffered (the set). Dropped once reading passes the offset.
    restored: Option<(i64, HashSet<i64>)>,
    /// The sequence number of the last checkpoint written (restored from the changelog).
    pub(super) cp_seq: u64,
}

impl Topology {
    /// Stage 2: one repartition record. Returns the messages it caused, for the record's own
    /// offset (alerts of released buffered records are tracked against their offsets).
    pub fn stage2(
        &mut self,
        em: &mut Emitter,
        tp: &Arc<TopicPartition>,
        offset: i64,
        payload: &[u8],
        resent_by_us: bool,
        metrics: &Metrics,
    ) -> u32 {
        if !self.parts.contains_key(&tp.partition) {
            let mut stateful = Stateful::from_valid(&self.config);
            let mut restored = None;
            if let Some(changelog) = &self.changelog {
                stateful.track_changes();
                metrics.ready.store(false, Ordering::Relaxed);
                restored = restore_part(
                    &self.common,
                    changelog,
                    tp.partition,
                    self.config.state.restore_timeout,
                    &mut stateful,
                    metrics,
                );
            }
            let mut part = Part {
                immediate: stateful.immediate(),
                watermark: stateful.watermark(),
                stateful,
                reorder: Reorder::new(self.config.repartition.max_buffered),
                marks: HashMap::new(),
                assigned_at: Instant::now(),
                max_read: -1,
                cp_hold: None,
                cp_seq: 0,
                arrived: HashMap::new(),
                restored: None,
            };
            if let Some(meta) = restored {
                part.arrived = meta
                    .arrived
                    .iter()
                    .map(|(s, t, o, i)| ((*s, *t), (*o, *i)))
                    .collect();
                part.cp_seq = meta.seq;
                for (t, p, w, idle) in meta.marks {
                    let key = (t, p);
                    if !self.input_partitions.contains(&key) {
                        self.input_partitions.push(key.clone());
                    }
                    part.marks.insert(key, MarkState { w, idle });
                }
                part.restored = Some((meta.max_read, meta.buffered.into_iter().collect()));
            }
            self.parts.insert(tp.partition, part);
        }
        let part = self.parts.get_mut(&tp.partition).expect("inserted above");
        // Read before the restored checkpoint: already in the state (skip it), unless it was
        // still buffered then (process it again).
        let was_buffered = match &part.restored {
            Some((max_read, buffered)) if offset <= *max_read => {
                if !buffered.contains(&offset) {
                    return 0;
                }
                true
            }
            Some(_) => {
                part.restored = None;
                false
            }
            None => false,
        };
        part.max_read = part.max_read.max(offset);
        if self.changelog.is_some() && part.cp_hold.is_none() {
            em.offsets().buffer(tp, offset);
            part.cp_hold = Some(offset);
        }
        let alerts = &mut self.alerts;
        alerts.clear();
        let item = match wire::decode(payload) {
            Ok(item) => item,
            Err(e) => {
                tracing::warn!(partition = tp.partition, offset, error = %e, "skipping repartition record");
                Metrics::add(&metrics.repartition_errors, e.reason(), 1);
                return 0;
            }
        };
        match item {
            Item::Event {
                detectors,
                late,
                origin,
                ev,
            } => {
                if !was_buffered
                    && !resent_by_us
                    && resent(
                        &mut part.arrived,
                        event_stream(detectors, self.scope_keyed),
                        origin,
                    )
                {
                    return 0;
                }
                // Buffered at the checkpoint: its stateless detectors ran on arrival, and their
                // alerts and suppression counts are in the checkpoint already.
                let detectors = if was_buffered {
                    DetectorSet(detectors.0 & !part.immediate.0)
                } else {
                    detectors
                };
                if detectors.is_empty() {
                    return 0;
                }
                if late || ev.time < part.watermark {
                    part.stateful.event(&ev, None, detectors, true, alerts);
                } else {
                    // Stateless detectors now (an alert on StopLogging must not wait for the
                    // watermark); the stateful ones in event-time order.
                    let now = DetectorSet(detectors.0 & part.immediate.0);
                    let later = DetectorSet(detectors.0 & !part.immediate.0);
                    if !now.is_empty() {
                        part.stateful.event(&ev, None, now, false, alerts);
                    }
                    if !later.is_empty() {
                        buffer(part, em, tp, offset, payload, ev.time, origin, later);
                    }
                }
            }
            Item::Region(r, origin) => {
                if !was_buffered && !resent_by_us && resent(&mut part.arrived, REGIONS, origin) {
                    return 0;
                }
                if r.time < part.watermark {
                    part.stateful.region(&r);
                } else {
                    let none = DetectorSet::default();
                    buffer(part, em, tp, offset, payload, r.time, origin, none);
                }
            }
            Item::Hit(hit) => {
                if !was_buffered && !resent_by_us && resent(&mut part.arrived, HITS, hit.origin) {
                    return 0;
                }
                if hit.late || hit.time < part.watermark {
                    // Counted as late by the correlations (their state skips it).
                    part.stateful.sigma_hit(&hit, alerts);
                } else {
                    let none = DetectorSet::default();
                    buffer(part, em, tp, offset, payload, hit.time, hit.origin, none);
                }
            }
            Item::Beat(b) => part.stateful.beat(&b, alerts),
            Item::Markers(marks) => {
                for m in marks {
                    let key = (m.t.into_owned(), m.p);
                    if !self.input_partitions.contains(&key) {
                        self.input_partitions.push(key.clone());
                    }
                    let state = part.marks.entry(key).or_insert(MarkState {
                        w: i64::MIN,
                        idle: m.i,
                    });
                    state.w = state.w.max(m.w);
                    state.idle = m.i;
                }
                let wm = stage2_watermark(
                    part,
                    &self.input_partitions,
                    self.config.service.partition_idle_timeout,
                );
                if wm > part.watermark {
                    part.watermark = wm;
                    while let Some(p) = part.reorder.pop_until(wm) {
                        release(part, em, tp, p);
                    }
                    part.stateful.advance_and_check(wm, alerts);
                }
            }
        }
        let mut produced = 0;
        for a in alerts.drain(..) {
            em.produce_alert(&a, Some((tp.clone(), offset)), None, None);
            produced += 1;
        }
        produced
    }
}

/// Keeps a record (buffered in the offset bookkeeping) until the watermark passes `time`; a full buffer
/// hands back its oldest record, processed now.
#[allow(clippy::too_many_arguments)]
fn buffer(
    part: &mut Part,
    em: &mut Emitter,
    tp: &Arc<TopicPartition>,
    offset: i64,
    payload: &[u8],
    time: i64,
    origin: wire::Origin,
    detectors: DetectorSet,
) {
    em.offsets().buffer(tp, offset);
    let pending = Pending {
        bytes: payload.to_vec(),
        offset,
        detectors,
    };
    if let Some(p) = part.reorder.push(time, origin, pending) {
        release(part, em, tp, p);
    }
}

/// Processes a record that left the reorder buffer; its alerts are tracked against its offset.
fn release(part: &mut Part, em: &mut Emitter, tp: &Arc<TopicPartition>, p: Pending) {
    let mut out = Vec::new();
    match wire::decode(&p.bytes) {
        Ok(Item::Event { ev, .. }) => {
            part.stateful.event(&ev, None, p.detectors, false, &mut out);
        }
        Ok(Item::Region(r, _)) => part.stateful.region(&r),
        Ok(Item::Hit(hit)) => part.stateful.sigma_hit(&hit, &mut out),
        _ => {}
    }
    for a in &out {
        em.produce_alert(a, Some((tp.clone(), p.offset)), None, None);
    }
    em.offsets().release(tp, p.offset, out.len() as u32);
}

/// Stage 2's watermark for one repartition partition: [`combine`] over the latest marker of
/// every input partition. One not heard from yet holds it back until `partition_idle_timeout`
/// after this partition was assigned.
fn stage2_watermark(part: &Part, inputs: &[(String, i32)], idle_after: Duration) -> i64 {
    combine(inputs.iter().map(|key| match part.marks.get(key) {
        Some(m) => InputTime {
            time: m.w,
            idle: m.idle,
        },
        None => InputTime {
            time: i64::MIN,
            idle: part.assigned_at.elapsed() >= idle_after,
        },
    }))
}

/// The streams stage 1 sends from one input partition to one repartition partition, each in
/// origin order: events for principal detectors, events for scope detectors (the same input
/// event can be in both, with the same origin, when both keys land on one partition), regions.
const PRINCIPAL_EVENTS: u8 = 0;
const SCOPE_EVENTS: u8 = 1;
const REGIONS: u8 = 2;
/// Sigma hits (one input event can give several; stage 1 gives each its own origin index).
const HITS: u8 = 3;

fn event_stream(detectors: DetectorSet, scope_keyed: DetectorSet) -> u8 {
    if detectors.0 & scope_keyed.0 != 0 {
        SCOPE_EVENTS
    } else {
        PRINCIPAL_EVENTS
    }
}

/// Whether an item from stage 1 was already received (stage 1 read its input again after a
/// crash); records the newest origin of its stream otherwise.
fn resent(arrived: &mut HashMap<(i32, u8), (i64, u32)>, stream: u8, origin: wire::Origin) -> bool {
    let (slot, offset, idx) = origin;
    match arrived.get_mut(&(slot, stream)) {
        Some(newest) if (offset, idx) <= *newest => true,
        Some(newest) => {
            *newest = (offset, idx);
            false
        }
        None => {
            arrived.insert((slot, stream), (offset, idx));
            false
        }
    }
}
