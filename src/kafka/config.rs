//! `[kafka]` and `[service]`: where to read, where to write, how to authenticate, and the
//! service's own knobs. Plain serde structs, compiled with or without the `kafka` feature, so a
//! deploy config is validated the same way by every build.
//!
//! Secrets never live in the file: a SASL password comes from an environment variable or a file
//! (a Kubernetes Secret mounted as a file), and `Debug` of the resolved settings redacts it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// `[kafka]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port]`.
    pub brokers: String,
    /// Consumer group of the service.
    pub group_id: String,
    /// Topics of raw audit records (any supported format, one record per message).
    pub input_topics: Vec<String>,
    /// Topic the alerts are written to (key = the alert id, value as `alerts.format` says).
    pub alerts_topic: String,
    /// Topic undecodable records go to, unchanged, with headers giving the reason and origin.
    pub dead_letter_topic: String,
    /// `client.id` of the consumer and producer.
    pub client_id: String,
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub security_protocol: SecurityProtocol,
    pub sasl: SaslConfig,
    pub tls: TlsConfig,
    /// Any librdkafka consumer property, passed through (`[kafka.consumer]`).
    pub consumer: BTreeMap<String, String>,
    /// Any librdkafka producer property, passed through (`[kafka.producer]`).
    pub producer: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "localhost:9092".into(),
            group_id: "cloudwarden".into(),
            input_topics: vec!["cloud-audit".into()],
            alerts_topic: "cloudwarden-alerts".into(),
            dead_letter_topic: "cloudwarden-dead-letter".into(),
            client_id: "cloudwarden".into(),
            security_protocol: SecurityProtocol::Plaintext,
            sasl: SaslConfig::default(),
            tls: TlsConfig::default(),
            consumer: BTreeMap::new(),
            producer: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn as_librdkafka(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }

    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// `[kafka.sasl]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SaslConfig {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: String,
    pub username: String,
    /// Environment variable holding the password.
    pub password_env: String,
    /// File holding the password (trailing newline ignored).
    pub password_file: String,
}

/// `[kafka.tls]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// CA bundle to verify the brokers (`ssl.ca.location`); system store when empty.
    pub ca_file: String,
    /// Client certificate and key for mutual TLS.
    pub cert_file: String,
    pub key_file: String,
    /// Environment variable holding the key's password, if any.
    pub key_password_env: String,
}

/// `[service]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// Where `/metrics`, `/health` and `/ready` are served.
    pub listen: String,
    /// With no input at all for this long, the watermark advances with wall-clock time, so
    /// silence is still detected when every source goes quiet.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A partition with no record for this long stops holding the watermark back.
    #[serde(with = "humantime_serde")]
    pub partition_idle_timeout: Duration,
    /// Messages (alerts, dead letters) awaiting broker acknowledgement before consumption pauses.
    pub max_in_flight: usize,
    /// How often stored offsets are committed.
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// On revocation and shutdown, how long to wait for in-flight acknowledgements.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// `/ready` is true once partitions are assigned and the consumer lag is at most this.
    pub ready_max_lag: i64,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            listen: "0.0.0.0:9464".into(),
            idle_timeout: Duration::from_secs(30),
            partition_idle_timeout: Duration::from_secs(60),
            max_in_flight: 10_000,
            commit_interval: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(10),
            ready_max_lag: 10_000,
        }
    }
}

/// `[repartition]`: the internal topic between stage 1 (input partitions) and stage 2 (state
/// owners). See the README's "Scaling out".
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RepartitionConfig {
    /// Route through the repartition topic. Off only when every instance may see a key's events
    /// on its own partitions (one instance, or input keyed by principal with only principal
    /// detectors enabled).
    pub enabled: bool,
    /// The topic; empty means `<kafka.group_id>-repartition`.
    pub topic: String,
    /// Partitions of the topic: the most instances that can share the stateful work.
    pub partitions: i32,
    /// Replication factor when the service creates the topic; -1 takes the broker's default.
    pub replication_factor: i32,
    /// `retention.ms` of the topic when the service creates it. Records are read within seconds;
    /// retention only bounds what a stopped group can still catch up on.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Create the topic at start when it is missing.
    pub create_topic: bool,
    /// How often (wall clock) each instance sends the watermark of its input partitions to every
    /// repartition partition.
    #[serde(with = "humantime_serde")]
    pub marker_interval: Duration,
    /// Items a repartition partition may hold while waiting for the watermark; past it the
    /// oldest is processed early (counted in `cloudwarden_reorder_forced_total`).
    pub max_buffered: usize,
}

