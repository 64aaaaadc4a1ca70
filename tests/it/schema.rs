//! The JSON Schema of `CloudEvent` v1 (`schemas/cloud-event.v1.schema.json`) against the struct:
//! real CloudTrail records decode into events that validate and round-trip, and the schema's
//! fields, required list and enums are exactly what serde writes.

use crate::util::fixture;
use cloudwarden::event::{
    decode_record, CloudEvent, DecodeLimits, Outcome, Provider, RequestFields,
};
use serde_json::{json, Value};
use std::borrow::Cow;
use std::collections::BTreeSet;
use std::path::PathBuf;

const AWS_FIXTURES: &[&str] = &[
    "stratus/aws.defense-evasion.cloudtrail-stop.ndjson",
    "stratus/aws.defense-evasion.cloudtrail-event-selectors.ndjson",
    "stratus/aws.credential-access.secretsmanager-batch-retrieve-secrets.ndjson",
    "stratus/aws.credential-access.ssm-retrieve-securestring-parameters.ndjson",
    "stratus/aws.persistence.lambda-backdoor-function.ndjson",
];

fn schema() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemas/cloud-event.v1.schema.json");
    let text = std::fs::read_to_string(&path).expect("schema file");
    serde_json::from_str(&text).expect("schema is JSON")
}

fn validator() -> jsonschema::Validator {
    jsonschema::validator_for(&schema()).expect("schema compiles")
}

/// Schema errors of `doc`, one string each (empty when valid).
fn errors(v: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    v.iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect()
}

/// An event with every optional field set.
fn full_event() -> CloudEvent<'static> {
    let s = |x: &'static str| Cow::Borrowed(x);
    let mut ev = CloudEvent::new(
        1_722_431_184_000,
        Provider::Aws,
        s("143434273843"),
        s("cloudtrail.amazonaws.com"),
        s("UpdateTrail"),
        s("arn:aws:iam::143434273843:user/christophe"),
    );
    ev.cloud_region = s("us-east-1");
    ev.actor_user_type = Some(s("IAMUser"));
    ev.src_endpoint_ip = Some(s("192.0.2.1"));
    ev.http_request_user_agent = Some(s("aws-cli/2"));
    ev.status = Outcome::Failure;
    ev.status_code = Some(s("AccessDenied"));
    ev.resources = vec![s("trail-a"), s("trail-b")];
    ev.metadata_log_name = s("management");
    ev.metadata_uid = Some(s("10163ed2-2253-469d-a5ee-cbc6651f8934"));
    ev.api_request = RequestFields {
        trail_name: Some(s("trail-a")),
        include_management_events: Some(false),
        enabled: Some(false),
        sink_disabled: Some(true),
        log_file_validation: Some(false),
        multi_region: Some(true),
        expiration_days: Some(1),
        requested_region: Some(s("ap-south-2")),
        service_code: Some(s("ec2")),
        quota_code: Some(s("L-1216C47A")),
        quota_value: Some(512.5),
        with_decryption: Some(true),
        bulk_filter: Some(true),
        audit_config_removed: Some(true),
        setting_name: Some(s("ENABLE_AUDIT")),
        policy_old_state: Some(s("enabled")),
        policy_new_state: Some(s("disabled")),
    };
    ev.behaviours = vec![s("log_disable")];
    ev.attack_technique_uids = vec![s("T1562.008")];
    ev
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().expect("object").keys().cloned().collect()
}

fn decode_one(line: &str) -> Result<Vec<CloudEvent<'_>>, cloudwarden::event::DecodeError> {
    let mut out = Vec::new();
    decode_record(line.as_bytes(), &DecodeLimits::default(), &mut out).map(|()| out)
}

