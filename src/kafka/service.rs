//! The live service: consume audit records from Kafka, run the detectors, produce alerts.
//!
//! One OS thread owns a `BaseConsumer`, a `BaseProducer` and the pipeline, and polls both in a
//! loop (the rust-rdkafka traps this avoids: rebalance callbacks run inside `poll`, and blocking
//! in them on a tokio worker stalls the runtime; split partition queues can miss wake-ups);
//! [`Service::spawn`] starts it. Follow one record through the files in this order:
//!
//! 1. [`Service::run`] polls the consumer; [`rebalance`](super::rebalance) serves assignments
//!    and revocations inside the poll;
//! 2. [`Processor::handle`] hands the record to the [`Pipeline`]: the in-process engine
//!    (`repartition.enabled = false`) or the repartitioned [`Topology`] (stage 1 on input
//!    partitions, stage 2 on repartition partitions); event time moves per partition
//!    ([`clock`](super::clock));
//! 3. alerts, dead letters and repartition records go out through the
//!    [`Emitter`](super::emitter), each acknowledging the record that caused it;
//! 4. [`Offsets`](super::offsets) learns when a record's effects are all acknowledged, and the
//!    [`Guarantee`] in force stores, snapshots or commits in a transaction what is ready.
//!
//! When more than `service.max_in_flight` messages await an acknowledgement, input partitions
//! pause (backpressure, not an error) until half have drained. When no input arrives at all for
//! `service.idle_timeout`, event time advances with the wall clock, so silence is still detected
//! when every source goes quiet.

use super::clients::{self, InternalTopic};
use super::clock::{combine, Clocks};
use super::emitter::{now_ms, DeadLetter, Deliveries, Emitter, ProducerCtx, RESENT_HEADER};
use super::guarantee::{Flow, Guarantee, Parts};
use super::offsets::{Offsets, Revoked, TopicPartition};
use super::rebalance::ConsumerCtx;
use super::repartition::Topology;
use crate::alert::Alert;
use crate::config::{ms, ToValid, Valid};
use crate::engine::Engine;
use crate::telemetry::Metrics;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::{Offset, TopicPartitionList};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use super::error::ServiceError;

/// What runs the detectors.
// One per service, made once and never moved on the hot path: the size difference is moot.
#[allow(clippy::large_enum_variant)]
pub enum Pipeline {
    /// The engine in process: each instance sees only its own input partitions.
    InProcess(Engine),
    /// The two-stage topology over the repartition topic.
    Repartitioned(Topology),
}

/// The running service: the consumer, and everything a record touches.
pub struct Service {
    consumer: BaseConsumer<ConsumerCtx>,
    paused: bool,
    p: Processor,
}

/// Record processing (separate from the consumer, whose messages borrow it).
struct Processor {
    config: Valid,
    pipeline: Pipeline,
    guarantee: Guarantee,
    em: Emitter,
    metrics: Arc<Metrics>,
    clocks: Clocks,
    last_input: Instant,
    last_idle_advance: Instant,
    alerts: Vec<Alert>,
    /// Interned partitions (no allocation per record) with records consumed since the last
    /// metrics flush (counters are aggregated, not locked per record).
    partitions: Vec<(Arc<TopicPartition>, u64)>,
}

/// The processing thread, started by [`Service::spawn`].
pub struct Running {
    shutdown: Arc<AtomicBool>,
    thread: JoinHandle<Result<(), ServiceError>>,
}

impl Running {
    /// Asks the service to stop: it drains, commits and leaves the group.
    pub fn stop(&self) {
        self.shutdown.store(true, Ordering::Relaxed);
    }

    /// The flag [`Running::stop`] sets, for a signal handler.
    pub fn stopper(&self) -> Arc<AtomicBool> {
        self.shutdown.clone()
    }

    /// Waits for the thread to end.
    pub fn join(self) -> Result<(), ServiceError> {
        self.thread.join().unwrap_or(Err(ServiceError::Panicked))
    }
}

