//! What every config section shares: the settings every detector has (enable, dry-run, severity,
//! allow-lists, per-scope overrides, declared once by `detector_config!`), the [`Section`] hook
//! a detector's section validates itself with, and the value checks that name the offending key.
//!
//! Each detector's own section lives beside the detector (`detect/<name>.rs`) and is declared
//! with the macro here, so a new detector brings its settings and their checks in its own file.

use super::ConfigError;
use crate::alert::Severity;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// A `ConfigError::Invalid` naming `key`.
pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

pub(crate) fn positive(key: &str, d: Duration) -> Result<(), ConfigError> {
    if d.is_zero() {
        Err(invalid(key, "must be greater than zero"))
    } else {
        Ok(())
    }
}

pub(crate) fn at_least_one(key: &str, n: usize) -> Result<(), ConfigError> {
    if n == 0 {
        Err(invalid(key, "must be at least 1"))
    } else {
        Ok(())
    }
}

pub(crate) fn ratio(key: &str, x: f64) -> Result<(), ConfigError> {
    if x > 0.0 && x <= 1.0 {
        Ok(())
    } else {
        Err(invalid(key, "must be in (0, 1]"))
    }
}

pub(crate) fn finite_positive(key: &str, x: f64) -> Result<(), ConfigError> {
    if x.is_finite() && x > 0.0 {
        Ok(())
    } else {
        Err(invalid(key, "must be a positive number"))
    }
}

/// A sliding window and its pane: both positive, the pane no longer than the window, at most
/// 4096 panes.
pub(crate) fn window_and_pane(
    prefix: &str,
    window: Duration,
    pane: Duration,
) -> Result<(), ConfigError> {
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

/// Milliseconds of a config duration (saturating).
pub fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
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
pub(crate) fn pattern_matches(pattern: &str, s: &str) -> bool {
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

    /// Whether the detector runs at all: enabled, or enabled for some scope by an override.
    fn runs(&self) -> bool {
        self.enabled() || !self.scopes().is_empty()
    }

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

/// A detector's config section (`[detectors.<name>]`): the shared settings, serde, a default,
/// and its own value checks.
pub trait Section:
    CommonSettings + Clone + Default + std::fmt::Debug + Serialize + DeserializeOwned
{
    /// Checks the section's values; `key` is its TOML path (`detectors.<name>`), which every
    /// error names.
    fn validate(&self, _key: &str) -> Result<(), ConfigError> {
        Ok(())
    }
}

/// Declares a detector config section: the shared settings plus the detector's own, each with
/// its default and doc comment. (The section then needs an `impl Section`, with its checks.)
macro_rules! detector_config {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            severity = $severity:expr;
            $( $(#[$fmeta:meta])* pub $field:ident : $ty:ty = $default:expr, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, ::serde::Serialize, ::serde::Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct $name {
            /// Run this detector.
            pub enabled: bool,
            /// Emit its alerts marked `dry_run` (for tuning before they page anyone).
            pub dry_run: bool,
            /// Severity of its alerts.
            pub severity: $crate::alert::Severity,
            /// Principals (exact, or `*` at either end) whose events this detector ignores.
            pub allow_principals: Vec<String>,
            /// Scopes (accounts, projects, subscriptions, tenants) this detector ignores.
            pub allow_scopes: Vec<String>,
            /// Per-scope overrides: `[detectors.<name>.scopes."123456789012"]`.
            pub scopes: ::std::collections::BTreeMap<String, $crate::config::ScopeOverride>,
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
                    scopes: ::std::collections::BTreeMap::new(),
                    $( $field: $default, )*
                }
            }
        }

        impl $crate::config::CommonSettings for $name {
            fn enabled(&self) -> bool { self.enabled }
            fn dry_run(&self) -> bool { self.dry_run }
            fn severity(&self) -> $crate::alert::Severity { self.severity }
            fn allow_principals(&self) -> &[String] { &self.allow_principals }
            fn allow_scopes(&self) -> &[String] { &self.allow_scopes }
            fn scopes(
                &self,
            ) -> &::std::collections::BTreeMap<String, $crate::config::ScopeOverride> {
                &self.scopes
            }
        }
    };
}
pub(crate) use detector_config;
