//! The detector registry and the validated config, through the public API: the persisted
//! detector indices, the scope-keyed set the repartition step routes by, and a checked config
//! taken as is by the engine.

use cloudwarden::config::{Config, ConfigError};
use cloudwarden::detect::{detector_index, scope_keyed, DetectorSet, DETECTOR_NAMES};
use cloudwarden::engine::Engine;

/// The (index, name) pairs as shipped. The index is persisted: the state entry's detector byte,
/// the changelog record key, the snapshot file and the repartition `DetectorSet` bits carry it.
/// A line here may never change or go; a new detector is appended to the registry, then here.
const SHIPPED: [(usize, &str); 10] = [
    (0, "log_disable"),
    (1, "log_source_silence"),
    (2, "secret_fetch_rate"),
    (3, "discovery_burst"),
    (4, "quota_change"),
    (5, "tenant_settings"),
    (6, "event_trigger"),
    (7, "impair_defenses"),
    (8, "conditional_access"),
    (9, "serverless"),
];

#[test]
fn persisted_indices_are_pinned() {
    for (index, name) in SHIPPED {
        assert_eq!(
            DETECTOR_NAMES.get(index).copied(),
            Some(name),
            "detector index {index} is persisted as `{name}`: append to the registry, never move or remove a line"
        );
        assert_eq!(detector_index(name), index);
    }
    assert!(DETECTOR_NAMES.len() >= SHIPPED.len());
    assert!(DETECTOR_NAMES.len() <= 16, "DetectorSet is a u16");
}

/// Among the shipped detectors, the per-scope ones (the list the repartition step hard-coded).
#[test]
fn scope_keyed_detectors_are_the_per_scope_ones() {
    let expected = ["log_disable", "log_source_silence", "quota_change"]
        .iter()
        .fold(DetectorSet::default(), |s, d| s.with(detector_index(d)));
    let shipped = DetectorSet(scope_keyed().0 & ((1 << SHIPPED.len()) - 1));
    assert_eq!(shipped, expected);
}

#[test]
fn a_valid_config_is_taken_as_is() {
    let valid = Config::default().validated().unwrap();
    let engine = Engine::new(&valid).unwrap();
    // The engine holds the catalog the config compiled, not a compilation of its own.
    assert!(std::ptr::eq(engine.catalog(), &**valid.catalog()));
    // A raw config is still accepted, checked and compiled on the spot.
    let other = Engine::new(&Config::default()).unwrap();
    assert!(!std::ptr::eq(other.catalog(), &**valid.catalog()));
    // Clones share the value.
    let clone = valid.clone();
    assert!(std::ptr::eq(&**clone.catalog(), &**valid.catalog()));
    assert_eq!(clone.detectors.secret_fetch_rate.count_threshold, 20);
}

#[test]
fn validation_names_the_key_of_a_section_beside_its_detector() {
    let mut c = Config::default();
    c.detectors.discovery_burst.max_distinct = 3;
    match c.clone().validated() {
        Err(ConfigError::Invalid { key, .. }) => {
            assert_eq!(key, "detectors.discovery_burst.max_distinct")
        }
        other => panic!("expected an invalid key, got {other:?}"),
    }
    let err = Engine::new(&c)
        .err()
        .expect("the engine checks a raw config");
    assert!(
        err.to_string()
            .contains("detectors.discovery_burst.max_distinct"),
        "{err}"
    );
    c.detectors.discovery_burst.max_distinct = 64;
    c.detectors.serverless.max_keys = 0;
    let err = c.validated().unwrap_err().to_string();
    assert!(err.contains("detectors.serverless.max_keys"), "{err}");
}

#[test]
fn load_reads_checks_and_compiles_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[detectors.quota_change]\ncount_threshold = 7\n").unwrap();
    let valid = Config::load(&path).unwrap();
    assert_eq!(valid.detectors.quota_change.count_threshold, 7);
    assert!(valid.catalog().rules().len() > 50);
    std::fs::write(&path, "[detectors.quota_change]\npane = \"2h\"\n").unwrap();
    let err = Config::load(&path).unwrap_err().to_string();
    assert!(err.contains("detectors.quota_change.pane"), "{err}");
    let err = Config::load(&dir.path().join("missing.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.toml"), "{err}");
}
