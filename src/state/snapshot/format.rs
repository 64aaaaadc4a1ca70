//! The snapshot log's bytes: the file header, the batch frame, and a batch payload's encoding
//! and bounds-checked decoding (the grammar is in the [parent module's docs](super)). Kept apart
//! from the file handling so the format can be read, and changed under a new version byte, in
//! one place.

use crate::state::Entry;
use std::hash::{Hash, Hasher};

/// The magic bytes that open a snapshot log.
pub(super) const MAGIC: [u8; 7] = *b"CWSNAPL";
/// The format version, the byte after [`MAGIC`].
pub(super) const VERSION: u8 = 1;
pub(super) const HEADER: [u8; 8] = {
    let mut h = [VERSION; 8];
    let mut i = 0;
    while i < MAGIC.len() {
        h[i] = MAGIC[i];
        i += 1;
    }
    h
};
pub(super) const HEADER_LEN: u64 = HEADER.len() as u64;
/// length:u32 crc:u32 before each payload.
pub(super) const FRAME_LEN: u64 = 8;

/// (detector, table, key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Key {
    pub(super) detector: u8,
    pub(super) table: u8,
    pub(super) key: u64,
}

impl Key {
    pub(super) fn of(e: &Entry) -> Key {
        Key {
            detector: e.detector,
            table: e.table,
            key: e.key,
        }
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Two words: FastHasher mixes a u64 in one step, a u8 costs a hash call.
        state.write_u64(self.key);
        state.write_u64(u64::from(self.detector) << 8 | u64::from(self.table));
    }
}

pub(super) fn value_len(e: &Entry) -> usize {
    e.value.as_ref().map_or(0, Vec::len)
}

pub(super) fn varint_len(v: u64) -> u64 {
    u64::from((64 - (v | 1).leading_zeros()).div_ceil(7))
}

pub(super) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The encoded size of a live entry with a value of `len` bytes.
pub(super) fn entry_size(len: usize) -> u64 {
    10 + varint_len(len as u64 + 1) + len as u64
}

pub(super) fn offset_size(topic: &str) -> u64 {
    varint_len(topic.len() as u64) + topic.len() as u64 + 12
}

pub(super) fn put_offset(out: &mut Vec<u8>, topic: &str, partition: i32, next: i64) {
    put_varint(out, topic.len() as u64);
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(&partition.to_le_bytes());
    out.extend_from_slice(&next.to_le_bytes());
}

/// Appends a batch's payload to `out`, and the payload position of each entry's value to
/// `value_at`.
pub(super) fn encode_payload(
    entries: &[Entry],
    offsets: &[(String, i32, i64)],
    out: &mut Vec<u8>,
    value_at: &mut Vec<u64>,
) {
    put_varint(out, entries.len() as u64);
    for e in entries {
        out.push(e.detector);
        out.push(e.table);
        out.extend_from_slice(&e.key.to_le_bytes());
        match &e.value {
            Some(v) => {
                put_varint(out, v.len() as u64 + 1);
                value_at.push(out.len() as u64);
                out.extend_from_slice(v);
            }
            None => {
                put_varint(out, 0);
                value_at.push(out.len() as u64);
            }
        }
    }
    put_varint(out, offsets.len() as u64);
    for (topic, partition, next) in offsets {
        put_offset(out, topic, *partition, *next);
    }
}

/// A value in a decoded payload: (its position in the payload, its bytes), `None` for a
/// tombstone.
pub(super) type ValueRef<'a> = Option<(usize, &'a [u8])>;

/// A decoded payload, borrowing from it.
pub(super) struct Batch<'a> {
    pub(super) entries: Vec<(Key, ValueRef<'a>)>,
    pub(super) offsets: Vec<(&'a str, i32, i64)>,
}

pub(super) fn decode_payload(payload: &[u8]) -> Result<Batch<'_>, String> {
    let mut r = Reader {
        buf: payload,
        at: 0,
    };
    let n = r.count(11)?;
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        let key = Key {
            detector: r.u8()?,
            table: r.u8()?,
            key: u64::from_le_bytes(r.array()?),
        };
        let value = match r.varint()? {
            0 => None,
            v => {
                let len = usize::try_from(v - 1).map_err(|_| "value length overflows")?;
                let at = r.at;
                Some((at, r.take(len)?))
            }
        };
        entries.push((key, value));
    }
    let m = r.count(13)?;
    let mut offsets = Vec::with_capacity(m);
    for _ in 0..m {
        let len = usize::try_from(r.varint()?).map_err(|_| "topic length overflows")?;
        let topic = std::str::from_utf8(r.take(len)?)
            .map_err(|_| format!("topic at payload byte {} is not UTF-8", r.at - len))?;
        let partition = i32::from_le_bytes(r.array()?);
        let next = i64::from_le_bytes(r.array()?);
        offsets.push((topic, partition, next));
    }
    if r.at != payload.len() {
        return Err(format!(
            "{} bytes after the last offset",
            payload.len() - r.at
        ));
    }
    Ok(Batch { entries, offsets })
}

/// Bounds-checked reads from a payload.
pub(super) struct Reader<'a> {
    pub(super) buf: &'a [u8],
    pub(super) at: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.buf.len() - self.at < n {
            return Err(format!(
                "{n} bytes wanted at payload byte {}, {} left",
                self.at,
                self.buf.len() - self.at
            ));
        }
        self.at += n;
        Ok(&self.buf[self.at - n..self.at])
    }

    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }

    pub(super) fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    pub(super) fn varint(&mut self) -> Result<u64, String> {
        let start = self.at;
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            if shift == 63 && b > 1 {
                break;
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(format!("varint at payload byte {start} overflows"))
    }

    /// A count of items of at least `min_size` bytes each, checked against the bytes left (so a
    /// corrupt count cannot make a huge allocation).
    pub(super) fn count(&mut self, min_size: usize) -> Result<usize, String> {
        let at = self.at;
        let n = self.varint()?;
        let left = (self.buf.len() - self.at) as u64;
        if n > left / min_size as u64 {
            return Err(format!(
                "count {n} at payload byte {at} does not fit in the {left} bytes left"
            ));
        }
        Ok(n as usize)
    }
}
