//! Local snapshot log: crash-safe durable state for a single-node deployment, in one file.
//!
//! The service appends one batch per checkpoint: the state entries changed since the last one
//! ([`crate::engine::Engine::checkpoint`]) and the input offsets that state reflects, fsyncs, and
//! only then commits. On start, [`SnapshotLog::open`] returns the live entries (last write wins per
//! (detector, table, key), tombstones applied) and the offsets (last write wins per (topic,
//! partition)) to restore the engine from and seek the input to.
//!
//! Format (integers little-endian, `varint` unsigned LEB128):
//!
//! ```text
//! file    := "CWSNAPL" version:u8 batch*                      (version 1)
//! batch   := length:u32 crc:u32 payload[length]               (crc32 (IEEE) of payload; length > 0)
//! payload := n:varint entry{n} m:varint offset{m}
//! entry   := detector:u8 table:u8 key:u64 v:varint value[v-1] (v = 0: a tombstone)
//! offset  := len:varint topic[len] (UTF-8) partition:i32 next_offset:i64
//! ```
//!
//! The version byte covers the whole file, payloads included: only a build that reads a file's
//! version appends to it (any other version is refused, [`SnapshotError::Version`]), and
//! compaction rewrites the file whole. A future encoding bumps it.
//!
//! Crash safety. A batch is the unit: the loaded state is always that of the end of one complete
//! batch, entries and offsets alike, never a mix.
//! - [`SnapshotLog::append`] writes the batch after the last complete one and fsyncs before it
//!   returns `Ok`. A crash before that leaves no batch, a torn one, or the whole one (then the
//!   offsets were not committed, but the restart resumes from this batch's own offsets:
//!   consistent).
//! - [`SnapshotLog::open`] reads batches in order and stops at the first one that is incomplete
//!   (its frame or payload runs past the end of the file, or its length is 0, as in a tail a power
//!   loss left zero-filled) or fails its CRC. Everything from there is cut off: the file is
//!   truncated to the last complete batch and the cut is reported in
//!   [`Loaded::discarded_bytes`]. A bad batch in the middle cuts the batches after it too: they
//!   are increments on top of it.
//! - A batch that passes its CRC but does not decode was not torn by a crash (a bug, or another
//!   writer): `open` refuses it ([`SnapshotError::Corrupt`]) and leaves the file as it is.
//! - When a failed write cannot be cut off again, or an fsync fails (the kernel may have dropped
//!   the unwritten pages, and a retried fsync can report success for them), the log refuses
//!   further appends ([`SnapshotError::Poisoned`]): restart and reopen. After any `append` error,
//!   do not commit that batch's offsets.
//! - Compaction writes a temporary file next to the log (`<name>.compacting`), fsyncs it, renames
//!   it over the log and fsyncs the directory: a crash leaves the old file or the new one, both
//!   complete. `open` deletes a leftover temporary file.
//! - One process per file: there is no lock, and two writers would interleave batches.
//!
//! Compaction. When the file grows past max(2 × [`SnapshotLog::live_bytes`], 1 MiB) after an
//! append, it is rewritten as one batch of the live entries (in the order they were last written)
//! and offsets, so the file stays within about twice the live state.
//!
//! Memory. The log keeps an index of the live keys, not their values: (detector, table, key) →
//! (file position, length) of the value, 32 bytes a slot, 37–75 bytes per live key with the hash
//! table's load factor (about 70 MB per 1 M keys), plus one small map entry per input partition.
//! Compaction copies the live values from the current file (checked at open, or written since by
//! this process), streaming through 1 MiB buffers. `open` returns the values once
//! ([`Loaded::entries`]), for the caller to restore from and drop.

use crate::state::Entry;
use crate::window::FastBuildHasher;
use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The magic bytes that open a snapshot log.
const MAGIC: [u8; 7] = *b"CWSNAPL";
/// The format version, the byte after [`MAGIC`].
const VERSION: u8 = 1;
const HEADER: [u8; 8] = {
    let mut h = [VERSION; 8];
    let mut i = 0;
    while i < MAGIC.len() {
        h[i] = MAGIC[i];
        i += 1;
    }
    h
};
const HEADER_LEN: u64 = HEADER.len() as u64;
/// length:u32 crc:u32 before each payload.
const FRAME_LEN: u64 = 8;
/// The file is not compacted below this size.
const MIN_COMPACT_BYTES: u64 = 1 << 20;
const BUFFER: usize = 1 << 20;

/// The live state and input offsets read from a snapshot log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Loaded {
    /// The live entries (never a tombstone), one per (detector, table, key): its last write,
    /// in the order they were last written.
    pub entries: Vec<Entry>,
    /// (topic, partition, next offset to read), one per (topic, partition): its last write,
    /// sorted by topic and partition.
    pub offsets: Vec<(String, i32, i64)>,
    /// Complete batches read.
    pub batches: u64,
    /// Bytes of a torn or corrupt tail that were cut off the file (0 when the file was clean).
    pub discarded_bytes: u64,
}

