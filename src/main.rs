//! The `cloudwarden` binary: a thin CLI over the library (parse flags → load config → set up
//! telemetry → run). Every flag is declared here, in one place.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use cloudwarden::alert::format::AlertFormat;
use cloudwarden::catalog::Behaviour;
use cloudwarden::config::{Config, Valid};
use cloudwarden::engine::Engine;
use cloudwarden::event::{decode_record, DecodeLimits, Provider};
use cloudwarden::replay::{self, Input, RecordReader};
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "cloudwarden",
    version,
    about = "Catches attacks on cloud control planes in cloud audit logs"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, global = true, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum SigmaCommand {
    /// Load rule files (paths, directories, globs): each rule loaded or unsupported with the
    /// reason, and a per-log-source summary. Exit 1 if a file fails to parse.
    Check {
        #[arg(required = true)]
        files: Vec<String>,
        /// Processing pipelines applied on top of the built-in field mapping.
        #[arg(long)]
        pipeline: Vec<PathBuf>,
    },
    /// Match one rule file on the events of a file (JSON or NDJSON): which events match, and
    /// the matched fields and values.
    Test {
        rule: PathBuf,
        #[arg(long)]
        events: PathBuf,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Run the detectors over log files (NDJSON, JSON, CloudTrail S3 files, gzip) in event-time
    /// order; alerts as NDJSON on stdout.
    Replay {
        /// Deploy config (defaults apply when absent).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Write alerts here instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// No progress bar even on a terminal.
        #[arg(long)]
        no_progress: bool,
        /// Alert format: `cloudwarden.v1` (alert.v1, alias `json`; the default for replay, whatever
        /// `alerts.format` says of the topic), `ocsf` (OCSF 1.8.0 Detection Finding) or `text`.
        #[arg(long, default_value = "json", value_parser = parse_alert_format)]
        format: AlertFormat,
        /// Input files; `-` is stdin.
        #[arg(default_value = "-")]
        files: Vec<String>,
    },
    /// Print each record as CloudEvent v1 NDJSON with its catalog behaviours and techniques, or
    /// the decode error: what cloudwarden makes of your logs.
    Normalize {
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(default_value = "-")]
        files: Vec<String>,
    },
    /// Validate a deploy config; unknown keys and bad values are named.
    CheckConfig { file: PathBuf },
    /// Sigma rules: what loads, and what matches.
    Sigma {
        #[command(subcommand)]
        command: SigmaCommand,
    },
    /// Print the catalog coverage (behaviour × provider).
    Catalog {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// List every rule instead of the coverage table.
        #[arg(long)]
        rules: bool,
    },
    /// The main job on an embedded default: start an embedded Kafka broker, produce a realistic
    /// stream (benign traffic with attack scenarios) into it, run the service, and print the
    /// alerts as a SIEM reads them from the alerts topic.
    Demo {
        /// Print alerts as NDJSON instead of one line each.
        #[arg(long)]
        json: bool,
        /// Use this broker instead of the embedded one (e.g. the local Apache Kafka: `make demo-broker`).
        #[arg(long)]
        brokers: Option<String>,
        /// Skip Kafka: run the same stream straight through the engine.
        #[arg(long)]
        offline: bool,
    },
    /// Run the service: consume audit records from Kafka, detect, produce alerts.
    Run {
        /// Deploy config.
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints alerts and a summary; keep the service's own logs to warnings there.
    let default_level = if matches!(cli.command, Command::Demo { .. }) {
        "warn"
    } else {
        "info"
    };
    init_tracing(cli.log_format, default_level);
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cloudwarden: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_tracing(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only on a terminal: a log file or a collector gets plain text.
        .with_ansi(io::stderr().is_terminal())
        .with_writer(io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The checked config (catalog compiled once, here).
fn load_config(path: Option<&PathBuf>) -> Result<Valid> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None => Ok(Config::default().validated()?),
    }
}

fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Replay {
            config,
            output,
            no_progress,
            format,
            files,
        } => {
            let config = load_config(config.as_ref())?;
            cmd_replay(&config, output, no_progress, format, &files)
        }
        Command::Normalize { config, files } => {
            let config = load_config(config.as_ref())?;
            cmd_normalize(&config, &files)
        }
        Command::CheckConfig { file } => match Config::from_file(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                Ok(ExitCode::from(1))
            }
        },
        Command::Sigma { command } => cmd_sigma(command),
        Command::Catalog { config, rules } => {
            let config = load_config(config.as_ref())?;
            cmd_catalog(&config, rules)
        }
        Command::Demo {
            json,
            brokers,
            offline,
        } => {
            if offline || !cfg!(feature = "kafka") {
                cmd_demo_offline(json)
            } else {
                cmd_demo_kafka(json, brokers)
            }
        }
        Command::Run { config } => cmd_run(&config),
    }
}

