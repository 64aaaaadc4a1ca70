//! The normalized cloud audit event (`CloudEvent` v1) and the decoders that produce it.
//!
//! Every provider format is decoded into the same flat [`CloudEvent`], whose field names are the
//! OCSF API Activity (class 6003) attribute paths with `.` replaced by `_` (`cloud.account.uid` →
//! `cloud_account_uid`). The struct borrows from the raw record (`Cow<'a, str>`): a string is only
//! copied when JSON escapes force it, so decoding stays close to a bare typed parse. The JSON
//! Schema is `schemas/cloud-event.v1.schema.json`.
//!
//! [`decode_record`] is the single entry point: it rejects oversize input before parsing, reads
//! the top level once ([`shape::RawTop`]), recognises the shape, and hands the already-split
//! nested sections to one decoder file per provider format (and `ocsf` for OCSF API Activity,
//! class 6003, records from pipelines that already normalise to OCSF).

pub mod aws;
pub mod azure;
pub mod cloudevent;
pub mod entra;
pub mod gcp;
pub mod o365;
pub mod ocsf;
pub mod shape;
pub mod time;
pub mod workspace;

#[cfg(test)]
pub(crate) mod test_support;

use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;

pub use shape::{decode_record, decode_record_raw};

/// The schema tag a serialized [`CloudEvent`] carries in its `schema` field.
pub const CLOUD_EVENT_SCHEMA: &str = "cloud_event.v1";

/// The cloud (or SaaS) that wrote the audit record (OCSF `cloud.provider`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    Aws,
    Gcp,
    Azure,
    EntraId,
    GoogleWorkspace,
    O365,
}

impl Provider {
    pub const ALL: [Provider; 6] = [
        Provider::Aws,
        Provider::Gcp,
        Provider::Azure,
        Provider::EntraId,
        Provider::GoogleWorkspace,
        Provider::O365,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Aws => "aws",
            Provider::Gcp => "gcp",
            Provider::Azure => "azure",
            Provider::EntraId => "entra_id",
            Provider::GoogleWorkspace => "google_workspace",
            Provider::O365 => "o365",
        }
    }

    pub fn parse(s: &str) -> Option<Provider> {
        Provider::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the call succeeded (OCSF `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    #[default]
    Success,
    Failure,
}

/// The request fields that detectors and catalog predicates look at, extracted by the decoders
/// from each provider's request body. Everything is optional: a field is set only when the raw
/// record states it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestFields<'a> {
    /// CloudTrail trail name (`StopLogging`, `DeleteTrail`, `UpdateTrail`, `PutEventSelectors`).
    #[serde(
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub trail_name: Option<Cow<'a, str>>,
    /// `PutEventSelectors`: false when any selector turns management events off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_management_events: Option<bool>,
    /// Whether the request leaves the logging / security feature it touches switched on
    /// (`PutBucketLogging` without `LoggingEnabled`, EKS logging off, GCP `logConfig.enable`,
    /// `Set-AdminAuditLogConfig -UnifiedAuditLogIngestionEnabled`, GuardDuty `enable`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// GCP `UpdateSink` with `sink.disabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink_disabled: Option<bool>,
    /// `UpdateTrail` `enableLogFileValidation`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_file_validation: Option<bool>,
    /// `UpdateTrail` `isMultiRegionTrail`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_region: Option<bool>,
    /// Shortest lifecycle expiration in days (`PutBucketLifecycle`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_days: Option<i64>,
    /// The region a quota request is for, when the request names one apart from the call's own.
    #[serde(
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub requested_region: Option<Cow<'a, str>>,
    /// Service Quotas `serviceCode` (or the GCP service of a quota preference).
    #[serde(
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub service_code: Option<Cow<'a, str>>,
    /// Service Quotas `quotaCode` / GCP `quotaId`.
    #[serde(
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub quota_code: Option<Cow<'a, str>>,
    /// Requested quota value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_value: Option<f64>,
    /// SSM `withDecryption`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with_decryption: Option<bool>,
    /// A bulk secret read selected by filter (`BatchGetSecretValue` with `filters`): the number of
    /// secrets it returns is unknown, so `secret_fetch_rate` weighs it by configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bulk_filter: Option<bool>,
    /// GCP `SetIamPolicy`: an audit config delta with action `REMOVE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_config_removed: Option<bool>,
    /// Tenant or application setting name (Workspace `SETTING_NAME`, Entra modified property).
    #[serde(
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub setting_name: Option<Cow<'a, str>>,
    /// Policy or setting state before the change (Entra CA policy `state`, Workspace `OLD_VALUE`).
    #[serde(
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub policy_old_state: Option<Cow<'a, str>>,
    /// Policy or setting state after the change (Entra CA policy `state`, Workspace `NEW_VALUE`).
    #[serde(
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub policy_new_state: Option<Cow<'a, str>>,
}

impl RequestFields<'_> {
    pub fn is_empty(&self) -> bool {
        *self == RequestFields::default()
    }

    pub fn into_owned(self) -> RequestFields<'static> {
        fn o(c: Option<Cow<'_, str>>) -> Option<Cow<'static, str>> {
            c.map(|c| Cow::Owned(c.into_owned()))
        }
        RequestFields {
            trail_name: o(self.trail_name),
            include_management_events: self.include_management_events,
            enabled: self.enabled,
            sink_disabled: self.sink_disabled,
            log_file_validation: self.log_file_validation,
            multi_region: self.multi_region,
            expiration_days: self.expiration_days,
            requested_region: o(self.requested_region),
            service_code: o(self.service_code),
            quota_code: o(self.quota_code),
            quota_value: self.quota_value,
            with_decryption: self.with_decryption,
            bulk_filter: self.bulk_filter,
            audit_config_removed: self.audit_config_removed,
            setting_name: o(self.setting_name),
            policy_old_state: o(self.policy_old_state),
            policy_new_state: o(self.policy_new_state),
        }
    }
}

