//! NATS JetStream end-to-end: a stream on the local server (127.0.0.1:4222) consumed by
//! ordo into SQLite, beside a raw async-nats pull-and-ack loop on the same stream in the
//! same run; and one hot key (every event on one stream) through both, the per-key
//! ceiling users compare between brokers.
//!
//! The raw loop is a fair baseline, not a straw man: one durable pull consumer with
//! `AckPolicy::All`, batches of [`PULL_BATCH`], and one ack of each batch's last message,
//! as ordo acks once per commit.

use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::pull::Config as PullConfig;
use async_nats::jetstream::consumer::AckPolicy;
use async_nats::jetstream::{self, stream};
use futures_util::StreamExt;
use ordo_nats::{NatsSource, NatsUrl};
use ordo_sim::Rng;

/// The local server.
pub const SERVER: &str = "127.0.0.1:4222";

/// Messages per pull of the raw loop.
pub const PULL_BATCH: usize = 1_000;

/// Quiet time ordo waits before calling the stream drained (not counted).
pub const IDLE_MS: u64 = 300;

/// Messages published before their acks are awaited.
const PUBLISH_WINDOW: usize = 1_000;

/// One workload's figures.
#[derive(Clone, Copy, Debug)]
pub struct NatsFigures {
    /// ordo into SQLite, durable, events per second (first delivery to last commit).
    pub ordo_events_per_s: f64,
    /// The raw pull-and-ack loop, events per second.
    pub raw_events_per_s: f64,
}

impl NatsFigures {
    /// ordo / raw.
    pub fn ratio(&self) -> f64 {
        self.ordo_events_per_s / self.raw_events_per_s
    }
}

/// Results of the NATS benchmark.
#[derive(Clone, Copy, Debug)]
pub struct NatsResult {
    /// Messages per workload.
    pub events: usize,
    /// 5,000 streams.
    pub spread: NatsFigures,
    /// Every event on one stream.
    pub single_key: NatsFigures,
}

struct TestStream {
    runtime: tokio::runtime::Runtime,
    context: jetstream::Context,
    name: String,
}

impl Drop for TestStream {
    fn drop(&mut self) {
        let _ = self
            .runtime
            .block_on(self.context.delete_stream(&self.name));
    }
}

/// Runs the benchmark, or says why it cannot (no server on 127.0.0.1:4222).
pub fn run(events: usize) -> Result<NatsResult, String> {
    Ok(NatsResult {
        events,
        spread: workload(events, 5_000, "spread")?,
        single_key: workload(events, 1, "one")?,
    })
}

/// One workload: `events` over `streams` keys on a stream of its own (`tag` in its name).
pub fn workload(events: usize, streams: usize, tag: &str) -> Result<NatsFigures, String> {
    let stream = make_stream(tag)?;
    publish(&stream, events, streams)?;
    // Raw before and after ordo, the best counting, so a cold server flatters neither.
    let raw_before = raw_loop(&stream, events, "raw1")?;
    let ordo = ordo_run(&stream.name)?;
    let raw = raw_before.max(raw_loop(&stream, events, "raw2")?);
    Ok(NatsFigures {
        ordo_events_per_s: ordo,
        raw_events_per_s: raw,
    })
}

fn make_stream(tag: &str) -> Result<TestStream, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let name = format!("ORDO_BENCH_{}_{}", tag.to_uppercase(), std::process::id());
    let context = runtime.block_on(async {
        let client = async_nats::connect(SERVER)
            .await
            .map_err(|e| format!("no NATS server on {SERVER} ({e})"))?;
        let context = jetstream::new(client);
        let _ = context.delete_stream(&name).await;
        context
            .create_stream(stream::Config {
                name: name.clone(),
                subjects: vec![format!("{}.>", name.to_lowercase())],
                ..Default::default()
            })
            .await
            .map_err(|e| format!("cannot create a stream (JetStream enabled?): {e}"))?;
        Ok::<_, String>(context)
    })?;
    Ok(TestStream {
        runtime,
        context,
        name,
    })
}

fn publish(stream: &TestStream, events: usize, streams: usize) -> Result<(), String> {
    let mut rng = Rng::derive(1, "nats-bench");
    let mut versions = vec![0u64; streams];
    let prefix = stream.name.to_lowercase();
    let bodies: Vec<(String, String)> = (0..events)
        .map(|i| {
            let s = rng.index(streams);
            versions[s] += 1;
            let key = format!("account-{s}");
            let body = format!(
                r#"{{"id":"e{i}","stream":"{key}","version":{},"type":"Credited","op":"incr","data":{{"balance":{}}}}}"#,
                versions[s],
                rng.range(1, 100)
            );
            (format!("{prefix}.{key}"), body)
        })
        .collect();
    stream.runtime.block_on(async {
        for window in bodies.chunks(PUBLISH_WINDOW) {
            let mut acks = Vec::with_capacity(window.len());
            for (subject, body) in window {
                acks.push(
                    stream
                        .context
                        .publish(subject.clone(), body.clone().into())
                        .await
                        .map_err(|e| e.to_string())?,
                );
            }
            for ack in acks {
                ack.await.map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    })
}

fn raw_loop(stream: &TestStream, events: usize, durable: &str) -> Result<f64, String> {
    stream.runtime.block_on(async {
        let handle = stream
            .context
            .get_stream(&stream.name)
            .await
            .map_err(|e| e.to_string())?;
        let consumer = handle
            .create_consumer(PullConfig {
                durable_name: Some(durable.to_string()),
                ack_policy: AckPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        let mut count = 0usize;
        let mut bytes = 0usize;
        let mut first = None;
        let mut last_at = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(120);
        while count < events {
            if Instant::now() > deadline {
                return Err(format!("the raw loop read {count} of {events} in 120 s"));
            }
            let mut batch = consumer
                .batch()
                .max_messages(PULL_BATCH)
                .expires(Duration::from_millis(500))
                .messages()
                .await
                .map_err(|e| e.to_string())?;
            let mut last = None;
            while let Some(Ok(message)) = batch.next().await {
                first.get_or_insert_with(Instant::now);
                bytes += message.payload.len();
                count += 1;
                last_at = Instant::now();
                last = Some(message);
            }
            if let Some(last) = last {
                last.ack().await.map_err(|e| e.to_string())?;
            }
        }
        std::hint::black_box(bytes);
        // First message to last message: a last pull waiting out its expiry is not
        // throughput.
        let first = first.ok_or("the raw loop read nothing")?;
        Ok(count as f64 / last_at.duration_since(first).as_secs_f64())
    })
}

fn ordo_run(stream: &str) -> Result<f64, String> {
    let url = NatsUrl::parse(&format!("nats://{SERVER}/{stream}?durable=ordo"))?;
    let mut source = NatsSource::open(&url, IDLE_MS).map_err(|e| e.to_string())?;
    crate::embedded::durable_rate("nats", &format!("nats:{stream}?durable=ordo"), &mut source)
}
