//! `nats://HOST:PORT/STREAM?durable=NAME`: a JetStream stream read through a durable pull
//! consumer that ordo owns; with `partitions=N&prefix=P`, through one durable consumer
//! per subject partition (`NAME-<n>` reading `P.<n>.>`).
//!
//! Positions are stream sequences, per partition (0 when unpartitioned), kept in ordo's
//! store with the state. The server's view follows ordo's, never the other way round:
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
//! - **Several members.** Given a [`Member`] (a PostgreSQL store shared by the group),
//!   the source reads only the partitions the group's view gives it
//!   ([`ordo_runtime::membership`]), announcing each change as a revocation or an
//!   assignment; after either, every partition it keeps is read again from the store's
//!   checkpoints (its consumer made anew). A revoked partition's consumer is left to the
//!   next owner, which makes it anew at its own checkpoint.
//! - **Waiting on several partitions.** What is there is fetched from each partition
//!   without waiting; only when none has anything does the source wait, with one
//!   one-message request per partition, all awaited to their end: a request given up
//!   early could leave a message delivered to nobody, which the next `AckPolicy::All`
//!   ack of a later one would acknowledge unread.
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
use ordo_runtime::membership::{Change, Member};
use ordo_runtime::telemetry::PartitionEnd;
use ordo_runtime::{Delivery, Polled, Source, SourceError};

use crate::url::NatsUrl;

/// How long the server waits for an ack before it redelivers.
pub const ACK_WAIT_MS: u64 = 300_000;

/// Messages delivered and not yet acknowledged, at most, per consumer (the server stops
/// delivering beyond; the next commit's ack lets it go on).
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

/// How much longer than asked a pull may take before the client gives up on it: the
/// request may still be alive on the server, so the partition's consumer is made anew
/// (see [`NatsSource::reset`]).
const PULL_GRACE_MS: u64 = 1_000;

/// A pull or an ack taking this much longer than asked holds the loop: said in the logs.
const SLOW_MS: Duration = Duration::from_millis(2_000);

/// How long a poll with nothing to read (all paused, none assigned) sleeps.
const PAUSED_POLL_WAIT: Duration = Duration::from_millis(100);

/// One partition this process reads: its consumer and what it delivered unacknowledged.
#[derive(Default)]
struct Partition {
    /// The last stream sequence the store holds for it (read from the one after).
    start_after: Option<u64>,
    /// The consumer, once created at `start_after`.
    consumer: Option<PullConsumer>,
    /// Delivered, not yet acknowledged: stream sequence → its acker, and when it came.
    unacked: BTreeMap<u64, (Acker, Instant)>,
    /// The highest stream sequence handed to the run loop from this consumer.
    delivered_max: Option<u64>,
    /// The consumer's delivery sequence of the last message taken (0: none yet). Each
    /// delivery counts one up: a gap is a message the server delivered to a request
    /// the client no longer listens to.
    delivery_sequence: u64,
    /// Messages the consumer has not delivered yet, as the last message (or its
    /// creation) said: what a pull can ask for and get at once.
    pending: u64,
    /// The next pull, started when the last one was handed over, so that the network
    /// works while the run loop applies and commits. Always awaited, never dropped
    /// running: a request given up on would take messages to nobody.
    prefetch: Option<tokio::task::JoinHandle<Pulled>>,
}

/// A JetStream stream read through ordo's durable pull consumers.
pub struct NatsSource {
    runtime: tokio::runtime::Runtime,
    client: async_nats::Client,
    stream: async_nats::jetstream::stream::Stream,
    url: NatsUrl,
    /// The partitions read here, by number.
    owned: BTreeMap<u32, Partition>,
    /// The group this process is one member of (partitions come and go).
    member: Option<Member>,
    /// The change announced by the last poll, done by [`Source::complete_rebalance`].
    changing: Option<Change>,
    /// Where the next pull starts among the partitions (turns, so that none starves).
    turn: usize,
    last_message: Instant,
    idle: Duration,
    paused: BTreeSet<u32>,
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
    /// Connects and finds the stream; every partition is read here. Fails with a clear
    /// error when the server does not answer within [`SERVER_WAIT_MS`] or the stream does
    /// not exist.
    pub fn open(url: &NatsUrl, idle_ms: u64) -> Result<Self, SourceError> {
        let mut source = Self::connect(url, idle_ms)?;
        source.owned = (0..url.partitions)
            .map(|p| (p, Partition::default()))
            .collect();
        Ok(source)
    }

