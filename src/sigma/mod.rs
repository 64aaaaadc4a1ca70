//! Sigma rules on the stream: detection teams' own rules next to the built-in detectors.
//!
//! - [`meta`]: what an alert says about the rule that raised it (title, id, level → severity,
//!   `attack.tXXXX` tags → techniques).
//! - [`hit`]: a detection-rule match as a correlation rule consumes it: the one record shape that
//!   stage 1 forwards to stage 2 (and that the in-process engine hands over directly).
//!
//! Detection rules are matched in stage 1, where the raw record is at hand; correlation rules
//! (event_count, value_count, temporal, temporal_ordered) keep their state in stage 2, keyed by
//! (correlation, group-by values), in event time, with the other detectors' durable state.

pub mod config;
pub mod correlation;
pub mod detection;
pub mod event;
pub mod fields;
pub mod hit;
pub mod load;
pub mod meta;

pub use config::{SigmaAllow, SigmaConfig};
pub use detection::SigmaDetector;
pub use load::Rules;