/// A snapshot log error; every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Reading, writing, syncing, creating or renaming failed.
    #[error("snapshot log {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    /// The file exists but is not a snapshot log; it is left as it is.
    #[error("{} is not a cloudwarden snapshot log (it does not start with the magic bytes)", path.display())]
    NotSnapshot { path: PathBuf },
    /// A snapshot log of another format version (a newer build's); it is left as it is.
    #[error("snapshot log {}: unknown format version {found} (this build reads version {VERSION})", path.display())]
    Version { path: PathBuf, found: u8 },
    /// A batch passes its CRC but does not decode; the file is left as it is.
    #[error("snapshot log {}: the batch at byte {offset} passes its checksum but does not decode: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// A batch (or the compacted live set) would not fit the 32-bit length field.
    #[error("snapshot log {}: a batch of {bytes} bytes is over the 4 GiB batch limit", path.display())]
    TooLarge { path: PathBuf, bytes: u64 },
    /// An earlier append failed in a way that leaves the file's state unknown (see the module
    /// docs); reopen the log.
    #[error("snapshot log {}: an earlier append failed to sync or to cut off a partial write; reopen the log", path.display())]
    Poisoned { path: PathBuf },
}

/// (detector, table, key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    detector: u8,
    table: u8,
    key: u64,
}

impl Key {
    fn of(e: &Entry) -> Key {
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

/// Where a live value is in the file.
#[derive(Debug, Clone, Copy)]
struct Slot {
    pos: u64,
    len: u32,
}

/// An open snapshot log, appended to at its end. See the [module docs](self).
pub struct SnapshotLog {
    path: PathBuf,
    file: File,
    /// The end of the last complete batch: the file's length.
    len: u64,
    live: HashMap<Key, Slot, FastBuildHasher>,
    offsets: HashMap<(String, i32), i64>,
    live_bytes: u64,
    /// The compaction floor ([`MIN_COMPACT_BYTES`]; tests lower it).
    min_compact: u64,
    /// A compaction's rename is not known durable yet: sync the directory before the next
    /// append returns.
    dir_unsynced: bool,
    poisoned: bool,
    /// Compactions that failed (logged; retried after the next append).
    compaction_failures: u64,
}

impl fmt::Debug for SnapshotLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotLog")
            .field("path", &self.path)
            .field("file_bytes", &self.len)
            .field("live_keys", &self.live.len())
            .field("live_bytes", &self.live_bytes)
            .field("poisoned", &self.poisoned)
            .field("compaction_failures", &self.compaction_failures)
            .finish_non_exhaustive()
    }
}

impl SnapshotLog {
    /// Opens the log at `path`, creating it (and its directory) if missing, and loads it. A torn
    /// or corrupt tail is cut off the file (reported in [`Loaded::discarded_bytes`]).
    pub fn open(path: &Path) -> Result<(SnapshotLog, Loaded), SnapshotError> {
        Self::open_with(path, MIN_COMPACT_BYTES)
    }

    fn open_with(path: &Path, min_compact: u64) -> Result<(SnapshotLog, Loaded), SnapshotError> {
        let err = |source| SnapshotError::Io {
            path: path.to_path_buf(),
            source,
        };
        let dir = parent_dir(path);
        fs::create_dir_all(&dir).map_err(err)?;
        let tmp = temp_path(path).map_err(err)?;
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(SnapshotError::Io {
                    path: tmp,
                    source: e,
                })
            }
            _ => {}
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(err)?;
        let file_len = file.metadata().map_err(err)?.len();
        let mut log = SnapshotLog {
            path: path.to_path_buf(),
            file,
            len: HEADER_LEN,
            live: HashMap::default(),
            offsets: HashMap::new(),
            live_bytes: 0,
            min_compact,
            dir_unsynced: false,
            poisoned: false,
            compaction_failures: 0,
        };

        if file_len < HEADER_LEN {
            // New, or created and torn before its header was written: start it over.
            let mut head = vec![0; file_len as usize];
            (&log.file).read_exact(&mut head).map_err(err)?;
            if head[..] != HEADER[..head.len()] {
                return Err(SnapshotError::NotSnapshot {
                    path: path.to_path_buf(),
                });
            }
            log.file.set_len(0).map_err(err)?;
            (&log.file).seek(SeekFrom::Start(0)).map_err(err)?;
            (&log.file).write_all(&HEADER).map_err(err)?;
            log.file.sync_all().map_err(err)?;
            sync_dir(&dir).map_err(err)?;
            let loaded = Loaded {
                discarded_bytes: file_len,
                ..Loaded::default()
            };
            return Ok((log, loaded));
        }

        let mut reader = BufReader::with_capacity(1 << 16, &log.file);
        let mut head = [0; HEADER.len()];
        reader.read_exact(&mut head).map_err(err)?;
        if head[..MAGIC.len()] != MAGIC {
            return Err(SnapshotError::NotSnapshot {
                path: path.to_path_buf(),
            });
        }
        if head[MAGIC.len()] != VERSION {
            return Err(SnapshotError::Version {
                path: path.to_path_buf(),
                found: head[MAGIC.len()],
            });
        }

