//! Kafka end-to-end: a topic on a real broker (tansu, started here on a free loopback
//! port when it is on PATH) consumed by ordo into SQLite, beside a raw rdkafka
//! consume-only loop on the same topic in the same run.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ordo_kafka::{KafkaSource, KafkaUrl};
use ordo_sim::Rng;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

/// Partitions of the benchmark topic.
pub const PARTITIONS: u32 = 3;

/// Quiet time ordo waits before calling the topic drained (not counted: the measure ends
/// with the commit that made the last delivery durable).
pub const IDLE_MS: u64 = 300;

/// Results of the Kafka benchmark.
#[derive(Clone, Debug)]
pub struct KafkaResult {
    /// Messages in the topic.
    pub events: usize,
    /// ordo into SQLite, durable, events per second (first delivery to last commit).
    pub kafka_events_per_s: f64,
    /// The raw consume-only loop, events per second (first message to last message).
    pub raw_events_per_s: f64,
    /// ordo / raw.
    pub ratio: f64,
    /// One hot stream (every event on one key, so one partition): ordo, events per second.
    pub single_key_events_per_s: f64,
    /// The raw loop on that one partition, events per second.
    pub single_key_raw_events_per_s: f64,
}

struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the benchmark, or says why it cannot.
pub fn run(events: usize) -> Result<KafkaResult, String> {
    let port = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| e.to_string())?
        .local_addr()
        .map_err(|e| e.to_string())?
        .port();
    let listener = format!("tcp://127.0.0.1:{port}");
    let child = Command::new("tansu")
        .args(["broker", "--listener-url", &listener, "--advertised-listener-url", &listener, "--storage-engine", "memory://tansu/"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("tansu is not available ({e}); install it with `cargo install tansu --version 0.6.0 --features dynostore`"))?;
    let _broker = Broker(child);
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if started.elapsed() > Duration::from_secs(15) {
            return Err("tansu did not start listening within 15 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let brokers = format!("127.0.0.1:{port}");
    let (ordo, raw) = topic_run(&listener, &brokers, "bench", events, 5_000)?;
    let (one, one_raw) = topic_run(&listener, &brokers, "bench-one", events, 1)?;
    Ok(KafkaResult {
        events,
        kafka_events_per_s: ordo,
        raw_events_per_s: raw,
        ratio: ordo / raw,
        single_key_events_per_s: one,
        single_key_raw_events_per_s: one_raw,
    })
}

/// A topic of `events` over `streams` keys: (ordo, raw) events per second.
fn topic_run(
    listener: &str,
    brokers: &str,
    topic: &str,
    events: usize,
    streams: usize,
) -> Result<(f64, f64), String> {
    let status = Command::new("tansu")
        .args([
            "topic",
            "create",
            "--broker",
            listener,
            "--partitions",
            &PARTITIONS.to_string(),
            topic,
        ])
        .stdout(Stdio::null())
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err("could not create the topic".into());
    }
    produce(brokers, topic, events, streams)?;
    // Raw before and after ordo (each a fresh group reading from the start), the best
    // counting, so a cold broker does not flatter either side.
    let raw_before = raw_loop(brokers, topic, events, &format!("{topic}-raw-1"))?;
    let ordo = ordo_run(brokers, topic)?;
    let raw = raw_before.max(raw_loop(brokers, topic, events, &format!("{topic}-raw-2"))?);
    Ok((ordo, raw))
}

fn produce(brokers: &str, topic: &str, events: usize, streams: usize) -> Result<(), String> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "20")
        .create()
        .map_err(|e| e.to_string())?;
    let mut rng = Rng::derive(1, "kafka-bench");
    let mut versions = vec![0u64; streams];
    for i in 0..events {
        let s = rng.index(streams);
        versions[s] += 1;
        let stream = format!("account-{s}");
        let body = format!(
            r#"{{"id":"e{i}","stream":"{stream}","version":{},"type":"Credited","op":"incr","data":{{"balance":{}}}}}"#,
            versions[s],
            rng.range(1, 100)
        );
        let mut record = BaseRecord::to(topic).key(&stream).payload(&body);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, returned)) => {
                    record = returned;
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(60))
        .map_err(|e| e.to_string())
}

fn raw_loop(brokers: &str, topic: &str, events: usize, group: &str) -> Result<f64, String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "true")
        .set("session.timeout.ms", "6000")
        .create()
        .map_err(|e| e.to_string())?;
    consumer.subscribe(&[topic]).map_err(|e| e.to_string())?;
    let mut count = 0usize;
    let mut bytes = 0usize;
    let mut first = None;
    let mut last = Instant::now();
    let mut eof = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while count < events || eof.len() < PARTITIONS as usize {
        if Instant::now() > deadline {
            return Err(format!("the raw loop read {count} of {events} in 120 s"));
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                use rdkafka::message::Message;
                first.get_or_insert_with(Instant::now);
                bytes += message.payload().map_or(0, <[u8]>::len);
                count += 1;
                last = Instant::now();
                eof.remove(&message.partition());
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                eof.insert(p);
            }
            _ => {}
        }
    }
    std::hint::black_box(bytes);
    // First message to last message: the end-of-partition wait is not counted.
    let first = first.ok_or("the raw loop read nothing")?;
    Ok(count as f64 / last.duration_since(first).as_secs_f64())
}

fn ordo_run(brokers: &str, topic: &str) -> Result<f64, String> {
    let url = KafkaUrl::parse(&format!(
        "kafka://{brokers}/{topic}?group={topic}-ordo&session.timeout.ms=6000"
    ))?;
    let mut source = KafkaSource::open(&url, IDLE_MS).map_err(|e| e.to_string())?;
    crate::embedded::durable_rate(
        "kafka",
        &format!("kafka:{topic}?group={topic}-ordo"),
        &mut source,
    )
}
