//! The consumer: the engine, the document projection, a document cache and a store,
//! tied together. The run loop and the operator verbs (`dlq replay`, `dlq skip`) all
//! go through it, so there is one way state changes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use ordo_core::{
    Config, Counters, DeadLetter, DecisionKind, Disposition, Engine, Notice, OperatorError,
    Outcome, SourcePosition, Work,
};
use ordo_projection::{run_work, Document, DocumentProjection, DocumentSlots};
use ordo_store::journal::{JournalEntry, Retention};
use ordo_store::{CommitBatch, CommitError, ReadError, Store};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::handler::HandlerPool;

/// Most documents kept in memory between commits; beyond it, clean ones are dropped.
pub const DOCUMENT_CACHE_MAX: usize = 200_000;

/// Most works taken out of the engine per round of [`Consumer::apply_ready`].
pub const WORKS_PER_ROUND_MAX: usize = 4096;

/// Most stream positions read per query when refreshing what parked events wait for.
pub const AWAITED_READ_CHUNK_MAX: usize = 10_000;

/// Most works out with handlers at once (calling or in backoff): a stream in backoff holds
/// its work but no call slot, so this is well above any concurrency.
pub const HANDLER_WORKS_OUT_MAX: usize = 20_000;

/// Most deliveries queued for handlers and not yet finished before the source is read
/// further: with a slow handler the source would otherwise be read into memory.
pub const HANDLER_DELIVERED_AHEAD_MAX: u64 = 10_000;

const _: () = assert!(crate::handler::CONCURRENCY_MAX <= HANDLER_WORKS_OUT_MAX);

/// Most notices printed per commit; the rest are counted (counters say it all anyway).
pub const NOTICES_PRINTED_PER_COMMIT_MAX: usize = 20;

/// Milliseconds since the Unix epoch: the runtime's clock, passed into the core.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Where a consumer and its run loop read the time: the system clock, or a clock a
/// simulation moves by hand (several simulated processes share one).
#[derive(Clone, Debug, Default)]
pub struct Clock {
    manual: Option<Arc<AtomicU64>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Clock { manual: None }
    }

    /// A clock that reads `now_ms` (whoever holds it moves the time).
    pub fn manual(now_ms: Arc<AtomicU64>) -> Self {
        Clock {
            manual: Some(now_ms),
        }
    }

    /// Milliseconds since the Unix epoch (or the simulation's start).
    pub fn now_ms(&self) -> u64 {
        match &self.manual {
            Some(now_ms) => now_ms.load(Ordering::SeqCst),
            None => now_ms(),
        }
    }
}

/// Why the consumer stopped working.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConsumeError {
    /// The store could not be read.
    Read(ReadError),
    /// A commit failed; nothing of its batch was written.
    Commit(CommitError),
    /// A transactional handler failed (not a rejection): nothing of the batch is written.
    Handler(Box<dyn std::error::Error + Send + Sync>),
}

impl std::fmt::Display for ConsumeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConsumeError::Read(e) => e.fmt(f),
            ConsumeError::Commit(e) => e.fmt(f),
            ConsumeError::Handler(e) => write!(f, "the handler failed: {e}"),
        }
    }
}

impl std::error::Error for ConsumeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConsumeError::Read(e) => Some(e),
            ConsumeError::Commit(e) => Some(e),
            ConsumeError::Handler(e) => Some(&**e),
        }
    }
}

/// Why an operator action on a running consumer did not go through.
#[derive(Debug)]
pub enum ActionError {
    /// The engine refused it: the stream or the entry is not in the state the action
    /// needs. Nothing changed.
    Refused(OperatorError),
    /// Applying what the action unblocked failed.
    Consume(ConsumeError),
}

impl std::fmt::Display for ActionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ActionError::Refused(refused) => write!(f, "{refused}"),
            ActionError::Consume(error) => write!(f, "{error}"),
        }
    }
}

impl std::error::Error for ActionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ActionError::Refused(refused) => Some(refused),
            ActionError::Consume(error) => Some(error),
        }
    }
}

/// A transactional handler bound to the consumer's store.
type TransactionalApply<S> = Box<dyn FnMut(&mut S, &Work) -> Result<Outcome, ConsumeError> + Send>;

impl From<ReadError> for ConsumeError {
    fn from(error: ReadError) -> Self {
        ConsumeError::Read(error)
    }
}

impl From<CommitError> for ConsumeError {
    fn from(error: CommitError) -> Self {
        ConsumeError::Commit(error)
    }
}

/// Documents read from the store or written since; `dirty` ones go into the next commit.
#[derive(Default)]
struct DocumentCache {
    documents: FxHashMap<Arc<str>, Option<Document>>,
    dirty: FxHashSet<Arc<str>>,
}