        // (detector, table, key) → (file position, value) of its last write.
        let mut values: HashMap<Key, (u64, Vec<u8>), FastBuildHasher> = HashMap::default();
        let mut pos = HEADER_LEN;
        let mut batches = 0;
        loop {
            let remaining = file_len - pos;
            if remaining < FRAME_LEN {
                break; // 0: the clean end; else a torn frame
            }
            let mut frame = [0; FRAME_LEN as usize];
            reader.read_exact(&mut frame).map_err(err)?;
            let len = u64::from(u32::from_le_bytes(frame[..4].try_into().expect("4 bytes")));
            let crc = u32::from_le_bytes(frame[4..].try_into().expect("4 bytes"));
            if len == 0 || len > remaining - FRAME_LEN {
                break;
            }
            let mut payload = vec![0; len as usize];
            reader.read_exact(&mut payload).map_err(err)?;
            if crc32fast::hash(&payload) != crc {
                break;
            }
            let batch = decode_payload(&payload).map_err(|reason| SnapshotError::Corrupt {
                path: path.to_path_buf(),
                offset: pos,
                reason,
            })?;
            let base = pos + FRAME_LEN;
            for (key, value) in batch.entries {
                match value {
                    Some((at, bytes)) => {
                        values.insert(key, (base + at as u64, bytes.to_vec()));
                    }
                    None => {
                        values.remove(&key);
                    }
                }
            }
            for (topic, partition, next) in batch.offsets {
                log.offsets.insert((topic.to_owned(), partition), next);
            }
            pos = base + len;
            batches += 1;
        }
        drop(reader);
        let discarded_bytes = file_len - pos;
        if discarded_bytes > 0 {
            log.file.set_len(pos).map_err(err)?;
            log.file.sync_all().map_err(err)?;
        }
        log.len = pos;

