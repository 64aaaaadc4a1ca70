//! Sigma correlation rules (`cloudwarden::sigma::correlation`) on the fixtures of
//! `tests/fixtures/sigma/correlation/` (the SigmaHQ aggregation rules rewritten as correlation
//! rules, and a temporal_ordered rule of ours): streams of hits built from real CloudTrail
//! records (re-timed copies) and documented synthetic ones. rsigma-eval matches the detection
//! rules on the records, standing in for stage 1 (a different crate from ours, so the hits are
//! not built by the code under test).

use crate::util::{fixture, lines};
use cloudwarden::alert::Alert;
use cloudwarden::event::time::{format_rfc3339_ms, parse_rfc3339_ms};
use cloudwarden::event::Provider;
use cloudwarden::sigma::correlation::{
    CorrelationSettings, Correlations, DetectionRef, Unsupported, STATE_INDEX,
};
use cloudwarden::sigma::hit::Hit;
use rsigma_parser::{CorrelationCondition, CorrelationRule, CorrelationType};
use serde_json::Value;
use std::borrow::Cow;

const MIN: i64 = 60_000;

/// One fixture file, loaded.
struct Rules {
    detections: Vec<DetectionRef>,
    correlation: CorrelationRule,
    all: Vec<CorrelationRule>,
    engine: rsigma_eval::Engine,
}

fn rules(file: &str) -> Rules {
    let path = fixture(&format!("sigma/correlation/{file}"));
    let coll = rsigma_parser::parse_sigma_file(&path).unwrap();
    assert!(coll.errors.is_empty(), "{file}: {:?}", coll.errors);
    assert_eq!(coll.correlations.len(), 1, "{file}");
    let mut engine = rsigma_eval::Engine::new();
    for r in &coll.rules {
        engine.add_rule(r).unwrap();
    }
    Rules {
        detections: coll
            .rules
            .iter()
            .map(|r| DetectionRef {
                id: r.id.clone(),
                name: r.name.clone(),
                title: r.title.clone(),
                tags: r.tags.clone(),
            })
            .collect(),
        correlation: coll.correlations[0].clone(),
        all: coll.correlations,
        engine,
    }
}

impl Rules {
    fn build(&self) -> Correlations {
        let (c, unsupported): (Correlations, Vec<Unsupported>) =
            Correlations::new(&self.all, &self.detections, &CorrelationSettings::default());
        assert!(unsupported.is_empty(), "{unsupported:?}");
        assert_eq!(c.len(), 1);
        c
    }

    fn threshold(&self) -> u64 {
        match &self.correlation.condition {
            CorrelationCondition::Threshold { predicates, .. } => predicates[0].1,
            other => panic!("{other:?}"),
        }
    }

    fn timespan_ms(&self) -> i64 {
        self.correlation.timespan.seconds as i64 * 1000
    }

