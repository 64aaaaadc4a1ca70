//! Decode throughput per provider format, as events/s (`decode_events`) and bytes/s
//! (`decode_bytes`), next to the baselines the spec names, measured in the same run:
//!
//! - `cloudtrail/decode_record`: the real decoder on 1,000 real CloudTrail records
//!   (invictus-ir/aws_dataset, `benches/data/`);
//! - `cloudtrail/bare_borrowed`: a bare borrowed serde_json parse of the same records into the
//!   ten fields we need (the floor a typed decoder can hope for);
//! - `cloudtrail/bare_option_cow`: the same ten fields declared `Option<Cow<'a, str>>` with
//!   `#[serde(borrow)]`, which serde does *not* borrow (one `String` per field): the price of the
//!   pattern `RawTop` / `CloudEvent` use today;
//! - `cloudtrail/serde_value`: a `serde_json::Value` DOM parse, for reference;
//! - `cloud_event_v1/decode_record`: the same events as `cloud_event.v1` records;
//! - `fixtures_<provider>/decode_record`: every other provider with decoder fixtures under
//!   `tests/fixtures/decoders/`, picked up automatically once the decoders and fixtures exist.
//!
//! One iteration walks the whole slice (1.3 MB, warm in cache as after a Kafka fetch).
//! Run: `cargo bench --bench decode`.

mod common;

use cloudwarden::event::{decode_record, CloudEvent, DecodeLimits, Provider};
use common::{bare_parse, read_ndjson, to_cloud_event_v1, total_bytes, Bare, INVICTUS_SLICE};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// [`Bare`] as `RawTop` declares its fields: `Option<Cow>` allocates despite `#[serde(borrow)]`.
#[allow(non_snake_case, dead_code)]
#[derive(serde::Deserialize)]
struct BareOptionCow<'a> {
    #[serde(borrow, default)]
    eventTime: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    eventSource: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    eventName: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    awsRegion: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    sourceIPAddress: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    userAgent: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    errorCode: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    recipientAccountId: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    eventID: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    userIdentity: Option<IdentityOptionCow<'a>>,
}

#[allow(dead_code)]
#[derive(serde::Deserialize)]
struct IdentityOptionCow<'a> {
    #[serde(borrow, default)]
    arn: Option<Cow<'a, str>>,
}

struct Input {
    name: String,
    records: Vec<Vec<u8>>,
    /// Whether the baselines (bare / Value parse) are benched on it too.
    baselines: bool,
}

fn decode_all<'a>(records: &'a [Vec<u8>], out: &mut Vec<CloudEvent<'a>>) -> usize {
    let limits = DecodeLimits::default();
    let mut n = 0;
    for raw in records {
        out.clear();
        if decode_record(raw, &limits, out).is_ok() {
            n += out.len();
        }
        black_box(&*out);
    }
    n
}

/// Checks that every record decodes (a bench of error paths would flatter the decoder).
fn assert_decodes(name: &str, records: &[Vec<u8>]) {
    let limits = DecodeLimits::default();
    let mut out = Vec::new();
    for (i, raw) in records.iter().enumerate() {
        out.clear();
        if let Err(e) = decode_record(raw, &limits, &mut out) {
            panic!("{name}: record {i} does not decode: {e}");
        }
    }
}

