//! The catalog: a data table mapping (provider, service, operation [, predicates on request
//! fields]) to a behaviour and ATT&CK technique ids.
//!
//! The default table (`default.toml`, embedded in the binary) covers every raw event name of
//! EVENT_CATALOG.md; the deploy config can add rules or replace the default. Rules are compiled
//! once into an index: exact operation names go to a hash map keyed by (provider, canonical
//! operation), globs to a short per-provider list. Classifying an event is one hash lookup plus
//! the globs of its provider, with no allocation for AWS (the hot path).

use crate::event::{CloudEvent, Outcome, Provider};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

/// The embedded default catalog.
pub const DEFAULT_CATALOG: &str = include_str!("default.toml");

/// Declares [`Behaviour`] from one line per behaviour (`Variant = "name"`): the enum, its
/// name (as written in rules) and [`Behaviour::ALL`].
macro_rules! behaviours {
    ($($variant:ident = $name:literal,)+) => {
        /// What a matched event is evidence of. Each behaviour is consumed by one detector.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum Behaviour {
            $(#[serde(rename = $name)] $variant,)+
        }

        impl Behaviour {
            pub const ALL: [Behaviour; [$($name),+].len()] = [$(Behaviour::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Behaviour::$variant => $name,)+
                }
            }
        }
    };
}

behaviours! {
    LogDisable = "log_disable",
    SecretFetch = "secret_fetch",
    Discovery = "discovery",
    QuotaChange = "quota_change",
    TenantSettings = "tenant_settings",
    EventTrigger = "event_trigger",
    ImpairDefenses = "impair_defenses",
    ConditionalAccess = "conditional_access",
    Serverless = "serverless",
}

// `Matches` holds one bit per behaviour.
const _: () = assert!(
    Behaviour::ALL.len() <= 16,
    "Matches keeps behaviours in a u16"
);

impl Behaviour {
    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for Behaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether failed calls match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeFilter {
    #[default]
    Any,
    Success,
    Failure,
}

/// A catalog rule as written in TOML.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub behaviour: Behaviour,
    pub provider: Provider,
    /// Service name (`cloudtrail.amazonaws.com`); a trailing `*` matches a prefix. Any when absent.
    #[serde(default)]
    pub service: Option<String>,
    pub operations: Vec<String>,
    pub techniques: Vec<String>,
    #[serde(default)]
    pub when: Vec<PredicateSpec>,
    #[serde(default)]
    pub outcome: OutcomeFilter,
    #[serde(default)]
    pub fallback: bool,
}

/// One predicate: `{ field = "...", <op> = value }` with exactly one operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredicateSpec {
    pub field: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eq: Option<toml::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ne: Option<toml::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lt: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gt: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(default)]
    rule: Vec<RuleSpec>,
}

/// A catalog error, naming the rule and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog is not valid TOML: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("catalog rule {index} ({behaviour} / {provider}): {detail}")]
    Rule {
        index: usize,
        behaviour: Behaviour,
        provider: Provider,
        detail: String,
    },
}

/// Parses rules from TOML text (`[[rule]]` tables).
pub fn parse_rules(text: &str) -> Result<Vec<RuleSpec>, CatalogError> {
    Ok(toml::from_str::<CatalogFile>(text)?.rule)
}

// ------------------------------------------------------------------ compiled form

/// A request field a predicate can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    TrailName,
    IncludeManagementEvents,
    Enabled,
    SinkDisabled,
    LogFileValidation,
    MultiRegion,
    ExpirationDays,
    RequestedRegion,
    ServiceCode,
    QuotaCode,
    QuotaValue,
    WithDecryption,
    BulkFilter,
    AuditConfigRemoved,
    SettingName,
    PolicyOldState,
    PolicyNewState,
    Status,
    StatusCode,
    ActorUserType,
    UserAgent,
    Resource,
}

impl Field {
    const NAMES: &'static [(&'static str, Field)] = &[
        ("trail_name", Field::TrailName),
        ("include_management_events", Field::IncludeManagementEvents),
        ("enabled", Field::Enabled),
        ("sink_disabled", Field::SinkDisabled),
        ("log_file_validation", Field::LogFileValidation),
        ("multi_region", Field::MultiRegion),
        ("expiration_days", Field::ExpirationDays),
        ("requested_region", Field::RequestedRegion),
        ("service_code", Field::ServiceCode),
        ("quota_code", Field::QuotaCode),
        ("quota_value", Field::QuotaValue),
        ("with_decryption", Field::WithDecryption),
        ("bulk_filter", Field::BulkFilter),
        ("audit_config_removed", Field::AuditConfigRemoved),
        ("setting_name", Field::SettingName),
        ("policy_old_state", Field::PolicyOldState),
        ("policy_new_state", Field::PolicyNewState),
        ("status", Field::Status),
        ("status_code", Field::StatusCode),
        ("actor_user_type", Field::ActorUserType),
        ("user_agent", Field::UserAgent),
        ("resource", Field::Resource),
    ];

    fn parse(name: &str) -> Option<Field> {
        Field::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, f)| *f)
    }
}

