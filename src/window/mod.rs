//! Time-keyed primitives for detectors. Time is event time in epoch milliseconds, always passed
//! in: nothing here reads a clock, so tests (and replays) drive time explicitly.
//!
//! Each primitive is small, fixed-size or capped, and stores no key: keys live in
//! [`keyed::BoundedMap`], which bounds how many there are and evicts the least recently active.
//! Parameters (pane width, window length, caps) are passed by reference from the detector's
//! config at each call instead of being stored per key, to keep per-key state small.

pub mod baseline;
pub mod distinct;
pub mod first_seen;
pub mod heartbeat;
pub mod keyed;
pub mod sliding;
pub mod watermark;

pub use baseline::{BaselineSpec, RateBaseline};
pub use distinct::SlidingDistinct;
pub use first_seen::{FirstSeen, Novelty};
pub use heartbeat::{Heartbeat, Resumed, Silence, SilenceSpec};
pub use keyed::BoundedMap;
pub use sliding::{PaneSpec, SlidingCount};
pub use watermark::Watermark;

/// A stable 64-bit hash of a key made of string parts (XXH3, a published algorithm: equal across
/// runs, processes and versions, so it can name state and alerts).
pub fn stable_hash(parts: &[&str]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update(&[0xff]);
    }
    h.digest()
}
