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

mod format;
#[cfg(test)]
mod tests;

use crate::state::Entry;
use crate::window::FastBuildHasher;
use format::{
    decode_payload, encode_payload, entry_size, offset_size, put_offset, put_varint, value_len,
    varint_len, Key, FRAME_LEN, HEADER, HEADER_LEN, MAGIC, VERSION,
};
use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

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
