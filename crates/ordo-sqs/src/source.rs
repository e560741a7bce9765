//! `sqs://QUEUE?region=R`: an SQS queue, FIFO or standard, read by long-polling receives
//! that run beside the run loop, each message deleted only once the store holds what it
//! did.
//!
//! - **Positions.** SQS has no offsets: a message, once deleted, is gone, and one not
//!   deleted comes back. ordo numbers what it hands to the run loop itself, per slot
//!   (below), going on from the stored checkpoint, so that the store's checkpoint says
//!   which of the held messages are durable. On a restart nothing is skipped by position:
//!   what SQS gives again is absorbed by the engine's dedupe and version guard.
//! - **Deletes.** After each commit, every held message at or below the new checkpoint
//!   is deleted (`DeleteMessageBatch`): applied, or stored as waiting. A message held
//!   behind an unsettled one (a handler call still out) waits with it.
//! - **Visibility.** Receives ask for `visibility_timeout_s`; every third of it, each
//!   message still held is extended by as much again (`ChangeMessageVisibilityBatch`), by
//!   a task beside the run loop, for as long as the loop keeps calling the source (a loop
//!   stuck for [`LOOP_SILENCE_MS_MAX`] lets its messages go back). A redelivery that
//!   happens anyway is a duplicate to the engine.
//! - **FIFO.** A group's messages come in order and the group is blocked while any is in
//!   flight, so ordo never has two of one group out of order; the group id must be the
//!   event's stream (as Kafka's key), else the message is dead-lettered. Standard queues
//!   give no order: the version guard puts it back.
//! - **Bad messages** are dead-lettered in ordo's store (the reason names the SQS message
//!   id) and deleted like any other, never left to SQS's own redrive.
//! - **Several members.** Given a [`Member`] (a PostgreSQL store shared by the group),
//!   the source takes slots, not partitions: SQS spreads the groups across receivers by
//!   itself. A member reads only while it holds a slot; it numbers its deliveries in the
//!   first slot it holds, and its waiting events stay with that slot, so that when it
//!   dies, the member that takes the slot over applies them.
//! - **Stops and rewinds.** Held messages not yet durable are made visible again at once
//!   (visibility 0), on a graceful stop and when a commit is refused.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ordo_core::SourcePosition;
use ordo_runtime::membership::{
    Change, Member, HEARTBEAT_MS, LOOP_SILENCE_MS_MAX, SESSION_TIMEOUT_MS,
};
use ordo_runtime::telemetry::PartitionEnd;
use ordo_runtime::{Delivery, Polled, Source, SourceError};
use tokio::task::JoinHandle;

use crate::client::{Message, SqsClient, SqsError, BATCH_ENTRIES_MAX, CALL_WAIT_MS};
use crate::credentials::CredentialChain;
use crate::url::SqsUrl;

/// Messages received and not yet deleted, at most: receiving pauses beyond. Well inside
/// a FIFO queue's 20,000 in flight (SQS refuses receives past it).
pub const OUTSTANDING_MAX: usize = 8_192;
const _: () = assert!(OUTSTANDING_MAX < 20_000);

/// The shortest visibility timeout for a member of a group: a member that stalls has its
/// heartbeat expire ([`SESSION_TIMEOUT_MS`]) and its slots taken (fencing its commits,
/// two [`HEARTBEAT_MS`] later at most) before its messages can go to another member. A
/// message's visibility was last set up to a third of the timeout and a keeper tick (a
/// twelfth) before the stall, so what is left of it is at least seven twelfths.
pub const GROUP_VISIBILITY_TIMEOUT_S_MIN: u32 = 18;
const _: () = assert!(
    GROUP_VISIBILITY_TIMEOUT_S_MIN as u64 * 1000 * 7 / 12
        > SESSION_TIMEOUT_MS + 2 * HEARTBEAT_MS + 2_000
);
const _: () = assert!(GROUP_VISIBILITY_TIMEOUT_S_MIN <= crate::url::VISIBILITY_TIMEOUT_S_DEFAULT);

/// How long a receiver that may not receive (paused, no slot, too much outstanding)
/// sleeps before it looks again.
const RECEIVER_NAP_MS: u64 = 50;

/// How long a receiver waits after a receive failed through every retry.
const RECEIVE_FAILED_NAP_MS: u64 = 1_000;

