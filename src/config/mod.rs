//! The deploy config: one TOML file, every tunable with a documented default.
//!
//! Structs deny unknown fields (a typo is an error that names the key, not a silently ignored
//! setting) and take their defaults from `Default` impls, so an empty file is a valid config.
//! [`Config::validate`] checks values and names the offending key. `deploy/cloudwarden.toml` is
//! the annotated copy of these defaults; a test keeps the two equal.
//!
//! Raw and validated are two types: [`Config`] is what serde reads, [`Valid`] (from
//! [`Config::load`] or [`Config::validated`]) is a checked config holding the compiled catalog,
//! cheap to clone, which the engine and the topology take as is, so checks and catalog
//! compilation run once per process, not once per constructor.
//!
//! This file holds the sections of the runtime itself; [`common`] the settings every detector
//! shares and the value checks; each detector's own section and its checks live beside the
//! detector in `detect/` (re-exported here, so `config::SecretFetchRateConfig` still resolves),
//! and the Kafka sections in `kafka::config`.

pub mod common;

pub(crate) use common::{at_least_one, detector_config, invalid, positive};
pub use common::{ms, CommonSettings, Mode, ScopeOverride, Section};

pub use crate::detect::discovery_burst::DiscoveryBurstConfig;
pub use crate::detect::log_disable::LogDisableConfig;
pub use crate::detect::log_source_silence::LogSourceSilenceConfig;
pub use crate::detect::per_event::{
    ConditionalAccessConfig, EventTriggerConfig, ImpairDefensesConfig, ServerlessConfig,
    TenantSettingsConfig,
};
pub use crate::detect::quota_change::QuotaChangeConfig;
pub use crate::detect::secret_fetch_rate::SecretFetchRateConfig;
pub use crate::detect::DetectorsConfig;

use crate::alert::format::AlertFormat;
use crate::catalog::{Catalog, CatalogError, RuleSpec};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A config error, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid config: {0}")]
    Parse(String),
    #[error("invalid config: `{key}`: {message}")]
    Invalid { key: String, message: String },
    #[error("invalid config: `catalog.rule`: {0}")]
    Catalog(#[from] CatalogError),
}

/// The whole config.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub decode: DecodeConfig,
    pub time: TimeConfig,
    pub catalog: CatalogConfig,
    pub alerts: AlertsConfig,
    pub replay: ReplayConfig,
    pub detectors: DetectorsConfig,
    pub kafka: crate::kafka::config::KafkaConfig,
    pub service: crate::kafka::config::ServiceConfig,
    pub repartition: crate::kafka::config::RepartitionConfig,
    pub state: crate::kafka::config::StateConfig,
    pub processing: crate::kafka::config::ProcessingConfig,
    pub sigma: crate::sigma::SigmaConfig,
}

