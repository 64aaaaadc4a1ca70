//! Sigma correlation rules (event_count, value_count, temporal, temporal_ordered) over the
//! detection-rule matches ([`Hit`]s) stage 1 forwards: a pure, clock-free state machine in event
//! time, like the detectors in `crate::detect`.
//!
//! - Rules are parsed by rsigma-parser; [`Correlations::new`] compiles the ones that run and
//!   explains each one that does not ([`Unsupported`]: value_sum/avg/percentile/median, tumbling
//!   or session windows, an unknown referenced rule (so correlations of correlations), boolean
//!   conditions, value_count over several fields).
//! - [`Correlations::consumers`] tells stage 1, per detection rule, which correlations consume
//!   its matches and which fields (group-by, value_count field; aliases resolved per rule) to
//!   put in each [`Hit`].
//! - State: one [`BoundedMap`] keyed by `stable_hash(correlation id, group-by values…)`, bound
//!   [`CorrelationSettings::max_keys`]. Counts use the window primitives ([`SlidingCount`],
//!   [`SlidingDistinct`] over [`PaneSpec`] panes of `timespan / panes`), so a sliding window is
//!   exact to one pane; temporal rules keep one exact time per referenced rule.
//! - Semantics (Sigma Correlation Rules spec; rsigma-eval read for comparison): the threshold is
//!   checked on each hit, against the window `(t − timespan, t]` (event_count: hits;
//!   value_count: distinct non-empty values of the field); temporal: every referenced rule hit
//!   within the timespan, any order; temporal_ordered: in the order of `rules:` (equal times
//!   count as ordered). A threshold condition on a temporal rule is ignored (all rules needed).
//! - One alert per episode: a group fires once, then re-arms when its condition stops holding
//!   on a later hit, or its window empties (event_count/value_count); a temporal group starts a
//!   new sequence after firing. The alert id hashes (correlation id, group values, window
//!   start), so replay, live, after a crash and on any number of instances give the same id.
//! - Late hits (`hit.late`) are skipped and counted. Hits must arrive in event-time order
//!   (stage 2's reorder buffer gives that).
//! - Persisted as detector index [`STATE_INDEX`] (240), table 0: below the pseudo indices
//!   `state::SUPPRESSION` (250) and `state::META` (251), far above the registry's append-only
//!   detector indices (a [`crate::detect::DetectorSet`] holds at most 16).

mod compile;

pub use compile::Kind;

use crate::alert::{Alert, AlertDraft, AlertStatus, Evidence};
use crate::detect::{DetectorStats, Table};
use crate::sigma::hit::Hit;
use crate::sigma::meta::RuleRef;
use crate::state::{Entry, StateError};
use crate::window::{stable_hash, BoundedMap, PaneSpec, SlidingCount, SlidingDistinct};
use compile::Compiled;
use serde::{Deserialize, Serialize};

/// The pseudo-detector index of correlation state in checkpoints (changelog, snapshot file).
pub const STATE_INDEX: u8 = 240;

/// A loaded detection rule, by its index (the [`Hit::detection`] index).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DetectionRef {
    pub id: Option<String>,
    pub name: Option<String>,
    pub title: String,
    /// Its tags: a correlation without ATT&CK tags takes the union of its rules' techniques.
    pub tags: Vec<String>,
}

/// A correlation rule that does not run, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    /// Its `id`, else `name`, else title.
    pub id: String,
    pub title: String,
    pub reason: String,
}

/// A correlation that consumes a detection rule's matches: what stage 1 puts in the [`Hit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    /// Index of the correlation ([`Hit::correlation`]).
    pub correlation: u16,
    /// The Sigma field names of the group-by values, aliases resolved for this detection rule.
    pub group_by: Vec<String>,
    /// The value_count field, resolved for this detection rule.
    pub value_field: Option<String>,
}

/// Correlation tunables: the `[sigma.correlation]` config table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorrelationSettings {
    /// Groups held over all correlations; the least recently active is evicted beyond it.
    /// Default 100 000.
    pub max_keys: usize,
    /// Panes per timespan for event_count and value_count windows (window edges are exact to
    /// `timespan / panes`). Default 60 (a 1 h timespan counts in 1 min panes).
    pub panes: u32,
    /// Distinct values held per value_count group (at least the threshold is held). Default
    /// 1000.
    pub max_distinct: usize,
    /// Event ids kept per group as the alert's evidence. Default 10.
    pub max_evidence: usize,
}