impl DocumentSlots<Document> for DocumentCache {
    fn slot(&mut self, stream: &str) -> &mut Option<Document> {
        // Every slot a work touches was loaded before the projection runs; a write marks
        // it dirty (the projection may write any slot it is given).
        if !self.dirty.contains(stream) {
            let key = self
                .documents
                .get_key_value(stream)
                .map(|(k, _)| k.clone())
                .expect("document loaded before use");
            self.dirty.insert(key);
        }
        self.documents
            .get_mut(stream)
            .expect("document loaded before use")
    }
}

/// Engine + projection + cache + store for one source.
pub struct Consumer<S: Store> {
    pub(crate) engine: Engine,
    store: S,
    source: String,
    cache: DocumentCache,
    uncommitted_events: u64,
    /// Works applied since the last commit (or rebuild): some come without a delivery
    /// (another member's progress released them, a rebuild found them ready).
    uncommitted_works: u64,
    /// When the last commit that wrote deliveries finished.
    last_delivery_commit: Option<std::time::Instant>,
    notices_printed: usize,
    notices_suppressed: u64,
    /// The partitions this process owns in a consumer group (`None`: the whole source).
    owned: Option<Vec<u32>>,
    /// Any member may apply any stream (see [`Self::set_streams_shared`]).
    streams_shared: bool,
    /// A document was read after another member applied past what this engine knew of
    /// its stream: the next commit is refused as this conflict, and the state rebuilt.
    stale: Option<ordo_store::ConflictReason>,
    /// Print notices to stderr.
    pub verbose: bool,
    clock: Clock,
    /// The team's handler, when events go to it instead of the document projection.
    handlers: Option<HandlerPool>,
    /// The team's transactional handler, when events go to it instead of the projection.
    transactional: Option<TransactionalApply<S>>,
    /// Works back from the handlers, not yet given to the engine.
    returned: Vec<crate::handler::Returned>,
    /// Operator actions carried out since the last commit, recorded by it.
    actions: Vec<ordo_store::OperatorAction>,
    /// Notices since the last commit, journaled by it.
    journal: Vec<JournalEntry>,
    /// The newest operator action recorded in the store when the state was last read.
    actions_seen: u64,
    retention: Retention,
    /// Deliveries queued to apply minus works finished (handlers only; a bound on how
    /// far the source is read ahead of slow handlers).
    handler_backlog: u64,
    /// Where commit durations and reorder counts are reported (`--metrics`).
    telemetry: Option<Arc<crate::telemetry::Telemetry>>,
    /// Source partitions an operator paused: the run loop reads nothing more from them.
    paused_partitions: std::collections::BTreeSet<u32>,
}

impl<S: Store> Consumer<S> {
    /// The engine, for reading its views and checkpoints (inputs go through the
    /// consumer, which keeps the store and cache in step).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Resumes from what the store holds for `source`.
    pub fn open(store: S, source: &str, config: Config) -> Result<Self, ConsumeError> {
        Self::open_with_clock(store, source, config, Clock::system())
    }

    /// Resumes from what the store holds for `source`, reading the time from `clock`.
    pub fn open_with_clock(
        mut store: S,
        source: &str,
        config: Config,
        clock: Clock,
    ) -> Result<Self, ConsumeError> {
        // Read before the snapshot: an action recorded in between is seen again, not missed.
        let actions_seen = store.last_action_id()?;
        let snapshot = store.snapshot(source)?;
        let mut consumer = Consumer {
            engine: Engine::restore(config, snapshot, clock.now_ms()),
            store,
            source: source.into(),
            cache: DocumentCache::default(),
            uncommitted_events: 0,
            uncommitted_works: 0,
            last_delivery_commit: None,
            notices_printed: 0,
            notices_suppressed: 0,
            owned: None,
            streams_shared: false,
            stale: None,
            verbose: true,
            clock,
            handlers: None,
            transactional: None,
            returned: Vec::new(),
            actions: Vec::new(),
            journal: Vec::new(),
            actions_seen,
            retention: Retention::default(),
            handler_backlog: 0,
            telemetry: None,
            paused_partitions: Default::default(),
        };
        consumer.restore_pauses()?;
        Ok(consumer)
    }

    /// Puts the pauses in force in the store back into the engine and the partition set.
    fn restore_pauses(&mut self) -> Result<(), ConsumeError> {
        self.paused_partitions.clear();
        for pause in self.store.pauses()? {
            match pause.target {
                ordo_store::PauseTarget::Stream(stream) => {
                    self.engine.pause(&stream);
                }
                ordo_store::PauseTarget::Partition(partition) => {
                    self.paused_partitions.insert(partition);
                }
            }
        }
        Ok(())
    }

