//! Durable window state: an engine restored from its checkpoints continues exactly as one that
//! never stopped; unreadable entries are reported and only their keys start fresh.

use crate::util::{input_files, records};
use cloudwarden::alert::Alert;
use cloudwarden::config::Config;
use cloudwarden::engine::Engine;
use cloudwarden::state::{StateError, SUPPRESSION};
use std::collections::BTreeSet;

fn run(engine: &mut Engine, records: &[Vec<u8>], out: &mut Vec<Alert>) {
    for r in records {
        let _ = engine.process_record(r, out);
    }
}

fn ids(alerts: &[Alert]) -> BTreeSet<String> {
    alerts.iter().map(|a| a.id.clone()).collect()
}

#[test]
fn restored_engine_continues_as_if_never_stopped() {
    let records = records(&input_files());
    let config = Config::default();
    let mut whole = Vec::new();
    let mut uninterrupted = Engine::new(&config).unwrap();
    run(&mut uninterrupted, &records, &mut whole);
    uninterrupted.finish(&mut whole);

    // Checkpoints at a quarter and at the half (incremental: the second has only changes),
    // then a crash: a new engine restores both, in order, and reads on.
    let (q, h) = (records.len() / 4, records.len() / 2);
    let mut first = Engine::new(&config).unwrap();
    first.track_changes();
    let mut alerts = Vec::new();
    run(&mut first, &records[..q], &mut alerts);
    let cp1 = first.checkpoint();
    run(&mut first, &records[q..h], &mut alerts);
    let cp2 = first.checkpoint();
    assert!(cp2.len() < cp1.len() + cp2.len(), "incremental");
    let mut second = Engine::new(&config).unwrap();
    let failed = second.restore(cp1.iter().chain(&cp2));
    assert!(failed.is_empty(), "{failed:?}");
    run(&mut second, &records[h..], &mut alerts);
    second.finish(&mut alerts);
    assert!(!whole.is_empty());
    assert_eq!(ids(&alerts), ids(&whole));

    // Without the restore, the same second half misses or changes detections: the test can fail.
    let mut first_half = Vec::new();
    run(
        &mut Engine::new(&config).unwrap(),
        &records[..h],
        &mut first_half,
    );
    let mut cold = Engine::new(&config).unwrap();
    run(&mut cold, &records[h..], &mut first_half);
    cold.finish(&mut first_half);
    assert_ne!(
        ids(&first_half),
        ids(&whole),
        "a cold start must differ from a restore"
    );
}

#[test]
fn unreadable_entries_are_reported_and_only_their_keys_start_fresh() {
    let records = records(&input_files());
    let config = Config::default();
    let mut engine = Engine::new(&config).unwrap();
    engine.track_changes();
    run(&mut engine, &records, &mut Vec::new());
    let mut entries = engine.checkpoint();
    let keyed: Vec<usize> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.detector < SUPPRESSION && e.table == 0 && e.value.is_some())
        .map(|(i, _)| i)
        .collect();
    assert!(keyed.len() >= 3);
    // One entry with a future encoding version, one corrupt.
    entries[keyed[0]].value.as_mut().unwrap()[0] = 9;
    let v = entries[keyed[1]].value.as_mut().unwrap();
    v.truncate(v.len() / 2);
    let mut restored = Engine::new(&config).unwrap();
    let failed = restored.restore(&entries);
    let reasons: Vec<&StateError> = failed.iter().map(|(_, e)| e).collect();
    assert_eq!(failed.len(), 2, "{reasons:?}");
    assert_eq!(failed[0].1, StateError::Version(9));
    assert!(matches!(failed[1].1, StateError::Corrupt(_)));
    // The rest came back: the restored engine holds all other keys.
    let keys = |e: &Engine| -> usize { e.detector_stats().iter().map(|(_, s)| s.keys).sum() };
    assert_eq!(keys(&restored) + 2, keys(&engine));
}