/// Visibility extensions (batches of ten) in flight at once.
const EXTENSIONS_AT_ONCE_MAX: usize = 8;

/// How often the queue's length is asked for the lag, at most.
const ENDS_REFRESH_MS: u64 = 5_000;

/// How long a poll with nothing to read (no slot, paused) sleeps.
const PAUSED_POLL_WAIT: Duration = Duration::from_millis(100);

/// A message received and not yet deleted, and when its visibility was last set.
#[derive(Debug)]
struct Held {
    message: Message,
    visible_from: Instant,
}

/// What the receivers and the run loop share.
#[derive(Default)]
struct Inbox {
    /// Received, not yet handed to the run loop.
    received: VecDeque<Held>,
    /// Handed to the run loop, not yet deleted, by position.
    held: BTreeMap<(u32, u64), Held>,
    /// In a delete or a release call now.
    leaving: usize,
    /// When the last messages arrived.
    arrived_at: Option<Instant>,
    /// The last receive that began with nothing outstanding and found nothing: when it
    /// began and when it ended.
    found_nothing: Option<(Instant, Instant)>,
    /// When each receive in flight began.
    in_flight: Vec<Instant>,
    /// Since when no new receive starts, so that those out come back and show whether
    /// the queue is drained (see `SqsSource::drained`).
    quiescing_since: Option<Instant>,
    /// A receive failed in a way no retry mends (no such queue, no permission).
    failure: Option<String>,
}

impl Inbox {
    fn outstanding(&self) -> usize {
        self.received.len() + self.held.len() + self.leaving
    }
}

struct Shared {
    inbox: Mutex<Inbox>,
    arrived: Condvar,
    /// Receivers receive only while this is set.
    reading: AtomicBool,
    stop: AtomicBool,
    /// The last receive got an answer.
    reachable: AtomicBool,
    /// When the run loop last called the source (ms since `started`).
    loop_seen_ms: AtomicU64,
    started: Instant,
}

impl Shared {
    fn inbox(&self) -> MutexGuard<'_, Inbox> {
        self.inbox.lock().expect("no task panics holding the inbox")
    }

    fn loop_alive(&self) -> bool {
        let now = self.started.elapsed().as_millis() as u64;
        now.saturating_sub(self.loop_seen_ms.load(Ordering::Relaxed)) < LOOP_SILENCE_MS_MAX
    }
}

/// An SQS queue read by ordo.
pub struct SqsSource {
    runtime: tokio::runtime::Runtime,
    client: SqsClient,
    queue: Arc<str>,
    url: SqsUrl,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
    /// Deletes and releases in flight (awaited on drop).
    leaving: Vec<JoinHandle<()>>,
    member: Option<Member>,
    changing: Option<Change>,
    /// Slots held, each with the position its next delivery gets.
    owned: BTreeMap<u32, u64>,
    paused: BTreeSet<u32>,
    idle: Duration,
    ends: Option<(Instant, u64)>,
}

fn broker(what: &str, error: impl std::fmt::Display) -> SourceError {
    SourceError::Broker(format!("{what}: {error}"))
}

impl SqsSource {
    /// Finds the queue and starts receiving; the one reader of the queue.
    pub fn open(url: &SqsUrl, idle_ms: u64) -> Result<Self, SourceError> {
        Self::open_with(url, idle_ms, CredentialChain::from_process())
    }

    /// [`Self::open`], with keys from `credentials` rather than the process's chain.
    pub fn open_with(
        url: &SqsUrl,
        idle_ms: u64,
        credentials: CredentialChain,
    ) -> Result<Self, SourceError> {
        let mut source = Self::connect(url, idle_ms, credentials)?;
        source.owned.insert(0, 0);
        Ok(source)
    }

    /// Finds the queue as one member of a group: it reads while `member`'s view of the
    /// group gives it a slot.
    pub fn open_member(url: &SqsUrl, idle_ms: u64, member: Member) -> Result<Self, SourceError> {
        if url.visibility_timeout_s < GROUP_VISIBILITY_TIMEOUT_S_MIN {
            return Err(SourceError::Broker(format!(
                "with several members, visibility_timeout_s must be at least {GROUP_VISIBILITY_TIMEOUT_S_MIN}: \
                 a stalled member's messages must come back only after the group took its slots \
                 (which fences its commits), or it could commit what another member applied"
            )));
        }
        let mut source = Self::connect(url, idle_ms, CredentialChain::from_process())?;
        source.member = Some(member);
        Ok(source)
    }