/// One normalized audit event. See the module docs for the naming rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudEvent<'a> {
    /// Always [`CLOUD_EVENT_SCHEMA`]; how the decoder recognises an already-normalized record.
    #[serde(borrow)]
    pub schema: Cow<'a, str>,
    /// Event time, milliseconds since the Unix epoch (OCSF `time`).
    pub time: i64,
    /// OCSF `cloud.provider`.
    pub cloud_provider: Provider,
    /// The scope: AWS account, GCP project, Azure subscription, Entra/O365 tenant, Workspace
    /// customer (OCSF `cloud.account.uid`).
    #[serde(borrow)]
    pub cloud_account_uid: Cow<'a, str>,
    /// OCSF `cloud.region`; `global` where the provider has no region.
    #[serde(borrow)]
    pub cloud_region: Cow<'a, str>,
    /// OCSF `api.service.name` (`cloudtrail.amazonaws.com`, `logging.googleapis.com`, `admin`, …).
    #[serde(borrow)]
    pub api_service_name: Cow<'a, str>,
    /// OCSF `api.operation`, as the provider spells it.
    #[serde(borrow)]
    pub api_operation: Cow<'a, str>,
    /// A stable principal id (ARN, email, UPN, object id) (OCSF `actor.user.uid`).
    #[serde(borrow)]
    pub actor_user_uid: Cow<'a, str>,
    /// OCSF `actor.user.type` as the provider names it (`IAMUser`, `AssumedRole`, `User`, …).
    #[serde(
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub actor_user_type: Option<Cow<'a, str>>,
    /// OCSF `src_endpoint.ip`.
    #[serde(
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub src_endpoint_ip: Option<Cow<'a, str>>,
    /// OCSF `http_request.user_agent`.
    #[serde(
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub http_request_user_agent: Option<Cow<'a, str>>,
    /// OCSF `status`.
    pub status: Outcome,
    /// Provider error code on failure (OCSF `status_code`).
    #[serde(
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub status_code: Option<Cow<'a, str>>,
    /// Target resources (OCSF `resources[].uid`): the secret id, the trail, each SSM parameter name.
    #[serde(
        borrow,
        deserialize_with = "crate::event::vec_cow",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub resources: Vec<Cow<'a, str>>,
    /// The log the record came from (OCSF `metadata.log_name`): `management` / `data` (CloudTrail),
    /// `activity` / `data_access` / `system_event` / `policy` (GCP), `administrative` and other
    /// Activity Log categories, `audit_event` (Key Vault), `audit` (Entra), the Workspace
    /// application, the O365 workload.
    #[serde(borrow)]
    pub metadata_log_name: Cow<'a, str>,
    /// The original event id (OCSF `metadata.uid`).
    #[serde(
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub metadata_uid: Option<Cow<'a, str>>,
    /// Request fields that detectors need (OCSF `api.request`).
    #[serde(borrow, default, skip_serializing_if = "RequestFields::is_empty")]
    pub api_request: RequestFields<'a>,
    /// The catalog behaviours of this event, as `cloudwarden normalize` found them.
    /// Informational: ignored on input, where the engine classifies again.
    #[serde(
        borrow,
        deserialize_with = "crate::event::vec_cow",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub behaviours: Vec<Cow<'a, str>>,
    /// The ATT&CK technique ids the catalog gives this event (set by `normalize`; ignored on input).
    #[serde(
        borrow,
        deserialize_with = "crate::event::vec_cow",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub attack_technique_uids: Vec<Cow<'a, str>>,
}

