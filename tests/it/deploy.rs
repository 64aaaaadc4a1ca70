//! The deploy artefacts in `deploy/` agree with the code: the Kubernetes ConfigMap embeds a config
//! that parses and validates, the probes hit the real endpoints and port, the Secret key the
//! Deployment reads exists, the Grafana dashboard only queries metrics the service exports, and
//! the Dockerfile and systemd unit run an existing subcommand with valid flags.
//!
//! No YAML crate is a dependency, so the manifests are checked structurally, line by line.

use cloudwarden::config::Config;
use cloudwarden::kafka::config::SecurityProtocol;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn read(rel: &str) -> String {
    let path = deploy_dir().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// The lines nested under the first line whose trimmed text is `key` (more indented than it, up
/// to the first less-or-equally indented non-blank line), de-indented by the block's own indent.
fn block_under(text: &str, key: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.iter().position(|l| l.trim() == key)?;
    let key_indent = indent(lines[start]);
    let body: Vec<&str> = lines[start + 1..]
        .iter()
        .take_while(|l| l.trim().is_empty() || indent(l) > key_indent)
        .copied()
        .collect();
    let block_indent = body
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| indent(l))
        .min()?;
    let mut out = String::new();
    for l in body {
        out.push_str(l.get(block_indent..).unwrap_or(""));
        out.push('\n');
    }
    Some(out)
}

/// The value of the first `key: value` line (trimmed, quotes removed) in `text`.
fn value_of<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let l = l.trim().trim_start_matches("- ");
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        Some(rest.trim().trim_matches('"'))
    })
}

/// Lines that are not YAML comments.
fn uncommented(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

fn manifests() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(deploy_dir().join("kubernetes")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            out.push((name, std::fs::read_to_string(&path).unwrap()));
        }
    }
    out.sort();
    out
}

/// The config embedded in the ConfigMap under `cloudwarden.toml: |`.
fn configmap_toml() -> String {
    let cm = read("kubernetes/configmap.yaml");
    block_under(&cm, "cloudwarden.toml: |")
        .expect("configmap.yaml has a `cloudwarden.toml: |` block")
}

fn configmap_config() -> Config {
    Config::from_toml(&configmap_toml())
        .unwrap_or_else(|e| panic!("the ConfigMap's cloudwarden.toml is not a valid config: {e}"))
}

#[test]
fn every_manifest_is_well_formed() {
    let all = manifests();
    let names: BTreeSet<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    for expected in [
        "configmap.yaml",
        "deployment.yaml",
        "secret.yaml",
        "service.yaml",
    ] {
        assert!(
            names.contains(expected),
            "deploy/kubernetes/{expected} is missing"
        );
    }
    for (name, text) in &all {
        assert!(!text.contains('\t'), "{name}: YAML must not contain tabs");
        for doc in text.split("\n---") {
            let body = uncommented(doc);
            if body.trim().is_empty() {
                continue;
            }
            let top: Vec<&str> = body
                .lines()
                .filter(|l| !l.trim().is_empty() && indent(l) == 0)
                .collect();
            assert!(
                top.iter().any(|l| l.starts_with("apiVersion: ")),
                "{name}: a document without apiVersion"
            );
            assert!(
                top.iter().any(|l| l.starts_with("kind: ")),
                "{name}: a document without kind"
            );
            assert!(
                top.contains(&"metadata:"),
                "{name}: a document without metadata"
            );
            for l in body.lines().filter(|l| !l.trim().is_empty()) {
                assert!(
                    indent(l) % 2 == 0,
                    "{name}: odd indentation (YAML here uses 2 spaces): {l:?}"
                );
            }
        }
    }
}

#[test]
fn configmap_config_parses_and_uses_scram_from_env() {
    let config = configmap_config();
    let k = &config.kafka;
    assert!(
        k.brokers.contains(".svc"),
        "brokers should name a bootstrap Service: {}",
        k.brokers
    );
    assert_eq!(k.security_protocol, SecurityProtocol::SaslSsl);
    assert_eq!(k.sasl.mechanism, "SCRAM-SHA-512");
    assert_eq!(k.sasl.password_env, "CLOUDWARDEN_SASL_PASSWORD");
    assert!(k.sasl.password_file.is_empty());
    assert!(
        !configmap_toml().to_lowercase().contains("password ="),
        "no password in the ConfigMap"
    );
    assert_eq!(
        config
            .service
            .listen
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .port(),
        9464
    );
}

