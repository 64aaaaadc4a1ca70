//! Microsoft Entra ID audit logs (directory audits).
//!
//! Three shapes carry the same `directoryAudit` object, and one borrowed struct
//! ([`EntraRecord`]) reads them all:
//! - the diagnostic-settings export (Event Hub / storage): `time`, `operationName`, `tenantId`,
//!   `category: AuditLogs` and the audit itself in `properties`;
//! - the Microsoft Graph `directoryAudits` object: the audit at the top level;
//! - the Sentinel / Log Analytics `AuditLogs` table: PascalCase columns, with `InitiatedBy` and
//!   `TargetResources` often serialized as JSON strings.
//!
//! The principal is the initiating user's UPN (else its object id), or the initiating
//! application's service principal id, app id or name. For conditional access changes the policy
//! JSON in `targetResources[0].modifiedProperties[].{oldValue,newValue}` is parsed for its `state`
//! (`enabled`, `disabled`, `enabledForReportingButNotEnforced`). Sections that arrive as JSON
//! strings are parsed a second time and owned: that is the Sentinel table, off the hot path.

use super::azure::{path_segment_after, sub_cow};
use super::time::parse_rfc3339_ms;
use super::{CloudEvent, DecodeError, Outcome, Provider};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// The export envelope, the Graph object and the Sentinel row, in one struct. In the export the
/// audit sits in `properties`, which is read into the same struct.
#[derive(Deserialize, Default)]
struct EntraRecord<'a> {
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    time: Option<Cow<'a, str>>,
    #[serde(
        rename = "TimeGenerated",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    time_generated: Option<Cow<'a, str>>,
    #[serde(
        rename = "operationName",
        alias = "OperationName",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    operation_name: Option<Cow<'a, str>>,
    #[serde(
        rename = "tenantId",
        alias = "TenantId",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    tenant_id: Option<Cow<'a, str>>,
    #[serde(
        rename = "AADTenantId",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    aad_tenant_id: Option<Cow<'a, str>>,
    #[serde(
        rename = "resourceId",
        alias = "ResourceId",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    resource_id: Option<Cow<'a, str>>,
    #[serde(
        rename = "callerIpAddress",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    caller_ip_address: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    properties: Option<Box<EntraRecord<'a>>>,

    #[serde(
        alias = "Id",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    id: Option<Cow<'a, str>>,
    #[serde(
        rename = "activityDisplayName",
        alias = "ActivityDisplayName",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    activity_display_name: Option<Cow<'a, str>>,
    #[serde(
        rename = "activityDateTime",
        alias = "ActivityDateTime",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    activity_date_time: Option<Cow<'a, str>>,
    #[serde(
        rename = "loggedByService",
        alias = "LoggedByService",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    logged_by_service: Option<Cow<'a, str>>,
    #[serde(
        alias = "Result",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    result: Option<Cow<'a, str>>,
    #[serde(
        rename = "resultReason",
        alias = "ResultReason",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    result_reason: Option<Cow<'a, str>>,
    /// An object, or (Sentinel) the same object as a JSON string.
    #[serde(rename = "initiatedBy", alias = "InitiatedBy", borrow, default)]
    initiated_by: Option<&'a RawValue>,
    /// An array, or (Sentinel) the same array as a JSON string.
    #[serde(rename = "targetResources", alias = "TargetResources", borrow, default)]
    target_resources: Option<&'a RawValue>,
}

/// `initiatedBy` (auditActivityInitiator).
#[derive(Deserialize)]
struct Initiator<'a> {
    #[serde(borrow, default)]
    user: Option<UserIdentity<'a>>,
    #[serde(borrow, default)]
    app: Option<AppIdentity<'a>>,
}

#[derive(Deserialize)]
struct UserIdentity<'a> {
    #[serde(
        rename = "userPrincipalName",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    user_principal_name: Option<Cow<'a, str>>,
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    id: Option<Cow<'a, str>>,
    #[serde(
        rename = "ipAddress",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    ip_address: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct AppIdentity<'a> {
    #[serde(
        rename = "servicePrincipalId",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    service_principal_id: Option<Cow<'a, str>>,
    #[serde(
        rename = "appId",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    app_id: Option<Cow<'a, str>>,
    #[serde(
        rename = "displayName",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    display_name: Option<Cow<'a, str>>,
}

