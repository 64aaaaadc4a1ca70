//! Telemetry: the service's metrics (names as consts, rendered in the Prometheus text format),
//! latency histograms (hdrhistogram), and the `/metrics`, `/health`, `/ready` endpoints.
//!
//! Counters are plain atomics updated on the processing thread and read by the HTTP task; maps
//! keyed by a label live behind a mutex touched once per batch or per alert, never per event.
//! Every label comes from a bounded set (topic, partition, detector, severity, decode reason):
//! never a principal or a scope.

#[cfg(feature = "kafka")]
pub mod http;

use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

pub const RECORDS_IN: &str = "cloudwarden_records_in_total";
pub const EVENTS: &str = "cloudwarden_events_total";
pub const LATE_EVENTS: &str = "cloudwarden_late_events_total";
pub const DECODE_ERRORS: &str = "cloudwarden_decode_errors_total";
pub const DEAD_LETTERS: &str = "cloudwarden_dead_letters_total";
pub const MESSAGES_OUT: &str = "cloudwarden_messages_out_total";
pub const ALERTS: &str = "cloudwarden_alerts_total";
pub const SUPPRESSED: &str = "cloudwarden_alerts_suppressed_total";
pub const EVICTED: &str = "cloudwarden_keys_evicted_total";
pub const KEYS: &str = "cloudwarden_keys";
pub const LAG: &str = "cloudwarden_consumer_lag";
pub const IN_FLIGHT: &str = "cloudwarden_messages_in_flight";
pub const DELIVERY_FAILURES: &str = "cloudwarden_delivery_failures_total";
pub const BACKPRESSURE: &str = "cloudwarden_backpressure_pauses_total";
pub const WATERMARK: &str = "cloudwarden_watermark_ms";
pub const LATENCY_INGEST: &str = "cloudwarden_ingest_to_alert_ack_seconds";
pub const LATENCY_EVENT: &str = "cloudwarden_event_to_alert_ack_seconds";
pub const REBALANCES: &str = "cloudwarden_rebalances_total";
pub const STATE_RESTORED: &str = "cloudwarden_state_restored_entries_total";
pub const STATE_ERRORS: &str = "cloudwarden_state_restore_errors_total";
pub const CHECKPOINTS: &str = "cloudwarden_checkpoints_total";
pub const CHANGELOG_BYTES: &str = "cloudwarden_changelog_bytes_total";
pub const TRANSACTIONS: &str = "cloudwarden_transactions_total";
pub const REWINDS: &str = "cloudwarden_rewinds_total";
pub const SNAPSHOT_BYTES: &str = "cloudwarden_snapshot_file_bytes";
pub const ASSIGNED: &str = "cloudwarden_assigned_partitions";
pub const INPUT_BYTES: &str = "cloudwarden_input_bytes_total";
pub const REPARTITION_OUT: &str = "cloudwarden_repartition_records_out_total";
pub const REPARTITION_BYTES: &str = "cloudwarden_repartition_bytes_out_total";
pub const REPARTITION_ERRORS: &str = "cloudwarden_repartition_errors_total";
pub const REORDER_BUFFERED: &str = "cloudwarden_reorder_buffered";
pub const SIGMA_MATCHES: &str = "cloudwarden_sigma_matches_total";
pub const SIGMA_RULES: &str = "cloudwarden_sigma_rules_loaded";
pub const REORDER_FORCED: &str = "cloudwarden_reorder_forced_total";

/// Latency quantiles reported.
const QUANTILES: [f64; 4] = [0.5, 0.9, 0.99, 0.999];