/// An [`AlertFormat`] by its serde name (what `alerts.format` takes).
fn parse_alert_format(s: &str) -> Result<AlertFormat, String> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|_| format!("unknown alert format {s:?}: ocsf, cloudwarden.v1 (json) or text"))
}

fn cmd_replay(
    config: &Valid,
    output: Option<PathBuf>,
    no_progress: bool,
    format: AlertFormat,
    files: &[String],
) -> Result<ExitCode> {
    let mut engine = Engine::new(config)?;
    let inputs: Vec<Input> = files.iter().map(|f| Input::parse(f)).collect();
    let mut out: Box<dyn Write> = match &output {
        Some(p) => Box::new(BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => Box::new(BufWriter::new(io::stdout().lock())),
    };
    let bar = (!no_progress && io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                .expect("static template is valid"),
        );
        bar
    });
    let started = std::time::Instant::now();
    let summary = replay::replay(
        &mut engine,
        &inputs,
        config.replay.reorder_buffer,
        |alert| Ok(format.write_line(alert, &mut out)?),
        |events, bytes| {
            if let Some(bar) = &bar {
                bar.set_message(format!("{events} events, {:.1} MB", bytes as f64 / 1e6));
                bar.tick();
            }
        },
    )?;
    out.flush()?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    for e in summary.errors.iter().take(10) {
        tracing::warn!(input = %e.input, line = e.line, reason = %e.error.reason(), "undecodable record: {}", e.error);
    }
    print_summary(&engine, started.elapsed(), summary.bytes_read);
    Ok(ExitCode::SUCCESS)
}

fn print_summary(engine: &Engine, elapsed: std::time::Duration, bytes: u64) {
    let s = engine.stats();
    let mut e = io::stderr().lock();
    let _ = writeln!(
        e,
        "cloudwarden: {} events ({:.1} MB) in {:.2}s; {} decode errors; {} late events; {} alerts ({} suppressed)",
        s.events,
        bytes as f64 / 1e6,
        elapsed.as_secs_f64(),
        s.decode_errors_total(),
        s.late_events,
        s.alerts_total(),
        engine.suppressed_total(),
    );
    for (reason, n) in &s.decode_errors {
        let _ = writeln!(e, "  decode error {reason}: {n}");
    }
    for (detector, n) in &s.alerts {
        let _ = writeln!(e, "  alerts {detector}: {n}");
    }
    for (detector, st) in engine.detector_stats() {
        if st.evicted > 0 {
            let _ = writeln!(
                e,
                "  {detector}: {} keys held, {} evicted",
                st.keys, st.evicted
            );
        }
    }
}

