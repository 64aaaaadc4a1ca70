//! AWS CloudTrail: a record, an S3 log file (`{"Records": [...]}`, unwrapped in `shape`), and the
//! EventBridge envelope (`detail-type: AWS API Call via CloudTrail`, the record in `detail`).
//!
//! This is the hot path. The top level was parsed once by `shape::RawTop`; `requestParameters`
//! stays a borrowed `RawValue` and is parsed into [`AwsRequest`] only for the event names whose
//! request fields a detector or catalog predicate reads ([`wants_request`]).
//!
//! The principal is `userIdentity.arn`, or `invokedBy` for AWS services, or `principalId`, or the
//! account. Assumed-role ARNs keep their session name: a session is the unit that acts.

use super::shape::RawTop;
use super::time::parse_rfc3339_ms;
use super::{CloudEvent, DecodeError, Outcome, Provider, RequestFields};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// `userIdentity`, the fields we keep.
#[derive(Deserialize, Default)]
pub struct UserIdentity<'a> {
    #[serde(
        rename = "type",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    pub kind: Option<Cow<'a, str>>,
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    pub arn: Option<Cow<'a, str>>,
    #[serde(
        rename = "principalId",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    pub principal_id: Option<Cow<'a, str>>,
    #[serde(
        rename = "accountId",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    pub account_id: Option<Cow<'a, str>>,
    #[serde(
        rename = "invokedBy",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    pub invoked_by: Option<Cow<'a, str>>,
}

/// `requestParameters`, the fields detectors and predicates read.
#[derive(Deserialize, Default)]
struct AwsRequest<'a> {
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    name: Option<Cow<'a, str>>,
    #[serde(
        rename = "trailName",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    trail_name: Option<Cow<'a, str>>,
    #[serde(
        rename = "secretId",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    secret_id: Option<Cow<'a, str>>,
    #[serde(
        rename = "secretIdList",
        borrow,
        deserialize_with = "crate::event::opt_vec_cow",
        default
    )]
    secret_id_list: Option<Vec<Cow<'a, str>>>,
    #[serde(borrow, default)]
    filters: Option<&'a RawValue>,
    #[serde(borrow, deserialize_with = "crate::event::opt_vec_cow", default)]
    names: Option<Vec<Cow<'a, str>>>,
    #[serde(rename = "withDecryption", default)]
    with_decryption: Option<bool>,
    #[serde(rename = "enableLogFileValidation", default)]
    enable_log_file_validation: Option<bool>,
    #[serde(rename = "isMultiRegionTrail", default)]
    is_multi_region_trail: Option<bool>,
    #[serde(rename = "eventSelectors", default)]
    event_selectors: Option<Vec<EventSelector>>,
    #[serde(rename = "advancedEventSelectors", borrow, default)]
    advanced_event_selectors: Option<&'a RawValue>,
    #[serde(
        rename = "serviceCode",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    service_code: Option<Cow<'a, str>>,
    #[serde(
        rename = "quotaCode",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    quota_code: Option<Cow<'a, str>>,
    #[serde(rename = "desiredValue", default)]
    desired_value: Option<f64>,
    #[serde(default)]
    enable: Option<bool>,
    #[serde(default)]
    activate: Option<bool>,
    #[serde(
        rename = "regionName",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    region_name: Option<Cow<'a, str>>,
    #[serde(
        rename = "bucketName",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    bucket_name: Option<Cow<'a, str>>,
    #[serde(rename = "BucketLoggingStatus", borrow, default)]
    bucket_logging_status: Option<&'a RawValue>,
    #[serde(rename = "LifecycleConfiguration", borrow, default)]
    lifecycle_configuration: Option<&'a RawValue>,
    #[serde(borrow, default)]
    logging: Option<&'a RawValue>,
    #[serde(
        rename = "logGroupName",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    log_group_name: Option<Cow<'a, str>>,
    #[serde(
        rename = "detectorId",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    detector_id: Option<Cow<'a, str>>,
    #[serde(
        rename = "functionName",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    function_name: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct EventSelector {
    #[serde(rename = "includeManagementEvents", default)]
    include_management_events: Option<bool>,
}

