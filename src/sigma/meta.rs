//! The rule behind a Sigma alert, as the alert carries it.

use crate::alert::Severity;
use serde::{Deserialize, Serialize};

/// What an alert says of the Sigma rule that raised it (`alert.sigma`; OCSF
/// `finding_info.analytic`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleRef {
    /// The rule's `id` (a UUID in SigmaHQ rules), or its `name`, or its title when it has neither.
    pub id: String,
    pub title: String,
    /// The rule's `level` as written (`informational` … `critical`); `medium` when absent.
    pub level: String,
    /// `detection` or the correlation type (`event_count`, `value_count`, `temporal`,
    /// `temporal_ordered`).
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// The fields (and values) that matched, for a detection rule; the group-by values, for a
    /// correlation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matched: Vec<(String, String)>,
}

/// Sigma `level` → alert severity (absent: medium, as pySigma assumes).
pub fn severity(level: Option<rsigma_parser::Level>) -> Severity {
    use rsigma_parser::Level;
    match level {
        Some(Level::Informational) => Severity::Informational,
        Some(Level::Low) => Severity::Low,
        None | Some(Level::Medium) => Severity::Medium,
        Some(Level::High) => Severity::High,
        Some(Level::Critical) => Severity::Critical,
    }
}

/// `attack.t1562.008` → `T1562.008`; other tags (tactics, `cve.*`, `detection.*`) are skipped.
/// Order kept, duplicates dropped.
pub fn techniques(tags: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for tag in tags {
        let Some(rest) = tag.strip_prefix("attack.") else {
            continue;
        };
        let b = rest.as_bytes();
        let is_technique = b.len() >= 5
            && (b[0] == b't' || b[0] == b'T')
            && b[1..5].iter().all(u8::is_ascii_digit)
            && (b.len() == 5
                || (b.len() == 9 && b[5] == b'.' && b[6..].iter().all(u8::is_ascii_digit)));
        if is_technique {
            let t = rest.to_ascii_uppercase();
            if !out.contains(&t) {
                out.push(t);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn technique_tags_become_technique_ids() {
        let tags: Vec<String> = [
            "attack.defense-evasion",
            "attack.t1562.008",
            "attack.T1078",
            "attack.t1562.008",
            "attack.t15",
            "cve.2021-44228",
            "attack.g0016",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(techniques(&tags), ["T1562.008", "T1078"]);
    }

    #[test]
    fn level_maps_to_severity() {
        assert_eq!(severity(None), Severity::Medium);
        assert_eq!(
            severity(Some(rsigma_parser::Level::Critical)),
            Severity::Critical
        );
        assert_eq!(severity(Some(rsigma_parser::Level::Low)), Severity::Low);
    }
}
