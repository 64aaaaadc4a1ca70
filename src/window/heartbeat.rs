//! A last-seen heartbeat that learns a log source's usual gap, for silence detection.
//!
//! Each event is a beat. Gaps shorter than `resolution_ms` are not gaps (audit logs arrive in
//! bursts; the interesting quantity is the time between bursts), longer ones update an EWMA of the
//! gap. A source is silent when the watermark passes `last_seen + max(k × learned gap, floor)`;
//! that is reported once per silence episode, and the next beat ends the episode ([`Resumed`]).
//! A gap that was reported as silence is not learned, so an outage does not teach the source
//! that outages are normal. State: 32 bytes.

/// Silence parameters, shared by every source of a detector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SilenceSpec {
    /// Multiple of the learned gap that counts as silence.
    pub k: f64,
    /// Silence is never shorter than this.
    pub floor_ms: i64,
    /// Gaps shorter than this are bursts, not gaps.
    pub resolution_ms: i64,
    /// EWMA weight of the newest gap.
    pub alpha: f64,
    /// A source must have sent this many events before its silence means anything.
    pub min_events: u32,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Heartbeat {
    first_seen: i64,
    last_seen: i64,
    gap_ms: f32,
    events: u32,
    silent: bool,
}

/// A silence episode began.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Silence {
    pub last_seen: i64,
    pub learned_gap_ms: i64,
    pub threshold_ms: i64,
}

/// A silent source sent an event again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Resumed {
    pub last_seen: i64,
    pub resumed_at: i64,
}

impl Heartbeat {
    pub fn new(t: i64) -> Self {
        Heartbeat {
            first_seen: t,
            last_seen: t,
            gap_ms: 0.0,
            events: 1,
            silent: false,
        }
    }

    /// A beat at event time `t`. Returns the end of a silence episode, if one was open.
    pub fn beat(&mut self, spec: &SilenceSpec, t: i64) -> Option<Resumed> {
        self.events = self.events.saturating_add(1);
        if t <= self.last_seen {
            self.first_seen = self.first_seen.min(t);
            return None;
        }
        let gap = t - self.last_seen;
        let resumed = if self.silent {
            self.silent = false;
            Some(Resumed {
                last_seen: self.last_seen,
                resumed_at: t,
            })
        } else {
            if gap >= spec.resolution_ms {
                self.gap_ms = if self.gap_ms == 0.0 {
                    gap as f32
                } else {
                    (f64::from(self.gap_ms) + spec.alpha * (gap as f64 - f64::from(self.gap_ms)))
                        as f32
                };
            }
            None
        };
        self.last_seen = t;
        resumed
    }

    /// A source's first pane: `count` events between `min` and `max`.
    pub fn from_pane(spec: &SilenceSpec, count: u32, min: i64, max: i64) -> Self {
        let mut hb = Heartbeat::new(min);
        if max > min {
            hb.beat(spec, max);
        }
        hb.events = count.max(1);
        hb
    }

    /// A whole pane of beats: `count` events between `min` and `max` (a pane is shorter than
    /// `resolution_ms`, so the gaps inside it are bursts, never learned). Beating at the pane's
    /// first and last event learns exactly the gaps that beating at every event would.
    pub fn beat_pane(
        &mut self,
        spec: &SilenceSpec,
        count: u32,
        min: i64,
        max: i64,
    ) -> Option<Resumed> {
        let events = self.events;
        let resumed = self.beat(spec, min);
        if max > min {
            self.beat(spec, max);
        }
        self.events = events.saturating_add(count.max(1));
        resumed
    }

    /// The silence threshold in ms for this source now.
    pub fn threshold_ms(&self, spec: &SilenceSpec) -> i64 {
        let learned = (f64::from(self.gap_ms) * spec.k) as i64;
        learned.max(spec.floor_ms)
    }

    /// Checks silence at `watermark`. Returns `Some` once, when an episode begins.
    pub fn check(&mut self, spec: &SilenceSpec, watermark: i64) -> Option<Silence> {
        if self.silent || self.events < spec.min_events {
            return None;
        }
        let threshold_ms = self.threshold_ms(spec);
        if watermark.saturating_sub(self.last_seen) > threshold_ms {
            self.silent = true;
            return Some(Silence {
                last_seen: self.last_seen,
                learned_gap_ms: self.gap_ms as i64,
                threshold_ms,
            });
        }
        None
    }

    pub fn last_seen(&self) -> i64 {
        self.last_seen
    }

    pub fn first_seen(&self) -> i64 {
        self.first_seen
    }

    pub fn learned_gap_ms(&self) -> i64 {
        self.gap_ms as i64
    }

    pub fn is_silent(&self) -> bool {
        self.silent
    }

    pub fn events(&self) -> u32 {
        self.events
    }
}