/// Event names whose `requestParameters` we parse. Everything else skips that work.
fn wants_request(event_name: &str) -> bool {
    matches!(
        event_name,
        "GetSecretValue"
            | "BatchGetSecretValue"
            | "GetParameter"
            | "GetParameters"
            | "StopLogging"
            | "StartLogging"
            | "DeleteTrail"
            | "UpdateTrail"
            | "PutEventSelectors"
            | "PutBucketLogging"
            | "PutBucketLifecycle"
            | "PutBucketLifecycleConfiguration"
            | "UpdateClusterConfig"
            | "RequestServiceQuotaIncrease"
            | "UpdateDetector"
            | "DeleteDetector"
            | "CreateIPSet"
            | "UpdateIPSet"
            | "CreateThreatIntelSet"
            | "UpdateThreatIntelSet"
            | "EnableRegion"
            | "DisableRegion"
            | "DeleteLogGroup"
            | "DeleteLogStream"
    ) || event_name.starts_with("CreateFunction")
        || event_name.starts_with("UpdateFunctionCode")
        || event_name.starts_with("AddPermission")
}

/// Decodes one CloudTrail record whose top level is already parsed. `account_fallback` is the
/// EventBridge envelope's `account`, used when the record lacks `recipientAccountId`.
pub fn decode<'a>(
    top: RawTop<'a>,
    account_fallback: Option<Cow<'a, str>>,
    out: &mut Vec<CloudEvent<'a>>,
) -> Result<(), DecodeError> {
    let time_text = top
        .event_time
        .as_deref()
        .or(top.at_timestamp.as_deref())
        .ok_or(DecodeError::MissingField("eventTime"))?;
    let time = parse_rfc3339_ms(time_text).ok_or_else(|| DecodeError::InvalidValue {
        field: "eventTime",
        detail: format!("not an RFC 3339 time: {time_text:.40}"),
    })?;
    let event_source = top
        .event_source
        .ok_or(DecodeError::MissingField("eventSource"))?;
    let event_name = top
        .event_name
        .ok_or(DecodeError::MissingField("eventName"))?;
    let identity = top.user_identity.unwrap_or_default();
    let scope = top
        .recipient_account_id
        .or_else(|| identity.account_id.clone())
        .or(account_fallback)
        .ok_or(DecodeError::MissingField("recipientAccountId"))?;
    let principal = identity
        .arn
        .or(identity.invoked_by)
        .or(identity.principal_id)
        .or(identity.account_id)
        .unwrap_or(Cow::Borrowed("unknown"));

    let mut ev = CloudEvent::new(
        time,
        Provider::Aws,
        scope,
        event_source,
        event_name,
        principal,
    );
    if let Some(region) = top.aws_region {
        ev.cloud_region = region;
    }
    ev.actor_user_type = identity.kind;
    ev.src_endpoint_ip = top.source_ip_address;
    ev.http_request_user_agent = top.user_agent;
    if let Some(code) = top.error_code {
        if !code.eq_ignore_ascii_case("success") {
            ev.status = Outcome::Failure;
            ev.status_code = Some(code);
        }
    }
    ev.metadata_uid = top.event_id;
    ev.metadata_log_name = Cow::Borrowed(log_name(
        top.event_category.as_deref(),
        top.management_event,
    ));
    if let Some(raw) = top.request_parameters {
        if raw.get() != "null" && wants_request(&ev.api_operation) {
            let req: AwsRequest<'a> =
                serde_json::from_str(raw.get()).map_err(DecodeError::from_json)?;
            apply_request(&mut ev, req);
        }
    }
    out.push(ev);
    Ok(())
}

