//! Office 365 Management Activity API records (the unified audit log) and the Sentinel
//! `OfficeActivity` table row.
//!
//! Both shapes share the common schema names (`Operation`, `OrganizationId`, `UserId`,
//! `ResultStatus`); the API writes `CreationTime` (UTC, no zone), `Workload` and `Id`, the Sentinel
//! row `TimeGenerated`, `OfficeWorkload` and `OfficeId`, and may serialize `Parameters` and
//! `ModifiedProperties` as JSON strings. Those two arrays stay `RawValue`s: `Parameters` is
//! parsed only for the cmdlets whose switches a detector reads (`Set-AdminAuditLogConfig
//! -UnifiedAuditLogIngestionEnabled`, `Set-DkimSigningConfig -Enabled`), and the first
//! `ModifiedProperties` entry gives the setting name and its old and new values.

use super::time::parse_rfc3339_ms;
use super::{CloudEvent, DecodeError, Outcome, Provider};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// A unified audit log record (common schema), in either shape.
#[derive(Deserialize)]
struct O365Record<'a> {
    #[serde(
        rename = "CreationTime",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    creation_time: Option<Cow<'a, str>>,
    #[serde(
        rename = "TimeGenerated",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    time_generated: Option<Cow<'a, str>>,
    #[serde(
        rename = "Id",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    id: Option<Cow<'a, str>>,
    #[serde(
        rename = "OfficeId",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    office_id: Option<Cow<'a, str>>,
    #[serde(
        rename = "Operation",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    operation: Option<Cow<'a, str>>,
    #[serde(
        rename = "OrganizationId",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    organization_id: Option<Cow<'a, str>>,
    #[serde(
        rename = "ResultStatus",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    result_status: Option<Cow<'a, str>>,
    #[serde(
        rename = "UserId",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    user_id: Option<Cow<'a, str>>,
    /// An integer (AuditLogUserType) in the API, a name in Sentinel.
    #[serde(rename = "UserType", borrow, default)]
    user_type: Option<&'a RawValue>,
    #[serde(
        rename = "Workload",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    workload: Option<Cow<'a, str>>,
    #[serde(
        rename = "OfficeWorkload",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    office_workload: Option<Cow<'a, str>>,
    #[serde(
        rename = "ClientIP",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    client_ip: Option<Cow<'a, str>>,
    #[serde(
        rename = "ClientIPAddress",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    client_ip_address: Option<Cow<'a, str>>,
    #[serde(
        rename = "Client_IPAddress",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    client_ip_address_sentinel: Option<Cow<'a, str>>,
    #[serde(
        rename = "ObjectId",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    object_id: Option<Cow<'a, str>>,
    #[serde(rename = "Parameters", borrow, default)]
    parameters: Option<&'a RawValue>,
    #[serde(rename = "ModifiedProperties", borrow, default)]
    modified_properties: Option<&'a RawValue>,
}

/// `Parameters[]`: a cmdlet switch and its value.
#[derive(Deserialize)]
struct Parameter<'a> {
    #[serde(
        rename = "Name",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    name: Option<Cow<'a, str>>,
    #[serde(
        rename = "Value",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    value: Option<Cow<'a, str>>,
}

/// `ModifiedProperties[]`.
#[derive(Deserialize)]
struct ModifiedProperty<'a> {
    #[serde(
        rename = "Name",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    name: Option<Cow<'a, str>>,
    #[serde(
        rename = "OldValue",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    old_value: Option<Cow<'a, str>>,
    #[serde(
        rename = "NewValue",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    new_value: Option<Cow<'a, str>>,
}

fn non_empty(c: Option<Cow<'_, str>>) -> Option<Cow<'_, str>> {
    c.filter(|c| !c.is_empty())
}

/// The `Parameters` switch that says whether the cmdlet leaves its feature on.
fn enabling_switch(operation: &str) -> Option<&'static str> {
    match operation {
        "Set-AdminAuditLogConfig" => Some("UnifiedAuditLogIngestionEnabled"),
        "Set-DkimSigningConfig" => Some("Enabled"),
        _ => None,
    }
}

