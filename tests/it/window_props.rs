//! Property tests for the window primitives (`src/window/`): each primitive is driven with random
//! event times (out of order where the primitive allows it) and compared with a reference model
//! simple enough to be obviously right — a plain list of what was observed — or checked against
//! the invariant its docs promise.

use cloudwarden::window::{
    BaselineSpec, BoundedMap, FirstSeen, Heartbeat, Novelty, PaneSpec, RateBaseline, SilenceSpec,
    SlidingCount, SlidingDistinct, Watermark,
};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

/// Pane geometries small enough that random times collide in panes and leave windows often.
fn pane_spec() -> impl Strategy<Value = PaneSpec> {
    (1i64..=1_000, 1u32..=8).prop_map(|(pane_ms, panes)| PaneSpec { pane_ms, panes })
}

/// Event times that mostly move forward but jump back by up to ~1.5 windows, so some arrive
/// out of order inside the window and some fall before it. Includes negative times.
fn times(spec: PaneSpec, n: usize) -> impl Strategy<Value = Vec<i64>> {
    let w = spec.window_ms();
    (
        -10 * w..10 * w,
        prop::collection::vec(-(w + w / 2)..(w / 2 + 2), 1..n),
    )
        .prop_map(|(start, steps)| {
            let mut t = start;
            steps
                .into_iter()
                .map(|d| {
                    t += d;
                    t
                })
                .collect()
        })
}

// ---------------------------------------------------------------- SlidingCount

proptest! {
    #[test]
    fn sliding_count_matches_reference(
        (spec, events, probes) in pane_spec().prop_flat_map(|spec| {
            let w = spec.window_ms();
            (
                Just(spec),
                times(spec, 60).prop_flat_map(|ts| {
                    let n = ts.len();
                    (Just(ts), prop::collection::vec(0u32..100, n))
                }),
                prop::collection::vec(-2 * w..3 * w, 1..8),
            )
        })
    ) {
        let (ts, weights) = events;
        let mut sc = SlidingCount::new();
        // Reference: the accepted (time, weight) events.
        let mut accepted: Vec<(i64, u32)> = Vec::new();
        for (&t, &n) in ts.iter().zip(&weights) {
            let newest_pane = accepted.iter().map(|&(s, _)| spec.pane_start(s)).max();
            let expect_accept =
                newest_pane.is_none_or(|np| spec.pane_start(t) >= spec.oldest_live_pane(np));
            let got = sc.add(&spec, t, n);
            prop_assert_eq!(got, expect_accept, "add({}) accepted?", t);
            if got {
                accepted.push((t, n));
            }
            prop_assert!(sc.pane_count() <= spec.panes as usize,
                "pane_count {} > panes {}", sc.pane_count(), spec.panes);

            // The window ending at any time around the newest event. Panes are expired against
            // the newest pane only, so what is gone is exactly what fell before its window.
            let max_t = accepted.iter().map(|&(s, _)| s).max().unwrap_or(t);
            let expired_before = spec.oldest_live_pane(spec.pane_start(max_t));
            for &d in &probes {
                let now = max_t + d;
                let lo = spec.oldest_live_pane(now).max(expired_before);
                let hi = spec.pane_start(now);
                let expected: u64 = accepted
                    .iter()
                    .filter(|&&(s, _)| (lo..=hi).contains(&spec.pane_start(s)))
                    .map(|&(_, n)| u64::from(n))
                    .sum();
                prop_assert_eq!(sc.total(&spec, now), expected, "total at {}", now);
            }
        }
        // The window's start is the oldest pane held, and it is live for the newest event.
        if let (Some(ws), Some(max_t)) = (sc.window_start(), accepted.iter().map(|e| e.0).max()) {
            prop_assert!(ws >= spec.oldest_live_pane(max_t));
            prop_assert_eq!(ws % spec.pane_ms, 0);
        }
    }

    /// Memory is bounded by the pane count whatever the rate: a burst of events, all distinct
    /// panes, never holds more than `panes` entries, and `expire` far ahead empties it.
    #[test]
    fn sliding_count_memory_bounded(spec in pane_spec(), n in 1usize..500, step in 1i64..50) {
        let mut sc = SlidingCount::new();
        for i in 0..n as i64 {
            prop_assert!(sc.add(&spec, i * step, 1));
            prop_assert!(sc.pane_count() <= spec.panes as usize);
        }
        sc.expire(&spec, n as i64 * step + spec.window_ms() + spec.pane_ms);
        prop_assert!(sc.is_empty());
        prop_assert_eq!(sc.total(&spec, n as i64 * step), 0);
    }
}

