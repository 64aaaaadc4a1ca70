//! The event-time watermark: the largest event time seen, minus the allowed lateness.
//!
//! Windows expire and silence is judged against the watermark, not against the newest event, so
//! records that arrive a little out of order (CloudTrail delivers in ~5-minute batches) still
//! count. A record older than the watermark is *late*: stateful detectors skip it (it is counted),
//! stateless detectors still see it.

/// Tracks max event time and derives the watermark.
#[derive(Debug, Clone)]
pub struct Watermark {
    max_event_time: Option<i64>,
    allowed_lateness_ms: i64,
    /// Set by [`Watermark::advance_to`] (end of replay, idle input): the watermark never goes back.
    floor: i64,
    /// Driven from outside (the service's per-partition watermarks): events do not move it.
    external: bool,
}

impl Watermark {
    pub fn new(allowed_lateness_ms: i64) -> Self {
        Watermark {
            max_event_time: None,
            allowed_lateness_ms,
            floor: i64::MIN,
            external: false,
        }
    }

    /// A watermark moved only by [`Watermark::advance_to`]; events are judged late against it
    /// but do not move it (the caller combines per-partition watermarks).
    pub fn external(allowed_lateness_ms: i64) -> Self {
        Watermark {
            external: true,
            ..Watermark::new(allowed_lateness_ms)
        }
    }

    /// Records an event time; returns `true` when the event is late (older than the watermark
    /// before this event).
    pub fn observe(&mut self, t: i64) -> bool {
        let late = t < self.current();
        if self.max_event_time.is_none_or(|m| t > m) {
            self.max_event_time = Some(t);
        }
        late
    }

    /// The current watermark (`i64::MIN` before any event).
    pub fn current(&self) -> i64 {
        if self.external {
            return self.floor;
        }
        let from_events = self
            .max_event_time
            .map_or(i64::MIN, |m| m.saturating_sub(self.allowed_lateness_ms));
        from_events.max(self.floor)
    }

    /// The largest event time seen.
    pub fn max_event_time(&self) -> Option<i64> {
        self.max_event_time
    }

    /// Moves the watermark forward to `t` (never back): end of input, or idle-input advance.
    pub fn advance_to(&mut self, t: i64) {
        self.floor = self.floor.max(t);
    }

    pub fn allowed_lateness_ms(&self) -> i64 {
        self.allowed_lateness_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_external_watermark_moves_only_when_told() {
        let mut w = Watermark::external(1_000);
        assert!(!w.observe(10_000));
        assert_eq!(w.current(), i64::MIN);
        w.advance_to(9_000);
        assert!(w.observe(8_000), "late against the external watermark");
        assert_eq!(w.current(), 9_000);
        assert_eq!(w.max_event_time(), Some(10_000));
    }

    #[test]
    fn late_is_relative_to_watermark_not_max() {
        let mut w = Watermark::new(1_000);
        assert!(!w.observe(10_000));
        assert_eq!(w.current(), 9_000);
        assert!(!w.observe(9_500), "within lateness");
        assert!(w.observe(8_999), "beyond lateness");
        assert_eq!(w.current(), 9_000, "late events do not move the watermark");
        w.advance_to(20_000);
        assert_eq!(w.current(), 20_000);
        w.advance_to(5);
        assert_eq!(w.current(), 20_000, "never goes back");
    }
}