/// A field's value in one event.
enum FieldValue<'e> {
    Missing,
    Bool(bool),
    Num(f64),
    Str(&'e str),
}

fn field_value<'e>(ev: &'e CloudEvent<'_>, field: Field) -> FieldValue<'e> {
    let r = &ev.api_request;
    let s = |v: &'e Option<Cow<'_, str>>| v.as_deref().map_or(FieldValue::Missing, FieldValue::Str);
    let b = |v: Option<bool>| v.map_or(FieldValue::Missing, FieldValue::Bool);
    match field {
        Field::TrailName => s(&r.trail_name),
        Field::IncludeManagementEvents => b(r.include_management_events),
        Field::Enabled => b(r.enabled),
        Field::SinkDisabled => b(r.sink_disabled),
        Field::LogFileValidation => b(r.log_file_validation),
        Field::MultiRegion => b(r.multi_region),
        Field::ExpirationDays => r
            .expiration_days
            .map_or(FieldValue::Missing, |d| FieldValue::Num(d as f64)),
        Field::RequestedRegion => s(&r.requested_region),
        Field::ServiceCode => s(&r.service_code),
        Field::QuotaCode => s(&r.quota_code),
        Field::QuotaValue => r.quota_value.map_or(FieldValue::Missing, FieldValue::Num),
        Field::WithDecryption => b(r.with_decryption),
        Field::BulkFilter => b(r.bulk_filter),
        Field::AuditConfigRemoved => b(r.audit_config_removed),
        Field::SettingName => s(&r.setting_name),
        Field::PolicyOldState => s(&r.policy_old_state),
        Field::PolicyNewState => s(&r.policy_new_state),
        Field::Status => FieldValue::Str(match ev.status {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        }),
        Field::StatusCode => s(&ev.status_code),
        Field::ActorUserType => s(&ev.actor_user_type),
        Field::UserAgent => s(&ev.http_request_user_agent),
        Field::Resource => ev
            .resources
            .first()
            .map_or(FieldValue::Missing, |r| FieldValue::Str(r)),
    }
}

#[derive(Debug, Clone)]
enum Test {
    Eq(Scalar),
    Ne(Scalar),
    Lt(f64),
    Gt(f64),
    Contains(String),
    Prefix(String),
    Present(bool),
}

#[derive(Debug, Clone)]
enum Scalar {
    Bool(bool),
    Num(f64),
    Str(String),
}

impl Scalar {
    fn from_toml(v: &toml::Value) -> Option<Scalar> {
        match v {
            toml::Value::Boolean(b) => Some(Scalar::Bool(*b)),
            toml::Value::Integer(i) => Some(Scalar::Num(*i as f64)),
            toml::Value::Float(f) => Some(Scalar::Num(*f)),
            toml::Value::String(s) => Some(Scalar::Str(s.clone())),
            _ => None,
        }
    }

