//! `CloudEvent` v1 itself: records already normalized (by `cloudwarden normalize`, or by an
//! upstream pipeline that writes our schema). One typed, borrowed parse; the `schema` tag must be
//! exactly `cloud_event.v1`, so a future v2 is refused rather than misread.

use super::{CloudEvent, DecodeError, CLOUD_EVENT_SCHEMA};

pub fn decode<'a>(text: &'a str, out: &mut Vec<CloudEvent<'a>>) -> Result<(), DecodeError> {
    let ev: CloudEvent<'a> = serde_json::from_str(text).map_err(DecodeError::from_json)?;
    if ev.schema != CLOUD_EVENT_SCHEMA {
        return Err(DecodeError::InvalidValue {
            field: "schema",
            detail: format!("unsupported schema {:.40}", ev.schema),
        });
    }
    out.push(ev);
    Ok(())
}