        let mut by_pos: Vec<(u64, Key, Vec<u8>)> =
            values.into_iter().map(|(k, (p, v))| (p, k, v)).collect();
        by_pos.sort_unstable_by_key(|(p, _, _)| *p);
        log.live.reserve(by_pos.len());
        let entries = by_pos
            .into_iter()
            .map(|(pos, key, value)| {
                log.live.insert(
                    key,
                    Slot {
                        pos,
                        len: value.len() as u32,
                    },
                );
                log.live_bytes += entry_size(value.len());
                Entry {
                    detector: key.detector,
                    table: key.table,
                    key: key.key,
                    value: Some(value),
                }
            })
            .collect();
        let mut offsets: Vec<(String, i32, i64)> = log
            .offsets
            .iter()
            .map(|((t, p), o)| (t.clone(), *p, *o))
            .collect();
        offsets.sort_unstable();
        log.live_bytes += offsets.iter().map(|(t, _, _)| offset_size(t)).sum::<u64>();
        let loaded = Loaded {
            entries,
            offsets,
            batches,
            discarded_bytes,
        };
        Ok((log, loaded))
    }

    /// Appends one batch (the changed entries, a `None` value removing its key, and the input
    /// offsets this state reflects), fsyncs, and compacts the file if it has grown past
    /// max(2 × [`Self::live_bytes`], 1 MiB). Returns the batch's bytes (frame and payload).
    ///
    /// `Ok`: the batch is durable. `Err`: it may or may not be; do not commit its offsets. A
    /// failed compaction is logged and retried after the next append: the batch is durable
    /// either way.
    pub fn append(
        &mut self,
        entries: &[Entry],
        offsets: &[(String, i32, i64)],
    ) -> Result<u64, SnapshotError> {
        if self.poisoned {
            return Err(SnapshotError::Poisoned {
                path: self.path.clone(),
            });
        }
        let estimate = entries
            .iter()
            .map(|e| entry_size(value_len(e)))
            .sum::<u64>()
            + offsets.iter().map(|(t, _, _)| offset_size(t)).sum::<u64>()
            + 20;
        let mut payload = Vec::with_capacity(estimate as usize);
        let mut value_at = Vec::with_capacity(entries.len());
        encode_payload(entries, offsets, &mut payload, &mut value_at);
        let Ok(len) = u32::try_from(payload.len()) else {
            return Err(SnapshotError::TooLarge {
                path: self.path.clone(),
                bytes: payload.len() as u64,
            });
        };
        let mut frame = [0; FRAME_LEN as usize];
        frame[..4].copy_from_slice(&len.to_le_bytes());
        frame[4..].copy_from_slice(&crc32fast::hash(&payload).to_le_bytes());

        if let Err(e) = write_at(&self.file, self.len, &frame, &payload) {
            // Cut the partial batch off, or the next batch would follow it and be lost with it.
            if self.file.set_len(self.len).is_err() {
                self.poisoned = true;
            }
            return Err(self.io(e));
        }
        if let Err(e) = self.file.sync_data() {
            self.poisoned = true;
            return Err(self.io(e));
        }

        let base = self.len + FRAME_LEN;
        for (e, at) in entries.iter().zip(value_at) {
            let key = Key::of(e);
            let old = match &e.value {
                Some(v) => {
                    self.live_bytes += entry_size(v.len());
                    let slot = Slot {
                        pos: base + at,
                        len: v.len() as u32,
                    };
                    self.live.insert(key, slot)
                }
                None => self.live.remove(&key),
            };
            if let Some(old) = old {
                self.live_bytes -= entry_size(old.len as usize);
            }
        }
        for (topic, partition, next) in offsets {
            if self
                .offsets
                .insert((topic.clone(), *partition), *next)
                .is_none()
            {
                self.live_bytes += offset_size(topic);
            }
        }
        let written = FRAME_LEN + payload.len() as u64;
        self.len += written;
        drop(payload);

        if self.dir_unsynced {
            sync_dir(&parent_dir(&self.path)).map_err(|e| self.io(e))?;
            self.dir_unsynced = false;
        }
        if self.len > (2 * self.live_bytes).max(self.min_compact) {
            if let Err(e) = self.compact() {
                self.compaction_failures += 1;
                tracing::warn!(error = %e, "snapshot log compaction failed; retried after the next append");
            }
        }
        Ok(written)
    }

    /// The file's size in bytes.
    pub fn file_bytes(&self) -> u64 {
        self.len
    }

    /// The encoded size of the live entries and offsets: a compacted file is this plus a few
    /// bytes.
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    fn io(&self, source: io::Error) -> SnapshotError {
        SnapshotError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Rewrites the file as one batch of the live entries and offsets.
    fn compact(&mut self) -> Result<(), SnapshotError> {
        let tmp = temp_path(&self.path).map_err(|e| self.io(e))?;
        let Compacted { file, len, slots } = match self.write_compacted(&tmp) {
            Ok(done) => done,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        if let Err(e) = fs::rename(&tmp, &self.path) {
            let _ = fs::remove_file(&tmp);
            return Err(self.io(e));
        }
        self.file = file;
        self.len = len;
        for (slot, key) in slots {
            if let Some(s) = self.live.get_mut(&key) {
                s.pos = slot.pos;
            }
        }
        if let Err(e) = sync_dir(&parent_dir(&self.path)) {
            self.dir_unsynced = true;
            return Err(self.io(e));
        }
        Ok(())
    }

    /// Writes the compacted file to `tmp` and fsyncs it. Returns it, its length, and the live
    /// slots at their new positions.
    fn write_compacted(&self, tmp: &Path) -> Result<Compacted, SnapshotError> {
        let tmp_err = |source| SnapshotError::Io {
            path: tmp.to_path_buf(),
            source,
        };
        let mut order: Vec<(Slot, Key)> = self.live.iter().map(|(k, s)| (*s, *k)).collect();
        order.sort_unstable_by_key(|(s, _)| s.pos);
        let mut offsets: Vec<(&str, i32, i64)> = self
            .offsets
            .iter()
            .map(|((t, p), o)| (t.as_str(), *p, *o))
            .collect();
        offsets.sort_unstable();
        let payload_len =
            varint_len(order.len() as u64) + varint_len(offsets.len() as u64) + self.live_bytes;
        if payload_len > u64::from(u32::MAX) {
            return Err(SnapshotError::TooLarge {
                path: self.path.clone(),
                bytes: payload_len,
            });
        }

        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(tmp)
            .map_err(tmp_err)?;
        let crc = {
            let mut out = BufWriter::with_capacity(BUFFER, &file);
            out.write_all(&HEADER).map_err(tmp_err)?;
            out.write_all(&[0; FRAME_LEN as usize]).map_err(tmp_err)?;
            let mut out = CrcWriter {
                out,
                crc: crc32fast::Hasher::new(),
                n: 0,
            };
            let mut src = BufReader::with_capacity(BUFFER, &self.file);
            src.seek(SeekFrom::Start(0)).map_err(|e| self.io(e))?;
            let mut at = 0;
            let mut value = Vec::new();
            let mut head = Vec::with_capacity(20);
            head.clear();
            put_varint(&mut head, order.len() as u64);
            out.put(&head).map_err(tmp_err)?;
            for (slot, key) in &mut order {
                head.clear();
                head.push(key.detector);
                head.push(key.table);
                head.extend_from_slice(&key.key.to_le_bytes());
                put_varint(&mut head, u64::from(slot.len) + 1);
                out.put(&head).map_err(tmp_err)?;
                value.resize(slot.len as usize, 0);
                let gap = slot.pos.checked_sub(at).ok_or_else(|| {
                    self.io(io::Error::other(format!(
                        "live values overlap at byte {}",
                        slot.pos
                    )))
                })?;
                src.seek_relative(gap as i64)
                    .and_then(|()| src.read_exact(&mut value))
                    .map_err(|e| self.io(e))?;
                at = slot.pos + u64::from(slot.len);
                slot.pos = HEADER_LEN + FRAME_LEN + out.n;
                out.put(&value).map_err(tmp_err)?;
            }
            head.clear();
            put_varint(&mut head, offsets.len() as u64);
            for (topic, partition, next) in offsets {
                put_offset(&mut head, topic, partition, next);
            }
            out.put(&head).map_err(tmp_err)?;
            if out.n != payload_len {
                // The live accounting is wrong: keep the current file.
                return Err(tmp_err(io::Error::other(format!(
                    "compacted payload is {} bytes, expected {payload_len}",
                    out.n
                ))));
            }
            let CrcWriter { mut out, crc, .. } = out;
            out.flush().map_err(tmp_err)?;
            crc.finalize()
        };
        let mut frame = [0; FRAME_LEN as usize];
        frame[..4].copy_from_slice(&(payload_len as u32).to_le_bytes());
        frame[4..].copy_from_slice(&crc.to_le_bytes());
        (&file)
            .seek(SeekFrom::Start(HEADER_LEN))
            .and_then(|_| (&file).write_all(&frame))
            .and_then(|()| file.sync_all())
            .map_err(tmp_err)?;
        Ok(Compacted {
            file,
            len: HEADER_LEN + FRAME_LEN + payload_len,
            slots: order,
        })
    }
}

/// A compacted file, fsynced, not yet renamed over the log.
struct Compacted {
    file: File,
    len: u64,
    /// The live slots at their positions in `file`.
    slots: Vec<(Slot, Key)>,
}

/// Writes payload bytes, hashing and counting them.
struct CrcWriter<W: Write> {
    out: W,
    crc: crc32fast::Hasher,
    n: u64,
}

impl<W: Write> CrcWriter<W> {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.crc.update(bytes);
        self.n += bytes.len() as u64;
        self.out.write_all(bytes)
    }
}