    /// The hits `record` gives: one per match of a detection rule, per consuming correlation.
    fn hits(&self, c: &Correlations, record: &Value, offset: i64) -> Vec<Hit<'static>> {
        let event = rsigma_eval::JsonEvent::borrow(record);
        let mut out = Vec::new();
        for m in self.engine.evaluate(&event) {
            let Some(d) = self
                .detections
                .iter()
                .position(|d| d.id == m.header.rule_id)
            else {
                continue;
            };
            for consumer in c.consumers(d) {
                let group = consumer
                    .group_by
                    .iter()
                    .map(|f| Cow::Owned(field(record, f).unwrap_or_default()))
                    .collect();
                let aws = record.get("eventTime").is_some();
                let time = field(record, if aws { "eventTime" } else { "TimeGenerated" })
                    .and_then(|t| parse_rfc3339_ms(&t))
                    .unwrap();
                out.push(Hit {
                    correlation: consumer.correlation,
                    detection: d as u16,
                    time,
                    origin: (0, offset, 0),
                    late: false,
                    group,
                    value: consumer
                        .value_field
                        .as_deref()
                        .and_then(|f| field(record, f))
                        .map(Cow::Owned),
                    provider: if aws {
                        Provider::Aws
                    } else {
                        Provider::EntraId
                    },
                    scope: Cow::Owned(
                        field(
                            record,
                            if aws {
                                "recipientAccountId"
                            } else {
                                "TenantId"
                            },
                        )
                        .unwrap_or_default(),
                    ),
                    region: Cow::Owned(field(record, "awsRegion").unwrap_or_default()),
                    principal: field(
                        record,
                        if aws {
                            "userIdentity.arn"
                        } else {
                            "TargetUserName"
                        },
                    )
                    .map(Cow::Owned),
                    event_id: Cow::Owned(
                        field(record, if aws { "eventID" } else { "Id" }).unwrap_or_default(),
                    ),
                    operation: Cow::Owned(
                        field(record, if aws { "eventName" } else { "OperationName" })
                            .unwrap_or_default(),
                    ),
                });
            }
        }
        out
    }

    fn stream(&self, c: &Correlations, records: &[Value]) -> Vec<Hit<'static>> {
        let mut hits: Vec<Hit<'static>> = records
            .iter()
            .enumerate()
            .flat_map(|(i, r)| self.hits(c, r, i as i64))
            .collect();
        hits.sort_by_key(|h| (h.time, h.origin));
        hits
    }
}

/// A dotted field of a record, as a string (numbers as written).
fn field(record: &Value, path: &str) -> Option<String> {
    let mut v = record;
    for part in path.split('.') {
        v = v.get(part)?;
    }
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn records(file: &str) -> Vec<Value> {
    lines(&fixture(&format!("sigma/correlation/{file}")))
        .iter()
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect()
}

/// The record of `file` whose `eventName` is `name`.
fn record(file: &str, name: &str) -> Value {
    records(file)
        .into_iter()
        .find(|r| {
            field(r, "eventName").as_deref() == Some(name)
                || field(r, "OperationName").as_deref() == Some(name)
        })
        .unwrap_or_else(|| panic!("no {name} in {file}"))
}

/// A copy of `r` at time `t`, its event id suffixed `-n`, with `set` fields replaced.
fn retime(r: &Value, t: i64, n: usize, set: &[(&str, &str)]) -> Value {
    let mut r = r.clone();
    let (time, id) = if r.get("eventTime").is_some() {
        ("eventTime", "eventID")
    } else {
        ("TimeGenerated", "Id")
    };
    r[time] = Value::String(format_rfc3339_ms(t));
    let old = r[id].as_str().unwrap_or_default().to_owned();
    r[id] = Value::String(format!("{old}-{n}"));
    for (path, value) in set {
        let mut v = &mut r;
        let parts: Vec<&str> = path.split('.').collect();
        for p in &parts[..parts.len() - 1] {
            v = &mut v[*p];
        }
        v[parts[parts.len() - 1]] = Value::String((*value).to_owned());
    }
    r
}

fn run(c: &mut Correlations, hits: &[Hit<'_>]) -> Vec<Alert> {
    let mut out = Vec::new();
    for h in hits {
        c.on_hit(h, &mut out);
        c.on_watermark(h.time, &mut out);
    }
    out
}

/// `n` copies of `r`, `step` apart from `t0`, each with `set(i)` applied.
fn burst(
    r: &Value,
    t0: i64,
    n: usize,
    step: i64,
    set: impl Fn(usize) -> Vec<(String, String)>,
) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let s = set(i);
            let s: Vec<(&str, &str)> = s.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            retime(r, t0 + i as i64 * step, i, &s)
        })
        .collect()
}

