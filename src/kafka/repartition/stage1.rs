//! Stage 1, on input partitions: decode, classify, route, and write the repartition topic.
//!
//! Events for the stateful detectors go to the repartition partition of their routing key;
//! log-source activity is merged per (input partition, source, pane) and sent when the input
//! partition's watermark passes the pane's end; regions a scope uses are sent the first time they
//! are seen. Every `repartition.marker_interval` each repartition partition gets a marker: the
//! watermark of each input partition this instance reads, and whether it is idle. A marker is
//! sent only after everything its input partition caused before it, on the same producer.
//!
//! Offsets: an input record is done once its repartition records are acknowledged; a record that
//! contributed first to a beat still being merged stays buffered until that beat is sent.

use super::{input_slot, partition_of, RepartitionCounts, Topology};
use crate::alert::Alert;
use crate::catalog::Matches;
use crate::detect::{Beat, DetectorSet, RegionSeen};
use crate::engine::with_decoded_raw;
use crate::event::{CloudEvent, DecodeError};
use crate::kafka::clock::{Clocks, MarkTiming, PartitionClock};
use crate::kafka::emitter::{Emitter, Out, Source};
use crate::kafka::offsets::TopicPartition;
use crate::topology::router::Sink;
use crate::topology::wire::{self, Mark};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// Beats being merged: (input partition, source) → (routing key, beat, first input offset that
/// contributed). That offset stays buffered in the offset bookkeeping until the beat is sent and
/// acknowledged, so a crash never commits input whose activity summary was not delivered.
/// Keyed by (input slot, source key): looked up once per event, so no string hashing.
pub(super) type Beats = HashMap<(i32, u64), PendingBeat, crate::window::FastBuildHasher>;

pub(super) struct PendingBeat {
    tp: Arc<TopicPartition>,
    route: u64,
    beat: Beat<'static>,
    first: i64,
}

impl Topology {
    /// Stage 1: one input record. Returns the messages it caused (for the offset bookkeeping);
    /// the Sigma detection rules' alerts (suppressed already) are added to `alerts`, for the
    /// caller to produce against this record's offset.
    pub fn stage1(
        &mut self,
        em: &Emitter,
        tp: &Arc<TopicPartition>,
        offset: i64,
        payload: &[u8],
        clock: &mut PartitionClock,
        alerts: &mut Vec<Alert>,
    ) -> Result<u32, DecodeError> {
        let mut produced = 0u32;
        let lateness = self.lateness;
        let limits = self.limits;
        let mut decode_buf = std::mem::take(&mut self.decode_buf);
        let mut raw_buf = std::mem::take(&mut self.raw_buf);
        let slot = input_slot(&self.config, tp);
        let Topology {
            router,
            catalog,
            beats,
            buf,
            counts,
            partitions,
            topic,
            events: n_events,
            late_events,
            sigma,
            ..
        } = self;
        let sigma_on = !sigma.is_off();
        let first_alert = alerts.len();
        // Matches of rules that correlations consume, forwarded to stage 2 by group key.
        let mut hits: Vec<crate::sigma::hit::Hit<'static>> = Vec::new();
        let result = with_decoded_raw(
            payload,
            &limits,
            &mut decode_buf,
            &mut raw_buf,
            |events, raws| {
                for (idx, ev) in events.iter().enumerate() {
                    if sigma_on {
                        // Detection rules are stateless: matched here, on the raw record. Their
                        // matches for correlation rules go to stage 2, which judges lateness.
                        let origin = (slot, offset, idx as u32);
                        sigma.match_event_hits(ev, raws[idx], origin, false, alerts, &mut hits);
                    }
                    *n_events += 1;
                    // Lateness is judged by stage 2, against the watermark of all input partitions
                    // (as a Flink operator judges it against the minimum of its inputs): an event
                    // behind its own partition's watermark may still be ahead of everyone's.
                    // Counted here for the metrics only.
                    let wm = clock.max_event_time.saturating_sub(lateness);
                    if clock.max_event_time > i64::MIN && ev.time < wm {
                        *late_events += 1;
                    }
                    let late = false;
                    clock.max_event_time = clock.max_event_time.max(ev.time);
                    let matches = catalog.classify(ev);
                    let mut sink = KafkaSink {
                        out: Repartition {
                            em,
                            topic,
                            partitions: *partitions,
                            buf,
                            counts,
                        },
                        tp,
                        slot,
                        offset,
                        idx: idx as u32,
                        beats,
                        produced: &mut produced,
                    };
                    router.route(ev, &matches, late, &mut sink);
                    for (j, mut hit) in hits.drain(..).enumerate() {
                        // Each hit its own origin (an event can give several), so that stage 2
                        // tells a resent hit from the next one.
                        hit.origin.2 = hit_index(idx as u32, j);
                        wire::encode_hit(sink.out.buf, &hit);
                        sink.out.send(hit.route_key(), sink.source());
                        *sink.produced += 1;
                    }
                }
            },
        );
        self.decode_buf = decode_buf;
        self.raw_buf = raw_buf;
        if result.is_ok() && sigma_on {
            let mut kept = first_alert;
            for i in first_alert..alerts.len() {
                if self.sigma_suppressor.admit(&mut alerts[i]) {
                    alerts.swap(kept, i);
                    kept += 1;
                }
            }
            alerts.truncate(kept);
        } else {
            alerts.truncate(first_alert);
        }
        result.map(|()| produced)
    }

