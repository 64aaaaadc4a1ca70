//! Shape recognition: which provider format is this record?
//!
//! The top level of the record is parsed once into [`RawTop`], which knows the CloudTrail fields
//! (the hot path: a CloudTrail record is decoded from this one parse) and the keys that tell the
//! other formats apart. Nested sections stay as borrowed `RawValue`s until a decoder needs them.
//! Envelopes (`{"Records": [...]}`, `{"records": [...]}`, EventBridge `detail`, a top-level JSON
//! array) are unwrapped here, so each provider decoder sees one record.
//!
//! Order of the tests, first match wins: `schema` (CloudEvent v1) → OCSF `class_uid` 6003 (API
//! Activity) → `Records` → `records` →
//! EventBridge → CloudTrail (`eventSource` + `eventName`) → GCP (`protoPayload`) → Workspace
//! (`kind` / `id` object + `events`) → O365 (`Operation` + `Workload`/`RecordType`/`CreationTime`)
//! → Entra ID (category `AuditLogs`, `activityDisplayName`, `loggedByService`, or an
//! `aadiam` resource) → Azure (`operationName` / `OperationNameValue`).

use super::{aws, azure, cloudevent, entra, gcp, o365, ocsf, workspace};
use super::{CloudEvent, DecodeError, DecodeLimits};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// The top level of any record. CloudTrail fields are typed; the rest only identify the shape.
#[derive(Deserialize, Default)]
pub struct RawTop<'a> {
    // ---- CloudEvent v1 ----
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    pub schema: Option<Cow<'a, str>>,

    // ---- OCSF ----
    /// Any JSON value: only the number 6003 (API Activity) is a shape we read.
    #[serde(borrow, default)]
    pub class_uid: Option<&'a RawValue>,

    // ---- envelopes ----
    #[serde(rename = "Records", borrow, default)]
    pub records_upper: Option<Vec<&'a RawValue>>,
    #[serde(rename = "records", borrow, default)]
    pub records_lower: Option<Vec<&'a RawValue>>,
    /// Admin SDK Reports `activities.list` page (`kind: admin#reports#activities`).
    #[serde(borrow, default)]
    pub items: Option<Vec<&'a RawValue>>,
    #[serde(
        rename = "detail-type",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    pub detail_type: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub detail: Option<&'a RawValue>,
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    pub account: Option<Cow<'a, str>>,

    // ---- AWS CloudTrail record ----
    #[serde(
        rename = "eventTime",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    pub event_time: Option<Cow<'a, str>>,
    #[serde(
        rename = "eventSource",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    pub event_source: Option<Cow<'a, str>>,
    /// A string in CloudTrail; an object in the Azure REST shape (`{value, localizedValue}`),
    /// which is read as absent here.
    #[serde(
        rename = "eventName",
        borrow,
        default,
        deserialize_with = "string_or_skip"
    )]
    pub event_name: Option<Cow<'a, str>>,
    #[serde(
        rename = "awsRegion",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    pub aws_region: Option<Cow<'a, str>>,
    #[serde(
        rename = "sourceIPAddress",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    pub source_ip_address: Option<Cow<'a, str>>,
    #[serde(
        rename = "userAgent",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    pub user_agent: Option<Cow<'a, str>>,
    #[serde(
        rename = "errorCode",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    pub error_code: Option<Cow<'a, str>>,
    #[serde(
        rename = "eventID",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    pub event_id: Option<Cow<'a, str>>,
    #[serde(
        rename = "eventType",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    pub event_type: Option<Cow<'a, str>>,
    #[serde(
        rename = "recipientAccountId",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    pub recipient_account_id: Option<Cow<'a, str>>,
    #[serde(rename = "managementEvent", default)]
    pub management_event: Option<bool>,
    #[serde(
        rename = "eventCategory",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    pub event_category: Option<Cow<'a, str>>,
    #[serde(rename = "userIdentity", borrow, default)]
    pub user_identity: Option<aws::UserIdentity<'a>>,
    #[serde(rename = "requestParameters", borrow, default)]
    pub request_parameters: Option<&'a RawValue>,
    #[serde(rename = "serviceEventDetails", borrow, default)]
    pub service_event_details: Option<&'a RawValue>,
    /// OTRF's Logstash-forwarded CloudTrail has `@timestamp` instead of `eventTime`.
    #[serde(
        rename = "@timestamp",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    pub at_timestamp: Option<Cow<'a, str>>,

    // ---- GCP ----
    #[serde(rename = "protoPayload", borrow, default)]
    pub proto_payload: Option<&'a RawValue>,

    // ---- Google Workspace ----
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    pub kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub events: Option<&'a RawValue>,

    // ---- Office 365 ----
    #[serde(rename = "Operation", borrow, default)]
    pub operation_o365: Option<&'a RawValue>,
    #[serde(rename = "Workload", borrow, default)]
    pub workload: Option<&'a RawValue>,
    #[serde(rename = "OfficeWorkload", borrow, default)]
    pub office_workload: Option<&'a RawValue>,
    #[serde(rename = "RecordType", borrow, default)]
    pub record_type: Option<&'a RawValue>,
    #[serde(rename = "CreationTime", borrow, default)]
    pub creation_time: Option<&'a RawValue>,

    // ---- Azure Activity / Entra ID ----
    #[serde(rename = "operationName", borrow, default)]
    pub operation_name: Option<&'a RawValue>,
    #[serde(rename = "OperationNameValue", borrow, default)]
    pub operation_name_value: Option<&'a RawValue>,
    #[serde(rename = "OperationName", borrow, default)]
    pub operation_name_upper: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub category: Option<&'a RawValue>,
    #[serde(rename = "Category", borrow, default)]
    pub category_upper: Option<&'a RawValue>,
    #[serde(rename = "resourceId", borrow, default)]
    pub resource_id: Option<&'a RawValue>,
    #[serde(rename = "ResourceId", borrow, default)]
    pub resource_id_upper: Option<&'a RawValue>,
    #[serde(rename = "activityDisplayName", borrow, default)]
    pub activity_display_name: Option<&'a RawValue>,
    #[serde(rename = "loggedByService", borrow, default)]
    pub logged_by_service: Option<&'a RawValue>,
    #[serde(rename = "LoggedByService", borrow, default)]
    pub logged_by_service_upper: Option<&'a RawValue>,
}

