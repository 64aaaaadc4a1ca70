//! Durable state figures: changelog size and restore time per 1M keys.
//!
//! Feeds an engine with change tracking on N = 1,000,000 distinct principals (each one
//! `GetSecretValue` and one `DescribeInstances`, so two keyed detectors hold N keys each),
//! takes a checkpoint (every key is new, so every key is written), and restores it into a fresh
//! engine. Prints entries, bytes per entry as the changelog stores them (record key + value),
//! checkpoint (encode) time and restore (decode + insert) time. In-process: the broker's share of
//! a restore (reading the changelog partition) comes on top, at the broker's fetch rate.
//! Run: `cargo bench --bench changelog` (`CHANGELOG_BENCH_KEYS` to change N).

mod common;

use cloudwarden::engine::Engine;
use std::time::Instant;

fn main() {
    let n: usize = std::env::var("CHANGELOG_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let (config, mut engine) = common::tracked_engine(n);
    let keys: usize = engine.detector_stats().iter().map(|(_, s)| s.keys).sum();

    let started = Instant::now();
    let entries = engine.checkpoint();
    let checkpoint = started.elapsed();
    let bytes: usize = entries
        .iter()
        .map(|e| e.record_key(0).len() + e.value.as_ref().map_or(0, Vec::len))
        .sum();

    let mut restored = Engine::new(&config).expect("valid config");
    let started = Instant::now();
    let failed = restored.restore(&entries);
    let restore = started.elapsed();
    assert!(failed.is_empty());
    let back: usize = restored.detector_stats().iter().map(|(_, s)| s.keys).sum();
    assert_eq!(back, keys, "every key restored");

    let per_m = 1_000_000.0 / keys as f64;
    println!(
        "changelog: {keys} keys ({n} principals in 2 detectors) -> {} entries, {:.1} MB ({:.0} B/entry: key + version byte + CBOR); {:.0} MB per 1M keys",
        entries.len(),
        bytes as f64 / 1e6,
        bytes as f64 / entries.len() as f64,
        bytes as f64 / 1e6 * per_m
    );
    println!(
        "checkpoint (encode every key): {:.2} s = {:.2} s per 1M keys; restore (decode + insert): {:.2} s = {:.2} s per 1M keys",
        checkpoint.as_secs_f64(),
        checkpoint.as_secs_f64() * per_m,
        restore.as_secs_f64(),
        restore.as_secs_f64() * per_m
    );
}
