//! `nats://HOST:PORT/STREAM?durable=NAME`: a JetStream stream read through a durable pull
//! consumer that ordo owns.
//!
//! Positions are stream sequences, partition 0, kept in ordo's store with the state. The
//! server's view follows ordo's, never the other way round:
//!
//! - **Where reading starts.** On start (and on a rewind) the durable consumer is created
//!   anew at the sequence after the stored checkpoint (`DeliverPolicy::ByStartSequence`):
//!   what was delivered to a crashed process but not committed comes at once, not after
//!   its ack wait, and nothing the store has is read twice. The consumer is ordo's: do
//!   not share its name with another application.
//! - **Acks.** `AckPolicy::All`: after each commit, one double ack (the server confirms
//!   it) of the highest stream sequence the checkpoint covers acknowledges everything
//!   before it. Nothing is acknowledged before the commit that made it durable (applied,
//!   or written as waiting).
//! - **Never given up.** `MaxDeliver` is unlimited, and `AckWait` ([`ACK_WAIT_MS`], or
//!   `ack_wait_ms=` in the URL) is far beyond a commit; a message held longer than a third of it (a slow handler, a
//!   long commit) is marked in progress (`+WPI`), which restarts its ack wait. A
//!   redelivery that happens anyway (a process stalled longer than that) is the same
//!   stream sequence again: the engine's dedupe and version guard absorb it.
//!
//! The client is async (async-nats); the source owns a one-thread runtime that keeps the
//! connection serviced between polls (pings, reconnects) and blocks on it only inside
//! the [`Source`] calls.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::pull::Config as PullConfig;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::message::Acker;
use async_nats::jetstream::AckKind;
use futures_util::StreamExt;
use ordo_core::SourcePosition;
use ordo_runtime::source::{Delivery, Polled, Source, SourceError};

use crate::url::NatsUrl;

/// How long the server waits for an ack before it redelivers.
pub const ACK_WAIT_MS: u64 = 300_000;

/// Messages delivered and not yet acknowledged, at most (the server stops delivering
/// beyond; the next commit's ack lets it go on).
pub const MAX_ACK_PENDING: i64 = 65_536;

/// Longest wait for the server to answer at start and for one JetStream API call.
pub const SERVER_WAIT_MS: u64 = 10_000;

/// The client's buffer per subscription, in messages: a pull's messages beyond it would
/// be dropped by the client (a "slow consumer").
const SUBSCRIPTION_CAPACITY: usize = 65_536;

/// Most messages one pull asks for: well inside the subscription's buffer.
const PULL_MESSAGES_MAX: usize = 8_192;
const _: () = assert!(PULL_MESSAGES_MAX * 4 <= SUBSCRIPTION_CAPACITY);

/// Shortest pull worth waiting on the server for (shorter ones ask without waiting).
const PULL_WAIT_MS_MIN: u64 = 10;

/// A pull or an ack taking this much longer than asked holds the loop: said in the logs.
const SLOW_MS: Duration = Duration::from_millis(2_000);

/// How long a paused source sleeps per poll (it has one partition, 0).
const PAUSED_POLL_WAIT: Duration = Duration::from_millis(100);

/// The one partition of a JetStream stream read by one consumer.
const PARTITION: u32 = 0;

/// A JetStream stream read through ordo's durable pull consumer.
pub struct NatsSource {
    runtime: tokio::runtime::Runtime,
    client: async_nats::Client,
    stream: async_nats::jetstream::stream::Stream,
    url: NatsUrl,
    durable: String,
    /// The consumer, once created at [`Self::start_after`].
    consumer: Option<PullConsumer>,
    /// The last stream sequence the store holds (read from it after this one).
    start_after: Option<u64>,
    /// Delivered, not yet acknowledged: stream sequence → its acker, and when it came.
    unacked: BTreeMap<u64, (Acker, Instant)>,
    last_message: Instant,
    idle: Duration,
    paused: bool,
    /// The stream's last sequence and message count, as last read (for the lag).
    ends: Option<(u64, u64)>,
    ack_wait: Duration,
    /// When the held messages were last looked at for [`Self::keep_alive`].
    kept_alive_at: Instant,
    /// The client dropped messages of a subscription (a slow consumer). With
    /// `AckPolicy::All` an ack past a dropped message would acknowledge it unread, so
    /// nothing is acknowledged any more and the source fails: the restart reads again
    /// from the store's position.
    dropped: Arc<AtomicBool>,
}

fn server(what: &str, error: impl std::fmt::Display) -> SourceError {
    SourceError::Broker(format!("{what}: {error}"))
}