impl Default for CorrelationSettings {
    fn default() -> Self {
        CorrelationSettings {
            max_keys: 100_000,
            panes: 60,
            max_distinct: 1000,
            max_evidence: 10,
        }
    }
}

/// Keys held and evicted, and late hits skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CorrelationStats {
    pub keys: usize,
    pub evicted: u64,
    pub late: u64,
}

/// One group's state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GroupState {
    /// `stable_hash(correlation id)`: a group of another (or changed) rule starts fresh.
    rule: u64,
    count: SlidingCount,
    distinct: SlidingDistinct,
    /// Temporal: per `rules:` position, the last hit; ordered: the latest start of a sequence
    /// that reached this position. `i64::MIN`: none.
    marks: Vec<i64>,
    /// Fired in this episode.
    fired: bool,
    newest: i64,
    /// The newest hits' (time, event id), oldest first, at most `max_evidence`.
    events: Vec<(i64, String)>,
}

/// A runnable correlation with its window geometry.
struct Rule {
    c: Compiled,
    pane: PaneSpec,
    distinct_cap: usize,
}

/// The loaded correlation rules and their state.
pub struct Correlations {
    rules: Vec<Rule>,
    consumers: Vec<Vec<Consumer>>,
    groups: BoundedMap<u64, GroupState>,
    settings: CorrelationSettings,
    late: u64,
}

impl Correlations {
    /// Compiles `rules` against the loaded detection rules (by index). Each rule that cannot
    /// run is returned with its reason; the rest keep their order (the [`Hit::correlation`]
    /// index is the position among the ones that run).
    pub fn new(
        rules: &[rsigma_parser::CorrelationRule],
        detections: &[DetectionRef],
        cfg: &CorrelationSettings,
    ) -> (Correlations, Vec<Unsupported>) {
        let mut compiled = Vec::new();
        let mut consumers: Vec<Vec<Consumer>> = vec![Vec::new(); detections.len()];
        let mut unsupported = Vec::new();
        for rule in rules {
            let Ok(index) = u16::try_from(compiled.len()) else {
                unsupported.push(Unsupported {
                    id: rule.id.clone().unwrap_or_else(|| rule.title.clone()),
                    title: rule.title.clone(),
                    reason: "more than 65 535 correlation rules".into(),
                });
                continue;
            };
            match compile::compile(rule, index, detections) {
                Ok((c, cons)) => {
                    for (d, consumer) in cons {
                        consumers[d].push(consumer);
                    }
                    let pane_ms = (c.timespan_ms / i64::from(cfg.panes.max(1))).max(1);
                    let pane = PaneSpec::new(c.timespan_ms, pane_ms);
                    let needed = c.predicates.iter().map(|&(_, n)| n).max().unwrap_or(1);
                    let distinct_cap = usize::try_from(needed.saturating_add(1))
                        .unwrap_or(usize::MAX)
                        .max(cfg.max_distinct.max(1));
                    compiled.push(Rule {
                        c,
                        pane,
                        distinct_cap,
                    });
                }
                Err(u) => unsupported.push(u),
            }
        }
        (
            Correlations {
                rules: compiled,
                consumers,
                groups: BoundedMap::new(cfg.max_keys),
                settings: cfg.clone(),
                late: 0,
            },
            unsupported,
        )
    }

    /// The correlations that consume detection rule `detection`'s matches.
    pub fn consumers(&self, detection: usize) -> &[Consumer] {
        self.consumers.get(detection).map_or(&[], Vec::as_slice)
    }

    /// Correlations that run.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The id (else name, else title) of correlation `index`.
    pub fn rule_id(&self, index: u16) -> Option<&str> {
        self.rules.get(usize::from(index)).map(|r| r.c.id.as_str())
    }