/// `targetResources[]` (targetResource).
#[derive(Deserialize)]
struct TargetResource<'a> {
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    id: Option<Cow<'a, str>>,
    #[serde(rename = "modifiedProperties", borrow, default)]
    modified_properties: Option<Vec<ModifiedProperty<'a>>>,
}

#[derive(Deserialize)]
struct ModifiedProperty<'a> {
    #[serde(
        rename = "displayName",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    display_name: Option<Cow<'a, str>>,
    #[serde(
        rename = "oldValue",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    old_value: Option<Cow<'a, str>>,
    #[serde(
        rename = "newValue",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    new_value: Option<Cow<'a, str>>,
}

/// A conditional access policy serialized in a modified property value.
#[derive(Deserialize)]
struct PolicyState {
    #[serde(default)]
    state: Option<String>,
}

/// Who acted, from `initiatedBy`.
#[derive(Default)]
struct Actor<'a> {
    principal: Option<Cow<'a, str>>,
    kind: Option<&'static str>,
    ip: Option<Cow<'a, str>>,
}

/// What was touched, from `targetResources`.
#[derive(Default)]
struct Targets<'a> {
    ids: Vec<Cow<'a, str>>,
    setting_name: Option<Cow<'a, str>>,
    old_state: Option<Cow<'a, str>>,
    new_state: Option<Cow<'a, str>>,
}

fn non_empty(c: Option<Cow<'_, str>>) -> Option<Cow<'_, str>> {
    c.filter(|c| !c.is_empty())
}

fn pick<'a>(inner: Option<Cow<'a, str>>, outer: Option<Cow<'a, str>>) -> Option<Cow<'a, str>> {
    non_empty(inner).or(non_empty(outer))
}

fn owned(c: Option<Cow<'_, str>>) -> Option<Cow<'static, str>> {
    c.map(|c| Cow::Owned(c.into_owned()))
}

/// Decodes one Entra ID directory audit record.
pub fn decode<'a>(text: &'a str, out: &mut Vec<CloudEvent<'a>>) -> Result<(), DecodeError> {
    let rec: EntraRecord<'a> = serde_json::from_str(text).map_err(DecodeError::from_json)?;
    let props = rec.properties.map(|p| *p).unwrap_or_default();

    let time_text = non_empty(rec.time)
        .or(pick(props.activity_date_time, rec.activity_date_time))
        .or(non_empty(rec.time_generated))
        .ok_or(DecodeError::MissingField("activityDateTime"))?;
    let time = parse_rfc3339_ms(&time_text).ok_or_else(|| DecodeError::InvalidValue {
        field: "activityDateTime",
        detail: format!("not an RFC 3339 time: {time_text:.40}"),
    })?;
    let operation = pick(props.activity_display_name, rec.activity_display_name)
        .or(pick(props.operation_name, rec.operation_name))
        .ok_or(DecodeError::MissingField("activityDisplayName"))?;
    let scope = pick(rec.tenant_id, props.tenant_id)
        .or(non_empty(rec.aad_tenant_id))
        .or_else(|| {
            non_empty(rec.resource_id)
                .as_ref()
                .and_then(|id| sub_cow(id, |s| path_segment_after(s, "tenants")))
        })
        .ok_or(DecodeError::MissingField("tenantId"))?;
    let service =
        pick(props.logged_by_service, rec.logged_by_service).unwrap_or(Cow::Borrowed("unknown"));
    let actor = match props.initiated_by.or(rec.initiated_by) {
        Some(raw) => actor_of(raw)?,
        None => Actor::default(),
    };
    let targets = match props.target_resources.or(rec.target_resources) {
        Some(raw) => targets_of(raw)?,
        None => Targets::default(),
    };
    let principal = actor.principal.unwrap_or(Cow::Borrowed("unknown"));

    let mut ev = CloudEvent::new(
        time,
        Provider::EntraId,
        scope,
        service,
        operation,
        principal,
    );
    ev.actor_user_type = actor.kind.map(Cow::Borrowed);
    ev.src_endpoint_ip = actor.ip.or(non_empty(rec.caller_ip_address));
    if let Some(result) = pick(props.result, rec.result) {
        if result.eq_ignore_ascii_case("failure") {
            ev.status = Outcome::Failure;
            ev.status_code = pick(props.result_reason, rec.result_reason).or(Some(result));
        }
    }
    ev.metadata_log_name = Cow::Borrowed("audit");
    ev.metadata_uid = pick(props.id, rec.id);
    ev.resources = targets.ids;
    ev.api_request.setting_name = targets.setting_name;
    ev.api_request.policy_old_state = targets.old_state;
    ev.api_request.policy_new_state = targets.new_state;
    out.push(ev);
    Ok(())
}

/// `initiatedBy`, as an object or as a JSON string of one.
fn actor_of(raw: &RawValue) -> Result<Actor<'_>, DecodeError> {
    let text = raw.get();
    if text.starts_with('"') {
        let inner: String = serde_json::from_str(text).map_err(DecodeError::from_json)?;
        if !inner.trim_start().starts_with('{') {
            return Ok(Actor::default());
        }
        let init: Initiator<'_> = serde_json::from_str(&inner).map_err(DecodeError::from_json)?;
        let actor = actor_from(init);
        return Ok(Actor {
            principal: owned(actor.principal),
            kind: actor.kind,
            ip: owned(actor.ip),
        });
    }
    if !text.starts_with('{') {
        return Ok(Actor::default());
    }
    let init: Initiator<'_> = serde_json::from_str(text).map_err(DecodeError::from_json)?;
    Ok(actor_from(init))
}

