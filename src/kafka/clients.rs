//! The Kafka clients the service makes, their settings, and what it asks the cluster.
//!
//! The settings that make the delivery contract hold are set here and nowhere else: the producer
//! is idempotent with `acks=all`; the consumer never stores offsets on its own (the guarantee in
//! force stores them once a record's effects are acknowledged) and uses the cooperative-sticky
//! assignor. Under exactly-once the producer is transactional and the consumer reads committed
//! records only and never commits (offsets go into the transactions). Users' `[kafka.consumer]`
//! and `[kafka.producer]` properties come last and win.
//!
//! The admin and metadata calls here block the processing thread; they run at start only.

use super::error::ServiceError;
use super::offsets::TopicPartition;
use crate::config::{ms, Config};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{Client, ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::{KafkaResult, RDKafkaErrorCode};
use std::time::Duration;

/// Settings shared by every client (brokers, security, client id).
pub fn common(config: &Config) -> Result<Vec<(String, String)>, ServiceError> {
    config
        .kafka
        .common_properties()
        .map_err(|m| ServiceError::Config("kafka.sasl".into(), m))
}

fn with_common(common: &[(String, String)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (key, v) in common {
        c.set(key, v);
    }
    c
}

/// The producer of alerts, dead letters, repartition records and changelog entries.
pub fn producer(config: &Config, common: &[(String, String)]) -> ClientConfig {
    let k = &config.kafka;
    let mut pc = with_common(common);
    pc.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", "lz4");
    if config.processing.exactly_once() {
        pc.set(
            "transactional.id",
            config.processing.transactional_id_for(&k.group_id),
        )
        .set(
            "transaction.timeout.ms",
            ms(config.processing.transaction_timeout).to_string(),
        );
    }
    for (key, v) in &k.producer {
        pc.set(key, v);
    }
    pc
}

/// The group consumer of the input topics (and the repartition topic).
pub fn consumer(config: &Config, common: &[(String, String)]) -> ClientConfig {
    let k = &config.kafka;
    let mut cc = with_common(common);
    cc.set("group.id", &k.group_id)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set(
            "auto.commit.interval.ms",
            ms(config.service.commit_interval).max(1).to_string(),
        )
        .set("auto.offset.reset", "earliest")
        .set("statistics.interval.ms", "5000")
        .set("partition.assignment.strategy", "cooperative-sticky");
    if config.processing.exactly_once() {
        // Offsets are committed inside the transactions; upstream transactional producers'
        // aborted records are never read.
        cc.set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed");
    }
    for (key, v) in &k.consumer {
        cc.set(key, v);
    }
    cc
}

/// A consumer outside the group, for reading one changelog partition back.
pub fn restore_consumer(common: &[(String, String)]) -> KafkaResult<BaseConsumer> {
    with_common(common)
        .set("group.id", "cloudwarden-restore")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "50")
        .create()
}

/// An internal topic the service owns (repartition, changelog).
pub struct InternalTopic<'a> {
    pub name: &'a str,
    pub partitions: i32,
    pub replication_factor: i32,
    pub settings: &'a [(&'a str, String)],
    /// May the service create it when it is missing (`repartition.create_topic`)?
    pub create: bool,
    /// The config section named in errors (`repartition` or `state`).
    pub section: &'a str,
}

/// Creates an internal topic if it is missing (and allowed to), and checks its partition count:
/// a different count would send keys to other owners than before.
pub fn ensure_topic<C: ClientContext>(
    client: &Client<C>,
    common: &[(String, String)],
    t: &InternalTopic<'_>,
) -> Result<(), ServiceError> {
    let (topic, partitions, section) = (t.name, t.partitions, t.section);
    match topic_partitions(client, topic) {
        Some(n) if n == partitions as usize => return Ok(()),
        Some(n) => {
            return Err(ServiceError::Config(
                "repartition.partitions".into(),
                format!("topic {topic} exists with {n} partitions, the config says {partitions}: use the topic's count or a new topic"),
            ))
        }
        None if !t.create => {
            return Err(ServiceError::Config(
                "repartition.create_topic".into(),
                format!("topic {topic} does not exist and create_topic is false"),
            ))
        }
        None => {}
    }
    let admin: AdminClient<DefaultClientContext> = with_common(common).create()?;
    let mut new = NewTopic::new(
        topic,
        partitions,
        TopicReplication::Fixed(t.replication_factor),
    );
    for (k, v) in t.settings {
        new = new.set(k, v);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ServiceError::Config(format!("{section}.topic"), e.to_string()))?;
    let results = rt.block_on(admin.create_topics(
        [&new],
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
    ))?;
    for res in results {
        if let Err((t, code)) = res {
            if code != RDKafkaErrorCode::TopicAlreadyExists {
                return Err(ServiceError::Config(
                    format!("{section}.topic"),
                    format!("cannot create topic {t}: {code}"),
                ));
            }
        }
    }
    tracing::info!(topic, partitions, "created an internal topic");
    Ok(())
}

/// The partition count of a topic, `None` when it does not exist. Asks for every topic's
/// metadata: a producer's request for one named topic lets the broker auto-create it (Apache
/// Kafka's default `auto.create.topics.enable=true`) with the broker's default partition count.
pub fn topic_partitions<C: ClientContext>(client: &Client<C>, topic: &str) -> Option<usize> {
    let md = client.fetch_metadata(None, Duration::from_secs(10)).ok()?;
    md.topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.partitions().len())
}

/// Every partition of the input topics (stage 2 waits for a marker from each).
pub fn input_partitions<C: ClientContext>(
    client: &Client<C>,
    topics: &[String],
) -> Vec<(String, i32)> {
    let mut out = Vec::new();
    for t in topics {
        if let Some(n) = topic_partitions(client, t) {
            out.extend((0..n as i32).map(|p| (t.clone(), p)));
        }
    }
    out
}

/// The end offset of a partition as of the last fetch response (librdkafka's cache,
/// `rd_kafka_get_watermark_offsets`: no broker round trip; rust-rdkafka only wraps the querying
/// variant).
pub fn cached_high_watermark<C: ClientContext>(
    client: &Client<C>,
    tp: &TopicPartition,
) -> Option<i64> {
    let topic = std::ffi::CString::new(tp.topic.as_str()).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid while `client` lives, the topic is a valid C string,
    // and librdkafka only writes the two out-parameters.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            client.native_ptr(),
            topic.as_ptr(),
            tp.partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some(high)
}