    /// One detection-rule match, in event-time order.
    pub fn on_hit(&mut self, hit: &Hit<'_>, out: &mut Vec<Alert>) {
        if hit.late {
            self.late += 1;
            return;
        }
        let Some(rule) = self.rules.get(usize::from(hit.correlation)) else {
            return;
        };
        let positions: Vec<usize> = rule
            .c
            .refs
            .iter()
            .enumerate()
            .filter(|&(_, &d)| d == usize::from(hit.detection))
            .map(|(i, _)| i)
            .collect();
        if positions.is_empty() {
            return;
        }
        let c = &rule.c;
        let mut parts: Vec<&str> = Vec::with_capacity(hit.group.len() + 1);
        parts.push(&c.id);
        parts.extend(hit.group.iter().map(|g| g.as_ref()));
        let key = stable_hash(&parts);
        let t = hit.time;
        // Last active = when the group's window empties, so `sweep_idle(watermark)` expires it.
        let expires = t.saturating_add(c.timespan_ms);
        let st = self
            .groups
            .get_or_insert_with(key, expires, GroupState::default);
        if st.rule != c.rule_key
            || st.newest == i64::MIN
            || t.saturating_sub(st.newest) > c.timespan_ms
        {
            // New group, or its window emptied: a fresh episode.
            *st = GroupState {
                rule: c.rule_key,
                marks: vec![i64::MIN; c.refs.len()],
                newest: i64::MIN,
                ..GroupState::default()
            };
        }
        st.newest = st.newest.max(t);
        let now = st.newest;
        st.events.push((t, hit.event_id.to_string()));
        if st.events.len() > self.settings.max_evidence.max(1) {
            st.events.remove(0);
        }
        let (tripped, window_start, count, distinct) = match c.kind {
            Kind::EventCount | Kind::ValueCount => {
                // `count` holds the hits counted (value_count: the ones with a value), so its
                // oldest pane is the window's start.
                if c.kind == Kind::EventCount {
                    st.count.add(&rule.pane, t, 1);
                } else if let Some(v) = hit.value.as_deref().filter(|v| !v.is_empty()) {
                    st.count.add(&rule.pane, t, 1);
                    st.distinct
                        .add(&rule.pane, t, stable_hash(&[v]), rule.distinct_cap);
                }
                st.count.expire(&rule.pane, now);
                st.distinct.expire(&rule.pane, now);
                let value = if c.kind == Kind::EventCount {
                    st.count.total(&rule.pane, now)
                } else {
                    u64::from(st.distinct.distinct(&rule.pane, now))
                };
                let start = st.count.window_start().unwrap_or(t);
                let start = start.max(rule.pane.oldest_live_pane(now));
                let holds = c.holds(value);
                (
                    holds,
                    start,
                    value,
                    (c.kind == Kind::ValueCount).then_some(value),
                )
            }
            Kind::Temporal => {
                for &p in &positions {
                    st.marks[p] = t;
                }
                let oldest = st.marks.iter().copied().min().unwrap_or(i64::MIN);
                let all = oldest != i64::MIN && now - oldest <= c.timespan_ms;
                (all, oldest, c.refs.len() as u64, None)
            }
            Kind::TemporalOrdered => {
                for &p in positions.iter().rev() {
                    if p == 0 {
                        st.marks[0] = t;
                    } else {
                        let prev = st.marks[p - 1];
                        if prev != i64::MIN && t - prev <= c.timespan_ms {
                            st.marks[p] = st.marks[p].max(prev);
                        }
                    }
                }
                let start = st.marks[c.refs.len() - 1];
                let done = start != i64::MIN && now - start <= c.timespan_ms;
                (done, start, c.refs.len() as u64, None)
            }
        };
        if !tripped {
            if matches!(c.kind, Kind::EventCount | Kind::ValueCount) {
                st.fired = false;
            }
            return;
        }
        if st.fired {
            return;
        }
        let temporal = matches!(c.kind, Kind::Temporal | Kind::TemporalOrdered);
        if temporal {
            // A new sequence is needed for the next alert.
            st.marks.iter_mut().for_each(|m| *m = i64::MIN);
        } else {
            st.fired = true;
        }
        let event_uids: Vec<String> = st
            .events
            .iter()
            .filter(|(et, _)| *et >= window_start)
            .map(|(_, id)| id.clone())
            .collect();
        let matched: Vec<(String, String)> = c
            .group_by
            .iter()
            .zip(hit.group.iter())
            .map(|(f, v)| (f.clone(), v.to_string()))
            .collect();
        out.push(correlation_alert(
            c,
            hit,
            &matched,
            window_start,
            now,
            count,
            distinct,
            event_uids,
        ));
    }

