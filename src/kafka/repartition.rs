//! The repartitioned topology inside the live service (`[repartition] enabled = true`).
//!
//! Every instance runs both stages on one consumer, subscribed to the input topics *and* the
//! repartition topic, so the consumer group spreads both kinds of partitions over the instances
//! (as Kafka Streams does with its sub-topologies):
//!
//! - **Stage 1**, on input partitions: decode, classify, route ([`Router`]); events for the
//!   stateful detectors go to the repartition partition of their routing key (principal or
//!   scope), log-source activity is merged per (input partition, source, pane) and sent when the
//!   input partition's watermark passes the pane's end, regions a scope uses are sent the first
//!   time they are seen. Every `repartition.marker_interval`, stage 1 sends each repartition
//!   partition a marker: the watermark of each input partition it owns (its newest event time −
//!   allowed lateness), and whether that partition is idle.
//! - **Stage 2**, on repartition partitions: one [`Stateful`] per partition (windows, baselines,
//!   suppression). Its watermark is the minimum over input partitions of their latest marker
//!   (idle ones excluded; when all are idle, the newest), never going back. Events and region
//!   sightings wait in a [`Reorder`] buffer until the watermark passes them, and are then
//!   processed in (event time, origin) order: the detectors see the same sequence whatever the
//!   number of instances. Beats merge per pane and are applied when the watermark closes the pane.
//!
//! A marker is sent only after everything its input partition caused before it, on the same
//! producer, so when stage 2's watermark passes a time, every record up to it has arrived.
//!
//! Offsets: an input record is committed once its repartition records are acknowledged (and the
//! beats it contributed to are sent); a repartition record once it left the reorder buffer, its
//! alerts are acknowledged and, with durable state (`[state] changelog`), a checkpoint that
//! contains it is acknowledged. A repartition partition assigned to an instance is first restored
//! from its changelog partition; records the checkpoint already contains are skipped, and records
//! stage 1 sent again after its own restart are recognised by their origin (per stream: principal
//! events, scope events, regions) and skipped too. Without durable state a moved partition starts
//! empty (warm-up).

use super::offsets::TopicPartition;
use super::service::{Emitter, PartitionClock};
use crate::alert::Alert;
use crate::catalog::{Catalog, Matches};
use crate::config::{ms, Config, ConfigError};
use crate::detect::{Beat, DetectorSet, DetectorStats, RegionSeen};
use crate::engine::with_decoded;
use crate::event::{CloudEvent, DecodeError, DecodeLimits};
use crate::telemetry::Metrics;
use crate::topology::reorder::Reorder;
use crate::topology::router::{Router, Sink};
use crate::topology::stateful::Stateful;
use crate::topology::wire::{self, Item, Mark};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Beats being merged: (input partition, source) → (routing key, beat, first input offset that
/// contributed). That offset is held in the offset tracker until the beat is sent and
/// acknowledged, so a crash never commits input whose activity summary was not delivered.
/// Keyed by (input slot, source key): looked up once per event, so no string hashing.
type Beats = HashMap<(i32, u64), PendingBeat, crate::window::FastBuildHasher>;

struct PendingBeat {
    tp: Arc<TopicPartition>,
    route: u64,
    beat: Beat<'static>,
    first: i64,
}

/// A buffered repartition record (re-decoded when released: cheaper than owning an event).
struct Pending {
    bytes: Vec<u8>,
    offset: i64,
    /// The detectors still to run (the stateless ones ran on arrival).
    detectors: DetectorSet,
}

/// The latest marker of one input partition.
#[derive(Debug, Clone, Copy)]
struct MarkState {
    w: i64,
    idle: bool,
}

/// Stage 2 of one repartition partition.
struct Part {
    stateful: Stateful,
    immediate: DetectorSet,
    reorder: Reorder<Pending>,
    marks: HashMap<(String, i32), MarkState>,
    assigned_at: Instant,
    watermark: i64,
    /// The highest repartition offset read.
    max_read: i64,
    /// The first repartition offset read since the last checkpoint, held in the offset tracker
    /// until that checkpoint is acknowledged (durable state only).
    cp_hold: Option<i64>,
    /// Per input slot, the newest origin (offset, index) that reached this partition: a record
    /// re-sent by stage 1 after a crash is recognised and skipped.
    arrived: HashMap<(i32, u8), (i64, u32)>,
    /// What the restored checkpoint already contains: records up to this offset, except the
    /// ones that were still buffered (the set). Dropped once reading passes the offset.
    restored: Option<(i64, HashSet<i64>)>,
    /// The sequence number of the last checkpoint written (restored from the changelog).
    cp_seq: u64,
}

/// A partition's own checkpoint metadata (changelog entry `META/2`).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct PartMeta {
    max_read: i64,
    buffered: Vec<i64>,
    arrived: Vec<(i32, u8, i64, u32)>,
    /// This checkpoint's sequence number; every entry of it carries the same number in the
    /// [`CHECKPOINT_HEADER`] header (0 and absent in changelogs written before it existed).
    #[serde(default)]
    seq: u64,
    /// The newest marker of each input partition (topic, partition, watermark, idle): without
    /// them a restored partition would count the input partitions it has not heard from again
    /// as idle after `partition_idle_timeout`, and its watermark could jump past their events.
    #[serde(default)]
    marks: Vec<(String, i32, i64, bool)>,
}

