//! GCP Cloud Audit Logs: one `LogEntry` whose `protoPayload` is a
//! `type.googleapis.com/google.cloud.audit.AuditLog`.
//!
//! The entry is parsed once into borrowed structs. `protoPayload.request`, `serviceData` and
//! `metadata` stay `RawValue`s and are parsed only for the methods whose request fields a detector
//! reads ([`RequestKind`]): `UpdateSink` (`sink.disabled`), `SetIamPolicy` (audit config deltas
//! with action `REMOVE`), `v1.compute.subnetworks.patch` (`logConfig.enable`) and the Cloud Quotas
//! preference writes.
//!
//! The scope is the project (`resource.labels.project_id`, else the `projects/<id>/` prefix of
//! `logName`, else the organization, folder or billing account the log belongs to). The log name
//! is the audit log kind taken from the `logName` suffix (`activity`, `data_access`,
//! `system_event`, `policy`), which is what a silence detector keys on.

use super::time::parse_rfc3339_ms;
use super::{CloudEvent, DecodeError, Outcome, Provider, RequestFields, GLOBAL_REGION};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// The `LogEntry` fields we keep.
#[derive(Deserialize)]
struct LogEntry<'a> {
    #[serde(rename = "protoPayload", borrow, default)]
    proto_payload: Option<AuditLog<'a>>,
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    timestamp: Option<Cow<'a, str>>,
    #[serde(
        rename = "logName",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    log_name: Option<Cow<'a, str>>,
    #[serde(
        rename = "insertId",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    insert_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    resource: Option<MonitoredResource<'a>>,
}

#[derive(Deserialize, Default)]
struct MonitoredResource<'a> {
    #[serde(borrow, default)]
    labels: Option<ResourceLabels<'a>>,
}

#[derive(Deserialize, Default)]
struct ResourceLabels<'a> {
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    project_id: Option<Cow<'a, str>>,
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    organization_id: Option<Cow<'a, str>>,
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    folder_id: Option<Cow<'a, str>>,
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    location: Option<Cow<'a, str>>,
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    zone: Option<Cow<'a, str>>,
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    region: Option<Cow<'a, str>>,
}

/// `protoPayload` (google.cloud.audit.AuditLog), the fields we keep.
#[derive(Deserialize)]
struct AuditLog<'a> {
    #[serde(
        rename = "serviceName",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    service_name: Option<Cow<'a, str>>,
    #[serde(
        rename = "methodName",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    method_name: Option<Cow<'a, str>>,
    #[serde(
        rename = "resourceName",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    resource_name: Option<Cow<'a, str>>,
    #[serde(default)]
    status: Option<Status>,
    #[serde(rename = "authenticationInfo", borrow, default)]
    authentication_info: Option<AuthenticationInfo<'a>>,
    #[serde(rename = "authorizationInfo", default)]
    authorization_info: Option<Vec<AuthorizationInfo>>,
    #[serde(rename = "requestMetadata", borrow, default)]
    request_metadata: Option<RequestMetadata<'a>>,
    #[serde(borrow, default)]
    request: Option<&'a RawValue>,
    #[serde(rename = "serviceData", borrow, default)]
    service_data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    metadata: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Status {
    #[serde(default)]
    code: Option<i64>,
}

#[derive(Deserialize, Default)]
struct AuthenticationInfo<'a> {
    #[serde(
        rename = "principalEmail",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    principal_email: Option<Cow<'a, str>>,
    #[serde(
        rename = "principalSubject",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    principal_subject: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct AuthorizationInfo {
    #[serde(default)]
    granted: Option<bool>,
}

#[derive(Deserialize, Default)]
struct RequestMetadata<'a> {
    #[serde(
        rename = "callerIp",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    caller_ip: Option<Cow<'a, str>>,
    #[serde(
        rename = "callerSuppliedUserAgent",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    caller_supplied_user_agent: Option<Cow<'a, str>>,
}

/// `protoPayload.request`, the fields detectors and predicates read.
#[derive(Deserialize, Default)]
struct GcpRequest<'a> {
    #[serde(default)]
    sink: Option<Sink>,
    #[serde(rename = "logConfig", default)]
    log_config: Option<LogConfig>,
    #[serde(rename = "quotaPreference", borrow, default)]
    quota_preference: Option<QuotaPreference<'a>>,
}

#[derive(Deserialize)]
struct Sink {
    #[serde(default)]
    disabled: Option<bool>,
}

