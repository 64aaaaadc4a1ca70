//! The snapshot log's tests: round trips, last write wins, tombstones, every torn-tail cut, CRC
//! and decode failures, compaction, and a property test against a model of the log.

use super::format::Reader;
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