// ---------------------------------------------------------------- SlidingDistinct

proptest! {
    /// With a cap above the number of items, the distinct count is exact.
    #[test]
    fn sliding_distinct_exact_under_cap(
        (spec, ts, items, probes) in pane_spec().prop_flat_map(|spec| {
            let w = spec.window_ms();
            times(spec, 60).prop_flat_map(move |ts| {
                let n = ts.len();
                (
                    Just(spec),
                    Just(ts),
                    prop::collection::vec(0u64..12, n),
                    prop::collection::vec(0..3 * w, 1..5),
                )
            })
        })
    ) {
        let cap = 64; // > 12 possible items
        let mut sd = SlidingDistinct::new();
        // Reference: accepted (pane, item) observations.
        let mut accepted: Vec<(i64, u64)> = Vec::new();
        for (&t, &item) in ts.iter().zip(&items) {
            let pane = spec.pane_start(t);
            let newest = accepted.iter().map(|&(p, _)| p).max().unwrap_or(pane).max(pane);
            let oldest = spec.oldest_live_pane(newest);
            let in_window = pane >= oldest;
            let seen_in_window = accepted.iter().any(|&(p, i)| i == item && p >= oldest);
            let got = sd.add(&spec, t, item, cap);
            prop_assert_eq!(got, in_window && !seen_in_window, "add({}, {}) new?", t, item);
            if in_window {
                accepted.push((pane, item));
            }
            prop_assert!(sd.len() <= cap);

            let max_pane = accepted.iter().map(|&(p, _)| p).max().unwrap_or(pane);
            for &d in &probes {
                let now = max_pane + d;
                let (lo, hi) = (spec.oldest_live_pane(now), spec.pane_start(now));
                let expected: BTreeSet<u64> = accepted
                    .iter()
                    .filter(|&&(p, _)| (lo..=hi).contains(&p))
                    .map(|&(_, i)| i)
                    .collect();
                prop_assert_eq!(sd.distinct(&spec, now), expected.len() as u32, "at {}", now);
            }
        }
    }

    /// With a small cap the count never exceeds the cap (nor the true distinct count), and with
    /// in-order times it stays exactly at `min(cap, true count)`: a key that keeps touching new
    /// items keeps reading "at the cap".
    #[test]
    fn sliding_distinct_capped(
        spec in pane_spec(),
        cap in 1usize..5,
        steps in prop::collection::vec((0i64..400, 0u64..20), 1..80),
        in_order in any::<bool>(),
    ) {
        let mut sd = SlidingDistinct::new();
        let mut accepted: Vec<(i64, u64)> = Vec::new();
        let mut t = 0i64;
        for (i, &(d, item)) in steps.iter().enumerate() {
            // Out of order: every third event jumps back.
            t = if !in_order && i % 3 == 2 { t - d } else { t + d };
            let pane = spec.pane_start(t);
            let newest = accepted.iter().map(|&(p, _)| p).max().unwrap_or(pane).max(pane);
            if pane >= spec.oldest_live_pane(newest) {
                accepted.push((pane, item));
            }
            sd.add(&spec, t, item, cap);
            prop_assert!(sd.len() <= cap, "len {} > cap {}", sd.len(), cap);

            let now = accepted.iter().map(|&(p, _)| p).max().unwrap_or(pane);
            let (lo, hi) = (spec.oldest_live_pane(now), spec.pane_start(now));
            let truth: BTreeSet<u64> = accepted
                .iter()
                .filter(|&&(p, _)| (lo..=hi).contains(&p))
                .map(|&(_, i)| i)
                .collect();
            let got = sd.distinct(&spec, now) as usize;
            prop_assert!(got <= cap);
            prop_assert!(got <= truth.len(), "distinct {} > true {}", got, truth.len());
            if in_order {
                prop_assert_eq!(got, truth.len().min(cap));
            }
        }
    }
}