    /// The source partitions an operator paused (the run loop stops reading them).
    pub fn paused_partitions(&self) -> &std::collections::BTreeSet<u32> {
        &self.paused_partitions
    }

    /// Pauses or resumes reading `partition`; whether that changed anything.
    pub(crate) fn set_partition_paused(&mut self, partition: u32, paused: bool) -> bool {
        if paused {
            self.paused_partitions.insert(partition)
        } else {
            self.paused_partitions.remove(&partition)
        }
    }

    /// Reports commit durations, conflicts and reorder counts to `telemetry`.
    pub fn set_telemetry(&mut self, telemetry: Arc<crate::telemetry::Telemetry>) {
        self.telemetry = Some(telemetry);
    }

    /// Where this consumer reports, if anywhere.
    pub fn telemetry(&self) -> Option<&Arc<crate::telemetry::Telemetry>> {
        self.telemetry.as_ref()
    }

    /// Sends every event to `pool`'s handler instead of applying the document
    /// projection: the store then keeps versions, aliases, waiting events, dead letters
    /// and positions, and no documents.
    pub fn with_handlers(mut self, pool: HandlerPool) -> Self {
        // A merge the handler acknowledged must be known after a crash, even if ordo did
        // not commit its acknowledgement (the handler's fold does not roll back).
        self.engine.write_merges_before_dispatch();
        self.handlers = Some(pool);
        self
    }

    /// Applies every event through `handler`, which writes the team's own tables inside
    /// the store's commit transaction (see [`crate::handler::TransactionalHandler`]).
    pub fn with_transactional_handler<H>(mut self, mut handler: H) -> Self
    where
        S: ordo_store::BatchTransaction,
        H: crate::handler::TransactionalHandler<S::Connection>,
    {
        self.transactional = Some(Box::new(move |store: &mut S, work: &Work| {
            crate::handler::apply_in_transaction(&mut handler, store, work)
        }));
        self
    }

    /// Whether events go to a handler.
    pub fn has_handlers(&self) -> bool {
        self.handlers.is_some()
    }

    /// Works out with the handler (calling, in backoff, or back and not yet taken).
    pub fn handlers_in_flight(&self) -> usize {
        self.handlers.as_ref().map_or(0, |pool| pool.in_flight()) + self.returned.len()
    }

    /// Whether the source should wait: handlers are this far behind what was read, and
    /// calls are running that will catch up. With nothing calling (every work out sleeps
    /// in backoff, or the backlog waits behind a dead letter) the source is read on: one
    /// stream's trouble must not stop the others.
    pub fn handlers_saturated(&self) -> bool {
        self.handlers
            .as_ref()
            .is_some_and(|pool| pool.calling() > 0)
            && self.handler_backlog >= HANDLER_DELIVERED_AHEAD_MAX
    }

    /// Gives the works back from the handlers to the engine; returns how many finished.
    /// An abandoned one (its backoff was cut short before a rebuild or a stop) is not
    /// given back: the engine that handed it out is about to be replaced, or the process
    /// to end, and its event is read again from its unsettled offset.
    fn take_back(&mut self, now_ms: u64) -> u64 {
        let mut finished = 0;
        for (work, outcome) in self.returned.drain(..) {
            if let Some(outcome) = outcome {
                self.engine.handle_outcome(now_ms, work, outcome);
                finished += 1;
            }
        }
        self.handler_backlog = self.handler_backlog.saturating_sub(finished);
        self.uncommitted_works += finished;
        finished
    }

    /// Waits at most `timeout` for a handler to finish a work (taken up by the next
    /// [`Self::apply_ready`]); whether one did.
    pub fn wait_for_handlers(&mut self, timeout: std::time::Duration) -> bool {
        let Some(pool) = self.handlers.as_mut() else {
            return false;
        };
        match pool.take_within(timeout) {
            Some(finished) => {
                self.returned.push(finished);
                true
            }
            None => false,
        }
    }

    /// What is read is applied before the engine is rebuilt (a rebalance): with the
    /// document projection, everything ready; with handlers, nothing new is handed out and
    /// the calls out are settled ([`Self::settle_handlers`]).
    pub fn apply_before_rebuild(&mut self) -> Result<(), ConsumeError> {
        if self.handlers.is_some() {
            self.settle_handlers(None);
        } else {
            self.apply_ready()?;
        }
        Ok(())
    }