/// The same stream, split by route key over two `Correlations` (as two instances would get
/// it), and with a checkpoint → restore into a fresh one in the middle: the same alerts.
fn same_alerts_split_and_restored(rules: &Rules, hits: &[Hit<'_>], expected: &[Alert]) {
    let (mut one, mut two) = (rules.build(), rules.build());
    let mut split = Vec::new();
    for h in hits {
        let c = if h.route_key() % 2 == 0 {
            &mut one
        } else {
            &mut two
        };
        c.on_hit(h, &mut split);
        c.on_watermark(h.time, &mut split);
    }
    let ids = |a: &[Alert]| {
        let mut v: Vec<String> = a.iter().map(|a| a.id.clone()).collect();
        v.sort();
        v
    };
    assert_eq!(ids(&split), ids(expected), "split by route key");

    let mut first = rules.build();
    first.track_changes();
    let half = hits.len() / 2;
    let mut restored = run(&mut first, &hits[..half]);
    let mut entries = Vec::new();
    first.checkpoint(&mut entries);
    assert!(entries.iter().all(|e| e.detector == STATE_INDEX));
    let mut second = rules.build();
    for e in &entries {
        if let Some(b) = &e.value {
            second.restore(e.table, e.key, b).unwrap();
        }
    }
    restored.extend(run(&mut second, &hits[half..]));
    assert_eq!(restored, expected, "after checkpoint/restore");
}

/// The raw records through the engine (`[sigma] rules` = the fixture; our loader, matcher,
/// field mapping and hits, in event-time order as replay gives them) raise the alerts the state
/// machine raised on rsigma-eval's hits, and the detection rules that only feed the
/// correlation (`generate: false`) raise none of their own.
fn same_alerts_from_the_engine(file: &str, recs: &[Value], expected: &[Alert]) {
    let mut config = cloudwarden::config::Config::default();
    config.sigma.rules = vec![fixture(&format!("sigma/correlation/{file}"))
        .display()
        .to_string()];
    let mut engine = cloudwarden::engine::Engine::new(&config).unwrap();
    let time = |r: &Value| {
        let t = r.get("eventTime").or_else(|| r.get("TimeGenerated"));
        parse_rfc3339_ms(t.and_then(Value::as_str).unwrap()).unwrap()
    };
    let mut sorted = recs.to_vec();
    sorted.sort_by_key(time);
    let mut out = Vec::new();
    for r in &sorted {
        engine
            .process_record(&serde_json::to_vec(r).unwrap(), &mut out)
            .unwrap();
    }
    engine.finish(&mut out);
    assert!(
        !out.iter().any(|a| a.detector == "sigma"),
        "{file}: generate: false"
    );
    out.retain(|a| a.detector == "sigma_correlation");
    let ids = |a: &[Alert]| {
        let mut v: Vec<(String, i64)> = a.iter().map(|a| (a.id.clone(), a.window_start)).collect();
        v.sort();
        v
    };
    assert_eq!(ids(&out), ids(expected), "{file}: through the engine");
}

/// An event_count / value_count fixture: `threshold + 1` hits within the timespan (two groups,
/// each) fire exactly one alert per group; `threshold` hits, or hits one timespan apart, none.
fn check_count(file: &str, make: impl Fn(i64, usize, usize, i64) -> Vec<Value>) {
    check_count_with(file, make, true);
}

/// [`check_count`]; `engine`: also through the engine (the records must be a shape the
/// decoders take).
fn check_count_with(file: &str, make: impl Fn(i64, usize, usize, i64) -> Vec<Value>, engine: bool) {
    let rules = rules(file);
    let n = rules.threshold() as usize;
    let span = rules.timespan_ms();
    let step = span / (n as i64 + 2);
    let t0 = parse_rfc3339_ms("2026-12-01T10:00:00Z").unwrap();

    // Two groups, each over the threshold.
    let mut recs = make(t0, n + 1, 0, step);
    recs.extend(make(t0 + step / 2, n + 1, 1, step));
    let mut c = rules.build();
    let hits = rules.stream(&c, &recs);
    assert_eq!(hits.len(), 2 * (n + 1), "{file}: every record matched");
    let alerts = run(&mut c, &hits);
    assert_eq!(alerts.len(), 2, "{file}: {alerts:#?}");
    for a in &alerts {
        let s = a.sigma.as_ref().unwrap();
        assert_eq!(s.id, rules.correlation.id.clone().unwrap());
        assert_eq!(s.kind, rules.correlation.correlation_type.as_str());
        assert_eq!(a.detector, "sigma_correlation");
        assert!(a.title.starts_with(&rules.correlation.title), "{}", a.title);
        assert!(a.window_end - a.window_start <= span, "{file}");
        assert!(!a.evidence.event_uids.is_empty());
        assert!(
            !a.attack_techniques.is_empty(),
            "{file}: techniques from the tags"
        );
    }
    assert_ne!(alerts[0].id, alerts[1].id);
    same_alerts_split_and_restored(&rules, &hits, &alerts);
    if engine {
        same_alerts_from_the_engine(file, &recs, &alerts);
    }

    // At the threshold: nothing.
    let mut c = rules.build();
    let hits = rules.stream(&c, &make(t0, n, 0, step));
    assert_eq!(hits.len(), n);
    assert!(run(&mut c, &hits).is_empty(), "{file}: at the threshold");

    // Over the threshold, but spread beyond the timespan.
    let mut c = rules.build();
    let hits = rules.stream(&c, &make(t0, n + 1, 0, span + MIN));
    assert!(
        run(&mut c, &hits).is_empty(),
        "{file}: outside the timespan"
    );
}

/// Copies of one real record by principal `group` (userIdentity.arn).
fn by_arn(file: &'static str, name: &'static str) -> impl Fn(i64, usize, usize, i64) -> Vec<Value> {
    let r = record(file, name);
    move |t0, n, group, step| {
        let arn = format!("arn:aws:iam::123837392027:user/principal-{group}");
        burst(&r, t0, n, step, |_| {
            vec![("userIdentity.arn".into(), arn.clone())]
        })
    }
}

#[test]
fn ec2_download_userdata() {
    check_count(
        "aws_ec2_download_userdata.yml",
        by_arn("invictus.ndjson", "DescribeInstanceAttribute"),
    );
}

#[test]
fn enum_backup() {
    check_count(
        "aws_enum_backup.yml",
        by_arn("invictus.ndjson", "DescribeVolumes"),
    );
}

#[test]
fn enum_listing() {
    // Alternating ListUsers and ListBuckets calls: both match `list*`.
    let users = record("invictus.ndjson", "ListUsers");
    let buckets = record("invictus.ndjson", "ListBuckets");
    check_count("aws_enum_listing.yml", move |t0, n, group, step| {
        let arn = format!("arn:aws:iam::123837392027:user/principal-{group}");
        (0..n)
            .map(|i| {
                let r = if i % 2 == 0 { &users } else { &buckets };
                retime(r, t0 + i as i64 * step, i, &[("userIdentity.arn", &arn)])
            })
            .collect()
    });
}

#[test]
fn enum_network() {
    check_count(
        "aws_enum_network.yml",
        by_arn("invictus.ndjson", "DescribeDhcpOptions"),
    );
}

#[test]
fn enum_storage() {
    check_count(
        "aws_enum_storage.yml",
        by_arn("invictus.ndjson", "GetBucketPolicy"),
    );
}

#[test]
fn macie_evasion_by_source_ip() {
    let r = record("synthetic.ndjson", "ArchiveFindings");
    check_count("aws_macic_evasion.yml", move |t0, n, group, step| {
        let ip = format!("198.51.100.{}", 10 + group);
        burst(&r, t0, n, step, |_| {
            vec![("sourceIPAddress".into(), ip.clone())]
        })
    });
}

#[test]
fn signin_bad_password_distinct_users_by_ip() {
    let r = record("synthetic.ndjson", "Sign-in activity");
    let distinct_users = |r: Value| {
        move |t0, n, group: usize, step| {
            let ip = format!("203.0.113.{}", 10 + group);
            burst(&r, t0, n, step, |i| {
                vec![
                    ("IpAddress".into(), ip.clone()),
                    ("TargetUserName".into(), format!("user{i}@example.com")),
                ]
            })
        }
    };
    let file = "azure_aad_secops_signin_failure_bad_password_threshold.yml";
    // Synthetic Log Analytics `SigninLogs` rows: not a shape the Entra decoder takes (it reads
    // the Graph / diagnostic-settings export), so not through the engine.
    check_count_with(file, distinct_users(r.clone()), false);

    // Many failures of the same few users (or of computer accounts) from one IP: not distinct
    // enough, and the computer accounts are filtered by the detection rule.
    let rules = rules(file);
    let n = rules.threshold() as usize;
    let t0 = parse_rfc3339_ms("2026-12-01T10:00:00Z").unwrap();
    let recs = burst(&r, t0, 3 * n, MIN / 2, |i| {
        let user = if i % 2 == 0 {
            format!("user{}@example.com", i % n)
        } else {
            format!("HOST{i}$")
        };
        vec![
            ("IpAddress".into(), "203.0.113.50".into()),
            ("TargetUserName".into(), user),
        ]
    });
    let mut c = rules.build();
    let hits = rules.stream(&c, &recs);
    assert!(hits
        .iter()
        .all(|h| !h.value.as_deref().unwrap().ends_with('$')));
    assert!(run(&mut c, &hits).is_empty());
}

/// A temporal fixture: `first` then `second` (records) by one principal `gap` apart.
fn sequence(
    rules: &Rules,
    first: &Value,
    second: &Value,
    t0: i64,
    gap: i64,
    arn: &str,
) -> Vec<Hit<'static>> {
    let c = rules.build();
    let recs = vec![
        retime(first, t0, 0, &[("userIdentity.arn", arn)]),
        retime(second, t0 + gap, 1, &[("userIdentity.arn", arn)]),
    ];
    let hits = rules.stream(&c, &recs);
    assert_eq!(hits.len(), 2);
    hits
}