impl<'a> CloudEvent<'a> {
    /// An event with the mandatory fields set and everything else empty; decoders fill the rest.
    pub fn new(
        time: i64,
        cloud_provider: Provider,
        cloud_account_uid: Cow<'a, str>,
        api_service_name: Cow<'a, str>,
        api_operation: Cow<'a, str>,
        actor_user_uid: Cow<'a, str>,
    ) -> Self {
        CloudEvent {
            schema: Cow::Borrowed(CLOUD_EVENT_SCHEMA),
            time,
            cloud_provider,
            cloud_account_uid,
            cloud_region: Cow::Borrowed(GLOBAL_REGION),
            api_service_name,
            api_operation,
            actor_user_uid,
            actor_user_type: None,
            src_endpoint_ip: None,
            http_request_user_agent: None,
            status: Outcome::Success,
            status_code: None,
            resources: Vec::new(),
            metadata_log_name: Cow::Borrowed(""),
            metadata_uid: None,
            api_request: RequestFields::default(),
            behaviours: Vec::new(),
            attack_technique_uids: Vec::new(),
        }
    }

    pub fn into_owned(self) -> CloudEvent<'static> {
        fn o(c: Cow<'_, str>) -> Cow<'static, str> {
            Cow::Owned(c.into_owned())
        }
        CloudEvent {
            schema: o(self.schema),
            time: self.time,
            cloud_provider: self.cloud_provider,
            cloud_account_uid: o(self.cloud_account_uid),
            cloud_region: o(self.cloud_region),
            api_service_name: o(self.api_service_name),
            api_operation: o(self.api_operation),
            actor_user_uid: o(self.actor_user_uid),
            actor_user_type: self.actor_user_type.map(o),
            src_endpoint_ip: self.src_endpoint_ip.map(o),
            http_request_user_agent: self.http_request_user_agent.map(o),
            status: self.status,
            status_code: self.status_code.map(o),
            resources: self.resources.into_iter().map(o).collect(),
            metadata_log_name: o(self.metadata_log_name),
            metadata_uid: self.metadata_uid.map(o),
            api_request: self.api_request.into_owned(),
            behaviours: self.behaviours.into_iter().map(o).collect(),
            attack_technique_uids: self.attack_technique_uids.into_iter().map(o).collect(),
        }
    }
}

/// serde borrows a `Cow<'a, str>` only in field position: inside `Option` or `Vec` it always
/// copies. These adapters (used with `deserialize_with`) keep borrowing there too, which takes
/// the per-record allocations of a CloudTrail decode from ~15 to ~1.
#[derive(Deserialize)]
struct BorrowedStr<'a>(#[serde(borrow)] Cow<'a, str>);

pub(crate) fn opt_cow<'de: 'a, 'a, D>(d: D) -> Result<Option<Cow<'a, str>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Ok(Option::<BorrowedStr<'a>>::deserialize(d)?.map(|s| s.0))
}