impl Service {
    /// Connects (lazily: librdkafka connects in the background), creates or checks the internal
    /// topics, opens the guarantee (restoring the snapshot file, initialising transactions) and
    /// subscribes.
    /// `config`: a [`Valid`] config is taken as is; a [`Config`](crate::config::Config) is
    /// validated first.
    pub fn new(config: impl ToValid, metrics: Arc<Metrics>) -> Result<Service, ServiceError> {
        let config = config.to_valid()?;
        let k = &config.kafka;
        k.validate()
            .map_err(|(key, msg)| ServiceError::Config(key, msg))?;
        let common = clients::common(&config)?;
        let offsets = Arc::new(Offsets::default());
        let txn = Guarantee::transaction_for(&config);
        let producer: BaseProducer<ProducerCtx> = clients::producer(&config, &common)
            .create_with_context(ProducerCtx {
                deliveries: Arc::new(Deliveries::new(
                    offsets.clone(),
                    metrics.clone(),
                    txn.clone(),
                )),
            })?;
        let producer = Arc::new(producer);
        let consumer: BaseConsumer<ConsumerCtx> = clients::consumer(&config, &common)
            .create_with_context(ConsumerCtx::new(
                offsets,
                metrics.clone(),
                producer.clone(),
                Guarantee::on_revoke(&config, txn.as_ref()),
            ))?;
        let mut topics: Vec<String> = k.input_topics.clone();
        let mut pipeline = if config.repartition.enabled {
            let topology = repartitioned(&config, &producer, common)?;
            topics.push(topology.topic.clone());
            Pipeline::Repartitioned(topology)
        } else {
            if crate::topology::router::Router::new(&config).uses(crate::detect::Route::Scope) {
                let scope_keyed = crate::detect::scope_keyed();
                let names: Vec<&str> = (0..crate::detect::DETECTOR_NAMES.len())
                    .filter(|i| scope_keyed.has(*i))
                    .map(|i| crate::detect::DETECTOR_NAMES[i])
                    .collect();
                tracing::warn!(
                    detectors = %names.join(", "),
                    "repartition is off: each instance sees only its own input partitions, so the per-scope detectors are only right with one instance"
                );
            }
            Pipeline::InProcess(Engine::new(&config)?.with_external_watermark())
        };
        let em = Emitter::new(
            producer,
            k.alerts_topic.clone(),
            k.dead_letter_topic.clone(),
            k.producer
                .get("message.max.bytes")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1_000_000),
            config.alerts.format,
        );
        let engine = match &mut pipeline {
            Pipeline::InProcess(e) => Some(e),
            Pipeline::Repartitioned(_) => None,
        };
        let guarantee = Guarantee::new(&config, &em, engine, &metrics)?;
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        Ok(Service {
            consumer,
            paused: false,
            p: Processor {
                pipeline,
                guarantee,
                em,
                metrics,
                clocks: Clocks::default(),
                last_input: Instant::now(),
                last_idle_advance: Instant::now(),
                alerts: Vec::new(),
                partitions: Vec::new(),
                config,
            },
        })
    }

    /// Starts the processing thread (`cloudwarden-processing`): the one way the binary, the
    /// demo, the tests and the benchmarks run the service.
    pub fn spawn(self) -> std::io::Result<Running> {
        let shutdown = Arc::new(AtomicBool::new(false));
        let flag = shutdown.clone();
        let thread = std::thread::Builder::new()
            .name("cloudwarden-processing".into())
            .spawn(move || self.run(&flag))?;
        Ok(Running { shutdown, thread })
    }

    /// Runs until `shutdown` is set, then drains and commits.
    pub fn run(mut self, shutdown: &AtomicBool) -> Result<(), ServiceError> {
        let mut last_metrics = Instant::now();
        while !shutdown.load(Ordering::Relaxed) {
            self.p.em.poll();
            self.p.em.resend_failed();
            self.apply_backpressure();
            let polled = self.consumer.poll(Duration::from_millis(100));
            self.p.take_revoked(self.consumer.context().take_revoked());
            let (guarantee, parts) = self.p.split(&self.consumer);
            if guarantee.check(parts)? == Flow::Rewound {
                // The record (if any) is read again after the rewind.
                continue;
            }
            match polled {
                Some(Ok(msg)) => self.p.handle(&msg, self.consumer.context()),
                Some(Err(e)) => tracing::warn!(error = %e, "consumer error"),
                None => self.p.idle(self.consumer.context()),
            }
            self.send_markers();
            let (guarantee, parts) = self.p.split(&self.consumer);
            guarantee.tick(parts)?;
            if last_metrics.elapsed() >= Duration::from_millis(500) {
                self.publish_metrics();
                last_metrics = Instant::now();
            }
        }
        self.shutdown();
        Ok(())
    }

    /// Unsubscribes and serves the revocation that follows before the consumer is dropped. A
    /// rebalance event still queued when the consumer closes makes rust-rdkafka's rebalance
    /// handler ask librdkafka for the rebalance protocol, which then never answers
    /// (librdkafka#4041): the drop would hang for good.
    fn leave_group(&mut self) {
        self.consumer.unsubscribe();
        let deadline = Instant::now() + self.p.config.service.drain_timeout;
        while Instant::now() < deadline {
            // Records still queued are dropped unprocessed: their offsets were not stored.
            let _ = self.consumer.poll(Duration::from_millis(100));
            if self.consumer.assignment().map_or(true, |a| a.count() == 0) {
                break;
            }
        }
    }

    /// Markers and due beats (repartitioned topology only). A partition counts as caught up when
    /// the consumer's position has reached its end as last seen in a fetch response (librdkafka's
    /// cached watermarks: no broker round trip).
    fn send_markers(&mut self) {
        let Pipeline::Repartitioned(t) = &mut self.p.pipeline else {
            return;
        };
        if !t.tick_due() {
            return;
        }
        let consumer = &self.consumer;
        let assigned = consumer.context().assigned();
        let positions = consumer.position().ok();
        let caught_up = |tp: &TopicPartition| -> bool {
            let Some(high) = clients::cached_high_watermark(consumer.client(), tp) else {
                return false;
            };
            let position = positions
                .as_ref()
                .and_then(|p| p.find_partition(&tp.topic, tp.partition))
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                });
            match position {
                Some(pos) => pos >= high,
                // Nothing consumed yet: caught up only if the partition is empty.
                None => high <= 0,
            }
        };
        t.tick(
            &self.p.em,
            &assigned,
            &self.p.clocks,
            self.p.last_input,
            &caught_up,
        );
    }

    fn apply_backpressure(&mut self) {
        let in_flight = self.p.em.offsets().in_flight();
        let max = self.p.config.service.max_in_flight;
        // Stage 2 must keep reading: markers release what stage 1's backlog waits on.
        let repartition = match &self.p.pipeline {
            Pipeline::Repartitioned(t) => Some(t.topic.as_str()),
            Pipeline::InProcess(_) => None,
        };
        let m = &self.p.metrics;
        m.in_flight.store(in_flight as u64, Ordering::Relaxed);
        let input_only = |assignment: TopicPartitionList| -> TopicPartitionList {
            let mut out = TopicPartitionList::new();
            for e in assignment.elements() {
                if repartition != Some(e.topic()) {
                    out.add_partition(e.topic(), e.partition());
                }
            }
            out
        };
        if !self.paused && in_flight >= max {
            if let Ok(assignment) = self.consumer.assignment().map(input_only) {
                if self.consumer.pause(&assignment).is_ok() {
                    self.paused = true;
                    m.backpressure_pauses.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(in_flight, "backpressure: consumption paused");
                }
            }
        } else if self.paused && in_flight <= max / 2 {
            if let Ok(assignment) = self.consumer.assignment().map(input_only) {
                if self.consumer.resume(&assignment).is_ok() {
                    self.paused = false;
                    tracing::info!(in_flight, "backpressure: consumption resumed");
                }
            }
        }
    }

    fn publish_metrics(&mut self) {
        self.p.flush_counts();
        let m = &self.p.metrics;
        let ctx = self.consumer.context();
        m.assigned
            .store(ctx.assigned_count() as u64, Ordering::Relaxed);
        match &mut self.p.pipeline {
            Pipeline::Repartitioned(t) => t.publish(m),
            Pipeline::InProcess(engine) => {
                let s = engine.stats();
                m.events.store(s.events, Ordering::Relaxed);
                m.late_events.store(s.late_events, Ordering::Relaxed);
                m.suppressed
                    .store(engine.suppressed_total(), Ordering::Relaxed);
                m.watermark_ms.store(engine.watermark(), Ordering::Relaxed);
                m.sigma(engine.sigma());
                for (detector, st) in engine.detector_stats() {
                    Metrics::set_gauge(&m.keys, detector, st.keys as u64);
                    Metrics::set_gauge(&m.evicted, detector, st.evicted);
                }
            }
        }
        let assigned = ctx.assigned_count() > 0;
        let caught_up = ctx.stats_seen() && m.total_lag() <= self.p.config.service.ready_max_lag;
        m.ready.store(assigned && caught_up, Ordering::Relaxed);
    }

    /// Stop consuming, flush alerts, checkpoint and commit, leave the group.
    fn shutdown(mut self) {
        tracing::info!("shutting down: draining in-flight messages");
        self.p.metrics.ready.store(false, Ordering::Relaxed);
        if let Pipeline::Repartitioned(t) = &mut self.p.pipeline {
            t.flush_beats(&self.p.em);
        }
        let (guarantee, parts) = self.p.split(&self.consumer);
        guarantee.shutdown(parts);
        self.publish_metrics();
        self.leave_group();
        self.p.clocks.clear();
        tracing::info!("stopped");
    }
}

