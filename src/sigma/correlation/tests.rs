use super::*;
use crate::event::Provider;
use std::borrow::Cow;

const MIN: i64 = 60_000;

fn det(id: &str, tags: &[&str]) -> DetectionRef {
    DetectionRef {
        id: Some(id.to_owned()),
        name: Some(format!("{id}_name")),
        title: format!("rule {id}"),
        tags: tags.iter().map(|t| t.to_string()).collect(),
    }
}

fn load(yaml: &str, dets: &[DetectionRef]) -> (Correlations, Vec<Unsupported>) {
    let coll = rsigma_parser::parse_sigma_yaml(yaml).expect("parses");
    assert!(coll.errors.is_empty(), "{:?}", coll.errors);
    Correlations::new(&coll.correlations, dets, &CorrelationSettings::default())
}

fn corr(kind: &str, rules: &[&str], condition: &str, extra: &str) -> String {
    let rules: Vec<String> = rules.iter().map(|r| format!("        - {r}\n")).collect();
    format!(
        "title: test correlation\nid: corr-1\nlevel: high\ncorrelation:\n    type: {kind}\n    \
         rules:\n{}    group-by:\n        - user\n    timespan: 10m\n{condition}{extra}",
        rules.concat()
    )
}

fn hit(detection: u16, time: i64, user: &str, value: Option<&str>, id: &str) -> Hit<'static> {
    Hit {
        correlation: 0,
        detection,
        time,
        origin: (0, time, 0),
        late: false,
        group: vec![Cow::Owned(user.to_owned())],
        value: value.map(|v| Cow::Owned(v.to_owned())),
        provider: Provider::Aws,
        scope: Cow::Borrowed("111122223333"),
        region: Cow::Borrowed("us-east-1"),
        principal: Some(Cow::Owned(user.to_owned())),
        event_id: Cow::Owned(id.to_owned()),
        operation: Cow::Borrowed("ListBuckets"),
    }
}

fn run(c: &mut Correlations, hits: &[Hit<'_>]) -> Vec<Alert> {
    let mut out = Vec::new();
    for h in hits {
        c.on_hit(h, &mut out);
        c.on_watermark(h.time, &mut out);
    }
    out
}

fn count_rule(condition: &str) -> Correlations {
    let (c, u) = load(
        &corr("event_count", &["a"], condition, ""),
        &[det("a", &["attack.t1580"])],
    );
    assert!(u.is_empty(), "{u:?}");
    c
}

fn hits_every_minute(n: usize, user: &str) -> Vec<Hit<'static>> {
    (0..n)
        .map(|i| {
            hit(
                0,
                1_000_000 * MIN + i as i64 * MIN,
                user,
                None,
                &format!("e{i}"),
            )
        })
        .collect()
}

#[test]
fn event_count_gt_fires_once_when_crossed() {
    let mut c = count_rule("    condition:\n        gt: 3\n");
    let alerts = run(&mut c, &hits_every_minute(8, "alice"));
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let a = &alerts[0];
    assert_eq!(a.detector, "sigma_correlation");
    assert_eq!(a.evidence.count, Some(4));
    assert_eq!(a.evidence.threshold, Some(4.0));
    assert_eq!(a.window_start, 1_000_000 * MIN);
    assert_eq!(a.window_end, 1_000_000 * MIN + 3 * MIN);
    assert_eq!(a.evidence.event_uids, ["e0", "e1", "e2", "e3"]);
    let s = a.sigma.as_ref().unwrap();
    assert_eq!(s.kind, "event_count");
    assert_eq!(s.id, "corr-1");
    assert_eq!(s.matched, [("user".to_owned(), "alice".to_owned())]);
    assert_eq!(a.severity, crate::alert::Severity::High);
    assert!(a.title.contains("4 events (gt 3)"), "{}", a.title);
    assert!(a.title.contains("user=alice"), "{}", a.title);
    // The referenced rule's technique, as the correlation has no tags.
    assert_eq!(a.attack_techniques[0].uid, "T1580");
}

#[test]
fn event_count_at_threshold_does_not_fire() {
    let mut c = count_rule("    condition:\n        gt: 3\n");
    assert!(run(&mut c, &hits_every_minute(3, "alice")).is_empty());
}

#[test]
fn event_count_groups_are_separate() {
    let mut c = count_rule("    condition:\n        gte: 3\n");
    let mut hits = hits_every_minute(2, "alice");
    hits.extend(hits_every_minute(2, "bob").into_iter().map(|mut h| {
        h.time += 30_000;
        h
    }));
    hits.sort_by_key(|h| h.time);
    assert!(run(&mut c, &hits).is_empty());
    let alerts = run(
        &mut c,
        &[hit(0, 1_000_000 * MIN + 2 * MIN, "bob", None, "x")],
    );
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].actor_user_uid.as_deref(), Some("bob"));
}