impl Default for RepartitionConfig {
    fn default() -> Self {
        RepartitionConfig {
            enabled: true,
            topic: String::new(),
            partitions: 12,
            replication_factor: -1,
            retention: Duration::from_secs(24 * 3600),
            create_topic: true,
            marker_interval: Duration::from_millis(200),
            max_buffered: 200_000,
        }
    }
}

impl RepartitionConfig {
    /// The topic name for a consumer group.
    pub fn topic_for(&self, group_id: &str) -> String {
        if self.topic.is_empty() {
            format!("{group_id}-repartition")
        } else {
            self.topic.clone()
        }
    }

    /// Checks the section; the error names the key.
    pub fn validate(&self, kafka: &KafkaConfig) -> Result<(), (String, String)> {
        let err = |k: &str, m: &str| Err((format!("repartition.{k}"), m.to_owned()));
        if !(1..=10_000).contains(&self.partitions) {
            return err("partitions", "must be between 1 and 10000");
        }
        if self.replication_factor == 0 || self.replication_factor < -1 {
            return err(
                "replication_factor",
                "must be -1 (broker default) or at least 1",
            );
        }
        if self.retention.is_zero() {
            return err("retention", "must be positive");
        }
        if self.marker_interval.is_zero() || self.marker_interval > Duration::from_secs(60) {
            return err("marker_interval", "must be between 1ms and 60s");
        }
        if self.max_buffered == 0 {
            return err("max_buffered", "must be at least 1");
        }
        let topic = self.topic_for(&kafka.group_id);
        if kafka.input_topics.contains(&topic)
            || topic == kafka.alerts_topic
            || topic == kafka.dead_letter_topic
        {
            return err(
                "topic",
                "must differ from the input, alerts and dead-letter topics",
            );
        }
        Ok(())
    }
}

/// `[state]`: durable window state (repartitioned service).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// Checkpoint stage 2's windows, baselines and suppression to a compacted changelog topic,
    /// and restore them when a repartition partition is assigned.
    pub changelog: bool,
    /// The topic; empty means `<kafka.group_id>-changelog`. Same partition count as the
    /// repartition topic (partition r holds repartition partition r's state).
    pub changelog_topic: String,
    /// Replication factor when the service creates the changelog topic; -1: broker default.
    pub replication_factor: i32,
    /// How often changed state is written. Repartition offsets are committed only up to the last
    /// acknowledged checkpoint, so this bounds what a crash makes the next owner read again.
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// Give up restoring a partition after this long (its state then starts fresh, reported).
    #[serde(with = "humantime_serde")]
    pub restore_timeout: Duration,
    /// Single node without the repartition step (`repartition.enabled = false`): a local file
    /// the engine's state is checkpointed to every `checkpoint_interval`, with the input offsets
    /// it reflects, and restored from at start. Empty: no local state (a restart starts fresh).
    pub snapshot_path: String,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            changelog: true,
            changelog_topic: String::new(),
            replication_factor: -1,
            checkpoint_interval: Duration::from_secs(5),
            restore_timeout: Duration::from_secs(300),
            snapshot_path: String::new(),
        }
    }
}

impl StateConfig {
    pub fn topic_for(&self, group_id: &str) -> String {
        if self.changelog_topic.is_empty() {
            format!("{group_id}-changelog")
        } else {
            self.changelog_topic.clone()
        }
    }

