//! The `rsigma_eval::Event` trait over cloudwarden's record: the raw JSON of one event, read
//! through its route's field mapping ([`super::fields`]).
//!
//! The raw text of each event comes from the decoder ([`crate::event::decode_record_raw`]),
//! borrowed from the record; it is parsed into a `serde_json::Value` once per event, and only
//! when the event's route has rules (an event no rule can see costs nothing).

use super::fields::{Mapped, Route};
use crate::event::CloudEvent;
use rsigma_eval::{Event, EventValue};
use serde_json::Value;
use std::borrow::Cow;

/// One event as the Sigma rules of its route see it.
pub struct SigmaEvent<'e> {
    pub route: Route,
    pub raw: &'e Value,
    pub ev: &'e CloudEvent<'e>,
}

impl<'e> SigmaEvent<'e> {
    pub fn new(route: Route, raw: &'e Value, ev: &'e CloudEvent<'e>) -> Self {
        SigmaEvent { route, raw, ev }
    }

    /// The value of a Sigma field (after mapping) as text: the first scalar found.
    pub fn text(&self, field: &str) -> Option<Cow<'_, str>> {
        first_text(self.get_field(field)?)
    }

    fn lookup(&self, path: &str) -> Option<EventValue<'_>> {
        let ci = self.route.is_microsoft();
        let mut out = Vec::new();
        collect(self.raw, path, ci, &mut out);
        if out.is_empty() && ci && !path.starts_with("properties.") {
            if let Some(props) = get_key(self.raw, "properties", true) {
                collect(props, path, ci, &mut out);
            }
        }
        match out.len() {
            0 => None,
            1 => out.pop(),
            _ => Some(EventValue::Array(out)),
        }
    }

    /// A Workspace event parameter of this event (`events[]` item with the event's name).
    fn parameter(&self, name: &str) -> Option<EventValue<'_>> {
        let events = get_key(self.raw, "events", false)?.as_array()?;
        for e in events {
            if e.get("name").and_then(Value::as_str) != Some(self.ev.api_operation.as_ref()) {
                continue;
            }
            for p in e.get("parameters").and_then(Value::as_array)? {
                let pname = p.get("name").and_then(Value::as_str).unwrap_or("");
                if pname.eq_ignore_ascii_case(name) {
                    for k in ["value", "multiValue", "intValue", "boolValue"] {
                        if let Some(v) = p.get(k) {
                            return Some(EventValue::from(v));
                        }
                    }
                }
            }
        }
        None
    }
}

fn first_text<'a>(v: EventValue<'a>) -> Option<Cow<'a, str>> {
    match v {
        EventValue::Str(s) => Some(s),
        EventValue::Int(n) => Some(Cow::Owned(n.to_string())),
        EventValue::Float(f) => Some(Cow::Owned(f.to_string())),
        EventValue::Bool(b) => Some(Cow::Borrowed(if b { "true" } else { "false" })),
        EventValue::Array(items) => items.into_iter().find_map(first_text),
        EventValue::Null | EventValue::Map(_) => None,
    }
}

fn get_key<'v>(v: &'v Value, key: &str, ci: bool) -> Option<&'v Value> {
    let m = v.as_object()?;
    if let Some(x) = m.get(key) {
        return Some(x);
    }
    if ci {
        return m
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, x)| x);
    }
    None
}

/// Every value at `path` under `v`: arrays on the way fan out; a JSON-encoded string on the way
/// (Log Analytics stores `TargetResources` so) is decoded, for Microsoft routes.
fn collect<'v>(v: &'v Value, path: &str, ci: bool, out: &mut Vec<EventValue<'v>>) {
    if path.is_empty() {
        match v {
            // Azure REST shape: `{"value": ..., "localizedValue": ...}`.
            Value::Object(m) if ci && m.contains_key("value") => {
                out.push(EventValue::from(&m["value"]))
            }
            _ => out.push(EventValue::from(v)),
        }
        return;
    }
    match v {
        Value::Object(_) => {
            if let Some(x) = get_key(v, path, ci) {
                return collect(x, "", ci, out);
            }
            let (head, rest) = path.split_once('.').unwrap_or((path, ""));
            if let Some(x) = get_key(v, head, ci) {
                collect(x, rest, ci, out);
            }
        }
        Value::Array(items) => {
            for x in items {
                collect(x, path, ci, out);
            }
        }
        Value::String(s) if ci && (s.starts_with('[') || s.starts_with('{')) => {
            if let Ok(inner) = serde_json::from_str::<Value>(s) {
                out.extend(collect_owned(&inner, path, ci));
            }
        }
        _ => {}
    }
}