    /// Takes every work back from the handlers, handing out none, before the state is
    /// rebuilt (no call of the old state may still run beside the new one) or the process
    /// stops. Works sleeping in backoff come back at once, abandoned; calls on the wire
    /// are waited for, at most `limit` (a handler timeout ends each one anyway). Returns
    /// whether none is left out.
    pub fn settle_handlers(&mut self, limit: Option<std::time::Duration>) -> bool {
        let deadline = limit.map(|limit| std::time::Instant::now() + limit);
        if let Some(pool) = self.handlers.as_mut() {
            pool.abandon_backoffs();
        }
        loop {
            let now_ms = self.clock.now_ms();
            self.take_back(now_ms);
            let Some(pool) = self.handlers.as_mut() else {
                break;
            };
            if pool.in_flight() == 0 {
                break;
            }
            let wait = match deadline {
                Some(deadline) => {
                    match deadline.checked_duration_since(std::time::Instant::now()) {
                        Some(left) => left,
                        None => break,
                    }
                }
                None => std::time::Duration::from_millis(100),
            };
            if let Some(back) = pool.take_within(wait) {
                self.returned.push(back);
            }
        }
        if let Some(pool) = self.handlers.as_mut() {
            pool.resume_backoffs();
        }
        self.handlers_in_flight() == 0
    }

    /// The clock this consumer reads.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The store.
    pub fn store(&mut self) -> &mut S {
        &mut self.store
    }

    /// Hands one delivery (raw bytes) to the engine, as received at `now_ms` (read once
    /// per polled batch: the clock is not worth a call per delivery).
    pub fn deliver(&mut self, now_ms: u64, position: SourcePosition, bytes: &[u8]) {
        let disposition = self.engine.handle_bytes(now_ms, Some(position), bytes);
        self.delivered(disposition);
    }

    fn delivered(&mut self, disposition: Disposition) {
        self.uncommitted_events += 1;
        if disposition == Disposition::DeadLettered {
            // Into the journal at once: a batch of bad input must not overflow the
            // engine's bounded notice queue before the next apply round.
            self.print_notices();
        }
        if disposition == Disposition::Queued && self.handlers.is_some() {
            self.handler_backlog += 1;
        }
    }

    /// Hands one broker message to the engine, dead-lettering it when its key is not
    /// its stream.
    pub fn deliver_keyed(
        &mut self,
        now_ms: u64,
        position: SourcePosition,
        bytes: &[u8],
        key: Option<&[u8]>,
    ) {
        self.deliver_from(now_ms, position, bytes, key, || None);
    }

    /// [`Self::deliver_keyed`], naming the message the broker's way when it is
    /// dead-lettered (`origin`, asked for only then; see [`Source::origin`]).
    ///
    /// [`Source::origin`]: crate::Source::origin
    pub fn deliver_from(
        &mut self,
        now_ms: u64,
        position: SourcePosition,
        bytes: &[u8],
        key: Option<&[u8]>,
        origin: impl FnOnce() -> Option<String>,
    ) {
        let disposition = self
            .engine
            .handle_delivery(now_ms, Some(position), bytes, key, origin);
        self.delivered(disposition);
    }

    /// Rebuilds the engine from the store (after a partition assignment: another process
    /// may have moved the assigned streams on). Commit first.
    pub fn reload(&mut self) -> Result<(), ConsumeError> {
        // No handler call of the old state may run beside the new one (two calls of one
        // stream at once); what they acknowledged is read and sent again.
        self.settle_handlers(None);
        self.handler_backlog = 0;
        let config = self.engine.config().clone();
        self.actions_seen = self.store.last_action_id()?;
        let mut snapshot = self.store.snapshot(&self.source)?;
        if let Some(owned) = &self.owned {
            // Another member's waiting events are its own to apply.
            snapshot.retain_partitions(owned);
        }
        self.engine = Engine::restore(config, snapshot, self.clock.now_ms());
        self.engine.keep_delivered_streams(self.streams_shared);
        self.stale = None;
        self.restore_pauses()?;
        self.cache = DocumentCache::default();
        self.store.forget_documents();
        self.uncommitted_events = 0;
        self.uncommitted_works = 0;
        Ok(())
    }

    /// Takes `partitions` (a consumer-group assignment, the whole of it): the store fences
    /// their earlier owners, and the next [`Self::reload`] restores only their waiting
    /// events.
    pub fn claim(&mut self, partitions: &[u32]) -> Result<(), ConsumeError> {
        self.store.claim(&self.source, partitions)?;
        self.owned = Some(partitions.to_vec());
        Ok(())
    }

    /// Gives partitions up (a revocation, after the commit that settles them).
    pub fn release(&mut self, partitions: &[u32]) -> Result<(), ConsumeError> {
        if let Some(owned) = self.owned.as_mut() {
            owned.retain(|p| !partitions.contains(p));
        }
        self.store.release(partitions)?;
        Ok(())
    }