/// Changelog record header: the sequence number of the checkpoint the entry belongs to. The
/// partition's own entry is written last, so a checkpoint torn by a crash is recognised at
/// restore: its entries carry a number above the last complete checkpoint's, and the version
/// before them is used (still in the log: compaction never touches the active segment).
pub(super) const CHECKPOINT_HEADER: &str = "cloudwarden.checkpoint";

/// Counters of what stage 1 wrote.
#[derive(Debug, Default, Clone)]
pub struct RepartitionCounts {
    pub events: u64,
    pub beats: u64,
    pub regions: u64,
    pub markers: u64,
    pub bytes: u64,
}

pub struct Topology {
    pub topic: String,
    /// The changelog topic (durable state), and the client settings to read it back.
    changelog: Option<String>,
    common: Vec<(String, String)>,
    last_checkpoint: Instant,
    partitions: i32,
    router: Router,
    catalog: Arc<Catalog>,
    config: Config,
    lateness: i64,
    resolution: i64,
    limits: DecodeLimits,
    decode_buf: Vec<CloudEvent<'static>>,
    /// Beats being merged: (input partition, source) → (routing key, beat).
    beats: Beats,
    parts: BTreeMap<i32, Part>,
    /// Input partitions that exist (from metadata at start, plus any a marker names).
    input_partitions: Vec<(String, i32)>,
    last_marker: Instant,
    buf: Vec<u8>,
    alerts: Vec<Alert>,
    pub counts: RepartitionCounts,
    pub events: u64,
    pub late_events: u64,
    reported: RepartitionCounts,
}

impl Topology {
    pub fn new(
        config: &Config,
        topic: String,
        input_partitions: Vec<(String, i32)>,
        changelog: Option<String>,
        common: Vec<(String, String)>,
    ) -> Result<Topology, ConfigError> {
        Ok(Topology {
            topic,
            changelog,
            common,
            last_checkpoint: Instant::now(),
            partitions: config.repartition.partitions,
            router: Router::new(config),
            catalog: Arc::new(config.catalog()?),
            lateness: ms(config.time.allowed_lateness),
            resolution: ms(config.detectors.log_source_silence.resolution).max(1),
            limits: DecodeLimits {
                max_record_bytes: config.decode.max_record_bytes,
            },
            config: config.clone(),
            decode_buf: Vec::new(),
            beats: HashMap::default(),
            parts: BTreeMap::new(),
            input_partitions,
            last_marker: Instant::now(),
            buf: Vec::new(),
            alerts: Vec::new(),
            counts: RepartitionCounts::default(),
            events: 0,
            late_events: 0,
            reported: RepartitionCounts::default(),
        })
    }