fn collect_owned(inner: &Value, path: &str, ci: bool) -> Vec<EventValue<'static>> {
    let mut tmp = Vec::new();
    collect(inner, path, ci, &mut tmp);
    tmp.into_iter().map(owned).collect()
}

fn owned(v: EventValue<'_>) -> EventValue<'static> {
    match v {
        EventValue::Str(s) => EventValue::Str(Cow::Owned(s.into_owned())),
        EventValue::Int(n) => EventValue::Int(n),
        EventValue::Float(f) => EventValue::Float(f),
        EventValue::Bool(b) => EventValue::Bool(b),
        EventValue::Null => EventValue::Null,
        EventValue::Array(a) => EventValue::Array(a.into_iter().map(owned).collect()),
        EventValue::Map(m) => EventValue::Map(
            m.into_iter()
                .map(|(k, v)| (Cow::Owned(k.into_owned()), owned(v)))
                .collect(),
        ),
    }
}

fn visit_strings(v: &Value, f: &mut dyn FnMut(&str)) {
    match v {
        Value::String(s) => f(s),
        Value::Array(a) => a.iter().for_each(|x| visit_strings(x, f)),
        Value::Object(m) => m.values().for_each(|x| visit_strings(x, f)),
        _ => {}
    }
}

impl Event for SigmaEvent<'_> {
    fn get_field(&self, path: &str) -> Option<EventValue<'_>> {
        match self.route.resolve(path) {
            Mapped::Path(p) => self.lookup(&p),
            Mapped::EventName => Some(EventValue::Str(Cow::Borrowed(
                self.ev.api_operation.as_ref(),
            ))),
            Mapped::Parameter(name) => self.parameter(name),
        }
    }

    fn any_string_value(&self, pred: &dyn Fn(&str) -> bool) -> bool {
        let mut found = false;
        visit_strings(self.raw, &mut |s| found = found || pred(s));
        found
    }

    fn all_string_values(&self) -> Vec<Cow<'_, str>> {
        let mut out = Vec::new();
        visit_strings(self.raw, &mut |s| out.push(Cow::Owned(s.to_owned())));
        out
    }

    fn visit_string_values(&self, visit: &mut dyn FnMut(&str)) {
        visit_strings(self.raw, visit);
    }

    fn to_json(&self) -> Value {
        self.raw.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Provider;
    use serde_json::json;

    fn ev() -> CloudEvent<'static> {
        CloudEvent::new(
            0,
            Provider::EntraId,
            "t".into(),
            "s".into(),
            "Op".into(),
            "p".into(),
        )
    }

    #[test]
    fn microsoft_names_compare_case_insensitively_with_a_properties_fallback() {
        let raw = json!({
            "operationName": {"value": "MICROSOFT.X/DELETE", "localizedValue": "Delete"},
            "properties": {"loggedByService": "Core Directory"},
            "TargetResources": "[{\"modifiedProperties\":[{\"newValue\":\"abc\"}]}]"
        });
        let e = ev();
        let s = SigmaEvent::new(Route::EntraAudit, &raw, &e);
        assert_eq!(
            s.text("OperationName").as_deref(),
            Some("MICROSOFT.X/DELETE")
        );
        assert_eq!(s.text("LoggedByService").as_deref(), Some("Core Directory"));
        assert_eq!(
            s.text("TargetResources.modifiedProperties.newValue")
                .as_deref(),
            Some("abc")
        );
        assert_eq!(s.text("NoSuchField"), None);
        // CloudTrail names are exact.
        let raw = json!({"eventName": "StopLogging"});
        let s = SigmaEvent::new(Route::AwsCloudTrail, &raw, &e);
        assert_eq!(s.text("eventName").as_deref(), Some("StopLogging"));
        assert_eq!(s.text("EventName"), None);
    }

    #[test]
    fn arrays_fan_out() {
        let raw = json!({"requestParameters": {"items": [{"k": "a"}, {"k": "b"}]}});
        let e = ev();
        let s = SigmaEvent::new(Route::AwsCloudTrail, &raw, &e);
        assert_eq!(
            s.get_field("requestParameters.items.k"),
            Some(EventValue::Array(vec![
                EventValue::Str("a".into()),
                EventValue::Str("b".into())
            ]))
        );
    }
}