fn check_temporal(file: &str, a: &Value, b: &Value, ordered: bool) {
    let rules = rules(file);
    let span = rules.timespan_ms();
    let t0 = parse_rfc3339_ms("2026-12-01T10:00:00Z").unwrap();
    // Two principals, each with the sequence within the timespan.
    let mut hits = sequence(
        &rules,
        a,
        b,
        t0,
        span / 2,
        "arn:aws:iam::111122223333:user/p1",
    );
    hits.extend(sequence(
        &rules,
        a,
        b,
        t0 + MIN / 2,
        span / 3,
        "arn:aws:iam::111122223333:user/p2",
    ));
    hits.sort_by_key(|h| (h.time, h.origin));
    let mut c = rules.build();
    let alerts = run(&mut c, &hits);
    assert_eq!(alerts.len(), 2, "{file}: {alerts:#?}");
    for al in &alerts {
        assert_eq!(
            al.sigma.as_ref().unwrap().kind,
            rules.correlation.correlation_type.as_str()
        );
        assert_eq!(al.evidence.event_uids.len(), 2);
    }
    same_alerts_split_and_restored(&rules, &hits, &alerts);

    // Beyond the timespan: none.
    let mut c = rules.build();
    let hits = sequence(
        &rules,
        a,
        b,
        t0,
        span + MIN,
        "arn:aws:iam::111122223333:user/p1",
    );
    assert!(
        run(&mut c, &hits).is_empty(),
        "{file}: outside the timespan"
    );

    // One step only: none.
    let mut c = rules.build();
    let hits = sequence(&rules, a, a, t0, MIN, "arn:aws:iam::111122223333:user/p1");
    assert!(run(&mut c, &hits).is_empty(), "{file}: one step only");

    // The other order: fires only when the rule is not ordered.
    let mut c = rules.build();
    let hits = sequence(&rules, b, a, t0, MIN, "arn:aws:iam::111122223333:user/p1");
    assert_eq!(
        run(&mut c, &hits).len(),
        usize::from(!ordered),
        "{file}: reversed"
    );

    // Two principals, one step each: none.
    let mut c = rules.build();
    let mut hits = sequence(&rules, a, a, t0, MIN, "arn:aws:iam::111122223333:user/p1");
    hits.extend(sequence(
        &rules,
        b,
        b,
        t0 + MIN / 2,
        MIN,
        "arn:aws:iam::111122223333:user/p2",
    ));
    hits.sort_by_key(|h| (h.time, h.origin));
    assert!(
        run(&mut c, &hits).is_empty(),
        "{file}: split across principals"
    );
}

