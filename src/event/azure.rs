//! Azure Activity Log and Key Vault data-plane (`AuditEvent`) records.
//!
//! The same event reaches us in three shapes, and one borrowed struct ([`AzureRecord`]) reads
//! all of them:
//! - the diagnostic-settings export (Event Hub / storage, `{"records": [...]}` unwrapped in
//!   `shape`): `time`, `operationName` and `category` as strings, `resultType`,
//!   `identity.claims` (Key Vault: `identity.claim`), `callerIpAddress`;
//! - the REST API / `az monitor activity-log list`: `eventTimestamp`, `operationName` and
//!   `category` as `{value, localizedValue}`, `status.value`, `caller`, `claims`, `subscriptionId`;
//! - the Log Analytics `AzureActivity` table: `TimeGenerated`, `OperationNameValue`,
//!   `CategoryValue`, `ActivityStatusValue`, `Caller`, `SubscriptionId`.
//!
//! Exports disagree on case (`MICROSOFT.INSIGHTS/DIAGNOSTICSETTINGS/DELETE` vs
//! `Microsoft.Insights/diagnosticSettings/delete`), so the operation is ASCII-upper-cased and the
//! subscription id lower-cased: one key per operation and per subscription whatever the export.
//! Both allocate only when the raw text is not already in that case.

use super::time::parse_rfc3339_ms;
use super::{CloudEvent, DecodeError, Outcome, Provider};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// A field that is a string in exports and `{value, localizedValue}` in the REST API.
#[derive(Deserialize)]
#[serde(untagged)]
enum Localizable<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Value {
        #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
        value: Option<Cow<'a, str>>,
    },
}

impl<'a> Localizable<'a> {
    fn into_value(self) -> Option<Cow<'a, str>> {
        match self {
            Localizable::Text(t) => Some(t),
            Localizable::Value { value } => value,
        }
        .filter(|v| !v.is_empty())
    }
}

/// One Activity Log or Key Vault record, in any of the three shapes.
#[derive(Deserialize)]
struct AzureRecord<'a> {
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    time: Option<Cow<'a, str>>,
    #[serde(
        rename = "eventTimestamp",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    event_timestamp: Option<Cow<'a, str>>,
    #[serde(
        rename = "TimeGenerated",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    time_generated: Option<Cow<'a, str>>,

    #[serde(rename = "operationName", borrow, default)]
    operation_name: Option<Localizable<'a>>,
    #[serde(
        rename = "OperationNameValue",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    operation_name_value: Option<Cow<'a, str>>,
    #[serde(
        rename = "OperationName",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    operation_name_upper: Option<Cow<'a, str>>,

    #[serde(borrow, default)]
    category: Option<Localizable<'a>>,
    #[serde(
        rename = "CategoryValue",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    category_value: Option<Cow<'a, str>>,
    #[serde(
        rename = "Category",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    category_upper: Option<Cow<'a, str>>,

    #[serde(
        rename = "resultType",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    result_type: Option<Cow<'a, str>>,
    #[serde(
        rename = "resultSignature",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    result_signature: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    status: Option<Localizable<'a>>,
    #[serde(rename = "subStatus", borrow, default)]
    sub_status: Option<Localizable<'a>>,
    #[serde(
        rename = "ActivityStatusValue",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    activity_status_value: Option<Cow<'a, str>>,
    #[serde(
        rename = "ActivitySubstatusValue",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    activity_substatus_value: Option<Cow<'a, str>>,

    #[serde(
        rename = "callerIpAddress",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    caller_ip_address: Option<Cow<'a, str>>,
    #[serde(
        rename = "CallerIpAddress",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    caller_ip_address_upper: Option<Cow<'a, str>>,
    #[serde(rename = "httpRequest", borrow, default)]
    http_request: Option<HttpRequest<'a>>,

    #[serde(borrow, default)]
    identity: Option<Identity<'a>>,
    #[serde(borrow, default)]
    claims: Option<Claims<'a>>,
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    caller: Option<Cow<'a, str>>,
    #[serde(
        rename = "Caller",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    caller_upper: Option<Cow<'a, str>>,

    #[serde(
        rename = "subscriptionId",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    subscription_id: Option<Cow<'a, str>>,
    #[serde(
        rename = "SubscriptionId",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    subscription_id_upper: Option<Cow<'a, str>>,
    #[serde(
        rename = "resourceId",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    resource_id: Option<Cow<'a, str>>,
    #[serde(
        rename = "ResourceId",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    resource_id_upper: Option<Cow<'a, str>>,
    #[serde(
        rename = "_ResourceId",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    resource_id_la: Option<Cow<'a, str>>,
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    location: Option<Cow<'a, str>>,
    #[serde(
        rename = "Location",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    location_upper: Option<Cow<'a, str>>,

    #[serde(
        rename = "eventDataId",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    event_data_id: Option<Cow<'a, str>>,
    #[serde(
        rename = "EventDataId",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    event_data_id_upper: Option<Cow<'a, str>>,
    #[serde(
        rename = "requestUri",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    request_uri: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    properties: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct HttpRequest<'a> {
    #[serde(
        rename = "clientIpAddress",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    client_ip_address: Option<Cow<'a, str>>,
}