#[derive(Deserialize)]
struct LogConfig {
    #[serde(default)]
    enable: Option<bool>,
}

/// google.api.cloudquotas.v1.QuotaPreference.
#[derive(Deserialize, Default)]
struct QuotaPreference<'a> {
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    service: Option<Cow<'a, str>>,
    #[serde(
        rename = "quotaId",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    quota_id: Option<Cow<'a, str>>,
    #[serde(rename = "quotaConfig", borrow, default)]
    quota_config: Option<QuotaConfig<'a>>,
    #[serde(borrow, default)]
    dimensions: Option<Dimensions<'a>>,
}

#[derive(Deserialize)]
struct QuotaConfig<'a> {
    /// int64, which the proto JSON mapping writes as a string.
    #[serde(rename = "preferredValue", borrow, default)]
    preferred_value: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Dimensions<'a> {
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    region: Option<Cow<'a, str>>,
}

/// `serviceData` (google.iam.v1.logging.AuditData) or `metadata`, as far as the policy delta.
#[derive(Deserialize)]
struct PolicyDeltaHolder<'a> {
    #[serde(rename = "policyDelta", borrow, default)]
    policy_delta: Option<PolicyDelta<'a>>,
}

#[derive(Deserialize)]
struct PolicyDelta<'a> {
    #[serde(rename = "auditConfigDeltas", borrow, default)]
    audit_config_deltas: Option<Vec<AuditConfigDelta<'a>>>,
}

#[derive(Deserialize)]
struct AuditConfigDelta<'a> {
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    action: Option<Cow<'a, str>>,
}

/// The methods whose request sections we parse. Everything else skips that work.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RequestKind {
    UpdateSink,
    SetIamPolicy,
    SubnetworkPatch,
    QuotaPreference,
}

fn request_kind(method: &str) -> Option<RequestKind> {
    // Method names are fully qualified (`google.logging.v2.ConfigServiceV2.UpdateSink`), REST
    // style (`v1.compute.subnetworks.patch`) or bare (`SetIamPolicy`); match on the last part.
    let last = method.rsplit('.').next().unwrap_or(method);
    match last {
        "UpdateSink" => Some(RequestKind::UpdateSink),
        "SetIamPolicy" => Some(RequestKind::SetIamPolicy),
        "patch" if method.ends_with("compute.subnetworks.patch") => {
            Some(RequestKind::SubnetworkPatch)
        }
        "CreateQuotaPreference" | "UpdateQuotaPreference" => Some(RequestKind::QuotaPreference),
        _ => None,
    }
}

/// Decodes one Cloud Audit Logs `LogEntry`.
pub fn decode<'a>(text: &'a str, out: &mut Vec<CloudEvent<'a>>) -> Result<(), DecodeError> {
    let entry: LogEntry<'a> = serde_json::from_str(text).map_err(DecodeError::from_json)?;
    let payload = entry
        .proto_payload
        .ok_or(DecodeError::MissingField("protoPayload"))?;
    let time_text = entry
        .timestamp
        .as_deref()
        .ok_or(DecodeError::MissingField("timestamp"))?;
    let time = parse_rfc3339_ms(time_text).ok_or_else(|| DecodeError::InvalidValue {
        field: "timestamp",
        detail: format!("not an RFC 3339 time: {time_text:.40}"),
    })?;
    let service = payload
        .service_name
        .ok_or(DecodeError::MissingField("serviceName"))?;
    let method = payload
        .method_name
        .ok_or(DecodeError::MissingField("methodName"))?;
    let labels = entry.resource.and_then(|r| r.labels).unwrap_or_default();
    let scope = labels
        .project_id
        .clone()
        .or_else(|| entry.log_name.as_ref().and_then(scope_from_log_name))
        .or_else(|| labels.organization_id.clone())
        .or_else(|| labels.folder_id.clone())
        .ok_or(DecodeError::MissingField("logName"))?;
    let auth = payload.authentication_info.unwrap_or_default();
    let principal = auth
        .principal_email
        .filter(|p| !p.is_empty())
        .or(auth.principal_subject.filter(|p| !p.is_empty()))
        .unwrap_or(Cow::Borrowed("unknown"));

    let mut ev = CloudEvent::new(time, Provider::Gcp, scope, service, method, principal);
    ev.cloud_region = labels
        .location
        .or(labels.zone)
        .or(labels.region)
        .unwrap_or(Cow::Borrowed(GLOBAL_REGION));
    let meta = payload.request_metadata.unwrap_or_default();
    ev.src_endpoint_ip = meta.caller_ip;
    ev.http_request_user_agent = meta.caller_supplied_user_agent;
    let code = payload.status.and_then(|s| s.code).unwrap_or(0);
    let denied = payload
        .authorization_info
        .is_some_and(|infos| infos.iter().any(|i| i.granted == Some(false)));
    if code != 0 {
        ev.status = Outcome::Failure;
        ev.status_code = Some(Cow::Owned(code.to_string()));
    } else if denied {
        ev.status = Outcome::Failure;
    }
    ev.resources.extend(payload.resource_name);
    ev.metadata_log_name = match entry.log_name.as_deref().and_then(log_kind) {
        Some(kind) => Cow::Borrowed(kind),
        None => log_id(entry.log_name),
    };
    ev.metadata_uid = entry.insert_id;

    if let Some(kind) = request_kind(&ev.api_operation) {
        apply_request(
            &mut ev.api_request,
            kind,
            payload.request,
            payload.service_data,
            payload.metadata,
        )?;
    }
    out.push(ev);
    Ok(())
}

