//! Golden tests: `tests/fixtures/<detector>/input.ndjson` (+ optional `config.toml`) replayed
//! through the engine must give exactly `expected.ndjson` (that detector's alerts, in order).
//! The inputs come from `tests/fixtures/make_golden_inputs.py`; after a deliberate change,
//! re-bless with `CLOUDWARDEN_BLESS=1 cargo test golden` and review the diff.

use crate::util::fixture;
use cloudwarden::config::Config;
use cloudwarden::detect::DETECTOR_NAMES;
use cloudwarden::engine::Engine;
use cloudwarden::replay::replay_files;

fn run_golden(detector: &str) -> Result<(), String> {
    let dir = fixture(detector);
    let config = match std::fs::read_to_string(dir.join("config.toml")) {
        Ok(text) => Config::from_toml(&text).map_err(|e| e.to_string())?,
        Err(_) => Config::default(),
    };
    let mut engine = Engine::new(&config).map_err(|e| e.to_string())?;
    let alerts =
        replay_files(&mut engine, &[&dir.join("input.ndjson")], 1000).map_err(|e| e.to_string())?;
    let actual: Vec<String> = alerts
        .iter()
        .filter(|a| a.detector == detector)
        .map(|a| serde_json::to_string(a).expect("alerts serialize"))
        .collect();
    let expected_path = dir.join("expected.ndjson");
    if std::env::var_os("CLOUDWARDEN_BLESS").is_some() {
        let mut text = actual.join("\n");
        text.push('\n');
        std::fs::write(&expected_path, text).map_err(|e| e.to_string())?;
        return Ok(());
    }
    let expected_text = std::fs::read_to_string(&expected_path)
        .map_err(|e| format!("{}: {e}", expected_path.display()))?;
    let expected: Vec<&str> = expected_text.lines().filter(|l| !l.is_empty()).collect();
    if expected.len() != actual.len() {
        return Err(format!(
            "{detector}: expected {} alerts, got {}:\n{}",
            expected.len(),
            actual.len(),
            actual.join("\n")
        ));
    }
    for (i, (e, a)) in expected.iter().zip(&actual).enumerate() {
        let e: serde_json::Value = serde_json::from_str(e).map_err(|err| err.to_string())?;
        let a: serde_json::Value = serde_json::from_str(a).map_err(|err| err.to_string())?;
        if e != a {
            return Err(format!(
                "{detector}: alert {i} differs\nexpected: {e}\nactual:   {a}"
            ));
        }
    }
    Ok(())
}

#[test]
fn every_detector_has_a_golden_fixture() {
    let failures: Vec<String> = DETECTOR_NAMES
        .iter()
        .filter_map(|d| run_golden(d).err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn golden_fixtures_expect_alerts() {
    // A golden file that expects nothing would pass for a detector that never fires.
    for d in DETECTOR_NAMES {
        let text = std::fs::read_to_string(fixture(d).join("expected.ndjson")).unwrap_or_default();
        assert!(
            text.lines().any(|l| !l.trim().is_empty()),
            "{d}: expected.ndjson has no alert"
        );
    }
}
