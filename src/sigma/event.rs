//! The `rsigma_eval::Event` trait over cloudwarden's record: the raw JSON of one event, read
//! through its route's field mapping ([`super::fields`]).
//!
//! The raw text of each event comes from the decoder ([`crate::event::decode_record_raw`]),
//! borrowed from the record, and is read lazily as a tree of [`Node`]s: reading a field splits
//! only the objects and arrays on its path into members (raw text, keys borrowed), once each,
//! and turns only the value found into an [`EventValue`] (strings borrowed from the record).
//! Nothing builds a `serde_json::Value` of the record for a field read: a CloudTrail record
//! that rsigma's candidate index rules out by its `eventName` costs a scan of its top level and
//! of the few members the index probes. Keyword rules (any string anywhere) and `to_json`
//! parse the whole record, once.
//!
//! Reads give what `serde_json::Value` would: of duplicate keys the last, case-insensitively
//! (Microsoft routes) the first matching key in key order, numbers as `Int` when they fit an
//! `i64`, object values with their keys sorted.

use super::fields::{Mapped, Route};
use crate::event::CloudEvent;
use rsigma_eval::{Event, EventValue};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;
use std::borrow::Cow;
use std::cell::OnceCell;
use std::fmt;

/// One event as the Sigma rules of its route see it.
pub struct SigmaEvent<'e> {
    pub route: Route,
    raw: &'e str,
    pub ev: &'e CloudEvent<'e>,
    /// The record, split on demand.
    top: Node<'e>,
    /// The whole record, for keyword rules and `to_json`.
    full: OnceCell<Option<Value>>,
}

/// One JSON value of the record: its raw text, and its members or items once asked for.
struct Node<'e> {
    raw: &'e str,
    kids: OnceCell<Kids<'e>>,
}

enum Kids<'e> {
    Object(Vec<(Cow<'e, str>, Node<'e>)>),
    Array(Vec<Node<'e>>),
    Scalar,
    Invalid,
}

impl<'e> Node<'e> {
    fn new(raw: &'e str) -> Self {
        Node {
            raw,
            kids: OnceCell::new(),
        }
    }

    fn kids(&self) -> &Kids<'e> {
        self.kids.get_or_init(|| split(self.raw))
    }

    fn members(&self) -> &[(Cow<'e, str>, Node<'e>)] {
        match self.kids() {
            Kids::Object(m) => m,
            _ => &[],
        }
    }

    /// A member, as `serde_json::Map` would give it (see the module docs).
    fn get(&self, key: &str, ci: bool) -> Option<&Node<'e>> {
        let members = self.members();
        if let Some((_, n)) = members.iter().rev().find(|(k, _)| k == key) {
            return Some(n);
        }
        if ci {
            return members
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(key))
                .min_by(|a, b| a.0.cmp(&b.0))
                .map(|(_, n)| n);
        }
        None
    }

    /// The value (strings borrowed from the record where they have no escapes).
    fn value(&self) -> EventValue<'e> {
        let mut de = serde_json::Deserializer::from_str(self.raw);
        ValueSeed.deserialize(&mut de).unwrap_or(EventValue::Null)
    }

    fn as_str(&self) -> Option<Cow<'e, str>> {
        match self.value() {
            EventValue::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// An object key, borrowed from the record unless it has escapes.
#[derive(serde::Deserialize)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

/// Splits an object into members or an array into items, leaving each as raw text.
fn split(text: &str) -> Kids<'_> {
    struct Split;
    impl<'de> Visitor<'de> for Split {
        type Value = Kids<'de>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("JSON")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(map.size_hint().unwrap_or(16));
            while let Some((Key(key), raw)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                out.push((key, Node::new(raw.get())));
            }
            Ok(Kids::Object(out))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(4));
            while let Some(raw) = seq.next_element::<&'de RawValue>()? {
                out.push(Node::new(raw.get()));
            }
            Ok(Kids::Array(out))
        }
    }

    match text.trim_start().as_bytes().first() {
        Some(b'{') | Some(b'[') => {
            let mut de = serde_json::Deserializer::from_str(text);
            match de.deserialize_any(Split).and_then(|k| de.end().map(|()| k)) {
                Ok(k) => k,
                Err(_) => Kids::Invalid,
            }
        }
        Some(_) => Kids::Scalar,
        None => Kids::Invalid,
    }
}