// ---------------------------------------------------------------- FirstSeen

proptest! {
    #[test]
    fn first_seen_matches_reference(
        t0 in -1_000i64..1_000,
        warmup_ms in 0i64..2_000,
        max_items in 0usize..8,
        obs in prop::collection::vec((-500i64..5_000, 0u64..12), 1..60),
    ) {
        let mut fs = FirstSeen::new(t0);
        let mut learned: BTreeSet<u64> = BTreeSet::new();
        let mut first_activity = t0;
        for &(t, item) in &obs {
            first_activity = first_activity.min(t);
            let expected = if learned.contains(&item) {
                Novelty::Known
            } else if learned.len() >= max_items {
                Novelty::Full
            } else {
                learned.insert(item);
                if t < first_activity + warmup_ms { Novelty::WarmingUp } else { Novelty::New }
            };
            let got = fs.observe(t, item, warmup_ms, max_items);
            prop_assert_eq!(got, expected, "observe({}, {})", t, item);
            if got == Novelty::New {
                prop_assert!(t >= fs.first_activity() + warmup_ms, "New during warm-up");
            }
            if got == Novelty::Full {
                prop_assert_eq!(fs.len(), max_items, "Full below the cap");
            }
            prop_assert!(fs.len() <= max_items);
            prop_assert_eq!(fs.first_activity(), first_activity);
            prop_assert_eq!(fs.contains(item), learned.contains(&item));
            // Observed again right away: known, unless it could not be learned.
            if got != Novelty::Full {
                prop_assert_eq!(fs.clone().observe(t, item, warmup_ms, max_items), Novelty::Known);
            }
        }
    }
}

// ---------------------------------------------------------------- RateBaseline

fn baseline_spec() -> impl Strategy<Value = BaselineSpec> {
    (
        1i64..10_000,
        0.01f64..=1.0,
        0u32..20,
        0.0f64..5.0,
        0.0f64..50.0,
    )
        .prop_map(
            |(bucket_ms, alpha, warmup_buckets, k_sigma, min_count)| BaselineSpec {
                bucket_ms,
                alpha,
                warmup_buckets,
                k_sigma,
                min_count,
            },
        )
}

/// Both ways of making an empty baseline: `new()` and `Default` (what
/// `BoundedMap::get_or_insert_with(key, t, Default::default)` would use).
fn fresh_baseline(use_default: bool) -> RateBaseline {
    if use_default {
        RateBaseline::default()
    } else {
        RateBaseline::new()
    }
}

