//! Snapshot log figures per 1M keys: a full batch, a load, and incremental batches with compaction.
//!
//! Builds realistic entries the way `benches/changelog.rs` does: an engine with change tracking
//! fed N / 2 distinct principals (each one `GetSecretValue` and one `DescribeInstances`, so two
//! keyed detectors hold N keys), and one checkpoint (every key is new, so every key is in it).
//! Then, in a temporary directory (`SNAPSHOT_BENCH_DIR` to choose the disk):
//! 1. appends that checkpoint as one batch (encode + write + fsync) and reports the file size;
//! 2. opens the file (read + CRC + decode + last-write-wins; warm page cache);
//! 3. appends 100 incremental batches of 10k changed keys each (values of other keys of the same
//!    set, so realistic sizes), compacting when the file passes twice the live bytes. 100 × 10k
//!    changes add about one live set, so the file ends near the threshold; so
//! 4. keeps appending such batches until the first compaction (at most 100 more), and times it;
//! 5. opens the final file and checks it holds the expected state.
//!
//! Run: `cargo bench --bench snapshot` (`SNAPSHOT_BENCH_KEYS` to change N).

mod common;

use cloudwarden::state::snapshot::SnapshotLog;
use cloudwarden::state::Entry;
use std::collections::HashMap;
use std::time::{Duration, Instant};

const BATCHES: usize = 100;
const CHANGED: usize = 10_000;
const PARTITIONS: i32 = 12;

/// A full checkpoint of an engine holding `n` keys.
fn entries(n: usize) -> Vec<Entry> {
    let (_, mut engine) = common::tracked_engine(n.div_ceil(2));
    engine.checkpoint()
}