    /// Stage 1: one input record. Returns the messages it caused (for the offset tracker).
    pub(super) fn stage1(
        &mut self,
        em: &Emitter,
        tp: &Arc<TopicPartition>,
        offset: i64,
        payload: &[u8],
        clock: &mut PartitionClock,
    ) -> Result<u32, DecodeError> {
        let mut produced = 0u32;
        let lateness = self.lateness;
        let limits = self.limits;
        let mut decode_buf = std::mem::take(&mut self.decode_buf);
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
            ..
        } = self;
        let result = with_decoded(payload, &limits, &mut decode_buf, |events| {
            for (idx, ev) in events.iter().enumerate() {
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
                    em,
                    topic,
                    partitions: *partitions,
                    tp,
                    slot,
                    offset,
                    idx: idx as u32,
                    beats,
                    buf,
                    counts,
                    produced: &mut produced,
                };
                router.route(ev, &matches, late, &mut sink);
            }
        });
        self.decode_buf = decode_buf;
        result.map(|()| produced)
    }

    /// Whether a marker tick is due (cheap: checked every loop iteration).
    pub(super) fn tick_due(&self) -> bool {
        self.last_marker.elapsed() >= self.config.repartition.marker_interval
    }

    /// Every `marker_interval`: send the beats whose pane the input partition's watermark has
    /// passed, then the markers to every repartition partition.
    pub(super) fn tick(
        &mut self,
        em: &Emitter,
        assigned: &[(TopicPartition, Instant)],
        clocks: &HashMap<Arc<TopicPartition>, PartitionClock>,
        last_input: Instant,
        caught_up: &dyn Fn(&TopicPartition) -> bool,
    ) {
        let now = Instant::now();
        if now.duration_since(self.last_marker) < self.config.repartition.marker_interval {
            return;
        }
        self.last_marker = now;
        let idle_after = self.config.service.partition_idle_timeout;
        let idle_timeout = self.config.service.idle_timeout;
        // With no input at all for `idle_timeout`, event time moves with the wall clock, so
        // silence is still detected when every source goes quiet.
        let extra = now
            .duration_since(last_input)
            .checked_sub(idle_timeout)
            .map_or(0, |d| d.as_millis() as i64);
        let mut marks: Vec<Mark<'static>> = Vec::new();
        for (tp, at) in assigned {
            if tp.topic == self.topic {
                continue;
            }
            let clock = clocks.get(tp);
            // Idle: nothing read for `partition_idle_timeout` *and* nothing left to read (the
            // consumer's position is at the partition's end). A partition that merely has not
            // been fetched yet must not let the others' time run past its records.
            let caught_up = caught_up(tp);
            let (w, idle) = match clock.filter(|c| c.max_event_time > i64::MIN) {
                Some(c) => {
                    let idle = caught_up && now.duration_since(c.last_record) >= idle_after;
                    // An idle partition has delivered what it had: nothing late is still on its
                    // way, so its watermark is its newest event time (a stream that ends is
                    // processed to its last event, as `replay` does).
                    let lateness = if idle { 0 } else { self.lateness };
                    let w = c
                        .max_event_time
                        .saturating_sub(lateness)
                        .saturating_add(extra);
                    (w, idle)
                }
                None => (i64::MIN, caught_up && now.duration_since(*at) >= idle_after),
            };
            marks.push(Mark {
                t: Cow::Owned(tp.topic.clone()),
                p: tp.partition,
                w,
                i: idle,
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
        for k in due {
            if let Some(p) = self.beats.remove(&k) {
                send_pending(
                    em,
                    &self.topic,
                    self.partitions,
                    &mut self.buf,
                    &mut self.counts,
                    &p,
                );
            }
        }
        if marks.is_empty() {
            return;
        }
        wire::encode_markers(&mut self.buf, &marks);
        for p in 0..self.partitions {
            em.send_to(&self.topic, Some(p), None, &self.buf, None);
            self.counts.markers += 1;
            self.counts.bytes += self.buf.len() as u64;
        }
    }

    /// Stage 2: one repartition record. Returns the messages it caused, for the record's own
    /// offset (alerts of released buffered records are tracked against their offsets).
    pub(super) fn stage2(
        &mut self,
        em: &mut Emitter,
        tp: &Arc<TopicPartition>,
        offset: i64,
        payload: &[u8],
        resent_by_us: bool,
        metrics: &Metrics,
    ) -> u32 {
        if !self.parts.contains_key(&tp.partition) {
            let mut stateful = match Stateful::new(&self.config, self.catalog.clone()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "stage 2 state");
                    return 0;
                }
            };
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
            em.hold(tp, offset);
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
                    && resent(&mut part.arrived, event_stream(detectors), origin)
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
            em.produce_alert(&a, Some((tp.clone(), offset)), None);
            produced += 1;
        }
        produced
    }

    /// Every `state.checkpoint_interval`: write each partition's changed state to the changelog,
    /// acknowledged against the partition's checkpoint hold (so its offsets are committed only
    /// once the checkpoint is durable).
    /// Returns whether the state is checkpointed up to what was read (`false`: postponed).
    pub(super) fn checkpoint(&mut self, em: &Emitter, metrics: &Metrics, force: bool) -> bool {
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
                em.send_state(
                    changelog,
                    r,
                    key.as_bytes(),
                    e.value.as_deref(),
                    &seq_header,
                    (tp.clone(), hold),
                );
            }
            em.processed(&tp, hold, entries.len() as u32);
            em.release(&tp, hold);
            metrics.checkpoints.fetch_add(1, Ordering::Relaxed);
            metrics.changelog_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
        true
    }

    /// Sends every beat still being merged (shutdown), so their input offsets can be committed.
    pub(super) fn flush_beats(&mut self, em: &Emitter) {
        for p in std::mem::take(&mut self.beats).into_values() {
            send_pending(
                em,
                &self.topic,
                self.partitions,
                &mut self.buf,
                &mut self.counts,
                &p,
            );
        }
    }

    /// Exactly-once rewind: forgets everything since the last committed transaction (stage 1's
    /// merging beats and region sightings, stage 2's partition states, which are restored from
    /// the changelog at first use). Counters are kept.
    pub(super) fn rewind(&mut self) {
        self.beats.clear();
        self.parts.clear();
        self.router = Router::new(&self.config);
        self.last_checkpoint = Instant::now();
    }

    /// Drops what this instance holds for a revoked partition: a repartition partition's state;
    /// an input partition's merging beats (their input offsets were not committed, so the next
    /// owner reads those records again and sends the same panes).
    pub fn revoked(&mut self, tp: &TopicPartition) {
        if tp.topic != self.topic {
            let slot = input_slot(&self.config, tp);
            self.beats.retain(|(s, _), _| *s != slot);
            return;
        }
        if self.parts.remove(&tp.partition).is_some() {
            tracing::info!(
                partition = tp.partition,
                "repartition partition revoked: its state is dropped (the next owner restores it from the changelog)"
            );
        }
    }

    /// Publishes counters to the metrics.
    pub fn publish(&mut self, m: &Metrics) {
        let c = &self.counts;
        let r = &mut self.reported;
        for (kind, now, before) in [
            ("event", c.events, &mut r.events),
            ("beat", c.beats, &mut r.beats),
            ("region", c.regions, &mut r.regions),
            ("marker", c.markers, &mut r.markers),
        ] {
            if now > *before {
                Metrics::add(&m.repartition_out, kind, now - *before);
                *before = now;
            }
        }
        m.repartition_bytes.store(c.bytes, Ordering::Relaxed);
        m.events.store(self.events, Ordering::Relaxed);
        m.late_events.store(self.late_events, Ordering::Relaxed);
        let buffered: usize = self.parts.values().map(|p| p.reorder.len()).sum();
        let forced: u64 = self.parts.values().map(|p| p.reorder.forced()).sum();
        m.reorder_buffered.store(buffered as u64, Ordering::Relaxed);
        m.reorder_forced.store(forced, Ordering::Relaxed);
        let suppressed: u64 = self
            .parts
            .values()
            .map(|p| p.stateful.suppressed_total())
            .sum();
        m.suppressed.store(suppressed, Ordering::Relaxed);
        if let Some(wm) = self.parts.values().map(|p| p.watermark).min() {
            m.watermark_ms.store(wm, Ordering::Relaxed);
        }
        let mut keys: BTreeMap<&'static str, DetectorStats> = BTreeMap::new();
        for p in self.parts.values() {
            for (name, s) in p.stateful.detector_stats() {
                let e = keys.entry(name).or_default();
                e.keys += s.keys;
                e.evicted += s.evicted;
            }
        }
        for (detector, st) in keys {
            Metrics::set_gauge(&m.keys, detector, st.keys as u64);
            Metrics::set_gauge(&m.evicted, detector, st.evicted);
        }
    }

    /// Repartition partitions whose state this instance holds.
    pub fn owned_partitions(&self) -> Vec<i32> {
        self.parts.keys().copied().collect()
    }
}