/// Decodes one unified audit log record.
pub fn decode<'a>(text: &'a str, out: &mut Vec<CloudEvent<'a>>) -> Result<(), DecodeError> {
    let rec: O365Record<'a> = serde_json::from_str(text).map_err(DecodeError::from_json)?;
    let time_text = non_empty(rec.creation_time)
        .or(non_empty(rec.time_generated))
        .ok_or(DecodeError::MissingField("CreationTime"))?;
    let time = parse_rfc3339_ms(&time_text).ok_or_else(|| DecodeError::InvalidValue {
        field: "CreationTime",
        detail: format!("not an ISO 8601 time: {time_text:.40}"),
    })?;
    let operation = non_empty(rec.operation).ok_or(DecodeError::MissingField("Operation"))?;
    let scope =
        non_empty(rec.organization_id).ok_or(DecodeError::MissingField("OrganizationId"))?;
    let workload = non_empty(rec.workload)
        .or(non_empty(rec.office_workload))
        .unwrap_or(Cow::Borrowed("unknown"));
    let principal = non_empty(rec.user_id).unwrap_or(Cow::Borrowed("unknown"));
    let log_name = log_name(&workload);

    let mut ev = CloudEvent::new(time, Provider::O365, scope, workload, operation, principal);
    ev.actor_user_type = rec.user_type.and_then(user_type);
    ev.src_endpoint_ip = non_empty(rec.client_ip)
        .or(non_empty(rec.client_ip_address))
        .or(non_empty(rec.client_ip_address_sentinel));
    if let Some(result) = non_empty(rec.result_status) {
        if ["Failed", "Failure", "false"]
            .iter()
            .any(|f| result.eq_ignore_ascii_case(f))
        {
            ev.status = Outcome::Failure;
            ev.status_code = Some(result);
        }
    }
    ev.metadata_log_name = log_name;
    ev.metadata_uid = non_empty(rec.id).or(non_empty(rec.office_id));
    ev.resources.extend(non_empty(rec.object_id));

    if let (Some(switch), Some(raw)) = (enabling_switch(&ev.api_operation), rec.parameters) {
        ev.api_request.enabled = parameter_bool(raw, switch)?;
    }
    if let Some(raw) = rec.modified_properties {
        if let Some((name, old, new)) = first_modified_property(raw)? {
            ev.api_request.setting_name = name;
            ev.api_request.policy_old_state = old;
            ev.api_request.policy_new_state = new;
        }
    }
    out.push(ev);
    Ok(())
}

/// `Workload` lower-cased, without allocating for the common workloads.
fn log_name(workload: &str) -> Cow<'static, str> {
    let known = match workload {
        "Exchange" => "exchange",
        "AzureActiveDirectory" => "azureactivedirectory",
        "SharePoint" => "sharepoint",
        "OneDrive" => "onedrive",
        "MicrosoftTeams" => "microsoftteams",
        "SecurityComplianceCenter" => "securitycompliancecenter",
        "PowerBI" => "powerbi",
        "unknown" => "unknown",
        other => return Cow::Owned(other.to_ascii_lowercase()),
    };
    Cow::Borrowed(known)
}

/// `UserType`: the AuditLogUserType name for an integer, the text for a string.
fn user_type(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    if let Some(name) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        return (!name.is_empty() && !name.contains('\\')).then_some(Cow::Borrowed(name));
    }
    let name = match text {
        "0" => "Regular",
        "1" => "Reserved",
        "2" => "Admin",
        "3" => "DcAdmin",
        "4" => "System",
        "5" => "Application",
        "6" => "ServicePrincipal",
        "7" => "CustomPolicy",
        "8" => "SystemPolicy",
        _ => return None,
    };
    Some(Cow::Borrowed(name))
}

/// `True` / `False` (any case, PowerShell `$true` too).
fn parse_bool(value: &str) -> Option<bool> {
    let v = value.trim().trim_start_matches('$');
    if v.eq_ignore_ascii_case("true") {
        Some(true)
    } else if v.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// The boolean value of the parameter `switch`, from an array or a JSON string of one.
fn parameter_bool(raw: &RawValue, switch: &str) -> Result<Option<bool>, DecodeError> {
    let find = |params: Vec<Parameter<'_>>| {
        params
            .into_iter()
            .find(|p| p.name.as_deref() == Some(switch))
            .and_then(|p| p.value.as_deref().and_then(parse_bool))
    };
    let text = raw.get();
    if text.starts_with('[') {
        let params: Vec<Parameter<'_>> =
            serde_json::from_str(text).map_err(DecodeError::from_json)?;
        return Ok(find(params));
    }
    if text.starts_with('"') {
        let inner: String = serde_json::from_str(text).map_err(DecodeError::from_json)?;
        if inner.trim_start().starts_with('[') {
            let params: Vec<Parameter<'_>> =
                serde_json::from_str(&inner).map_err(DecodeError::from_json)?;
            return Ok(find(params));
        }
    }
    Ok(None)
}