    /// Event time reached `t`: groups whose window emptied are dropped (they re-arm).
    pub fn on_watermark(&mut self, t: i64, _out: &mut Vec<Alert>) {
        self.groups.sweep_idle(t);
    }

    /// Starts recording changed groups (durable state on).
    pub fn track_changes(&mut self) {
        Table::track_changes(&mut self.groups);
    }

    /// The groups changed since the last call, as entries of [`STATE_INDEX`], table 0.
    pub fn checkpoint(&mut self, out: &mut Vec<Entry>) {
        let from = out.len();
        Table::checkpoint(&mut self.groups, 0, out);
        for e in &mut out[from..] {
            e.detector = STATE_INDEX;
        }
    }

    /// Puts one checkpointed group back.
    pub fn restore(&mut self, table: u8, key: u64, bytes: &[u8]) -> Result<(), StateError> {
        if table != 0 {
            return Err(StateError::UnknownTable);
        }
        Table::restore(&mut self.groups, key, bytes)
    }

    pub fn stats(&self) -> CorrelationStats {
        let DetectorStats { keys, evicted } = Table::stats(&self.groups);
        CorrelationStats {
            keys,
            evicted,
            late: self.late,
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn correlation_alert(
    c: &Compiled,
    hit: &Hit<'_>,
    matched: &[(String, String)],
    window_start: i64,
    now: i64,
    count: u64,
    distinct: Option<u64>,
    event_uids: Vec<String>,
) -> Alert {
    let group_text = if matched.is_empty() {
        String::new()
    } else {
        let g: Vec<String> = matched.iter().map(|(f, v)| format!("{f}={v}")).collect();
        format!(" by {}", g.join(", "))
    };
    let span =
        humantime::format_duration(std::time::Duration::from_millis(c.timespan_ms.max(0) as u64));
    let title = match c.kind {
        Kind::EventCount => format!(
            "{}: {count} events ({}) within {span}{group_text}",
            c.title,
            c.condition_text()
        ),
        Kind::ValueCount => format!(
            "{}: {count} distinct values ({}) within {span}{group_text}",
            c.title,
            c.condition_text()
        ),
        Kind::Temporal => format!("{}: all {count} rules within {span}{group_text}", c.title),
        Kind::TemporalOrdered => format!(
            "{}: {count} rules in order within {span}{group_text}",
            c.title
        ),
    };
    let values: Vec<&str> = matched.iter().map(|(_, v)| v.as_str()).collect();
    let dedup_key = format!("{}|{}", c.id, values.join("|"));
    let mut details = serde_json::Map::new();
    details.insert("correlation".into(), c.id.clone().into());
    details.insert("timespan_ms".into(), c.timespan_ms.into());
    let evidence = Evidence {
        count: (c.kind == Kind::EventCount).then_some(count),
        distinct_count: distinct,
        threshold: c.threshold().map(|n| n as f64),
        trigger: c.kind.as_str().to_owned(),
        event_uids,
        operations: vec![hit.operation.to_string()],
        details,
        ..Evidence::default()
    };
    let mut alert = Alert::new(AlertDraft {
        detector: "sigma_correlation",
        title,
        severity: c.severity,
        dry_run: false,
        status: AlertStatus::New,
        techniques: &c.techniques,
        time: now,
        window_start,
        window_end: now,
        provider: hit.provider.as_str(),
        scope: &hit.scope,
        region: &hit.region,
        principal: hit.principal.as_deref(),
        log_source: None,
        evidence,
        dedup_key,
        instance: window_start.to_string(),
    });
    alert.sigma = Some(RuleRef {
        id: c.id.clone(),
        title: c.title.clone(),
        level: c.level.clone(),
        kind: c.kind.as_str().to_owned(),
        author: c.author.clone(),
        matched: matched.to_vec(),
    });
    alert
}

#[cfg(test)]
mod tests;