    /// Whether this consumer is one member of a group sharing its store.
    pub fn is_group_member(&self) -> bool {
        self.owned.is_some()
    }

    /// Says that any member of the group may apply any stream (see
    /// [`crate::Source::shares_streams`]): a stream waiting on a gap of its own is then
    /// looked up in the store too, in case another member applied the missing version.
    pub fn set_streams_shared(&mut self, shared: bool) {
        self.streams_shared = shared;
        self.engine.keep_delivered_streams(shared);
    }

    /// With shared streams, reads the positions of the streams just delivered and hands
    /// them to the engine before anything is applied (see
    /// [`ordo_core::Engine::take_delivered_streams`]). Returns how many moved.
    pub fn refresh_delivered(&mut self) -> Result<usize, ConsumeError> {
        let delivered = self.engine.take_delivered_streams();
        let mut moved = 0;
        for chunk in delivered.chunks(AWAITED_READ_CHUNK_MAX) {
            let names: Vec<Arc<str>> = chunk.iter().map(|s| Arc::from(&**s)).collect();
            for record in self.store.stream_records(&names)? {
                if self.engine.handle_progress(self.clock.now_ms(), &record) {
                    moved += 1;
                }
            }
        }
        Ok(moved)
    }

    /// Whether parked events, or (with shared streams) gaps, wait for what another
    /// member may have applied.
    pub fn awaits_other_members(&self) -> bool {
        self.is_group_member()
            && (self.engine.is_awaiting() || (self.streams_shared && self.engine.has_gaps()))
    }

    /// Whether a dead letter a stream waits behind here was replayed or skipped by another
    /// process (an operator verb against the shared store): then the state must be
    /// rebuilt from the store to go on.
    pub fn dead_letters_resolved_elsewhere(&mut self) -> Result<bool, ConsumeError> {
        let markers = self.engine.dead_letter_markers();
        if markers.is_empty() {
            return Ok(false);
        }
        Ok(self.store.dead_letters_present(&markers)?.len() < markers.len())
    }

    /// Whether an operator verb recorded an action in the store since this consumer last
    /// read it (only stores a verb writes beside a running consumer, PostgreSQL, say
    /// so): the state must then be rebuilt from the store.
    pub fn actions_recorded_elsewhere(&mut self) -> Result<bool, ConsumeError> {
        let last = self.store.last_action_id()?;
        if last > self.actions_seen {
            self.actions_seen = last;
            return Ok(true);
        }
        Ok(false)
    }

    /// Reads the positions of the streams parked events wait for and hands them to the
    /// engine (another member may have applied them). Returns how many moved.
    pub fn refresh_awaited(&mut self) -> Result<usize, ConsumeError> {
        let mut awaited = self.engine.awaited_streams();
        if self.streams_shared {
            awaited.extend(self.engine.gapped_streams());
            awaited.sort();
            awaited.dedup();
        }
        let mut moved = 0;
        for chunk in awaited.chunks(AWAITED_READ_CHUNK_MAX) {
            for record in self.store.stream_records(chunk)? {
                if self.engine.handle_progress(self.clock.now_ms(), &record) {
                    moved += 1;
                }
            }
        }
        Ok(moved)
    }

    /// Deliveries since the last commit.
    pub fn uncommitted_events(&self) -> u64 {
        self.uncommitted_events
    }

    /// When the last commit that wrote deliveries finished: from then on, everything
    /// delivered so far was durable (throughput measurements end there).
    pub fn last_delivery_commit(&self) -> Option<std::time::Instant> {
        self.last_delivery_commit
    }

    /// Whether anything read or applied since the last commit (or rebuild) waits for a
    /// commit. Works can apply without any delivery: released by another member's
    /// progress, or found ready by a rebuild; they must reach the store all the same.
    /// So must a notice with no event behind it (a gap that stalled while nothing
    /// arrived): its journal entry and the counter it moved.
    pub fn has_uncommitted(&self) -> bool {
        self.uncommitted_events > 0 || self.uncommitted_works > 0 || !self.journal.is_empty()
    }