    pub fn validate(
        &self,
        kafka: &KafkaConfig,
        repartition: &RepartitionConfig,
    ) -> Result<(), (String, String)> {
        let err = |k: &str, m: &str| Err((format!("state.{k}"), m.to_owned()));
        if self.replication_factor == 0 || self.replication_factor < -1 {
            return err(
                "replication_factor",
                "must be -1 (broker default) or at least 1",
            );
        }
        if self.checkpoint_interval.is_zero() {
            return err("checkpoint_interval", "must be positive");
        }
        if self.restore_timeout.is_zero() {
            return err("restore_timeout", "must be positive");
        }
        if !self.snapshot_path.is_empty() && repartition.enabled {
            return err(
                "snapshot_path",
                "is for a single node without the repartition step (repartition.enabled = false); with it, state lives in the changelog topic",
            );
        }
        let topic = self.topic_for(&kafka.group_id);
        if kafka.input_topics.contains(&topic)
            || topic == kafka.alerts_topic
            || topic == kafka.dead_letter_topic
            || topic == repartition.topic_for(&kafka.group_id)
        {
            return err("changelog_topic", "must differ from every other topic");
        }
        Ok(())
    }
}

/// Delivery guarantee of the service (`processing.guarantee`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Guarantee {
    /// Alerts are acknowledged before their input offsets are committed; a crash re-raises some
    /// alerts (same ids), never loses one.
    #[default]
    AtLeastOnce,
    /// Kafka transactions: alerts, dead letters, repartition and changelog records and the input
    /// offsets are committed together. Readers must use `isolation.level=read_committed`.
    ExactlyOnce,
}

/// `[processing]`: the delivery guarantee and, for exactly-once, the transactions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessingConfig {
    /// `at_least_once` (default) or `exactly_once`.
    pub guarantee: Guarantee,
    /// Exactly-once: how often the open transaction is committed. Alerts become visible to
    /// `read_committed` readers at commit, so this adds up to this much latency.
    #[serde(with = "humantime_serde")]
    pub transaction_interval: Duration,
    /// Exactly-once: the producer's `transactional.id`; empty means `<kafka.group_id>-<host
    /// name>`. Must be unique per running instance and stable across its restarts (a restart then
    /// aborts the transaction its predecessor left open at once, instead of after
    /// `transaction_timeout`). In a StatefulSet, the pod name.
    pub transactional_id: String,
    /// Exactly-once: the broker aborts a transaction left open this long (`transaction.timeout.ms`;
    /// at most the broker's `transaction.max.timeout.ms`, 15 min by default).
    #[serde(with = "humantime_serde")]
    pub transaction_timeout: Duration,
    /// Exactly-once: the longest one transactional call (send offsets, commit, abort) may take,
    /// retries of retriable errors included; past it the transaction is aborted and the instance
    /// rewinds. A call librdkafka has not returned from 5 s after this (its transaction manager
    /// can wait for a coordinator with no bound of its own) means the producer is stuck: the
    /// service stops with an error, and a restart fences the stuck producer.
    #[serde(with = "humantime_serde")]
    pub transaction_call_timeout: Duration,
}

impl Default for ProcessingConfig {
    fn default() -> Self {
        ProcessingConfig {
            guarantee: Guarantee::AtLeastOnce,
            transaction_interval: Duration::from_millis(500),
            transactional_id: String::new(),
            transaction_timeout: Duration::from_secs(60),
            transaction_call_timeout: Duration::from_secs(10),
        }
    }
}

impl ProcessingConfig {
    pub fn exactly_once(&self) -> bool {
        self.guarantee == Guarantee::ExactlyOnce
    }

