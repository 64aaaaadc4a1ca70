//! The repartition topic's record format, `cloudwarden.repartition.v1`: compact JSON, one record
//! per Kafka message, with the version first (`{"v":1,…}`) and exactly one payload field:
//!
//! | field | what | key / partition |
//! |---|---|---|
//! | `e` | an event for the detectors in `d` (a [`DetectorSet`] bit mask), with its origin `o` = (input partition, offset, index in record) and whether it was late at its input | routing key of the detectors |
//! | `b` | a log source's activity in one heartbeat pane ([`Beat`]) | scope |
//! | `r` | a region a scope was first seen active in ([`RegionSeen`]), with its origin | scope |
//! | `m` | watermark markers: per input partition, its watermark and whether it is idle | none: sent to every partition |
//! | `h` | a Sigma detection-rule match for a correlation rule ([`Hit`]), with its origin | [`Hit::route_key`]: (correlation, group-by values) |
//!
//! An unknown version or a malformed record is an error the service counts and skips (the
//! record is never retried forever, nor does it stop the partition).

use crate::detect::{Beat, DetectorSet, RegionSeen};
use crate::event::{CloudEvent, Provider};
use crate::sigma::hit::Hit;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

pub const VERSION: u8 = 1;

/// Where a forwarded item came from: (input partition, offset, index in the record). With the
/// event time it orders stage 2's input the same way however many instances produced it.
pub type Origin = (i32, i64, u32);

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireEvent<'a> {
    pub d: u16,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub late: bool,
    pub o: Origin,
    #[serde(borrow)]
    pub ev: CloudEvent<'a>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireBeat<'a> {
    pub p: Provider,
    #[serde(borrow)]
    pub s: Cow<'a, str>,
    #[serde(borrow)]
    pub g: Cow<'a, str>,
    #[serde(borrow)]
    pub l: Cow<'a, str>,
    #[serde(
        borrow,
        default,
        deserialize_with = "crate::event::opt_cow",
        skip_serializing_if = "Option::is_none"
    )]
    pub sv: Option<Cow<'a, str>>,
    pub k: u64,
    pub pn: i64,
    pub n: u32,
    pub lo: i64,
    pub hi: i64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireRegion<'a> {
    pub p: Provider,
    #[serde(borrow)]
    pub s: Cow<'a, str>,
    #[serde(borrow)]
    pub g: Cow<'a, str>,
    pub t: i64,
    pub o: Origin,
}

/// One input partition's watermark, as its stage-1 owner last saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mark<'a> {
    #[serde(borrow)]
    pub t: Cow<'a, str>,
    pub p: i32,
    pub w: i64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub i: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record<'a> {
    pub v: u8,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub e: Option<WireEvent<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub b: Option<WireBeat<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub r: Option<WireRegion<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub m: Option<Vec<Mark<'a>>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub h: Option<Hit<'a>>,
}