    /// Applies everything the engine has ready.
    ///
    /// Works are taken out in rounds of up to [`WORKS_PER_ROUND_MAX`]: the engine never
    /// hands out two that touch one stream or one document, so a round can be applied in
    /// any order; its documents are read from the store in one call first (one round trip
    /// to a database server instead of one per stream).
    pub fn apply_ready(&mut self) -> Result<u64, ConsumeError> {
        if self.handlers.is_some() {
            return self.hand_out_ready();
        }
        let mut applied = 0;
        let mut round: Vec<Work> = Vec::new();
        loop {
            // One reading of the clock per round of up to WORKS_PER_ROUND_MAX works.
            let now_ms = self.clock.now_ms();
            // Spilled streams that may go on (or got a new event) come back first.
            while let Some(load) = self.engine.poll_load() {
                let loaded = self.store.load_pending(&load)?;
                self.engine.handle_loaded(now_ms, &load, loaded);
            }
            while round.len() < WORKS_PER_ROUND_MAX {
                match self.engine.poll_work(now_ms) {
                    Some(work) => round.push(work),
                    None => break,
                }
            }
            if round.is_empty() {
                if !self.engine.has_loads() {
                    break;
                }
                // Nothing ready, but loads are out: answer them and look again.
                continue;
            }
            // The engine locks every document a work touches (a merge's sources too), so the
            // documents of one round are all distinct.
            let mut missing: Vec<Arc<str>> = Vec::new();
            for work in &round {
                let mut note = |stream: &str| {
                    if !self.cache.documents.contains_key(stream) {
                        missing.push(Arc::from(stream));
                    }
                };
                note(work.document());
                if let ordo_core::Action::Merge { sources } = &work.action {
                    for source in sources {
                        note(source);
                    }
                }
            }
            if self.transactional.is_some() {
                missing.clear(); // the team's handler keeps its own state
            }
            if !missing.is_empty() {
                let loaded = self.store.documents(&missing)?;
                if self.streams_shared {
                    self.check_fresh(&round, &missing)?;
                }
                for (stream, document) in missing.into_iter().zip(loaded) {
                    self.cache.documents.insert(stream, document);
                }
            }
            for work in round.drain(..) {
                let outcome = match self.transactional.as_mut() {
                    Some(apply) => apply(&mut self.store, &work)?,
                    None => self.apply(&work),
                };
                self.engine.handle_outcome(now_ms, work, outcome);
                applied += 1;
            }
        }
        self.engine.handle_timeout(self.clock.now_ms());
        self.print_notices();
        self.uncommitted_works += applied;
        Ok(applied)
    }

    /// With shared streams: whether another member applied past what this engine knows
    /// of a stream whose document was just read (read after the positions were, so a
    /// document newer than the engine shows here). Then the round's results would be
    /// applied onto a document that already holds them: the next commit is refused as a
    /// conflict and the state rebuilt from the store. The revision check covers documents
    /// read earlier.
    fn check_fresh(&mut self, round: &[Work], read: &[Arc<str>]) -> Result<(), ConsumeError> {
        let streams: Vec<Arc<str>> = round
            .iter()
            .filter(|w| read.iter().any(|r| **r == *w.document()))
            .map(|w| Arc::from(&*w.event.stream))
            .collect();
        for record in self.store.stream_records(&streams)? {
            let ahead = round
                .iter()
                .find(|w| *w.event.stream == *record.stream && record.applied >= w.event.version);
            if let Some(work) = ahead {
                self.stale
                    .get_or_insert(ordo_store::ConflictReason::AlreadyApplied {
                        stream: record.stream.to_string(),
                        stored: record.applied,
                        batch: work.event.version,
                    });
            }
        }
        Ok(())
    }

    /// [`Self::apply_ready`] with handlers: takes back what they finished, gives out what
    /// is ready, until neither moves; never waits for a handler.
    fn hand_out_ready(&mut self) -> Result<u64, ConsumeError> {
        let mut finished = 0;
        loop {
            let now_ms = self.clock.now_ms();
            let mut moved = false;
            while let Some(load) = self.engine.poll_load() {
                let loaded = self.store.load_pending(&load)?;
                self.engine.handle_loaded(now_ms, &load, loaded);
                moved = true;
            }
            let pool = self.handlers.as_mut().expect("called with handlers");
            while let Some(back) = pool.try_take() {
                self.returned.push(back);
            }
            let back = self.take_back(now_ms);
            finished += back;
            moved |= back > 0;
            let pool = self.handlers.as_mut().expect("called with handlers");
            while pool.in_flight() < HANDLER_WORKS_OUT_MAX {
                match self.engine.poll_work(now_ms) {
                    Some(work) => {
                        pool.submit(work);
                        moved = true;
                    }
                    None => break,
                }
            }
            if !moved {
                break;
            }
        }
        self.engine.handle_timeout(self.clock.now_ms());
        self.print_notices();
        Ok(finished)
    }

    /// Runs one work; its documents were read into the cache by its round.
    fn apply(&mut self, work: &Work) -> Outcome {
        // A rejected work leaves its documents unchanged; marking them dirty then only
        // rewrites the same value.
        run_work(&DocumentProjection, work, &mut self.cache)
    }

