//! OCSF API Activity (class 6003) records, as pipelines that already normalise to OCSF write
//! them (Security Lake exports, Cribl or Tenzir pipelines), onto [`CloudEvent`].
//!
//! `CloudEvent` is named after the 6003 attribute paths, so most of the mapping is a rename:
//! `cloud.provider` / `region` / `account.uid`, `api.operation`, `api.service.name`,
//! `actor.user.uid` (or `actor.invoked_by`, `actor.user.uid_alt`, `actor.user.name`,
//! `actor.user.account.uid`, the first present: the order the CloudTrail decoder picks a
//! principal in), `actor.user.type`, `src_endpoint.ip` (or `svc_name`, `domain`, `hostname`),
//! `http_request.user_agent`, `status_id` (2 = Failure), `api.response.error` (or `status_code`),
//! `resources[].uid` (or `name`), `metadata.log_name`, `metadata.uid`, `time` (or `time_dt`).
//!
//! The request fields detectors look at come from `api.request.data`. For AWS that object is
//! CloudTrail's `requestParameters`, so it goes through the CloudTrail decoder's own extraction
//! (and, when that names resources, they replace `resources[]`, as in a CloudTrail record): a
//! 6003 record converted from CloudTrail decodes to the event the CloudTrail record does.

use super::shape::RawTop;
use super::time::{format_rfc3339_ms, parse_rfc3339_ms};
use super::{aws, CloudEvent, DecodeError, Outcome, Provider};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// The OCSF class this decoder reads.
pub const API_ACTIVITY_CLASS_UID: u32 = 6003;

type Str<'a> = Option<Cow<'a, str>>;

#[derive(Deserialize)]
struct ApiActivity<'a> {
    class_uid: u32,
    #[serde(default)]
    time: Option<i64>,
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    time_dt: Str<'a>,
    #[serde(borrow, default)]
    cloud: Option<Cloud<'a>>,
    #[serde(borrow, default)]
    api: Option<Api<'a>>,
    #[serde(borrow, default)]
    actor: Actor<'a>,
    #[serde(borrow, default)]
    src_endpoint: Endpoint<'a>,
    #[serde(borrow, default)]
    http_request: HttpRequest<'a>,
    #[serde(default)]
    status_id: Option<u32>,
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    status_code: Str<'a>,
    #[serde(borrow, default)]
    resources: Vec<Resource<'a>>,
    #[serde(borrow, default)]
    metadata: Metadata<'a>,
}

#[derive(Deserialize)]
struct Cloud<'a> {
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    provider: Str<'a>,
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    region: Str<'a>,
    #[serde(borrow, default)]
    account: Uid<'a>,
}

#[derive(Deserialize, Default)]
struct Uid<'a> {
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    uid: Str<'a>,
}

#[derive(Deserialize)]
struct Api<'a> {
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    operation: Str<'a>,
    #[serde(borrow, default)]
    service: Option<Named<'a>>,
    #[serde(borrow, default)]
    request: Option<Request<'a>>,
    #[serde(borrow, default)]
    response: Option<Response<'a>>,
}

#[derive(Deserialize, Default)]
struct Named<'a> {
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    name: Str<'a>,
}

#[derive(Deserialize)]
struct Request<'a> {
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Response<'a> {
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    error: Str<'a>,
}

#[derive(Deserialize, Default)]
struct Actor<'a> {
    #[serde(borrow, default)]
    user: User<'a>,
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    invoked_by: Str<'a>,
}

#[derive(Deserialize, Default)]
struct User<'a> {
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    uid: Str<'a>,
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    uid_alt: Str<'a>,
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    name: Str<'a>,
    #[serde(
        rename = "type",
        borrow,
        deserialize_with = "crate::event::opt_cow",
        default
    )]
    kind: Str<'a>,
    #[serde(borrow, default)]
    account: Uid<'a>,
}

#[derive(Deserialize, Default)]
struct Endpoint<'a> {
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    ip: Str<'a>,
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    svc_name: Str<'a>,
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    domain: Str<'a>,
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    hostname: Str<'a>,
}

#[derive(Deserialize, Default)]
struct HttpRequest<'a> {
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    user_agent: Str<'a>,
}

#[derive(Deserialize)]
struct Resource<'a> {
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    uid: Str<'a>,
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    name: Str<'a>,
}

#[derive(Deserialize, Default)]
struct Metadata<'a> {
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    uid: Str<'a>,
    #[serde(borrow, deserialize_with = "crate::event::opt_cow", default)]
    log_name: Str<'a>,
}