    fn equals(&self, v: &FieldValue<'_>) -> bool {
        match (self, v) {
            (Scalar::Bool(a), FieldValue::Bool(b)) => a == b,
            (Scalar::Num(a), FieldValue::Num(b)) => a == b,
            (Scalar::Str(a), FieldValue::Str(b)) => a.eq_ignore_ascii_case(b),
            (Scalar::Num(a), FieldValue::Str(b)) => b.parse::<f64>().is_ok_and(|b| *a == b),
            (Scalar::Bool(a), FieldValue::Str(b)) => {
                b.eq_ignore_ascii_case(if *a { "true" } else { "false" })
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone)]
struct Predicate {
    field: Field,
    test: Test,
}

impl Predicate {
    fn compile(p: &PredicateSpec) -> Result<Predicate, String> {
        let field = Field::parse(&p.field).ok_or_else(|| {
            let names: Vec<&str> = Field::NAMES.iter().map(|(n, _)| *n).collect();
            format!(
                "unknown predicate field `{}` (known: {})",
                p.field,
                names.join(", ")
            )
        })?;
        let mut tests = Vec::new();
        let scalar = |v: &toml::Value| {
            Scalar::from_toml(v)
                .ok_or_else(|| format!("`{}`: value must be a bool, number or string", p.field))
        };
        if let Some(v) = &p.eq {
            tests.push(Test::Eq(scalar(v)?));
        }
        if let Some(v) = &p.ne {
            tests.push(Test::Ne(scalar(v)?));
        }
        if let Some(v) = p.lt {
            tests.push(Test::Lt(v));
        }
        if let Some(v) = p.gt {
            tests.push(Test::Gt(v));
        }
        if let Some(v) = &p.contains {
            tests.push(Test::Contains(v.to_ascii_lowercase()));
        }
        if let Some(v) = &p.prefix {
            tests.push(Test::Prefix(v.clone()));
        }
        if let Some(v) = p.present {
            tests.push(Test::Present(v));
        }
        match tests.len() {
            1 => Ok(Predicate {
                field,
                test: tests.pop().expect("len is 1"),
            }),
            0 => Err(format!(
                "predicate on `{}` has no operator (eq, ne, lt, gt, contains, prefix, present)",
                p.field
            )),
            _ => Err(format!(
                "predicate on `{}` has more than one operator",
                p.field
            )),
        }
    }

    fn holds(&self, ev: &CloudEvent<'_>) -> bool {
        let v = field_value(ev, self.field);
        match &self.test {
            Test::Eq(s) => s.equals(&v),
            // A missing field is "not equal": `user_agent ne "AWS Internal"` holds without a UA.
            Test::Ne(s) => !s.equals(&v),
            Test::Lt(x) => matches!(v, FieldValue::Num(n) if n < *x),
            Test::Gt(x) => matches!(v, FieldValue::Num(n) if n > *x),
            Test::Contains(needle) => {
                matches!(v, FieldValue::Str(s) if s.to_ascii_lowercase().contains(needle.as_str()))
            }
            Test::Prefix(p) => matches!(v, FieldValue::Str(s) if s.starts_with(p.as_str())),
            Test::Present(want) => !matches!(v, FieldValue::Missing) == *want,
        }
    }
}

/// An operation or service pattern.
#[derive(Debug, Clone)]
enum Pattern {
    Any,
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
}

impl Pattern {
    fn parse(p: &str) -> Pattern {
        let starts = p.starts_with('*');
        let ends = p.ends_with('*') && p.len() > 1;
        let core = p.trim_matches('*');
        match (starts, ends) {
            _ if core.is_empty() => Pattern::Any,
            (false, false) => Pattern::Exact(core.to_owned()),
            (false, true) => Pattern::Prefix(core.to_owned()),
            (true, false) => Pattern::Suffix(core.to_owned()),
            (true, true) => Pattern::Contains(core.to_owned()),
        }
    }

    fn matches(&self, s: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Exact(e) => s == e,
            Pattern::Prefix(p) => s.starts_with(p.as_str()),
            Pattern::Suffix(x) => s.ends_with(x.as_str()),
            Pattern::Contains(c) => s.contains(c.as_str()),
        }
    }
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub behaviour: Behaviour,
    pub provider: Provider,
    pub techniques: Vec<String>,
    service: Pattern,
    predicates: Vec<Predicate>,
    outcome: OutcomeFilter,
    fallback: bool,
    /// The source spec (for `catalog` listings).
    pub spec: RuleSpec,
}

impl Rule {
    fn admits(&self, ev: &CloudEvent<'_>) -> bool {
        let outcome_ok = match self.outcome {
            OutcomeFilter::Any => true,
            OutcomeFilter::Success => ev.status == Outcome::Success,
            OutcomeFilter::Failure => ev.status == Outcome::Failure,
        };
        outcome_ok
            && self.service.matches(&ev.api_service_name)
            && self.predicates.iter().all(|p| p.holds(ev))
    }
}

/// Rule ids matched by one event (at most [`Matches::CAP`]; more is a catalog smell, not data).
#[derive(Debug, Clone, Copy, Default)]
pub struct Matches {
    ids: [u16; Matches::CAP],
    len: u8,
    behaviours: u16,
}

impl Matches {
    pub const CAP: usize = 6;