/// `identity`: Activity Log `claims`, Key Vault `claim` (singular).
#[derive(Deserialize)]
struct Identity<'a> {
    #[serde(borrow, default)]
    claims: Option<Claims<'a>>,
    #[serde(borrow, default)]
    claim: Option<Claims<'a>>,
}

/// The token claims that name the caller, in their long (URI) and short spellings.
#[derive(Deserialize, Default)]
struct Claims<'a> {
    #[serde(
        rename = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    upn_uri: Option<Cow<'a, str>>,
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    upn: Option<Cow<'a, str>>,
    #[serde(
        rename = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    name_uri: Option<Cow<'a, str>>,
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    appid: Option<Cow<'a, str>>,
    #[serde(
        rename = "http://schemas.microsoft.com/identity/claims/objectidentifier",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    oid_uri: Option<Cow<'a, str>>,
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    oid: Option<Cow<'a, str>>,
}

impl<'a> Claims<'a> {
    /// The user name claims, most specific first.
    fn user(&mut self) -> Option<Cow<'a, str>> {
        non_empty(self.upn_uri.take())
            .or_else(|| non_empty(self.upn.take()))
            .or_else(|| non_empty(self.name_uri.take()))
    }

    /// The application or object id claims, for callers without a user name.
    fn app(&mut self) -> Option<Cow<'a, str>> {
        non_empty(self.appid.take())
            .or_else(|| non_empty(self.oid_uri.take()))
            .or_else(|| non_empty(self.oid.take()))
    }
}

/// Key Vault `AuditEvent` `properties`, the field we keep.
#[derive(Deserialize)]
struct KeyVaultProperties<'a> {
    /// The secret, key or certificate URI the call touched.
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    id: Option<Cow<'a, str>>,
    #[serde(
        rename = "requestUri",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    request_uri: Option<Cow<'a, str>>,
}