/// Keeps a record (held in the offset tracker) until the watermark passes `time`; a full buffer
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
    em.hold(tp, offset);
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
        _ => {}
    }
    for a in &out {
        em.produce_alert(a, Some((tp.clone(), p.offset)), None);
    }
    em.processed(tp, p.offset, out.len() as u32);
    em.release(tp, p.offset);
}

/// Stage 2's watermark for one repartition partition: the minimum over input partitions of their
/// latest marker. An input partition not heard from yet holds it back until
/// `partition_idle_timeout` after this partition was assigned; idle ones do not hold it back;
/// when every one is idle, the newest bounds it.
fn stage2_watermark(part: &Part, inputs: &[(String, i32)], idle_after: Duration) -> i64 {
    let mut active_min: Option<i64> = None;
    let mut newest: Option<i64> = None;
    for key in inputs {
        match part.marks.get(key) {
            None => {
                if part.assigned_at.elapsed() < idle_after {
                    return i64::MIN;
                }
            }
            Some(m) => {
                if m.w > i64::MIN {
                    newest = Some(newest.map_or(m.w, |n| n.max(m.w)));
                }
                if !m.idle {
                    active_min = Some(active_min.map_or(m.w, |a| a.min(m.w)));
                }
            }
        }
    }
    active_min.or(newest).unwrap_or(i64::MIN)
}

