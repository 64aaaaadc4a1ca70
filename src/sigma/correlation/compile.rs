//! A parsed correlation rule → what [`super::Correlations`] runs, or the reason it cannot run.

use super::{Consumer, DetectionRef, Unsupported};
use rsigma_parser::{ConditionOperator, CorrelationCondition, CorrelationRule, CorrelationType};

/// The correlation types that run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Kind {
    EventCount,
    ValueCount,
    Temporal,
    TemporalOrdered,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::EventCount => "event_count",
            Kind::ValueCount => "value_count",
            Kind::Temporal => "temporal",
            Kind::TemporalOrdered => "temporal_ordered",
        }
    }
}

/// One runnable correlation.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// Its `id`, else `name`, else title: names its state and its alerts' ids.
    pub id: String,
    /// Stable hash of `id` (stored in each group's state).
    pub rule_key: u64,
    pub title: String,
    pub level: String,
    pub severity: crate::alert::Severity,
    pub author: Option<String>,
    pub techniques: Vec<String>,
    pub kind: Kind,
    /// The referenced detection rules, by detection index, in the rule's order.
    pub refs: Vec<usize>,
    /// `group-by` as written (alias names kept: the alert shows them).
    pub group_by: Vec<String>,
    pub timespan_ms: i64,
    /// Threshold predicates, all of which must hold (event_count, value_count).
    pub predicates: Vec<(ConditionOperator, u64)>,
}

impl Compiled {
    /// Whether `value` satisfies every predicate.
    pub fn holds(&self, value: u64) -> bool {
        self.predicates.iter().all(|&(op, n)| match op {
            ConditionOperator::Lt => value < n,
            ConditionOperator::Lte => value <= n,
            ConditionOperator::Gt => value > n,
            ConditionOperator::Gte => value >= n,
            ConditionOperator::Eq => value == n,
            ConditionOperator::Neq => value != n,
        })
    }

    /// The smallest value that satisfies the predicates' lower bounds (for the alert's
    /// threshold figure).
    pub fn threshold(&self) -> Option<u64> {
        self.predicates
            .iter()
            .filter_map(|&(op, n)| match op {
                ConditionOperator::Gt => Some(n + 1),
                ConditionOperator::Gte | ConditionOperator::Eq => Some(n),
                _ => None,
            })
            .max()
    }

    /// The condition as the spec writes it (`gt 10`, `gte 5 and lte 8`).
    pub fn condition_text(&self) -> String {
        let op = |o: ConditionOperator| match o {
            ConditionOperator::Lt => "lt",
            ConditionOperator::Lte => "lte",
            ConditionOperator::Gt => "gt",
            ConditionOperator::Gte => "gte",
            ConditionOperator::Eq => "eq",
            ConditionOperator::Neq => "neq",
        };
        self.predicates
            .iter()
            .map(|&(o, n)| format!("{} {n}", op(o)))
            .collect::<Vec<_>>()
            .join(" and ")
    }
}

fn rule_name(rule: &CorrelationRule) -> String {
    rule.id
        .clone()
        .or_else(|| rule.name.clone())
        .unwrap_or_else(|| rule.title.clone())
}

/// The detection rule a `rules:` entry names (by id or by name).
fn find_detection(detections: &[DetectionRef], name: &str) -> Option<usize> {
    detections
        .iter()
        .position(|d| d.id.as_deref() == Some(name) || d.name.as_deref() == Some(name))
}

/// The field `name` (a field or an alias) stands for in the events of detection `d`.
fn resolve(rule: &CorrelationRule, d: &DetectionRef, name: &str) -> String {
    for alias in rule.aliases.iter().filter(|a| a.alias == name) {
        for key in [d.id.as_deref(), d.name.as_deref()].into_iter().flatten() {
            if let Some(field) = alias.mapping.get(key) {
                return field.clone();
            }
        }
    }
    name.to_owned()
}

