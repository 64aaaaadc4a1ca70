//! The one place an [`Alert`] becomes bytes.
//!
//! Every writer goes through [`AlertFormat`]: the Kafka emitter (the alerts topic's record value),
//! `replay` (NDJSON on stdout or a file), and both demos (`demo` and `demo --offline`: a text line
//! each, or NDJSON with `--json`). A new output is a new variant here, and every writer gets it at
//! once; the variants' serde names (`ocsf`, `json` alias `cloudwarden.v1`, `text`) are what the
//! config key `alerts.format` takes. `ocsf` (an OCSF 1.8.0 Detection Finding, [`super::ocsf`]) is
//! the default.
//!
//! The encoding is kept apart from the framing: [`AlertFormat::write`] appends one alert with no
//! line end (a Kafka record is one JSON document), [`AlertFormat::write_line`] appends it and a
//! `\n` (a stream of lines). Both write straight into the caller's `io::Write`, so a caller that
//! reuses a `Vec<u8>` (the emitter) or a `BufWriter` (replay) allocates nothing per alert beyond
//! what serde_json does.

use super::ocsf::{to_ocsf, OcsfContext};
use super::Alert;
use serde::{Deserialize, Serialize};
use std::io::{self, Write};

/// How an alert is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertFormat {
    /// An OCSF 1.8.0 Detection Finding (class 2004) JSON document per alert, as
    /// [`super::ocsf::to_ocsf`] maps it with the default [`OcsfContext`] (product cloudwarden).
    #[default]
    Ocsf,
    /// `alert.v1` JSON (`schemas/alert.v1.schema.json`), one document per alert: the alerts
    /// topic's record value, and each line of `replay`'s and `demo --json`'s output.
    #[serde(rename = "cloudwarden.v1", alias = "json")]
    Json,
    /// One line a human reads on a terminal (the demos):
    /// `ALERT <time_dt> <severity> <detector> <title> [<technique ids>]`, severity and detector
    /// padded to 8 and 19 columns.
    Text,
}

