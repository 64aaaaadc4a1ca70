//! Kafka: the live service around the detectors.
//!
//! Always compiled: [`config`] (the `[kafka]`, `[service]`, `[repartition]`, `[state]` and
//! `[processing]` sections, so every build validates a deploy config the same way) and
//! [`offsets`] (which input offsets are safe to commit: pure, tested without a broker).
//! With the `kafka` feature, one file per role, in the order a record meets them:
//!
//! - `service`: `Service::new` / `run` / `spawn`, the loop, the pipeline (in process or
//!   repartitioned);
//! - `rebalance`: the consumer context (assignment, revocation, statistics);
//! - `clock`: partition clocks and the watermark rule;
//! - `repartition`: the two-stage topology (stage 1, stage 2, the changelog);
//! - `emitter`: everything produced (alerts, dead letters, repartition and changelog records)
//!   and what each message acknowledges;
//! - `guarantee`: at-least-once, the snapshot file, exactly-once, as hooks the loop calls;
//! - `clients`: client settings, topic creation and checks, metadata;
//! - `error`: why the service stopped;
//! - `demo`: the embedded-broker demo.
//!
//! Imports go one way: `service` → `guarantee` → `repartition` → `emitter` / `clock` /
//! `clients` → `offsets`; `rebalance` → `emitter`; nothing imports `service`.

pub mod config;
pub mod offsets;

#[cfg(feature = "kafka")]
pub mod clients;
#[cfg(feature = "kafka")]
pub mod clock;
#[cfg(feature = "kafka")]
pub mod demo;
#[cfg(feature = "kafka")]
pub mod emitter;
#[cfg(feature = "kafka")]
pub mod error;
#[cfg(feature = "kafka")]
pub mod guarantee;
#[cfg(feature = "kafka")]
pub mod rebalance;
#[cfg(feature = "kafka")]
pub mod repartition;
#[cfg(feature = "kafka")]
pub mod service;