/// All metrics of one service process.
pub struct Metrics {
    pub records_in: Mutex<BTreeMap<String, u64>>,
    pub events: AtomicU64,
    pub late_events: AtomicU64,
    pub decode_errors: Mutex<BTreeMap<String, u64>>,
    pub dead_letters: AtomicU64,
    pub messages_out: Mutex<BTreeMap<String, u64>>,
    pub alerts: Mutex<BTreeMap<(String, String), u64>>,
    pub suppressed: AtomicU64,
    pub evicted: Mutex<BTreeMap<String, u64>>,
    pub keys: Mutex<BTreeMap<String, u64>>,
    pub lag: Mutex<BTreeMap<(String, i32), i64>>,
    pub in_flight: AtomicU64,
    pub delivery_failures: AtomicU64,
    pub backpressure_pauses: AtomicU64,
    pub rebalances: AtomicU64,
    pub watermark_ms: AtomicI64,
    /// Microseconds from a record entering Kafka (its timestamp) to the broker acknowledging an
    /// alert it caused (ms resolution).
    pub ingest_latency: Mutex<Histogram<u64>>,
    /// Microseconds from an event's own time to the acknowledgement of its alert.
    pub event_latency: Mutex<Histogram<u64>>,
    /// Partitions assigned and the consumer caught up (see `/ready`).
    pub ready: AtomicBool,
    pub alive: AtomicBool,
    pub state_restored: AtomicU64,
    pub state_errors: Mutex<BTreeMap<String, u64>>,
    pub checkpoints: AtomicU64,
    pub changelog_bytes: AtomicU64,
    /// Exactly-once: transactions ended, by outcome (`committed`, `aborted`).
    pub transactions: Mutex<BTreeMap<String, u64>>,
    /// Exactly-once: times the in-memory state was dropped and the input re-read from the last
    /// committed transaction (after an abort, or a revocation mid-transaction).
    pub rewinds: AtomicU64,
    /// Size of the local snapshot file (`state.snapshot_path`).
    pub snapshot_bytes: AtomicU64,
    /// Partitions assigned to this instance (input and repartition).
    pub assigned: AtomicU64,
    /// Bytes of input records consumed (not counting the repartition topic).
    pub input_bytes: AtomicU64,
    /// Records written to the repartition topic, by kind (event, beat, region, marker).
    pub repartition_out: Mutex<BTreeMap<String, u64>>,
    pub repartition_bytes: AtomicU64,
    pub repartition_errors: Mutex<BTreeMap<String, u64>>,
    pub reorder_buffered: AtomicU64,
    pub reorder_forced: AtomicU64,
    /// Sigma detection-rule matches, by rule id (bounded: `sigma.max_rules`).
    pub sigma_matches: Mutex<BTreeMap<String, u64>>,
    /// Sigma rules, by state (`loaded`, `unsupported`).
    pub sigma_rules: Mutex<BTreeMap<String, u64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let hist = || {
            Mutex::new(
                Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static bounds are valid"),
            )
        };
        Metrics {
            records_in: Mutex::default(),
            events: AtomicU64::new(0),
            late_events: AtomicU64::new(0),
            decode_errors: Mutex::default(),
            dead_letters: AtomicU64::new(0),
            messages_out: Mutex::default(),
            alerts: Mutex::default(),
            suppressed: AtomicU64::new(0),
            evicted: Mutex::default(),
            keys: Mutex::default(),
            lag: Mutex::default(),
            in_flight: AtomicU64::new(0),
            delivery_failures: AtomicU64::new(0),
            backpressure_pauses: AtomicU64::new(0),
            rebalances: AtomicU64::new(0),
            watermark_ms: AtomicI64::new(0),
            ingest_latency: hist(),
            event_latency: hist(),
            ready: AtomicBool::new(false),
            alive: AtomicBool::new(true),
            state_restored: AtomicU64::new(0),
            state_errors: Mutex::default(),
            checkpoints: AtomicU64::new(0),
            changelog_bytes: AtomicU64::new(0),
            transactions: Mutex::default(),
            rewinds: AtomicU64::new(0),
            snapshot_bytes: AtomicU64::new(0),
            assigned: AtomicU64::new(0),
            input_bytes: AtomicU64::new(0),
            repartition_out: Mutex::default(),
            sigma_matches: Mutex::default(),
            sigma_rules: Mutex::default(),
            repartition_bytes: AtomicU64::new(0),
            repartition_errors: Mutex::default(),
            reorder_buffered: AtomicU64::new(0),
            reorder_forced: AtomicU64::new(0),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding a metrics lock must not take the metrics down with it.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Metrics {
    pub fn add(map: &Mutex<BTreeMap<String, u64>>, key: &str, n: u64) {
        let mut m = lock(map);
        match m.get_mut(key) {
            Some(v) => *v += n,
            None => {
                m.insert(key.to_owned(), n);
            }
        }
    }

    pub fn set_gauge(map: &Mutex<BTreeMap<String, u64>>, key: &str, v: u64) {
        lock(map).insert(key.to_owned(), v);
    }

    /// Publishes a Sigma detector's counts (rule count is bounded by the config).
    pub fn sigma(&self, sigma: &crate::sigma::SigmaDetector) {
        if sigma.is_off() {
            return;
        }
        let rules = sigma.rules();
        let mut m = lock(&self.sigma_matches);
        for (r, n) in rules.detections.iter().zip(&sigma.stats().matches) {
            if *n > 0 {
                m.insert(r.id.clone(), *n);
            }
        }
        drop(m);
        Metrics::set_gauge(&self.sigma_rules, "loaded", rules.detections.len() as u64);
        Metrics::set_gauge(
            &self.sigma_rules,
            "unsupported",
            rules.unsupported.len() as u64,
        );
    }

    pub fn alert(&self, detector: &str, severity: &str) {
        *lock(&self.alerts)
            .entry((detector.to_owned(), severity.to_owned()))
            .or_insert(0) += 1;
    }

    pub fn record_latency(&self, ingest_us: u64, event_us: Option<u64>) {
        let _ = lock(&self.ingest_latency).record(ingest_us.max(1));
        if let Some(us) = event_us {
            let _ = lock(&self.event_latency).record(us.max(1));
        }
    }

    pub fn set_lag(&self, topic: &str, partition: i32, lag: i64) {
        lock(&self.lag).insert((topic.to_owned(), partition), lag);
    }

    pub fn clear_lag(&self) {
        lock(&self.lag).clear();
    }

    pub fn total_lag(&self) -> i64 {
        lock(&self.lag).values().map(|l| (*l).max(0)).sum()
    }

    /// Latency quantiles in seconds: (quantile, ingest→ack, event→ack), and the sample count.
    pub fn latency_quantiles(&self) -> (Vec<(f64, f64, f64)>, u64) {
        let ingest = lock(&self.ingest_latency);
        let event = lock(&self.event_latency);
        let q = QUANTILES
            .iter()
            .map(|&q| {
                (
                    q,
                    ingest.value_at_quantile(q) as f64 / 1e6,
                    event.value_at_quantile(q) as f64 / 1e6,
                )
            })
            .collect();
        (q, ingest.len())
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let counter = |out: &mut String, name: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        };
        let gauge = |out: &mut String, name: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        };
        counter(&mut out, RECORDS_IN, "Input records consumed, by topic.");
        for (topic, n) in lock(&self.records_in).iter() {
            let _ = writeln!(out, "{RECORDS_IN}{{topic=\"{}\"}} {n}", escape(topic));
        }
        counter(&mut out, EVENTS, "Normalized events processed.");
        let _ = writeln!(out, "{EVENTS} {}", self.events.load(Ordering::Relaxed));
        counter(
            &mut out,
            LATE_EVENTS,
            "Events older than the watermark (seen by stateless detectors only).",
        );
        let _ = writeln!(
            out,
            "{LATE_EVENTS} {}",
            self.late_events.load(Ordering::Relaxed)
        );
        counter(&mut out, DECODE_ERRORS, "Undecodable records, by reason.");
        for (reason, n) in lock(&self.decode_errors).iter() {
            let _ = writeln!(out, "{DECODE_ERRORS}{{reason=\"{}\"}} {n}", escape(reason));
        }
        counter(
            &mut out,
            DEAD_LETTERS,
            "Records written to the dead-letter topic.",
        );
        let _ = writeln!(
            out,
            "{DEAD_LETTERS} {}",
            self.dead_letters.load(Ordering::Relaxed)
        );
        counter(
            &mut out,
            MESSAGES_OUT,
            "Messages acknowledged by the broker, by topic.",
        );
        for (topic, n) in lock(&self.messages_out).iter() {
            let _ = writeln!(out, "{MESSAGES_OUT}{{topic=\"{}\"}} {n}", escape(topic));
        }
        counter(
            &mut out,
            ALERTS,
            "Alerts emitted, by detector and severity.",
        );
        for ((detector, severity), n) in lock(&self.alerts).iter() {
            let _ = writeln!(
                out,
                "{ALERTS}{{detector=\"{detector}\",severity=\"{severity}\"}} {n}"
            );
        }
        counter(
            &mut out,
            SIGMA_MATCHES,
            "Sigma detection-rule matches, by rule id.",
        );
        for (rule, n) in lock(&self.sigma_matches).iter() {
            let _ = writeln!(out, "{SIGMA_MATCHES}{{rule=\"{}\"}} {n}", escape(rule));
        }
        gauge(&mut out, SIGMA_RULES, "Sigma rules, loaded or unsupported.");
        for (state, n) in lock(&self.sigma_rules).iter() {
            let _ = writeln!(out, "{SIGMA_RULES}{{state=\"{state}\"}} {n}");
        }
        counter(
            &mut out,
            SUPPRESSED,
            "Alerts suppressed by the per-key rate limit (their count rides on the next alert).",
        );
        let _ = writeln!(
            out,
            "{SUPPRESSED} {}",
            self.suppressed.load(Ordering::Relaxed)
        );
        counter(
            &mut out,
            EVICTED,
            "Keys evicted from bounded maps, by detector.",
        );
        for (detector, n) in lock(&self.evicted).iter() {
            let _ = writeln!(out, "{EVICTED}{{detector=\"{detector}\"}} {n}");
        }
        gauge(&mut out, KEYS, "Keys held, by detector.");
        for (detector, n) in lock(&self.keys).iter() {
            let _ = writeln!(out, "{KEYS}{{detector=\"{detector}\"}} {n}");
        }
        gauge(
            &mut out,
            LAG,
            "Consumer lag (high watermark minus position), by partition.",
        );
        for ((topic, partition), lag) in lock(&self.lag).iter() {
            let _ = writeln!(
                out,
                "{LAG}{{topic=\"{}\",partition=\"{partition}\"}} {lag}",
                escape(topic)
            );
        }
        gauge(
            &mut out,
            IN_FLIGHT,
            "Messages awaiting broker acknowledgement.",
        );
        let _ = writeln!(
            out,
            "{IN_FLIGHT} {}",
            self.in_flight.load(Ordering::Relaxed)
        );
        counter(
            &mut out,
            DELIVERY_FAILURES,
            "Deliveries that failed and were sent again.",
        );
        let _ = writeln!(
            out,
            "{DELIVERY_FAILURES} {}",
            self.delivery_failures.load(Ordering::Relaxed)
        );
        counter(
            &mut out,
            BACKPRESSURE,
            "Times consumption paused because too many messages awaited acknowledgement.",
        );
        let _ = writeln!(
            out,
            "{BACKPRESSURE} {}",
            self.backpressure_pauses.load(Ordering::Relaxed)
        );
        counter(
            &mut out,
            REBALANCES,
            "Consumer group rebalances (assign and revoke).",
        );
        let _ = writeln!(
            out,
            "{REBALANCES} {}",
            self.rebalances.load(Ordering::Relaxed)
        );
        gauge(
            &mut out,
            WATERMARK,
            "The engine's event-time watermark, epoch ms.",
        );
        let _ = writeln!(
            out,
            "{WATERMARK} {}",
            self.watermark_ms.load(Ordering::Relaxed)
        );
        gauge(
            &mut out,
            ASSIGNED,
            "Partitions assigned to this instance (input and repartition topics).",
        );
        let _ = writeln!(out, "{ASSIGNED} {}", self.assigned.load(Ordering::Relaxed));
        counter(
            &mut out,
            STATE_RESTORED,
            "State entries restored from the changelog.",
        );
        let _ = writeln!(
            out,
            "{STATE_RESTORED} {}",
            self.state_restored.load(Ordering::Relaxed)
        );
        counter(
            &mut out,
            STATE_ERRORS,
            "Changelog entries that could not be restored (their keys start fresh), by reason.",
        );
        for (reason, n) in lock(&self.state_errors).iter() {
            let _ = writeln!(out, "{STATE_ERRORS}{{reason=\"{}\"}} {n}", escape(reason));
        }
        counter(&mut out, CHECKPOINTS, "State checkpoints written.");
        let _ = writeln!(
            out,
            "{CHECKPOINTS} {}",
            self.checkpoints.load(Ordering::Relaxed)
        );
        counter(
            &mut out,
            CHANGELOG_BYTES,
            "Bytes written to the changelog topic.",
        );
        let _ = writeln!(
            out,
            "{CHANGELOG_BYTES} {}",
            self.changelog_bytes.load(Ordering::Relaxed)
        );
        counter(
            &mut out,
            TRANSACTIONS,
            "Exactly-once: transactions ended, by outcome (committed, aborted).",
        );
        for (outcome, n) in lock(&self.transactions).iter() {
            let _ = writeln!(out, "{TRANSACTIONS}{{outcome=\"{}\"}} {n}", escape(outcome));
        }
        counter(
            &mut out,
            REWINDS,
            "Exactly-once: state dropped and input re-read from the last committed transaction.",
        );
        let _ = writeln!(out, "{REWINDS} {}", self.rewinds.load(Ordering::Relaxed));
        gauge(
            &mut out,
            SNAPSHOT_BYTES,
            "Size of the local state snapshot file (state.snapshot_path).",
        );
        let _ = writeln!(
            out,
            "{SNAPSHOT_BYTES} {}",
            self.snapshot_bytes.load(Ordering::Relaxed)
        );
        counter(&mut out, INPUT_BYTES, "Bytes of input records consumed.");
        let _ = writeln!(
            out,
            "{INPUT_BYTES} {}",
            self.input_bytes.load(Ordering::Relaxed)
        );
        counter(
            &mut out,
            REPARTITION_OUT,
            "Records written to the repartition topic, by kind.",
        );
        for (kind, n) in lock(&self.repartition_out).iter() {
            let _ = writeln!(out, "{REPARTITION_OUT}{{kind=\"{}\"}} {n}", escape(kind));
        }
        counter(
            &mut out,
            REPARTITION_BYTES,
            "Bytes written to the repartition topic.",
        );
        let _ = writeln!(
            out,
            "{REPARTITION_BYTES} {}",
            self.repartition_bytes.load(Ordering::Relaxed)
        );
        counter(
            &mut out,
            REPARTITION_ERRORS,
            "Repartition records that could not be read, by reason (skipped).",
        );
        for (reason, n) in lock(&self.repartition_errors).iter() {
            let _ = writeln!(
                out,
                "{REPARTITION_ERRORS}{{reason=\"{}\"}} {n}",
                escape(reason)
            );
        }
        gauge(
            &mut out,
            REORDER_BUFFERED,
            "Repartitioned items waiting for the watermark before the detectors see them.",
        );
        let _ = writeln!(
            out,
            "{REORDER_BUFFERED} {}",
            self.reorder_buffered.load(Ordering::Relaxed)
        );
        counter(
            &mut out,
            REORDER_FORCED,
            "Items released before the watermark because the reorder buffer was full.",
        );
        let _ = writeln!(
            out,
            "{REORDER_FORCED} {}",
            self.reorder_forced.load(Ordering::Relaxed)
        );
        for (name, hist, help) in [
            (
                LATENCY_INGEST,
                &self.ingest_latency,
                "Seconds from a record entering Kafka (its timestamp) to the acknowledgement of an alert it caused.",
            ),
            (
                LATENCY_EVENT,
                &self.event_latency,
                "Seconds from an event's own time to the acknowledgement of its alert.",
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} summary");
            let h = lock(hist);
            for q in QUANTILES {
                let _ = writeln!(
                    out,
                    "{name}{{quantile=\"{q}\"}} {}",
                    h.value_at_quantile(q) as f64 / 1e6
                );
            }
            let _ = writeln!(out, "{name}_count {}", h.len());
        }
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        Metrics::add(&m.records_in, "cloud-audit", 3);
        Metrics::add(&m.decode_errors, "not_json", 1);
        m.alert("log_disable", "high");
        m.set_lag("cloud-audit", 0, 42);
        m.record_latency(1500, Some(2_000_000));
        let text = m.render();
        assert!(text.contains("cloudwarden_records_in_total{topic=\"cloud-audit\"} 3"));
        assert!(text.contains("cloudwarden_decode_errors_total{reason=\"not_json\"} 1"));
        assert!(
            text.contains("cloudwarden_alerts_total{detector=\"log_disable\",severity=\"high\"} 1")
        );
        assert!(text.contains("cloudwarden_consumer_lag{topic=\"cloud-audit\",partition=\"0\"} 42"));
        assert!(text.contains("cloudwarden_ingest_to_alert_ack_seconds_count 1"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').expect("name value");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