    fn connect(
        url: &SqsUrl,
        idle_ms: u64,
        credentials: CredentialChain,
    ) -> Result<Self, SourceError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| broker("cannot start the SQS client's runtime", e))?;
        let client = SqsClient::new(&url.endpoint, &url.region, credentials)
            .map_err(|e| broker("SQS client", e))?;
        let queue: Arc<str> = runtime
            .block_on(client.queue_url(&url.queue))
            .map_err(|e| broker(&format!("queue `{}`", url.queue), e))?
            .into();
        let shared = Arc::new(Shared {
            inbox: Mutex::new(Inbox::default()),
            arrived: Condvar::new(),
            reading: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            reachable: AtomicBool::new(true),
            loop_seen_ms: AtomicU64::new(0),
            started: Instant::now(),
        });
        let mut tasks = Vec::new();
        for _ in 0..url.receivers {
            let receiver = Receiver {
                client: client.clone(),
                queue: queue.clone(),
                url: url.clone(),
                shared: shared.clone(),
            };
            tasks.push(runtime.spawn(receiver.run()));
        }
        let keeper = Keeper {
            client: client.clone(),
            queue: queue.clone(),
            visibility_s: url.visibility_timeout_s,
            shared: shared.clone(),
        };
        tasks.push(runtime.spawn(keeper.run()));
        Ok(SqsSource {
            runtime,
            client,
            queue,
            url: url.clone(),
            shared,
            tasks,
            leaving: Vec::new(),
            member: None,
            changing: None,
            owned: BTreeMap::new(),
            paused: BTreeSet::new(),
            idle: Duration::from_millis(idle_ms),
            ends: None,
        })
    }

    /// The slot this process numbers its deliveries in: the first it holds.
    fn delivery_slot(&self) -> Option<u32> {
        self.owned.keys().next().copied()
    }

    fn seen(&self) {
        let now = self.shared.started.elapsed().as_millis() as u64;
        self.shared.loop_seen_ms.store(now, Ordering::Relaxed);
    }

    /// Waits up to `wait` for received messages and hands up to `max` of them out,
    /// numbered in `slot`.
    fn take(
        &mut self,
        slot: u32,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, SourceError> {
        let shared = self.shared.clone();
        let mut inbox = shared.inbox();
        if inbox.received.is_empty() && inbox.failure.is_none() {
            inbox = shared
                .arrived
                .wait_timeout_while(inbox, wait, |i| {
                    i.received.is_empty() && i.failure.is_none()
                })
                .expect("no task panics holding the inbox")
                .0;
        }
        if let Some(failure) = &inbox.failure {
            return Err(SourceError::Broker(failure.clone()));
        }
        let fifo = self.url.fifo();
        let next = self
            .owned
            .get_mut(&slot)
            .expect("the delivery slot is held");
        let count = max.min(inbox.received.len());
        let mut deliveries = Vec::with_capacity(count);
        for held in inbox.received.drain(..count).collect::<Vec<_>>() {
            let position = SourcePosition {
                partition: slot,
                offset: *next,
            };
            *next += 1;
            // A FIFO queue's group is the stream; a standard queue's (a fair queue's
            // tenant) says nothing about it.
            let key = fifo
                .then(|| held.message.group_id.clone().map(String::into_bytes))
                .flatten();
            deliveries.push((position, held.message.body.clone().into_bytes(), key));
            inbox.held.insert((slot, position.offset), held);
        }
        Ok(deliveries)
    }

    /// Whether the queue is drained as far as this process can tell, in two steps.
    /// First, nothing is received or held, it has been quiet for the idle time, and a
    /// receive that began after the last arrival, with nothing outstanding, found
    /// nothing: then no new receive starts. Second, once every receive still out came
    /// back with nothing, the queue is drained (receiving goes on after saying so). A
    /// FIFO group blocked by a message held here, or taken by another receive of this
    /// process, is not drained: what the receives out bring ends the quiet.
    fn drained(&self) -> bool {
        let mut inbox = self.shared.inbox();
        let quiet =
            inbox.outstanding() == 0 && inbox.arrived_at.is_none_or(|at| at.elapsed() >= self.idle);
        if !quiet {
            inbox.quiescing_since = None;
            return false;
        }
        if let Some(since) = inbox.quiescing_since {
            if inbox.arrived_at.is_some_and(|at| at > since) {
                inbox.quiescing_since = None;
                return false;
            }
            if !inbox.in_flight.is_empty() {
                return false;
            }
            inbox.quiescing_since = None;
            inbox.found_nothing = None;
            return true;
        }
        let arrived_at = inbox.arrived_at;
        if inbox
            .found_nothing
            .is_some_and(|(began, _)| arrived_at.is_none_or(|at| began >= at))
        {
            inbox.quiescing_since = Some(Instant::now());
        }
        false
    }

    /// Deletes every held message the checkpoints cover.
    fn delete_settled(&mut self, checkpoints: &[(u32, u64)]) {
        let mut inbox = self.shared.inbox();
        let mut settled = Vec::new();
        for &(slot, checkpoint) in checkpoints {
            let keys: Vec<(u32, u64)> = inbox
                .held
                .range((slot, 0)..=(slot, checkpoint))
                .map(|(key, _)| *key)
                .collect();
            settled.extend(keys.iter().filter_map(|key| inbox.held.remove(key)));
        }
        drop(inbox);
        self.leave(settled, Leaving::Delete);
    }

    /// Makes everything held (handed out and not deleted) and everything received and not
    /// yet handed out visible again; every slot numbers on from its checkpoint.
    ///
    /// Nothing is deleted here: only [`Source::committed`], after a commit of this
    /// process, deletes, and it deletes at once what that commit covered. The checkpoints
    /// given here come from the store, and after another member took a slot over they
    /// count that member's deliveries, not this process's.
    fn reposition(&mut self, checkpoints: &[(u32, u64)]) {
        let checkpoint_of = |slot: u32| {
            checkpoints
                .iter()
                .find(|(s, _)| *s == slot)
                .map(|(_, offset)| *offset)
        };
        let mut inbox = self.shared.inbox();
        let mut back: Vec<Held> = inbox.received.drain(..).collect();
        back.extend(std::mem::take(&mut inbox.held).into_values());
        drop(inbox);
        self.leave(back, Leaving::Release);
        for (slot, next) in &mut self.owned {
            *next = checkpoint_of(*slot).map_or(0, |c| c + 1);
        }
    }

    /// Deletes or releases messages, in batches, beside the run loop.
    fn leave(&mut self, messages: Vec<Held>, how: Leaving) {
        if messages.is_empty() {
            return;
        }
        self.shared.inbox().leaving += messages.len();
        self.leaving.retain(|task| !task.is_finished());
        let receiver = Receiver {
            client: self.client.clone(),
            queue: self.queue.clone(),
            url: self.url.clone(),
            shared: self.shared.clone(),
        };
        self.leaving.push(self.runtime.spawn(async move {
            let Receiver {
                client,
                queue,
                shared,
                ..
            } = &receiver;
            for batch in messages.chunks(BATCH_ENTRIES_MAX) {
                let receipts: Vec<&str> = batch
                    .iter()
                    .map(|h| h.message.receipt_handle.as_str())
                    .collect();
                let result = match how {
                    Leaving::Delete => client.delete(queue, &receipts).await,
                    Leaving::Release => client.change_visibility(queue, &receipts, 0).await,
                };
                report_refused(how, batch, result);
                shared.inbox().leaving -= batch.len();
            }
            if matches!(how, Leaving::Delete) {
                receiver.kick().await;
            }
        }));
    }

    /// A change of slots the group's view asks for, announced to the run loop.
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

    /// The delivery slot's end for the lag: what this process numbered, plus the
    /// messages waiting in the queue (`ApproximateNumberOfMessages`, read at most every
    /// [`ENDS_REFRESH_MS`]).
    fn queue_length(&mut self) -> Option<u64> {
        if let Some((at, length)) = self.ends {
            if at.elapsed() < Duration::from_millis(ENDS_REFRESH_MS) {
                return Some(length);
            }
        }
        let asked = self
            .client
            .attributes(&self.queue, &["ApproximateNumberOfMessages"]);
        let wait = Duration::from_millis(CALL_WAIT_MS);
        let attributes = self
            .runtime
            .block_on(async { tokio::time::timeout(wait, asked).await })
            .ok()?
            .ok()?;
        let length = attributes
            .get("ApproximateNumberOfMessages")
            .and_then(|v| v.as_str())
            .and_then(|v| v.parse().ok())?;
        self.ends = Some((Instant::now(), length));
        Some(length)
    }
}

