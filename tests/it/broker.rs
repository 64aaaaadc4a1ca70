//! Apache Kafka for tests and benchmarks (shared by `tests/it` and `benches/` through a `#[path]`
//! module): a KRaft broker, or a cluster of them, as JVM processes owned by the test.
//!
//! The broker's jars come from Maven Central (`tests/kafka/pom.xml`), copied into
//! `.tools/kafka/libs` by `tests/kafka/broker.sh install` (`make test` and `make bench` do it);
//! `KAFKA_LIBS` overrides the folder. Without them, whatever needs a broker fails with that
//! instruction: broker tests are never skipped silently.
//!
//! `KAFKA_BOOTSTRAP=host:port` points [`Broker::start`] at a broker that is already running (any
//! Kafka-compatible one) instead of starting a process; every test then names its topics and
//! groups through [`Broker::name`], so tests never meet on a shared broker. [`Broker::cluster`]
//! always starts its own processes: the broker-fault tests kill them.
//!
//! Each node is started with `PR_SET_PDEATHSIG`, so a JVM dies with the test thread that started
//! it even when the test binary is killed: no orphaned brokers, and a second run starts clean.

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// One cluster id for every test cluster (16 bytes, URL-safe base64: "cloudwarden-test").
const CLUSTER_ID: &str = "Y2xvdWR3YXJkZW4tdGVzdA";
/// Nodes a formatted template exists for (the largest cluster a test starts).
const MAX_NODES: u32 = 3;

/// A running broker (or cluster), killed on drop; or the external one of `KAFKA_BOOTSTRAP`.
#[allow(dead_code)]
pub struct Broker {
    /// The bootstrap servers, `host:port[,host:port…]`.
    pub addr: String,
    nodes: Vec<Node>,
    run: String,
    _dir: Option<tempfile::TempDir>,
}

struct Node {
    id: u32,
    port: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A port for a broker to listen on, below Linux's ephemeral range (32768–60999): a killed
/// node restarts on the same port, and a port the kernel hands out as the local end of some
/// client connection meanwhile ("Unable to start acceptor for PLAINTEXT") is a port it can
/// never get back. Each port is handed out once per process and checked bindable now.
fn free_port() -> u16 {
    use std::sync::atomic::AtomicU16;
    const LOW: u16 = 20_000;
    const SPAN: u16 = 12_000;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Start where this process's id points, so two test binaries at once rarely meet.
    let base = (std::process::id() % u32::from(SPAN)) as u16;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = LOW + (base.wrapping_add(n)) % SPAN;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn libs() -> PathBuf {
    let dir = std::env::var_os("KAFKA_LIBS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/kafka/libs"));
    let broker_jar = std::fs::read_dir(&dir).ok().and_then(|mut d| {
        d.find(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("kafka_2.13-"))
        })
    });
    assert!(
        broker_jar.is_some(),
        "the Apache Kafka broker is not installed in {}: run `tests/kafka/broker.sh install` \
         (make test does it), or set KAFKA_BOOTSTRAP=host:port to use a running broker",
        dir.display()
    );
    dir
}

/// JVM options: a small heap and a single-threaded collector (2 cores, other things run).
fn java_opts() -> Vec<String> {
    std::env::var("KAFKA_JAVA_OPTS")
        .unwrap_or_else(|_| "-Xmx384m -Xms64m -XX:+UseSerialGC".into())
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

fn java(libs: &Path) -> Command {
    let mut cmd = Command::new("java");
    cmd.args(java_opts())
        .arg("-Dorg.slf4j.simpleLogger.defaultLogLevel=warn")
        .arg("-cp")
        .arg(format!("{}/*", libs.display()));
    // SAFETY: prctl only sets a flag of the child between fork and exec; it allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd
}

/// The `server.properties` of node `id` in a cluster of `n` (`ports[i]` = (client, controller)).
fn properties(id: u32, n: u32, ports: &[(u16, u16)], data: &Path) -> String {
    let (client, controller) = ports[id as usize - 1];
    let voters: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, (_, c))| format!("{}@127.0.0.1:{c}", i + 1))
        .collect();
    let rf = n.min(3);
    let min_isr = if n >= 3 { 2 } else { 1 };
    format!(
        "process.roles=broker,controller\n\
         node.id={id}\n\
         controller.quorum.voters={voters}\n\
         listeners=PLAINTEXT://127.0.0.1:{client},CONTROLLER://127.0.0.1:{controller}\n\
         advertised.listeners=PLAINTEXT://127.0.0.1:{client}\n\
         controller.listener.names=CONTROLLER\n\
         inter.broker.listener.name=PLAINTEXT\n\
         listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n\
         log.dirs={data}\n\
         num.partitions=1\n\
         num.network.threads=2\n\
         num.io.threads=4\n\
         default.replication.factor={rf}\n\
         min.insync.replicas={min_isr}\n\
         offsets.topic.replication.factor={rf}\n\
         offsets.topic.num.partitions=4\n\
         transaction.state.log.replication.factor={rf}\n\
         transaction.state.log.min.isr={min_isr}\n\
         transaction.state.log.num.partitions=4\n\
         share.coordinator.state.topic.replication.factor={rf}\n\
         share.coordinator.state.topic.min.isr={min_isr}\n\
         group.initial.rebalance.delay.ms=0\n\
         unclean.leader.election.enable=false\n",
        voters = voters.join(","),
        data = data.display(),
    )
}