/// The streams stage 1 sends from one input partition to one repartition partition, each in
/// origin order: events for principal detectors, events for scope detectors (the same input
/// event can be in both, with the same origin, when both keys land on one partition), regions.
const PRINCIPAL_EVENTS: u8 = 0;
const SCOPE_EVENTS: u8 = 1;
const REGIONS: u8 = 2;

fn event_stream(detectors: DetectorSet) -> u8 {
    use crate::detect::detector_index;
    let scope = ["log_disable", "log_source_silence", "quota_change"]
        .iter()
        .any(|d| detectors.has(detector_index(d)));
    if scope {
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

/// An input partition as an origin slot: its topic's index in `kafka.input_topics` << 20 | the
/// partition (origins from different input topics never collide).
fn input_slot(config: &Config, tp: &TopicPartition) -> i32 {
    let topic = config
        .kafka
        .input_topics
        .iter()
        .position(|t| *t == tp.topic)
        .unwrap_or(0) as i32;
    topic << 20 | (tp.partition & 0xF_FFFF)
}

/// Reads changelog partition `partition` from the start and restores it into `stateful`.
/// Returns the partition's own checkpoint metadata, if any.
fn restore_part(
    common: &[(String, String)],
    changelog: &str,
    partition: i32,
    timeout: Duration,
    stateful: &mut Stateful,
    metrics: &Metrics,
) -> Option<PartMeta> {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    use rdkafka::{Offset, TopicPartitionList};
    let started = Instant::now();
    let mut cc = ClientConfig::new();
    for (k, v) in common {
        cc.set(k, v);
    }
    cc.set("group.id", "cloudwarden-restore")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "50");
    let consumer: BaseConsumer = match cc.create() {
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
                // A pause: the end offset read at the start may be stale (Tansu answers old
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

/// Sends a merged beat; its first contributing input offset then waits for the beat's
/// acknowledgement instead of the hold.
fn send_pending(
    em: &Emitter,
    topic: &str,
    partitions: i32,
    buf: &mut Vec<u8>,
    counts: &mut RepartitionCounts,
    p: &PendingBeat,
) {
    let source = Some((p.tp.clone(), p.first));
    send_beat(em, topic, partitions, buf, counts, p.route, &p.beat, source);
    em.processed(&p.tp, p.first, 1);
    em.release(&p.tp, p.first);
}

#[allow(clippy::too_many_arguments)] // the sink's parts, borrowed separately
fn send_beat(
    em: &Emitter,
    topic: &str,
    partitions: i32,
    buf: &mut Vec<u8>,
    counts: &mut RepartitionCounts,
    route: u64,
    beat: &Beat<'_>,
    source: Option<(Arc<TopicPartition>, i64)>,
) {
    wire::encode_beat(buf, beat);
    em.send_to(
        topic,
        Some(partition_of(route, partitions)),
        None,
        buf,
        source,
    );
    counts.beats += 1;
    counts.bytes += buf.len() as u64;
}

/// The repartition partition of a routing key.
pub fn partition_of(route: u64, partitions: i32) -> i32 {
    // The high bits: the low ones also index the detectors' hash maps.
    ((route >> 32) % partitions.max(1) as u64) as i32
}

/// Stage 1's sink: writes the repartition topic.
struct KafkaSink<'a> {
    em: &'a Emitter,
    topic: &'a str,
    partitions: i32,
    tp: &'a Arc<TopicPartition>,
    /// The input partition as an origin slot (topic index << 20 | partition).
    slot: i32,
    offset: i64,
    idx: u32,
    beats: &'a mut Beats,
    buf: &'a mut Vec<u8>,
    counts: &'a mut RepartitionCounts,
    produced: &'a mut u32,
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
        wire::encode_event(
            self.buf,
            detectors,
            late,
            (self.slot, self.offset, self.idx),
            ev,
        );
        self.em.send_to(
            self.topic,
            Some(partition_of(route, self.partitions)),
            None,
            self.buf,
            Some((self.tp.clone(), self.offset)),
        );
        *self.produced += 1;
        self.counts.events += 1;
        self.counts.bytes += self.buf.len() as u64;
    }

    fn beat(&mut self, route: u64, beat: Beat<'_>) {
        let key = (self.slot, beat.key);
        match self.beats.get_mut(&key) {
            Some(p) if p.beat.pane == beat.pane => p.beat.merge(beat.count, beat.min, beat.max),
            Some(p) if p.beat.pane < beat.pane => {
                // The partition moved on to a later pane: the earlier one is complete here.
                let old = std::mem::replace(
                    p,
                    PendingBeat {
                        tp: self.tp.clone(),
                        route,
                        beat: beat.into_owned(),
                        first: self.offset,
                    },
                );
                send_pending(
                    self.em,
                    self.topic,
                    self.partitions,
                    self.buf,
                    self.counts,
                    &old,
                );
                self.em.hold(self.tp, self.offset);
            }
            Some(_) => {
                // An older pane (out-of-order input): sent on its own, for this record.
                let source = Some((self.tp.clone(), self.offset));
                send_beat(
                    self.em,
                    self.topic,
                    self.partitions,
                    self.buf,
                    self.counts,
                    route,
                    &beat,
                    source,
                );
                *self.produced += 1;
            }
            None => {
                self.em.hold(self.tp, self.offset);
                self.beats.insert(
                    key,
                    PendingBeat {
                        tp: self.tp.clone(),
                        route,
                        beat: beat.into_owned(),
                        first: self.offset,
                    },
                );
            }
        }
    }

    fn region(&mut self, route: u64, region: RegionSeen<'_>) {
        wire::encode_region(self.buf, &region, (self.slot, self.offset, self.idx));
        self.em.send_to(
            self.topic,
            Some(partition_of(route, self.partitions)),
            None,
            self.buf,
            Some((self.tp.clone(), self.offset)),
        );
        *self.produced += 1;
        self.counts.regions += 1;
        self.counts.bytes += self.buf.len() as u64;
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