    /// Connects as one member of a group: partitions are read as `member`'s view of the
    /// group gives them.
    pub fn open_member(url: &NatsUrl, idle_ms: u64, member: Member) -> Result<Self, SourceError> {
        let mut source = Self::connect(url, idle_ms)?;
        source.member = Some(member);
        Ok(source)
    }

    fn connect(url: &NatsUrl, idle_ms: u64) -> Result<Self, SourceError> {
        if url.durable.is_none() {
            return Err(SourceError::Broker(
                "a NATS source needs ?durable=NAME (its consumer)".into(),
            ));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| server("cannot start the NATS client's runtime", e))?;
        let dropped = Arc::new(AtomicBool::new(false));
        let (client, stream) = runtime.block_on(connect(url, dropped.clone()))?;
        Ok(NatsSource {
            runtime,
            client,
            stream,
            url: url.clone(),
            owned: BTreeMap::new(),
            member: None,
            changing: None,
            turn: 0,
            last_message: Instant::now(),
            idle: Duration::from_millis(idle_ms),
            paused: BTreeSet::new(),
            ends: None,
            ack_wait: Duration::from_millis(url.ack_wait_ms.unwrap_or(ACK_WAIT_MS)),
            dropped,
            kept_alive_at: Instant::now(),
        })
    }

