//! Why the service stopped with an error: one enum for the layer, each variant saying what a
//! restart will do.

use rdkafka::error::KafkaError;

/// Why the service stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("invalid config: `{0}`: {1}")]
    Config(String, String),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("engine: {0}")]
    Engine(#[from] crate::config::ConfigError),
    #[error("state snapshot: {0}; the service stops so that a restart resumes from the file's last complete batch")]
    Snapshot(#[from] crate::state::snapshot::SnapshotError),
    #[error("exactly-once: {0}; the service stops so that a restart resumes from the last committed transaction")]
    Transaction(String),
    #[error("cannot start the processing thread: {0}")]
    Thread(#[from] std::io::Error),
    #[error("the processing thread panicked")]
    Panicked,
}
