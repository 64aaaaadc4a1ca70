//! The invictus-ir stream (56 minutes of one account under attack): its secret-fetch burst and
//! discovery bursts must be flagged, read from a gzip file like an S3 export.

use crate::util::fixture;
use cloudwarden::config::Config;
use cloudwarden::engine::Engine;
use cloudwarden::replay::replay_files;

#[test]
fn flags_secret_fetch_and_discovery_bursts() {
    let mut engine = Engine::new(&Config::default()).unwrap();
    let alerts = replay_files(
        &mut engine,
        &[&fixture("invictus/cloudtrail.ndjson.gz")],
        10_000,
    )
    .unwrap();
    assert_eq!(engine.stats().events, 2900);
    assert_eq!(engine.stats().decode_errors_total(), 0);
    let attacker = "arn:aws:iam::123837392027:user/bert-jan";
    let secret: Vec<_> = alerts
        .iter()
        .filter(|a| a.detector == "secret_fetch_rate")
        .collect();
    assert!(!secret.is_empty(), "no secret-fetch alert");
    assert!(secret
        .iter()
        .all(|a| a.actor_user_uid.as_deref() == Some(attacker)));
    assert!(secret
        .iter()
        .all(|a| a.evidence.distinct_count.unwrap() >= 15));
    let discovery: Vec<_> = alerts
        .iter()
        .filter(|a| a.detector == "discovery_burst")
        .collect();
    assert!(!discovery.is_empty(), "no discovery alert");
    assert!(discovery
        .iter()
        .all(|a| a.actor_user_uid.as_deref() == Some(attacker)));
    assert!(
        discovery.iter().any(|a| a.evidence.count.unwrap() > 100),
        "the 683-call burst"
    );
}
