//! `kill -9` one of two or three instances (processes of the real binary) mid-stream, with the
//! default cooperative-sticky assignor on Apache Kafka: the others take its partitions once its
//! session times out, restore the moved repartition partitions' state from the changelog, and
//! every detection survives (the checks of `scale_out::check_handover`). The graceful-stop
//! version with in-process instances is in `scale_out.rs`.

use crate::broker::Broker;
use crate::scale_out::{check_handover, config, produce, read_alerts, INPUT_PARTITIONS};
use crate::util::{input_files, records};
use cloudwarden::config::Config;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Repartition partitions of `scale_out::config`.
const REPARTITION_PARTITIONS: u64 = 6;

/// One `cloudwarden run` process, its metrics port and its log.
struct Member {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Member {
    fn start(c: &Config, dir: &Path, i: usize) -> Member {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut c = c.clone();
        c.service.listen = format!("127.0.0.1:{port}");
        let path = dir.join(format!("member-{i}.toml"));
        std::fs::write(&path, toml::to_string(&c).expect("config as TOML")).unwrap();
        let log = dir.join(format!("member-{i}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_cloudwarden"))
            .args(["run", "--config", path.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        Member { child, port, log }
    }

    fn metrics(&self) -> String {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return String::new();
        };
        let _ = write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        );
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body
    }

    /// The sum of the samples of `metric` whose labels start with `labels`.
    fn value(&self, metric: &str, labels: &str) -> u64 {
        let prefix = format!("{metric}{labels}");
        self.metrics()
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .map(|v| v as u64)
            .sum()
    }

    fn assigned(&self) -> u64 {
        self.value("cloudwarden_assigned_partitions", " ")
    }

    fn consumed(&self, topic: &str) -> u64 {
        self.value(
            "cloudwarden_records_in_total",
            &format!("{{topic=\"{topic}\"}}"),
        )
    }

    /// SIGTERM, and the exit status must be success.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "graceful stop: {status}\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Until the members together own every partition, each has some, for 2 s in a row.
fn wait_stable(members: &[Member]) {
    let want = INPUT_PARTITIONS as u64 + REPARTITION_PARTITIONS;
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut since: Option<Instant> = None;
    loop {
        let each: Vec<u64> = members.iter().map(Member::assigned).collect();
        if each.iter().sum::<u64>() == want && each.iter().all(|n| *n > 0) {
            if since.get_or_insert_with(Instant::now).elapsed() >= Duration::from_secs(2) {
                return;
            }
        } else {
            since = None;
        }
        assert!(Instant::now() < deadline, "group never settled: {each:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn kill_9_one_of_two_instances_the_other_takes_over() {
    kill_one_mid_stream(2);
}

#[test]
fn kill_9_one_of_three_instances_the_others_take_over() {
    kill_one_mid_stream(3);
}

fn kill_one_mid_stream(n: usize) {
    let broker = Broker::start();
    let records = records(&input_files());
    let c = config(&broker, &format!("kill1of{n}"));
    // The default assignor, said out loud: the config sets none.
    assert!(!c
        .kafka
        .consumer
        .contains_key("partition.assignment.strategy"));
    broker.create_topics(&[
        (c.kafka.input_topics[0].as_str(), INPUT_PARTITIONS),
        (c.kafka.alerts_topic.as_str(), 1),
        (c.kafka.dead_letter_topic.as_str(), 1),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let mut members: Vec<Member> = (0..n).map(|i| Member::start(&c, dir.path(), i)).collect();
    wait_stable(&members);
    let half = records.len() / 2;
    let input = c.kafka.input_topics[0].clone();
    produce(&broker.addr, &input, &records[..half]);
    let deadline = Instant::now() + Duration::from_secs(90);
    while members.iter().map(|m| m.consumed(&input)).sum::<u64>() < half as u64 {
        assert!(Instant::now() < deadline, "first half not consumed");
        std::thread::sleep(Duration::from_millis(200));
    }
    // SIGKILL: no revocation, no last commit, no leave-group. The group notices when its
    // session (6 s) times out.
    let mut victim = members.pop().unwrap();
    let victim_had = victim.assigned();
    assert!(victim_had > 0);
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    let killed_at = Instant::now();
    wait_stable(&members);
    eprintln!(
        "kill -9 1 of {n}: the survivors own all partitions {:.1} s after the kill (the victim had {victim_had})",
        killed_at.elapsed().as_secs_f64()
    );
    produce(&broker.addr, &input, &records[half..]);
    let alerts = read_alerts(&broker.addr, &c.kafka.alerts_topic, Duration::from_secs(10));
    for m in members {
        m.stop();
    }
    check_handover(&broker, &c, &records, half, &alerts);
}