fn write_at(mut file: &File, pos: u64, frame: &[u8], payload: &[u8]) -> io::Result<()> {
    file.seek(SeekFrom::Start(pos))?;
    file.write_all(frame)?;
    file.write_all(payload)
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn temp_path(path: &Path) -> io::Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the snapshot log path names no file",
        )
    })?;
    let mut tmp = name.to_os_string();
    tmp.push(".compacting");
    Ok(path.with_file_name(tmp))
}

/// Makes a rename or a new file in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

fn value_len(e: &Entry) -> usize {
    e.value.as_ref().map_or(0, Vec::len)
}

fn varint_len(v: u64) -> u64 {
    u64::from((64 - (v | 1).leading_zeros()).div_ceil(7))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The encoded size of a live entry with a value of `len` bytes.
fn entry_size(len: usize) -> u64 {
    10 + varint_len(len as u64 + 1) + len as u64
}

fn offset_size(topic: &str) -> u64 {
    varint_len(topic.len() as u64) + topic.len() as u64 + 12
}

fn put_offset(out: &mut Vec<u8>, topic: &str, partition: i32, next: i64) {
    put_varint(out, topic.len() as u64);
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(&partition.to_le_bytes());
    out.extend_from_slice(&next.to_le_bytes());
}

/// Appends a batch's payload to `out`, and the payload position of each entry's value to
/// `value_at`.
fn encode_payload(
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
type ValueRef<'a> = Option<(usize, &'a [u8])>;

/// A decoded payload, borrowing from it.
struct Batch<'a> {
    entries: Vec<(Key, ValueRef<'a>)>,
    offsets: Vec<(&'a str, i32, i64)>,
}

fn decode_payload(payload: &[u8]) -> Result<Batch<'_>, String> {
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
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
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

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn varint(&mut self) -> Result<u64, String> {
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
    fn count(&mut self, min_size: usize) -> Result<usize, String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn entry(detector: u8, table: u8, key: u64, value: Option<&[u8]>) -> Entry {
        Entry {
            detector,
            table,
            key,
            value: value.map(<[u8]>::to_vec),
        }
    }

    fn offs(list: &[(&str, i32, i64)]) -> Vec<(String, i32, i64)> {
        list.iter()
            .map(|(t, p, o)| (t.to_string(), *p, *o))
            .collect()
    }

    fn reopen(path: &Path) -> Loaded {
        SnapshotLog::open(path).expect("opens").1
    }

    /// Entries of `n` bytes each, distinct per key and `seed`.
    fn batch(keys: std::ops::Range<u64>, n: usize, seed: u8) -> Vec<Entry> {
        keys.map(|k| {
            let v: Vec<u8> = (0..n).map(|i| (k as u8) ^ (i as u8) ^ seed).collect();
            entry((k % 3) as u8, (k % 2) as u8, k, Some(&v))
        })
        .collect()
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir/state.snap");
        let (mut log, loaded) = SnapshotLog::open(&path).unwrap();
        assert_eq!(loaded, Loaded::default());
        assert_eq!(log.file_bytes(), HEADER_LEN);
        let entries = vec![
            entry(1, 0, 7, Some(b"seven")),
            entry(2, 1, u64::MAX, Some(&[0xff; 300])),
            entry(250, 3, 0, Some(b"")),
        ];
        let offsets = offs(&[("cloudtrail", 0, 42), ("cloudtrail", 1, 7), ("gcp", 0, -1)]);
        let written = log.append(&entries, &offsets).unwrap();
        assert_eq!(log.file_bytes(), HEADER_LEN + written);
        assert_eq!(fs::metadata(&path).unwrap().len(), log.file_bytes());
        let live = log.live_bytes();
        drop(log);

        let (log, loaded) = SnapshotLog::open(&path).unwrap();
        assert_eq!(loaded.entries, entries);
        assert_eq!(loaded.offsets, offsets);
        assert_eq!(loaded.batches, 1);
        assert_eq!(loaded.discarded_bytes, 0);
        assert_eq!(log.live_bytes(), live);
        // One batch of live data: the file is the live bytes plus header, frame and counts.
        assert_eq!(log.file_bytes(), live + HEADER_LEN + FRAME_LEN + 2);
    }

    #[test]
    fn last_write_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.snap");
        let (mut log, _) = SnapshotLog::open(&path).unwrap();
        log.append(
            &[
                entry(1, 0, 1, Some(b"a1")),
                entry(1, 0, 2, Some(b"b1")),
                entry(1, 1, 1, Some(b"other table")),
            ],
            &[],
        )
        .unwrap();
        log.append(
            &[
                entry(1, 0, 2, Some(b"b2")),
                entry(1, 0, 1, Some(b"a2")),
                entry(1, 0, 2, Some(b"b3, same batch")),
            ],
            &[],
        )
        .unwrap();
        let loaded = reopen(&path);
        // In the order of their last write.
        assert_eq!(
            loaded.entries,
            vec![
                entry(1, 1, 1, Some(b"other table")),
                entry(1, 0, 1, Some(b"a2")),
                entry(1, 0, 2, Some(b"b3, same batch")),
            ]
        );
        assert_eq!(loaded.batches, 2);
    }

    #[test]
    fn tombstones_remove() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.snap");
        let (mut log, _) = SnapshotLog::open(&path).unwrap();
        log.append(
            &[
                entry(1, 0, 1, Some(b"gone")),
                entry(1, 0, 2, Some(b"back")),
                entry(1, 0, 3, Some(b"stays")),
            ],
            &[],
        )
        .unwrap();
        log.append(
            &[
                entry(1, 0, 1, None),
                entry(1, 0, 2, None),
                entry(1, 0, 9, None), // never written
            ],
            &[],
        )
        .unwrap();
        let after_tombstones = log.live_bytes();
        log.append(&[entry(1, 0, 2, Some(b"again"))], &[]).unwrap();
        let loaded = reopen(&path);
        assert_eq!(
            loaded.entries,
            vec![
                entry(1, 0, 3, Some(b"stays")),
                entry(1, 0, 2, Some(b"again"))
            ]
        );
        assert_eq!(after_tombstones, entry_size(b"stays".len()));
    }

    #[test]
    fn offsets_last_write_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.snap");
        let (mut log, _) = SnapshotLog::open(&path).unwrap();
        log.append(&[], &offs(&[("b", 1, 10), ("a", 0, 5), ("b", 0, 3)]))
            .unwrap();
        log.append(&[], &offs(&[("b", 1, 11), ("b", 1, 12), ("c", 2, 1)]))
            .unwrap();
        let loaded = reopen(&path);
        assert_eq!(
            loaded.offsets,
            offs(&[("a", 0, 5), ("b", 0, 3), ("b", 1, 12), ("c", 2, 1)])
        );
        assert!(loaded.entries.is_empty());
    }

    /// Two batches; returns the file length after each and what the first one loads as.
    fn two_batches(path: &Path) -> (u64, u64, Loaded) {
        let (mut log, _) = SnapshotLog::open(path).unwrap();
        log.append(&batch(0..20, 30, 1), &offs(&[("t", 0, 100)]))
            .unwrap();
        let first = log.file_bytes();
        drop(log);
        let after_first = reopen(path);
        let (mut log, _) = SnapshotLog::open(path).unwrap();
        log.append(
            &[batch(10..30, 30, 2), vec![entry(0, 1, 3, None)]].concat(),
            &offs(&[("t", 0, 200), ("t", 1, 50)]),
        )
        .unwrap();
        (first, log.file_bytes(), after_first)
    }

    #[test]
    fn torn_tail_loads_the_previous_batch_at_every_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.snap");
        let (first, second, after_first) = two_batches(&path);
        let whole = fs::read(&path).unwrap();
        assert_eq!(whole.len() as u64, second);
        let complete = reopen(&path);
        assert_ne!(complete.entries, after_first.entries);
        assert_ne!(complete.offsets, after_first.offsets);

        for cut in first + 1..second {
            fs::write(&path, &whole[..cut as usize]).unwrap();
            let (log, loaded) = SnapshotLog::open(&path).unwrap();
            assert_eq!(loaded.entries, after_first.entries, "cut at {cut}");
            assert_eq!(loaded.offsets, after_first.offsets, "cut at {cut}");
            assert_eq!(loaded.batches, 1);
            assert_eq!(loaded.discarded_bytes, cut - first, "cut at {cut}");
            assert_eq!(log.file_bytes(), first);
            assert_eq!(fs::metadata(&path).unwrap().len(), first, "truncated");
        }

        // Appending after the cut: the new batch follows the first one and loads.
        let (mut log, _) = SnapshotLog::open(&path).unwrap();
        log.append(
            &[entry(0, 1, 3, None), entry(7, 7, 7, Some(b"new"))],
            &offs(&[("t", 0, 300)]),
        )
        .unwrap();
        drop(log);
        let loaded = reopen(&path);
        assert_eq!(loaded.discarded_bytes, 0);
        assert_eq!(loaded.batches, 2);
        let mut expected: Vec<Entry> = after_first
            .entries
            .iter()
            .filter(|e| e.key != 3)
            .cloned()
            .collect();
        expected.push(entry(7, 7, 7, Some(b"new")));
        assert_eq!(loaded.entries, expected);
        assert_eq!(loaded.offsets, offs(&[("t", 0, 300)]));
    }

    #[test]
    fn a_flipped_byte_cuts_off_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.snap");
        let (first, second, after_first) = two_batches(&path);
        let whole = fs::read(&path).unwrap();
        for at in first..second {
            let mut bad = whole.clone();
            bad[at as usize] ^= 0x10;
            fs::write(&path, &bad).unwrap();
            let (log, loaded) = SnapshotLog::open(&path).unwrap();
            assert_eq!(loaded.entries, after_first.entries, "flip at {at}");
            assert_eq!(loaded.offsets, after_first.offsets, "flip at {at}");
            assert_eq!(loaded.discarded_bytes, second - first, "flip at {at}");
            assert_eq!(log.file_bytes(), first);
        }
    }

    #[test]
    fn a_bad_batch_in_the_middle_cuts_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.snap");
        let (first, second, after_first) = two_batches(&path);
        let (mut log, _) = SnapshotLog::open(&path).unwrap();
        log.append(&batch(100..110, 5, 3), &[]).unwrap();
        let third = log.file_bytes();
        drop(log);
        let mut bad = fs::read(&path).unwrap();
        bad[(first + (second - first) / 2) as usize] ^= 1;
        fs::write(&path, &bad).unwrap();
        let loaded = reopen(&path);
        assert_eq!(loaded.entries, after_first.entries);
        assert_eq!(loaded.discarded_bytes, third - first);
    }

    #[test]
    fn a_zero_filled_tail_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.snap");
        let (_, second, _) = two_batches(&path);
        let complete = reopen(&path);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[0; 4096]).unwrap();
        drop(f);
        let (log, loaded) = SnapshotLog::open(&path).unwrap();
        assert_eq!(loaded.discarded_bytes, 4096);
        assert_eq!(loaded.entries, complete.entries);
        assert_eq!(log.file_bytes(), second);
    }

    #[test]
    fn a_torn_header_starts_over_and_other_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.snap");
        fs::write(&path, &HEADER[..5]).unwrap();
        let (log, loaded) = SnapshotLog::open(&path).unwrap();
        assert_eq!(loaded.discarded_bytes, 5);
        assert_eq!(log.file_bytes(), HEADER_LEN);
        assert_eq!(fs::read(&path).unwrap(), HEADER);
        drop(log);

        for other in [&b"{\"json\": true}\n"[..], b"XY"] {
            let path = dir.path().join("other");
            fs::write(&path, other).unwrap();
            let e = SnapshotLog::open(&path).unwrap_err();
            assert!(matches!(e, SnapshotError::NotSnapshot { .. }), "{e}");
            assert!(e.to_string().contains(&*path.to_string_lossy()), "{e}");
            assert_eq!(fs::read(&path).unwrap(), other, "left as it was");
        }
    }

    #[test]
    fn an_unknown_version_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("future.snap");
        let mut bytes = MAGIC.to_vec();
        bytes.push(VERSION + 1);
        bytes.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 9]);
        fs::write(&path, &bytes).unwrap();
        let e = SnapshotLog::open(&path).unwrap_err();
        match &e {
            SnapshotError::Version { path: p, found } => {
                assert_eq!(p, &path);
                assert_eq!(*found, VERSION + 1);
            }
            other => panic!("{other}"),
        }
        let message = e.to_string();
        assert!(message.contains(&*path.to_string_lossy()), "{message}");
        assert!(
            message.contains(&format!("version {}", VERSION + 1)),
            "{message}"
        );
        assert_eq!(fs::read(&path).unwrap(), bytes, "left as it was");
    }

    #[test]
    fn a_checksummed_batch_that_does_not_decode_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.snap");
        let payload = [5u8, 1, 2, 3]; // 5 entries, 3 bytes
        let mut bytes = HEADER.to_vec();
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        fs::write(&path, &bytes).unwrap();
        let e = SnapshotLog::open(&path).unwrap_err();
        assert!(
            matches!(
                e,
                SnapshotError::Corrupt {
                    offset: HEADER_LEN,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains(&*path.to_string_lossy()), "{e}");
        assert_eq!(fs::read(&path).unwrap(), bytes, "left as it was");
    }

    #[test]
    fn compaction_shrinks_the_file_and_loads_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.snap");
        let plain_path = dir.path().join("plain.snap");
        let (mut log, _) = SnapshotLog::open(&path).unwrap();
        let (mut plain, _) = SnapshotLog::open_with(&plain_path, u64::MAX).unwrap();
        let mut compactions = 0;
        for round in 0..40u64 {
            // 1,000 keys of 200 bytes; each round rewrites 300 of them and drops 10.
            let mut entries = if round == 0 {
                batch(0..1000, 200, 0)
            } else {
                batch(round * 7..round * 7 + 300, 200, round as u8)
            };
            entries.extend((0..10).map(|i| entry(0, 0, round * 20 + i, None)));
            let offsets = offs(&[("t", (round % 3) as i32, round as i64)]);
            let before = log.file_bytes();
            let written = log.append(&entries, &offsets).unwrap();
            plain.append(&entries, &offsets).unwrap();
            assert_eq!(log.compaction_failures, 0);
            if log.file_bytes() < before + written {
                compactions += 1;
                assert!(log.file_bytes() < before, "compaction shrinks the file");
                assert!(log.file_bytes() <= log.live_bytes() + 32);
            }
            assert!(log.file_bytes() <= (2 * log.live_bytes()).max(MIN_COMPACT_BYTES));
            assert_eq!(fs::metadata(&path).unwrap().len(), log.file_bytes());
        }
        assert!(compactions > 0, "the file passed 1 MiB and was compacted");
        assert!(plain.file_bytes() > log.file_bytes());
        assert_eq!(log.live_bytes(), plain.live_bytes());
        drop((log, plain));

        let compacted = reopen(&path);
        let appended = SnapshotLog::open_with(&plain_path, u64::MAX).unwrap().1;
        assert_eq!(compacted.entries, appended.entries);
        assert_eq!(compacted.offsets, appended.offsets);
        assert!(compacted.batches < appended.batches);
        assert_eq!(appended.batches, 40);
        assert_eq!(compacted.discarded_bytes, 0);
        assert!(!dir.path().join("state.snap.compacting").exists());
    }

    #[test]
    fn a_leftover_temporary_file_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.snap");
        let tmp = dir.path().join("state.snap.compacting");
        fs::write(&tmp, b"half a compaction").unwrap();
        SnapshotLog::open(&path).unwrap();
        assert!(!tmp.exists());
    }

    #[test]
    fn varints() {
        for v in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len() as u64, varint_len(v), "{v}");
            let mut r = Reader { buf: &out, at: 0 };
            assert_eq!(r.varint().unwrap(), v);
            assert_eq!(r.at, out.len());
        }
        let overflow = [0xff; 10];
        assert!(Reader {
            buf: &overflow,
            at: 0
        }
        .varint()
        .is_err());
    }

    type Model = HashMap<(u8, u8, u64), (u64, Vec<u8>)>;

    /// What the model says the log loads as.
    fn expected(
        model: &Model,
        offsets: &BTreeMap<(String, i32), i64>,
    ) -> (Vec<Entry>, Vec<(String, i32, i64)>) {
        let mut entries: Vec<_> = model.iter().collect();
        entries.sort_by_key(|(_, (seq, _))| *seq);
        let entries = entries
            .into_iter()
            .map(|((d, t, k), (_, v))| entry(*d, *t, *k, Some(v)))
            .collect();
        let offsets = offsets
            .iter()
            .map(|((t, p), o)| (t.clone(), *p, *o))
            .collect();
        (entries, offsets)
    }

    fn arb_batch() -> impl Strategy<Value = (Vec<Entry>, Vec<(String, i32, i64)>, bool)> {
        let entry = (
            0u8..3,
            0u8..2,
            0u64..8,
            prop::option::weighted(0.8, prop::collection::vec(any::<u8>(), 0..40)),
        )
            .prop_map(|(detector, table, key, value)| Entry {
                detector,
                table,
                key,
                value,
            });
        let offset = (
            prop::sample::select(vec!["cloudtrail", "gcp", ""]),
            0i32..3,
            any::<i64>(),
        )
            .prop_map(|(t, p, o)| (t.to_string(), p, o));
        (
            prop::collection::vec(entry, 0..40),
            prop::collection::vec(offset, 0..4),
            any::<bool>(),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn appends_load_like_a_map(
            batches in prop::collection::vec(arb_batch(), 1..40),
            min_compact in prop::sample::select(vec![0u64, 600, u64::MAX]),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("state.snap");
            let mut model: Model = HashMap::new();
            let mut model_offsets = BTreeMap::new();
            let mut seq = 0u64;
            let (mut log, _) = SnapshotLog::open_with(&path, min_compact).unwrap();
            for (entries, offsets, reopen_after) in &batches {
                log.append(entries, offsets).unwrap();
                prop_assert_eq!(log.compaction_failures, 0);
                for e in entries {
                    seq += 1;
                    match &e.value {
                        Some(v) => { model.insert((e.detector, e.table, e.key), (seq, v.clone())); }
                        None => { model.remove(&(e.detector, e.table, e.key)); }
                    }
                }
                for (t, p, o) in offsets {
                    model_offsets.insert((t.clone(), *p), *o);
                }
                if *reopen_after {
                    let live = log.live_bytes();
                    drop(log);
                    let (again, loaded) = SnapshotLog::open_with(&path, min_compact).unwrap();
                    log = again;
                    let (entries, offsets) = expected(&model, &model_offsets);
                    prop_assert_eq!(&loaded.entries, &entries);
                    prop_assert_eq!(&loaded.offsets, &offsets);
                    prop_assert_eq!(loaded.discarded_bytes, 0);
                    prop_assert_eq!(log.live_bytes(), live);
                }
            }
            let live = log.live_bytes();
            drop(log);
            let (log, loaded) = SnapshotLog::open_with(&path, min_compact).unwrap();
            let (entries, offsets) = expected(&model, &model_offsets);
            prop_assert_eq!(&loaded.entries, &entries);
            prop_assert_eq!(&loaded.offsets, &offsets);
            prop_assert_eq!(log.live_bytes(), live);
            prop_assert_eq!(fs::metadata(&path).unwrap().len(), log.file_bytes());
        }

        #[test]
        fn any_bytes_after_the_header_open_without_panicking(
            tail in prop::collection::vec(any::<u8>(), 0..200),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("state.snap");
            fs::write(&path, [&HEADER[..], &tail].concat()).unwrap();
            if let Ok((mut log, _)) = SnapshotLog::open(&path) {
                log.append(&[entry(1, 1, 1, Some(b"x"))], &[]).unwrap();
                let loaded = reopen(&path);
                prop_assert!(loaded.entries.contains(&entry(1, 1, 1, Some(b"x"))));
            }
        }
    }
}