fn non_empty(c: Option<Cow<'_, str>>) -> Option<Cow<'_, str>> {
    c.filter(|c| !c.is_empty())
}

/// Decodes one Activity Log or Key Vault `AuditEvent` record.
pub fn decode<'a>(text: &'a str, out: &mut Vec<CloudEvent<'a>>) -> Result<(), DecodeError> {
    let rec: AzureRecord<'a> = serde_json::from_str(text).map_err(DecodeError::from_json)?;
    let time_text = non_empty(rec.time)
        .or(non_empty(rec.event_timestamp))
        .or(non_empty(rec.time_generated))
        .ok_or(DecodeError::MissingField("time"))?;
    let time = parse_rfc3339_ms(&time_text).ok_or_else(|| DecodeError::InvalidValue {
        field: "time",
        detail: format!("not an RFC 3339 time: {time_text:.40}"),
    })?;
    let operation = rec
        .operation_name
        .and_then(Localizable::into_value)
        .or(non_empty(rec.operation_name_value))
        .or(non_empty(rec.operation_name_upper))
        .map(ascii_upper)
        .ok_or(DecodeError::MissingField("operationName"))?;
    let category = rec
        .category
        .and_then(Localizable::into_value)
        .or(non_empty(rec.category_value))
        .or(non_empty(rec.category_upper));
    let is_key_vault_event = category
        .as_deref()
        .is_some_and(|c| c.eq_ignore_ascii_case("AuditEvent"));
    let resource_id = non_empty(rec.resource_id)
        .or(non_empty(rec.resource_id_upper))
        .or(non_empty(rec.resource_id_la));
    let scope = non_empty(rec.subscription_id)
        .or(non_empty(rec.subscription_id_upper))
        .or_else(|| {
            resource_id
                .as_ref()
                .and_then(|id| sub_cow(id, |s| path_segment_after(s, "subscriptions")))
        })
        .map(ascii_lower)
        .ok_or(DecodeError::MissingField("resourceId"))?;
    let service = service_of(&operation, resource_id.as_ref(), is_key_vault_event);

    let mut claims = rec
        .identity
        .and_then(|i| i.claims.or(i.claim))
        .or(rec.claims)
        .unwrap_or_default();
    let principal = claims
        .user()
        .or_else(|| non_empty(rec.caller))
        .or_else(|| non_empty(rec.caller_upper))
        .or_else(|| claims.app())
        .unwrap_or(Cow::Borrowed("unknown"));

    let mut ev = CloudEvent::new(time, Provider::Azure, scope, service, operation, principal);
    if let Some(location) = non_empty(rec.location).or(non_empty(rec.location_upper)) {
        ev.cloud_region = location;
    }
    ev.src_endpoint_ip = non_empty(rec.caller_ip_address)
        .or(non_empty(rec.caller_ip_address_upper))
        .or_else(|| {
            rec.http_request
                .and_then(|h| non_empty(h.client_ip_address))
        });
    let result = non_empty(rec.result_type)
        .or_else(|| rec.status.and_then(Localizable::into_value))
        .or(non_empty(rec.activity_status_value));
    if let Some(result) = result {
        if result.eq_ignore_ascii_case("Failure") || result.eq_ignore_ascii_case("Failed") {
            ev.status = Outcome::Failure;
            ev.status_code = non_empty(rec.result_signature)
                .or_else(|| rec.sub_status.and_then(Localizable::into_value))
                .or(non_empty(rec.activity_substatus_value))
                .or(Some(result));
        }
    }
    ev.metadata_log_name = category.map_or(Cow::Borrowed("unknown"), log_name);
    ev.metadata_uid = non_empty(rec.event_data_id).or(non_empty(rec.event_data_id_upper));

    let mut target = None;
    if is_key_vault_event {
        if let Some(raw) = rec.properties.filter(|p| p.get().starts_with('{')) {
            let props: KeyVaultProperties<'a> =
                serde_json::from_str(raw.get()).map_err(DecodeError::from_json)?;
            target = non_empty(props.id).or(non_empty(props.request_uri));
        }
        target = target.or(non_empty(rec.request_uri));
    }
    ev.resources.extend(target.or(resource_id));
    out.push(ev);
    Ok(())
}

/// The resource provider namespace (`MICROSOFT.INSIGHTS`): the first segment of an ARM
/// operation, else the provider in the resource id, else Key Vault for data-plane events.
fn service_of<'a>(
    operation: &Cow<'a, str>,
    resource_id: Option<&Cow<'a, str>>,
    key_vault_event: bool,
) -> Cow<'a, str> {
    if let Some(ns) = sub_cow(operation, |op| op.split_once('/').map(|(ns, _)| ns)) {
        return ns;
    }
    if let Some(ns) = resource_id.and_then(|id| sub_cow(id, |s| path_segment_after(s, "providers")))
    {
        return ascii_upper(ns);
    }
    Cow::Borrowed(if key_vault_event {
        "MICROSOFT.KEYVAULT"
    } else {
        "unknown"
    })
}

/// The `metadata_log_name` of an Activity Log category: `Administrative` → `administrative`,
/// `AuditEvent` → `audit_event`, `Service Health` → `service_health`.
fn log_name(category: Cow<'_, str>) -> Cow<'_, str> {
    let known = match &*category {
        "Administrative" | "administrative" => Some("administrative"),
        "AuditEvent" => Some("audit_event"),
        "Security" => Some("security"),
        "Policy" => Some("policy"),
        "ServiceHealth" => Some("service_health"),
        "ResourceHealth" => Some("resource_health"),
        "Alert" => Some("alert"),
        "Autoscale" => Some("autoscale"),
        "Recommendation" => Some("recommendation"),
        _ => None,
    };
    if let Some(k) = known {
        return Cow::Borrowed(k);
    }
    let mut s = String::with_capacity(category.len() + 4);
    let mut prev_lower = false;
    for c in category.chars() {
        if c == ' ' || c == '-' {
            s.push('_');
            prev_lower = false;
        } else if c.is_ascii_uppercase() {
            if prev_lower {
                s.push('_');
            }
            s.push(c.to_ascii_lowercase());
            prev_lower = false;
        } else {
            s.push(c);
            prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        }
    }
    Cow::Owned(s)
}

/// ASCII upper case, borrowing when the text already is.
fn ascii_upper(c: Cow<'_, str>) -> Cow<'_, str> {
    if c.bytes().any(|b| b.is_ascii_lowercase()) {
        Cow::Owned(c.to_ascii_uppercase())
    } else {
        c
    }
}

/// ASCII lower case, borrowing when the text already is.
fn ascii_lower(c: Cow<'_, str>) -> Cow<'_, str> {
    if c.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(c.to_ascii_lowercase())
    } else {
        c
    }
}

/// The path segment after `key` (case-insensitive): `/subscriptions/<id>/…` → `<id>`.
pub(super) fn path_segment_after<'s>(path: &'s str, key: &str) -> Option<&'s str> {
    let mut parts = path.split('/');
    while let Some(part) = parts.next() {
        if part.eq_ignore_ascii_case(key) {
            return parts.next().filter(|s| !s.is_empty());
        }
    }
    None
}

