//! The two-stage topology behind every way of running cloudwarden.
//!
//! - Stage 1 ([`router`]), stateless, on the input: decode, normalize, classify, and route what
//!   the stateful detectors need by their routing key (principal or scope).
//! - Stage 2 ([`stateful`]): detectors, windows, baselines and suppression for the keys routed
//!   to it.
//!
//! In process (`replay`, and the service with `repartition.enabled = false`) stage 1 feeds
//! stage 2 directly. The repartitioned service puts a Kafka topic between them ([`wire`] is the
//! record format), so the instance that owns a repartition partition sees every record of its
//! keys whichever input partition they arrived on.

pub mod reorder;
pub mod router;
pub mod stateful;
pub mod wire;