/// A decoded repartition record.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // short-lived, on the stack of one call
pub enum Item<'a> {
    Event {
        detectors: DetectorSet,
        late: bool,
        origin: Origin,
        ev: CloudEvent<'a>,
    },
    Beat(Beat<'a>),
    Region(RegionSeen<'a>, Origin),
    Markers(Vec<Mark<'a>>),
    /// A Sigma detection-rule match for a correlation rule (its origin is `hit.origin`).
    Hit(Hit<'a>),
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WireError {
    #[error("unsupported repartition record version {0}")]
    Version(u8),
    #[error("malformed repartition record: {0}")]
    Malformed(String),
}

impl WireError {
    pub fn reason(&self) -> &'static str {
        match self {
            WireError::Version(_) => "repartition_version",
            WireError::Malformed(_) => "repartition_malformed",
        }
    }
}

pub fn encode_event(
    out: &mut Vec<u8>,
    detectors: DetectorSet,
    late: bool,
    origin: Origin,
    ev: &CloudEvent<'_>,
) {
    // The same layout as `Record { v, e: Some(WireEvent) }`, serialized from a borrow: no copy
    // of the event per forwarded record.
    #[derive(Serialize)]
    struct EventRef<'r, 'a> {
        d: u16,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        late: bool,
        o: Origin,
        ev: &'r CloudEvent<'a>,
    }
    #[derive(Serialize)]
    struct Out<'r, 'a> {
        v: u8,
        e: EventRef<'r, 'a>,
    }
    out.clear();
    let r = Out {
        v: VERSION,
        e: EventRef {
            d: detectors.0,
            late,
            o: origin,
            ev,
        },
    };
    serde_json::to_writer(&mut *out, &r).expect("serializing to a Vec cannot fail");
}

pub fn encode_beat(out: &mut Vec<u8>, b: &Beat<'_>) {
    out.clear();
    let r = Record {
        v: VERSION,
        b: Some(WireBeat {
            p: b.provider,
            s: Cow::Borrowed(&b.scope),
            g: Cow::Borrowed(&b.region),
            l: Cow::Borrowed(&b.log_name),
            sv: b.service.as_deref().map(Cow::Borrowed),
            k: b.key,
            pn: b.pane,
            n: b.count,
            lo: b.min,
            hi: b.max,
        }),
        ..Record::default()
    };
    serde_json::to_writer(&mut *out, &r).expect("serializing to a Vec cannot fail");
}

pub fn encode_region(out: &mut Vec<u8>, r: &RegionSeen<'_>, origin: Origin) {
    out.clear();
    let rec = Record {
        v: VERSION,
        r: Some(WireRegion {
            p: r.provider,
            s: Cow::Borrowed(&r.scope),
            g: Cow::Borrowed(&r.region),
            t: r.time,
            o: origin,
        }),
        ..Record::default()
    };
    serde_json::to_writer(&mut *out, &rec).expect("serializing to a Vec cannot fail");
}

pub fn encode_markers(out: &mut Vec<u8>, marks: &[Mark<'_>]) {
    out.clear();
    let rec = Record {
        v: VERSION,
        m: Some(marks.to_vec()),
        ..Record::default()
    };
    serde_json::to_writer(&mut *out, &rec).expect("serializing to a Vec cannot fail");
}

/// A Sigma hit, to be keyed by [`Hit::route_key`].
pub fn encode_hit(out: &mut Vec<u8>, hit: &Hit<'_>) {
    #[derive(Serialize)]
    struct Out<'r, 'a> {
        v: u8,
        h: &'r Hit<'a>,
    }
    out.clear();
    serde_json::to_writer(&mut *out, &Out { v: VERSION, h: hit })
        .expect("serializing to a Vec cannot fail");
}

/// Decodes one repartition record.
pub fn decode(bytes: &[u8]) -> Result<Item<'_>, WireError> {
    let rec: Record<'_> = match serde_json::from_slice(bytes) {
        Ok(r) => r,
        Err(e) => {
            // A newer writer: say so rather than "malformed".
            #[derive(Deserialize)]
            struct V {
                v: u8,
            }
            if let Ok(V { v }) = serde_json::from_slice::<V>(bytes) {
                if v != VERSION {
                    return Err(WireError::Version(v));
                }
            }
            return Err(WireError::Malformed(e.to_string()));
        }
    };
    if rec.v != VERSION {
        return Err(WireError::Version(rec.v));
    }
    let payloads = [
        rec.e.is_some(),
        rec.b.is_some(),
        rec.r.is_some(),
        rec.m.is_some(),
        rec.h.is_some(),
    ];
    if payloads.iter().filter(|p| **p).count() != 1 {
        return Err(WireError::Malformed(
            "exactly one of e, b, r, m, h must be set".into(),
        ));
    }
    if let Some(h) = rec.h {
        return Ok(Item::Hit(h));
    }
    match (rec.e, rec.b, rec.r, rec.m) {
        (Some(e), None, None, None) => Ok(Item::Event {
            detectors: DetectorSet(e.d),
            late: e.late,
            origin: e.o,
            ev: e.ev,
        }),
        (None, Some(b), None, None) => Ok(Item::Beat(Beat {
            key: b.k,
            provider: b.p,
            scope: b.s,
            region: b.g,
            log_name: b.l,
            service: b.sv,
            pane: b.pn,
            count: b.n,
            min: b.lo,
            max: b.hi,
        })),
        (None, None, Some(r), None) => Ok(Item::Region(
            RegionSeen {
                provider: r.p,
                scope: r.s,
                region: r.g,
                time: r.t,
            },
            r.o,
        )),
        (None, None, None, Some(m)) => Ok(Item::Markers(m)),
        _ => Err(WireError::Malformed(
            "exactly one of e, b, r, m, h must be set".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::{scenario_stream, Scenario};

    #[test]
    fn every_kind_round_trips() {
        let mut buf = Vec::new();
        let raw = scenario_stream(&Scenario::default())
            .into_iter()
            .next()
            .unwrap();
        let mut events = Vec::new();
        crate::event::decode_record(&raw, &Default::default(), &mut events).unwrap();
        let ev = &events[0];
        encode_event(&mut buf, DetectorSet(0b101), true, (3, 42, 1), ev);
        match decode(&buf).unwrap() {
            Item::Event {
                detectors,
                late,
                origin,
                ev: back,
            } => {
                assert_eq!(
                    (detectors, late, origin),
                    (DetectorSet(0b101), true, (3, 42, 1))
                );
                assert_eq!(&back, ev);
            }
            other => panic!("{other:?}"),
        }
        let beat = crate::detect::log_source_silence::beat_of(ev, true, 60_000);
        encode_beat(&mut buf, &beat);
        match decode(&buf).unwrap() {
            Item::Beat(b) => assert_eq!(b, beat),
            other => panic!("{other:?}"),
        }
        let region = RegionSeen {
            provider: ev.cloud_provider,
            scope: Cow::Borrowed("123"),
            region: Cow::Borrowed("eu-west-1"),
            time: 7,
        };
        encode_region(&mut buf, &region, (0, 1, 2));
        match decode(&buf).unwrap() {
            Item::Region(r, o) => assert_eq!((r, o), (region, (0, 1, 2))),
            other => panic!("{other:?}"),
        }
        let marks = vec![Mark {
            t: Cow::Borrowed("cloud-audit"),
            p: 5,
            w: 1000,
            i: true,
        }];
        encode_markers(&mut buf, &marks);
        assert!(
            buf.starts_with(br#"{"v":1,"#),
            "{}",
            String::from_utf8_lossy(&buf)
        );
        match decode(&buf).unwrap() {
            Item::Markers(m) => assert_eq!(m, marks),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_hit_round_trips() {
        let hit = Hit {
            correlation: 3,
            detection: 17,
            time: 1_700_000_000_123,
            origin: (2, 99, 4),
            late: true,
            group: vec![Cow::Borrowed("arn:aws:iam::1:user/a\"b"), Cow::Borrowed("")],
            value: Some(Cow::Borrowed("user1@example.com")),
            provider: Provider::Aws,
            scope: Cow::Borrowed("111122223333"),
            region: Cow::Borrowed("eu-west-1"),
            principal: None,
            event_id: Cow::Borrowed("e-1"),
            operation: Cow::Borrowed("StopLogging"),
        };
        let mut buf = Vec::new();
        encode_hit(&mut buf, &hit);
        assert!(buf.starts_with(br#"{"v":1,"h":"#));
        match decode(&buf).unwrap() {
            Item::Hit(back) => {
                assert_eq!(back, hit);
                assert_eq!(back.route_key(), hit.route_key());
            }
            other => panic!("{other:?}"),
        }
        // Without the optional fields.
        let bare = Hit {
            late: false,
            value: None,
            ..hit.clone()
        };
        encode_hit(&mut buf, &bare);
        assert!(!String::from_utf8_lossy(&buf).contains("late"));
        match decode(&buf).unwrap() {
            Item::Hit(back) => assert_eq!(back, bare),
            other => panic!("{other:?}"),
        }
        // A hit with another payload, or a hit missing a field, is malformed.
        let two = format!(
            r#"{{"v":1,"m":[],"h":{}}}"#,
            serde_json::to_string(&hit).unwrap()
        );
        assert!(matches!(
            decode(two.as_bytes()),
            Err(WireError::Malformed(_))
        ));
        assert!(matches!(
            decode(br#"{"v":1,"h":{"correlation":1}}"#),
            Err(WireError::Malformed(_))
        ));
    }

    #[test]
    fn unknown_version_and_garbage_are_errors() {
        assert_eq!(
            decode(br#"{"v":2,"x":{}}"#).unwrap_err(),
            WireError::Version(2)
        );
        assert_eq!(
            decode(br#"{"v":9,"m":[]}"#).unwrap_err(),
            WireError::Version(9)
        );
        assert!(matches!(decode(b"\x00\x01"), Err(WireError::Malformed(_))));
        assert!(matches!(
            decode(br#"{"v":1}"#),
            Err(WireError::Malformed(_))
        ));
    }
}
