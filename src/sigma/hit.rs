//! A detection-rule match on its way to the correlation rules that use it.
//!
//! Stage 1 matches the detection rules on the raw record; for each match that a correlation rule
//! refers to, it extracts the correlation's group-by values (and the `value_count` field) and
//! forwards one [`Hit`], keyed by (correlation, group-by values), so that every hit of one group
//! reaches the same stage-2 owner. In-process (replay, one instance without repartitioning) the
//! engine hands the same value straight to the correlation state.

use crate::event::Provider;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hit<'a> {
    /// Index of the correlation rule in the loaded set.
    pub correlation: u16,
    /// Index, in the loaded detection rules, of the rule that matched.
    pub detection: u16,
    /// Event time, epoch ms.
    pub time: i64,
    /// (input partition, offset, index): with `time`, a total order of the hits that does not
    /// depend on how many instances produced them. Stage 1 sets the index to the event's index
    /// in its record << 8 | the hit's index among the event's hits, so each hit has its own.
    pub origin: (i32, i64, u32),
    /// The event was older than the watermark at its input.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub late: bool,
    /// The correlation's `group-by` values, in its `group-by` order (absent field: empty string).
    #[serde(borrow, deserialize_with = "crate::event::vec_cow")]
    pub group: Vec<Cow<'a, str>>,
    /// The `value_count` field's value, when the correlation is a value_count.
    #[serde(
        borrow,
        default,
        deserialize_with = "crate::event::opt_cow",
        skip_serializing_if = "Option::is_none"
    )]
    pub value: Option<Cow<'a, str>>,
    /// Context for the alert.
    pub provider: Provider,
    #[serde(borrow)]
    pub scope: Cow<'a, str>,
    #[serde(borrow)]
    pub region: Cow<'a, str>,
    #[serde(
        borrow,
        default,
        deserialize_with = "crate::event::opt_cow",
        skip_serializing_if = "Option::is_none"
    )]
    pub principal: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub event_id: Cow<'a, str>,
    #[serde(borrow)]
    pub operation: Cow<'a, str>,
}

impl Hit<'_> {
    pub fn into_owned(self) -> Hit<'static> {
        let own = |c: Cow<'_, str>| Cow::Owned(c.into_owned());
        Hit {
            correlation: self.correlation,
            detection: self.detection,
            time: self.time,
            origin: self.origin,
            late: self.late,
            group: self.group.into_iter().map(own).collect(),
            value: self.value.map(own),
            provider: self.provider,
            scope: own(self.scope),
            region: own(self.region),
            principal: self.principal.map(own),
            event_id: own(self.event_id),
            operation: own(self.operation),
        }
    }

    /// The stage-2 routing key: stable hash of (correlation, group-by values).
    pub fn route_key(&self) -> u64 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(&self.correlation.to_le_bytes());
        for g in &self.group {
            h.update(g.as_bytes());
            h.update(&[0x1f]);
        }
        h.digest()
    }
}
