//! cloudwarden: catches attacks on cloud control planes in cloud audit logs, as they happen.
//!
//! A record flows one way through these modules (the `kafka` ones only in the live service):
//!
//! - [`event`]: decode a raw provider record (CloudTrail, GCP, Azure, Entra ID, Workspace, O365,
//!   or `CloudEvent` v1) into the normalized [`event::CloudEvent`].
//! - [`catalog`]: classify it: (provider, service, operation) → behaviour and ATT&CK techniques.
//! - [`topology`]: the two stages: stage 1 routes by key (principal, scope), stage 2 holds the
//!   detectors' state for its keys; the repartition wire format between them.
//! - [`window`]: time-keyed primitives (sliding counts, distinct counts, baselines, first seen,
//!   heartbeats, the bounded key map, the watermark); no clock inside.
//! - [`detect`]: one file per detector and the registry of them.
//! - [`alert`]: the `alert.v1` alert, ATT&CK enrichment, evidence, suppression, and
//!   [`alert::format`], the one place an alert becomes bytes.
//! - [`engine`]: decode → classify → route → detect → suppress in one call, shared by `replay`
//!   and the live service.
//! - [`state`]: the durable state entry codec, and [`state::snapshot`], the local snapshot file.
//! - [`config`]: the deploy config (TOML), its defaults and validation.
//! - [`sigma`]: detection teams' own Sigma rules: loading, field mapping, matching (stage 1) and
//!   correlation (stage 2).
//! - [`replay`]: file inputs and the event-time merge for hunting over old logs.
//! - [`demo`]: the generated demo stream (benign traffic with attacks).
//! - [`telemetry`]: metric names, latency histograms, `/metrics`, `/health`, `/ready`.
//! - [`kafka`]: the live service (feature `kafka`, except `config` and `offsets`):
//!   - `kafka::config`: the `[kafka]` and `[service]` sections;
//!   - `kafka::offsets`: which input offsets are safe to commit ("commit after effect");
//!   - `kafka::emitter`: the producer side: alerts, dead letters, acknowledgements, resends;
//!   - `kafka::rebalance`: the consumer context: assignment, revocation, forgetting state;
//!   - `kafka::clients`: client settings, topic creation and checks, metadata;
//!   - `kafka::clock`: partition clocks and the watermark rule;
//!   - `kafka::guarantee`: at least once, local snapshot file, exactly once;
//!   - `kafka::repartition`: the two stages across a repartition topic, and the changelog;
//!   - `kafka::service`: `Service`: set-up, the processing loop, `Service::spawn`, shutdown;
//!   - `kafka::error`: why the service stopped;
//!   - `kafka::demo`: the embedded-broker demo.
//!
//! Thread model of the live service: one OS thread owns the Kafka consumer, the producer and the
//! engine (a `BaseConsumer` and a `BaseProducer`, polled in one loop), so no state is shared or
//! locked between threads on the hot path; rebalance callbacks run inside its `poll`. A small
//! tokio runtime serves only the HTTP endpoints (`/metrics`, `/health`, `/ready`) and waits for
//! signals; it reads the metrics' atomics and sets the shutdown flag. The processing thread
//! blocks, by design, only when: it restores state (reading a changelog partition to its end on
//! assignment, or the snapshot file at start); it makes admin calls (topic creation and metadata
//! checks at start); the producer pushes back (a full queue is retried after a poll, a failed
//! send after a pause, and revocation and shutdown drain the producer within
//! `service.drain_timeout`); and, with `processing.guarantee = "exactly_once"`, it commits a
//! transaction (send offsets, commit, retried until the transaction timeout).
pub mod alert;
pub mod catalog;
pub mod config;
pub mod demo;
pub mod detect;
pub mod engine;
pub mod event;
pub mod kafka;
pub mod replay;
pub mod sigma;
pub mod state;
pub mod telemetry;
pub mod topology;
pub mod window;
