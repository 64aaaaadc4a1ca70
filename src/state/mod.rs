//! Durable window state: the versioned encoding of one keyed entry, and the checkpoint/restore
//! plumbing every stateful detector implements.
//!
//! An entry is (detector, table, key) → `[version byte] ++ CBOR((last active, value))`, or a
//! tombstone (`None`) for a key that was evicted or forgotten. Detectors record which keys
//! changed since the last checkpoint ([`BoundedMap::track_changes`]), so a checkpoint writes only
//! those. An entry with an unknown version or that does not decode is reported and skipped: that
//! key starts fresh, nothing else is affected.
//!
//! Where entries go: a changelog topic (`crate::kafka::repartition`, for a group of instances)
//! or [`snapshot`], the crash-safe local file of a single node. Both carry these entries as they
//! are, so the codec and the file that stores it live together here.

pub mod snapshot;

use crate::window::BoundedMap;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The encoding version written in the first byte of every entry.
pub const VERSION: u8 = 1;

/// Pseudo-detector index of the suppressor's entries.
pub const SUPPRESSION: u8 = 250;
/// Pseudo-detector index of a partition's own metadata (watermark, offsets).
pub const META: u8 = 251;

/// One changed entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// [`crate::detect::DETECTOR_NAMES`] index, or [`SUPPRESSION`] / [`META`].
    pub detector: u8,
    /// Which of the detector's maps.
    pub table: u8,
    pub key: u64,
    /// `None`: the key is gone (a tombstone, so a compacted changelog forgets it too).
    pub value: Option<Vec<u8>>,
}

impl Entry {
    /// The changelog record key: readable, and unique per entry within a partition.
    pub fn record_key(&self, partition: i32) -> String {
        format!(
            "{partition}/{}/{}/{:016x}",
            self.detector, self.table, self.key
        )
    }

    /// Parses a changelog record key back into (partition, detector, table, key).
    pub fn parse_record_key(k: &[u8]) -> Option<(i32, u8, u8, u64)> {
        let s = std::str::from_utf8(k).ok()?;
        let mut it = s.split('/');
        let p = it.next()?.parse().ok()?;
        let d = it.next()?.parse().ok()?;
        let t = it.next()?.parse().ok()?;
        let key = u64::from_str_radix(it.next()?, 16).ok()?;
        it.next().is_none().then_some((p, d, t, key))
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StateError {
    #[error("empty state entry")]
    Empty,
    #[error("unknown state encoding version {0}")]
    Version(u8),
    #[error("corrupt state entry: {0}")]
    Corrupt(String),
    #[error("no such state table")]
    UnknownTable,
}

impl StateError {
    pub fn reason(&self) -> &'static str {
        match self {
            StateError::Empty => "empty",
            StateError::Version(_) => "unknown_version",
            StateError::Corrupt(_) => "corrupt",
            StateError::UnknownTable => "unknown_table",
        }
    }
}

pub fn encode<T: Serialize>(active: i64, value: &T) -> Vec<u8> {
    let mut out = vec![VERSION];
    ciborium::into_writer(&(active, value), &mut out).expect("writing to a Vec cannot fail");
    out
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<(i64, T), StateError> {
    match bytes.first() {
        None => Err(StateError::Empty),
        Some(&VERSION) => {
            ciborium::from_reader(&bytes[1..]).map_err(|e| StateError::Corrupt(e.to_string()))
        }
        Some(v) => Err(StateError::Version(*v)),
    }
}

/// The changed entries of one keyed map.
pub fn checkpoint_map<V: Serialize>(map: &mut BoundedMap<u64, V>, table: u8, out: &mut Vec<Entry>) {
    map.drain_changes(|k, v| {
        out.push(Entry {
            detector: 0,
            table,
            key: *k,
            value: v.map(|(t, v)| encode(t, v)),
        })
    });
}

/// Puts one entry back into a keyed map.
pub fn restore_map<V: DeserializeOwned>(
    map: &mut BoundedMap<u64, V>,
    key: u64,
    bytes: &[u8],
) -> Result<(), StateError> {
    let (t, v) = decode(bytes)?;
    map.restore(key, t, v);
    Ok(())
}