proptest! {
    #[test]
    fn baseline_constant_rate_converges(
        spec in baseline_spec(),
        c in 0u32..1_000,
        buckets in 1i64..200,
        start_bucket in -1_000_000i64..1_000_000_000,
        use_default in any::<bool>(),
    ) {
        let mut b = fresh_baseline(use_default);
        for i in 0..buckets {
            let bucket = (start_bucket + i) * spec.bucket_ms;
            // Split c over two events inside the bucket.
            b.observe(&spec, bucket, c / 2);
            b.observe(&spec, bucket + spec.bucket_ms - 1, c - c / 2);
        }
        b.roll(&spec, (start_bucket + buckets) * spec.bucket_ms);
        prop_assert_eq!(b.buckets_seen(), buckets as u32);
        prop_assert!((b.mean() - f64::from(c)).abs() < 1e-3, "mean {} != {}", b.mean(), c);
        prop_assert!(b.stddev() < 1e-3, "stddev {}", b.stddev());
    }

    /// Empty buckets are zeros: after a steady rate c > 0, a gap lowers the mean.
    #[test]
    fn baseline_empty_buckets_lower_mean(
        spec in baseline_spec(),
        c in 1u32..1_000,
        buckets in 1i64..50,
        gap in 1i64..2_000,
        use_default in any::<bool>(),
    ) {
        let mut b = fresh_baseline(use_default);
        for i in 0..buckets {
            b.observe(&spec, 1_000_000 * spec.bucket_ms + i * spec.bucket_ms, c);
        }
        b.roll(&spec, (1_000_000 + buckets) * spec.bucket_ms);
        let before = b.mean();
        b.observe(&spec, (1_000_000 + buckets + gap) * spec.bucket_ms, c);
        prop_assert!(b.mean() < before || spec.alpha == 0.0, "mean {} !< {}", b.mean(), before);
        prop_assert!(b.mean() >= 0.0);
    }

    /// Warm exactly when `warmup_buckets` buckets (empty ones included) have closed; a warm
    /// threshold is never below `min_count`; mean and σ stay within the observed counts.
    #[test]
    fn baseline_warmup_and_threshold(
        spec in baseline_spec(),
        start in -1_000_000_000i64..1_000_000_000_000,
        steps in prop::collection::vec(
            (prop_oneof![9 => 0i64..4, 1 => 400i64..700], 0u32..200),
            1..80,
        ),
        use_default in any::<bool>(),
    ) {
        let mut b = fresh_baseline(use_default);
        // Reference: closed-bucket count with the documented fold cap of 512 empty buckets.
        let mut first: Option<i64> = None;
        let mut cur = 0i64;
        let mut closed = 0u32;
        let mut max_count = 0u32;
        let mut open = 0u32;
        let mut t = start;
        for &(buckets_ahead, n) in &steps {
            t += buckets_ahead * spec.bucket_ms;
            let bucket = t.div_euclid(spec.bucket_ms);
            match first {
                None => { first = Some(bucket); cur = bucket; }
                Some(_) if bucket > cur => {
                    max_count = max_count.max(open);
                    open = 0;
                    closed += 1 + (bucket - cur - 1).min(512) as u32;
                    cur = bucket;
                }
                Some(_) => {}
            }
            open = open.saturating_add(n);
            b.observe(&spec, t, n);
            prop_assert_eq!(b.buckets_seen(), closed);
            prop_assert_eq!(b.is_warm(&spec), closed >= spec.warmup_buckets);
            match b.threshold(&spec) {
                None => prop_assert!(closed < spec.warmup_buckets),
                Some(th) => prop_assert!(th >= spec.min_count, "threshold {} < min {}", th, spec.min_count),
            }
            prop_assert!(b.mean() >= -1e-6);
            prop_assert!(b.mean() <= f64::from(max_count) * (1.0 + 1e-6) + 1e-6);
            prop_assert!(b.stddev() >= 0.0);
        }
    }
}

// ---------------------------------------------------------------- Heartbeat

#[derive(Debug, Clone)]
enum HbOp {
    /// A beat `d` ms after (or, if negative, before) the last beat.
    Beat(i64),
    /// A silence check with the watermark `d` ms after the last beat.
    Check(i64),
    /// A silence check with the watermark `d` ms after the current silence threshold.
    CheckAtThreshold(i64),
}

fn hb_ops() -> impl Strategy<Value = Vec<HbOp>> {
    prop::collection::vec(
        prop_oneof![
            3 => (-200i64..3_000).prop_map(HbOp::Beat),
            2 => (-200i64..20_000).prop_map(HbOp::Check),
            1 => (-1i64..=1).prop_map(HbOp::CheckAtThreshold),
        ],
        1..80,
    )
}