/// What happens to messages leaving the source's hands.
#[derive(Clone, Copy, Debug)]
enum Leaving {
    /// Durable in the store: gone from the queue.
    Delete,
    /// Not durable: visible again at once, for this or another process.
    Release,
}

fn report_refused(
    how: Leaving,
    batch: &[Held],
    result: Result<Vec<crate::client::Refused>, SqsError>,
) {
    // Never fatal: a message not deleted comes back after its visibility timeout and is
    // a duplicate then; one not released comes back after its timeout anyway.
    match result {
        Ok(refused) => {
            for entry in refused {
                let id = batch
                    .get(entry.index)
                    .map_or("?", |h| h.message.message_id.as_str());
                tracing::warn!(
                    message = id,
                    code = entry.code,
                    "sqs: {how:?} refused: {}",
                    entry.message
                );
            }
        }
        Err(error) => tracing::warn!(%error, count = batch.len(), "sqs: {how:?} failed"),
    }
}

/// What a receive came back with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answered {
    Messages,
    Nothing,
    Failed,
}

/// One long-polling receive loop.
struct Receiver {
    client: SqsClient,
    queue: Arc<str>,
    url: SqsUrl,
    shared: Arc<Shared>,
}

impl Receiver {
    async fn run(self) {
        let nap = Duration::from_millis(RECEIVER_NAP_MS);
        while !self.shared.stop.load(Ordering::Relaxed) {
            let may = {
                let mut inbox = self.shared.inbox();
                if !self.shared.reading.load(Ordering::Relaxed)
                    || inbox.outstanding() >= OUTSTANDING_MAX
                    || inbox.failure.is_some()
                    || inbox.quiescing_since.is_some()
                {
                    None
                } else {
                    // Read under the lock that arrivals take: a batch that arrives after
                    // this is later than `began`, so this receive's emptiness never
                    // passes for "nothing after it" (see `SqsSource::drained`).
                    let began = Instant::now();
                    inbox.in_flight.push(began);
                    // Only a long poll proves a queue empty: one that does not wait may
                    // ask only some of SQS's servers.
                    Some((inbox.outstanding() == 0 && self.url.wait_s > 0, began))
                }
            };
            let Some((clear, began)) = may else {
                tokio::time::sleep(nap).await;
                continue;
            };
            let url = &self.url;
            let received = self
                .client
                .receive(
                    &self.queue,
                    BATCH_ENTRIES_MAX,
                    url.wait_s,
                    url.visibility_timeout_s,
                )
                .await;
            match self.received(received, clear, began) {
                Answered::Failed => {
                    tokio::time::sleep(Duration::from_millis(RECEIVE_FAILED_NAP_MS)).await
                }
                // Receives that do not wait (`wait_s=0`) must not spin on an empty queue.
                Answered::Nothing if url.wait_s == 0 => tokio::time::sleep(nap).await,
                Answered::Nothing | Answered::Messages => {}
            }
        }
    }