/// An alert that could not be written. Either way the alert is lost to this writer: the emitter
/// logs it and skips the alert; a stream writer (replay) stops, as for any output error.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// serde_json refused the alert (not expected: every field of [`Alert`] serializes).
    #[error("alert did not serialize: {0}")]
    Json(#[source] serde_json::Error),
    /// The writer failed (a closed pipe, a full disk).
    #[error("cannot write alert: {0}")]
    Io(#[from] io::Error),
}

impl From<serde_json::Error> for FormatError {
    fn from(e: serde_json::Error) -> FormatError {
        if e.is_io() {
            FormatError::Io(e.into())
        } else {
            FormatError::Json(e)
        }
    }
}

impl From<FormatError> for io::Error {
    fn from(e: FormatError) -> io::Error {
        match e {
            FormatError::Io(e) => e,
            e @ FormatError::Json(_) => io::Error::other(e),
        }
    }
}

impl AlertFormat {
    /// Writes `alert` to `out` with no line end: one record (the alerts topic's value).
    pub fn write<W: Write + ?Sized>(self, alert: &Alert, out: &mut W) -> Result<(), FormatError> {
        match self {
            AlertFormat::Ocsf => {
                serde_json::to_writer(out, &to_ocsf(alert, &OcsfContext::default()))?
            }
            AlertFormat::Json => serde_json::to_writer(out, alert)?,
            AlertFormat::Text => write_text(alert, out)?,
        }
        Ok(())
    }

    /// Writes `alert` to `out` followed by `\n`: one line of a stream (NDJSON, or text lines).
    pub fn write_line<W: Write + ?Sized>(
        self,
        alert: &Alert,
        out: &mut W,
    ) -> Result<(), FormatError> {
        self.write(alert, out)?;
        out.write_all(b"\n")?;
        Ok(())
    }
}

fn write_text<W: Write + ?Sized>(a: &Alert, out: &mut W) -> io::Result<()> {
    write!(
        out,
        "ALERT {} {:<8} {:<19} {} [",
        a.time_dt,
        a.severity.as_str(),
        a.detector,
        a.title
    )?;
    for (i, t) in a.attack_techniques.iter().enumerate() {
        if i > 0 {
            out.write_all(b", ")?;
        }
        out.write_all(t.uid.as_bytes())?;
    }
    out.write_all(b"]")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{AlertDraft, AlertStatus, Evidence, Severity};

    fn alert(techniques: &[String]) -> Alert {
        Alert::new(AlertDraft {
            detector: "log_disable",
            title: "Cloud logging disabled or modified: StopLogging".into(),
            severity: Severity::High,
            dry_run: false,
            status: AlertStatus::New,
            techniques,
            time: 1_793_496_595_000,
            window_start: 1_793_496_595_000,
            window_end: 1_793_496_595_000,
            provider: "aws",
            scope: "222222222222",
            region: "us-east-1",
            principal: Some("arn:aws:iam::222222222222:user/eve"),
            log_source: None,
            evidence: Evidence {
                trigger: "match".into(),
                ..Evidence::default()
            },
            dedup_key: "222222222222".into(),
            instance: "event-1".into(),
        })
    }

    #[test]
    fn json_is_serde_json_of_the_alert_and_round_trips() {
        let a = alert(&["T1562.008".into()]);
        let mut record = Vec::new();
        AlertFormat::Json.write(&a, &mut record).unwrap();
        assert_eq!(record, serde_json::to_vec(&a).unwrap());
        assert!(!record.ends_with(b"\n"), "a record has no line end");
        assert_eq!(serde_json::from_slice::<Alert>(&record).unwrap(), a);

        let mut line = Vec::new();
        AlertFormat::Json.write_line(&a, &mut line).unwrap();
        assert_eq!(line[..line.len() - 1], record[..]);
        assert_eq!(line.last(), Some(&b'\n'));
    }

    #[test]
    fn text_line_is_the_demo_line() {
        let a = alert(&["T1562.008".into(), "T1078".into()]);
        let mut out = Vec::new();
        AlertFormat::Text.write_line(&a, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                "ALERT {} high     log_disable         Cloud logging disabled or modified: StopLogging [T1562.008, T1078]\n",
                a.time_dt
            )
        );
        let mut out = Vec::new();
        AlertFormat::Text.write(&alert(&[]), &mut out).unwrap();
        assert!(out.ends_with(b"StopLogging []"), "{out:?}");
    }

    #[test]
    fn writes_append_to_a_reused_buffer() {
        let (a, b) = (alert(&[]), alert(&["T1562.008".into()]));
        let mut out = Vec::new();
        for f in [AlertFormat::Ocsf, AlertFormat::Json, AlertFormat::Text] {
            out.clear();
            f.write_line(&a, &mut out).unwrap();
            let first = out.len();
            f.write_line(&b, &mut out).unwrap();
            let lines: Vec<&[u8]> = out.split(|&c| c == b'\n').collect();
            assert_eq!(lines.len(), 3, "{f:?}: two lines and the empty tail");
            assert_eq!(lines[0].len() + 1, first);
            assert!(lines[2].is_empty());
        }
    }

    #[test]
    fn a_failing_writer_is_an_io_error() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from(io::ErrorKind::BrokenPipe))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        for f in [AlertFormat::Ocsf, AlertFormat::Json, AlertFormat::Text] {
            match f.write_line(&alert(&[]), &mut Closed) {
                Err(FormatError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::BrokenPipe),
                other => panic!("{f:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn serde_names_are_the_config_values() {
        for (f, name) in [
            (AlertFormat::Ocsf, "\"ocsf\""),
            (AlertFormat::Json, "\"cloudwarden.v1\""),
            (AlertFormat::Text, "\"text\""),
        ] {
            assert_eq!(serde_json::to_string(&f).unwrap(), name);
            assert_eq!(serde_json::from_str::<AlertFormat>(name).unwrap(), f);
        }
        assert_eq!(
            serde_json::from_str::<AlertFormat>("\"json\"").unwrap(),
            AlertFormat::Json
        );
        assert!(serde_json::from_str::<AlertFormat>("\"alert.v1\"").is_err());
        assert_eq!(AlertFormat::default(), AlertFormat::Ocsf);
    }

    #[test]
    fn ocsf_is_the_finding_of_the_alert() {
        let a = alert(&["T1562.008".into()]);
        let mut record = Vec::new();
        AlertFormat::Ocsf.write(&a, &mut record).unwrap();
        let finding: serde_json::Value = serde_json::from_slice(&record).unwrap();
        assert_eq!(finding, to_ocsf(&a, &OcsfContext::default()));
        assert_eq!(finding["finding_info"]["uid"], serde_json::json!(a.id));
        assert!(!record.ends_with(b"\n"));
    }
}
