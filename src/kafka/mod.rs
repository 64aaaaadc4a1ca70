//! Kafka: the live service around the engine.
//!
//! - [`config`]: the `[kafka]` and `[service]` sections (always compiled, so every build
//!   validates a deploy config the same way);
//! - [`offsets`]: which input offsets are safe to commit (pure, tested without a broker);
//! - `service`: the consume → engine → produce → commit loop (feature `kafka`);
//! - `repartition`: the two-stage topology inside the service (feature `kafka`);
//! - `demo`: the embedded-broker demo (feature `kafka`).

pub mod config;
pub mod offsets;
#[cfg(feature = "kafka")]
pub mod repartition;

#[cfg(feature = "kafka")]
pub mod demo;
#[cfg(feature = "kafka")]
pub mod service;