fn offsets(batch: i64) -> Vec<(String, i32, i64)> {
    (0..PARTITIONS)
        .map(|p| {
            (
                "cloudtrail".to_string(),
                p,
                1_000_000 + batch * 1_000 + i64::from(p),
            )
        })
        .collect()
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn main() {
    let n: usize = std::env::var("SNAPSHOT_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let started = Instant::now();
    let full = entries(n);
    let build = started.elapsed();
    let value_bytes: usize = full
        .iter()
        .map(|e| e.value.as_ref().map_or(0, Vec::len))
        .sum();

    let dir = match std::env::var_os("SNAPSHOT_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .expect("a temporary directory");
    let path = dir.path().join("state.snap");

    // 1. One full batch.
    let (mut log, _) = SnapshotLog::open(&path).expect("opens");
    let started = Instant::now();
    let written = log.append(&full, &offsets(0)).expect("appends");
    let append = started.elapsed();
    let full_file = log.file_bytes();
    let live = log.live_bytes();
    drop(log);

    // 2. Load it.
    let started = Instant::now();
    let (log, loaded) = SnapshotLog::open(&path).expect("opens");
    let load = started.elapsed();
    assert_eq!(loaded.entries, full, "loads what was appended");
    drop(loaded);

    // 3. Incremental batches: 10k keys each get the value of another key (a deterministic LCG
    // picks them; some keys change twice, most once or never).
    let mut log = log;
    let mut model: HashMap<(u8, u8, u64), usize> = full
        .iter()
        .enumerate()
        .map(|(i, e)| ((e.detector, e.table, e.key), i))
        .collect();
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        rng = rng
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (rng >> 33) as usize
    };
    let mut step = |log: &mut SnapshotLog, b: usize| -> Step {
        let batch: Vec<Entry> = (0..CHANGED)
            .map(|_| {
                let i = next() % full.len();
                let from = next() % full.len();
                let e = &full[i];
                model.insert((e.detector, e.table, e.key), from);
                Entry {
                    value: full[from].value.clone(),
                    ..e.clone()
                }
            })
            .collect();
        let before = log.file_bytes();
        let started = Instant::now();
        let written = log.append(&batch, &offsets(b as i64)).expect("appends");
        let took = started.elapsed();
        Step {
            took,
            written,
            before: before + written,
            compacted: log.file_bytes() < before + written,
        }
    };

    let mut total = Duration::ZERO;
    let mut slowest = Duration::ZERO;
    let mut compactions = 0;
    let mut appended = 0;
    let mut first_compaction = None;
    for b in 1..=BATCHES {
        let s = step(&mut log, b);
        total += s.took;
        slowest = slowest.max(s.took);
        appended += s.written;
        if s.compacted {
            compactions += 1;
            first_compaction.get_or_insert((b, s.took, s.before, log.file_bytes()));
        }
    }
    let (file_100, live_100) = (log.file_bytes(), log.live_bytes());

    // 4. Until the first compaction.
    let mut batches = BATCHES;
    while first_compaction.is_none() && batches < 2 * BATCHES {
        batches += 1;
        let s = step(&mut log, batches);
        if s.compacted {
            first_compaction = Some((batches, s.took, s.before, log.file_bytes()));
        }
    }
    let final_file = log.file_bytes();
    drop(log);

    // 5. Load the result and check it.
    let started = Instant::now();
    let (_, loaded) = SnapshotLog::open(&path).expect("opens");
    let final_load = started.elapsed();
    assert_eq!(loaded.entries.len(), full.len());
    for e in &loaded.entries {
        let from = model[&(e.detector, e.table, e.key)];
        assert_eq!(e.value, full[from].value, "last write wins");
    }
    assert_eq!(loaded.offsets, offsets(batches as i64));

    let per_m = 1_000_000.0 / full.len() as f64;
    println!(
        "snapshot log: {} entries (an engine checkpoint of {n} keys, built in {:.1} s): values {:.0} B, {:.0} B/entry encoded; live {:.1} MB",
        full.len(),
        build.as_secs_f64(),
        value_bytes as f64 / full.len() as f64,
        live as f64 / full.len() as f64,
        mb(live)
    );
    println!("| step | time | rate | file |");
    println!("|---|---|---|---|");
    println!(
        "| append 1 full batch (encode + write + fsync) | {:.2} s ({:.2} s per 1M keys) | {:.0} MB/s | {:.1} MB |",
        append.as_secs_f64(),
        append.as_secs_f64() * per_m,
        mb(written) / append.as_secs_f64(),
        mb(full_file)
    );
    println!(
        "| open + load it (warm page cache) | {:.2} s ({:.2} s per 1M keys) | {:.0} MB/s | |",
        load.as_secs_f64(),
        load.as_secs_f64() * per_m,
        mb(full_file) / load.as_secs_f64()
    );
    println!(
        "| {BATCHES} incremental batches × {}k keys ({:.1} MB appended; {compactions} compaction(s)) | {:.2} s total, {:.1} ms mean, {:.0} ms slowest | {:.0} MB/s | {:.1} MB (live {:.1} MB) |",
        CHANGED / 1000,
        mb(appended),
        total.as_secs_f64(),
        total.as_secs_f64() * 1e3 / BATCHES as f64,
        slowest.as_secs_f64() * 1e3,
        mb(appended) / total.as_secs_f64(),
        mb(file_100),
        mb(live_100)
    );
    match first_compaction {
        Some((b, took, before, after)) => println!(
            "| first compaction: batch {b}, append + compaction | {:.2} s | | {:.1} MB -> {:.1} MB |",
            took.as_secs_f64(),
            mb(before),
            mb(after)
        ),
        None => println!("| no compaction within {batches} batches | | | |"),
    }
    println!(
        "| open + load the final file ({batches} batches appended) | {:.2} s | {:.0} MB/s | {:.1} MB |",
        final_load.as_secs_f64(),
        mb(final_file) / final_load.as_secs_f64(),
        mb(final_file)
    );
}

struct Step {
    took: Duration,
    written: u64,
    /// The file's size with the batch, before any compaction.
    before: u64,
    compacted: bool,
}
