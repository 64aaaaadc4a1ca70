//! Shared test helpers.

use std::path::PathBuf;

/// Path of a file under `tests/fixtures/`.
#[allow(dead_code)]
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// The non-empty lines of an NDJSON file (gzip by extension).
#[allow(dead_code)]
pub fn lines(path: &std::path::Path) -> Vec<Vec<u8>> {
    use std::io::Read;
    let mut text = String::new();
    let file = std::fs::File::open(path).unwrap();
    if path.extension().is_some_and(|e| e == "gz") {
        flate2::read::MultiGzDecoder::new(file)
            .read_to_string(&mut text)
            .unwrap();
    } else {
        std::io::BufReader::new(file)
            .read_to_string(&mut text)
            .unwrap();
    }
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.as_bytes().to_vec())
        .collect()
}

/// Every Stratus detonation log, sorted by name.
#[allow(dead_code)]
pub fn stratus_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixture("stratus"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "ndjson"))
        .collect();
    files.sort();
    files
}

/// The Stratus logs and the invictus-ir stream: the public CloudTrail data the end-to-end tests
/// run.
#[allow(dead_code)]
pub fn input_files() -> Vec<PathBuf> {
    let mut files = stratus_files();
    files.push(fixture("invictus/cloudtrail.ndjson.gz"));
    files
}

/// The records of `files` merged in event-time order (as a collector would ship them).
#[allow(dead_code)]
pub fn records(files: &[PathBuf]) -> Vec<Vec<u8>> {
    let mut all: Vec<(i64, Vec<u8>)> = Vec::new();
    for f in files {
        for l in lines(f) {
            let v: serde_json::Value = serde_json::from_slice(&l).unwrap();
            let t = cloudwarden::event::time::parse_rfc3339_ms(v["eventTime"].as_str().unwrap())
                .unwrap();
            all.push((t, l));
        }
    }
    all.sort_by_key(|(t, _)| *t);
    all.into_iter().map(|(_, l)| l).collect()
}