#[test]
fn deployment_probes_ports_secret_and_config_mount() {
    let dep = read("kubernetes/deployment.yaml");
    let live = uncommented(&dep);

    let liveness = block_under(&live, "livenessProbe:").expect("livenessProbe");
    assert_eq!(value_of(&liveness, "path"), Some("/health"));
    assert_eq!(value_of(&liveness, "port"), Some("9464"));
    let readiness = block_under(&live, "readinessProbe:").expect("readinessProbe");
    assert_eq!(value_of(&readiness, "path"), Some("/ready"));
    assert_eq!(value_of(&readiness, "port"), Some("9464"));

    let ports = block_under(&live, "ports:").expect("container ports");
    assert_eq!(value_of(&ports, "name"), Some("metrics"));
    assert_eq!(value_of(&ports, "containerPort"), Some("9464"));
    assert_eq!(value_of(&live, "replicas"), Some("1"));

    // The SASL password variable the config names comes from the Secret, whose key exists.
    let config = configmap_config();
    let env = block_under(&live, "env:").expect("env");
    assert_eq!(
        value_of(&env, "name"),
        Some(config.kafka.sasl.password_env.as_str())
    );
    let secret_ref = block_under(&env, "secretKeyRef:").expect("secretKeyRef");
    let secret_name = value_of(&secret_ref, "name").expect("secretKeyRef.name");
    let secret_key = value_of(&secret_ref, "key").expect("secretKeyRef.key");
    let secret = uncommented(&read("kubernetes/secret.yaml"));
    assert_eq!(value_of(&secret, "kind"), Some("Secret"));
    let meta = block_under(&secret, "metadata:").unwrap();
    assert_eq!(value_of(&meta, "name"), Some(secret_name));
    let data = block_under(&secret, "stringData:")
        .or_else(|| block_under(&secret, "data:"))
        .expect("secret data");
    assert!(
        value_of(&data, secret_key).is_some(),
        "secret.yaml has no key {secret_key}"
    );

    // The config comes from the ConfigMap, mounted where the image's CMD looks.
    let cm = uncommented(&read("kubernetes/configmap.yaml"));
    let cm_name = value_of(&block_under(&cm, "metadata:").unwrap(), "name")
        .unwrap()
        .to_owned();
    let volumes = block_under(&live, "volumes:").expect("volumes");
    let cm_volume = block_under(&volumes, "configMap:").expect("configMap volume");
    assert_eq!(value_of(&cm_volume, "name"), Some(cm_name.as_str()));
    let mounts = block_under(&live, "volumeMounts:").expect("volumeMounts");
    assert_eq!(value_of(&mounts, "mountPath"), Some("/etc/cloudwarden"));

    // Hardening and shutdown.
    let grace: u64 = value_of(&live, "terminationGracePeriodSeconds")
        .expect("terminationGracePeriodSeconds")
        .parse()
        .unwrap();
    assert!(
        grace > config.service.drain_timeout.as_secs() + 5,
        "terminationGracePeriodSeconds must exceed service.drain_timeout"
    );
    assert!(live.contains("runAsNonRoot: true"));
    assert!(live.contains("readOnlyRootFilesystem: true"));
    assert!(live.contains("allowPrivilegeEscalation: false"));
    assert!(live.contains("drop: [\"ALL\"]"));
    assert!(live.contains("prometheus.io/scrape: \"true\""));
    assert!(live.contains("prometheus.io/port: \"9464\""));

    // The container args are a valid command line for the binary.
    let args_line = value_of(&live, "args").expect("args");
    let args: Vec<String> = serde_json::from_str(args_line).expect("args as a flow sequence");
    assert_eq!(args[0], "run");
    assert_valid_command_line(&args);
}

#[test]
fn service_exposes_metrics_port() {
    let svc = uncommented(&read("kubernetes/service.yaml"));
    assert_eq!(value_of(&svc, "kind"), Some("Service"));
    assert_eq!(value_of(&svc, "type"), Some("ClusterIP"));
    let ports = block_under(&svc, "ports:").expect("ports");
    assert_eq!(value_of(&ports, "port"), Some("9464"));
    assert_eq!(value_of(&ports, "targetPort"), Some("9464"));
}

/// The metric names declared as `pub const ...: &str = "..."` in src/telemetry/mod.rs.
fn exported_metrics() -> BTreeSet<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/telemetry/mod.rs");
    let text = std::fs::read_to_string(path).unwrap();
    let names: BTreeSet<String> = text
        .lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix("pub const ")?;
            let (_, value) = rest.split_once(": &str = \"")?;
            Some(value.split('"').next()?.to_owned())
        })
        .collect();
    assert!(names.len() >= 10, "found too few metric consts: {names:?}");
    names
}

/// Every `cloudwarden_[a-z_]+` name in `s`.
fn metric_names(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = s.as_bytes();
    let mut from = 0;
    while let Some(i) = s[from..].find("cloudwarden_") {
        let start = from + i;
        let prefixed =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start + "cloudwarden_".len();
        while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
            end += 1;
        }
        if !prefixed {
            out.push(s[start..end].to_owned());
        }
        from = end;
    }
    out
}

fn collect_queries(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "query" | "definition", serde_json::Value::String(s)) => {
                        out.push(s.clone())
                    }
                    _ => collect_queries(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_queries(v, out)),
        _ => {}
    }
}