impl Config {
    /// Parses TOML text; unknown keys are rejected with their name. The result is checked
    /// (see [`Config::validated`] for a value that says so).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config = Config::parse(text)?;
        config.validate()?;
        Ok(config)
    }

    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        Config::from_toml(&Config::read(path)?)
    }

    /// Reads, parses and validates a config file, compiling its catalog once.
    pub fn load(path: &Path) -> Result<Valid, ConfigError> {
        Config::parse(&Config::read(path)?)?.validated()
    }

    /// Checks every value and compiles the catalog: the config as the runtime takes it.
    pub fn validated(self) -> Result<Valid, ConfigError> {
        self.check()?;
        let catalog = Arc::new(self.catalog()?);
        let sigma = Arc::new(crate::sigma::Rules::from_config(&self.sigma)?);
        Ok(Valid(Arc::new(Validated {
            config: self,
            catalog,
            sigma,
        })))
    }

    fn read(path: &Path) -> Result<String, ConfigError> {
        std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))
    }

    /// Checks every value (and that the catalog compiles); the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check()?;
        self.catalog()?;
        crate::sigma::Rules::from_config(&self.sigma)?;
        Ok(())
    }

    /// Every check but the catalog's.
    fn check(&self) -> Result<(), ConfigError> {
        if self.decode.max_record_bytes < 64 {
            return Err(invalid("decode.max_record_bytes", "must be at least 64"));
        }
        if self.alerts.max_samples > 100 {
            return Err(invalid("alerts.max_samples", "must be at most 100"));
        }
        if self.alerts.suppression.burst == 0 {
            return Err(invalid("alerts.suppression.burst", "must be at least 1"));
        }
        positive("alerts.suppression.period", self.alerts.suppression.period)?;
        at_least_one(
            "alerts.suppression.max_keys",
            self.alerts.suppression.max_keys,
        )?;
        at_least_one("alerts.evidence_ring", self.alerts.evidence_ring)?;
        positive("time.check_interval", self.time.check_interval)?;
        at_least_one("replay.reorder_buffer", self.replay.reorder_buffer)?;
        self.detectors.validate()?;
        self.kafka
            .validate()
            .map_err(|(key, message)| ConfigError::Invalid { key, message })?;
        self.repartition
            .validate(&self.kafka)
            .map_err(|(key, message)| ConfigError::Invalid { key, message })?;
        self.state
            .validate(&self.kafka, &self.repartition)
            .map_err(|(key, message)| ConfigError::Invalid { key, message })?;
        self.processing
            .validate(&self.repartition, &self.state)
            .map_err(|(key, message)| ConfigError::Invalid { key, message })?;
        positive("service.idle_timeout", self.service.idle_timeout)?;
        positive(
            "service.partition_idle_timeout",
            self.service.partition_idle_timeout,
        )?;
        positive("service.commit_interval", self.service.commit_interval)?;
        at_least_one("service.max_in_flight", self.service.max_in_flight)?;
        if self.service.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(
                "service.listen",
                "must be an address like 0.0.0.0:9464",
            ));
        }
        Ok(())
    }

    /// The catalog this config selects: the default plus extra rules, or only the config's rules.
    pub fn catalog(&self) -> Result<Catalog, ConfigError> {
        let mut rules = if self.catalog.replace_default {
            Vec::new()
        } else {
            crate::catalog::parse_rules(crate::catalog::DEFAULT_CATALOG)?
        };
        rules.extend(self.catalog.rule.iter().cloned());
        if rules.is_empty() {
            return Err(invalid(
                "catalog.rule",
                "replace_default = true needs at least one rule",
            ));
        }
        Ok(Catalog::compile(rules)?)
    }
}

/// A checked config with its compiled catalog ([`Config::load`], [`Config::validated`]): reads
/// as a [`Config`] (`Deref`), clones as an `Arc`.
#[derive(Clone)]
pub struct Valid(Arc<Validated>);

struct Validated {
    config: Config,
    catalog: Arc<Catalog>,
    sigma: Arc<crate::sigma::Rules>,
}

impl Valid {
    /// The compiled catalog (shadows [`Config::catalog`], which compiles a new one).
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.0.catalog
    }

    /// The loaded Sigma rules (empty when `sigma.rules` is).
    pub fn sigma(&self) -> &Arc<crate::sigma::Rules> {
        &self.0.sigma
    }

    pub fn config(&self) -> &Config {
        &self.0.config
    }
}

impl std::ops::Deref for Valid {
    type Target = Config;

    fn deref(&self) -> &Config {
        &self.0.config
    }
}

impl std::fmt::Debug for Valid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Valid").field(&self.0.config).finish()
    }
}

/// What a constructor that needs a checked config accepts, by reference: a [`Valid`], taken as
/// is (an `Arc` clone), or a [`Config`], checked and its catalog compiled on the spot (so
/// `Engine::new(&config)` keeps working).
pub trait ToValid {
    fn to_valid(&self) -> Result<Valid, ConfigError>;
}

impl ToValid for Valid {
    fn to_valid(&self) -> Result<Valid, ConfigError> {
        Ok(self.clone())
    }
}

impl ToValid for Config {
    fn to_valid(&self) -> Result<Valid, ConfigError> {
        self.clone().validated()
    }
}

/// `[decode]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecodeConfig {
    /// Records larger than this are rejected as `too_large` before parsing.
    pub max_record_bytes: usize,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        DecodeConfig {
            max_record_bytes: 1 << 20,
        }
    }
}

/// `[time]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeConfig {
    /// How far behind the newest event time a record may arrive and still count in windows.
    /// CloudTrail delivers in ~5-minute batches, so less than 5 minutes loses real events.
    #[serde(with = "humantime_serde")]
    pub allowed_lateness: Duration,
    /// How often (in event time) silence and window expiry are checked.
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
}