    /// Whether a marker tick is due (cheap: checked every loop iteration).
    pub fn tick_due(&self) -> bool {
        self.last_marker.elapsed() >= self.config.repartition.marker_interval
    }

    /// Every `marker_interval`: send the beats whose pane the input partition's watermark has
    /// passed, then the markers to every repartition partition.
    pub fn tick(
        &mut self,
        em: &Emitter,
        assigned: &[(TopicPartition, Instant)],
        clocks: &Clocks,
        last_input: Instant,
        caught_up: &dyn Fn(&TopicPartition) -> bool,
    ) {
        let now = Instant::now();
        if now.duration_since(self.last_marker) < self.config.repartition.marker_interval {
            return;
        }
        self.last_marker = now;
        // With no input at all for `idle_timeout`, event time moves with the wall clock, so
        // silence is still detected when every source goes quiet.
        let extra = now
            .duration_since(last_input)
            .checked_sub(self.config.service.idle_timeout)
            .map_or(0, |d| d.as_millis() as i64);
        let timing = MarkTiming {
            now,
            idle_after: self.config.service.partition_idle_timeout,
            lateness: self.lateness,
            extra,
        };
        let mut marks: Vec<Mark<'static>> = Vec::new();
        for (tp, at) in assigned {
            if tp.topic == self.topic {
                continue;
            }
            let m = clocks.mark(tp, *at, caught_up(tp), &timing);
            marks.push(Mark {
                t: Cow::Owned(tp.topic.clone()),
                p: tp.partition,
                w: m.time,
                i: m.idle,
            });
        }
        // Beats first: a marker must never overtake what its partition sent before it.
        let resolution = self.resolution;
        let due: Vec<(i32, u64)> = self
            .beats
            .iter()
            .filter(|(_, PendingBeat { tp, beat: b, .. })| {
                let pane_end = b.pane.saturating_add(1).saturating_mul(resolution);
                match marks
                    .iter()
                    .find(|m| m.p == tp.partition && m.t == tp.topic.as_str())
                {
                    // An idle partition has sent everything it had: its open panes go too.
                    Some(m) => m.i || m.w >= pane_end,
                    // Not ours (any more): `revoked` already dropped its beats.
                    None => false,
                }
            })
            .map(|(k, _)| *k)
            .collect();
        let mut out = Repartition {
            em,
            topic: &self.topic,
            partitions: self.partitions,
            buf: &mut self.buf,
            counts: &mut self.counts,
        };
        for k in due {
            if let Some(p) = self.beats.remove(&k) {
                out.pending_beat(&p);
            }
        }
        if marks.is_empty() {
            return;
        }
        wire::encode_markers(out.buf, &marks);
        for p in 0..out.partitions {
            em.send_to(Out {
                topic: out.topic,
                partition: Some(p),
                key: None,
                payload: Some(out.buf),
                header: None,
                source: None,
            });
            out.counts.markers += 1;
            out.counts.bytes += out.buf.len() as u64;
        }
    }

    /// Sends every beat still being merged (shutdown), so their input offsets can be committed.
    pub fn flush_beats(&mut self, em: &Emitter) {
        let mut out = Repartition {
            em,
            topic: &self.topic,
            partitions: self.partitions,
            buf: &mut self.buf,
            counts: &mut self.counts,
        };
        for p in std::mem::take(&mut self.beats).into_values() {
            out.pending_beat(&p);
        }
    }
}