/// Fixture records under `tests/fixtures/decoders/`, grouped by the provider they decode to.
/// Records that do not decode (negative fixtures, or a decoder still a placeholder) are left out.
fn provider_fixtures() -> Vec<Input> {
    let dir = common::repo_path("tests/fixtures/decoders");
    let mut files = Vec::new();
    collect_files(&dir, &mut files);
    let limits = DecodeLimits::default();
    let mut by_provider: BTreeMap<Provider, Vec<Vec<u8>>> = BTreeMap::new();
    let mut failed = 0usize;
    for file in files {
        let Ok(text) = std::fs::read(&file) else {
            continue;
        };
        let is_ndjson = file.extension().is_some_and(|e| e == "ndjson");
        let records: Vec<Vec<u8>> = if is_ndjson {
            text.split(|&b| b == b'\n')
                .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
                .map(<[u8]>::to_vec)
                .collect()
        } else {
            vec![text]
        };
        for raw in records {
            let mut out = Vec::new();
            match decode_record(&raw, &limits, &mut out) {
                Ok(()) if !out.is_empty() => {
                    let provider = out[0].cloud_provider;
                    drop(out);
                    by_provider.entry(provider).or_default().push(raw);
                }
                _ => failed += 1,
            }
        }
    }
    // CloudTrail is benched on real records above; fixtures of it would only repeat that.
    by_provider.remove(&Provider::Aws);
    for p in Provider::ALL {
        if p != Provider::Aws && !by_provider.contains_key(&p) {
            eprintln!(
                "decode bench: skipping {p}: no fixture under tests/fixtures/decoders/ decodes to it \
                 (decoder still a placeholder, or no fixtures yet)"
            );
        }
    }
    if failed > 0 {
        eprintln!("decode bench: {failed} fixture records did not decode and are left out");
    }
    by_provider
        .into_iter()
        .map(|(p, records)| Input {
            name: format!("fixtures_{p}"),
            records,
            baselines: false,
        })
        .collect()
}

fn collect_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, out);
        } else if path
            .extension()
            .is_some_and(|e| e == "ndjson" || e == "json")
            && !path.to_string_lossy().contains("expected")
        {
            out.push(path);
        }
    }
}

fn inputs() -> Vec<Input> {
    let cloudtrail = read_ndjson(INVICTUS_SLICE);
    assert_decodes("cloudtrail", &cloudtrail);
    let v1 = to_cloud_event_v1(&cloudtrail);
    assert_decodes("cloud_event_v1", &v1);
    let mut all = vec![
        Input {
            name: "cloudtrail".into(),
            records: cloudtrail,
            baselines: true,
        },
        Input {
            name: "cloud_event_v1".into(),
            records: v1,
            baselines: false,
        },
    ];
    all.extend(provider_fixtures());
    for i in &all {
        eprintln!(
            "decode bench input {}: {} records, {} bytes ({} B/record)",
            i.name,
            i.records.len(),
            total_bytes(&i.records),
            total_bytes(&i.records) / i.records.len().max(1) as u64
        );
    }
    all
}

fn bench_group(c: &mut Criterion, inputs: &[Input], by_bytes: bool) {
    let mut group = c.benchmark_group(if by_bytes {
        "decode_bytes"
    } else {
        "decode_events"
    });
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for input in inputs {
        let records = &input.records;
        group.throughput(if by_bytes {
            Throughput::Bytes(total_bytes(records))
        } else {
            Throughput::Elements(records.len() as u64)
        });
        group.bench_function(format!("{}/decode_record", input.name), |b| {
            let mut out: Vec<CloudEvent<'_>> = Vec::with_capacity(4);
            b.iter(|| decode_all(records, &mut out))
        });
        if input.baselines {
            group.bench_function(format!("{}/bare_borrowed", input.name), |b| {
                b.iter(|| {
                    let mut n = 0usize;
                    for raw in records {
                        let bare: Option<Bare<'_>> = bare_parse(raw);
                        n += usize::from(bare.is_some());
                        black_box(&bare);
                    }
                    n
                })
            });
            group.bench_function(format!("{}/bare_option_cow", input.name), |b| {
                b.iter(|| {
                    let mut n = 0usize;
                    for raw in records {
                        let bare: Option<BareOptionCow<'_>> = std::str::from_utf8(raw)
                            .ok()
                            .and_then(|t| serde_json::from_str(t).ok());
                        n += usize::from(bare.is_some());
                        black_box(&bare);
                    }
                    n
                })
            });
            group.bench_function(format!("{}/serde_value", input.name), |b| {
                b.iter(|| {
                    let mut n = 0usize;
                    for raw in records {
                        let v: Result<serde_json::Value, _> = serde_json::from_slice(raw);
                        n += usize::from(v.is_ok());
                        black_box(&v);
                    }
                    n
                })
            });
        }
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    let inputs = inputs();
    bench_group(c, &inputs, false);
    bench_group(c, &inputs, true);
}

criterion_group!(decode, benches);
criterion_main!(decode);