/// `cloud.provider` as OCSF producers spell it (`AWS`, `GCP`, `Azure`, …) or as we do.
pub fn parse_provider(s: &str) -> Option<Provider> {
    let lower = s.trim().to_ascii_lowercase();
    let p = match lower.as_str() {
        "aws" | "amazon web services" => Provider::Aws,
        "gcp" | "google cloud" | "google cloud platform" => Provider::Gcp,
        "azure" | "microsoft azure" => Provider::Azure,
        "entra_id" | "entra id" | "microsoft entra id" | "azure ad" | "azure_ad" => {
            Provider::EntraId
        }
        "google_workspace" | "google workspace" => Provider::GoogleWorkspace,
        "o365" | "office 365" | "microsoft 365" | "m365" => Provider::O365,
        _ => return None,
    };
    Some(p)
}

/// Decodes one API Activity record.
pub fn decode<'a>(text: &'a str, out: &mut Vec<CloudEvent<'a>>) -> Result<(), DecodeError> {
    let rec: ApiActivity<'a> = serde_json::from_str(text).map_err(DecodeError::from_json)?;
    if rec.class_uid != API_ACTIVITY_CLASS_UID {
        return Err(DecodeError::UnknownShape);
    }
    let time = match (rec.time, rec.time_dt.as_deref()) {
        (Some(t), _) => t,
        (None, Some(dt)) => parse_rfc3339_ms(dt).ok_or_else(|| DecodeError::InvalidValue {
            field: "time_dt",
            detail: format!("not an RFC 3339 time: {dt:.40}"),
        })?,
        (None, None) => return Err(DecodeError::MissingField("time")),
    };
    let cloud = rec.cloud.ok_or(DecodeError::MissingField("cloud"))?;
    let provider_text = cloud
        .provider
        .ok_or(DecodeError::MissingField("cloud.provider"))?;
    let provider = parse_provider(&provider_text).ok_or_else(|| DecodeError::InvalidValue {
        field: "cloud.provider",
        detail: format!("unknown provider {provider_text:.40}"),
    })?;
    let user = rec.actor.user;
    let account = cloud
        .account
        .uid
        .or_else(|| user.account.uid.clone())
        .ok_or(DecodeError::MissingField("cloud.account.uid"))?;
    let api = rec.api.ok_or(DecodeError::MissingField("api"))?;
    let operation = api
        .operation
        .ok_or(DecodeError::MissingField("api.operation"))?;
    let service = api
        .service
        .and_then(|s| s.name)
        .unwrap_or(Cow::Borrowed(""));
    let principal = user
        .uid
        .or(rec.actor.invoked_by)
        .or(user.uid_alt)
        .or(user.name)
        .or(user.account.uid)
        .unwrap_or(Cow::Borrowed("unknown"));
    let mut ev = CloudEvent::new(time, provider, account, service, operation, principal);
    if let Some(region) = cloud.region {
        ev.cloud_region = region;
    }
    ev.actor_user_type = user.kind;
    let ep = rec.src_endpoint;
    ev.src_endpoint_ip = ep.ip.or(ep.svc_name).or(ep.domain).or(ep.hostname);
    ev.http_request_user_agent = rec.http_request.user_agent;
    if rec.status_id == Some(2) {
        ev.status = Outcome::Failure;
    }
    ev.status_code = api.response.and_then(|r| r.error).or(rec.status_code);
    if ev.status_code.is_some() && rec.status_id.is_none() {
        ev.status = Outcome::Failure;
    }
    if let Some(log_name) = rec.metadata.log_name {
        ev.metadata_log_name = log_name;
    }
    ev.metadata_uid = rec.metadata.uid;
    let data = api
        .request
        .and_then(|r| r.data)
        .filter(|d| d.get() != "null");
    if let (Provider::Aws, Some(data)) = (provider, data) {
        apply_aws_request(&mut ev, data)?;
    }
    if ev.resources.is_empty() {
        ev.resources = rec
            .resources
            .into_iter()
            .filter_map(|r| r.uid.or(r.name))
            .collect();
    }
    out.push(ev);
    Ok(())
}

