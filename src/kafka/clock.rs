//! Event time in the service: one clock per input partition, and THE watermark rule.
//!
//! Each input partition's clock is the newest event time read from it and when it last gave a
//! record. A watermark over several inputs (the in-process engine's over its input partitions,
//! stage 2's over the markers of every input partition) is computed by one rule,
//! [`combine`]: the minimum over the inputs that are active; an input not heard from yet holds
//! it back until it counts as idle; idle inputs do not hold it back; when every input is idle,
//! all their data has been read and the newest bounds it. Both modes call it, so they cannot
//! drift apart.

use super::offsets::TopicPartition;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A partition's event-time clock.
#[derive(Debug, Clone, Copy)]
pub struct PartitionClock {
    /// Newest event time read (`i64::MIN`: none yet).
    pub max_event_time: i64,
    pub last_record: Instant,
}

/// One input's time as the watermark rule sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputTime {
    /// Its newest time (`i64::MIN`: nothing yet).
    pub time: i64,
    /// Idle inputs do not hold the watermark back.
    pub idle: bool,
}

/// The watermark rule: the minimum over active inputs (an active input with no time yet gives
/// `i64::MIN`: it holds everything back); with none active, the newest time of any; with none at
/// all, `i64::MIN`.
pub fn combine(inputs: impl IntoIterator<Item = InputTime>) -> i64 {
    let mut active_min: Option<i64> = None;
    let mut newest: Option<i64> = None;
    for i in inputs {
        if i.time > i64::MIN {
            newest = Some(newest.map_or(i.time, |n| n.max(i.time)));
        }
        if !i.idle {
            active_min = Some(active_min.map_or(i.time, |m| m.min(i.time)));
        }
    }
    active_min.or(newest).unwrap_or(i64::MIN)
}

/// The clocks of the input partitions this instance reads.
#[derive(Debug, Default)]
pub struct Clocks {
    clocks: HashMap<Arc<TopicPartition>, PartitionClock>,
}

impl Clocks {
    /// A record was read from `tp` at `now` (its event time is not known yet, or not at all).
    pub fn heard(&mut self, tp: &Arc<TopicPartition>, now: Instant) -> &mut PartitionClock {
        let clock = self.clocks.entry(tp.clone()).or_insert(PartitionClock {
            max_event_time: i64::MIN,
            last_record: now,
        });
        clock.last_record = now;
        clock
    }

    /// A record with event time `t` was read from `tp` at `now`.
    pub fn event(&mut self, tp: &Arc<TopicPartition>, t: i64, now: Instant) {
        let clock = self.heard(tp, now);
        clock.max_event_time = clock.max_event_time.max(t);
    }

    pub fn get(&self, tp: &TopicPartition) -> Option<&PartitionClock> {
        self.clocks.get(tp)
    }

    /// Forgets every clock (exactly-once rewind: partitions are read again).
    pub fn clear(&mut self) {
        self.clocks.clear();
    }

    /// The input time of an assigned partition (`assigned_at`: when it became ours): idle after
    /// `idle_after` without a record.
    pub fn input_time(
        &self,
        tp: &TopicPartition,
        assigned_at: Instant,
        idle_after: Duration,
        now: Instant,
    ) -> InputTime {
        match self.clocks.get(tp) {
            Some(c) => InputTime {
                time: c.max_event_time,
                idle: now.duration_since(c.last_record) >= idle_after,
            },
            None => InputTime {
                time: i64::MIN,
                idle: now.duration_since(assigned_at) >= idle_after,
            },
        }
    }

    /// Stage 1's marker for one input partition: its watermark and whether it is idle. Idle:
    /// nothing read for `idle_after` *and* nothing left to read (`caught_up`: the consumer's
    /// position is at the partition's end); a partition that merely has not been fetched yet
    /// must not let the others' time run past its records. An idle partition has delivered what
    /// it had: nothing late is still on its way, so its watermark is its newest event time (a
    /// stream that ends is processed to its last event, as `replay` does). `extra`: how far
    /// wall-clock time moved the watermark while no input arrived at all.
    pub fn mark(
        &self,
        tp: &TopicPartition,
        assigned_at: Instant,
        caught_up: bool,
        t: &MarkTiming,
    ) -> InputTime {
        match self.clocks.get(tp).filter(|c| c.max_event_time > i64::MIN) {
            Some(c) => {
                let idle = caught_up && t.now.duration_since(c.last_record) >= t.idle_after;
                let lateness = if idle { 0 } else { t.lateness };
                InputTime {
                    time: c
                        .max_event_time
                        .saturating_sub(lateness)
                        .saturating_add(t.extra),
                    idle,
                }
            }
            None => InputTime {
                time: i64::MIN,
                idle: caught_up && t.now.duration_since(assigned_at) >= t.idle_after,
            },
        }
    }
}

/// The settings a marker is computed with.
#[derive(Debug, Clone, Copy)]
pub struct MarkTiming {
    pub now: Instant,
    pub idle_after: Duration,
    pub lateness: i64,
    pub extra: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(time: i64, idle: bool) -> InputTime {
        InputTime { time, idle }
    }

    #[test]
    fn the_slowest_active_input_bounds_the_watermark() {
        assert_eq!(combine([at(10, false), at(5, false), at(30, true)]), 5);
    }

    #[test]
    fn an_active_input_without_time_holds_everything_back() {
        assert_eq!(combine([at(10, false), at(i64::MIN, false)]), i64::MIN);
        // Once idle it no longer does.
        assert_eq!(combine([at(10, false), at(i64::MIN, true)]), 10);
    }

    #[test]
    fn when_every_input_is_idle_the_newest_bounds_it() {
        assert_eq!(combine([at(10, true), at(40, true)]), 40);
        assert_eq!(combine([]), i64::MIN);
        assert_eq!(combine([at(i64::MIN, true)]), i64::MIN);
    }
}