/// An EventBridge event carrying a CloudTrail record in `detail`.
pub fn decode_eventbridge<'a>(
    detail: &'a str,
    account: Option<Cow<'a, str>>,
    out: &mut Vec<CloudEvent<'a>>,
) -> Result<(), DecodeError> {
    let top: RawTop<'a> = serde_json::from_str(detail).map_err(DecodeError::from_json)?;
    if top.event_source.is_none() || top.event_name.is_none() {
        // EventBridge carries many event kinds; only CloudTrail API calls are audit records.
        return Err(DecodeError::UnknownShape);
    }
    decode(top, account, out)
}

fn log_name(category: Option<&str>, management: Option<bool>) -> &'static str {
    match (category, management) {
        (Some("Data"), _) => "data",
        (Some("Insight"), _) => "insight",
        (Some("NetworkActivity"), _) => "network_activity",
        (Some("Management"), _) | (None, Some(true)) | (None, None) => "management",
        (Some(_), _) | (None, Some(false)) => "data",
    }
}

fn apply_request<'a>(ev: &mut CloudEvent<'a>, req: AwsRequest<'a>) {
    let r: &mut RequestFields<'a> = &mut ev.api_request;
    let op: &str = &ev.api_operation;
    match op {
        "GetSecretValue" => ev.resources.extend(req.secret_id),
        "BatchGetSecretValue" => {
            if let Some(list) = req.secret_id_list {
                ev.resources.extend(list);
            }
            if req.filters.is_some_and(|f| f.get() != "null") {
                r.bulk_filter = Some(true);
            }
        }
        "GetParameter" | "GetParameters" => {
            r.with_decryption = Some(req.with_decryption.unwrap_or(false));
            ev.resources.extend(req.name);
            if let Some(names) = req.names {
                ev.resources.extend(names);
            }
        }
        "StopLogging" | "StartLogging" | "DeleteTrail" | "UpdateTrail" | "PutEventSelectors" => {
            r.trail_name = req.trail_name.or(req.name);
            r.log_file_validation = req.enable_log_file_validation;
            r.multi_region = req.is_multi_region_trail;
            if let Some(selectors) = &req.event_selectors {
                let off = selectors
                    .iter()
                    .any(|s| s.include_management_events == Some(false));
                r.include_management_events = Some(!off);
            } else if let Some(adv) = req.advanced_event_selectors {
                // Advanced selectors log management events only with a selector whose
                // eventCategory equals Management.
                r.include_management_events = Some(adv.get().contains("\"Management\""));
            }
            ev.resources.extend(r.trail_name.clone());
        }
        "PutBucketLogging" => {
            r.enabled = Some(
                req.bucket_logging_status
                    .is_some_and(|s| s.get().contains("LoggingEnabled")),
            );
            ev.resources.extend(req.bucket_name);
        }
        "PutBucketLifecycle" | "PutBucketLifecycleConfiguration" => {
            r.expiration_days = req.lifecycle_configuration.and_then(|c| min_days(c.get()));
            ev.resources.extend(req.bucket_name);
        }
        "UpdateClusterConfig" => {
            if let Some(logging) = req.logging {
                // `{"clusterLogging":[{"types":[...],"enabled":false}]}`
                let text = logging.get();
                if text.contains("\"enabled\":false") || text.contains("\"enabled\": false") {
                    r.enabled = Some(false);
                } else if text.contains("\"enabled\"") {
                    r.enabled = Some(true);
                }
            }
            ev.resources.extend(req.name);
        }
        "RequestServiceQuotaIncrease" => {
            r.service_code = req.service_code;
            r.quota_code = req.quota_code;
            r.quota_value = req.desired_value;
        }
        "UpdateDetector" => {
            r.enabled = req.enable;
            ev.resources.extend(req.detector_id);
        }
        "DeleteDetector" => ev.resources.extend(req.detector_id),
        "CreateIPSet" | "UpdateIPSet" | "CreateThreatIntelSet" | "UpdateThreatIntelSet" => {
            r.enabled = req.activate;
            ev.resources.extend(req.name);
        }
        "EnableRegion" | "DisableRegion" => r.requested_region = req.region_name,
        "DeleteLogGroup" | "DeleteLogStream" => ev.resources.extend(req.log_group_name),
        _ => ev.resources.extend(req.function_name),
    }
}