#[test]
fn event_count_outside_timespan_does_not_fire() {
    // 5 hits, 4 minutes apart: never more than 3 in a 10 min window.
    let mut c = count_rule("    condition:\n        gte: 4\n");
    let hits: Vec<_> = (0..5)
        .map(|i| hit(0, i * 4 * MIN, "alice", None, "e"))
        .collect();
    assert!(run(&mut c, &hits).is_empty());
}

#[test]
fn event_count_rearms_after_window_empties() {
    let mut c = count_rule("    condition:\n        gte: 2\n");
    let mut hits = hits_every_minute(4, "alice");
    hits.extend(hits_every_minute(4, "alice").into_iter().map(|mut h| {
        h.time += 60 * MIN;
        h
    }));
    let alerts = run(&mut c, &hits);
    assert_eq!(alerts.len(), 2);
    assert_ne!(alerts[0].id, alerts[1].id);
}

#[test]
fn event_count_range_and_eq_and_lt() {
    // range: fires on the 3rd hit (3 in [3, 4]), re-arms on the 5th (out of range), and no
    // second crossing inside the window.
    let mut c = count_rule("    condition:\n        gte: 3\n        lte: 4\n");
    let alerts = run(&mut c, &hits_every_minute(6, "alice"));
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].evidence.count, Some(3));

    let mut c = count_rule("    condition:\n        eq: 2\n");
    let alerts = run(&mut c, &hits_every_minute(5, "alice"));
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].evidence.count, Some(2));

    // lt is checked on each hit, as rsigma-eval does: the first hit of a group has count 1.
    let mut c = count_rule("    condition:\n        lt: 2\n");
    let alerts = run(&mut c, &hits_every_minute(3, "alice"));
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].evidence.count, Some(1));

    let mut c = count_rule("    condition:\n        lte: 1\n");
    assert_eq!(run(&mut c, &hits_every_minute(1, "alice")).len(), 1);
}

#[test]
fn late_hits_are_skipped_and_counted() {
    let mut c = count_rule("    condition:\n        gte: 2\n");
    let mut hits = hits_every_minute(3, "alice");
    for h in &mut hits {
        h.late = true;
    }
    assert!(run(&mut c, &hits).is_empty());
    assert_eq!(c.stats().late, 3);
    assert_eq!(c.stats().keys, 0);
}

#[test]
fn value_count_counts_distinct_values() {
    let yaml = corr(
        "value_count",
        &["a"],
        "    condition:\n        gt: 2\n        field: target\n",
        "",
    );
    let (mut c, u) = load(&yaml, &[det("a", &[])]);
    assert!(u.is_empty(), "{u:?}");
    assert_eq!(c.consumers(0)[0].value_field.as_deref(), Some("target"));
    let t0 = 5_000 * MIN;
    let hits = vec![
        hit(0, t0, "ip1", Some("u1"), "e1"),
        hit(0, t0 + MIN, "ip1", Some("u1"), "e2"),
        hit(0, t0 + 2 * MIN, "ip1", Some("u2"), "e3"),
        hit(0, t0 + 3 * MIN, "ip1", None, "e4"),
    ];
    assert!(run(&mut c, &hits).is_empty(), "2 distinct is not > 2");
    let alerts = run(&mut c, &[hit(0, t0 + 4 * MIN, "ip1", Some("u3"), "e5")]);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].evidence.distinct_count, Some(3));
    assert_eq!(alerts[0].sigma.as_ref().unwrap().kind, "value_count");
}

fn temporal(kind: &str) -> Correlations {
    let (c, u) = load(
        &corr(kind, &["a", "b_name"], "", ""),
        &[det("a", &[]), det("b", &["attack.t1562.008"])],
    );
    assert!(u.is_empty(), "{u:?}");
    c
}

#[test]
fn temporal_needs_every_rule_in_any_order() {
    let mut c = temporal("temporal");
    let t0 = 9_000 * MIN;
    assert!(run(
        &mut c,
        &[
            hit(1, t0, "u", None, "b1"),
            hit(1, t0 + MIN, "u", None, "b2")
        ]
    )
    .is_empty());
    let alerts = run(&mut c, &[hit(0, t0 + 2 * MIN, "u", None, "a1")]);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].window_start, t0 + MIN);
    assert_eq!(alerts[0].evidence.event_uids, ["b2", "a1"]);
    assert_eq!(alerts[0].attack_techniques[0].uid, "T1562.008");
    // Too far apart.
    let mut c = temporal("temporal");
    assert!(run(
        &mut c,
        &[
            hit(1, t0, "u", None, "b"),
            hit(0, t0 + 11 * MIN, "u", None, "a")
        ]
    )
    .is_empty());
}