    /// One receive that does not wait, right after a delete: the FIFO groups the deleted
    /// messages blocked may go on now, and the receives in flight may be long polls
    /// that began while they were blocked (an emulator, at least, looks at a group
    /// again only when its poll ends). Not counted for idleness: a receive that does not
    /// wait may ask only some of SQS's servers.
    async fn kick(&self) {
        let shared = &self.shared;
        let began = {
            let mut inbox = shared.inbox();
            let may = !shared.stop.load(Ordering::Relaxed)
                && shared.reading.load(Ordering::Relaxed)
                && inbox.quiescing_since.is_none()
                && inbox.outstanding() < OUTSTANDING_MAX;
            if !may {
                return;
            }
            let began = Instant::now();
            inbox.in_flight.push(began);
            began
        };
        let url = &self.url;
        let received = self
            .client
            .receive(&self.queue, BATCH_ENTRIES_MAX, 0, url.visibility_timeout_s)
            .await;
        if self.received(received, false, began) == Answered::Failed {
            tracing::debug!("sqs: a receive after a delete failed");
        }
    }

    /// Takes a receive's answer in.
    fn received(
        &self,
        received: Result<Vec<Message>, SqsError>,
        clear: bool,
        began: Instant,
    ) -> Answered {
        // Out of flight under the same lock that takes its messages in: `drained` never
        // sees a receive neither out nor in.
        let mut inbox = self.shared.inbox();
        if let Some(index) = inbox.in_flight.iter().position(|b| *b == began) {
            inbox.in_flight.swap_remove(index);
        }
        match received {
            Ok(messages) => {
                self.shared.reachable.store(true, Ordering::Relaxed);
                if messages.is_empty() {
                    tracing::trace!(clear, "sqs: received nothing");
                    if clear && inbox.found_nothing.is_none_or(|(b, _)| b < began) {
                        inbox.found_nothing = Some((began, Instant::now()));
                    }
                    return Answered::Nothing;
                }
                let now = Instant::now();
                tracing::trace!(count = messages.len(), clear, "sqs: received");
                inbox.arrived_at = Some(now);
                inbox
                    .received
                    .extend(messages.into_iter().map(|message| Held {
                        message,
                        visible_from: now,
                    }));
                self.shared.arrived.notify_all();
            }
            Err(error) if error.retryable() => {
                drop(inbox);
                self.shared.reachable.store(false, Ordering::Relaxed);
                tracing::warn!(%error, "sqs: receive failed; trying again");
                return Answered::Failed;
            }
            Err(error) => {
                inbox.failure = Some(format!("queue `{}`: {error}", self.url.queue));
                self.shared.arrived.notify_all();
            }
        }
        Answered::Messages
    }
}