    /// The transactional id (see [`ProcessingConfig::transactional_id`]).
    pub fn transactional_id_for(&self, group_id: &str) -> String {
        if !self.transactional_id.is_empty() {
            return self.transactional_id.clone();
        }
        let host = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
            })
            .unwrap_or_else(|| "localhost".into());
        format!("{group_id}-{host}")
    }

    /// Checks the section; the error names the key.
    pub fn validate(
        &self,
        repartition: &RepartitionConfig,
        state: &StateConfig,
    ) -> Result<(), (String, String)> {
        let err = |k: &str, m: &str| Err((format!("processing.{k}"), m.to_owned()));
        if self.transaction_timeout < Duration::from_secs(1) {
            return err("transaction_timeout", "must be at least 1s");
        }
        if self.transaction_call_timeout < Duration::from_secs(1)
            || self.transaction_call_timeout > self.transaction_timeout
        {
            return err(
                "transaction_call_timeout",
                "must be at least 1s and at most processing.transaction_timeout",
            );
        }
        if self.transaction_interval < Duration::from_millis(10)
            || self.transaction_interval * 2 > self.transaction_timeout
        {
            return err(
                "transaction_interval",
                "must be at least 10ms and at most half of processing.transaction_timeout",
            );
        }
        if self.exactly_once() && !(repartition.enabled && state.changelog) {
            return err(
                "guarantee",
                "exactly_once needs the window state in the changelog: set repartition.enabled = true and state.changelog = true",
            );
        }
        Ok(())
    }
}