/// Creates or checks the repartition topic (and the changelog, with durable state) and builds
/// the topology over them.
fn repartitioned(
    config: &Valid,
    producer: &BaseProducer<ProducerCtx>,
    common: Vec<(String, String)>,
) -> Result<Topology, ServiceError> {
    let k = &config.kafka;
    let r = &config.repartition;
    let topic = r.topic_for(&k.group_id);
    clients::ensure_topic(
        producer.client(),
        &common,
        &InternalTopic {
            name: &topic,
            partitions: r.partitions,
            replication_factor: r.replication_factor,
            settings: &[
                ("retention.ms", ms(r.retention).to_string()),
                ("cleanup.policy", "delete".into()),
            ],
            create: r.create_topic,
            section: "repartition",
        },
    )?;
    let changelog = if config.state.changelog {
        let t = config.state.topic_for(&k.group_id);
        clients::ensure_topic(
            producer.client(),
            &common,
            &InternalTopic {
                name: &t,
                partitions: r.partitions,
                replication_factor: config.state.replication_factor,
                settings: &[("cleanup.policy", "compact".into())],
                create: r.create_topic,
                section: "state",
            },
        )?;
        Some(t)
    } else {
        None
    };
    let inputs = clients::input_partitions(producer.client(), &k.input_topics);
    Ok(Topology::new(config, topic, inputs, changelog, common)?)
}

