//! Probe: does a broker support librdkafka transactions (read-process-write)? Prints each step of
//! a committed, an aborted and a committed transaction, then what a `read_committed` reader sees.
//! Usage: `make broker-start`, then `DBG=protocol,feature cargo run --example txn_probe -- 127.0.0.1:19092`
//! (`DBG` turns on librdkafka debug logs: its ApiVersions lines show which APIs the broker offers).
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::time::Duration;

fn main() {
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(std::io::stderr)
        .try_init();
    let brokers = std::env::args().nth(1).unwrap_or("127.0.0.1:19092".into());
    let debug = std::env::var("DBG").unwrap_or_default();
    let admin: AdminClient<_> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let r = rt.block_on(admin.create_topics(
        &[NewTopic::new("txn-probe", 1, TopicReplication::Fixed(1))],
        &AdminOptions::new(),
    ));
    println!("create: {r:?}");
    let mut pc = ClientConfig::new();
    pc.set("bootstrap.servers", &brokers)
        .set("transactional.id", "probe-1");
    if !debug.is_empty() {
        pc.set("debug", &debug);
    }
    let p: BaseProducer = pc.create().unwrap();
    println!(
        "init: {:?}",
        p.init_transactions(Timeout::After(Duration::from_secs(20)))
    );
    // committed txn of 5
    println!("begin: {:?}", p.begin_transaction());
    for i in 0..5 {
        if let Err((e, _)) =
            p.send(BaseRecord::<str, str>::to("txn-probe").payload(&format!("c{i}")))
        {
            println!("send: {e}");
        }
    }
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "probe-g")
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    c.subscribe(&["txn-probe"]).unwrap();
    for _ in 0..30 {
        let _ = c.poll(Duration::from_millis(100));
        if !c.assignment().unwrap().elements().is_empty() {
            break;
        }
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("txn-probe", 0, Offset::Offset(3))
        .unwrap();
    match c.group_metadata() {
        Some(g) => println!(
            "send_offsets: {:?}",
            p.send_offsets_to_transaction(&tpl, &g, Timeout::After(Duration::from_secs(20)))
        ),
        None => println!("no group metadata"),
    }
    println!(
        "commit: {:?}",
        p.commit_transaction(Timeout::After(Duration::from_secs(20)))
    );
    println!("begin2: {:?}", p.begin_transaction());
    for i in 0..3 {
        if let Err((e, _)) =
            p.send(BaseRecord::<str, str>::to("txn-probe").payload(&format!("a{i}")))
        {
            println!("send: {e}");
        }
    }
    let _ = p.flush(Duration::from_secs(10));
    println!(
        "abort: {:?}",
        p.abort_transaction(Timeout::After(Duration::from_secs(20)))
    );
    println!("begin3: {:?}", p.begin_transaction());
    if let Err((e, _)) = p.send(BaseRecord::<str, str>::to("txn-probe").payload("c-last")) {
        println!("send: {e}");
    }
    println!(
        "commit3: {:?}",
        p.commit_transaction(Timeout::After(Duration::from_secs(20)))
    );
    let mut seen = vec![];
    let c2: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "probe-read")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    c2.subscribe(&["txn-probe"]).unwrap();
    let end = std::time::Instant::now() + Duration::from_secs(8);
    while std::time::Instant::now() < end {
        if let Some(Ok(m)) = c2.poll(Duration::from_millis(200)) {
            seen.push(String::from_utf8_lossy(m.payload().unwrap_or(b"")).to_string());
        }
    }
    println!("read_committed sees: {seen:?}");
    println!(
        "committed offsets of probe-g: {:?}",
        c.committed(Duration::from_secs(5))
    );
}
