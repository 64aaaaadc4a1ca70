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

//! The files follow a record: [`stage1`] (input partitions → the repartition topic, markers),
//! [`stage2`] (repartition partitions → stateful detectors → alerts), [`changelog`] (stage 2's
//! state checkpointed to, and restored from, the compacted changelog topic).

mod changelog;
mod stage1;
mod stage2;

use super::offsets::TopicPartition;
use crate::alert::Alert;
use crate::catalog::Catalog;
use crate::config::{ms, Config, ConfigError, Valid};
use crate::detect::{DetectorSet, DetectorStats};
use crate::event::{CloudEvent, DecodeLimits};
use crate::telemetry::Metrics;
use crate::topology::router::Router;
use stage1::Beats;
use stage2::Part;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

pub use changelog::CHECKPOINT_HEADER;

/// Counters of what stage 1 wrote.
#[derive(Debug, Default, Clone)]
pub struct RepartitionCounts {
    pub events: u64,
    pub beats: u64,
    pub regions: u64,
    pub markers: u64,
    pub bytes: u64,
}

/// Both stages of the repartitioned topology, for the partitions this instance owns.
pub struct Topology {
    pub topic: String,
    /// The changelog topic (durable state), and the client settings to read it back.
    changelog: Option<String>,
    common: Vec<(String, String)>,
    last_checkpoint: Instant,
    partitions: i32,
    router: Router,
    catalog: Arc<Catalog>,
    config: Valid,
    /// The detectors keyed by scope (from the registry): their events form their own stream.
    scope_keyed: DetectorSet,
    lateness: i64,
    resolution: i64,
    limits: DecodeLimits,
    decode_buf: Vec<CloudEvent<'static>>,
    /// Sigma detection rules, matched in stage 1 where the raw record is.
    sigma: crate::sigma::SigmaDetector,
    /// Suppression of stage 1's Sigma alerts (this instance's input partitions; not durable).
    sigma_suppressor: crate::alert::suppress::Suppressor,
    /// Reused buffer of each event's raw text, for Sigma.
    raw_buf: Vec<&'static str>,
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
        config: &Valid,
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
            catalog: config.catalog().clone(),
            scope_keyed: crate::detect::scope_keyed(),
            lateness: ms(config.time.allowed_lateness),
            resolution: ms(config.detectors.log_source_silence.resolution).max(1),
            limits: DecodeLimits {
                max_record_bytes: config.decode.max_record_bytes,
            },
            config: config.clone(),
            decode_buf: Vec::new(),
            sigma: crate::sigma::SigmaDetector::new(
                config.sigma().clone(),
                config.sigma.max_matched_fields,
            ),
            sigma_suppressor: crate::alert::suppress::Suppressor::new(&config.alerts.suppression),
            raw_buf: Vec::new(),
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

    /// Whether `topic` is the repartition topic (stage 2's input).
    pub fn is_repartition(&self, topic: &str) -> bool {
        topic == self.topic
    }

    /// Exactly-once rewind: forgets everything since the last committed transaction (stage 1's
    /// merging beats and region sightings, stage 2's partition states, which are restored from
    /// the changelog at first use). Counters are kept.
    pub fn rewind(&mut self) {
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
        m.sigma(&self.sigma);
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
}

/// The repartition partition of a routing key.
pub fn partition_of(route: u64, partitions: i32) -> i32 {
    // The high bits: the low ones also index the detectors' hash maps.
    ((route >> 32) % partitions.max(1) as u64) as i32
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