pub(crate) fn vec_cow<'de: 'a, 'a, D>(d: D) -> Result<Vec<Cow<'a, str>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Ok(Vec::<BorrowedStr<'a>>::deserialize(d)?
        .into_iter()
        .map(|s| s.0)
        .collect())
}

pub(crate) fn opt_vec_cow<'de: 'a, 'a, D>(d: D) -> Result<Option<Vec<Cow<'a, str>>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Ok(Option::<Vec<BorrowedStr<'a>>>::deserialize(d)?
        .map(|v| v.into_iter().map(|s| s.0).collect()))
}

/// The region of providers that have none.
pub const GLOBAL_REGION: &str = "global";

/// Why a record could not be decoded. [`DecodeError::reason`] is the stable, low-cardinality
/// label used in counters, dead-letter headers and `normalize` output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("empty record")]
    Empty,
    #[error("record is not valid UTF-8")]
    InvalidUtf8,
    #[error("record is not JSON: {0}")]
    NotJson(String),
    #[error("JSON nesting is too deep")]
    TooDeep,
    #[error("a field has the wrong type: {0}")]
    WrongType(String),
    #[error("JSON object of no known audit-log shape")]
    UnknownShape,
    #[error("required field `{0}` is missing")]
    MissingField(&'static str),
    #[error("field `{field}` has an invalid value: {detail}")]
    InvalidValue { field: &'static str, detail: String },
}

impl DecodeError {
    /// The counter / header label: `too_large`, `not_json`, `missing_field:eventTime`, ….
    pub fn reason(&self) -> Cow<'static, str> {
        match self {
            DecodeError::TooLarge { .. } => Cow::Borrowed("too_large"),
            DecodeError::Empty => Cow::Borrowed("empty"),
            DecodeError::InvalidUtf8 => Cow::Borrowed("invalid_utf8"),
            DecodeError::NotJson(_) => Cow::Borrowed("not_json"),
            DecodeError::TooDeep => Cow::Borrowed("too_deep"),
            DecodeError::WrongType(_) => Cow::Borrowed("wrong_type"),
            DecodeError::UnknownShape => Cow::Borrowed("unknown_shape"),
            DecodeError::MissingField(f) => Cow::Owned(format!("missing_field:{f}")),
            DecodeError::InvalidValue { field, .. } => Cow::Owned(format!("invalid_value:{field}")),
        }
    }

    /// Maps a serde_json error on a raw record to a reason.
    pub fn from_json(e: serde_json::Error) -> Self {
        use serde_json::error::Category;
        let msg = e.to_string();
        match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                if msg.contains("recursion limit") {
                    DecodeError::TooDeep
                } else if msg.contains("invalid unicode") || msg.contains("UTF-8") {
                    DecodeError::InvalidUtf8
                } else {
                    DecodeError::NotJson(msg)
                }
            }
            Category::Data => {
                if let Some(rest) = msg.strip_prefix("missing field `") {
                    let name = rest.split('`').next().unwrap_or("");
                    DecodeError::MissingField(static_field_name(name))
                } else {
                    DecodeError::WrongType(msg)
                }
            }
        }
    }
}

/// serde reports missing fields by name; keep our reason labels `&'static` (bounded cardinality)
/// by mapping the names we know and folding the rest into `unknown`.
fn static_field_name(name: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "schema",
        "time",
        "cloud_provider",
        "cloud_account_uid",
        "cloud_region",
        "api_service_name",
        "api_operation",
        "actor_user_uid",
        "status",
        "metadata_log_name",
        "eventTime",
        "eventSource",
        "eventName",
        "protoPayload",
        "operationName",
        "timestamp",
        "time",
        "id",
        "events",
        "CreationTime",
        "Operation",
    ];
    KNOWN
        .iter()
        .find(|k| **k == name)
        .copied()
        .unwrap_or("unknown")
}

/// Decoding limits, from the `[decode]` config section.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// Records above this many bytes are rejected (`too_large`) before parsing.
    pub max_record_bytes: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_record_bytes: 1 << 20,
        }
    }
}
