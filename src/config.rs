//! The deploy config: one TOML file, every tunable with a documented default.
//!
//! Structs deny unknown fields (a typo is an error that names the key, not a silently ignored
//! setting) and take their defaults from `Default` impls, so an empty file is a valid config.
//! [`Config::validate`] checks values and names the offending key. `deploy/cloudwarden.toml` is
//! the annotated copy of these defaults; a test keeps the two equal.
//!
//! Each detector owns its section; the settings every detector shares (enable, dry-run, severity,
//! allow-lists, per-scope overrides) are declared once by the `detector_config!` macro.

use crate::alert::Severity;
use crate::catalog::{Catalog, CatalogError, RuleSpec};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
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

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
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
}

impl Config {
    /// Parses TOML text; unknown keys are rejected with their name.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_toml(&text)
    }

    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
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
        self.catalog()?;
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

fn positive(key: &str, d: Duration) -> Result<(), ConfigError> {
    if d.is_zero() {
        Err(invalid(key, "must be greater than zero"))
    } else {
        Ok(())
    }
}

fn at_least_one(key: &str, n: usize) -> Result<(), ConfigError> {
    if n == 0 {
        Err(invalid(key, "must be at least 1"))
    } else {
        Ok(())
    }
}

fn ratio(key: &str, x: f64) -> Result<(), ConfigError> {
    if x > 0.0 && x <= 1.0 {
        Ok(())
    } else {
        Err(invalid(key, "must be in (0, 1]"))
    }
}

fn finite_positive(key: &str, x: f64) -> Result<(), ConfigError> {
    if x.is_finite() && x > 0.0 {
        Ok(())
    } else {
        Err(invalid(key, "must be a positive number"))
    }
}

/// Milliseconds of a config duration (saturating).
pub fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
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

/// Settings for one scope (account / project / subscription / tenant) under
/// `[detectors.<name>.scopes."<scope>"]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScopeOverride {
    pub enabled: Option<bool>,
    pub dry_run: Option<bool>,
    /// Added to the detector's `allow_principals` for this scope.
    pub allow_principals: Vec<String>,
}

/// How a detector treats one event, after allow-lists and scope overrides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Off,
    Live,
    DryRun,
}

/// Patterns with `*` at either end, as in the catalog.
fn pattern_matches(pattern: &str, s: &str) -> bool {
    match (pattern.strip_prefix('*'), pattern.strip_suffix('*')) {
        _ if pattern == "*" => true,
        (Some(rest), _) if rest.ends_with('*') => s.contains(&rest[..rest.len() - 1]),
        (Some(suffix), _) => s.ends_with(suffix),
        (None, Some(prefix)) => s.starts_with(prefix),
        (None, None) => s == pattern,
    }
}

/// The settings every detector shares.
pub trait CommonSettings {
    fn enabled(&self) -> bool;
    fn dry_run(&self) -> bool;
    fn severity(&self) -> Severity;
    fn allow_principals(&self) -> &[String];
    fn allow_scopes(&self) -> &[String];
    fn scopes(&self) -> &BTreeMap<String, ScopeOverride>;

    /// The mode for an event of `scope` by `principal`.
    fn mode(&self, scope: &str, principal: &str) -> Mode {
        let over = self.scopes().get(scope);
        let enabled = over.and_then(|o| o.enabled).unwrap_or(self.enabled());
        if !enabled
            || self
                .allow_scopes()
                .iter()
                .any(|p| pattern_matches(p, scope))
        {
            return Mode::Off;
        }
        let allowed = self
            .allow_principals()
            .iter()
            .chain(
                over.map(|o| o.allow_principals.iter())
                    .into_iter()
                    .flatten(),
            )
            .any(|p| pattern_matches(p, principal));
        if allowed {
            return Mode::Off;
        }
        if over.and_then(|o| o.dry_run).unwrap_or(self.dry_run()) {
            Mode::DryRun
        } else {
            Mode::Live
        }
    }
}

