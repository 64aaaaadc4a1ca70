//! Malformed input: every bad record is a decode error with a reason, counted, never a panic,
//! and never stops the stream: the good records around it are still processed.

use cloudwarden::config::Config;
use cloudwarden::engine::Engine;
use cloudwarden::event::{decode_record, DecodeLimits};
use proptest::prelude::*;

const GOOD: &str = r#"{"eventVersion":"1.09","eventTime":"2026-01-01T00:00:00Z","eventSource":"cloudtrail.amazonaws.com","eventName":"StopLogging","awsRegion":"us-east-1","userIdentity":{"type":"IAMUser","arn":"arn:aws:iam::111111111111:user/alice","accountId":"111111111111"},"requestParameters":{"name":"org-trail"},"eventID":"e-1","recipientAccountId":"111111111111"}"#;

fn reason(raw: &[u8]) -> String {
    let mut out = Vec::new();
    match decode_record(raw, &DecodeLimits::default(), &mut out) {
        Ok(()) => format!("ok:{}", out.len()),
        Err(e) => e.reason().into_owned(),
    }
}

#[test]
fn each_kind_of_bad_input_has_its_reason() {
    assert_eq!(reason(GOOD.as_bytes()), "ok:1");
    assert_eq!(
        reason(&GOOD.as_bytes()[..GOOD.len() / 2]),
        "not_json",
        "truncated"
    );
    assert_eq!(reason(b""), "empty");
    assert_eq!(reason(b"   \n"), "empty");
    assert_eq!(reason(b"not json at all"), "not_json");
    assert_eq!(reason(b"\xff\xfe{}"), "invalid_utf8");
    assert_eq!(reason(b"{\"hello\":\"world\"}"), "unknown_shape");
    assert_eq!(reason(b"42"), "unknown_shape");
    let wrong_type = GOOD.replace(
        r#""eventTime":"2026-01-01T00:00:00Z""#,
        r#""eventTime":12345"#,
    );
    assert_eq!(reason(wrong_type.as_bytes()), "wrong_type");
    let no_time = GOOD.replace(r#""eventTime":"2026-01-01T00:00:00Z","#, "");
    assert_eq!(reason(no_time.as_bytes()), "missing_field:eventTime");
    let bad_time = GOOD.replace("2026-01-01T00:00:00Z", "yesterday");
    assert_eq!(reason(bad_time.as_bytes()), "invalid_value:eventTime");
    let no_account = GOOD
        .replace(r#","recipientAccountId":"111111111111""#, "")
        .replace(r#","accountId":"111111111111""#, "");
    assert_eq!(
        reason(no_account.as_bytes()),
        "missing_field:recipientAccountId"
    );
    let bad_request = GOOD.replace(
        r#"{"name":"org-trail"}"#,
        r#"{"name":["not","a","string"]}"#,
    );
    assert_eq!(reason(bad_request.as_bytes()), "wrong_type");
}

#[test]
fn deep_nesting_never_overflows_the_stack() {
    let depth = 100_000;
    let mut nested = String::new();
    nested.push_str(&"[".repeat(depth));
    nested.push_str(&"]".repeat(depth));
    // Inside a field nobody reads (here in the request of an event whose request is parsed):
    // serde_json skips it without recursion, and the record decodes.
    let deep = GOOD.replace(
        r#"{"name":"org-trail"}"#,
        &format!(r#"{{"name":"org-trail","x":{nested}}}"#),
    );
    assert_eq!(reason(deep.as_bytes()), "ok:1");
    // Where a field is read, the type check answers before any recursion.
    let typed = format!(r#"{{"eventSource":{nested}}}"#);
    assert_eq!(reason(typed.as_bytes()), "wrong_type");
    let selectors = GOOD.replace("StopLogging", "PutEventSelectors").replace(
        r#"{"name":"org-trail"}"#,
        &format!(r#"{{"eventSelectors":[{nested}]}}"#),
    );
    assert_eq!(reason(selectors.as_bytes()), "wrong_type");
    // A JSON array of records whose element is not an object.
    let array = format!("[{nested}]");
    assert_eq!(reason(array.as_bytes()), "wrong_type");
    let objects = format!("{}1{}", "{\"a\":".repeat(200), "}".repeat(200));
    assert_eq!(reason(objects.as_bytes()), "unknown_shape");
}

#[test]
fn oversize_records_are_refused_before_parsing_and_huge_strings_within_the_limit_decode() {
    let limits = DecodeLimits {
        max_record_bytes: 4096,
    };
    let mut big = GOOD.replace("org-trail", &"x".repeat(5000));
    let mut out = Vec::new();
    let err = decode_record(big.as_bytes(), &limits, &mut out).unwrap_err();
    assert_eq!(err.reason(), "too_large");
    drop(out);
    let mut out = Vec::new();
    // Not even valid JSON: the size check comes first.
    big.truncate(4500);
    assert_eq!(
        decode_record(big.as_bytes(), &limits, &mut out)
            .unwrap_err()
            .reason(),
        "too_large"
    );
    // A 500 KB user agent within the default 1 MiB limit decodes.
    let huge = GOOD.replace(
        r#""awsRegion""#,
        &format!(r#""userAgent":"{}","awsRegion""#, "u".repeat(500_000)),
    );
    assert_eq!(reason(huge.as_bytes()), "ok:1");
}

#[test]
fn an_envelope_is_all_or_nothing() {
    let env = format!(r#"{{"Records":[{GOOD},{{"eventSource":"x","eventName":"y"}}]}}"#);
    let mut out = Vec::new();
    let err = decode_record(env.as_bytes(), &DecodeLimits::default(), &mut out).unwrap_err();
    assert_eq!(err.reason(), "missing_field:eventTime");
    assert!(out.is_empty(), "no half-decoded envelope");
    let env = format!(r#"{{"Records":[{GOOD},{GOOD}]}}"#);
    assert_eq!(reason(env.as_bytes()), "ok:2");
}

#[test]
fn bad_records_are_counted_and_the_stream_goes_on() {
    let mut engine = Engine::new(&Config::default()).unwrap();
    let mut alerts = Vec::new();
    let stream: Vec<Vec<u8>> = vec![
        b"{truncated".to_vec(),
        GOOD.as_bytes().to_vec(),
        b"\xff".to_vec(),
        b"{\"hello\":1}".to_vec(),
        GOOD.replace("e-1", "e-2").as_bytes().to_vec(),
        b"{truncated again".to_vec(),
    ];
    let mut ok = 0;
    for r in &stream {
        if engine.process_record(r, &mut alerts).is_ok() {
            ok += 1;
        }
    }
    assert_eq!(ok, 2);
    let s = engine.stats();
    assert_eq!(s.events, 2);
    assert_eq!(s.decode_errors.get("not_json"), Some(&2));
    assert_eq!(s.decode_errors.get("invalid_utf8"), Some(&1));
    assert_eq!(s.decode_errors.get("unknown_shape"), Some(&1));
    // Both StopLogging events after the bad records were detected.
    assert_eq!(
        alerts
            .iter()
            .filter(|a| a.detector == "log_disable")
            .count(),
        2
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut out = Vec::new();
        let _ = decode_record(&bytes, &DecodeLimits::default(), &mut out);
    }

    #[test]
    fn corrupted_records_never_panic(cut in 0usize..GOOD.len(), flip in 0usize..GOOD.len(), byte in any::<u8>()) {
        let mut bytes = GOOD.as_bytes().to_vec();
        bytes[flip] = byte;
        bytes.truncate(cut.max(1));
        let mut out = Vec::new();
        let mut engine = Engine::new(&Config::default()).unwrap();
        let _ = decode_record(&bytes, &DecodeLimits::default(), &mut out);
        let _ = engine.process_record(&bytes, &mut Vec::new());
    }
}