#[test]
fn dashboard_queries_only_exported_metrics() {
    let dash: serde_json::Value =
        serde_json::from_str(&read("grafana-dashboard.json")).expect("dashboard is JSON");
    assert_eq!(dash["schemaVersion"], 39);
    assert!(
        dash["__inputs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"),
        "a DS_PROMETHEUS datasource input"
    );
    let exported = exported_metrics();
    let mut queries = Vec::new();
    collect_queries(&dash, &mut queries);
    let mut used = BTreeSet::new();
    for q in &queries {
        for name in metric_names(q) {
            assert!(
                exported.contains(&name),
                "dashboard query uses {name}, not a metric in src/telemetry/mod.rs: {q}"
            );
            used.insert(name);
        }
    }
    assert!(
        used.len() >= 10,
        "too few metrics in the dashboard: {used:?}"
    );

    let mut ids = BTreeSet::new();
    for panel in dash["panels"].as_array().unwrap() {
        assert!(
            ids.insert(panel["id"].as_i64().unwrap()),
            "duplicate panel id"
        );
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${DS_PROMETHEUS}",
            "{}",
            panel["title"]
        );
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{} has no query", panel["title"]);
        for t in targets {
            assert!(t["expr"].as_str().is_some_and(|e| !e.is_empty()));
        }
    }
}

/// `cloudwarden <args> --help` succeeds: the subcommand exists and every flag before it parses.
fn assert_valid_command_line(args: &[String]) {
    let out = Command::new(env!("CARGO_BIN_EXE_cloudwarden"))
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "`cloudwarden {}` is not a valid command line: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The JSON-array form of a Dockerfile instruction, e.g. `CMD ["run", ...]`.
fn exec_form(dockerfile: &str, instruction: &str) -> Vec<String> {
    let line = dockerfile
        .lines()
        .rfind(|l| l.starts_with(&format!("{instruction} ")))
        .unwrap_or_else(|| panic!("no {instruction}"));
    serde_json::from_str(line[instruction.len()..].trim())
        .unwrap_or_else(|e| panic!("{instruction} is not in exec form: {e}"))
}

#[test]
fn dockerfile_runs_as_non_root_with_run_config() {
    let df = read("Dockerfile");
    let user = df
        .lines()
        .rfind(|l| l.starts_with("USER "))
        .expect("a USER instruction")
        .trim_start_matches("USER ")
        .trim();
    let uid = user.split(':').next().unwrap();
    assert!(
        uid != "root" && uid != "0",
        "the image must run as a non-root user, not {user}"
    );
    assert_eq!(uid, "10001", "uid must match runAsUser in deployment.yaml");
    assert_eq!(exec_form(&df, "ENTRYPOINT"), ["cloudwarden"]);
    let cmd = exec_form(&df, "CMD");
    assert_eq!(cmd[..2], ["run", "--config"]);
    assert_eq!(cmd[2], "/etc/cloudwarden/cloudwarden.toml");
    assert_valid_command_line(&cmd);
    assert!(df.contains("EXPOSE 9464"));
    assert!(df.contains("cargo build --release --locked"));
    // The runtime stage is the last FROM.
    let runtime = df.rsplit("\nFROM ").next().unwrap();
    assert!(runtime.starts_with("debian:bookworm-slim"));
}

#[test]
fn systemd_unit_runs_an_existing_subcommand() {
    let unit = read("cloudwarden.service");
    let exec = |key: &str| -> Vec<String> {
        let line = unit
            .lines()
            .find(|l| l.starts_with(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}"));
        line[key.len() + 1..]
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    let start = exec("ExecStart");
    assert_eq!(start[0], "/usr/local/bin/cloudwarden");
    assert_eq!(start[1], "run");
    assert_eq!(
        start[2..4],
        ["--config", "/etc/cloudwarden/cloudwarden.toml"]
    );
    assert_valid_command_line(&start[1..]);
    let pre = exec("ExecStartPre");
    assert_eq!(pre[0], "/usr/local/bin/cloudwarden");
    assert_valid_command_line(&pre[1..]);

    let setting = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}"))
    };
    assert_eq!(setting("Restart"), "on-failure");
    assert_eq!(setting("KillSignal"), "SIGTERM");
    assert_eq!(setting("EnvironmentFile"), "-/etc/cloudwarden/env");
    let stop: u64 = setting("TimeoutStopSec")
        .trim_end_matches('s')
        .parse()
        .unwrap();
    assert!(
        stop > Config::default().service.drain_timeout.as_secs(),
        "TimeoutStopSec must exceed service.drain_timeout"
    );
    for hardening in [
        "NoNewPrivileges=true",
        "ProtectSystem=strict",
        "ProtectHome=true",
        "PrivateTmp=true",
    ] {
        assert!(unit.lines().any(|l| l == hardening), "missing {hardening}");
    }
    assert!(!setting("User").is_empty() && setting("User") != "root");
}

#[test]
fn deploy_readme_covers_every_artefact() {
    let readme = read("README.md");
    for name in [
        "Dockerfile",
        "cloudwarden.service",
        "configmap.yaml",
        "secret.yaml",
        "deployment.yaml",
        "service.yaml",
        "grafana-dashboard.json",
    ] {
        assert!(
            readme.contains(name),
            "deploy/README.md does not mention {name}"
        );
    }
}