#[test]
fn lambda_created_then_invoked() {
    check_temporal(
        "aws_lambda_function_created_or_invoked.yml",
        &record("invictus.ndjson", "CreateFunction20150331"),
        &record("synthetic.ndjson", "Invoke"),
        false,
    );
}

#[test]
fn ses_sending_enabled_and_email_verified() {
    check_temporal(
        "aws_ses_messaging_enabled.yml",
        &record("traildiscover.ndjson", "UpdateAccountSendingEnabled"),
        &record("traildiscover.ndjson", "VerifyEmailIdentity"),
        false,
    );
}

#[test]
fn new_access_key_then_stop_logging() {
    let key = record("invictus.ndjson", "CreateAccessKey");
    let stop = record("invictus.ndjson", "StopLogging");
    let file = "aws_new_access_key_then_stop_logging.yml";
    check_temporal(file, &key, &stop, true);

    // The invictus records as they happened: bert-jan stopped logging (12:00:42) before creating
    // the key (12:24:29): out of order, no alert. Re-timed so the StopLogging comes 10 minutes
    // after the key, the same two real records fire.
    let rules = rules(file);
    let mut c = rules.build();
    let real = rules.stream(&c, &[stop.clone(), key.clone()]);
    assert_eq!(real.len(), 2);
    assert!(real[0].time < real[1].time && real[0].operation == "StopLogging");
    assert!(run(&mut c, &real).is_empty());
    let t = parse_rfc3339_ms(key["eventTime"].as_str().unwrap()).unwrap();
    let after = retime(&stop, t + 10 * MIN, 1, &[]);
    let hits = rules.stream(&c, std::slice::from_ref(&after));
    let alerts = run(&mut c, &hits);
    assert_eq!(alerts.len(), 1);
    same_alerts_from_the_engine(file, &[stop.clone(), key.clone(), after], &alerts);
    let a = &alerts[0];
    assert_eq!(
        a.actor_user_uid.as_deref(),
        Some("arn:aws:iam::123837392027:user/bert-jan")
    );
    assert_eq!(a.window_start, t);
    assert_eq!(a.severity, cloudwarden::alert::Severity::High);
    let uids: Vec<&str> = a.attack_techniques.iter().map(|t| t.uid.as_str()).collect();
    assert_eq!(uids, ["T1098.001", "T1562.008"]);
    assert_eq!(
        a.sigma.as_ref().unwrap().matched,
        [(
            "userIdentity.arn".to_owned(),
            "arn:aws:iam::123837392027:user/bert-jan".to_owned()
        )]
    );
}