/// The smallest `Expiration.Days` in a lifecycle configuration, however it is nested.
fn min_days(text: &str) -> Option<i64> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    fn walk(v: &serde_json::Value, best: &mut Option<i64>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, child) in map {
                    if k == "Expiration" || k == "NoncurrentVersionExpiration" {
                        let days = child
                            .get("Days")
                            .or_else(|| child.get("NoncurrentDays"))
                            .and_then(|d| d.as_i64().or_else(|| d.as_str()?.parse().ok()));
                        if let Some(d) = days {
                            *best = Some(best.map_or(d, |b: i64| b.min(d)));
                        }
                    }
                    walk(child, best);
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| walk(i, best)),
            _ => {}
        }
    }
    let mut best = None;
    walk(&value, &mut best);
    best
}

#[cfg(test)]
mod tests {
    use crate::event::test_support::decode;
    use crate::event::{decode_record, DecodeLimits, Outcome, Provider};

    const STOP: &str =
        include_str!("../../tests/fixtures/stratus/aws.defense-evasion.cloudtrail-stop.ndjson");
    const SELECTORS: &str = include_str!(
        "../../tests/fixtures/stratus/aws.defense-evasion.cloudtrail-event-selectors.ndjson"
    );
    const SSM: &str =
        include_str!("../../tests/fixtures/stratus/aws.credential-access.ssm-retrieve-securestring-parameters.ndjson");
    const BATCH: &str =
        include_str!("../../tests/fixtures/stratus/aws.credential-access.secretsmanager-batch-retrieve-secrets.ndjson");