proptest! {
    #[test]
    fn heartbeat_silence_episodes(
        t0 in -1_000_000i64..1_000_000,
        k in 1.0f64..5.0,
        floor_ms in 0i64..5_000,
        resolution_ms in 0i64..500,
        alpha in 0.01f64..=1.0,
        min_events in 0u32..6,
        ops in hb_ops(),
    ) {
        let spec = SilenceSpec { k, floor_ms, resolution_ms, alpha, min_events };
        let mut hb = Heartbeat::new(t0);
        let mut events = 1u32;
        // Model: is an episode open (reported and not yet resumed)?
        let mut open_episode = false;
        // The learned gap when the open episode was reported.
        let mut gap_at_silence = 0i64;
        for op in &ops {
            match *op {
                HbOp::Beat(d) => {
                    let last = hb.last_seen();
                    let t = last + d;
                    events += 1;
                    let r = hb.beat(&spec, t);
                    if open_episode && t > last {
                        let r = r.expect("the first newer beat after a silence resumes");
                        prop_assert_eq!(r.last_seen, last);
                        prop_assert_eq!(r.resumed_at, t);
                        prop_assert_eq!(hb.learned_gap_ms(), gap_at_silence,
                            "the silent gap was learned");
                        open_episode = false;
                    } else {
                        prop_assert!(r.is_none(), "Resumed without an open episode: {:?}", r);
                    }
                    prop_assert_eq!(hb.last_seen(), last.max(t));
                    prop_assert_eq!(hb.events(), events);
                    prop_assert!(hb.first_seen() <= hb.last_seen());
                }
                HbOp::Check(_) | HbOp::CheckAtThreshold(_) => {
                    let wm = match *op {
                        HbOp::CheckAtThreshold(d) => hb.last_seen() + hb.threshold_ms(&spec) + d,
                        HbOp::Check(d) | HbOp::Beat(d) => hb.last_seen() + d,
                    };
                    let threshold = hb.threshold_ms(&spec);
                    let s = hb.check(&spec, wm);
                    if let Some(s) = s {
                        prop_assert!(!open_episode, "second report in one episode");
                        prop_assert!(hb.events() >= min_events, "reported before min_events");
                        prop_assert!(wm - hb.last_seen() > threshold,
                            "reported with gap {} <= threshold {}", wm - hb.last_seen(), threshold);
                        prop_assert_eq!(s.threshold_ms, threshold);
                        prop_assert_eq!(s.last_seen, hb.last_seen());
                        prop_assert_eq!(s.learned_gap_ms, hb.learned_gap_ms());
                        prop_assert!(threshold >= floor_ms);
                        open_episode = true;
                        gap_at_silence = hb.learned_gap_ms();
                    } else {
                        prop_assert!(
                            open_episode || events < min_events || wm - hb.last_seen() <= threshold,
                            "silence missed: gap {} > threshold {}", wm - hb.last_seen(), threshold
                        );
                    }
                    prop_assert_eq!(hb.is_silent(), open_episode);
                }
            }
            prop_assert!(hb.learned_gap_ms() >= 0);
        }
    }
}

// ---------------------------------------------------------------- BoundedMap