/// Deserializes JSON straight into an [`EventValue`], as `EventValue::from(&Value)` would
/// convert it.
struct ValueSeed;

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = EventValue<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed {
    type Value = EventValue<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, b: bool) -> Result<Self::Value, E> {
        Ok(EventValue::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Self::Value, E> {
        Ok(EventValue::Int(n))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Self::Value, E> {
        Ok(i64::try_from(n).map_or(EventValue::Float(n as f64), EventValue::Int))
    }
    fn visit_f64<E>(self, f: f64) -> Result<Self::Value, E> {
        Ok(EventValue::Float(f))
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(EventValue::Str(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(EventValue::Str(Cow::Owned(s.to_owned())))
    }
    fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
        Ok(EventValue::Str(Cow::Owned(s)))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(EventValue::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(ValueSeed)? {
            out.push(v);
        }
        Ok(EventValue::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out: Vec<(Cow<'de, str>, EventValue<'de>)> = Vec::new();
        while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
            let v = map.next_value_seed(ValueSeed)?;
            out.push((k, v));
        }
        // As a `serde_json::Map`: keys sorted, the last of duplicates.
        out.reverse();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out.dedup_by(|a, b| a.0 == b.0);
        Ok(EventValue::Map(out))
    }
}

impl<'e> SigmaEvent<'e> {
    /// `raw` is the event's JSON text (an object).
    pub fn new(route: Route, raw: &'e str, ev: &'e CloudEvent<'e>) -> Self {
        SigmaEvent {
            route,
            raw,
            ev,
            top: Node::new(raw),
            full: OnceCell::new(),
        }
    }

    /// The raw text could not be read as a JSON object (known once a field was read).
    pub fn unreadable(&self) -> bool {
        matches!(self.top.kids.get(), Some(k) if !matches!(k, Kids::Object(_)))
            || matches!(self.full.get(), Some(None))
    }

    /// The value of a Sigma field (after mapping) as text: the first scalar found.
    pub fn text(&self, field: &str) -> Option<Cow<'_, str>> {
        first_text(self.get_field(field)?)
    }

    fn full(&self) -> Option<&Value> {
        self.full
            .get_or_init(|| serde_json::from_str(self.raw).ok())
            .as_ref()
    }

    fn lookup(&self, path: &str) -> Option<EventValue<'_>> {
        let ci = self.route.is_microsoft();
        let mut out = Vec::new();
        collect_node(&self.top, path, ci, &mut out);
        if out.is_empty() && ci && !path.starts_with("properties.") {
            if let Some(props) = self.top.get("properties", true) {
                collect_node(props, path, ci, &mut out);
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
        let Kids::Array(events) = self.top.get("events", false)?.kids() else {
            return None;
        };
        for e in events {
            let event_name = e.get("name", false).and_then(Node::as_str);
            if event_name.as_deref() != Some(self.ev.api_operation.as_ref()) {
                continue;
            }
            let Kids::Array(params) = e.get("parameters", false)?.kids() else {
                return None;
            };
            for p in params {
                let pname = p.get("name", false).and_then(Node::as_str);
                if pname.is_some_and(|n| n.eq_ignore_ascii_case(name)) {
                    for k in ["value", "multiValue", "intValue", "boolValue"] {
                        if let Some(v) = p.get(k, false) {
                            return Some(v.value());
                        }
                    }
                }
            }
        }
        None
    }
}

/// [`collect`] over the lazily split record.
fn collect_node<'s, 'e>(n: &'s Node<'e>, path: &str, ci: bool, out: &mut Vec<EventValue<'s>>) {
    if path.is_empty() {
        // Azure REST shape: `{"value": ..., "localizedValue": ...}`.
        match n.kids() {
            Kids::Object(_) if ci => match n.get("value", false) {
                Some(v) => out.push(v.value()),
                None => out.push(n.value()),
            },
            _ => out.push(n.value()),
        }
        return;
    }
    match n.kids() {
        Kids::Object(_) => {
            if let Some(x) = n.get(path, ci) {
                return collect_node(x, "", ci, out);
            }
            let (head, rest) = path.split_once('.').unwrap_or((path, ""));
            if let Some(x) = n.get(head, ci) {
                collect_node(x, rest, ci, out);
            }
        }
        Kids::Array(items) => {
            for x in items {
                collect_node(x, path, ci, out);
            }
        }
        Kids::Scalar if ci => {
            // A JSON-encoded string (Log Analytics stores `TargetResources` so).
            if let Some(s) = n.as_str() {
                if s.starts_with('[') || s.starts_with('{') {
                    if let Ok(inner) = serde_json::from_str::<Value>(&s) {
                        out.extend(collect_owned(&inner, path, ci));
                    }
                }
            }
        }
        Kids::Scalar | Kids::Invalid => {}
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
        if let Some(v) = self.full() {
            visit_strings(v, &mut |s| found = found || pred(s));
        }
        found
    }

    fn all_string_values(&self) -> Vec<Cow<'_, str>> {
        let mut out = Vec::new();
        if let Some(v) = self.full() {
            visit_strings(v, &mut |s| out.push(Cow::Owned(s.to_owned())));
        }
        out
    }

    fn visit_string_values(&self, visit: &mut dyn FnMut(&str)) {
        if let Some(v) = self.full() {
            visit_strings(v, visit);
        }
    }

    fn to_json(&self) -> Value {
        self.full().cloned().unwrap_or(Value::Null)
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
        })
        .to_string();
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
        let raw = json!({"eventName": "StopLogging"}).to_string();
        let s = SigmaEvent::new(Route::AwsCloudTrail, &raw, &e);
        assert_eq!(s.text("eventName").as_deref(), Some("StopLogging"));
        assert_eq!(s.text("EventName"), None);
    }

    #[test]
    fn arrays_fan_out() {
        let raw = json!({"requestParameters": {"items": [{"k": "a"}, {"k": "b"}]}}).to_string();
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

    #[test]
    fn reads_only_the_members_on_the_path_as_a_json_map_would() {
        let e = ev();
        // Duplicate keys: the last wins; escaped keys are unescaped; a member nobody asks for
        // is never parsed.
        let raw = r#"{"eventName":"A","event\u004eame2":"B","eventName":"C","big":{"x":[1,2,3]}}"#;
        let s = SigmaEvent::new(Route::AwsCloudTrail, raw, &e);
        assert_eq!(s.text("eventName").as_deref(), Some("C"));
        assert_eq!(s.text("eventName2").as_deref(), Some("B"));
        let big = s.top.get("big", false).unwrap();
        assert!(big.kids.get().is_none(), "an unread member was split");
        assert_eq!(s.text("big.x").as_deref(), Some("1"));
        assert!(big.kids.get().is_some());
        assert!(
            s.full.get().is_none(),
            "a field read parsed the whole record"
        );
        assert!(!s.unreadable());
        // Keyword rules see every string; to_json is the whole record.
        assert!(s.any_string_value(&|v| v == "B"));
        assert_eq!(s.to_json()["big"]["x"][2], 3);
    }

    #[test]
    fn a_text_that_is_not_an_object_is_unreadable_and_has_no_fields() {
        let e = ev();
        for raw in ["[1,2]", "{\"a\":", "\"x\"", "{\"a\":1} trailing"] {
            let s = SigmaEvent::new(Route::AwsCloudTrail, raw, &e);
            assert_eq!(s.get_field("a"), None, "{raw}");
            assert!(s.unreadable(), "{raw}");
        }
    }

    /// Every dotted path of `v` (arrays fan out), with a case-changed twin of each.
    fn paths(v: &Value, prefix: &str, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    out.push(p.to_uppercase());
                    out.push(p.clone());
                    paths(x, &p, out);
                }
            }
            Value::Array(items) => items.iter().for_each(|x| paths(x, prefix, out)),
            _ => {}
        }
    }

    /// The field read on a whole `serde_json::Value` of the record (how it was done before
    /// the lazy tree), to compare with.
    fn reference<'v>(raw: &'v Value, path: &str, ci: bool) -> Option<EventValue<'v>> {
        let mut out = Vec::new();
        collect(raw, path, ci, &mut out);
        if out.is_empty() && ci && !path.starts_with("properties.") {
            if let Some(props) = get_key(raw, "properties", true) {
                collect(props, path, ci, &mut out);
            }
        }
        match out.len() {
            0 => None,
            1 => out.pop(),
            _ => Some(EventValue::Array(out)),
        }
    }

    #[test]
    fn the_lazy_tree_reads_every_field_of_real_records_as_a_whole_parse_does() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut records = Vec::new();
        let ct = std::fs::read_to_string(dir.join("benches/data/cloudtrail-invictus-1000.ndjson"))
            .unwrap();
        records.extend(ct.lines().take(200).map(str::to_owned));
        for f in [
            "tests/fixtures/decoders/entra_id/AADAuditEvents.ndjson",
            "tests/fixtures/decoders/o365/OfficeActivityEvents.ndjson",
        ] {
            let t = std::fs::read_to_string(dir.join(f)).unwrap();
            records.extend(
                t.lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(str::to_owned),
            );
        }
        for f in [
            "tests/fixtures/decoders/azure/diagnostic_settings_delete_rest.json",
            "tests/fixtures/decoders/azure/azure_activity_log_analytics.json",
            "tests/fixtures/decoders/entra_id/update_ca_policy_graph.json",
            "tests/fixtures/decoders/google_workspace/change_application_setting.json",
            "tests/fixtures/decoders/gcp/delete_sink.json",
        ] {
            records.push(std::fs::read_to_string(dir.join(f)).unwrap());
        }
        let e = ev();
        let mut compared = 0;
        for raw in &records {
            let whole: Value = serde_json::from_str(raw).unwrap();
            if !whole.is_object() {
                continue;
            }
            let mut ps = Vec::new();
            paths(&whole, "", &mut ps);
            ps.extend(["", "no.such.field", "properties.nothing"].map(String::from));
            for route in [Route::AwsCloudTrail, Route::EntraAudit] {
                let s = SigmaEvent::new(route, raw, &e);
                for p in &ps {
                    let want = reference(&whole, p, route.is_microsoft());
                    assert_eq!(s.lookup(p), want, "{route:?} {p} in {raw:.120}");
                    compared += 1;
                }
                assert!(!s.unreadable());
            }
        }
        assert!(compared > 10_000, "{compared}");
    }
}
