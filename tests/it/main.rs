//! All integration tests, in one binary (one link, one place to look).

mod alert_schema;
#[cfg(feature = "kafka")]
mod broker;
#[cfg(feature = "kafka")]
mod broker_faults;
mod catalog_coverage;
mod deploy;
#[cfg(feature = "kafka")]
mod e2e;
#[cfg(feature = "kafka")]
mod exactly_once;
#[cfg(feature = "kafka")]
mod exactly_once_kafka;
#[cfg(feature = "kafka")]
mod faults;
mod golden;
#[cfg(feature = "kafka")]
mod handover;
mod invictus;
#[cfg(feature = "kafka")]
mod kafka_mock;
mod malformed;
mod ocsf;
mod registry;
mod replay;
#[cfg(feature = "kafka")]
mod scale_out;
mod schema;
mod sigma;
#[cfg(feature = "kafka")]
mod sigma_kafka;

mod sigma_correlation;
mod state;
mod stratus;
mod util;
mod window_props;