impl NatsSource {
    /// Connects and finds the stream. Fails with a clear error when the server does not
    /// answer within [`SERVER_WAIT_MS`] or the stream does not exist.
    pub fn open(url: &NatsUrl, idle_ms: u64) -> Result<Self, SourceError> {
        let durable = url.durable.clone().ok_or_else(|| {
            SourceError::Broker("a NATS source needs ?durable=NAME (its consumer)".into())
        })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| server("cannot start the NATS client's runtime", e))?;
        let wait = Duration::from_millis(SERVER_WAIT_MS);
        let dropped = Arc::new(AtomicBool::new(false));
        let noticed = dropped.clone();
        let (client, stream) = runtime.block_on(async {
            let client = async_nats::ConnectOptions::new()
                .connection_timeout(wait)
                .subscription_capacity(SUBSCRIPTION_CAPACITY)
                .event_callback(move |event| {
                    let noticed = noticed.clone();
                    async move {
                        if matches!(event, async_nats::Event::SlowConsumer(_)) {
                            noticed.store(true, Ordering::SeqCst);
                        }
                    }
                })
                .connect(&url.server)
                .await
                .map_err(|e| server(&format!("no answer from {}", url.server), e))?;
            let context = async_nats::jetstream::new(client.clone());
            let stream = tokio::time::timeout(wait, context.get_stream(&url.stream))
                .await
                .map_err(|_| server("no answer", "the stream lookup timed out"))?
                .map_err(|e| server(&format!("stream `{}`", url.stream), e))?;
            Ok::<_, SourceError>((client, stream))
        })?;
        Ok(NatsSource {
            runtime,
            client,
            stream,
            url: url.clone(),
            durable,
            consumer: None,
            start_after: None,
            unacked: BTreeMap::new(),
            last_message: Instant::now(),
            idle: Duration::from_millis(idle_ms),
            paused: false,
            ends: None,
            ack_wait: Duration::from_millis(url.ack_wait_ms.unwrap_or(ACK_WAIT_MS)),
            dropped,
            kept_alive_at: Instant::now(),
        })
    }

    /// The consumer, (re)created at the stored position when there is none.
    fn consumer(&mut self) -> Result<PullConsumer, SourceError> {
        if let Some(consumer) = &self.consumer {
            return Ok(consumer.clone());
        }
        let deliver_policy = match self.start_after {
            Some(last) => DeliverPolicy::ByStartSequence {
                start_sequence: last + 1,
            },
            None => DeliverPolicy::All,
        };
        let config = PullConfig {
            durable_name: Some(self.durable.clone()),
            deliver_policy,
            ack_policy: AckPolicy::All,
            ack_wait: self.ack_wait,
            max_deliver: -1,
            max_ack_pending: MAX_ACK_PENDING,
            filter_subject: self.url.subject.clone().unwrap_or_default(),
            ..Default::default()
        };
        let stream = self.stream.clone();
        let durable = self.durable.clone();
        let consumer = self.runtime.block_on(async move {
            // The server's consumer may point elsewhere (another start, an old ack floor):
            // ordo's store decides, so it is made anew. Absent is fine.
            let _ = stream.delete_consumer(&durable).await;
            stream.create_consumer(config).await
        });
        let consumer = consumer.map_err(|e| server("cannot create the consumer", e))?;
        self.unacked.clear();
        self.consumer = Some(consumer.clone());
        Ok(consumer)
    }

    /// Marks messages held for a third of the ack wait as in progress.
    fn keep_alive(&mut self) {
        let due = self.ack_wait / 3;
        let now = Instant::now();
        // Looked at twice per `due` at most: not a scan of every held message per poll.
        if now.duration_since(self.kept_alive_at) < due / 2 {
            return;
        }
        self.kept_alive_at = now;
        let ackers: Vec<&Acker> = self
            .unacked
            .values_mut()
            .filter(|(_, since)| now.duration_since(*since) >= due)
            .map(|(acker, since)| {
                *since = now;
                &*acker
            })
            .collect();
        if ackers.is_empty() {
            return;
        }
        self.runtime.block_on(async {
            for acker in ackers {
                if let Err(error) = acker.ack_with(AckKind::Progress).await {
                    tracing::warn!(%error, "nats: cannot mark a message in progress");
                }
            }
        });
    }

    fn pull(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, SourceError> {
        if self.dropped.load(Ordering::SeqCst) {
            return Err(SourceError::Broker(
                "the NATS client dropped messages (a slow consumer); nothing after them was acknowledged: restart to read again from the store's position".into(),
            ));
        }
        let max = max.min(PULL_MESSAGES_MAX);
        let consumer = self.consumer()?;
        let asked = Instant::now();
        let batch = self.runtime.block_on(async {
            // What is there now, without waiting (the request ends when the server has
            // nothing more). A waiting request for many messages that gets only some is
            // not ended by nats-server 2.9 at its expiry (the client gives up 5 s later),
            // so waiting is done by a request for one message, which either arrives or
            // expires.
            let mut batch = collect(
                consumer
                    .fetch()
                    .max_messages(max)
                    .messages()
                    .await
                    .map_err(|e| server("cannot pull", e))?,
            )
            .await;
            if batch.is_empty() && wait.as_millis() >= u128::from(PULL_WAIT_MS_MIN) {
                batch = collect(
                    consumer
                        .batch()
                        .max_messages(1)
                        .expires(wait)
                        .messages()
                        .await
                        .map_err(|e| server("cannot pull", e))?,
                )
                .await;
            }
            Ok::<_, SourceError>(batch)
        })?;
        if asked.elapsed() > wait + SLOW_MS {
            // The loop was held: no commit, no operator action meanwhile.
            tracing::warn!(
                ms = asked.elapsed().as_millis() as u64,
                wait_ms = wait.as_millis() as u64,
                got = batch.len(),
                "nats: slow pull"
            );
        }
        let now = Instant::now();
        let mut deliveries = Vec::with_capacity(batch.len());
        for message in batch {
            let sequence = match message.info() {
                Ok(info) => info.stream_sequence,
                Err(error) => {
                    tracing::warn!(%error, "nats: a message without JetStream metadata");
                    continue;
                }
            };
            let (message, acker) = message.split();
            self.unacked.insert(sequence, (acker, now));
            deliveries.push((
                SourcePosition {
                    partition: PARTITION,
                    offset: sequence,
                },
                message.payload.to_vec(),
                None,
            ));
        }
        Ok(deliveries)
    }
}

