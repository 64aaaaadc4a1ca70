//! Replay: hunt over old log files with the very same engine as the live service.
//!
//! Inputs are files or `-` (stdin): NDJSON (one record per line), a single JSON document (a
//! CloudTrail S3 log file `{"Records": [...]}`, an Event Hub export, a JSON array), each possibly
//! gzip-compressed (detected by magic bytes, not by name). Records are put in event-time order
//! across files, so alerts do not depend on the order files are given: each file passes through
//! a bounded reordering buffer (a min-heap of `replay.reorder_buffer` events), and the files are
//! merged by event time (a k-way merge). At end of input the watermark moves to the newest event
//! time, so silence is evaluated.

use crate::alert::Alert;
use crate::engine::Engine;
use crate::event::{decode_record_raw, CloudEvent, DecodeError, DecodeLimits};
use flate2::read::MultiGzDecoder;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// Where records come from.
#[derive(Debug, Clone)]
pub enum Input {
    Stdin,
    File(PathBuf),
}

impl Input {
    pub fn parse(arg: &str) -> Input {
        if arg == "-" {
            Input::Stdin
        } else {
            Input::File(PathBuf::from(arg))
        }
    }

    pub fn name(&self) -> String {
        match self {
            Input::Stdin => "-".to_owned(),
            Input::File(p) => p.display().to_string(),
        }
    }

    fn open(&self) -> io::Result<Box<dyn BufRead>> {
        let raw: Box<dyn Read> = match self {
            Input::Stdin => Box::new(io::stdin().lock()),
            Input::File(p) => Box::new(std::fs::File::open(p)?),
        };
        let mut buffered = BufReader::with_capacity(1 << 16, raw);
        let is_gzip = buffered.fill_buf()?.starts_with(&[0x1f, 0x8b]);
        Ok(if is_gzip {
            Box::new(BufReader::with_capacity(
                1 << 16,
                MultiGzDecoder::new(buffered),
            ))
        } else {
            Box::new(buffered)
        })
    }
}

/// One raw record and where it came from.
pub struct RawRecord {
    pub bytes: Vec<u8>,
    /// 1-based line number (NDJSON) or 1 (whole-document inputs).
    pub line: u64,
}

/// Reads the raw records of one input: NDJSON lines, or the whole input as one record when its
/// first line is not a complete JSON object (a pretty-printed document).
pub struct RecordReader {
    reader: Box<dyn BufRead>,
    line: u64,
    mode: Option<bool>,
    done: bool,
    bytes_read: u64,
}

impl RecordReader {
    pub fn open(input: &Input) -> io::Result<RecordReader> {
        Ok(RecordReader {
            reader: input.open()?,
            line: 0,
            mode: None,
            done: false,
            bytes_read: 0,
        })
    }

    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// The next record, or `None` at end of input.
    pub fn next_record(&mut self) -> io::Result<Option<RawRecord>> {
        loop {
            if self.done {
                return Ok(None);
            }
            let mut buf = Vec::new();
            let n = self.reader.read_until(b'\n', &mut buf)?;
            if n == 0 {
                self.done = true;
                return Ok(None);
            }
            self.bytes_read += n as u64;
            self.line += 1;
            let trimmed = trim_ascii(&buf);
            if trimmed.is_empty() {
                continue;
            }
            let ndjson = *self.mode.get_or_insert_with(|| looks_like_ndjson(trimmed));
            if ndjson {
                let len = trimmed.len();
                let start = trimmed.as_ptr() as usize - buf.as_ptr() as usize;
                buf.truncate(start + len);
                buf.drain(..start);
                return Ok(Some(RawRecord {
                    bytes: buf,
                    line: self.line,
                }));
            }
            // A whole document: the rest of the input is the same record.
            let n = self.reader.read_to_end(&mut buf)?;
            self.bytes_read += n as u64;
            self.done = true;
            return Ok(Some(RawRecord {
                bytes: buf,
                line: 1,
            }));
        }
    }
}

/// Whether an input whose first non-empty line is `first` is NDJSON. A complete JSON value is;
/// a line that opens a pretty-printed document (`{`, `[`, `{"Records": [`, ...) is not; anything
/// else (a truncated or garbled first record) is NDJSON too, so one bad line costs one record,
/// not the whole file.
fn looks_like_ndjson(first: &[u8]) -> bool {
    if serde_json::from_slice::<serde::de::IgnoredAny>(first).is_ok() {
        return true;
    }
    let opens_document = matches!(first.last(), Some(b'{' | b'[' | b',' | b':'));
    !opens_document
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end]
}

/// An owned event with its position, ordered by (time, input, sequence).
struct Queued {
    time: i64,
    input: usize,
    seq: u64,
    event: CloudEvent<'static>,
    /// The event's raw JSON, kept only when Sigma rules are loaded.
    raw: Option<Box<str>>,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}