fn cmd_normalize(config: &Valid, files: &[String]) -> Result<ExitCode> {
    let catalog = config.catalog();
    let limits = DecodeLimits {
        max_record_bytes: config.decode.max_record_bytes,
    };
    let mut out = BufWriter::new(io::stdout().lock());
    let mut errors = 0u64;
    for file in files {
        let input = Input::parse(file);
        let mut reader = RecordReader::open(&input).with_context(|| input.name())?;
        while let Some(record) = reader.next_record()? {
            let mut events = Vec::new();
            match decode_record(&record.bytes, &limits, &mut events) {
                Ok(()) => {
                    for mut ev in events {
                        let matches = catalog.classify(&ev);
                        for &id in matches.ids() {
                            let rule = catalog.rule(id);
                            let b = rule.behaviour.as_str();
                            if !ev.behaviours.iter().any(|x| x == b) {
                                ev.behaviours.push(b.into());
                            }
                            for t in &rule.techniques {
                                if !ev.attack_technique_uids.iter().any(|x| x == t) {
                                    ev.attack_technique_uids.push(t.clone().into());
                                }
                            }
                        }
                        serde_json::to_writer(&mut out, &ev)?;
                        out.write_all(b"\n")?;
                    }
                }
                Err(e) => {
                    errors += 1;
                    serde_json::to_writer(
                        &mut out,
                        &serde_json::json!({
                            "error": e.reason(),
                            "detail": e.to_string(),
                            "input": input.name(),
                            "line": record.line,
                        }),
                    )?;
                    out.write_all(b"\n")?;
                }
            }
        }
    }
    out.flush()?;
    Ok(if errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn cmd_catalog(config: &Valid, list_rules: bool) -> Result<ExitCode> {
    let catalog = config.catalog();
    let mut out = io::stdout().lock();
    if list_rules {
        for rule in catalog.rules() {
            let s = &rule.spec;
            writeln!(
                out,
                "{:<19} {:<17} {:<40} {} [{}]{}",
                s.behaviour.as_str(),
                s.provider.as_str(),
                s.service.as_deref().unwrap_or("*"),
                s.operations.join(", "),
                s.techniques.join(", "),
                if s.when.is_empty() {
                    String::new()
                } else {
                    format!(" when {:?}", s.when)
                }
            )?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let coverage = catalog.coverage();
    write!(out, "{:<19}", "operations")?;
    for p in Provider::ALL {
        write!(out, " {:>16}", p.as_str())?;
    }
    writeln!(out)?;
    for b in Behaviour::ALL {
        write!(out, "{:<19}", b.as_str())?;
        for p in Provider::ALL {
            let ops = coverage
                .iter()
                .find(|(cb, cp, _, _)| *cb == b && *cp == p)
                .map_or(0, |c| c.3);
            let cell = if ops == 0 {
                "-".to_owned()
            } else {
                ops.to_string()
            };
            write!(out, " {cell:>16}")?;
        }
        writeln!(out)?;
    }
    writeln!(
        out,
        "\n{} rules; cells count operation names and patterns per (behaviour, provider)",
        catalog.rules().len()
    )?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "kafka")]
fn cmd_demo_kafka(json: bool, brokers: Option<String>) -> Result<ExitCode> {
    let opts = cloudwarden::kafka::demo::DemoOptions {
        brokers,
        json,
        partitions: 3,
    };
    let summary = cloudwarden::kafka::demo::run_demo(&opts, &mut io::stdout().lock())?;
    Ok(if summary.alerts.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(not(feature = "kafka"))]
fn cmd_demo_kafka(json: bool, _brokers: Option<String>) -> Result<ExitCode> {
    cmd_demo_offline(json)
}

#[cfg(feature = "kafka")]
fn cmd_run(path: &std::path::Path) -> Result<ExitCode> {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    let config = Config::load(path)?;
    let metrics = Arc::new(cloudwarden::telemetry::Metrics::default());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let listen = config.service.listen.clone();
    let service = cloudwarden::kafka::service::Service::new(config, metrics.clone())?;
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let addr = runtime.block_on(cloudwarden::telemetry::http::serve(
        &listen,
        metrics.clone(),
        async {
            let _ = http_stopped.await;
        },
    ))?;
    tracing::info!(%addr, "serving /metrics, /health, /ready");
    let running = service.spawn()?;
    let stop = running.stopper();
    runtime.spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received: stopping");
        stop.store(true, Ordering::Relaxed);
    });
    let result = running.join();
    metrics.alive.store(false, Ordering::Relaxed);
    let _ = stop_http.send(());
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    result?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "kafka")]
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(not(feature = "kafka"))]
fn cmd_run(_path: &std::path::Path) -> Result<ExitCode> {
    anyhow::bail!("this build has no Kafka support (built without the `kafka` feature)")
}

fn cmd_demo_offline(json: bool) -> Result<ExitCode> {
    let config = cloudwarden::demo::demo_config();
    let mut engine = Engine::new(&config)?;
    let started = std::time::Instant::now();
    let records = cloudwarden::demo::scenario_stream(&cloudwarden::demo::Scenario::default());
    let mut alerts = Vec::new();
    let mut bytes = 0u64;
    for record in &records {
        bytes += record.len() as u64;
        // Malformed records are part of the demo stream: counted, never fatal.
        let _ = engine.process_record(record, &mut alerts);
    }
    engine.finish(&mut alerts);
    let format = if json {
        AlertFormat::Json
    } else {
        AlertFormat::Text
    };
    let mut out = io::stdout().lock();
    for a in &alerts {
        format.write_line(a, &mut out)?;
    }
    out.flush()?;
    print_summary(&engine, started.elapsed(), bytes);
    Ok(ExitCode::SUCCESS)
}

