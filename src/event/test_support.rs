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