impl Queued {
    fn key(&self) -> (i64, usize, u64) {
        (self.time, self.input, self.seq)
    }
}

/// A decode error met while reading, with its location.
#[derive(Debug, Clone)]
pub struct RecordError {
    pub input: String,
    pub line: u64,
    pub error: DecodeError,
}

/// One input's events in event-time order (within the reorder bound).
struct OrderedInput {
    reader: RecordReader,
    index: usize,
    name: String,
    heap: BinaryHeap<Reverse<Queued>>,
    bound: usize,
    seq: u64,
}

impl OrderedInput {
    /// Refills until the heap holds `bound` events or the input ends; returns the oldest.
    fn next(
        &mut self,
        limits: &DecodeLimits,
        keep_raw: bool,
        errors: &mut Vec<RecordError>,
    ) -> io::Result<Option<Queued>> {
        while self.heap.len() < self.bound {
            let Some(record) = self.reader.next_record()? else {
                break;
            };
            let mut events = Vec::new();
            let mut raws = Vec::new();
            let keep = keep_raw.then_some(&mut raws);
            match decode_record_raw(&record.bytes, limits, &mut events, keep) {
                Ok(()) => {
                    for (i, ev) in events.into_iter().enumerate() {
                        self.seq += 1;
                        self.heap.push(Reverse(Queued {
                            time: ev.time,
                            input: self.index,
                            seq: self.seq,
                            event: ev.into_owned(),
                            raw: raws.get(i).map(|r| Box::from(*r)),
                        }));
                    }
                }
                Err(error) => errors.push(RecordError {
                    input: self.name.clone(),
                    line: record.line,
                    error,
                }),
            }
        }
        Ok(self.heap.pop().map(|Reverse(q)| q))
    }
}

/// What a replay did.
#[derive(Debug, Clone, Default)]
pub struct ReplaySummary {
    pub bytes_read: u64,
    pub errors: Vec<RecordError>,
}

/// Replays `inputs` through `engine`, calling `emit` for each alert and `progress` now and then
/// with (events processed, bytes read).
pub fn replay(
    engine: &mut Engine,
    inputs: &[Input],
    reorder_buffer: usize,
    mut emit: impl FnMut(&Alert) -> io::Result<()>,
    mut progress: impl FnMut(u64, u64),
) -> io::Result<ReplaySummary> {
    let limits = &engine.limits();
    let keep_raw = !engine.sigma().is_off();
    let mut ordered = Vec::with_capacity(inputs.len());
    for (index, input) in inputs.iter().enumerate() {
        let reader = RecordReader::open(input)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", input.name())))?;
        ordered.push(OrderedInput {
            reader,
            index,
            name: input.name(),
            heap: BinaryHeap::new(),
            bound: reorder_buffer.max(1),
            seq: 0,
        });
    }
    let mut errors = Vec::new();
    // k-way merge: the head event of every input, oldest first.
    let mut heads: BinaryHeap<Reverse<Queued>> = BinaryHeap::new();
    for input in &mut ordered {
        if let Some(q) = input.next(limits, keep_raw, &mut errors)? {
            heads.push(Reverse(q));
        }
    }
    let mut alerts = Vec::new();
    let mut processed = 0u64;
    while let Some(Reverse(q)) = heads.pop() {
        let from = q.input;
        engine.process(&q.event, &mut alerts);
        if let Some(raw) = &q.raw {
            engine.match_sigma(&q.event, raw, &mut alerts);
        }
        processed += 1;
        for alert in alerts.drain(..) {
            emit(&alert)?;
        }
        if let Some(next) = ordered[from].next(limits, keep_raw, &mut errors)? {
            heads.push(Reverse(next));
        }
        if processed % 4096 == 0 {
            progress(
                processed,
                ordered.iter().map(|o| o.reader.bytes_read()).sum(),
            );
        }
    }
    engine.finish(&mut alerts);
    for alert in alerts.drain(..) {
        emit(&alert)?;
    }
    for e in &errors {
        engine.count_decode_error(&e.error);
    }
    let bytes_read = ordered.iter().map(|o| o.reader.bytes_read()).sum();
    progress(processed, bytes_read);
    Ok(ReplaySummary { bytes_read, errors })
}

/// Convenience for tests and tools: replays files and returns the alerts.
pub fn replay_files(
    engine: &mut Engine,
    paths: &[&Path],
    reorder_buffer: usize,
) -> io::Result<Vec<Alert>> {
    let inputs: Vec<Input> = paths.iter().map(|p| Input::File(p.to_path_buf())).collect();
    let mut out = Vec::new();
    replay(
        engine,
        &inputs,
        reorder_buffer,
        |a| {
            out.push(a.clone());
            Ok(())
        },
        |_, _| {},
    )?;
    Ok(out)
}