fn cmd_sigma(command: SigmaCommand) -> anyhow::Result<ExitCode> {
    use cloudwarden::sigma::{load, Rules, SigmaDetector};
    match command {
        SigmaCommand::Check { files, pipeline } => {
            let mut paths = Vec::new();
            for f in &files {
                paths.extend(load::expand(f).map_err(anyhow::Error::msg)?);
            }
            let mut pipelines = Vec::new();
            for p in &pipeline {
                pipelines.push(
                    rsigma_eval::parse_pipeline_file(p)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?,
                );
            }
            let rules = Rules::load_files(&paths, &pipelines);
            for r in &rules.detections {
                println!(
                    "loaded       {}  {}  [{}] {}",
                    r.file,
                    r.id,
                    r.route.as_str(),
                    r.title
                );
            }
            for u in &rules.unsupported {
                println!("unsupported  {}  {}  {}", u.file, u.title, u.reason);
            }
            for u in &rules.correlation_unsupported {
                println!(
                    "unsupported  correlation  {}  {}  {}",
                    u.id, u.title, u.reason
                );
            }
            println!();
            println!("{:32}{:>8}{:>13}", "log source", "loaded", "unsupported");
            for (ls, loaded, unsupported) in rules.summary() {
                println!("{ls:32}{loaded:>8}{unsupported:>13}");
            }
            println!(
                "{} detection rules loaded, {} unsupported, {} correlation rules ({} run), {} files",
                rules.detections.len(),
                rules.unsupported.len(),
                rules.correlations.len(),
                rules.correlations_loaded,
                paths.len()
            );
            for (f, e) in &rules.file_errors {
                eprintln!("{f}: {e}");
            }
            Ok(if rules.file_errors.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        SigmaCommand::Test { rule, events } => {
            let rules = Rules::load_files(std::slice::from_ref(&rule), &[]);
            for u in &rules.unsupported {
                eprintln!("unsupported  {}  {}  {}", u.file, u.title, u.reason);
            }
            if rules.detections.is_empty() {
                anyhow::bail!("{}: no detection rule loads", rule.display());
            }
            let mut det = SigmaDetector::new(std::sync::Arc::new(rules), usize::MAX);
            let text = std::fs::read_to_string(&events)
                .map_err(|e| anyhow::anyhow!("{}: {e}", events.display()))?;
            let trimmed = text.trim_start();
            let records: Vec<&str> = match serde_json::from_str::<serde_json::Value>(trimmed) {
                Ok(_) => vec![trimmed],
                Err(_) => text.lines().filter(|l| !l.trim().is_empty()).collect(),
            };
            let limits = cloudwarden::event::DecodeLimits::default();
            let (mut seen, mut matched) = (0u64, 0u64);
            for (line, r) in records.iter().enumerate() {
                let mut evs = Vec::new();
                let mut raws = Vec::new();
                if let Err(e) = cloudwarden::event::decode_record_raw(
                    r.as_bytes(),
                    &limits,
                    &mut evs,
                    Some(&mut raws),
                ) {
                    eprintln!("{}:{}: {e}", events.display(), line + 1);
                    continue;
                }
                for (ev, raw) in evs.iter().zip(&raws) {
                    seen += 1;
                    let id = ev.metadata_uid.as_deref().unwrap_or("-");
                    det.evaluate(ev, raw, |_, rule, _, result| {
                        matched += 1;
                        print!(
                            "match  record {}  event {id}  {}  {}",
                            line + 1,
                            ev.api_operation,
                            rule.id
                        );
                        if let rsigma_eval::ResultBody::Detection(d) = &result.body {
                            print!("  selections {:?}", d.matched_selections);
                            for m in &d.matched_fields {
                                print!("  {}={}", m.field, m.value);
                            }
                        }
                        println!();
                    });
                }
            }
            println!("{matched} matches in {seen} events");
            Ok(ExitCode::SUCCESS)
        }
    }
}
