//! Google Workspace Admin SDK Reports activities (`kind: admin#reports#activity`).
//!
//! One activity holds one actor and one or more `events`; each event becomes its own
//! [`CloudEvent`] sharing the activity's time, customer, application, actor and IP. The strings
//! shared between those events are borrowed from the record, so cloning them per event is cheap.
//!
//! Parameter values come as `value`, `boolValue`, `intValue` (an int64, written as a JSON
//! string) or richer message types we do not read. `SETTING_NAME`, `OLD_VALUE` and `NEW_VALUE`
//! fill the setting change fields; `APPLICATION_NAME` and `DOMAIN_NAME` name the resource.

use super::time::parse_rfc3339_ms;
use super::{CloudEvent, DecodeError, Provider};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// An `Activity`, the fields we keep.
#[derive(Deserialize)]
struct Activity<'a> {
    #[serde(borrow, default)]
    id: Option<ActivityId<'a>>,
    #[serde(borrow, default)]
    actor: Option<Actor<'a>>,
    #[serde(
        rename = "ipAddress",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    ip_address: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    events: Option<Vec<Event<'a>>>,
}

#[derive(Deserialize)]
struct ActivityId<'a> {
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    time: Option<Cow<'a, str>>,
    /// int64: a JSON string in the API, a number in some exports.
    #[serde(rename = "uniqueQualifier", borrow, default)]
    unique_qualifier: Option<&'a RawValue>,
    #[serde(
        rename = "applicationName",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    application_name: Option<Cow<'a, str>>,
    #[serde(
        rename = "customerId",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    customer_id: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
struct Actor<'a> {
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    email: Option<Cow<'a, str>>,
    #[serde(
        rename = "profileId",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    profile_id: Option<Cow<'a, str>>,
    #[serde(
        rename = "callerType",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    caller_type: Option<Cow<'a, str>>,
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    key: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    parameters: Option<Vec<Parameter<'a>>>,
}

#[derive(Deserialize)]
struct Parameter<'a> {
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    value: Option<Cow<'a, str>>,
    #[serde(rename = "boolValue", default)]
    bool_value: Option<bool>,
    #[serde(rename = "intValue", borrow, default)]
    int_value: Option<&'a RawValue>,
}

impl<'a> Parameter<'a> {
    /// The parameter's scalar value as text, borrowed where the record allows.
    fn text(self) -> Option<Cow<'a, str>> {
        if let Some(v) = self.value {
            return Some(v);
        }
        if let Some(b) = self.bool_value {
            return Some(Cow::Borrowed(if b { "true" } else { "false" }));
        }
        self.int_value.and_then(int_text)
    }
}

/// An int64 written as a JSON number or a JSON string of digits, as borrowed text.
fn int_text(raw: &RawValue) -> Option<Cow<'_, str>> {
    let t = raw.get().trim_matches('"');
    (!t.is_empty() && t != "null").then_some(Cow::Borrowed(t))
}