/// Compiles one rule (index `index` among the correlations that run) and the consumers of its
/// referenced rules.
pub fn compile(
    rule: &CorrelationRule,
    index: u16,
    detections: &[DetectionRef],
) -> Result<(Compiled, Vec<(usize, Consumer)>), Unsupported> {
    let id = rule_name(rule);
    let unsupported = |reason: String| Unsupported {
        id: id.clone(),
        title: rule.title.clone(),
        reason,
    };
    let kind = match rule.correlation_type {
        CorrelationType::EventCount => Kind::EventCount,
        CorrelationType::ValueCount => Kind::ValueCount,
        CorrelationType::Temporal => Kind::Temporal,
        CorrelationType::TemporalOrdered => Kind::TemporalOrdered,
        other => {
            return Err(unsupported(format!(
                "correlation type {} is not supported (event_count, value_count, temporal, \
                 temporal_ordered are)",
                other.as_str()
            )))
        }
    };
    if rule.window != rsigma_parser::WindowMode::Sliding {
        return Err(unsupported(format!(
            "window mode {} is not supported (sliding is)",
            rule.window.as_str()
        )));
    }
    if rule.rules.is_empty() {
        return Err(unsupported("it references no rule".into()));
    }
    let mut refs = Vec::with_capacity(rule.rules.len());
    for name in &rule.rules {
        match find_detection(detections, name) {
            Some(d) => refs.push(d),
            None => {
                return Err(unsupported(format!(
                    "referenced rule {name:?} is not a loaded detection rule (correlations of \
                     correlations are not supported)"
                )))
            }
        }
    }
    let timespan_ms = i64::try_from(rule.timespan.seconds.saturating_mul(1000)).unwrap_or(i64::MAX);
    if timespan_ms <= 0 {
        return Err(unsupported("timespan must be positive".into()));
    }
    let (predicates, value_field) = match (&rule.condition, kind) {
        (CorrelationCondition::Extended(expr), _) => {
            return Err(unsupported(format!(
                "boolean correlation condition {expr} is not supported (temporal rules need all \
                 referenced rules)"
            )))
        }
        (
            CorrelationCondition::Threshold {
                predicates, field, ..
            },
            Kind::ValueCount,
        ) => match field.as_deref() {
            Some([f]) => (predicates.clone(), Some(f.clone())),
            Some(_) => {
                return Err(unsupported(
                    "value_count over several fields is not supported".into(),
                ))
            }
            None => return Err(unsupported("value_count needs condition.field".into())),
        },
        (CorrelationCondition::Threshold { predicates, .. }, Kind::EventCount) => {
            (predicates.clone(), None)
        }
        // temporal types: every referenced rule within the timespan (the spec's meaning; the
        // parser's default threshold is not a count of events).
        (CorrelationCondition::Threshold { .. }, _) => (Vec::new(), None),
    };
    if matches!(kind, Kind::EventCount | Kind::ValueCount) && predicates.is_empty() {
        return Err(unsupported("condition has no predicate".into()));
    }
    let mut techniques = super::super::meta::techniques(&rule.tags);
    if techniques.is_empty() {
        for &d in &refs {
            for t in super::super::meta::techniques(&detections[d].tags) {
                if !techniques.contains(&t) {
                    techniques.push(t);
                }
            }
        }
    }
    let mut consumers: Vec<(usize, Consumer)> = Vec::new();
    for &d in &refs {
        if consumers.iter().any(|(c, _)| *c == d) {
            continue;
        }
        let det = &detections[d];
        consumers.push((
            d,
            Consumer {
                correlation: index,
                group_by: rule
                    .group_by
                    .iter()
                    .map(|g| resolve(rule, det, g))
                    .collect(),
                value_field: value_field.as_deref().map(|f| resolve(rule, det, f)),
            },
        ));
    }
    Ok((
        Compiled {
            rule_key: crate::window::stable_hash(&[&id]),
            id,
            title: rule.title.clone(),
            level: crate::sigma::meta::severity(rule.level).as_str().to_owned(),
            severity: crate::sigma::meta::severity(rule.level),
            author: rule.author.clone(),
            techniques,
            kind,
            refs,
            group_by: rule.group_by.clone(),
            timespan_ms,
            predicates,
        },
        consumers,
    ))
}
