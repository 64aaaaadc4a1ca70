//! `cloudwarden demo`: the main job end to end on an embedded default.
//!
//! Starts an embedded broker (librdkafka's mock cluster: in process, speaking the Kafka protocol
//! over TCP on localhost) unless `--brokers` names a real one, creates the topics, produces the
//! demo stream (benign traffic with attack scenarios and a few malformed records, see
//! [`crate::demo`]) into the input topic, runs the real service against it, and reads the alerts
//! topic as a SIEM subscriber would, printing each alert (stdout), then the dead letters and a
//! summary (stderr).

use super::service::{Service, ServiceError};
use crate::alert::format::AlertFormat;
use crate::alert::Alert;
use crate::demo::{demo_config, scenario_stream, Scenario};
use crate::telemetry::Metrics;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Demo options.
#[derive(Debug, Clone, Default)]
pub struct DemoOptions {
    /// A real broker instead of the embedded one.
    pub brokers: Option<String>,
    /// Print alerts as NDJSON.
    pub json: bool,
    /// Input topic partitions.
    pub partitions: i32,
}

/// What the demo saw.
#[derive(Debug, Default)]
pub struct DemoSummary {
    pub records_produced: usize,
    pub alerts: Vec<Alert>,
    pub dead_letters: Vec<(String, String)>,
    pub elapsed: Duration,
}

/// Runs the demo, printing to `out`.
pub fn run_demo(opts: &DemoOptions, out: &mut dyn Write) -> Result<DemoSummary, ServiceError> {
    let started = Instant::now();
    let partitions = opts.partitions.max(1);
    let suffix = format!(
        "{}-{}",
        std::process::id(),
        started.elapsed().as_nanos() % 100_000
    );
    let input = format!("cloud-audit-demo-{suffix}");
    let alerts_topic = format!("cloudwarden-alerts-demo-{suffix}");
    let dlq = format!("cloudwarden-dead-letter-demo-{suffix}");

    // The embedded broker lives as long as this function.
    let cluster = match &opts.brokers {
        Some(_) => None,
        None => Some(MockCluster::new(1)?),
    };
    let brokers = match (&opts.brokers, &cluster) {
        (Some(b), _) => b.clone(),
        (None, Some(c)) => c.bootstrap_servers(),
        (None, None) => unreachable!("a cluster was made when no brokers were given"),
    };
    match &cluster {
        Some(c) => {
            c.create_topic(&input, partitions, 1)?;
            c.create_topic(&alerts_topic, 1, 1)?;
            c.create_topic(&dlq, 1, 1)?;
            // The mock has no CreateTopics API: the repartition topic is made here.
            let d = crate::demo::demo_config();
            let group = format!("cloudwarden-demo-{suffix}");
            c.create_topic(
                &d.repartition.topic_for(&group),
                d.repartition.partitions,
                1,
            )?;
            c.create_topic(&d.state.topic_for(&group), d.repartition.partitions, 1)?;
        }
        None => create_topics(
            &brokers,
            &[(&input, partitions), (&alerts_topic, 1), (&dlq, 1)],
        )?,
    }
    eprintln!(
        "broker: {} ({brokers})",
        if cluster.is_some() {
            "embedded mock cluster"
        } else {
            "external"
        }
    );

    // The audit-log pipeline: records into the input topic.
    let scenario = Scenario {
        benign_per_minute: 40,
        ..Scenario::default()
    };
    let records = scenario_stream(&scenario);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "20")
        .create()?;
    for (i, record) in records.iter().enumerate() {
        let key = (i % 16).to_string();
        let mut r = BaseRecord::to(&input)
            .payload(record.as_slice())
            .key(key.as_bytes());
        loop {
            match producer.send(r) {
                Ok(()) => break,
                Err((_, back)) => {
                    producer.poll(Duration::from_millis(20));
                    r = back;
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30))?;
    eprintln!(
        "produced {} records into {input}; running the service",
        records.len()
    );

    // The service, as `cloudwarden run` would start it.
    let mut config = demo_config();
    config.kafka.brokers = brokers.clone();
    config.kafka.group_id = format!("cloudwarden-demo-{suffix}");
    config.kafka.input_topics = vec![input.clone()];
    // The demo's SIEM reads alert.v1 to print its lines (`make demo`); a deployment's default
    // is OCSF.
    config.alerts.format = crate::alert::format::AlertFormat::Json;
    config.kafka.alerts_topic = alerts_topic.clone();
    config.kafka.dead_letter_topic = dlq.clone();
    config.service.idle_timeout = Duration::from_secs(5);
    config.service.partition_idle_timeout = Duration::from_secs(10);
    config.service.commit_interval = Duration::from_millis(500);
    config
        .kafka
        .consumer
        .insert("session.timeout.ms".into(), "6000".into());
    config
        .kafka
        .consumer
        .insert("heartbeat.interval.ms".into(), "500".into());
    let metrics = Arc::new(Metrics::default());
    let worker = Service::new(config, metrics.clone())?.spawn()?;

    // The SIEM: a plain consumer of the alerts topic.
    let siem: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", format!("siem-{suffix}"))
        .set("enable.auto.commit", "false")
        .create()?;
    // Both topics from the beginning, without waiting for a group join.
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&alerts_topic, 0, Offset::Beginning)?;
    tpl.add_partition_offset(&dlq, 0, Offset::Beginning)?;
    siem.assign(&tpl)?;
    drop(tpl);
    let mut summary = DemoSummary {
        records_produced: records.len(),
        ..DemoSummary::default()
    };
    let mut last_news = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(100);
    loop {
        match siem.poll(Duration::from_millis(200)) {
            Some(Ok(msg)) if msg.topic() == alerts_topic => {
                last_news = Instant::now();
                if let Some(Ok(alert)) = msg.payload().map(serde_json::from_slice::<Alert>) {
                    print_alert(out, &alert, opts.json);
                    summary.alerts.push(alert);
                }
            }
            Some(Ok(msg)) => {
                last_news = Instant::now();
                let source = format!("{}@{}", msg.topic(), msg.offset());
                summary
                    .dead_letters
                    .push((dead_letter_reason(&msg), source));
            }
            Some(Err(e)) => tracing::warn!(error = %e, "siem consumer"),
            None => {}
        }
        // Input records only: the repartition topic's records are counted there too, and with
        // them the input looked read before it was (a short demo under load).
        let consumed: u64 = metrics
            .records_in
            .lock()
            .map(|m| m.get(&input).copied().unwrap_or(0))
            .unwrap_or(0);
        let in_flight = metrics.in_flight.load(Ordering::Relaxed);
        let buffered = metrics.reorder_buffered.load(Ordering::Relaxed);
        let done = consumed as usize >= records.len() && in_flight == 0 && buffered == 0;
        if (done && last_news.elapsed() > Duration::from_secs(3)) || Instant::now() > deadline {
            break;
        }
    }
    worker.stop();
    worker.join()?;
    // Anything acknowledged during shutdown.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        if let Some(Ok(msg)) = siem.poll(Duration::from_millis(100)) {
            if msg.topic() == alerts_topic {
                if let Some(Ok(alert)) = msg.payload().map(serde_json::from_slice::<Alert>) {
                    print_alert(out, &alert, opts.json);
                    summary.alerts.push(alert);
                }
            } else {
                summary.dead_letters.push((
                    dead_letter_reason(&msg),
                    format!("{}@{}", msg.topic(), msg.offset()),
                ));
            }
        }
    }
    drop(siem);
    summary.elapsed = started.elapsed();
    print_summary(&mut std::io::stderr(), &summary, &metrics);
    if std::env::var_os("CW_METRICS").is_some() {
        eprintln!("{}", metrics.render());
    }
    Ok(summary)
}