fn non_empty(c: Option<Cow<'_, str>>) -> Option<Cow<'_, str>> {
    c.filter(|c| !c.is_empty())
}

/// Decodes one Reports API activity into one event per element of `events`.
pub fn decode<'a>(text: &'a str, out: &mut Vec<CloudEvent<'a>>) -> Result<(), DecodeError> {
    let activity: Activity<'a> = serde_json::from_str(text).map_err(DecodeError::from_json)?;
    let id = activity.id.ok_or(DecodeError::MissingField("id"))?;
    let time_text = non_empty(id.time).ok_or(DecodeError::MissingField("time"))?;
    let time = parse_rfc3339_ms(&time_text).ok_or_else(|| DecodeError::InvalidValue {
        field: "time",
        detail: format!("not an RFC 3339 time: {time_text:.40}"),
    })?;
    let scope = non_empty(id.customer_id).ok_or(DecodeError::MissingField("customerId"))?;
    let application =
        non_empty(id.application_name).ok_or(DecodeError::MissingField("applicationName"))?;
    let events = activity.events.ok_or(DecodeError::MissingField("events"))?;
    let actor = activity.actor.unwrap_or_default();
    let principal = non_empty(actor.email)
        .or(non_empty(actor.profile_id))
        .or(non_empty(actor.key))
        .unwrap_or(Cow::Borrowed("unknown"));
    let uid = id.unique_qualifier.and_then(int_text);

    let start = out.len();
    for event in events {
        let Some(name) = non_empty(event.name) else {
            out.truncate(start);
            return Err(DecodeError::MissingField("name"));
        };
        let mut ev = CloudEvent::new(
            time,
            Provider::GoogleWorkspace,
            scope.clone(),
            application.clone(),
            name,
            principal.clone(),
        );
        ev.actor_user_type = actor.caller_type.clone();
        ev.src_endpoint_ip = activity.ip_address.clone();
        ev.metadata_log_name = application.clone();
        ev.metadata_uid = uid.clone();
        for param in event.parameters.unwrap_or_default() {
            let Some(pname) = param.name.clone() else {
                continue;
            };
            let r = &mut ev.api_request;
            match &*pname {
                "SETTING_NAME" => r.setting_name = param.text(),
                "OLD_VALUE" => r.policy_old_state = param.text(),
                "NEW_VALUE" => r.policy_new_state = param.text(),
                "APPLICATION_NAME" | "DOMAIN_NAME" => ev.resources.extend(param.text()),
                _ => {}
            }
        }
        out.push(ev);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::event::test_support::{decode, reason};
    use crate::event::{decode_record, DecodeLimits, Outcome, Provider};

    const CHANGE_SETTING: &str = include_str!(
        "../../tests/fixtures/decoders/google_workspace/change_application_setting.json"
    );
    const TWO_EVENTS: &str =
        include_str!("../../tests/fixtures/decoders/google_workspace/login_two_events.json");
    const LIST: &str =
        include_str!("../../tests/fixtures/decoders/google_workspace/activities_list_page.json");

    #[test]
    fn change_application_setting() {
        let out = decode(CHANGE_SETTING);
        assert_eq!(out.len(), 1);
        let ev = &out[0];
        assert_eq!(ev.cloud_provider, Provider::GoogleWorkspace);
        assert_eq!(ev.cloud_account_uid, "C03az79cb");
        assert_eq!(ev.cloud_region, "global");
        assert_eq!(ev.api_service_name, "admin");
        assert_eq!(ev.api_operation, "CHANGE_APPLICATION_SETTING");
        assert_eq!(ev.actor_user_uid, "mallory@example.com");
        assert_eq!(ev.actor_user_type.as_deref(), Some("USER"));
        assert_eq!(ev.src_endpoint_ip.as_deref(), Some("203.0.113.44"));
        assert_eq!(ev.status, Outcome::Success);
        assert_eq!(ev.metadata_log_name, "admin");
        assert_eq!(ev.metadata_uid.as_deref(), Some("-5163815016442457361"));
        assert_eq!(
            ev.api_request.setting_name.as_deref(),
            Some("Password Management - Enforce strong password")
        );
        assert_eq!(ev.api_request.policy_old_state.as_deref(), Some("true"));
        assert_eq!(ev.api_request.policy_new_state.as_deref(), Some("false"));
        assert_eq!(ev.resources, vec!["Security"]);
        assert_eq!(ev.time, 1_722_439_200_000);
    }

    #[test]
    fn one_event_per_element() {
        let out = decode(TWO_EVENTS);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].api_operation, "login_verification");
        assert_eq!(out[1].api_operation, "login_success");
        for ev in &out {
            assert_eq!(ev.api_service_name, "login");
            assert_eq!(ev.metadata_log_name, "login");
            assert_eq!(ev.actor_user_uid, "alice@example.com");
            assert_eq!(ev.metadata_uid.as_deref(), Some("358068855354"));
            assert!(ev.api_request.is_empty());
        }
    }

    #[test]
    fn profile_id_when_no_email_and_bool_values() {
        let raw = r#"{"kind":"admin#reports#activity","id":{"time":"2024-07-31T15:20:00Z","uniqueQualifier":42,"applicationName":"admin","customerId":"C1"},"actor":{"callerType":"KEY","profileId":"1234567890"},"events":[{"type":"SECURITY_SETTINGS","name":"ENFORCE_STRONG_AUTHENTICATION","parameters":[{"name":"NEW_VALUE","boolValue":false},{"name":"OLD_VALUE","intValue":"1"}]}]}"#;
        let ev = &decode(raw)[0];
        assert_eq!(ev.actor_user_uid, "1234567890");
        assert_eq!(ev.metadata_uid.as_deref(), Some("42"));
        assert_eq!(ev.api_request.policy_new_state.as_deref(), Some("false"));
        assert_eq!(ev.api_request.policy_old_state.as_deref(), Some("1"));
    }

    #[test]
    fn list_page_envelope_is_unwrapped() {
        // An activities.list page is `{"kind":"admin#reports#activities","items":[...]}`: each
        // item is an activity, each of its events one CloudEvent.
        let mut out = Vec::new();
        decode_record(LIST.as_bytes(), &DecodeLimits::default(), &mut out).expect("decodes");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].cloud_provider, Provider::GoogleWorkspace);
    }

    #[test]
    fn missing_fields_and_wrong_types() {
        let no_id = r#"{"kind":"admin#reports#activity","events":[{"name":"X"}]}"#;
        assert_eq!(reason(no_id), "missing_field:id");
        let no_customer = r#"{"kind":"admin#reports#activity","id":{"time":"2024-07-31T15:20:00Z","applicationName":"admin"},"events":[]}"#;
        assert_eq!(reason(no_customer), "missing_field:customerId");
        let no_events = r#"{"kind":"admin#reports#activity","id":{"time":"2024-07-31T15:20:00Z","applicationName":"admin","customerId":"C1"}}"#;
        assert_eq!(reason(no_events), "missing_field:events");
        let unnamed = r#"{"kind":"admin#reports#activity","id":{"time":"2024-07-31T15:20:00Z","applicationName":"admin","customerId":"C1"},"events":[{"name":"A"},{"type":"T"}]}"#;
        assert_eq!(reason(unnamed), "missing_field:name");
        let bad_time = r#"{"kind":"admin#reports#activity","id":{"time":"now","applicationName":"admin","customerId":"C1"},"events":[]}"#;
        assert_eq!(reason(bad_time), "invalid_value:time");
        let wrong = r#"{"kind":"admin#reports#activity","id":{"time":"2024-07-31T15:20:00Z","applicationName":"admin","customerId":"C1"},"events":{"name":"A"}}"#;
        assert_eq!(reason(wrong), "wrong_type");
        let wrong_id = r#"{"kind":"admin#reports#activity","id":"abc","events":[]}"#;
        assert_eq!(reason(wrong_id), "wrong_type");
    }

    #[test]
    fn truncated_and_mangled_records_never_panic() {
        crate::event::test_support::never_panics(&[CHANGE_SETTING, TWO_EVENTS, LIST]);
    }
}