    /// Partition `partition`'s consumer, (re)created at the stored position when there
    /// is none.
    fn consumer(&mut self, partition: u32) -> Result<PullConsumer, SourceError> {
        let state = self
            .owned
            .get_mut(&partition)
            .expect("a consumer is made for an owned partition");
        if let Some(consumer) = &state.consumer {
            return Ok(consumer.clone());
        }
        let deliver_policy = match state.start_after {
            Some(last) => DeliverPolicy::ByStartSequence {
                start_sequence: last + 1,
            },
            None => DeliverPolicy::All,
        };
        let name = self
            .url
            .consumer_name(partition)
            .expect("checked at open: a durable name");
        let config = PullConfig {
            durable_name: Some(name.clone()),
            deliver_policy,
            ack_policy: AckPolicy::All,
            ack_wait: self.ack_wait,
            max_deliver: -1,
            max_ack_pending: MAX_ACK_PENDING,
            filter_subject: self.url.filter_subject(partition),
            ..Default::default()
        };
        let stream = self.stream.clone();
        let consumer = self.runtime.block_on(async move {
            // The server's consumer may point elsewhere (another start, an old ack floor,
            // a former owner): ordo's store decides, so it is made anew. Absent is fine.
            let _ = stream.delete_consumer(&name).await;
            stream.create_consumer(config).await
        });
        let consumer = consumer.map_err(|e| server("cannot create the consumer", e))?;
        state.unacked.clear();
        state.delivered_max = None;
        state.delivery_sequence = 0;
        state.pending = consumer.cached_info().num_pending;
        state.consumer = Some(consumer.clone());
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
            .owned
            .values_mut()
            .flat_map(|partition| partition.unacked.values_mut())
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

    /// The owned partitions not paused, starting at this turn's.
    fn readable(&mut self) -> Vec<u32> {
        let mut readable: Vec<u32> = self
            .owned
            .keys()
            .filter(|p| !self.paused.contains(p))
            .copied()
            .collect();
        if !readable.is_empty() {
            self.turn = (self.turn + 1) % readable.len();
            readable.rotate_left(self.turn);
        }
        readable
    }

    fn pull(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, SourceError> {
        if self.dropped.load(Ordering::SeqCst) {
            return Err(SourceError::Broker(
                "the NATS client dropped messages (a slow consumer); nothing after them was acknowledged: restart to read again from the store's position".into(),
            ));
        }
        let readable = self.readable();
        let asked = Instant::now();
        let mut deliveries = Vec::new();
        for pull in self.prefetched(&readable) {
            self.take(pull, &mut deliveries);
        }
        if deliveries.is_empty() {
            let mut asks = Vec::new();
            for &partition in &readable {
                let consumer = self.consumer(partition)?;
                asks.push((partition, consumer, self.owned[&partition].pending));
            }
            let max = max.min(PULL_MESSAGES_MAX);
            let pulls = self.runtime.block_on(pull_from(&asks, max, wait))?;
            for pull in pulls {
                self.take(pull, &mut deliveries);
            }
        }
        if asked.elapsed() > wait + SLOW_MS {
            // The loop was held: no commit, no operator action meanwhile.
            tracing::warn!(
                ms = asked.elapsed().as_millis() as u64,
                wait_ms = wait.as_millis() as u64,
                "nats: slow pull"
            );
        }
        if !deliveries.is_empty() {
            self.prefetch(&readable)?;
        }
        Ok(deliveries)
    }

    /// What the pulls started by [`Self::prefetch`] for these partitions brought.
    fn prefetched(&mut self, readable: &[u32]) -> Vec<Pulled> {
        let handles: Vec<_> = readable
            .iter()
            .filter_map(|p| {
                let state = self.owned.get_mut(p)?;
                state.prefetch.take().map(|handle| (*p, handle))
            })
            .collect();
        if handles.is_empty() {
            return Vec::new();
        }
        self.runtime.block_on(async {
            let mut pulls = Vec::with_capacity(handles.len());
            for (partition, handle) in handles {
                pulls.push(handle.await.unwrap_or_else(|error| {
                    tracing::warn!(%error, partition, "nats: a prefetch failed");
                    Pulled {
                        partition,
                        messages: Vec::new(),
                        ended: false,
                    }
                }));
            }
            pulls
        })
    }

    /// Starts the next pull of every readable partition, sharing [`PULL_MESSAGES_MAX`]
    /// between them: each asks for what it has pending, and at least one message, so
    /// that a partition that was empty or made anew is not passed over while another
    /// has a backlog.
    fn prefetch(&mut self, readable: &[u32]) -> Result<(), SourceError> {
        if readable.is_empty() {
            return Ok(());
        }
        let share = (PULL_MESSAGES_MAX / readable.len()).max(1) as u64;
        for &partition in readable {
            if self.owned[&partition].prefetch.is_some() {
                continue;
            }
            let consumer = self.consumer(partition)?;
            let state = self.owned.get_mut(&partition).expect("readable is owned");
            let ask = state.pending.clamp(1, share) as usize;
            state.prefetch = Some(self.runtime.spawn(fetch_now(partition, consumer, ask)));
        }
        Ok(())
    }

    /// Waits for a partition's prefetch to end and drops what it brought (its consumer is
    /// about to be made anew or given up): nothing of it was handed over.
    fn settle_prefetch(&mut self, partition: u32) {
        let Some(handle) = self
            .owned
            .get_mut(&partition)
            .and_then(|state| state.prefetch.take())
        else {
            return;
        };
        let _ = self.runtime.block_on(handle);
    }

    /// Takes one partition's pulled messages, in order, up to the first that shows one
    /// was lost; then, if the pull did not end or lost one, makes its consumer anew.
    fn take(&mut self, pull: Pulled, deliveries: &mut Vec<Delivery>) {
        let now = Instant::now();
        let state = self
            .owned
            .get_mut(&pull.partition)
            .expect("pulled from an owned one");
        let mut whole = pull.ended;
        for message in pull.messages {
            let (sequence, delivery, pending) = match message.info() {
                Ok(info) => (info.stream_sequence, info.consumer_sequence, info.pending),
                Err(error) => {
                    tracing::warn!(%error, "nats: a message without JetStream metadata");
                    continue;
                }
            };
            if delivery != state.delivery_sequence + 1 {
                // Delivered to a request the client gave up on: read again from here.
                tracing::warn!(
                    partition = pull.partition,
                    expected = state.delivery_sequence + 1,
                    got = delivery,
                    "nats: a delivery went missing"
                );
                whole = false;
                break;
            }
            state.delivery_sequence = delivery;
            state.pending = pending;
            // A redelivery (past its ack wait) may be older than what came before.
            state.delivered_max = state.delivered_max.max(Some(sequence));
            let (message, acker) = message.split();
            state.unacked.insert(sequence, (acker, now));
            deliveries.push((
                SourcePosition {
                    partition: pull.partition,
                    offset: sequence,
                },
                message.payload.to_vec(),
                None,
            ));
        }
        if !whole {
            self.reset(pull.partition);
        }
    }

    /// Makes a partition's consumer anew after the last message handed over: a request
    /// the client gave up on may still be alive on the server and take messages that
    /// nobody reads; deleting the consumer ends it.
    fn reset(&mut self, partition: u32) {
        self.settle_prefetch(partition);
        let state = self.owned.get_mut(&partition).expect("an owned partition");
        if let Some(delivered) = state.delivered_max {
            state.start_after = Some(delivered);
        }
        state.consumer = None;
        // Acks would go to the consumer about to be deleted; the store's checkpoints,
        // not the server's ack floor, say where reading starts.
        state.unacked.clear();
    }

    /// A change of partitions the group's view asks for, announced to the run loop.
    fn membership_change(&mut self) -> Result<Option<Polled>, SourceError> {
        let Some(member) = &self.member else {
            return Ok(None);
        };
        let owned: BTreeSet<u32> = self.owned.keys().copied().collect();
        let change = member.change(&owned).map_err(SourceError::Membership)?;
        let polled = change.as_ref().map(Change::announced);
        self.changing = change;
        Ok(polled)
    }

    /// Every owned partition reads again from the store's checkpoints, on a consumer
    /// made anew.
    fn reposition(&mut self, checkpoints: &[(u32, u64)]) {
        let owned: Vec<u32> = self.owned.keys().copied().collect();
        for partition in owned {
            self.settle_prefetch(partition);
        }
        for (number, partition) in &mut self.owned {
            partition.start_after = checkpoints
                .iter()
                .find(|(p, _)| p == number)
                .map(|(_, offset)| *offset);
            partition.consumer = None;
            partition.unacked.clear();
        }
    }

    /// One double ack of the highest sequence each checkpoint covers.
    fn acknowledge(&mut self, checkpoints: &[(u32, u64)]) {
        let mut ackers = Vec::new();
        for &(number, settled) in checkpoints {
            let Some(partition) = self.owned.get_mut(&number) else {
                continue;
            };
            let Some(&highest) = partition
                .unacked
                .range(..=settled)
                .next_back()
                .map(|(s, _)| s)
            else {
                continue;
            };
            // Everything up to the checkpoint is durable in the store: one double ack of
            // the highest covers the rest (AckPolicy::All).
            let mut settled_ackers = partition.unacked.split_off(&(highest + 1));
            std::mem::swap(&mut settled_ackers, &mut partition.unacked);
            let (acker, _) = settled_ackers
                .remove(&highest)
                .expect("the highest settled sequence is held");
            ackers.push(acker);
        }
        if ackers.is_empty() {
            return;
        }
        let wait = Duration::from_millis(SERVER_WAIT_MS);
        let asked = Instant::now();
        let acked = self.runtime.block_on(async {
            let acks = ackers.iter().map(|acker| acker.double_ack());
            tokio::time::timeout(wait, futures_util::future::join_all(acks)).await
        });
        if asked.elapsed() > SLOW_MS {
            tracing::warn!(
                ms = asked.elapsed().as_millis() as u64,
                "nats: slow double ack"
            );
        }
        // Not fatal: the server redelivers after its ack wait, and the store's checkpoint
        // makes the copies duplicates.
        match acked {
            Ok(results) => {
                for error in results.into_iter().filter_map(Result::err) {
                    tracing::warn!(%error, "nats: ack not confirmed");
                }
            }
            Err(_) => tracing::warn!("nats: ack not confirmed within {} s", SERVER_WAIT_MS / 1000),
        }
    }
}

async fn connect(
    url: &NatsUrl,
    dropped: Arc<AtomicBool>,
) -> Result<(async_nats::Client, async_nats::jetstream::stream::Stream), SourceError> {
    let wait = Duration::from_millis(SERVER_WAIT_MS);
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(wait)
        .subscription_capacity(SUBSCRIPTION_CAPACITY)
        .event_callback(move |event| {
            let dropped = dropped.clone();
            async move {
                if matches!(event, async_nats::Event::SlowConsumer(_)) {
                    dropped.store(true, Ordering::SeqCst);
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
    Ok((client, stream))
}

/// What one partition's pull gave.
struct Pulled {
    partition: u32,
    messages: Vec<async_nats::jetstream::Message>,
    /// The request ended as the server should end it (else the client gave up on it).
    ended: bool,
}

/// What the partitions have now, up to `max` in all, without waiting: each is asked for
/// no more than its consumer said it has pending, so that a request is filled at once
/// (nats-server 2.9 may leave a partly filled request open). When none has anything,
/// waits up to `wait` for one message from each, every request awaited to its end.
async fn pull_from(
    asks: &[(u32, PullConsumer, u64)],
    max: usize,
    wait: Duration,
) -> Result<Vec<Pulled>, SourceError> {
    let mut pulls = Vec::new();
    let mut got = 0;
    for (partition, consumer, pending) in asks {
        let ask = (*pending).min((max - got) as u64) as usize;
        if ask == 0 {
            continue;
        }
        let pulled = fetch_now(*partition, consumer.clone(), ask).await;
        got += pulled.messages.len();
        pulls.push(pulled);
        if got >= max {
            break;
        }
    }
    if got > 0 || asks.is_empty() || wait.as_millis() < u128::from(PULL_WAIT_MS_MIN) {
        return Ok(pulls);
    }
    // Every request is awaited to its end: none is dropped with a message in it.
    let requests = asks
        .iter()
        .map(|(partition, consumer, _)| wait_for_one(*partition, consumer.clone(), wait));
    pulls.extend(futures_util::future::join_all(requests).await);
    Ok(pulls)
}

/// A pull of up to `ask` messages that the server ends when it has no more. A request
/// that could not be sent may still have reached the server: it counts as not ended, so
/// the partition's consumer is made anew.
async fn fetch_now(partition: u32, consumer: PullConsumer, ask: usize) -> Pulled {
    let grace = Duration::from_millis(PULL_GRACE_MS);
    match consumer.fetch().max_messages(ask).messages().await {
        Ok(messages) => collect(partition, messages, grace).await,
        Err(error) => not_sent(partition, &error),
    }
}

/// A pull of one message that waits up to `wait` for it.
async fn wait_for_one(partition: u32, consumer: PullConsumer, wait: Duration) -> Pulled {
    let grace = Duration::from_millis(PULL_GRACE_MS);
    match consumer
        .batch()
        .max_messages(1)
        .expires(wait)
        .messages()
        .await
    {
        Ok(messages) => collect(partition, messages, wait + grace).await,
        Err(error) => not_sent(partition, &error),
    }
}

fn not_sent(partition: u32, error: &dyn std::fmt::Display) -> Pulled {
    tracing::warn!(%error, partition, "nats: cannot pull");
    Pulled {
        partition,
        messages: Vec::new(),
        ended: false,
    }
}

/// The stream's last sequence and message count, within [`SERVER_WAIT_MS`] (none when
/// the server does not say).
async fn stream_state(stream: &mut async_nats::jetstream::stream::Stream) -> Option<(u64, u64)> {
    let wait = Duration::from_millis(SERVER_WAIT_MS);
    let info = tokio::time::timeout(wait, stream.info()).await.ok()?.ok()?;
    Some((info.state.last_sequence, info.state.messages))
}

/// Every message of one pull, in order, within `limit`. A pull that ends early (a
/// status from the server) is not fatal: what came is delivered, the next poll asks
/// again.
async fn collect(
    partition: u32,
    mut messages: async_nats::jetstream::consumer::pull::Batch,
    limit: Duration,
) -> Pulled {
    let mut batch = Vec::new();
    let drained = tokio::time::timeout(limit, async {
        while let Some(message) = messages.next().await {
            match message {
                Ok(message) => batch.push(message),
                Err(error) => {
                    tracing::debug!(%error, "nats: pull ended");
                    break;
                }
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            partition,
            got = batch.len(),
            "nats: a pull did not end in time; its consumer is made anew"
        );
    }
    Pulled {
        partition,
        messages: batch,
        ended: drained.is_ok(),
    }
}

impl Source for NatsSource {
    fn resume(&mut self, checkpoints: &[(u32, u64)]) {
        self.reposition(checkpoints);
    }

    fn rewind(&mut self, checkpoints: &[(u32, u64)]) -> Result<(), SourceError> {
        self.reposition(checkpoints);
        Ok(())
    }

    fn poll(&mut self, max: usize, wait: Duration) -> Result<Polled, SourceError> {
        self.keep_alive();
        if let Some(change) = self.membership_change()? {
            return Ok(change);
        }
        let readable = self.owned.keys().any(|p| !self.paused.contains(p));
        if !readable {
            std::thread::sleep(wait.min(PAUSED_POLL_WAIT));
            return Ok(Polled::Nothing);
        }
        let deliveries = self.pull(max, wait)?;
        if !deliveries.is_empty() {
            self.last_message = Instant::now();
            return Ok(Polled::Events(deliveries));
        }
        // A paused partition is never read to its end.
        let paused = self.owned.keys().any(|p| self.paused.contains(p));
        Ok(if !paused && self.last_message.elapsed() >= self.idle {
            Polled::Idle
        } else {
            Polled::Nothing
        })
    }

    fn complete_rebalance(&mut self, checkpoints: &[(u32, u64)]) -> Result<(), SourceError> {
        match self.changing.take() {
            Some(Change::Revoke(partitions)) => {
                // Its consumer is the next owner's to make anew.
                for partition in partitions {
                    self.settle_prefetch(partition);
                    self.owned.remove(&partition);
                }
            }
            Some(Change::Assign(partitions)) => {
                for partition in partitions {
                    self.owned.entry(partition).or_default();
                }
            }
            None => {}
        }
        // The run loop rebuilt its state from the store: what it read and did not
        // commit is read again.
        self.reposition(checkpoints);
        Ok(())
    }

    fn committed(&mut self, checkpoints: &[(u32, u64)]) {
        if self.dropped.load(Ordering::SeqCst) {
            // An ack could cover a message the client dropped unread.
            return;
        }
        self.acknowledge(checkpoints);
    }

    fn is_group(&self) -> bool {
        self.member.is_some()
    }

    fn reachable(&self) -> bool {
        matches!(
            self.client.connection_state(),
            async_nats::connection::State::Connected
        )
    }

    fn ends(&mut self) -> Vec<PartitionEnd> {
        if self.url.partitions > 1 {
            return self.partition_ends();
        }
        let info = self.runtime.block_on(stream_state(&mut self.stream));
        if info.is_some() {
            self.ends = info;
        }
        self.ends
            .filter(|_| self.owned.contains_key(&0))
            .map(|(last, messages)| PartitionEnd {
                partition: 0,
                caught_up_at: last,
                events: messages,
            })
            .into_iter()
            .collect()
    }

    fn pause_partitions(&mut self, paused: &BTreeSet<u32>) -> Result<(), SourceError> {
        self.paused = paused.clone();
        Ok(())
    }
}

impl NatsSource {
    /// Where each owned partition ends, from its consumer: the last stream sequence it
    /// delivered when nothing more is pending, else the stream's last (the lag in stream
    /// sequences is then an upper bound: other partitions' messages sit between).
    fn partition_ends(&mut self) -> Vec<PartitionEnd> {
        let wait = Duration::from_millis(SERVER_WAIT_MS);
        let consumers: Vec<(u32, PullConsumer)> = self
            .owned
            .iter()
            .filter_map(|(p, state)| state.consumer.clone().map(|c| (*p, c)))
            .collect();
        let stream = &mut self.stream;
        self.runtime.block_on(async {
            let last = stream_state(stream).await.map_or(0, |(last, _)| last);
            let mut ends = Vec::new();
            for (partition, mut consumer) in consumers {
                let Ok(Ok(info)) = tokio::time::timeout(wait, consumer.info()).await else {
                    continue;
                };
                let caught_up_at = if info.num_pending == 0 {
                    info.delivered.stream_sequence
                } else {
                    last
                };
                ends.push(PartitionEnd {
                    partition,
                    caught_up_at,
                    events: info.num_pending + info.num_ack_pending as u64,
                });
            }
            ends
        })
    }
}
