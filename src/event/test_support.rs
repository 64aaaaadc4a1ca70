//! Helpers shared by the decoder unit tests: decode through the full entry point
//! (`decode_record`, so shape recognition is tested too).

use super::{decode_record, CloudEvent, DecodeLimits};

/// Decodes a record that must decode.
pub fn decode(raw: &str) -> Vec<CloudEvent<'_>> {
    let mut out = Vec::new();
    decode_record(raw.as_bytes(), &DecodeLimits::default(), &mut out).expect("decodes");
    out
}

/// The reason a record fails (and that nothing of it was kept).
pub fn reason(raw: &str) -> String {
    let mut out = Vec::new();
    let err =
        decode_record(raw.as_bytes(), &DecodeLimits::default(), &mut out).expect_err("must fail");
    assert!(out.is_empty());
    err.reason().into_owned()
}

/// Every prefix of every record, raw and with quotes and colons stripped, decodes without a panic.
pub fn never_panics(records: &[&str]) {
    for raw in records {
        let bytes = raw.as_bytes();
        for i in 0..bytes.len() {
            let mut out = Vec::new();
            let _ = decode_record(&bytes[..i], &DecodeLimits::default(), &mut out);
            let mangled = String::from_utf8_lossy(&bytes[..i]).replace(['"', ':'], "");
            let _ = decode_record(mangled.as_bytes(), &DecodeLimits::default(), &mut out);
        }
    }
}