/// CloudTrail's `requestParameters` (AWS `api.request.data`) through the CloudTrail decoder's
/// extraction: the request fields and the resources it names.
fn apply_aws_request<'a>(ev: &mut CloudEvent<'a>, data: &'a RawValue) -> Result<(), DecodeError> {
    let top = RawTop {
        event_time: Some(Cow::Owned(format_rfc3339_ms(ev.time))),
        event_source: Some(ev.api_service_name.clone()),
        event_name: Some(ev.api_operation.clone()),
        recipient_account_id: Some(ev.cloud_account_uid.clone()),
        request_parameters: Some(data),
        ..RawTop::default()
    };
    let mut parsed = Vec::with_capacity(1);
    aws::decode(top, None, &mut parsed)?;
    if let Some(p) = parsed.pop() {
        ev.api_request = p.api_request;
        ev.resources = p.resources;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{decode_record, DecodeLimits};
    use serde_json::json;

    fn decode_one(v: &serde_json::Value) -> Result<CloudEvent<'static>, DecodeError> {
        let text = v.to_string();
        let mut out = Vec::new();
        decode_record(text.as_bytes(), &DecodeLimits::default(), &mut out)?;
        assert_eq!(out.len(), 1);
        Ok(out.pop().unwrap().into_owned())
    }

    fn stop_logging() -> serde_json::Value {
        json!({
            "class_uid": 6003, "category_uid": 6, "activity_id": 3, "type_uid": 600303,
            "severity_id": 1, "time": 1_767_225_660_000i64,
            "metadata": {"version": "1.8.0", "product": {"name": "CloudTrail", "vendor_name": "AWS"},
                         "uid": "ev-1", "log_name": "management"},
            "cloud": {"provider": "AWS", "region": "us-east-1", "account": {"uid": "111111111111"}},
            "api": {"operation": "StopLogging", "service": {"name": "cloudtrail.amazonaws.com"},
                    "request": {"uid": "r-1", "data": {"name": "org-trail"}}},
            "actor": {"user": {"uid": "arn:aws:iam::111111111111:user/alice", "type": "IAMUser"}},
            "src_endpoint": {"ip": "203.0.113.10"},
            "http_request": {"user_agent": "aws-cli/2.15.0"},
            "status_id": 1
        })
    }

    #[test]
    fn maps_the_api_activity_attributes() {
        let ev = decode_one(&stop_logging()).unwrap();
        assert_eq!(ev.time, 1_767_225_660_000);
        assert_eq!(ev.cloud_provider, Provider::Aws);
        assert_eq!(ev.cloud_account_uid, "111111111111");
        assert_eq!(ev.cloud_region, "us-east-1");
        assert_eq!(ev.api_service_name, "cloudtrail.amazonaws.com");
        assert_eq!(ev.api_operation, "StopLogging");
        assert_eq!(ev.actor_user_uid, "arn:aws:iam::111111111111:user/alice");
        assert_eq!(ev.actor_user_type.as_deref(), Some("IAMUser"));
        assert_eq!(ev.src_endpoint_ip.as_deref(), Some("203.0.113.10"));
        assert_eq!(
            ev.http_request_user_agent.as_deref(),
            Some("aws-cli/2.15.0")
        );
        assert_eq!(ev.status, Outcome::Success);
        assert_eq!(ev.metadata_uid.as_deref(), Some("ev-1"));
        assert_eq!(ev.metadata_log_name, "management");
        assert_eq!(ev.api_request.trail_name.as_deref(), Some("org-trail"));
    }

    #[test]
    fn failures_fallbacks_and_other_providers() {
        let mut v = stop_logging();
        v["status_id"] = json!(2);
        v["api"]["response"] = json!({"error": "AccessDenied"});
        v["actor"] =
            json!({"invoked_by": "lambda.amazonaws.com", "user": {"account": {"uid": "1"}}});
        v["src_endpoint"] = json!({"svc_name": "lambda.amazonaws.com"});
        let ev = decode_one(&v).unwrap();
        assert_eq!(ev.status, Outcome::Failure);
        assert_eq!(ev.status_code.as_deref(), Some("AccessDenied"));
        assert_eq!(ev.actor_user_uid, "lambda.amazonaws.com");
        assert_eq!(ev.src_endpoint_ip.as_deref(), Some("lambda.amazonaws.com"));

        let mut g = stop_logging();
        g["cloud"] = json!({"provider": "GCP", "account": {"uid": "proj-1"}});
        g["api"] = json!({"operation": "google.logging.v2.ConfigServiceV2.DeleteSink",
                          "service": {"name": "logging.googleapis.com"}});
        g["resources"] = json!([{"uid": "projects/proj-1/sinks/s"}, {"name": "n"}]);
        g.as_object_mut().unwrap().remove("time");
        g["time_dt"] = json!("2026-01-01T00:01:00.000Z");
        let ev = decode_one(&g).unwrap();
        assert_eq!(ev.cloud_provider, Provider::Gcp);
        assert_eq!(ev.cloud_region, crate::event::GLOBAL_REGION);
        assert_eq!(ev.time, 1_767_225_660_000);
        assert_eq!(ev.resources, ["projects/proj-1/sinks/s", "n"]);
    }

    #[test]
    fn refuses_what_it_cannot_map() {
        let mut v = stop_logging();
        v["cloud"]["provider"] = json!("Oracle");
        assert_eq!(
            decode_one(&v).unwrap_err().reason(),
            "invalid_value:cloud.provider"
        );
        let mut v = stop_logging();
        v["api"].as_object_mut().unwrap().remove("operation");
        assert_eq!(
            decode_one(&v).unwrap_err().reason(),
            "missing_field:api.operation"
        );
        let mut v = stop_logging();
        v.as_object_mut().unwrap().remove("time");
        assert_eq!(decode_one(&v).unwrap_err().reason(), "missing_field:time");
        // Another OCSF class is not an API Activity.
        let mut v = stop_logging();
        v["class_uid"] = json!(3002);
        assert_eq!(decode_one(&v).unwrap_err().reason(), "unknown_shape");
    }
}