/// Declares a detector config section: the shared settings plus the detector's own, each with
/// its default and doc comment.
macro_rules! detector_config {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            severity = $severity:expr;
            $( $(#[$fmeta:meta])* pub $field:ident : $ty:ty = $default:expr, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Serialize, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct $name {
            /// Run this detector.
            pub enabled: bool,
            /// Emit its alerts marked `dry_run` (for tuning before they page anyone).
            pub dry_run: bool,
            /// Severity of its alerts.
            pub severity: Severity,
            /// Principals (exact, or `*` at either end) whose events this detector ignores.
            pub allow_principals: Vec<String>,
            /// Scopes (accounts, projects, subscriptions, tenants) this detector ignores.
            pub allow_scopes: Vec<String>,
            /// Per-scope overrides: `[detectors.<name>.scopes."123456789012"]`.
            pub scopes: BTreeMap<String, ScopeOverride>,
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl Default for $name {
            fn default() -> Self {
                $name {
                    enabled: true,
                    dry_run: false,
                    severity: $severity,
                    allow_principals: Vec::new(),
                    allow_scopes: Vec::new(),
                    scopes: BTreeMap::new(),
                    $( $field: $default, )*
                }
            }
        }

        impl CommonSettings for $name {
            fn enabled(&self) -> bool { self.enabled }
            fn dry_run(&self) -> bool { self.dry_run }
            fn severity(&self) -> Severity { self.severity }
            fn allow_principals(&self) -> &[String] { &self.allow_principals }
            fn allow_scopes(&self) -> &[String] { &self.allow_scopes }
            fn scopes(&self) -> &BTreeMap<String, ScopeOverride> { &self.scopes }
        }
    };
}

detector_config! {
    /// `[detectors.log_disable]`: logging disabled or modified (T1562.008), per event.
    pub struct LogDisableConfig {
        severity = Severity::High;
        /// Alert on failed attempts too (at one severity lower): an AccessDenied StopLogging is
        /// still an attempt to blind you.
        pub include_failed: bool = true,
    }
}

detector_config! {
    /// `[detectors.log_source_silence]`: a log source that was active goes silent (T1562.008).
    pub struct LogSourceSilenceConfig {
        severity = Severity::Medium;
        /// Key sources by service too (finer: a service that stops logging is noticed even when
        /// the account's other services keep talking).
        pub per_service: bool = false,
        /// Silence threshold = max(k × learned gap, floor).
        pub k: f64 = 10.0,
        /// Minimum silence that can alert.
        #[serde(with = "humantime_serde")]
        pub floor: Duration = Duration::from_secs(30 * 60),
        /// Gaps shorter than this are bursts, not gaps.
        #[serde(with = "humantime_serde")]
        pub resolution: Duration = Duration::from_secs(60),
        /// EWMA weight of the newest gap.
        pub alpha: f64 = 0.2,
        /// Events a source must have sent before its silence is meaningful.
        pub min_events: u32 = 20,
        /// How far back a `log_disable` in the same scope is named in the silence alert.
        #[serde(with = "humantime_serde")]
        pub lookback: Duration = Duration::from_secs(6 * 3600),
        /// Emit a `resolved` record when a silent source resumes.
        pub emit_recovery: bool = true,
        /// Log sources tracked (least recently active evicted beyond).
        pub max_sources: usize = 50_000,
        /// Sources idle this long are forgotten (they no longer count as "was active").
        #[serde(with = "humantime_serde")]
        pub forget_after: Duration = Duration::from_secs(7 * 24 * 3600),
    }
}

detector_config! {
    /// `[detectors.secret_fetch_rate]`: a principal fetching unusually many secrets (T1555.006).
    pub struct SecretFetchRateConfig {
        severity = Severity::High;
        /// Sliding window length.
        #[serde(with = "humantime_serde")]
        pub window: Duration = Duration::from_secs(5 * 60),
        /// Pane width (window resolution).
        #[serde(with = "humantime_serde")]
        pub pane: Duration = Duration::from_secs(30),
        /// Alert when a principal fetches this many secrets in the window (0 disables).
        pub count_threshold: u32 = 20,
        /// Alert when a principal fetches this many distinct secrets in the window (0 disables).
        pub distinct_threshold: u32 = 15,
        /// Weight of a filter-based bulk read (`BatchGetSecretValue` with `filters`), whose
        /// number of secrets the log does not say.
        pub bulk_filter_weight: u32 = 10,
        /// Learn each principal's usual rate and alert above it after warm-up.
        pub baseline: bool = true,
        /// EWMA weight of the newest window-long bucket.
        pub baseline_alpha: f64 = 0.1,
        /// Buckets (window-long) before the baseline is trusted.
        pub baseline_warmup_buckets: u32 = 24,
        /// Standard deviations above the mean that count as unusual.
        pub baseline_k_sigma: f64 = 4.0,
        /// Never alert on the baseline below this count.
        pub baseline_min_count: f64 = 10.0,
        /// Principals tracked (least recently active evicted beyond).
        pub max_keys: usize = 200_000,
        /// Distinct secrets tracked per principal (at least `distinct_threshold`).
        pub max_distinct: usize = 32,
    }
}

detector_config! {
    /// `[detectors.discovery_burst]`: many distinct list/describe/get calls (T1526, T1580, T1046).
    pub struct DiscoveryBurstConfig {
        severity = Severity::Medium;
        #[serde(with = "humantime_serde")]
        pub window: Duration = Duration::from_secs(5 * 60),
        #[serde(with = "humantime_serde")]
        pub pane: Duration = Duration::from_secs(30),
        /// Alert at this many distinct (service, operation) in the window.
        pub distinct_threshold: u32 = 25,
        pub baseline: bool = true,
        pub baseline_alpha: f64 = 0.1,
        pub baseline_warmup_buckets: u32 = 24,
        pub baseline_k_sigma: f64 = 4.0,
        pub baseline_min_count: f64 = 10.0,
        pub max_keys: usize = 200_000,
        /// Distinct operations tracked per principal (at least `distinct_threshold`).
        pub max_distinct: usize = 64,
    }
}

detector_config! {
    /// `[detectors.quota_change]`: quota-increase bursts and increases in unused regions
    /// (T1578, T1578.005), per scope.
    pub struct QuotaChangeConfig {
        severity = Severity::Medium;
        #[serde(with = "humantime_serde")]
        pub window: Duration = Duration::from_secs(3600),
        #[serde(with = "humantime_serde")]
        pub pane: Duration = Duration::from_secs(5 * 60),
        /// Alert at this many quota-increase requests in the window (0 disables).
        pub count_threshold: u32 = 5,
        /// Alert at this many distinct regions with quota requests in the window (0 disables).
        pub region_threshold: u32 = 3,
        /// Alert on a quota increase in a region the scope never used, once the scope has been
        /// watched this long.
        #[serde(with = "humantime_serde")]
        pub region_warmup: Duration = Duration::from_secs(7 * 24 * 3600),
        /// Regions remembered per scope.
        pub max_regions: usize = 64,
        /// Scopes tracked.
        pub max_keys: usize = 100_000,
    }
}

detector_config! {
    /// A per-event detector from the catalog (`tenant_settings`, `event_trigger`,
    /// `impair_defenses`, `conditional_access`, `serverless`).
    pub struct PerEventConfig {
        severity = Severity::Medium;
        /// Only alert the first time a (principal, operation) pair is seen (cuts repeats).
        pub novelty: bool = false,
        /// With `novelty`, learn silently for this long after a principal's first event.
        #[serde(with = "humantime_serde")]
        pub novelty_warmup: Duration = Duration::ZERO,
        /// Principals tracked for novelty.
        pub max_keys: usize = 100_000,
        /// Alert on failed calls too.
        pub include_failed: bool = false,
    }
}

/// Declares the config section of one per-event detector: the fields of [`PerEventConfig`] with
/// this detector's own default severity (a section the user writes keeps the severity default of
/// its detector, which one shared struct could not do).
macro_rules! per_event_config {
    ($(#[$meta:meta])* $name:ident, $severity:expr) => {
        detector_config! {
            $(#[$meta])*
            pub struct $name {
                severity = $severity;
                /// Only alert the first time a (principal, operation) pair is seen.
                pub novelty: bool = false,
                /// With `novelty`, learn silently for this long after a principal's first event.
                #[serde(with = "humantime_serde")]
                pub novelty_warmup: Duration = Duration::ZERO,
                /// Principals tracked for novelty.
                pub max_keys: usize = 100_000,
                /// Alert on failed calls too.
                pub include_failed: bool = false,
            }
        }

        impl From<$name> for PerEventConfig {
            fn from(c: $name) -> PerEventConfig {
                PerEventConfig {
                    enabled: c.enabled,
                    dry_run: c.dry_run,
                    severity: c.severity,
                    allow_principals: c.allow_principals,
                    allow_scopes: c.allow_scopes,
                    scopes: c.scopes,
                    novelty: c.novelty,
                    novelty_warmup: c.novelty_warmup,
                    max_keys: c.max_keys,
                    include_failed: c.include_failed,
                }
            }
        }
    };
}

per_event_config!(
    /// `[detectors.tenant_settings]` (T1578.005).
    TenantSettingsConfig,
    Severity::Medium
);
per_event_config!(
    /// `[detectors.event_trigger]` (T1546).
    EventTriggerConfig,
    Severity::Medium
);
per_event_config!(
    /// `[detectors.impair_defenses]` (T1562).
    ImpairDefensesConfig,
    Severity::High
);
per_event_config!(
    /// `[detectors.conditional_access]` (T1556.009).
    ConditionalAccessConfig,
    Severity::High
);
per_event_config!(
    /// `[detectors.serverless]` (T1648).
    ServerlessConfig,
    Severity::Low
);

/// `[detectors.*]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorsConfig {
    pub log_disable: LogDisableConfig,
    pub log_source_silence: LogSourceSilenceConfig,
    pub secret_fetch_rate: SecretFetchRateConfig,
    pub discovery_burst: DiscoveryBurstConfig,
    pub quota_change: QuotaChangeConfig,
    pub tenant_settings: TenantSettingsConfig,
    pub event_trigger: EventTriggerConfig,
    pub impair_defenses: ImpairDefensesConfig,
    pub conditional_access: ConditionalAccessConfig,
    pub serverless: ServerlessConfig,
}

impl DetectorsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.log_source_silence;
        let p = "detectors.log_source_silence";
        finite_positive(&format!("{p}.k"), s.k)?;
        ratio(&format!("{p}.alpha"), s.alpha)?;
        positive(&format!("{p}.resolution"), s.resolution)?;
        if s.floor < s.resolution {
            // Activity is summarised per `resolution`-wide pane: a shorter silence cannot be seen.
            return Err(invalid(
                format!("{p}.floor"),
                "must be at least `resolution` (activity is tracked per resolution-wide pane)",
            ));
        }
        at_least_one(&format!("{p}.max_sources"), s.max_sources)?;
        positive(&format!("{p}.forget_after"), s.forget_after)?;

        let f = &self.secret_fetch_rate;
        let p = "detectors.secret_fetch_rate";
        window_and_pane(p, f.window, f.pane)?;
        ratio(&format!("{p}.baseline_alpha"), f.baseline_alpha)?;
        finite_positive(&format!("{p}.baseline_k_sigma"), f.baseline_k_sigma)?;
        at_least_one(&format!("{p}.max_keys"), f.max_keys)?;
        if f.max_distinct < f.distinct_threshold as usize {
            return Err(invalid(
                format!("{p}.max_distinct"),
                "must be at least distinct_threshold",
            ));
        }
        if f.count_threshold == 0 && f.distinct_threshold == 0 && !f.baseline {
            return Err(invalid(
                format!("{p}.count_threshold"),
                "every trigger is disabled (count_threshold, distinct_threshold and baseline)",
            ));
        }

        let d = &self.discovery_burst;
        let p = "detectors.discovery_burst";
        window_and_pane(p, d.window, d.pane)?;
        ratio(&format!("{p}.baseline_alpha"), d.baseline_alpha)?;
        finite_positive(&format!("{p}.baseline_k_sigma"), d.baseline_k_sigma)?;
        at_least_one(&format!("{p}.max_keys"), d.max_keys)?;
        if d.distinct_threshold == 0 {
            return Err(invalid(
                format!("{p}.distinct_threshold"),
                "must be at least 1",
            ));
        }
        if d.max_distinct < d.distinct_threshold as usize {
            return Err(invalid(
                format!("{p}.max_distinct"),
                "must be at least distinct_threshold",
            ));
        }

        let q = &self.quota_change;
        let p = "detectors.quota_change";
        window_and_pane(p, q.window, q.pane)?;
        at_least_one(&format!("{p}.max_keys"), q.max_keys)?;
        at_least_one(&format!("{p}.max_regions"), q.max_regions)?;

        for (name, max_keys) in [
            ("tenant_settings", self.tenant_settings.max_keys),
            ("event_trigger", self.event_trigger.max_keys),
            ("impair_defenses", self.impair_defenses.max_keys),
            ("conditional_access", self.conditional_access.max_keys),
            ("serverless", self.serverless.max_keys),
        ] {
            at_least_one(&format!("detectors.{name}.max_keys"), max_keys)?;
        }
        Ok(())
    }
}

fn window_and_pane(prefix: &str, window: Duration, pane: Duration) -> Result<(), ConfigError> {
    positive(&format!("{prefix}.window"), window)?;
    positive(&format!("{prefix}.pane"), pane)?;
    if pane > window {
        return Err(invalid(
            format!("{prefix}.pane"),
            "must not be longer than window",
        ));
    }
    if window.as_millis() / pane.as_millis() > 4096 {
        return Err(invalid(
            format!("{prefix}.pane"),
            "window / pane must be at most 4096 panes",
        ));
    }
    Ok(())
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