impl Processor {
    /// The guarantee, and the parts its hooks work on.
    fn split<'a>(
        &'a mut self,
        consumer: &'a BaseConsumer<ConsumerCtx>,
    ) -> (&'a mut Guarantee, Parts<'a>) {
        let (topology, engine) = match &mut self.pipeline {
            Pipeline::InProcess(e) => (None, Some(e)),
            Pipeline::Repartitioned(t) => (Some(t), None),
        };
        (
            &mut self.guarantee,
            Parts {
                consumer,
                topology,
                engine,
                em: &mut self.em,
                clocks: &mut self.clocks,
                config: &self.config,
                metrics: &self.metrics,
            },
        )
    }

    /// The interned partition of a message, its consumed count bumped.
    fn partition_of(&mut self, msg: &BorrowedMessage<'_>) -> Arc<TopicPartition> {
        let (topic, partition) = (msg.topic(), msg.partition());
        let i = match self
            .partitions
            .iter()
            .position(|(tp, _)| tp.partition == partition && tp.topic == topic)
        {
            Some(i) => i,
            None => {
                let tp = TopicPartition {
                    topic: topic.to_owned(),
                    partition,
                };
                self.partitions.push((Arc::new(tp), 0));
                self.partitions.len() - 1
            }
        };
        self.partitions[i].1 += 1;
        self.partitions[i].0.clone()
    }

    /// Adds the records consumed since the last call to the metrics.
    fn flush_counts(&mut self) {
        let m = &self.metrics;
        for (tp, n) in &mut self.partitions {
            if *n > 0 {
                Metrics::add(&m.records_in, &tp.topic, std::mem::take(n));
            }
        }
    }

    /// One record: decode → pipeline → alerts (or a dead letter) → offsets.
    fn handle(&mut self, msg: &BorrowedMessage<'_>, ctx: &ConsumerCtx) {
        let tp = self.partition_of(msg);
        let offset = msg.offset();
        let payload = msg.payload().unwrap_or(&[]);
        let skip = self.guarantee.skip(&tp, offset);
        if let Pipeline::Repartitioned(t) = &mut self.pipeline {
            if t.is_repartition(msg.topic()) {
                let resent = msg
                    .headers()
                    .is_some_and(|h| h.iter().any(|h| h.key == RESENT_HEADER));
                let n = t.stage2(&mut self.em, &tp, offset, payload, resent, &self.metrics);
                self.em.offsets().done(&tp, offset, n);
                return;
            }
        }
        let consumed = Instant::now();
        self.last_input = consumed;
        if skip {
            // Already in the restored state (read again: the commit lagged).
            self.em.offsets().done(&tp, offset, 0);
            return;
        }
        let ingested_ms = msg.timestamp().to_millis().unwrap_or_else(now_ms);
        let m = self.metrics.clone();
        m.input_bytes
            .fetch_add(payload.len() as u64, Ordering::Relaxed);
        self.alerts.clear();
        let result = match &mut self.pipeline {
            Pipeline::Repartitioned(t) => {
                let clock = self.clocks.heard(&tp, consumed);
                match t.stage1(&self.em, &tp, offset, payload, clock, &mut self.alerts) {
                    Ok(mut n) => {
                        // Sigma detection-rule alerts, raised in stage 1.
                        for alert in &self.alerts {
                            let source = Some((tp.clone(), offset));
                            self.em
                                .produce_alert(alert, source, Some(ingested_ms), None);
                            n += 1;
                        }
                        self.em.offsets().done(&tp, offset, n);
                        return;
                    }
                    Err(e) => Err(e),
                }
            }
            Pipeline::InProcess(engine) => engine.process_record(payload, &mut self.alerts),
        };
        let mut produced = 0u32;
        match result {
            Ok(_) => {
                let event_time = match &self.pipeline {
                    Pipeline::InProcess(engine) => engine.last_record_time(),
                    Pipeline::Repartitioned(_) => None,
                };
                if let Some(t) = event_time {
                    self.clocks.event(&tp, t, Instant::now());
                    self.recompute_watermark(ctx, Some(&tp));
                }
                let alerts = std::mem::take(&mut self.alerts);
                for alert in &alerts {
                    let source = Some((tp.clone(), offset));
                    self.em
                        .produce_alert(alert, source, Some(ingested_ms), event_time);
                    produced += 1;
                }
                self.alerts = alerts;
            }
            Err(e) => {
                let reason = e.reason();
                Metrics::add(&m.decode_errors, &reason, 1);
                m.dead_letters.fetch_add(1, Ordering::Relaxed);
                self.em.dead_letter(DeadLetter {
                    reason: &reason,
                    error: &e.to_string(),
                    msg,
                    source: (tp.clone(), offset),
                    ingested_ms,
                });
                produced += 1;
            }
        }
        self.em.offsets().done(&tp, offset, produced);
    }

    /// The in-process engine's watermark from the partition clocks ([`combine`] over the
    /// assigned partitions, idle after `partition_idle_timeout`), minus the allowed lateness. A
    /// partition assigned but not heard from yet holds it back until it is idle: otherwise a
    /// partition read first would make every other one late.
    fn recompute_watermark(&mut self, ctx: &ConsumerCtx, current: Option<&Arc<TopicPartition>>) {
        let Pipeline::InProcess(engine) = &self.pipeline else {
            return;
        };
        let now = Instant::now();
        let idle_after = self.config.service.partition_idle_timeout;
        let clocks = &self.clocks;
        let bound = ctx.with_assigned(|assigned| {
            combine(
                assigned
                    .iter()
                    .map(|(tp, at)| (tp, *at))
                    .chain(current.map(|tp| (tp.as_ref(), now)))
                    .map(|(tp, at)| clocks.input_time(tp, at, idle_after, now)),
            )
        });
        if bound > i64::MIN {
            let wm = bound.saturating_sub(engine.allowed_lateness_ms());
            if wm > engine.watermark() {
                self.advance(wm);
            }
        }
    }

    /// No record this poll: if the input has been idle long enough, event time moves with the
    /// wall clock (in process; stage 1's markers do it for the repartitioned topology).
    fn idle(&mut self, ctx: &ConsumerCtx) {
        let Pipeline::InProcess(_) = &self.pipeline else {
            return;
        };
        // Partitions that went idle stop holding the watermark back.
        self.recompute_watermark(ctx, None);
        let Pipeline::InProcess(engine) = &self.pipeline else {
            return;
        };
        let now = Instant::now();
        if now.duration_since(self.last_input) < self.config.service.idle_timeout {
            self.last_idle_advance = now;
            return;
        }
        let step = now.duration_since(self.last_idle_advance).as_millis() as i64;
        if step >= 1000 && engine.watermark() > i64::MIN {
            self.last_idle_advance = now;
            let wm = engine.watermark().saturating_add(step);
            self.advance(wm);
        }
    }

    fn advance(&mut self, wm: i64) {
        let Pipeline::InProcess(engine) = &mut self.pipeline else {
            return;
        };
        let mut raised = Vec::new();
        engine.advance_watermark(wm, &mut raised);
        for alert in &raised {
            self.em.produce_alert(alert, None, None, None);
        }
    }

    /// Stage 2 drops the state of revoked repartition partitions and stage 1 their merging
    /// beats; the snapshot file remembers how far the engine processed a revoked partition.
    fn take_revoked(&mut self, revoked: Vec<(TopicPartition, Revoked)>) {
        for (tp, r) in revoked {
            if let Pipeline::Repartitioned(t) = &mut self.pipeline {
                t.revoked(&tp);
            }
            self.guarantee.revoked(tp, r);
        }
    }
}