    fn line<'a>(file: &'a str, op: &str) -> &'a str {
        file.lines()
            .find(|l| l.contains(&format!("\"eventName\":\"{op}\"")))
            .expect("fixture has the operation")
    }

    #[test]
    fn a_record() {
        let ev = &decode(line(STOP, "StopLogging"))[0];
        assert_eq!(ev.cloud_provider, Provider::Aws);
        assert_eq!(ev.api_service_name, "cloudtrail.amazonaws.com");
        assert_eq!(ev.api_operation, "StopLogging");
        assert_eq!(ev.metadata_log_name, "management");
        assert!(ev.actor_user_uid.starts_with("arn:aws:iam::"));
        assert_eq!(ev.actor_user_type.as_deref(), Some("IAMUser"));
        assert!(ev.api_request.trail_name.is_some());
        assert_eq!(ev.resources.len(), 1);
        assert!(ev.metadata_uid.is_some());
    }

    #[test]
    fn event_selectors_without_management_events() {
        let ev = &decode(line(SELECTORS, "PutEventSelectors"))[0];
        assert_eq!(ev.api_request.include_management_events, Some(false));
        assert!(ev
            .api_request
            .trail_name
            .as_deref()
            .unwrap()
            .starts_with("stratus-red-team-ctes-trail"));
    }

    #[test]
    fn ssm_names_count_each_and_decryption_is_kept() {
        let ev = &decode(line(SSM, "GetParameters"))[0];
        assert_eq!(ev.api_request.with_decryption, Some(true));
        assert!(ev.resources.len() > 1, "{:?}", ev.resources);
        assert!(ev
            .resources
            .iter()
            .all(|r| r.starts_with("/credentials/stratus-red-team/")));
    }

    #[test]
    fn batch_with_filters_is_a_bulk_read() {
        let ev = &decode(line(BATCH, "BatchGetSecretValue"))[0];
        assert_eq!(ev.api_request.bulk_filter, Some(true));
        assert!(ev.resources.is_empty());
    }

    #[test]
    fn s3_log_file_and_json_array() {
        let records: Vec<&str> = STOP.lines().collect();
        let file = format!("{{\"Records\":[{}]}}", records.join(","));
        assert_eq!(decode(&file).len(), records.len());
        let array = format!("[{}]", records.join(","));
        assert_eq!(decode(&array).len(), records.len());
    }

    #[test]
    fn eventbridge_envelope() {
        let record = line(STOP, "StopLogging");
        let mut detail: serde_json::Value = serde_json::from_str(record).unwrap();
        detail.as_object_mut().unwrap().remove("recipientAccountId");
        detail["userIdentity"]
            .as_object_mut()
            .unwrap()
            .remove("accountId");
        let envelope = serde_json::json!({
            "version": "0", "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
            "detail-type": "AWS API Call via CloudTrail", "source": "aws.cloudtrail",
            "account": "999999999999", "time": "2024-07-31T12:50:02Z", "region": "us-east-1",
            "resources": [], "detail": detail,
        })
        .to_string();
        let ev = &decode(&envelope)[0];
        assert_eq!(ev.api_operation, "StopLogging");
        assert_eq!(
            ev.cloud_account_uid, "999999999999",
            "account from the envelope"
        );
        let other = r#"{"version":"0","detail-type":"EC2 Instance State-change Notification","source":"aws.ec2","account":"1","detail":{"state":"running"}}"#;
        let mut out = Vec::new();
        let err = decode_record(other.as_bytes(), &DecodeLimits::default(), &mut out).unwrap_err();
        assert_eq!(err.reason(), "unknown_shape");
    }

    #[test]
    fn failures_data_events_and_logstash_timestamps() {
        let record = line(STOP, "StopLogging").replace(
            "\"eventCategory\":\"Management\"",
            "\"eventCategory\":\"Data\",\"errorCode\":\"AccessDenied\"",
        );
        let ev = &decode(&record)[0];
        assert_eq!(ev.status, Outcome::Failure);
        assert_eq!(ev.status_code.as_deref(), Some("AccessDenied"));
        assert_eq!(ev.metadata_log_name, "data");
        // OTRF's Logstash-forwarded CloudTrail: `@timestamp` instead of `eventTime`.
        let otrf = r#"{"@timestamp":"2020-09-13T17:20:01.000Z","eventSource":"s3.amazonaws.com","eventName":"ListBuckets","awsRegion":"us-east-1","recipientAccountId":"123456789123","userIdentity":{"arn":"arn:aws:iam::123456789123:user/pedro"}}"#;
        let ev = &decode(otrf)[0];
        assert_eq!(ev.time, 1_600_017_601_000);
        // A service event without an identity ARN falls back to invokedBy.
        let svc = r#"{"eventTime":"2024-01-01T00:00:00Z","eventSource":"servicequotas.amazonaws.com","eventName":"UpdateServiceQuotaIncreaseRequestStatus","eventType":"AwsServiceEvent","recipientAccountId":"1","userIdentity":{"accountId":"1","invokedBy":"servicequotas.amazonaws.com"}}"#;
        assert_eq!(decode(svc)[0].actor_user_uid, "servicequotas.amazonaws.com");
    }

    #[test]
    fn lifecycle_and_bucket_logging_predicates() {
        let lifecycle = r#"{"eventTime":"2024-01-01T00:00:00Z","eventSource":"s3.amazonaws.com","eventName":"PutBucketLifecycle","recipientAccountId":"1","requestParameters":{"bucketName":"trail-bucket","LifecycleConfiguration":{"Rule":[{"Expiration":{"Days":1}},{"Expiration":{"Days":"30"}}]}}}"#;
        let ev = &decode(lifecycle)[0];
        assert_eq!(ev.api_request.expiration_days, Some(1));
        let logging_off = r#"{"eventTime":"2024-01-01T00:00:00Z","eventSource":"s3.amazonaws.com","eventName":"PutBucketLogging","recipientAccountId":"1","requestParameters":{"bucketName":"b","BucketLoggingStatus":{"xmlns":"http://s3.amazonaws.com/doc/2006-03-01/"}}}"#;
        assert_eq!(decode(logging_off)[0].api_request.enabled, Some(false));
        let logging_on = logging_off.replace(
            r#""xmlns""#,
            r#""LoggingEnabled":{"TargetBucket":"logs"},"xmlns""#,
        );
        assert_eq!(decode(&logging_on)[0].api_request.enabled, Some(true));
    }
}
