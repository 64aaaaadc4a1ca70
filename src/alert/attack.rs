//! ATT&CK enrichment: technique ids (from the catalog) to names and tactics (Enterprise ATT&CK
//! v15). Unknown ids are kept with an empty name, never dropped.

use super::{Tactic, Technique};

/// (technique id, name, tactic ids).
const TECHNIQUES: &[(&str, &str, &[&str])] = &[
    ("T1046", "Network Service Discovery", &["TA0007"]),
    ("T1526", "Cloud Service Discovery", &["TA0007"]),
    ("T1546", "Event Triggered Execution", &["TA0004", "TA0003"]),
    (
        "T1555.006",
        "Credentials from Password Stores: Cloud Secrets Management Stores",
        &["TA0006"],
    ),
    (
        "T1556.009",
        "Modify Authentication Process: Conditional Access Policies",
        &["TA0006", "TA0005", "TA0003"],
    ),
    ("T1562", "Impair Defenses", &["TA0005"]),
    (
        "T1562.001",
        "Impair Defenses: Disable or Modify Tools",
        &["TA0005"],
    ),
    (
        "T1562.007",
        "Impair Defenses: Disable or Modify Cloud Firewall",
        &["TA0005"],
    ),
    (
        "T1562.008",
        "Impair Defenses: Disable or Modify Cloud Logs",
        &["TA0005"],
    ),
    ("T1578", "Modify Cloud Compute Infrastructure", &["TA0005"]),
    (
        "T1578.005",
        "Modify Cloud Compute Infrastructure: Modify Cloud Compute Configurations",
        &["TA0005"],
    ),
    ("T1580", "Cloud Infrastructure Discovery", &["TA0007"]),
    ("T1648", "Serverless Execution", &["TA0002"]),
];

const TACTICS: &[(&str, &str)] = &[
    ("TA0002", "Execution"),
    ("TA0003", "Persistence"),
    ("TA0004", "Privilege Escalation"),
    ("TA0005", "Defense Evasion"),
    ("TA0006", "Credential Access"),
    ("TA0007", "Discovery"),
];

/// Tactics and techniques for a list of technique ids (order kept, duplicates dropped).
pub fn enrich(ids: &[String]) -> (Vec<Tactic>, Vec<Technique>) {
    let mut tactics: Vec<Tactic> = Vec::new();
    let mut techniques: Vec<Technique> = Vec::new();
    for id in ids {
        if techniques.iter().any(|t| &t.uid == id) {
            continue;
        }
        let known = TECHNIQUES.iter().find(|(tid, _, _)| tid == id);
        techniques.push(Technique {
            uid: id.clone(),
            name: known.map_or_else(String::new, |(_, name, _)| (*name).to_owned()),
        });
        for tactic in known.map_or(&[][..], |(_, _, t)| *t) {
            if !tactics.iter().any(|t| t.uid == *tactic) {
                let name = TACTICS
                    .iter()
                    .find(|(u, _)| u == tactic)
                    .map_or("", |(_, n)| *n);
                tactics.push(Tactic {
                    uid: (*tactic).to_owned(),
                    name: name.to_owned(),
                });
            }
        }
    }
    (tactics, techniques)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_catalog_technique_is_known() {
        let catalog = crate::catalog::Catalog::default_catalog();
        for rule in catalog.rules() {
            for t in &rule.techniques {
                let (tactics, techniques) = super::enrich(std::slice::from_ref(t));
                assert!(!techniques[0].name.is_empty(), "{t} has no name");
                assert!(!tactics.is_empty(), "{t} has no tactic");
            }
        }
    }
}