fn apply_request<'a>(
    r: &mut RequestFields<'a>,
    kind: RequestKind,
    request: Option<&'a RawValue>,
    service_data: Option<&'a RawValue>,
    metadata: Option<&'a RawValue>,
) -> Result<(), DecodeError> {
    if kind == RequestKind::SetIamPolicy {
        for section in [service_data, metadata].into_iter().flatten() {
            if !section.get().starts_with('{') {
                continue;
            }
            let holder: PolicyDeltaHolder<'a> =
                serde_json::from_str(section.get()).map_err(DecodeError::from_json)?;
            let removed = holder
                .policy_delta
                .and_then(|d| d.audit_config_deltas)
                .is_some_and(|deltas| {
                    deltas.iter().any(|d| {
                        d.action
                            .as_deref()
                            .is_some_and(|a| a.eq_ignore_ascii_case("REMOVE"))
                    })
                });
            if removed {
                r.audit_config_removed = Some(true);
            }
        }
        return Ok(());
    }
    let Some(raw) = request.filter(|raw| raw.get().starts_with('{')) else {
        return Ok(());
    };
    let req: GcpRequest<'a> = serde_json::from_str(raw.get()).map_err(DecodeError::from_json)?;
    match kind {
        RequestKind::UpdateSink => {
            if let Some(disabled) = req.sink.and_then(|s| s.disabled) {
                r.sink_disabled = Some(disabled);
                r.enabled = Some(!disabled);
            }
        }
        RequestKind::SubnetworkPatch => {
            r.enabled = req.log_config.and_then(|c| c.enable);
        }
        RequestKind::QuotaPreference => {
            let pref = match req.quota_preference {
                Some(p) => p,
                // Some callers log the preference itself as the request.
                None => serde_json::from_str(raw.get()).map_err(DecodeError::from_json)?,
            };
            r.service_code = pref.service;
            r.quota_code = pref.quota_id;
            r.quota_value = pref
                .quota_config
                .and_then(|c| c.preferred_value)
                .and_then(|v| number(v.get()));
            r.requested_region = pref.dimensions.and_then(|d| d.region);
        }
        RequestKind::SetIamPolicy => {}
    }
    Ok(())
}

/// A JSON number, or a number written as a JSON string (proto int64).
fn number(raw: &str) -> Option<f64> {
    raw.trim_matches('"').parse().ok()
}

/// The project (or organization, folder, billing account) id from a `logName` such as
/// `projects/my-project/logs/cloudaudit.googleapis.com%2Factivity`.
fn scope_from_log_name<'a>(log_name: &Cow<'a, str>) -> Option<Cow<'a, str>> {
    fn id_of(s: &str) -> Option<(usize, usize)> {
        let (kind, rest) = s.split_once('/')?;
        if !matches!(
            kind,
            "projects" | "organizations" | "folders" | "billingAccounts"
        ) {
            return None;
        }
        let id = rest.split('/').next()?;
        if id.is_empty() {
            return None;
        }
        let start = kind.len() + 1;
        Some((start, start + id.len()))
    }
    let (start, end) = id_of(log_name)?;
    Some(match log_name {
        Cow::Borrowed(s) => Cow::Borrowed(&s[start..end]),
        Cow::Owned(s) => Cow::Owned(s[start..end].to_owned()),
    })
}