proptest! {
    /// Against a reference LRU (a Vec, most recent first): same keys in the same order, same
    /// last-active times, same eviction count; the most recently touched key is always there.
    #[test]
    fn bounded_map_is_an_lru(
        cap in 1usize..8,
        ops in prop::collection::vec((0u8..16, 0i64..100, any::<bool>()), 1..120),
        monotone in any::<bool>(),
    ) {
        let mut m: BoundedMap<u8, u32> = BoundedMap::new(cap);
        let mut model: Vec<(u8, i64, u32)> = Vec::new();
        let mut evicted = 0u64;
        let mut t = 0i64;
        for &(key, d, peek_only) in &ops {
            t = if monotone { t + d } else { d };
            if peek_only {
                // A peek changes nothing.
                let expected = model.iter().find(|e| e.0 == key).map(|e| e.2);
                prop_assert_eq!(m.peek(&key).copied(), expected);
            } else {
                if let Some(i) = model.iter().position(|e| e.0 == key) {
                    let mut e = model.remove(i);
                    e.1 = e.1.max(t);
                    e.2 += 1;
                    model.insert(0, e);
                } else {
                    if model.len() == cap {
                        model.pop();
                        evicted += 1;
                    }
                    model.insert(0, (key, t, 1));
                }
                let v = m.get_or_insert_with(key, t, || 0);
                *v += 1;
                prop_assert!(m.peek(&key).is_some(), "the key just touched was evicted");
            }
            prop_assert!(m.len() <= cap);
            prop_assert_eq!(m.len(), model.len());
            prop_assert_eq!(m.evicted(), evicted);
            let got: Vec<(u8, i64, u32)> = m.iter_mut().map(|(k, t, v)| (*k, t, *v)).collect();
            prop_assert_eq!(got, model.clone());
        }
    }

    /// Distinct keys: exactly the inserts beyond capacity are evicted.
    #[test]
    fn bounded_map_evicts_overflow(cap in 1usize..50, n in 0usize..200) {
        let mut m: BoundedMap<usize, ()> = BoundedMap::new(cap);
        for i in 0..n {
            m.get_or_insert_with(i, i as i64, || ());
        }
        prop_assert_eq!(m.len(), n.min(cap));
        prop_assert_eq!(m.evicted(), n.saturating_sub(cap) as u64);
        prop_assert_eq!(m.capacity(), cap);
        // The survivors are the newest `cap` keys.
        for i in 0..n {
            prop_assert_eq!(m.peek(&i).is_some(), i + cap >= n);
        }
    }

    /// With event times that never go back, `sweep_idle(before)` removes exactly the entries last
    /// active before `before`, and counts them as evicted.
    #[test]
    fn bounded_map_sweep_idle(
        cap in 1usize..10,
        ops in prop::collection::vec((0u8..16, 0i64..30), 1..60),
        cut_at in any::<prop::sample::Index>(),
        cut_delta in -1i64..=1,
    ) {
        let mut m: BoundedMap<u8, ()> = BoundedMap::new(cap);
        let mut t = 0;
        for &(key, d) in &ops {
            t += d;
            m.get_or_insert_with(key, t, || ());
        }
        let before: BTreeMap<u8, i64> = m.iter_mut().map(|(k, t, _)| (*k, t)).collect();
        // Cut at (or right next to) one entry's last-active time, to test the boundary.
        let times: Vec<i64> = before.values().copied().collect();
        let cut = times[cut_at.index(times.len())] + cut_delta;
        let evicted_before = m.evicted();
        let expected_removed = before.values().filter(|&&t| t < cut).count();
        let removed = m.sweep_idle(cut);
        prop_assert_eq!(removed, expected_removed);
        prop_assert_eq!(m.evicted(), evicted_before + removed as u64);
        for (k, t) in &before {
            prop_assert_eq!(m.peek(k).is_some(), *t >= cut, "key {} active at {}", k, t);
        }
    }
}

// ---------------------------------------------------------------- Watermark

#[derive(Debug, Clone)]
enum WmOp {
    Observe(i64),
    AdvanceTo(i64),
}

proptest! {
    #[test]
    fn watermark_monotone_and_late(
        lateness in 0i64..10_000,
        ops in prop::collection::vec(
            prop_oneof![
                5 => (-50_000i64..50_000).prop_map(WmOp::Observe),
                1 => (-50_000i64..50_000).prop_map(WmOp::AdvanceTo),
                1 => prop_oneof![Just(i64::MIN), Just(i64::MAX)].prop_map(WmOp::Observe),
            ],
            1..100,
        ),
    ) {
        let mut w = Watermark::new(lateness);
        let mut max_t: Option<i64> = None;
        let mut floor = i64::MIN;
        prop_assert_eq!(w.current(), i64::MIN);
        for op in &ops {
            let prev = w.current();
            match *op {
                WmOp::Observe(t) => {
                    let late = w.observe(t);
                    prop_assert_eq!(late, t < prev, "observe({}) with watermark {}", t, prev);
                    max_t = Some(max_t.map_or(t, |m| m.max(t)));
                }
                WmOp::AdvanceTo(t) => {
                    w.advance_to(t);
                    floor = floor.max(t);
                }
            }
            prop_assert!(w.current() >= prev, "watermark went back: {} -> {}", prev, w.current());
            let expected = max_t.map_or(i64::MIN, |m| m.saturating_sub(lateness)).max(floor);
            prop_assert_eq!(w.current(), expected);
            prop_assert_eq!(w.max_event_time(), max_t);
        }
    }
}
