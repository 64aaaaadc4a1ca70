//! The `[sigma]` config section: which rule files to load, pipelines, enable/disable, dry run,
//! per-scope allow-lists and bounds. Empty `rules` (the default) turns Sigma off at zero cost.
//!
//! Paths and globs are relative to the working directory of the process (as every other path
//! in the config); rule ids and tags in `enabled` / `disabled` / `dry_run` / `allow` are checked
//! against the loaded rules when the config is validated, and an unknown one is an error that
//! names the key.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SigmaConfig {
    /// Rule files: paths, directories (every `*.yml` / `*.yaml` below) or globs (`rules/**/*.yml`).
    pub rules: Vec<String>,
    /// pySigma / rsigma processing-pipeline YAML files, applied (in order) on top of the built-in
    /// field mapping.
    pub pipelines: Vec<String>,
    /// Only these rules run (rule id, name or tag such as `attack.t1562`); empty = all.
    pub enabled: Vec<String>,
    /// These rules do not run (rule id, name or tag). Wins over `enabled`.
    pub disabled: Vec<String>,
    /// These rules' alerts are marked `dry_run` (rule id, name, tag, or `*` for all).
    pub dry_run: Vec<String>,
    /// Per-scope allow-lists: in a matching scope (account, project, subscription, tenant;
    /// `*` at either end), these rules raise no alert.
    pub allow: Vec<SigmaAllow>,
    /// At most this many detection rules are loaded; more is a config error.
    pub max_rules: usize,
    /// At most this many matched (field, value) pairs are kept in an alert.
    pub max_matched_fields: usize,
    /// `[sigma.correlation]`: bounds and window resolution of the correlation rules' state.
    pub correlation: crate::sigma::correlation::CorrelationSettings,
}

impl Default for SigmaConfig {
    fn default() -> Self {
        SigmaConfig {
            rules: Vec::new(),
            pipelines: Vec::new(),
            enabled: Vec::new(),
            disabled: Vec::new(),
            dry_run: Vec::new(),
            allow: Vec::new(),
            max_rules: 2000,
            max_matched_fields: 16,
            correlation: Default::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigmaAllow {
    pub scope: String,
    pub rules: Vec<String>,
}