/// Extends the visibility of every message still held, every third of the timeout.
struct Keeper {
    client: SqsClient,
    queue: Arc<str>,
    visibility_s: u32,
    shared: Arc<Shared>,
}

impl Keeper {
    async fn run(self) {
        let visibility = Duration::from_secs(u64::from(self.visibility_s));
        let due = visibility / 3;
        let tick = (visibility / 12).max(Duration::from_millis(250));
        let keeper = Arc::new(self);
        while !keeper.shared.stop.load(Ordering::Relaxed) {
            tokio::time::sleep(tick).await;
            if !keeper.shared.loop_alive() {
                // A loop stuck this long lets its messages go back to the queue.
                continue;
            }
            let receipts = keeper.due(due);
            // Batches at once, a bounded number: thousands of held messages must all be
            // extended well inside the two thirds of the timeout they have left.
            let mut calls = tokio::task::JoinSet::new();
            for batch in receipts.chunks(BATCH_ENTRIES_MAX) {
                if calls.len() >= EXTENSIONS_AT_ONCE_MAX {
                    let _ = calls.join_next().await;
                }
                calls.spawn(keeper.clone().extend(batch.to_vec()));
            }
            while calls.join_next().await.is_some() {}
        }
    }

    /// Extends one batch; on failure its messages are due again at the next tick.
    async fn extend(self: Arc<Self>, batch: Vec<(String, Instant)>) {
        let receipts: Vec<&str> = batch.iter().map(|(r, _)| r.as_str()).collect();
        let failed = match self
            .client
            .change_visibility(&self.queue, &receipts, self.visibility_s)
            .await
        {
            Ok(refused) if refused.is_empty() => return,
            Ok(refused) => {
                // Refused: deleted since, or already back in the queue. Nothing to retry.
                tracing::warn!(count = refused.len(), "sqs: visibility extension refused");
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "sqs: visibility extension failed");
                batch
            }
        };
        let mut inbox = self.shared.inbox();
        let Inbox { received, held, .. } = &mut *inbox;
        for held in received.iter_mut().chain(held.values_mut()) {
            if let Some((_, before)) = failed
                .iter()
                .find(|(r, _)| *r == held.message.receipt_handle)
            {
                held.visible_from = *before;
            }
        }
    }

    /// Receipts of messages whose visibility was set longer than `due` ago, each with
    /// when it was (they are marked as extended now).
    fn due(&self, due: Duration) -> Vec<(String, Instant)> {
        let mut inbox = self.shared.inbox();
        let now = Instant::now();
        let Inbox { received, held, .. } = &mut *inbox;
        received
            .iter_mut()
            .chain(held.values_mut())
            .filter(|h| now.duration_since(h.visible_from) >= due)
            .map(|h| {
                let before = std::mem::replace(&mut h.visible_from, now);
                (h.message.receipt_handle.clone(), before)
            })
            .collect()
    }
}