type SettingChange<'a> = (
    Option<Cow<'a, str>>,
    Option<Cow<'a, str>>,
    Option<Cow<'a, str>>,
);

/// Name, old and new value of the first `ModifiedProperties` entry.
fn first_modified_property(raw: &RawValue) -> Result<Option<SettingChange<'_>>, DecodeError> {
    let text = raw.get();
    if text.starts_with('[') {
        let props: Vec<ModifiedProperty<'_>> =
            serde_json::from_str(text).map_err(DecodeError::from_json)?;
        return Ok(props
            .into_iter()
            .next()
            .map(|p| (non_empty(p.name), p.old_value, p.new_value)));
    }
    if text.starts_with('"') {
        let inner: String = serde_json::from_str(text).map_err(DecodeError::from_json)?;
        if inner.trim_start().starts_with('[') {
            let props: Vec<ModifiedProperty<'_>> =
                serde_json::from_str(&inner).map_err(DecodeError::from_json)?;
            let own = |c: Option<Cow<'_, str>>| c.map(|c| Cow::Owned(c.into_owned()));
            return Ok(props
                .into_iter()
                .next()
                .map(|p| (own(non_empty(p.name)), own(p.old_value), own(p.new_value))));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use crate::event::test_support::{decode, reason};
    use crate::event::{Outcome, Provider};

    const AUDIT_OFF: &str =
        include_str!("../../tests/fixtures/decoders/o365/set_admin_audit_log_config_disabled.json");
    const UPDATE_POLICY: &str =
        include_str!("../../tests/fixtures/decoders/o365/update_policy_aad.json");
    const DKIM: &str =
        include_str!("../../tests/fixtures/decoders/o365/set_dkim_signing_config.json");
    const SENTINEL: &str =
        include_str!("../../tests/fixtures/decoders/o365/OfficeActivityEvents.ndjson");

    const ORG: &str = "2d4f6a8c-1b3e-4d5f-9a7c-0e2b4d6f8a1c";

    #[test]
    fn set_admin_audit_log_config_disabled() {
        let out = decode(AUDIT_OFF);
        assert_eq!(out.len(), 1);
        let ev = &out[0];
        assert_eq!(ev.cloud_provider, Provider::O365);
        assert_eq!(ev.cloud_account_uid, ORG);
        assert_eq!(ev.cloud_region, "global");
        assert_eq!(ev.api_service_name, "Exchange");
        assert_eq!(ev.api_operation, "Set-AdminAuditLogConfig");
        assert_eq!(ev.actor_user_uid, "mallory@contoso.onmicrosoft.com");
        assert_eq!(ev.actor_user_type.as_deref(), Some("Admin"));
        assert_eq!(ev.status, Outcome::Success);
        assert_eq!(ev.metadata_log_name, "exchange");
        assert_eq!(
            ev.metadata_uid.as_deref(),
            Some("4e8a2b6c-0d1f-4a3b-9c5d-7e9f1a3b5c7d")
        );
        assert_eq!(ev.api_request.enabled, Some(false));
        assert_eq!(ev.src_endpoint_ip.as_deref(), Some("203.0.113.44"));
        assert_eq!(ev.time, 1_722_440_100_000);
    }

    #[test]
    fn update_policy_from_entra_workload() {
        let ev = &decode(UPDATE_POLICY)[0];
        assert_eq!(ev.api_service_name, "AzureActiveDirectory");
        assert_eq!(ev.api_operation, "Update policy.");
        assert_eq!(ev.metadata_log_name, "azureactivedirectory");
        assert_eq!(ev.actor_user_uid, "mallory@contoso.onmicrosoft.com");
        assert_eq!(ev.status, Outcome::Success);
        assert_eq!(ev.api_request.setting_name.as_deref(), Some("PolicyDetail"));
        assert!(ev
            .api_request
            .policy_old_state
            .as_deref()
            .is_some_and(|v| v.contains(r#"State\":\"Enabled"#)));
        assert!(ev
            .api_request
            .policy_new_state
            .as_deref()
            .is_some_and(|v| v.contains(r#"State\":\"Disabled"#)));
        assert_eq!(ev.api_request.enabled, None);
    }

    #[test]
    fn dkim_enabled_switch_and_failure() {
        let ev = &decode(DKIM)[0];
        assert_eq!(ev.api_operation, "Set-DkimSigningConfig");
        assert_eq!(ev.api_request.enabled, Some(false));
        assert_eq!(ev.status, Outcome::Failure);
        assert_eq!(ev.status_code.as_deref(), Some("False"));
    }

    #[test]
    fn sentinel_office_activity_row() {
        let mut n = 0;
        for line in SENTINEL.lines().filter(|l| !l.trim().is_empty()) {
            let ev = &decode(line)[0];
            assert_eq!(ev.cloud_provider, Provider::O365);
            assert_eq!(ev.cloud_account_uid, "00000000-0000-0000-0000-000000000000");
            assert_eq!(ev.api_service_name, "Exchange");
            assert_eq!(ev.api_operation, "MailItemsAccessed");
            assert_eq!(ev.actor_user_uid, "pgustavo@simulandlabs.com");
            assert_eq!(ev.actor_user_type.as_deref(), Some("Regular"));
            assert_eq!(ev.src_endpoint_ip.as_deref(), Some("1.2.3.4"));
            assert_eq!(
                ev.metadata_uid.as_deref(),
                Some("699e0b10-1c53-403e-976f-ce0847a92b44")
            );
            assert_eq!(ev.status, Outcome::Success);
            assert_eq!(ev.time, 1_627_911_127_000);
            n += 1;
        }
        assert_eq!(n, 1);
    }

    #[test]
    fn parameters_as_json_string() {
        let raw = r#"{"TimeGenerated":"2024-07-31T15:35:00Z","OfficeWorkload":"Exchange","Operation":"Set-AdminAuditLogConfig","OrganizationId":"o","UserId":"u","ResultStatus":"True","Parameters":"[{\"Name\":\"UnifiedAuditLogIngestionEnabled\",\"Value\":\"$true\"}]"}"#;
        let ev = &decode(raw)[0];
        assert_eq!(ev.api_request.enabled, Some(true));
        assert_eq!(ev.status, Outcome::Success);
    }

    #[test]
    fn missing_fields_and_wrong_types() {
        let no_time = r#"{"Operation":"X","Workload":"Exchange","OrganizationId":"o"}"#;
        assert_eq!(reason(no_time), "missing_field:CreationTime");
        let no_org =
            r#"{"CreationTime":"2024-07-31T15:35:00","Operation":"X","Workload":"Exchange"}"#;
        assert_eq!(reason(no_org), "missing_field:OrganizationId");
        let empty_op = r#"{"CreationTime":"2024-07-31T15:35:00","Operation":"","Workload":"Exchange","OrganizationId":"o"}"#;
        assert_eq!(reason(empty_op), "missing_field:Operation");
        let bad_time = r#"{"CreationTime":"07/31/2024 15:35","Operation":"X","Workload":"Exchange","OrganizationId":"o"}"#;
        assert_eq!(reason(bad_time), "invalid_value:CreationTime");
        let wrong = r#"{"CreationTime":"2024-07-31T15:35:00","Operation":"X","Workload":"Exchange","OrganizationId":7}"#;
        assert_eq!(reason(wrong), "wrong_type");
        let wrong_params = r#"{"CreationTime":"2024-07-31T15:35:00","Operation":"Set-AdminAuditLogConfig","Workload":"Exchange","OrganizationId":"o","Parameters":[{"Name":"Enabled","Value":false}]}"#;
        assert_eq!(reason(wrong_params), "wrong_type");
    }

    #[test]
    fn truncated_and_mangled_records_never_panic() {
        crate::event::test_support::never_panics(&[AUDIT_OFF, UPDATE_POLICY, DKIM, SENTINEL]);
    }
}