/// Writes the repartition topic (the parts of the topology it needs, borrowed separately).
struct Repartition<'a> {
    em: &'a Emitter,
    topic: &'a str,
    partitions: i32,
    buf: &'a mut Vec<u8>,
    counts: &'a mut RepartitionCounts,
}

impl Repartition<'_> {
    /// Sends what is in `buf` to the partition of `route`.
    fn send(&mut self, route: u64, source: Option<Source>) {
        self.em.send_to(Out {
            topic: self.topic,
            partition: Some(partition_of(route, self.partitions)),
            key: None,
            payload: Some(self.buf),
            header: None,
            source,
        });
        self.counts.bytes += self.buf.len() as u64;
    }

    fn beat(&mut self, route: u64, beat: &Beat<'_>, source: Option<Source>) {
        wire::encode_beat(self.buf, beat);
        self.send(route, source);
        self.counts.beats += 1;
    }

    /// Sends a merged beat; its first contributing input offset then waits for the beat's
    /// acknowledgement instead of being buffered.
    fn pending_beat(&mut self, p: &PendingBeat) {
        self.beat(p.route, &p.beat, Some((p.tp.clone(), p.first)));
        self.em.offsets().release(&p.tp, p.first, 1);
    }
}

/// Stage 1's sink: writes the repartition topic.
struct KafkaSink<'a> {
    out: Repartition<'a>,
    tp: &'a Arc<TopicPartition>,
    /// The input partition as an origin slot (topic index << 20 | partition).
    slot: i32,
    offset: i64,
    idx: u32,
    beats: &'a mut Beats,
    produced: &'a mut u32,
}

impl KafkaSink<'_> {
    fn source(&self) -> Option<Source> {
        Some((self.tp.clone(), self.offset))
    }

    fn pending(&self, route: u64, beat: Beat<'_>) -> PendingBeat {
        PendingBeat {
            tp: self.tp.clone(),
            route,
            beat: beat.into_owned(),
            first: self.offset,
        }
    }
}

impl Sink for KafkaSink<'_> {
    fn event(
        &mut self,
        route: u64,
        detectors: DetectorSet,
        ev: &CloudEvent<'_>,
        _matches: &Matches,
        late: bool,
    ) {
        let origin = (self.slot, self.offset, self.idx);
        wire::encode_event(self.out.buf, detectors, late, origin, ev);
        self.out.send(route, self.source());
        *self.produced += 1;
        self.out.counts.events += 1;
    }

    fn beat(&mut self, route: u64, beat: Beat<'_>) {
        let key = (self.slot, beat.key);
        let offsets = self.out.em.offsets();
        match self.beats.get(&key).map(|p| p.beat.pane) {
            Some(pane) if pane == beat.pane => {
                if let Some(p) = self.beats.get_mut(&key) {
                    p.beat.merge(beat.count, beat.min, beat.max);
                }
            }
            Some(pane) if pane < beat.pane => {
                // The partition moved on to a later pane: the earlier one is complete here.
                let new = self.pending(route, beat);
                if let Some(old) = self.beats.insert(key, new) {
                    self.out.pending_beat(&old);
                }
                offsets.buffer(self.tp, self.offset);
            }
            Some(_) => {
                // An older pane (out-of-order input): sent on its own, for this record.
                let source = self.source();
                self.out.beat(route, &beat, source);
                *self.produced += 1;
            }
            None => {
                offsets.buffer(self.tp, self.offset);
                let new = self.pending(route, beat);
                self.beats.insert(key, new);
            }
        }
    }

    fn region(&mut self, route: u64, region: RegionSeen<'_>) {
        let origin = (self.slot, self.offset, self.idx);
        wire::encode_region(self.out.buf, &region, origin);
        self.out.send(route, self.source());
        *self.produced += 1;
        self.out.counts.regions += 1;
    }
}

/// A hit's origin index: the event's index in its record (high 24 bits) and the hit's index among
/// the event's hits (low 8 bits; an event with more than 256 hits shares the last value, so
/// stage 2 may take one of those for a resend after a crash).
pub(crate) fn hit_index(event: u32, hit: usize) -> u32 {
    (event << 8) | u32::try_from(hit.min(255)).unwrap_or(255)
}