impl Default for TimeConfig {
    fn default() -> Self {
        TimeConfig {
            allowed_lateness: Duration::from_secs(5 * 60),
            check_interval: Duration::from_secs(60),
        }
    }
}

/// `[catalog]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogConfig {
    /// Use only the rules below instead of adding them to the embedded default catalog.
    pub replace_default: bool,
    /// Extra rules (`[[catalog.rule]]`), same format as the default catalog.
    pub rule: Vec<RuleSpec>,
}

/// `[alerts]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// How an alert becomes the alerts topic's record value: `ocsf` (an OCSF 1.8.0 Detection
    /// Finding, class 2004) or `cloudwarden.v1` (the `alert.v1` JSON document); `text` (one
    /// human-readable line) is for terminals.
    pub format: AlertFormat,
    /// Sample values and source event ids carried in an alert's evidence (each).
    pub max_samples: usize,
    /// Recent evidence entries kept per stateful detector to draw samples from (a ring, so
    /// samples cost no per-key memory).
    pub evidence_ring: usize,
    pub suppression: SuppressionConfig,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            format: AlertFormat::Ocsf,
            max_samples: 5,
            evidence_ring: 4096,
            suppression: SuppressionConfig::default(),
        }
    }
}

/// `[alerts.suppression]`: a rate limit per (detector, dedup key), in event time.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SuppressionConfig {
    /// Alerts allowed at once per (detector, key).
    pub burst: u32,
    /// The event-time window `burst` counts in (aligned to the epoch).
    #[serde(with = "humantime_serde")]
    pub period: Duration,
    /// Keys tracked by the limiter; beyond, idle keys are swept (counted as evictions).
    pub max_keys: usize,
}

impl Default for SuppressionConfig {
    fn default() -> Self {
        SuppressionConfig {
            burst: 3,
            period: Duration::from_secs(15 * 60),
            max_keys: 100_000,
        }
    }
}

/// `[replay]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplayConfig {
    /// Events held per input file to put it in event-time order before merging files.
    pub reorder_buffer: usize,
}

impl Default for ReplayConfig {
    fn default() -> Self {
        ReplayConfig {
            reorder_buffer: 100_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_the_default() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.detectors.secret_fetch_rate.count_threshold, 20);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml("[detectors.secret_fetch_rate]\ncount_treshold = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("count_treshold"), "{err}");
        let err = Config::from_toml("[detectorz]\n").unwrap_err().to_string();
        assert!(err.contains("detectorz"), "{err}");
    }

    #[test]
    fn invalid_value_is_named() {
        let err =
            Config::from_toml("[detectors.secret_fetch_rate]\npane = \"10m\"\nwindow = \"5m\"\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("detectors.secret_fetch_rate.pane"), "{err}");
        let err = Config::from_toml("[detectors.log_source_silence]\nalpha = 1.5\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("detectors.log_source_silence.alpha"), "{err}");
    }

    #[test]
    fn exactly_once_is_checked_and_needs_the_changelog() {
        let c = Config::from_toml("[processing]\nguarantee = \"exactly_once\"\n").unwrap();
        assert!(c.processing.exactly_once());
        let err = Config::from_toml(
            "[processing]\nguarantee = \"exactly_once\"\n[repartition]\nenabled = false\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("processing.guarantee"), "{err}");
        let err = Config::from_toml("[processing]\nguarantee = \"exactly_twice\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("exactly_twice"), "{err}");
        let err = Config::from_toml("[processing]\ntransaction_interval = \"45s\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("processing.transaction_interval"), "{err}");
    }

    #[test]
    fn scope_overrides_and_allow_lists() {
        let c = Config::from_toml(
            r#"
[detectors.log_disable]
allow_principals = ["arn:aws:iam::1:role/terraform*"]
[detectors.log_disable.scopes."222"]
dry_run = true
[detectors.log_disable.scopes."333"]
enabled = false
"#,
        )
        .unwrap();
        let d = &c.detectors.log_disable;
        assert_eq!(d.mode("111", "arn:aws:iam::1:user/bob"), Mode::Live);
        assert_eq!(d.mode("111", "arn:aws:iam::1:role/terraform-ci"), Mode::Off);
        assert_eq!(d.mode("222", "arn:aws:iam::1:user/bob"), Mode::DryRun);
        assert_eq!(d.mode("333", "arn:aws:iam::1:user/bob"), Mode::Off);
    }
}