/// A resolved SASL password; never printed.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl KafkaConfig {
    /// Checks the section; the error names the key.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |k: &str, m: &str| Err((format!("kafka.{k}"), m.to_owned()));
        if self.brokers.trim().is_empty() {
            return err("brokers", "must not be empty");
        }
        if self.group_id.trim().is_empty() {
            return err("group_id", "must not be empty");
        }
        if self.input_topics.is_empty() || self.input_topics.iter().any(|t| t.trim().is_empty()) {
            return err("input_topics", "must list at least one non-empty topic");
        }
        if self.alerts_topic.trim().is_empty() {
            return err("alerts_topic", "must not be empty");
        }
        if self.dead_letter_topic.trim().is_empty() {
            return err("dead_letter_topic", "must not be empty");
        }
        if self.security_protocol.uses_sasl() {
            if !matches!(
                self.sasl.mechanism.as_str(),
                "PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512"
            ) {
                return err(
                    "sasl.mechanism",
                    "must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
                );
            }
            if self.sasl.username.is_empty() {
                return err("sasl.username", "is required with SASL");
            }
            if self.sasl.password_env.is_empty() == self.sasl.password_file.is_empty() {
                return err(
                    "sasl.password_env",
                    "set exactly one of password_env and password_file",
                );
            }
        }
        for (k, _) in self.consumer.iter().chain(&self.producer) {
            if k.contains("password") || k == "sasl.jaas.config" {
                return err("consumer", "put secrets in [kafka.sasl] (password_env / password_file), not in pass-through properties");
            }
        }
        Ok(())
    }

    /// The SASL password from its environment variable or file.
    pub fn sasl_password(&self) -> Result<Option<Secret>, String> {
        if !self.security_protocol.uses_sasl() {
            return Ok(None);
        }
        if !self.sasl.password_env.is_empty() {
            return std::env::var(&self.sasl.password_env)
                .map(|p| Some(Secret(p)))
                .map_err(|_| {
                    format!(
                        "kafka.sasl.password_env: environment variable {} is not set",
                        self.sasl.password_env
                    )
                });
        }
        let path = PathBuf::from(&self.sasl.password_file);
        std::fs::read_to_string(&path)
            .map(|p| Some(Secret(p.trim_end_matches(['\n', '\r']).to_owned())))
            .map_err(|e| {
                format!(
                    "kafka.sasl.password_file: cannot read {}: {e}",
                    path.display()
                )
            })
    }

    /// librdkafka properties shared by consumer and producer (security), secrets resolved.
    pub fn common_properties(&self) -> Result<Vec<(String, String)>, String> {
        let mut p = vec![
            ("bootstrap.servers".to_owned(), self.brokers.clone()),
            ("client.id".to_owned(), self.client_id.clone()),
            (
                "security.protocol".to_owned(),
                self.security_protocol.as_librdkafka().to_owned(),
            ),
        ];
        if self.security_protocol.uses_sasl() {
            p.push(("sasl.mechanism".into(), self.sasl.mechanism.clone()));
            p.push(("sasl.username".into(), self.sasl.username.clone()));
            if let Some(secret) = self.sasl_password()? {
                p.push(("sasl.password".into(), secret.expose().to_owned()));
            }
        }
        if !self.tls.ca_file.is_empty() {
            p.push(("ssl.ca.location".into(), self.tls.ca_file.clone()));
        }
        if !self.tls.cert_file.is_empty() {
            p.push((
                "ssl.certificate.location".into(),
                self.tls.cert_file.clone(),
            ));
        }
        if !self.tls.key_file.is_empty() {
            p.push(("ssl.key.location".into(), self.tls.key_file.clone()));
        }
        if !self.tls.key_password_env.is_empty() {
            let pw = std::env::var(&self.tls.key_password_env).map_err(|_| {
                format!(
                    "kafka.tls.key_password_env: {} is not set",
                    self.tls.key_password_env
                )
            })?;
            p.push(("ssl.key.password".into(), pw));
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sasl(mechanism: &str) -> KafkaConfig {
        KafkaConfig {
            security_protocol: SecurityProtocol::SaslSsl,
            sasl: SaslConfig {
                mechanism: mechanism.into(),
                username: "svc".into(),
                password_env: "CLOUDWARDEN_TEST_SASL_PASSWORD".into(),
                password_file: String::new(),
            },
            ..KafkaConfig::default()
        }
    }

    #[test]
    fn sasl_settings_are_checked_and_named() {
        assert!(sasl("SCRAM-SHA-512").validate().is_ok());
        let (key, _) = sasl("SCRAM-SHA-1").validate().unwrap_err();
        assert_eq!(key, "kafka.sasl.mechanism");
        let mut both = sasl("PLAIN");
        both.sasl.password_file = "/run/secrets/pw".into();
        assert_eq!(both.validate().unwrap_err().0, "kafka.sasl.password_env");
        let mut leaked = KafkaConfig::default();
        leaked
            .consumer
            .insert("sasl.password".into(), "hunter2".into());
        assert_eq!(leaked.validate().unwrap_err().0, "kafka.consumer");
    }

    #[test]
    fn password_from_env_or_file_never_printed() {
        std::env::set_var("CLOUDWARDEN_TEST_SASL_PASSWORD", "s3cret-env");
        let c = sasl("SCRAM-SHA-256");
        let secret = c.sasl_password().unwrap().unwrap();
        assert_eq!(secret.expose(), "s3cret-env");
        assert_eq!(format!("{secret:?}"), "<redacted>");
        let props = c.common_properties().unwrap();
        assert!(props.contains(&("sasl.password".into(), "s3cret-env".into())));
        assert!(props.contains(&("security.protocol".into(), "sasl_ssl".into())));

        let dir = std::env::temp_dir().join(format!("cw-pw-{}", std::process::id()));
        std::fs::write(&dir, "s3cret-file\n").unwrap();
        let mut f = sasl("PLAIN");
        f.sasl.password_env = String::new();
        f.sasl.password_file = dir.display().to_string();
        assert_eq!(f.sasl_password().unwrap().unwrap().expose(), "s3cret-file");
        std::fs::remove_file(&dir).unwrap();
        let missing = f.sasl_password().unwrap_err();
        assert!(missing.contains("kafka.sasl.password_file"), "{missing}");
    }

    #[test]
    fn transaction_call_timeout_is_bounded_by_the_transaction_timeout() {
        let (r, st) = (RepartitionConfig::default(), StateConfig::default());
        let mut p = ProcessingConfig::default();
        assert!(p.validate(&r, &st).is_ok());
        p.transaction_call_timeout = Duration::from_millis(500);
        let key = p.validate(&r, &st).unwrap_err().0;
        assert_eq!(key, "processing.transaction_call_timeout");
        p.transaction_call_timeout = p.transaction_timeout + Duration::from_secs(1);
        let key = p.validate(&r, &st).unwrap_err().0;
        assert_eq!(key, "processing.transaction_call_timeout");
    }
}