    /// Writes everything since the last commit in one transaction.
    pub fn commit(&mut self) -> Result<(), ConsumeError> {
        if let Some(reason) = self.stale.take() {
            return Err(ConsumeError::Commit(CommitError::Conflict(reason)));
        }
        let changes = self.engine.take_changes();
        let documents: Vec<(Arc<str>, Option<Document>)> = self
            .cache
            .dirty
            .drain()
            .map(|stream| {
                let document = self.cache.documents.get(&stream).cloned().flatten();
                (stream, document)
            })
            .collect();
        self.print_notices();
        let batch = CommitBatch {
            changes,
            documents,
            actions: std::mem::take(&mut self.actions),
            journal: std::mem::take(&mut self.journal),
            retention: self.retention,
            now_ms: self.clock.now_ms(),
        };
        let started = std::time::Instant::now();
        self.store.commit(&self.source, batch)?;
        if let Some(telemetry) = &self.telemetry {
            telemetry.committed(
                started.elapsed().as_secs_f64(),
                &self.engine.take_reorder_distances(),
            );
        }

        if self.uncommitted_events > 0 {
            self.last_delivery_commit = Some(std::time::Instant::now());
        }
        self.uncommitted_events = 0;
        self.uncommitted_works = 0;
        self.notices_printed = 0;
        if self.cache.documents.len() > DOCUMENT_CACHE_MAX {
            self.cache.documents.clear();
            self.store.forget_documents();
        }
        Ok(())
    }

    /// Records an operator action in the next commit.
    pub fn record_action(&mut self, action: ordo_store::OperatorAction) {
        self.actions.push(action);
    }

    /// Applies everything ready and, with handlers, waits until every call came back and
    /// nothing more is ready (an operator verb's "apply what it unblocks").
    pub fn apply_until_quiet(&mut self) -> Result<u64, ConsumeError> {
        let mut applied = self.apply_ready()?;
        while self.handlers_in_flight() > 0 {
            self.wait_for_handlers(std::time::Duration::from_millis(100));
            applied += self.apply_ready()?;
        }
        Ok(applied)
    }

    /// Replays one dead letter and applies what it unblocks (commit separately).
    pub fn replay(&mut self, entry: &DeadLetter) -> Result<ordo_core::ReplayOutcome, ActionError> {
        let outcome = self
            .engine
            .replay_dead_letter(self.clock.now_ms(), entry)
            .map_err(ActionError::Refused)?;
        self.apply_until_quiet().map_err(ActionError::Consume)?;
        // The verdict comes only now: requeued is what the engine did, but the projection
        // or the handler may have refused the event again.
        if outcome == ordo_core::ReplayOutcome::Requeued {
            if let (Some(stream), Some(version)) = (entry.stream.as_deref(), entry.version) {
                if self.engine.dead_letter_at(stream, version).is_some() {
                    return Ok(ordo_core::ReplayOutcome::DeadLetteredAgain);
                }
            }
        }
        Ok(outcome)
    }

    /// Passes over one missing version known lost and applies what it unblocks (commit
    /// separately).
    pub fn skip_missing(&mut self, stream: &str, version: u64) -> Result<(), ActionError> {
        self.engine
            .skip_missing(self.clock.now_ms(), stream, version)
            .map_err(ActionError::Refused)?;
        self.apply_until_quiet().map_err(ActionError::Consume)?;
        Ok(())
    }

    /// Skips one dead letter and applies what it unblocks (commit separately).
    pub fn skip(&mut self, entry: &DeadLetter) -> Result<(), ActionError> {
        self.engine
            .skip_dead_letter(self.clock.now_ms(), entry)
            .map_err(ActionError::Refused)?;
        self.apply_until_quiet().map_err(ActionError::Consume)?;
        Ok(())
    }

    /// The counters now.
    pub fn counters(&self) -> Counters {
        self.engine.counters()
    }

    /// Takes the engine's notices into the journal of the next commit, printing the first
    /// few of each commit (all of them go to the journal).
    fn print_notices(&mut self) {
        self.log_decisions();
        while let Some(notice) = self.engine.poll_notice() {
            let entry = journal_entry(&notice, self.clock.now_ms());
            self.journal.push(entry);
            if !self.verbose {
                continue;
            }
            if self.notices_printed >= NOTICES_PRINTED_PER_COMMIT_MAX {
                self.notices_suppressed += 1;
                continue;
            }
            self.notices_printed += 1;
            match notice {
                Notice::Stalled {
                    stream,
                    missing,
                    waiting,
                } => tracing::warn!(
                    "stalled: `{stream}` is missing version {missing} (version {waiting} waits); once it is known lost: ordo parked skip --store STORE --stream {stream} --version {missing} --reason TEXT"
                ),
                Notice::DeadLettered {
                    id, stream, reason, ..
                } => tracing::warn!(
                    "dead letter {id}{}: {reason}",
                    stream.map(|s| format!(" (stream `{s}`)")).unwrap_or_default()
                ),
                Notice::Released {
                    stream,
                    version,
                    waited_ms,
                } => tracing::info!(
                    "released: `{stream}` version {version} went on after waiting {} s for its dependency",
                    waited_ms / 1000
                ),
                Notice::Stale {
                    stream,
                    version,
                    id,
                } => tracing::warn!(
                    "stale: `{id}` claims `{stream}` version {version}, which another event holds; skipped"
                ),
                Notice::LateAfterMerge {
                    stream,
                    version,
                    target,
                    redirected,
                } => tracing::info!(
                    "late after merge: `{stream}` version {version} {} `{target}`",
                    if redirected {
                        "applied to"
                    } else {
                        "applied to its source, then folded into"
                    }
                ),
            }
        }
    }