/// The audit log kind from the `logName` suffix, for the four Cloud Audit Logs.
fn log_kind(log_name: &str) -> Option<&'static str> {
    let id = log_name.rsplit("/logs/").next().unwrap_or(log_name);
    let kind = id
        .strip_prefix("cloudaudit.googleapis.com")?
        .trim_start_matches('/')
        .trim_start_matches("%2F")
        .trim_start_matches("%2f");
    match kind {
        "activity" => Some("activity"),
        "data_access" => Some("data_access"),
        "system_event" => Some("system_event"),
        "policy" => Some("policy"),
        _ => None,
    }
}

/// The log id (after `/logs/`) of a log that is not one of the four audit logs.
fn log_id(log_name: Option<Cow<'_, str>>) -> Cow<'_, str> {
    match log_name {
        Some(Cow::Borrowed(s)) => Cow::Borrowed(s.rsplit("/logs/").next().unwrap_or(s)),
        Some(Cow::Owned(s)) => Cow::Owned(s.rsplit("/logs/").next().unwrap_or(&s).to_owned()),
        None => Cow::Borrowed("unknown"),
    }
}

#[cfg(test)]
mod tests {
    use crate::event::test_support::{decode, reason};
    use crate::event::{Outcome, Provider};

    const DELETE_SINK: &str = include_str!("../../tests/fixtures/decoders/gcp/delete_sink.json");
    const UPDATE_SINK: &str =
        include_str!("../../tests/fixtures/decoders/gcp/update_sink_disabled.json");
    const ACCESS_SECRET: &str =
        include_str!("../../tests/fixtures/decoders/gcp/access_secret_version.json");
    const SET_IAM: &str =
        include_str!("../../tests/fixtures/decoders/gcp/set_iam_policy_audit_config_remove.json");
    const QUOTA: &str =
        include_str!("../../tests/fixtures/decoders/gcp/create_quota_preference.json");
    const SUBNET: &str =
        include_str!("../../tests/fixtures/decoders/gcp/subnetworks_patch_flow_logs_off.json");

    #[test]
    fn delete_sink() {
        let out = decode(DELETE_SINK);
        assert_eq!(out.len(), 1);
        let ev = &out[0];
        assert_eq!(ev.cloud_provider, Provider::Gcp);
        assert_eq!(ev.cloud_account_uid, "my-project-123");
        assert_eq!(ev.cloud_region, "global");
        assert_eq!(ev.api_service_name, "logging.googleapis.com");
        assert_eq!(
            ev.api_operation,
            "google.logging.v2.ConfigServiceV2.DeleteSink"
        );
        assert_eq!(ev.actor_user_uid, "attacker@example.com");
        assert_eq!(ev.status, Outcome::Success);
        assert_eq!(ev.src_endpoint_ip.as_deref(), Some("203.0.113.10"));
        assert_eq!(ev.metadata_log_name, "activity");
        assert_eq!(ev.metadata_uid.as_deref(), Some("1x2y3z4a5b6c"));
        assert_eq!(
            ev.resources,
            vec!["projects/my-project-123/sinks/audit-to-bq"]
        );
        assert_eq!(ev.time, 1_722_430_202_123);
        assert!(ev.api_request.is_empty());
    }

    #[test]
    fn update_sink_disabled() {
        let ev = &decode(UPDATE_SINK)[0];
        assert_eq!(
            ev.api_operation,
            "google.logging.v2.ConfigServiceV2.UpdateSink"
        );
        assert_eq!(ev.api_request.sink_disabled, Some(true));
        assert_eq!(ev.api_request.enabled, Some(false));
        assert_eq!(
            ev.http_request_user_agent
                .as_deref()
                .map(|u| u.starts_with("google-cloud-sdk")),
            Some(true)
        );
    }

    #[test]
    fn access_secret_version_is_data_access() {
        let ev = &decode(ACCESS_SECRET)[0];
        assert_eq!(ev.api_service_name, "secretmanager.googleapis.com");
        assert_eq!(
            ev.api_operation,
            "google.cloud.secretmanager.v1.SecretManagerService.AccessSecretVersion"
        );
        assert_eq!(ev.metadata_log_name, "data_access");
        assert_eq!(
            ev.actor_user_uid,
            "ci-runner@my-project-123.iam.gserviceaccount.com"
        );
        assert_eq!(
            ev.resources,
            vec!["projects/123456789012/secrets/db-password/versions/latest"]
        );
        assert_eq!(ev.cloud_region, "global");
    }

    #[test]
    fn set_iam_policy_audit_config_removed() {
        let ev = &decode(SET_IAM)[0];
        assert_eq!(ev.api_service_name, "cloudresourcemanager.googleapis.com");
        assert_eq!(ev.api_operation, "SetIamPolicy");
        assert_eq!(ev.api_request.audit_config_removed, Some(true));
        assert_eq!(ev.metadata_log_name, "activity");
    }

    #[test]
    fn create_quota_preference() {
        let ev = &decode(QUOTA)[0];
        assert_eq!(ev.api_service_name, "cloudquotas.googleapis.com");
        assert_eq!(
            ev.api_operation,
            "google.api.cloudquotas.v1.CloudQuotas.CreateQuotaPreference"
        );
        assert_eq!(
            ev.api_request.quota_code.as_deref(),
            Some("CPUS-per-project-region")
        );
        assert_eq!(
            ev.api_request.service_code.as_deref(),
            Some("compute.googleapis.com")
        );
        assert_eq!(ev.api_request.quota_value, Some(5000.0));
        assert_eq!(ev.api_request.requested_region.as_deref(), Some("us-east4"));
    }

    #[test]
    fn subnetwork_flow_logs_off_and_permission_denied() {
        let ev = &decode(SUBNET)[0];
        assert_eq!(ev.api_operation, "v1.compute.subnetworks.patch");
        assert_eq!(ev.api_request.enabled, Some(false));
        assert_eq!(ev.cloud_region, "us-central1");
        assert_eq!(ev.status, Outcome::Failure);
        assert_eq!(ev.status_code.as_deref(), Some("7"));
    }

    #[test]
    fn scope_from_log_name_when_labels_lack_project() {
        let raw = r#"{"protoPayload":{"@type":"type.googleapis.com/google.cloud.audit.AuditLog","serviceName":"cloudresourcemanager.googleapis.com","methodName":"SetIamPolicy","authorizationInfo":[{"granted":false}]},"timestamp":"2024-07-31T12:50:02Z","logName":"organizations/998877/logs/cloudaudit.googleapis.com/policy","resource":{"type":"organization","labels":{}}}"#;
        let ev = &decode(raw)[0];
        assert_eq!(ev.cloud_account_uid, "998877");
        assert_eq!(ev.metadata_log_name, "policy");
        assert_eq!(ev.actor_user_uid, "unknown");
        assert_eq!(ev.status, Outcome::Failure);
        assert_eq!(ev.status_code, None);
    }

    #[test]
    fn missing_fields_and_wrong_types() {
        let no_time = r#"{"protoPayload":{"serviceName":"a","methodName":"b"},"logName":"projects/p/logs/x"}"#;
        assert_eq!(reason(no_time), "missing_field:timestamp");
        let no_method = r#"{"protoPayload":{"serviceName":"a"},"timestamp":"2024-07-31T12:50:02Z","logName":"projects/p/logs/x"}"#;
        assert_eq!(reason(no_method), "missing_field:methodName");
        let no_scope = r#"{"protoPayload":{"serviceName":"a","methodName":"b"},"timestamp":"2024-07-31T12:50:02Z"}"#;
        assert_eq!(reason(no_scope), "missing_field:logName");
        let bad_time = r#"{"protoPayload":{"serviceName":"a","methodName":"b"},"timestamp":"yesterday","logName":"projects/p/logs/x"}"#;
        assert_eq!(reason(bad_time), "invalid_value:timestamp");
        let wrong = r#"{"protoPayload":{"serviceName":7,"methodName":"b"},"timestamp":"2024-07-31T12:50:02Z"}"#;
        assert_eq!(reason(wrong), "wrong_type");
        let wrong_payload = r#"{"protoPayload":"text","timestamp":"2024-07-31T12:50:02Z"}"#;
        assert_eq!(reason(wrong_payload), "wrong_type");
        let wrong_sink = r#"{"protoPayload":{"serviceName":"logging.googleapis.com","methodName":"google.logging.v2.ConfigServiceV2.UpdateSink","request":{"sink":{"disabled":"yes"}}},"timestamp":"2024-07-31T12:50:02Z","logName":"projects/p/logs/x"}"#;
        assert_eq!(reason(wrong_sink), "wrong_type");
    }

    #[test]
    fn truncated_and_mangled_records_never_panic() {
        crate::event::test_support::never_panics(&[
            DELETE_SINK,
            UPDATE_SINK,
            ACCESS_SECRET,
            SET_IAM,
            QUOTA,
            SUBNET,
        ]);
    }
}