fn dead_letter_reason(msg: &rdkafka::message::BorrowedMessage<'_>) -> String {
    msg.headers()
        .and_then(|h| h.iter().find(|h| h.key == "cloudwarden.reason"))
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

fn print_alert(out: &mut dyn Write, a: &Alert, json: bool) {
    let format = if json {
        AlertFormat::Json
    } else {
        AlertFormat::Text
    };
    // A closed stdout loses the demo's output, nothing else: keep reading the topic.
    let _ = format.write_line(a, out);
}

fn print_summary(out: &mut dyn Write, s: &DemoSummary, m: &Metrics) {
    let _ = writeln!(out, "--");
    for (reason, source) in &s.dead_letters {
        let _ = writeln!(out, "dead letter: {reason} ({source})");
    }
    let mut by_detector: std::collections::BTreeMap<&str, usize> = Default::default();
    for a in &s.alerts {
        *by_detector.entry(a.detector.as_str()).or_default() += 1;
    }
    let consumed: u64 = m.records_in.lock().map(|x| x.values().sum()).unwrap_or(0);
    let _ = writeln!(
        out,
        "summary: {} records produced, {consumed} consumed, {} events, {} dead letters, {} alerts read by the SIEM in {:.1}s",
        s.records_produced,
        m.events.load(Ordering::Relaxed),
        s.dead_letters.len(),
        s.alerts.len(),
        s.elapsed.as_secs_f64()
    );
    for (d, n) in by_detector {
        let _ = writeln!(out, "  {d}: {n}");
    }
    let (q, n) = m.latency_quantiles();
    if n > 0 {
        let p = |i: usize| q.get(i).map_or(0.0, |x| x.1 * 1000.0);
        let _ = writeln!(
            out,
            "  record ingest → alert acknowledged: p50 {:.1} ms, p99 {:.1} ms ({n} messages; the whole stream is produced before the service starts, so this includes the wait in the topic)",
            p(0),
            p(2)
        );
    }
}

/// Creates topics on a real broker (already existing is fine).
pub fn create_topics(brokers: &str, topics: &[(&str, i32)]) -> Result<(), ServiceError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, partitions)| NewTopic::new(name, *partitions, TopicReplication::Fixed(1)))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ServiceError::Config("kafka.brokers".into(), e.to_string()))?;
    let results = rt.block_on(admin.create_topics(
        &new,
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
    ))?;
    for r in results {
        if let Err((topic, code)) = r {
            if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                return Err(ServiceError::Config(
                    "kafka.brokers".into(),
                    format!("cannot create topic {topic}: {code}"),
                ));
            }
        }
    }
    Ok(())
}