/// Every message of one pull, in order. A pull that ends early (a status from the
/// server) is not fatal: what came is delivered, the next poll asks again.
async fn collect(
    mut messages: async_nats::jetstream::consumer::pull::Batch,
) -> Vec<async_nats::jetstream::Message> {
    let mut batch = Vec::new();
    while let Some(message) = messages.next().await {
        match message {
            Ok(message) => batch.push(message),
            Err(error) => {
                tracing::debug!(%error, "nats: pull ended");
                break;
            }
        }
    }
    batch
}

impl Source for NatsSource {
    fn resume(&mut self, checkpoints: &[(u32, u64)]) {
        self.start_after = checkpoints
            .iter()
            .find(|(p, _)| *p == PARTITION)
            .map(|(_, o)| *o);
        self.consumer = None;
    }

    fn rewind(&mut self, checkpoints: &[(u32, u64)]) -> Result<(), SourceError> {
        self.resume(checkpoints);
        self.consumer().map(|_| ())
    }

    fn poll(&mut self, max: usize, wait: Duration) -> Result<Polled, SourceError> {
        self.keep_alive();
        if self.paused {
            std::thread::sleep(wait.min(PAUSED_POLL_WAIT));
            return Ok(Polled::Nothing);
        }
        let deliveries = self.pull(max, wait)?;
        if !deliveries.is_empty() {
            self.last_message = Instant::now();
            return Ok(Polled::Events(deliveries));
        }
        Ok(if self.last_message.elapsed() >= self.idle {
            Polled::Idle
        } else {
            Polled::Nothing
        })
    }

    fn committed(&mut self, checkpoints: &[(u32, u64)]) {
        let Some(&(_, settled)) = checkpoints.iter().find(|(p, _)| *p == PARTITION) else {
            return;
        };
        if self.dropped.load(Ordering::SeqCst) {
            // An ack could cover a message the client dropped unread.
            return;
        }
        let Some(&highest) = self.unacked.range(..=settled).next_back().map(|(s, _)| s) else {
            return;
        };
        // Everything up to the checkpoint is durable in the store: one double ack of the
        // highest covers the rest (AckPolicy::All).
        let mut settled_ackers = self.unacked.split_off(&(highest + 1));
        std::mem::swap(&mut settled_ackers, &mut self.unacked);
        let (acker, _) = settled_ackers
            .remove(&highest)
            .expect("the highest settled sequence is held");
        let wait = Duration::from_millis(SERVER_WAIT_MS);
        let asked = Instant::now();
        let acked = self
            .runtime
            .block_on(async { tokio::time::timeout(wait, acker.double_ack()).await });
        if asked.elapsed() > SLOW_MS {
            tracing::warn!(
                ms = asked.elapsed().as_millis() as u64,
                "nats: slow double ack"
            );
        }
        match acked {
            Ok(Ok(())) => {}
            // Not fatal: the server redelivers after its ack wait, and the store's
            // checkpoint makes the copies duplicates.
            Ok(Err(error)) => tracing::warn!(%error, "nats: ack not confirmed"),
            Err(_) => tracing::warn!("nats: ack not confirmed within {} s", SERVER_WAIT_MS / 1000),
        }
    }

    fn reachable(&self) -> bool {
        matches!(
            self.client.connection_state(),
            async_nats::connection::State::Connected
        )
    }

    fn ends(&mut self) -> Vec<ordo_runtime::telemetry::PartitionEnd> {
        let wait = Duration::from_millis(SERVER_WAIT_MS);
        let stream = &mut self.stream;
        let info = self.runtime.block_on(async {
            tokio::time::timeout(wait, stream.info())
                .await
                .ok()
                .and_then(Result::ok)
                .map(|info| (info.state.last_sequence, info.state.messages))
        });
        if info.is_some() {
            self.ends = info;
        }
        self.ends
            .map(|(last, messages)| ordo_runtime::telemetry::PartitionEnd {
                partition: PARTITION,
                caught_up_at: last,
                events: messages,
            })
            .into_iter()
            .collect()
    }

    fn pause_partitions(&mut self, paused: &BTreeSet<u32>) -> Result<(), SourceError> {
        self.paused = paused.contains(&PARTITION);
        Ok(())
    }
}