#[test]
fn every_fixture_correlation_runs() {
    let mut files: Vec<_> = std::fs::read_dir(fixture("sigma/correlation"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 11);
    for f in files {
        let r = rules(f.file_name().unwrap().to_str().unwrap());
        r.build();
        assert!(!matches!(
            r.correlation.correlation_type,
            CorrelationType::ValueSum | CorrelationType::ValueAvg
        ));
    }
}

/// Stage 2's state owner with the temporal_ordered fixture loaded.
fn stateful(rules: &Rules) -> cloudwarden::topology::stateful::Stateful {
    let config = cloudwarden::config::Config::default().validated().unwrap();
    cloudwarden::topology::stateful::Stateful::from_valid(&config).with_correlations(rules.build())
}

/// Key-then-stop sequences by 4 principals, each hit sent over the repartition wire format
/// (encode → decode), fed to `Stateful` with the watermark following the hits.
fn wire_sequences(rules: &Rules) -> Vec<Vec<u8>> {
    let key = record("invictus.ndjson", "CreateAccessKey");
    let stop = record("invictus.ndjson", "StopLogging");
    let t0 = parse_rfc3339_ms("2026-12-01T10:00:00Z").unwrap();
    let mut hits = Vec::new();
    for p in 0..4 {
        let arn = format!("arn:aws:iam::111122223333:user/p{p}");
        hits.extend(sequence(
            rules,
            &key,
            &stop,
            t0 + p * 7 * MIN,
            20 * MIN,
            &arn,
        ));
    }
    hits.sort_by_key(|h| (h.time, h.origin));
    hits.iter()
        .map(|h| {
            let mut buf = Vec::new();
            cloudwarden::topology::wire::encode_hit(&mut buf, h);
            buf
        })
        .collect()
}

fn feed(s: &mut cloudwarden::topology::stateful::Stateful, records: &[Vec<u8>]) -> Vec<Alert> {
    let mut out = Vec::new();
    for r in records {
        match cloudwarden::topology::wire::decode(r).unwrap() {
            cloudwarden::topology::wire::Item::Hit(h) => {
                s.sigma_hit(&h, &mut out);
                s.advance(h.time, &mut out);
            }
            other => panic!("{other:?}"),
        }
    }
    out
}

#[test]
fn stateful_runs_hits_from_the_wire_and_restores_them() {
    let rules = rules("aws_new_access_key_then_stop_logging.yml");
    let records = wire_sequences(&rules);
    let mut whole = stateful(&rules);
    let expected = feed(&mut whole, &records);
    assert_eq!(expected.len(), 4, "{expected:#?}");
    assert!(expected.iter().all(|a| a.detector == "sigma_correlation"));
    assert_eq!(whole.stats().alerts.get("sigma_correlation"), Some(&4));
    let names: Vec<&str> = whole.detector_stats().iter().map(|(n, _)| *n).collect();
    assert_eq!(names.last(), Some(&"sigma_correlation"));

    // Checkpoint after each half-way point, restore into a fresh Stateful, continue.
    for cut in [1, records.len() / 2, records.len() - 1] {
        let mut first = stateful(&rules);
        first.track_changes();
        let mut got = feed(&mut first, &records[..cut]);
        let entries = first.checkpoint();
        assert!(entries
            .iter()
            .any(|e| e.detector == STATE_INDEX && e.value.is_some()));
        let mut second = stateful(&rules);
        second.track_changes();
        for e in &entries {
            second.restore(e).unwrap();
        }
        got.extend(feed(&mut second, &records[cut..]));
        assert_eq!(got, expected, "cut at {cut}");
    }

    // A Stateful without correlation rules ignores their entries.
    let mut first = stateful(&rules);
    first.track_changes();
    feed(&mut first, &records[..3]);
    let config = cloudwarden::config::Config::default().validated().unwrap();
    let mut plain = cloudwarden::topology::stateful::Stateful::from_valid(&config);
    for e in &first.checkpoint() {
        plain.restore(e).unwrap();
    }
    assert!(plain.correlation_stats().is_none());

    // Hits older than the watermark are late: skipped and counted.
    let mut s = stateful(&rules);
    s.advance(
        parse_rfc3339_ms("2027-01-01T00:00:00Z").unwrap(),
        &mut Vec::new(),
    );
    assert!(feed(&mut s, &records).is_empty());
    assert_eq!(s.correlation_stats().unwrap().late, records.len() as u64);
}