#[test]
fn temporal_ordered_needs_the_order() {
    let t0 = 9_000 * MIN;
    let mut c = temporal("temporal_ordered");
    assert!(run(
        &mut c,
        &[hit(1, t0, "u", None, "b"), hit(0, t0 + MIN, "u", None, "a")]
    )
    .is_empty());
    let alerts = run(&mut c, &[hit(1, t0 + 2 * MIN, "u", None, "b2")]);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].window_start, t0 + MIN);
    assert_eq!(alerts[0].sigma.as_ref().unwrap().kind, "temporal_ordered");
    // Then a second sequence is needed: another b alone does not fire.
    assert!(run(&mut c, &[hit(1, t0 + 3 * MIN, "u", None, "b3")]).is_empty());
    // In order but beyond the timespan.
    let mut c = temporal("temporal_ordered");
    assert!(run(
        &mut c,
        &[
            hit(0, t0, "u", None, "a"),
            hit(1, t0 + 11 * MIN, "u", None, "b")
        ]
    )
    .is_empty());
}

#[test]
fn aliases_resolve_per_rule() {
    let yaml = corr(
        "temporal",
        &["a", "b"],
        "",
        "    aliases:\n        user:\n            a: userIdentity.arn\n            b_name: principal\n",
    );
    let (c, u) = load(&yaml, &[det("a", &[]), det("b", &[])]);
    assert!(u.is_empty(), "{u:?}");
    assert_eq!(c.consumers(0)[0].group_by, ["userIdentity.arn"]);
    assert_eq!(c.consumers(1)[0].group_by, ["principal"]);
    assert!(c.consumers(2).is_empty());
}

#[test]
fn unsupported_rules_say_why() {
    let dets = [det("a", &[])];
    let cases = [
        (
            corr(
                "value_sum",
                &["a"],
                "    condition:\n        gt: 3\n        field: n\n",
                "",
            ),
            "value_sum",
        ),
        (
            corr(
                "event_count",
                &["nope"],
                "    condition:\n        gt: 3\n",
                "",
            ),
            "\"nope\"",
        ),
        (
            corr("temporal", &["a"], "    condition: a and a\n", ""),
            "boolean",
        ),
        (
            corr(
                "value_count",
                &["a"],
                "    condition:\n        gt: 3\n        field:\n            - x\n            - y\n",
                "",
            ),
            "several fields",
        ),
    ];
    for (yaml, reason) in cases {
        let coll = rsigma_parser::parse_sigma_yaml(&yaml).expect("parses");
        assert_eq!(coll.correlations.len(), 1, "{yaml}: {:?}", coll.errors);
        let (c, u) = Correlations::new(&coll.correlations, &dets, &CorrelationSettings::default());
        assert!(c.is_empty());
        assert_eq!(u.len(), 1);
        assert!(u[0].reason.contains(reason), "{}: {}", reason, u[0].reason);
        assert_eq!(u[0].id, "corr-1");
    }
}

#[test]
fn checkpoint_restore_gives_the_same_later_alerts() {
    let hits = hits_every_minute(6, "alice");
    let mut whole = count_rule("    condition:\n        gte: 5\n");
    let expected = run(&mut whole, &hits);
    assert_eq!(expected.len(), 1);

    let mut first = count_rule("    condition:\n        gte: 5\n");
    first.track_changes();
    assert!(run(&mut first, &hits[..3]).is_empty());
    let mut entries = Vec::new();
    first.checkpoint(&mut entries);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].detector, STATE_INDEX);
    let mut second = count_rule("    condition:\n        gte: 5\n");
    for e in &entries {
        second
            .restore(e.table, e.key, e.value.as_deref().unwrap())
            .unwrap();
    }
    assert_eq!(run(&mut second, &hits[3..]), expected);
    assert!(second.restore(1, 0, &[]).is_err());
}

#[test]
fn watermark_expires_idle_groups() {
    let mut c = count_rule("    condition:\n        gte: 5\n");
    run(&mut c, &hits_every_minute(2, "alice"));
    assert_eq!(c.stats().keys, 1);
    c.on_watermark(1_000_000 * MIN + 30 * MIN, &mut Vec::new());
    assert_eq!(c.stats().keys, 0);
}