#[test]
fn cloudtrail_fixtures_validate_and_round_trip() {
    let v = validator();
    let mut events = 0;
    for rel in AWS_FIXTURES {
        let text = std::fs::read_to_string(fixture(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let mut out = Vec::new();
            decode_record(line.as_bytes(), &DecodeLimits::default(), &mut out)
                .unwrap_or_else(|e| panic!("{rel}:{}: decode: {e}", n + 1));
            assert_eq!(out.len(), 1, "{rel}:{}: one record, one event", n + 1);
            for ev in &out {
                let doc = serde_json::to_value(ev).expect("serialize");
                let errs = errors(&v, &doc);
                assert!(errs.is_empty(), "{rel}:{}: {errs:#?}\n{doc:#}", n + 1);
                assert!(v.is_valid(&doc));

                // Round trip: the serialized event is itself a record decode_record accepts
                // (shape `schema`), and it decodes to the same event.
                let ser = serde_json::to_string(ev).expect("serialize");
                let back = decode_one(&ser).unwrap_or_else(|e| panic!("{rel}:{}: {e}", n + 1));
                assert_eq!(back, vec![ev.clone()], "{rel}:{}: round trip", n + 1);
                events += 1;
            }
        }
    }
    assert_eq!(events, 18, "every fixture line decoded");
}

#[test]
fn full_and_minimal_events_validate_and_round_trip() {
    let v = validator();
    let full = full_event();
    let minimal = CloudEvent::new(
        0,
        Provider::O365,
        Cow::Borrowed("tenant"),
        Cow::Borrowed("Exchange"),
        Cow::Borrowed("Set-AdminAuditLogConfig"),
        Cow::Borrowed("admin@example.com"),
    );
    for ev in [full, minimal] {
        let doc = serde_json::to_value(&ev).unwrap();
        assert_eq!(errors(&v, &doc), Vec::<String>::new(), "{doc:#}");
        let ser = serde_json::to_string(&ev).unwrap();
        assert_eq!(decode_one(&ser).unwrap(), vec![ev]);
    }
}

/// The schema names exactly the fields serde writes, requires exactly the ones it always writes,
/// and its enums are exactly the Rust enums' serialized names.
#[test]
fn schema_matches_struct() {
    let schema = schema();
    let props = &schema["properties"];
    let full = serde_json::to_value(full_event()).unwrap();
    assert_eq!(keys(props), keys(&full), "top-level properties");
    assert_eq!(
        keys(&props["api_request"]["properties"]),
        keys(&full["api_request"]),
        "api_request properties"
    );

    let minimal = serde_json::to_value(CloudEvent::new(
        0,
        Provider::Aws,
        Cow::Borrowed("a"),
        Cow::Borrowed("s"),
        Cow::Borrowed("o"),
        Cow::Borrowed("u"),
    ))
    .unwrap();
    let required: BTreeSet<String> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(required, keys(&minimal), "required = always serialized");

    let names = |v: &Value| -> BTreeSet<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_owned())
            .collect()
    };
    let providers: BTreeSet<String> = Provider::ALL
        .iter()
        .map(|p| p.as_str().to_owned())
        .collect();
    assert_eq!(names(&props["cloud_provider"]["enum"]), providers);
    for p in Provider::ALL {
        assert_eq!(serde_json::to_value(p).unwrap(), json!(p.as_str()));
    }
    let outcomes: BTreeSet<String> = [Outcome::Success, Outcome::Failure]
        .iter()
        .map(|o| {
            serde_json::to_value(o)
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(names(&props["status"]["enum"]), outcomes);
    assert_eq!(
        props["schema"]["const"],
        json!(cloudwarden::event::CLOUD_EVENT_SCHEMA)
    );
    assert_eq!(
        schema["$schema"],
        json!("https://json-schema.org/draft/2020-12/schema")
    );
    assert_eq!(schema["additionalProperties"], json!(false));
    assert_eq!(props["api_request"]["additionalProperties"], json!(false));

    // Every property documents itself.
    for obj in [props, &props["api_request"]["properties"]] {
        for (name, p) in obj.as_object().unwrap() {
            let d = p["description"].as_str().unwrap_or("");
            assert!(!d.trim().is_empty(), "property `{name}` has no description");
        }
    }
}

/// The struct denies unknown fields, and so does the schema, at the top level and inside
/// `api_request`.
#[test]
fn unknown_properties_are_rejected() {
    let v = validator();
    let base = serde_json::to_value(full_event()).unwrap();
    assert!(v.is_valid(&base));

    let mut top = base.clone();
    top["tenant_name"] = json!("x");
    assert!(
        !v.is_valid(&top),
        "extra top-level property accepted by the schema"
    );
    assert!(decode_one(&top.to_string()).is_err(), "and by the decoder");

    let mut nested = base.clone();
    nested["api_request"]["bucket_name"] = json!("x");
    assert!(
        !v.is_valid(&nested),
        "extra api_request property accepted by the schema"
    );
    assert!(
        decode_one(&nested.to_string()).is_err(),
        "and by the decoder"
    );
}

/// Breaks one thing in a valid document.
type Mutation = fn(&mut Value);

/// Documents the decoder refuses are refused by the schema too.
#[test]
fn schema_rejects_invalid_documents() {
    let v = validator();
    let base = serde_json::to_value(full_event()).unwrap();
    assert_eq!(errors(&v, &base), Vec::<String>::new());
    let cases: [(&str, Mutation); 9] = [
        ("schema v2", |d| d["schema"] = json!("cloud_event.v2")),
        ("time as string", |d| {
            d["time"] = json!("2024-07-31T13:06:24Z")
        }),
        ("time fractional", |d| d["time"] = json!(1.5)),
        ("unknown provider", |d| {
            d["cloud_provider"] = json!("oracle")
        }),
        ("unknown status", |d| d["status"] = json!("ok")),
        ("region missing", |d| {
            d.as_object_mut().unwrap().remove("cloud_region");
        }),
        ("resources not strings", |d| d["resources"] = json!([1])),
        ("bool as string", |d| {
            d["api_request"]["enabled"] = json!("false")
        }),
        ("days fractional", |d| {
            d["api_request"]["expiration_days"] = json!(1.5)
        }),
    ];
    for (name, mutate) in cases {
        let mut doc = base.clone();
        mutate(&mut doc);
        assert!(!v.is_valid(&doc), "{name}: schema accepted {doc}");
        assert!(
            decode_one(&doc.to_string()).is_err(),
            "{name}: decoder accepted {doc}"
        );
    }
}