    fn push(&mut self, id: u16, behaviour: Behaviour) {
        if (self.len as usize) < Self::CAP && !self.ids[..self.len as usize].contains(&id) {
            self.ids[self.len as usize] = id;
            self.len += 1;
            self.behaviours |= behaviour.bit();
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn has(&self, b: Behaviour) -> bool {
        self.behaviours & b.bit() != 0
    }

    pub fn ids(&self) -> &[u16] {
        &self.ids[..self.len as usize]
    }
}

/// The compiled catalog.
#[derive(Debug, Clone)]
pub struct Catalog {
    rules: Vec<Rule>,
    /// Per provider: canonical operation → rule ids.
    exact: Vec<HashMap<String, Vec<u16>, crate::window::FastBuildHasher>>,
    globs: Vec<Vec<(Pattern, u16)>>,
}

/// The operation name as the catalog compares it: AWS API-version suffixes dropped
/// (`UpdateFunctionCode20150331v2` → `UpdateFunctionCode`), Azure upper case, Entra/O365 lower
/// case without a trailing `.`.
pub fn canonical_operation(provider: Provider, op: &str) -> Cow<'_, str> {
    match provider {
        Provider::Aws => Cow::Borrowed(strip_api_version(op)),
        Provider::Azure => {
            if op.bytes().any(|b| b.is_ascii_lowercase()) {
                Cow::Owned(op.to_ascii_uppercase())
            } else {
                Cow::Borrowed(op)
            }
        }
        Provider::EntraId | Provider::O365 => {
            let t = op.trim().trim_end_matches('.');
            if t.bytes().any(|b| b.is_ascii_uppercase()) {
                Cow::Owned(t.to_ascii_lowercase())
            } else {
                Cow::Borrowed(t)
            }
        }
        Provider::Gcp | Provider::GoogleWorkspace => Cow::Borrowed(op),
    }
}

/// `CreateFunction20150331` → `CreateFunction`; `AddPermission20150331v2` → `AddPermission`.
fn strip_api_version(op: &str) -> &str {
    let b = op.as_bytes();
    if !b.last().is_some_and(u8::is_ascii_digit) {
        return op; // most names: no version suffix
    }
    let mut end = b.len();
    // optional `v<digits>`
    let mut i = end;
    while i > 0 && b[i - 1].is_ascii_digit() {
        i -= 1;
    }
    if i < end && i > 0 && b[i - 1] == b'v' {
        end = i - 1;
    }
    let digits_end = end;
    let mut j = digits_end;
    while j > 0 && b[j - 1].is_ascii_digit() {
        j -= 1;
    }
    if digits_end - j == 8 && j > 0 {
        &op[..j]
    } else {
        op
    }
}

impl Catalog {
    /// The embedded default catalog.
    pub fn default_catalog() -> Catalog {
        let rules = parse_rules(DEFAULT_CATALOG).expect("the embedded catalog is tested to parse");
        Catalog::compile(rules).expect("the embedded catalog is tested to compile")
    }

    /// Compiles rule specs; errors name the rule.
    pub fn compile(specs: Vec<RuleSpec>) -> Result<Catalog, CatalogError> {
        if specs.len() > u16::MAX as usize {
            return Err(CatalogError::Rule {
                index: specs.len(),
                behaviour: specs[0].behaviour,
                provider: specs[0].provider,
                detail: "too many rules".into(),
            });
        }
        let mut catalog = Catalog {
            rules: Vec::with_capacity(specs.len()),
            exact: vec![HashMap::default(); Provider::ALL.len()],
            globs: vec![Vec::new(); Provider::ALL.len()],
        };
        for (index, spec) in specs.into_iter().enumerate() {
            let err = |detail: String| CatalogError::Rule {
                index,
                behaviour: spec.behaviour,
                provider: spec.provider,
                detail,
            };
            if spec.operations.is_empty() {
                return Err(err("`operations` is empty".into()));
            }
            if spec.techniques.is_empty() {
                return Err(err("`techniques` is empty".into()));
            }
            for t in &spec.techniques {
                if !is_technique_id(t) {
                    return Err(err(format!(
                        "`{t}` is not an ATT&CK technique id (T1234 or T1234.567)"
                    )));
                }
            }
            let predicates = spec
                .when
                .iter()
                .map(Predicate::compile)
                .collect::<Result<Vec<_>, _>>()
                .map_err(err)?;
            let id = index as u16;
            for op in &spec.operations {
                let canon = canonical_operation(spec.provider, op).into_owned();
                match Pattern::parse(&canon) {
                    Pattern::Exact(e) => catalog.exact[spec.provider as usize]
                        .entry(e)
                        .or_default()
                        .push(id),
                    other => catalog.globs[spec.provider as usize].push((other, id)),
                }
            }
            catalog.rules.push(Rule {
                behaviour: spec.behaviour,
                provider: spec.provider,
                techniques: spec.techniques.clone(),
                service: spec.service.as_deref().map_or(Pattern::Any, Pattern::parse),
                predicates,
                outcome: spec.outcome,
                fallback: spec.fallback,
                spec,
            });
        }
        Ok(catalog)
    }