/// The shape a record was recognised as (for `normalize` and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    CloudEvent,
    OcsfApiActivity,
    CloudTrail,
    Gcp,
    Azure,
    Entra,
    Workspace,
    O365,
}

/// Decodes one raw record (which may be an envelope of many) into `out`.
///
/// Never panics on any input; on error nothing of the record is kept in `out` (an envelope is all
/// or nothing, so a record is counted once, as an error or as events).
pub fn decode_record<'a>(
    raw: &'a [u8],
    limits: &DecodeLimits,
    out: &mut Vec<CloudEvent<'a>>,
) -> Result<(), DecodeError> {
    decode_record_raw(raw, limits, out, None)
}

/// [`decode_record`], also giving each event's raw JSON text (the provider record it was decoded
/// from, inside any envelope) in `raws`, index for index with `out`: what Sigma rules match on.
/// A Workspace activity with several `events[]` gives each of them the activity's text.
pub fn decode_record_raw<'a>(
    raw: &'a [u8],
    limits: &DecodeLimits,
    out: &mut Vec<CloudEvent<'a>>,
    mut raws: Option<&mut Vec<&'a str>>,
) -> Result<(), DecodeError> {
    if raw.len() > limits.max_record_bytes {
        return Err(DecodeError::TooLarge {
            size: raw.len(),
            limit: limits.max_record_bytes,
        });
    }
    let text = std::str::from_utf8(raw).map_err(|_| DecodeError::InvalidUtf8)?;
    let start = out.len();
    let raw_start = raws.as_ref().map_or(0, |r| r.len());
    let result = decode_str(text, out, &mut raws);
    if result.is_err() {
        out.truncate(start);
        if let Some(r) = raws {
            r.truncate(raw_start);
        }
    }
    result
}

type Raws<'r, 'a> = Option<&'r mut Vec<&'a str>>;

fn decode_str<'a>(
    text: &'a str,
    out: &mut Vec<CloudEvent<'a>>,
    raws: &mut Raws<'_, 'a>,
) -> Result<(), DecodeError> {
    let trimmed = text.trim_start();
    match trimmed.as_bytes().first() {
        None => return Err(DecodeError::Empty),
        Some(b'[') => {
            let items: Vec<&'a RawValue> =
                serde_json::from_str(text).map_err(DecodeError::from_json)?;
            for item in items {
                decode_one(item.get(), 1, out, raws)?;
            }
            return Ok(());
        }
        Some(b'{') => {}
        Some(_) => {
            // Let serde produce the precise syntax error.
            return Err(match serde_json::from_str::<&RawValue>(text) {
                Err(e) => DecodeError::from_json(e),
                Ok(_) => DecodeError::UnknownShape,
            });
        }
    }
    decode_one(text, 0, out, raws)
}

fn decode_one<'a>(
    text: &'a str,
    depth: u8,
    out: &mut Vec<CloudEvent<'a>>,
    raws: &mut Raws<'_, 'a>,
) -> Result<(), DecodeError> {
    let result = decode_shape(text, depth, out, raws);
    if let Some(r) = raws.as_deref_mut() {
        // Envelopes pushed their items' texts already; a single record adds its own.
        r.resize(out.len(), text);
    }
    result
}