/// Applies `f`, which returns a slice of its argument, to a `Cow` without losing the borrow.
pub(super) fn sub_cow<'a>(
    c: &Cow<'a, str>,
    f: impl for<'s> Fn(&'s str) -> Option<&'s str>,
) -> Option<Cow<'a, str>> {
    match c {
        Cow::Borrowed(s) => f(s).map(Cow::Borrowed),
        Cow::Owned(s) => f(s).map(|sub| Cow::Owned(sub.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use crate::event::test_support::{decode, reason};
    use crate::event::{CloudEvent, Outcome, Provider};

    const EVENT_HUB: &str = include_str!(
        "../../tests/fixtures/decoders/azure/diagnostic_settings_delete_eventhub.json"
    );
    const REST: &str =
        include_str!("../../tests/fixtures/decoders/azure/diagnostic_settings_delete_rest.json");
    const KEY_VAULT: &str =
        include_str!("../../tests/fixtures/decoders/azure/keyvault_secret_get.json");
    const LOG_ANALYTICS: &str =
        include_str!("../../tests/fixtures/decoders/azure/azure_activity_log_analytics.json");

    const SUB: &str = "a1b2c3d4-1111-2222-3333-444455556666";

    #[test]
    fn event_hub_diagnostic_settings_delete() {
        let out = decode(EVENT_HUB);
        assert_eq!(out.len(), 1);
        let ev = &out[0];
        assert_eq!(ev.cloud_provider, Provider::Azure);
        assert_eq!(ev.cloud_account_uid, SUB);
        assert_eq!(ev.api_service_name, "MICROSOFT.INSIGHTS");
        assert_eq!(
            ev.api_operation,
            "MICROSOFT.INSIGHTS/DIAGNOSTICSETTINGS/DELETE"
        );
        assert_eq!(ev.actor_user_uid, "mallory@contoso.onmicrosoft.com");
        assert_eq!(ev.status, Outcome::Success);
        assert_eq!(ev.src_endpoint_ip.as_deref(), Some("203.0.113.44"));
        assert_eq!(ev.metadata_log_name, "administrative");
        assert_eq!(ev.cloud_region, "global");
        assert_eq!(
            ev.resources,
            vec![format!(
                "/SUBSCRIPTIONS/{}/PROVIDERS/MICROSOFT.INSIGHTS/DIAGNOSTICSETTINGS/SEND-TO-SENTINEL",
                SUB.to_ascii_uppercase()
            )]
        );
    }

    /// The REST shape carries `eventName: {value, localizedValue}`; `shape::RawTop` reads a
    /// non-string `eventName` as absent, so the full path works; this calls the decoder alone.
    fn decode_direct(raw: &str) -> Vec<CloudEvent<'_>> {
        let mut out = Vec::new();
        super::decode(raw, &mut out).expect("decodes");
        out
    }

    #[test]
    fn rest_shape_through_decode_record() {
        assert_eq!(
            decode(REST)[0].api_operation,
            "MICROSOFT.INSIGHTS/DIAGNOSTICSETTINGS/DELETE"
        );
    }

    #[test]
    fn rest_shape_matches_event_hub_shape() {
        let rest = &decode_direct(REST)[0];
        let hub = &decode(EVENT_HUB)[0];
        assert_eq!(rest.api_operation, hub.api_operation);
        assert_eq!(rest.api_service_name, hub.api_service_name);
        assert_eq!(rest.cloud_account_uid, hub.cloud_account_uid);
        assert_eq!(rest.actor_user_uid, hub.actor_user_uid);
        assert_eq!(rest.metadata_log_name, "administrative");
        assert_eq!(rest.src_endpoint_ip.as_deref(), Some("203.0.113.44"));
        assert_eq!(
            rest.metadata_uid.as_deref(),
            Some("6c5f1e4a-2b9d-4a1f-8e7c-0d3b2a190f11")
        );
        assert_eq!(rest.status, Outcome::Success);
    }

    #[test]
    fn key_vault_secret_get() {
        let ev = &decode(KEY_VAULT)[0];
        assert_eq!(ev.api_operation, "SECRETGET");
        assert_eq!(ev.api_service_name, "MICROSOFT.KEYVAULT");
        assert_eq!(ev.cloud_account_uid, SUB);
        assert_eq!(ev.metadata_log_name, "audit_event");
        assert_eq!(ev.actor_user_uid, "live.com#mallory@outlook.com");
        assert_eq!(
            ev.resources,
            vec!["https://contosokeyvault.vault.azure.net/secrets/db-password/4387e9f3d6e14c459867679a90fd0f79"]
        );
        assert_eq!(ev.status, Outcome::Success);
    }

    #[test]
    fn log_analytics_row_and_failure() {
        let ev = &decode(LOG_ANALYTICS)[0];
        assert_eq!(
            ev.api_operation,
            "MICROSOFT.KEYVAULT/VAULTS/SECRETS/GETSECRET/ACTION"
        );
        assert_eq!(ev.api_service_name, "MICROSOFT.KEYVAULT");
        assert_eq!(ev.cloud_account_uid, SUB);
        assert_eq!(ev.actor_user_uid, "mallory@contoso.onmicrosoft.com");
        assert_eq!(ev.status, Outcome::Failure);
        assert_eq!(ev.status_code.as_deref(), Some("Forbidden"));
        assert_eq!(
            ev.metadata_uid.as_deref(),
            Some("0f9e8d7c-6b5a-4c3d-2e1f-0a9b8c7d6e5f")
        );
        assert_eq!(ev.src_endpoint_ip.as_deref(), Some("198.51.100.9"));
    }

    #[test]
    fn app_only_caller_and_category_names() {
        let raw = r#"{"time":"2024-07-31T12:50:02Z","resourceId":"/subscriptions/ABC/resourceGroups/rg/providers/Microsoft.Automation/automationAccounts/aa/webhooks/w","operationName":"Microsoft.Automation/automationAccounts/webhooks/write","category":"Service Health","resultType":"Failure","resultSignature":"Conflict","identity":{"claims":{"appid":"app-1","http://schemas.microsoft.com/identity/claims/objectidentifier":"oid-1"}}}"#;
        let ev = &decode(raw)[0];
        assert_eq!(ev.actor_user_uid, "app-1");
        assert_eq!(ev.cloud_account_uid, "abc");
        assert_eq!(ev.api_service_name, "MICROSOFT.AUTOMATION");
        assert_eq!(ev.metadata_log_name, "service_health");
        assert_eq!(ev.status, Outcome::Failure);
        assert_eq!(ev.status_code.as_deref(), Some("Conflict"));
    }

    #[test]
    fn missing_fields_and_wrong_types() {
        let no_time = r#"{"operationName":"X/Y","resourceId":"/subscriptions/s"}"#;
        assert_eq!(reason(no_time), "missing_field:time");
        let no_scope = r#"{"time":"2024-07-31T12:50:02Z","operationName":"X/Y"}"#;
        assert_eq!(reason(no_scope), "missing_field:resourceId");
        let empty_op =
            r#"{"time":"2024-07-31T12:50:02Z","operationName":{"value":""},"subscriptionId":"s"}"#;
        assert_eq!(reason(empty_op), "missing_field:operationName");
        let bad_time = r#"{"time":"31/07/2024","operationName":"X/Y","subscriptionId":"s"}"#;
        assert_eq!(reason(bad_time), "invalid_value:time");
        let wrong = r#"{"time":"2024-07-31T12:50:02Z","operationName":42,"subscriptionId":"s"}"#;
        assert_eq!(reason(wrong), "wrong_type");
        let wrong_claims = r#"{"time":"2024-07-31T12:50:02Z","operationName":"X/Y","subscriptionId":"s","identity":{"claims":{"appid":1}}}"#;
        assert_eq!(reason(wrong_claims), "wrong_type");
    }

    #[test]
    fn truncated_and_mangled_records_never_panic() {
        crate::event::test_support::never_panics(&[EVENT_HUB, REST, KEY_VAULT, LOG_ANALYTICS]);
    }
}