    /// Logs every decision about every event (`tracing`, info): the per-event trace of
    /// `ordo run -v`.
    pub fn trace_decisions(&mut self) {
        self.engine.trace_decisions();
    }

    fn log_decisions(&mut self) {
        while let Some(decision) = self.engine.poll_decision() {
            let (stream, version, id) = (&*decision.stream, decision.version, &*decision.id);
            let name = decision.kind.name();
            match &decision.kind {
                DecisionKind::Parked {
                    on,
                    version: awaited,
                } => tracing::info!(
                    stream,
                    version,
                    id,
                    decision = name,
                    on = &**on,
                    awaited,
                    "`{stream}` v{version} ({id}): parked on `{on}` v{awaited}"
                ),
                DecisionKind::WaitsForMerge {
                    target,
                    version: merge,
                } => tracing::info!(
                    stream,
                    version,
                    id,
                    decision = name,
                    target = &**target,
                    merge,
                    "`{stream}` v{version} ({id}): waits for the merge at `{target}` v{merge}"
                ),
                DecisionKind::Applied { document, .. } => tracing::info!(
                    stream,
                    version,
                    id,
                    decision = name,
                    document = &**document,
                    "`{stream}` v{version} ({id}): {name} to `{document}`"
                ),
                DecisionKind::DeadLettered { entry } => tracing::info!(
                    stream,
                    version,
                    id,
                    decision = name,
                    entry,
                    "`{stream}` v{version} ({id}): dead-lettered (entry {entry})"
                ),
                _ => tracing::info!(
                    stream,
                    version,
                    id,
                    decision = name,
                    "`{stream}` v{version} ({id}): {name}"
                ),
            }
        }
    }

    /// Records a commit conflict in the journal (after the rebuild that answered it).
    pub fn record_conflict(&mut self, detail: &str) {
        self.journal.push(JournalEntry {
            id: 0,
            at_ms: self.clock.now_ms(),
            kind: "conflict",
            stream: None,
            version: None,
            detail: serde_json::json!({ "detail": detail }),
        });
    }

    /// What the journal keeps (applied at each commit that adds entries).
    pub fn set_journal_retention(&mut self, retention: Retention) {
        self.retention = retention;
    }

    /// Notices not printed because of the per-commit limit.
    pub fn notices_suppressed(&self) -> u64 {
        self.notices_suppressed
    }
}

/// The journal entry for one engine notice.
fn journal_entry(notice: &Notice, at_ms: u64) -> JournalEntry {
    let (kind, stream, version, detail) = match notice {
        Notice::Stalled {
            stream,
            missing,
            waiting,
        } => (
            "stalled",
            Some(stream.to_string()),
            Some(*missing),
            serde_json::json!({ "missing": missing, "waiting": waiting }),
        ),
        Notice::DeadLettered {
            id,
            stream,
            version,
            kind,
            reason,
        } => (
            "dead-lettered",
            stream.as_deref().map(String::from),
            *version,
            serde_json::json!({ "id": id, "kind": kind.name(), "reason": reason }),
        ),
        Notice::Released {
            stream,
            version,
            waited_ms,
        } => (
            "released",
            Some(stream.to_string()),
            Some(*version),
            serde_json::json!({ "waited_ms": waited_ms }),
        ),
        Notice::Stale {
            stream,
            version,
            id,
        } => (
            "stale",
            Some(stream.to_string()),
            Some(*version),
            serde_json::json!({ "id": &**id }),
        ),
        Notice::LateAfterMerge {
            stream,
            version,
            target,
            redirected,
        } => (
            "late-after-merge",
            Some(stream.to_string()),
            Some(*version),
            serde_json::json!({ "target": &**target, "redirected": redirected }),
        ),
    };
    JournalEntry {
        id: 0,
        at_ms,
        kind,
        stream,
        version,
        detail,
    }
}