    /// The rules an event matches.
    pub fn classify(&self, ev: &CloudEvent<'_>) -> Matches {
        let op = canonical_operation(ev.cloud_provider, &ev.api_operation);
        let mut primary = Matches::default();
        let mut fallback = Matches::default();
        let mut consider = |id: u16| {
            let rule = &self.rules[id as usize];
            if rule.admits(ev) {
                if rule.fallback {
                    fallback.push(id, rule.behaviour);
                } else {
                    primary.push(id, rule.behaviour);
                }
            }
        };
        if let Some(ids) = self.exact[ev.cloud_provider as usize].get(op.as_ref()) {
            ids.iter().copied().for_each(&mut consider);
        }
        for (pattern, id) in &self.globs[ev.cloud_provider as usize] {
            if pattern.matches(&op) {
                consider(*id);
            }
        }
        if primary.is_empty() {
            fallback
        } else {
            primary
        }
    }

    pub fn rule(&self, id: u16) -> &Rule {
        &self.rules[id as usize]
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Rules per (behaviour, provider), for `cloudwarden catalog`.
    pub fn coverage(&self) -> Vec<(Behaviour, Provider, usize, usize)> {
        let mut out = Vec::new();
        for b in Behaviour::ALL {
            for p in Provider::ALL {
                let rules: Vec<&Rule> = self
                    .rules
                    .iter()
                    .filter(|r| r.behaviour == b && r.provider == p)
                    .collect();
                let ops = rules.iter().map(|r| r.spec.operations.len()).sum();
                out.push((b, p, rules.len(), ops));
            }
        }
        out
    }
}

fn is_technique_id(t: &str) -> bool {
    let Some(rest) = t.strip_prefix('T') else {
        return false;
    };
    let (main, sub) = rest.split_once('.').unwrap_or((rest, ""));
    main.len() == 4
        && main.bytes().all(|b| b.is_ascii_digit())
        && (sub.is_empty() || (sub.len() == 3 && sub.bytes().all(|b| b.is_ascii_digit())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaviour_names_are_their_serde_names() {
        for b in Behaviour::ALL {
            let written = toml::Value::try_from(b).unwrap();
            assert_eq!(written.as_str(), Some(b.as_str()));
            let back: Behaviour = written.try_into().unwrap();
            assert_eq!(back, b);
        }
    }

    #[test]
    fn default_catalog_compiles() {
        let c = Catalog::default_catalog();
        assert!(c.rules().len() > 50);
    }

    #[test]
    fn strips_lambda_api_versions() {
        assert_eq!(
            strip_api_version("CreateFunction20150331"),
            "CreateFunction"
        );
        assert_eq!(
            strip_api_version("UpdateFunctionCode20150331v2"),
            "UpdateFunctionCode"
        );
        assert_eq!(
            strip_api_version("AddPermission20150331v2"),
            "AddPermission"
        );
        assert_eq!(strip_api_version("GetObject"), "GetObject");
        assert_eq!(strip_api_version("Ec2v2"), "Ec2v2");
    }

    #[test]
    fn rejects_bad_rules_naming_them() {
        let bad = r#"
[[rule]]
behaviour = "log_disable"
provider = "aws"
operations = ["StopLogging"]
techniques = ["T1562.008"]
when = [{ field = "no_such_field", eq = true }]
"#;
        let err = Catalog::compile(parse_rules(bad).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("rule 0"), "{err}");
        assert!(err.contains("no_such_field"), "{err}");
        let bad_tech = bad
            .replace("T1562.008", "X1")
            .replace("no_such_field", "enabled");
        let err = Catalog::compile(parse_rules(&bad_tech).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("X1"), "{err}");
        let unknown_key = "[[rule]]\nbehaviour = \"log_disable\"\nprovider = \"aws\"\noperations = [\"A\"]\ntechniques = [\"T1562\"]\nwhen_ = []\n";
        let err = parse_rules(unknown_key).unwrap_err().to_string();
        assert!(err.contains("when_"), "{err}");
    }
}