fn actor_from(init: Initiator<'_>) -> Actor<'_> {
    if let Some(user) = init.user {
        let ip = non_empty(user.ip_address);
        if let Some(p) = non_empty(user.user_principal_name).or(non_empty(user.id)) {
            return Actor {
                principal: Some(p),
                kind: Some("User"),
                ip,
            };
        }
        if let Some(app) = init.app {
            return Actor {
                ip,
                ..app_actor(app)
            };
        }
        return Actor {
            ip,
            ..Actor::default()
        };
    }
    init.app.map(app_actor).unwrap_or_default()
}

fn app_actor(app: AppIdentity<'_>) -> Actor<'_> {
    let principal = non_empty(app.service_principal_id)
        .or(non_empty(app.app_id))
        .or(non_empty(app.display_name));
    Actor {
        kind: principal.as_ref().map(|_| "ServicePrincipal"),
        principal,
        ip: None,
    }
}

/// `targetResources`, as an array or as a JSON string of one.
fn targets_of(raw: &RawValue) -> Result<Targets<'_>, DecodeError> {
    let text = raw.get();
    if text.starts_with('"') {
        let inner: String = serde_json::from_str(text).map_err(DecodeError::from_json)?;
        if !inner.trim_start().starts_with('[') {
            return Ok(Targets::default());
        }
        let list: Vec<TargetResource<'_>> =
            serde_json::from_str(&inner).map_err(DecodeError::from_json)?;
        let t = targets_from(list);
        return Ok(Targets {
            ids: t
                .ids
                .into_iter()
                .map(|c| Cow::Owned(c.into_owned()))
                .collect(),
            setting_name: owned(t.setting_name),
            old_state: owned(t.old_state),
            new_state: owned(t.new_state),
        });
    }
    if !text.starts_with('[') {
        return Ok(Targets::default());
    }
    let list: Vec<TargetResource<'_>> =
        serde_json::from_str(text).map_err(DecodeError::from_json)?;
    Ok(targets_from(list))
}

fn targets_from(list: Vec<TargetResource<'_>>) -> Targets<'_> {
    let mut t = Targets::default();
    let mut first_props = None;
    for (i, target) in list.into_iter().enumerate() {
        if let Some(id) = non_empty(target.id) {
            t.ids.push(id);
        }
        if i == 0 {
            first_props = target.modified_properties;
        }
    }
    let props = first_props.unwrap_or_default();
    let mut first_name = None;
    for prop in props {
        let old_state = prop.old_value.as_deref().and_then(policy_state);
        let new_state = prop.new_value.as_deref().and_then(policy_state);
        if old_state.is_some() || new_state.is_some() {
            t.setting_name = non_empty(prop.display_name);
            t.old_state = old_state.map(Cow::Owned);
            t.new_state = new_state.map(Cow::Owned);
            return t;
        }
        if first_name.is_none() {
            first_name = non_empty(prop.display_name);
        }
    }
    t.setting_name = first_name;
    t
}

/// The `state` of a policy serialized as JSON in a modified property value, if it is one.
fn policy_state(value: &str) -> Option<String> {
    let v = value.trim_start();
    if !v.starts_with('{') || !v.contains("\"state\"") {
        return None;
    }
    serde_json::from_str::<PolicyState>(v)
        .ok()?
        .state
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use crate::event::test_support::{decode, reason};
    use crate::event::{CloudEvent, Outcome, Provider};

    const EXPORT: &str = include_str!(
        "../../tests/fixtures/decoders/entra_id/update_ca_policy_diagnostic_export.json"
    );
    const GRAPH: &str =
        include_str!("../../tests/fixtures/decoders/entra_id/update_ca_policy_graph.json");
    const SENTINEL: &str =
        include_str!("../../tests/fixtures/decoders/entra_id/AADAuditEvents.ndjson");

    const TENANT: &str = "11111111-2222-3333-4444-555555555555";
    const POLICY: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";

    fn assert_ca_disabled(ev: &CloudEvent<'_>) {
        assert_eq!(ev.cloud_provider, Provider::EntraId);
        assert_eq!(ev.cloud_account_uid, TENANT);
        assert_eq!(ev.cloud_region, "global");
        assert_eq!(ev.api_service_name, "Conditional Access");
        assert_eq!(ev.api_operation, "Update conditional access policy");
        assert_eq!(ev.actor_user_uid, "mallory@contoso.onmicrosoft.com");
        assert_eq!(ev.actor_user_type.as_deref(), Some("User"));
        assert_eq!(ev.status, Outcome::Success);
        assert_eq!(ev.metadata_log_name, "audit");
        assert_eq!(
            ev.metadata_uid.as_deref(),
            Some("IPCGraph_20240731150455_0f3c2b1a")
        );
        assert_eq!(ev.resources, vec![POLICY]);
        assert_eq!(
            ev.api_request.setting_name.as_deref(),
            Some("ConditionalAccessPolicy")
        );
        assert_eq!(ev.api_request.policy_old_state.as_deref(), Some("enabled"));
        assert_eq!(ev.api_request.policy_new_state.as_deref(), Some("disabled"));
        assert_eq!(ev.time, 1_722_438_295_123);
    }

    #[test]
    fn diagnostic_export_ca_policy_disabled() {
        let out = decode(EXPORT);
        assert_eq!(out.len(), 1);
        assert_ca_disabled(&out[0]);
        assert_eq!(out[0].src_endpoint_ip.as_deref(), Some("203.0.113.44"));
    }

    #[test]
    fn graph_object_ca_policy_disabled() {
        let out = decode(GRAPH);
        assert_eq!(out.len(), 1);
        assert_ca_disabled(&out[0]);
    }

    #[test]
    fn graph_object_without_tenant_is_missing_field() {
        // A bare Graph directoryAudit names no tenant; the collector must add `tenantId`.
        let bare = GRAPH.replacen(&format!("\"tenantId\": \"{TENANT}\","), "", 1);
        assert_ne!(bare, GRAPH);
        assert_eq!(reason(&bare), "missing_field:tenantId");
    }

    #[test]
    fn sentinel_audit_logs_rows() {
        let mut n = 0;
        for line in SENTINEL.lines().filter(|l| !l.trim().is_empty()) {
            let out = decode(line);
            assert_eq!(out.len(), 1);
            let ev = &out[0];
            assert_eq!(ev.cloud_provider, Provider::EntraId);
            assert_eq!(ev.cloud_account_uid, "00000000-0000-0000-0000-000000000000");
            assert_eq!(ev.metadata_log_name, "audit");
            assert_eq!(ev.status, Outcome::Success);
            assert!(!ev.resources.is_empty());
            n += 1;
        }
        assert_eq!(n, 4);
        let first = decode(SENTINEL.lines().next().expect("a line"));
        let ev = &first[0];
        assert_eq!(
            ev.api_operation,
            "Update application – Certificates and secrets management "
        );
        assert_eq!(ev.api_service_name, "Core Directory");
        assert_eq!(ev.actor_user_uid, "pgustavo@simulandlabs.com");
        assert_eq!(ev.resources, vec!["11b49e19-2326-4be6-93cb-7f37439bbd81"]);
        assert_eq!(
            ev.api_request.setting_name.as_deref(),
            Some("KeyDescription")
        );
        assert_eq!(ev.api_request.policy_old_state, None);
        assert_eq!(
            ev.metadata_uid.as_deref(),
            Some("Directory_10065ffb-8199-48bc-8ff5-912cb5b8295a_AUMVX_13992832")
        );
        assert_eq!(ev.time, 1_627_910_965_983);
    }

    #[test]
    fn app_initiator_and_failure() {
        let raw = r#"{"id":"x1","category":"Policy","result":"failure","resultReason":"Forbidden","activityDisplayName":"Delete conditional access policy","activityDateTime":"2024-07-31T15:00:00Z","loggedByService":"Conditional Access","tenantId":"t1","initiatedBy":{"user":null,"app":{"appId":"a-1","displayName":"Automation","servicePrincipalId":"sp-1","servicePrincipalName":null}},"targetResources":[]}"#;
        let ev = &decode(raw)[0];
        assert_eq!(ev.actor_user_uid, "sp-1");
        assert_eq!(ev.actor_user_type.as_deref(), Some("ServicePrincipal"));
        assert_eq!(ev.status, Outcome::Failure);
        assert_eq!(ev.status_code.as_deref(), Some("Forbidden"));
        assert!(ev.resources.is_empty());
    }

    #[test]
    fn missing_fields_and_wrong_types() {
        let no_op = r#"{"category":"AuditLogs","time":"2024-07-31T15:00:00Z","tenantId":"t"}"#;
        assert_eq!(reason(no_op), "missing_field:activityDisplayName");
        let no_time = r#"{"activityDisplayName":"Add user","tenantId":"t"}"#;
        assert_eq!(reason(no_time), "missing_field:activityDateTime");
        let bad_time =
            r#"{"activityDisplayName":"Add user","activityDateTime":"soon","tenantId":"t"}"#;
        assert_eq!(reason(bad_time), "invalid_value:activityDateTime");
        let wrong = r#"{"activityDisplayName":["Add user"],"activityDateTime":"2024-07-31T15:00:00Z","tenantId":"t"}"#;
        assert_eq!(reason(wrong), "wrong_type");
        let wrong_targets = r#"{"activityDisplayName":"Add user","activityDateTime":"2024-07-31T15:00:00Z","tenantId":"t","targetResources":[{"id":5}]}"#;
        assert_eq!(reason(wrong_targets), "wrong_type");
        let bad_string = r#"{"ActivityDisplayName":"Add user","ActivityDateTime":"2024-07-31T15:00:00Z","TenantId":"t","LoggedByService":"Core Directory","InitiatedBy":"{not json"}"#;
        assert_eq!(reason(bad_string), "not_json");
    }

    #[test]
    fn truncated_and_mangled_records_never_panic() {
        crate::event::test_support::never_panics(&[EXPORT, GRAPH, SENTINEL]);
    }
}