impl Source for SqsSource {
    fn resume(&mut self, checkpoints: &[(u32, u64)]) {
        self.reposition(checkpoints);
    }

    fn rewind(&mut self, checkpoints: &[(u32, u64)]) -> Result<(), SourceError> {
        self.reposition(checkpoints);
        Ok(())
    }

    fn poll(&mut self, max: usize, wait: Duration) -> Result<Polled, SourceError> {
        self.seen();
        if let Some(change) = self.membership_change()? {
            self.shared.reading.store(false, Ordering::Relaxed);
            return Ok(change);
        }
        let Some(slot) = self.delivery_slot().filter(|s| !self.paused.contains(s)) else {
            self.shared.reading.store(false, Ordering::Relaxed);
            std::thread::sleep(wait.min(PAUSED_POLL_WAIT));
            return Ok(Polled::Nothing);
        };
        self.shared.reading.store(true, Ordering::Relaxed);
        let deliveries = self.take(slot, max, wait)?;
        if !deliveries.is_empty() {
            return Ok(Polled::Events(deliveries));
        }
        Ok(if self.drained() {
            Polled::Idle
        } else {
            Polled::Nothing
        })
    }

    fn complete_rebalance(&mut self, checkpoints: &[(u32, u64)]) -> Result<(), SourceError> {
        match self.changing.take() {
            Some(Change::Revoke(slots)) => {
                for slot in slots {
                    self.owned.remove(&slot);
                }
            }
            Some(Change::Assign(slots)) => {
                for slot in slots {
                    self.owned.entry(slot).or_default();
                }
            }
            None => {}
        }
        // The run loop rebuilt its state from the store: what it held and did not
        // commit goes back to the queue.
        self.reposition(checkpoints);
        Ok(())
    }

    fn committed(&mut self, checkpoints: &[(u32, u64)]) {
        self.seen();
        self.delete_settled(checkpoints);
    }

    fn origin(&self, position: SourcePosition) -> Option<String> {
        let inbox = self.shared.inbox();
        let held = inbox.held.get(&(position.partition, position.offset))?;
        Some(format!("SQS message {}", held.message.message_id))
    }

    fn is_group(&self) -> bool {
        self.member.is_some()
    }

    fn shares_streams(&self) -> bool {
        // SQS gives any message group to any receiver: any member may apply any stream.
        self.member.is_some()
    }

    fn reachable(&self) -> bool {
        self.shared.reachable.load(Ordering::Relaxed)
    }

    fn ends(&mut self) -> Vec<PartitionEnd> {
        let Some((slot, next)) = self.owned.iter().next().map(|(s, n)| (*s, *n)) else {
            return Vec::new();
        };
        let Some(length) = self.queue_length() else {
            return Vec::new();
        };
        let caught_up_at = (next + length).saturating_sub(1);
        vec![PartitionEnd {
            partition: slot,
            caught_up_at,
            events: caught_up_at + 1,
        }]
    }

    fn pause_partitions(&mut self, paused: &BTreeSet<u32>) -> Result<(), SourceError> {
        self.paused = paused.clone();
        Ok(())
    }
}

impl Drop for SqsSource {
    /// Stops receiving, lets deletes finish, and makes everything not durable visible
    /// again, so that a restart (or another member) gets it at once.
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.reading.store(false, Ordering::Relaxed);
        let wait =
            Duration::from_secs(u64::from(self.url.wait_s)) + Duration::from_millis(CALL_WAIT_MS);
        let tasks = std::mem::take(&mut self.tasks);
        let leaving = std::mem::take(&mut self.leaving);
        self.runtime.block_on(async {
            let all = async {
                for task in leaving {
                    let _ = task.await;
                }
                for task in tasks {
                    let _ = task.await;
                }
            };
            let _ = tokio::time::timeout(wait, all).await;
        });
        let mut inbox = self.shared.inbox();
        let mut back: Vec<Held> = inbox.received.drain(..).collect();
        back.extend(std::mem::take(&mut inbox.held).into_values());
        drop(inbox);
        self.leave(back, Leaving::Release);
        if let Some(task) = self.leaving.pop() {
            let _ = self.runtime.block_on(async {
                tokio::time::timeout(Duration::from_millis(CALL_WAIT_MS), task).await
            });
        }
    }
}