fn decode_shape<'a>(
    text: &'a str,
    depth: u8,
    out: &mut Vec<CloudEvent<'a>>,
    raws: &mut Raws<'_, 'a>,
) -> Result<(), DecodeError> {
    if text.starts_with("{\"schema\":\"cloud_event.v1\"") {
        return cloudevent::decode(text, out);
    }
    let top: RawTop<'a> = serde_json::from_str(text).map_err(DecodeError::from_json)?;
    let shape = match classify(&top) {
        Some(s) => s,
        None => {
            // Envelopes: unwrap once (an envelope inside an envelope is not a format we know).
            if depth < 2 {
                if let Some(items) = top
                    .records_upper
                    .as_ref()
                    .or(top.records_lower.as_ref())
                    .or(top.items.as_ref())
                {
                    for item in items {
                        decode_one(item.get(), depth + 1, out, raws)?;
                    }
                    return Ok(());
                }
                if let (Some(_), Some(detail)) = (&top.detail_type, top.detail) {
                    let r = aws::decode_eventbridge(detail.get(), top.account.clone(), out);
                    if let Some(rs) = raws.as_deref_mut() {
                        rs.resize(out.len(), detail.get());
                    }
                    return r;
                }
            }
            return Err(DecodeError::UnknownShape);
        }
    };
    match shape {
        Shape::CloudEvent => cloudevent::decode(text, out),
        Shape::OcsfApiActivity => ocsf::decode(text, out),
        Shape::CloudTrail => aws::decode(top, None, out),
        Shape::Gcp => gcp::decode(text, out),
        Shape::Workspace => workspace::decode(text, out),
        Shape::O365 => o365::decode(text, out),
        Shape::Entra => entra::decode(text, out),
        Shape::Azure => azure::decode(text, out),
    }
}

/// Which single-record format `top` is, or `None` for envelopes and unknown shapes.
pub fn classify(top: &RawTop<'_>) -> Option<Shape> {
    if top.schema.is_some() {
        return Some(Shape::CloudEvent);
    }
    if top.class_uid.is_some_and(|c| c.get() == "6003") {
        return Some(Shape::OcsfApiActivity);
    }
    if top.records_upper.is_some()
        || top.records_lower.is_some()
        || top.detail_type.is_some()
        || top.kind.as_deref() == Some("admin#reports#activities")
    {
        return None;
    }
    if top.event_source.is_some() && top.event_name.is_some() {
        return Some(Shape::CloudTrail);
    }
    if top.proto_payload.is_some() {
        return Some(Shape::Gcp);
    }
    let kind_is_activity = top
        .kind
        .as_deref()
        .is_some_and(|k| k.starts_with("admin#reports#activit"));
    let id_is_object = top.id.is_some_and(|id| id.get().starts_with('{'));
    if kind_is_activity || (id_is_object && top.events.is_some()) {
        return Some(Shape::Workspace);
    }
    if top.operation_o365.is_some()
        && (top.workload.is_some()
            || top.office_workload.is_some()
            || top.record_type.is_some()
            || top.creation_time.is_some())
    {
        return Some(Shape::O365);
    }
    if is_entra(top) {
        return Some(Shape::Entra);
    }
    if top.operation_name.is_some()
        || top.operation_name_value.is_some()
        || top.operation_name_upper.is_some()
    {
        return Some(Shape::Azure);
    }
    None
}

fn is_entra(top: &RawTop<'_>) -> bool {
    let raw_eq = |v: Option<&RawValue>, want: &str| {
        v.is_some_and(|v| v.get().trim_matches('"').eq_ignore_ascii_case(want))
    };
    let raw_contains = |v: Option<&RawValue>, needle: &str| {
        v.is_some_and(|v| v.get().to_ascii_lowercase().contains(needle))
    };
    top.activity_display_name.is_some()
        || top.logged_by_service.is_some()
        || top.logged_by_service_upper.is_some()
        || raw_eq(top.category, "AuditLogs")
        || raw_contains(top.resource_id, "microsoft.aadiam")
        || raw_contains(top.resource_id_upper, "microsoft.aadiam")
}

/// Deserializes a string (borrowed when possible) and skips any other JSON value as `None`.
fn string_or_skip<'de: 'a, 'a, D>(d: D) -> Result<Option<Cow<'a, str>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Option<Cow<'de, str>>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string or any JSON value")
        }

        fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Borrowed(v)))
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_owned())))
        }

        fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v)))
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            while map
                .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                .is_some()
            {}
            Ok(None)
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok(None)
        }
    }
    d.deserialize_any(V)
}