/// Storage formatted once per process for node ids 1..=MAX_NODES (one JVM each, in parallel),
/// copied for every broker started after: formatting is a JVM start, copying is not.
fn template() -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let libs = libs();
        let tmp = std::env::temp_dir();
        // Templates of test processes that are gone (a static is never dropped).
        for e in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("cloudwarden-kafka-") {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = tmp.join(format!("cloudwarden-kafka-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ports: Vec<(u16, u16)> = (0..MAX_NODES).map(|_| (free_port(), free_port())).collect();
        let formats: Vec<(u32, Child)> = (1..=MAX_NODES)
            .map(|id| {
                let data = dir.join(format!("node-{id}"));
                let config = dir.join(format!("node-{id}.properties"));
                std::fs::write(&config, properties(id, MAX_NODES, &ports, &data)).unwrap();
                let child = java(&libs)
                    .args(["kafka.tools.StorageTool", "format", "-t", CLUSTER_ID, "-c"])
                    .arg(&config)
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("run java (a JDK 17 or newer is needed)");
                (id, child)
            })
            .collect();
        for (id, child) in formats {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "formatting node {id} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        dir
    })
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[allow(dead_code)] // shared with the benches, which use a part
impl Broker {
    /// The broker of `KAFKA_BOOTSTRAP`, or a single KRaft node of our own.
    pub fn start() -> Broker {
        match std::env::var("KAFKA_BOOTSTRAP") {
            Ok(addr) if !addr.trim().is_empty() => Broker {
                addr,
                nodes: Vec::new(),
                run: run_id(),
                _dir: None,
            },
            _ => Broker::cluster(1),
        }
    }

    /// `n` (1..=3) KRaft nodes of our own, each broker and controller, replication `min(n, 3)`.
    pub fn cluster(n: u32) -> Broker {
        assert!((1..=MAX_NODES).contains(&n), "1 to {MAX_NODES} nodes");
        let template = template();
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let nodes: Vec<Node> = (1..=n)
            .map(|id| {
                let data = dir.path().join(format!("node-{id}"));
                copy_dir(&template.join(format!("node-{id}")), &data);
                let config = dir.path().join(format!("node-{id}.properties"));
                std::fs::write(&config, properties(id, n, &ports, &data)).unwrap();
                Node {
                    id,
                    port: ports[id as usize - 1].0,
                    config,
                    log: dir.path().join(format!("node-{id}.log")),
                    child: None,
                }
            })
            .collect();
        let addr = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",");
        let mut broker = Broker {
            addr,
            nodes,
            run: run_id(),
            _dir: Some(dir),
        };
        for id in 1..=n {
            broker.spawn(id);
        }
        broker.wait_ready(n as usize);
        broker
    }

    fn spawn(&mut self, id: u32) {
        let libs = libs();
        let node = &mut self.nodes[id as usize - 1];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .unwrap();
        let child = java(&libs)
            .arg("kafka.Kafka")
            .arg(&node.config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("run java (a JDK 17 or newer is needed)");
        node.child = Some(child);
    }

    /// Waits until a metadata request lists `want` brokers.
    fn wait_ready(&mut self, want: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.addr)
            .set("log_level", "0")
            .create()
            .unwrap();
        loop {
            if let Ok(m) = client.fetch_metadata(None, Duration::from_millis(500)) {
                if m.brokers().len() >= want {
                    return;
                }
            }
            for n in &mut self.nodes {
                if let Some(Ok(Some(status))) = n.child.as_mut().map(|c| c.try_wait()) {
                    let log = std::fs::read_to_string(&n.log).unwrap_or_default();
                    panic!("kafka node {} exited ({status}):\n{log}", n.id);
                }
            }
            assert!(
                Instant::now() < deadline,
                "kafka at {} not ready in 60 s: {}",
                self.addr,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The nodes' logs (for failure messages).
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let log = std::fs::read_to_string(&n.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("--- node {} ---\n{}", n.id, tail.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `base` made unique to this broker handle: topics and groups of different tests never meet
    /// on a shared (`KAFKA_BOOTSTRAP`) broker.
    pub fn name(&self, base: &str) -> String {
        format!("{base}-{}", self.run)
    }

    /// Whether this handle owns its broker processes (false under `KAFKA_BOOTSTRAP`).
    pub fn owned(&self) -> bool {
        !self.nodes.is_empty()
    }

    /// The JVM process id of node `id`, for CPU accounting.
    pub fn pid(&self, id: u32) -> Option<u32> {
        self.nodes
            .get(id as usize - 1)?
            .child
            .as_ref()
            .map(|c| c.id())
    }

    /// `kill -9` node `id`.
    pub fn kill(&mut self, id: u32) {
        let node = &mut self.nodes[id as usize - 1];
        if let Some(mut c) = node.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts node `id` again (on its data) and waits until it answers and every partition's
    /// replicas are all in sync again (a killed node stays in the others' metadata until its
    /// registration times out, so "the cluster lists every node" says nothing here).
    pub fn restart(&mut self, id: u32) {
        self.spawn(id);
        // A JVM that exits at once (its port still held by the kernel for a moment) is
        // started again, a few times, before the wait below gives up on it.
        for _ in 0..5 {
            std::thread::sleep(Duration::from_secs(3));
            let node = &mut self.nodes[id as usize - 1];
            let exited = node
                .child
                .as_mut()
                .is_some_and(|c| c.try_wait().ok().flatten().is_some());
            if !exited {
                break;
            }
            eprintln!("node {id} exited at start; starting it again");
            self.spawn(id);
        }
        let node_addr = format!("127.0.0.1:{}", self.nodes[id as usize - 1].port);
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.addr)
            .set("log_level", "0")
            .create()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            // Its replicas rejoin the in-sync sets only once it is up and caught up.
            let in_sync = std::net::TcpStream::connect(&node_addr).is_ok()
                && client
                    .fetch_metadata(None, Duration::from_millis(500))
                    .ok()
                    .is_some_and(|m| {
                        m.topics().iter().all(|t| {
                            t.partitions()
                                .iter()
                                .all(|p| p.isr().len() == p.replicas().len())
                        })
                    });
            if in_sync {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {id} not back in sync in 90 s: {}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The leader node of `topic`'s `partition`.
    pub fn leader(&self, topic: &str, partition: i32) -> Option<u32> {
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.addr)
            .create()
            .ok()?;
        let m = client
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .ok()?;
        let t = m.topics().iter().find(|t| t.name() == topic)?;
        let p = t.partitions().iter().find(|p| p.id() == partition)?;
        u32::try_from(p.leader()).ok()
    }

    /// Creates the topics (name, partitions), replicated `min(nodes, 3)` times (once on an
    /// external broker).
    pub fn create_topics(&self, topics: &[(&str, i32)]) {
        let rf = (self.nodes.len().clamp(1, 3)) as i32;
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.addr)
            .create()
            .unwrap();
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|(n, p)| NewTopic::new(n, *p, TopicReplication::Fixed(rf)))
            .collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let results = rt
            .block_on(admin.create_topics(
                &new,
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
            ))
            .unwrap();
        for r in results {
            r.expect("topic created");
        }
        // Wait until every partition has a leader (creation returns before that).
        let deadline = Instant::now() + Duration::from_secs(30);
        for (t, p) in topics {
            for partition in 0..*p {
                while self.leader(t, partition).is_none() {
                    assert!(Instant::now() < deadline, "{t}/{partition} has no leader");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

fn run_id() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl Drop for Broker {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
