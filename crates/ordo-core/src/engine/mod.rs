//! The engine: every delivered event goes in through `handle_*`, every decision comes out
//! through `poll_*` and [`Engine::take_changes`]. No IO, no clock: time is an argument.
//!
//! # Call order
//!
//! 1. [`Engine::new`] or [`Engine::restore`] from a store's [`Snapshot`].
//! 2. For each delivered event, [`Engine::handle_event`] (or [`Engine::handle_bytes`] for
//!    raw input, which dead-letters what does not parse).
//! 3. Drain [`Engine::poll_work`]: each [`Work`] is one event to apply to one document
//!    (or one merge over several). Run the projection, then hand the same `Work` back
//!    through [`Engine::handle_outcome`]. Any number of `Work`s may be out at once; the
//!    engine never hands out two that touch the same stream or the same document.
//! 4. Now and then call [`Engine::handle_timeout`] (at [`Engine::poll_timeout`] at the
//!    latest) so gaps older than the gap timeout are reported as stalled.
//! 5. To commit, call [`Engine::take_changes`] and write the [`ChangeSet`] in the same
//!    transaction as the documents the finished `Work`s produced.
//! 6. [`Engine::poll_notice`] yields what an operator should hear about.
//!
//! Operator actions ([`Engine::skip_gap`], [`Engine::skip_dead_letter`],
//! [`Engine::replay_dead_letter`]) are inputs too, and leave their effects in the next
//! change set.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::checkpoint::{CheckpointTracker, SourcePosition};
use crate::counters::{Counters, ReorderDistances};
use crate::dedupe::DedupeWindow;
use crate::envelope::{
    parse_event, Dependency, EnvelopeError, Event, OpPolicy, ParseError, Routing,
};
use crate::limits::{
    DEDUPE_WINDOW_IDS_DEFAULT, GAP_TIMEOUT_MS_DEFAULT, LONG_PARKED_MS_DEFAULT,
    PARKED_STREAMS_IN_MEMORY_MAX_DEFAULT, STREAM_PENDING_EVENTS_MAX_DEFAULT,
};
use crate::state::{DeadLetter, DeadLetterKind, Load, Snapshot, VersionMode};

/// Most notices kept for [`Engine::poll_notice`]; older ones are dropped and counted.
pub const NOTICES_MAX: usize = 4096;

/// How the engine behaves.
#[derive(Clone, Debug)]
pub struct Config {
    /// Version mode for streams no rule matches.
    pub default_mode: VersionMode,
    /// `(stream-name prefix, mode)` rules; the first matching prefix wins.
    pub mode_rules: Vec<(String, VersionMode)>,
    /// How many event ids the dedupe window remembers.
    pub dedupe_window_ids: usize,
    /// Most events one stream may hold waiting; beyond it events are dead-lettered.
    pub stream_pending_events_max: usize,
    /// How long a gap may stay open before its stream is reported stalled.
    pub gap_timeout_ms: u64,
    /// Which ops envelopes may carry.
    pub op_policy: OpPolicy,
    /// Most parked streams kept in memory; beyond it they are spilled to the store.
    pub parked_streams_in_memory_max: usize,
    /// A merge is written to the store before it is handed out. Set when the work goes
    /// to a handler with effects of its own: a merge it acknowledged must still be known
    /// after a crash, so that the source events beyond its cuts wait for it (see
    /// `merge_fence`). The document projection's fold rolls back with the crash instead.
    pub merges_written_before_dispatch: bool,
    /// Record every decision about every event for [`Engine::poll_decision`] (`ordo run
    /// -v`). Off by default: the trace costs a copy of the stream name and id per
    /// decision.
    pub decisions_traced: bool,
    /// A parked event released after waiting at least this long raises a notice.
    pub long_parked_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            default_mode: VersionMode::Gapless,
            mode_rules: Vec::new(),
            dedupe_window_ids: DEDUPE_WINDOW_IDS_DEFAULT,
            stream_pending_events_max: STREAM_PENDING_EVENTS_MAX_DEFAULT,
            gap_timeout_ms: GAP_TIMEOUT_MS_DEFAULT,
            op_policy: OpPolicy::Document,
            parked_streams_in_memory_max: PARKED_STREAMS_IN_MEMORY_MAX_DEFAULT,
            merges_written_before_dispatch: false,
            decisions_traced: false,
            long_parked_ms: LONG_PARKED_MS_DEFAULT,
        }
    }
}

impl Config {
    fn mode_for(&self, stream: &str) -> VersionMode {
        self.mode_rules
            .iter()
            .find(|(prefix, _)| stream.starts_with(prefix.as_str()))
            .map_or(self.default_mode, |(_, mode)| *mode)
    }
}

/// What [`Engine::handle_event`] did with an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// In line to be applied (in memory; its offset settles when applied).
    Queued,
    /// Written to the store to wait for a gap or an earlier event.
    Buffered,
    /// Skipped: its id was seen before.
    Duplicate,
    /// Skipped: its version is at or below the applied one and its id is new.
    Stale,
    /// Dead-lettered (conflict, overflow or an invalid envelope).
    DeadLettered,
}

/// The projection's verdict on one [`Work`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The effect was applied to the document(s).
    Applied,
    /// The projection refused the event; it goes to the dead-letter queue and its stream
    /// waits behind it.
    Rejected {
        /// Why, for the operator.
        reason: String,
    },
}

/// What a [`Work`] asks the projection to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Apply the event to [`Work::document`].
    Apply,
    /// Fold each source's document into [`Work::document`], then clear the sources.
    Merge {
        /// The source streams, whose own documents are folded (in this order).
        sources: Vec<Arc<str>>,
    },
}

/// One event handed out for applying. Give it back through [`Engine::handle_outcome`].
#[derive(Debug)]
#[must_use = "a dropped Work leaves its stream in flight for ever: give it back through Engine::handle_outcome"]
pub struct Work {
    /// The event.
    pub event: Event,
    /// Where the event's aliases lead, when that is not its own stream.
    redirect: Option<Arc<str>>,
    /// Apply, or fold a merge.
    pub action: Action,
    stream: StreamId,
    /// The event's offset, while not yet settled.
    position: Option<SourcePosition>,
    /// Whether the store holds a pending row for the event (deleted once applied).
    written: bool,
    /// The document applied to (locked while the work is out).
    target: StreamId,
    /// A merge's source documents (also locked); empty otherwise.
    source_ids: Vec<StreamId>,
}

impl Work {
    /// Whether the event is applied to another stream's document through an alias.
    pub fn redirected(&self) -> bool {
        self.redirect.is_some()
    }

    /// The document to apply to: the event's stream, or where its aliases lead.
    pub fn document(&self) -> &str {
        self.redirect.as_deref().unwrap_or(&self.event.stream)
    }

    fn locked(&self) -> impl Iterator<Item = StreamId> + '_ {
        std::iter::once(self.target).chain(self.source_ids.iter().copied())
    }
}

/// What an operator should hear about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// A gap outlived the gap timeout; the stream waits until it fills or is skipped.
    Stalled {
        /// The stream.
        stream: Arc<str>,
        /// The first missing version.
        missing: u64,
        /// The version waiting beyond the gap.
        waiting: u64,
    },
    /// An event was dead-lettered.
    DeadLettered {
        /// The entry's id.
        id: u64,
        /// The stream, when known.
        stream: Option<Arc<str>>,
        /// The version, when known.
        version: Option<u64>,
        /// What kind of entry (what it blocks).
        kind: DeadLetterKind,
        /// Why.
        reason: String,
    },
    /// A parked event went on after waiting at least `Config::long_parked_ms`.
    Released {
        /// The stream.
        stream: Arc<str>,
        /// The version.
        version: u64,
        /// How long it waited, in ms.
        waited_ms: u64,
    },
    /// An event with a new id at a version its stream already holds or passed (a second
    /// writer, a replay of old data): skipped.
    Stale {
        /// The stream.
        stream: Arc<str>,
        /// The version.
        version: u64,
        /// The event's id.
        id: Box<str>,
    },
    /// A source event beyond its merge cut: applied to the merge target (redirected), or
    /// applied to the source before the merge came and folded in by it.
    LateAfterMerge {
        /// The source stream.
        stream: Arc<str>,
        /// The event's version.
        version: u64,
        /// The merge target.
        target: Arc<str>,
        /// Whether it went to the target itself (else the merge folded it in).
        redirected: bool,
    },
}

mod accept;
mod changes;
mod dead_letter;
mod decisions;
mod dependencies;
mod dispatch;
mod merge_fence;
mod operator;
mod outcome;
mod pause;
mod progress;
mod spill;
mod stream;
mod views;

pub use decisions::{Decision, DecisionKind, DECISIONS_MAX};
pub use operator::{OperatorError, ReplayOutcome};
use stream::{
    PerStream, StreamExtra, StreamId, StreamState, IN_READY, MONOTONIC, PARKED, SPILLED, STALLED,
};
pub use views::{WaitingEvent, WaitsFor};

/// The ordering core. See the module documentation for the call order.
#[derive(Debug)]
pub struct Engine {
    config: Config,
    names: PerStream<Arc<str>>,
    ids: FxHashMap<Arc<str>, StreamId>,
    streams: PerStream<StreamState>,
    ready: VecDeque<StreamId>,
    /// Works decided at delivery (the express lane, see `accept`), handed out first.
    express: VecDeque<Work>,
    /// Streams that got a dead-letter marker in their slots (a superset: pruned by
    /// [`Engine::dead_letter_markers`]), so that listing the markers does not walk every
    /// stream.
    marked_streams: FxHashSet<StreamId>,
    /// Awaited stream → (version needed, waiting stream).
    dependents: dependencies::Dependents,
    /// Busy document → streams waiting for it.
    document_waiters: FxHashMap<StreamId, Vec<StreamId>>,
    /// Open gaps not yet stalled, by start time.
    gaps: BTreeSet<(u64, StreamId)>,
    /// The streams of events delivered since the last
    /// [`Engine::take_delivered_streams`], when asked to keep them.
    delivered_streams: Option<Vec<Box<str>>>,
    dedupe: DedupeWindow,
    checkpoints: CheckpointTracker,
    counters: Counters,
    in_flight: usize,
    next_dead_letter_id: u64,
    dirty: Vec<StreamId>,
    pending_changed: FxHashSet<(StreamId, u64)>,
    dead_letters_put: Vec<DeadLetter>,
    dead_letters_delete: Vec<u64>,
    dedupe_put: Vec<(u64, u64)>,
    notices: VecDeque<Notice>,
    notices_dropped: u64,
    /// Released per-stream extras, kept for reuse so that a stream waking up does not
    /// allocate. Boxed on purpose: they move in and out of `StreamState::extra` as is.
    #[allow(clippy::vec_box)]
    spare_extras: Vec<Box<StreamExtra>>,
    /// Streams that parked, oldest first (some may have moved on since): the candidates
    /// for spilling when more than `parked_streams_in_memory_max` are in memory.
    parked_queue: VecDeque<StreamId>,
    /// Awaited stream → the lowest version spilled streams wait for in it.
    spilled_waiters: FxHashMap<StreamId, u64>,
    /// Events that arrived for spilled streams, until their stream is loaded.
    held: FxHashMap<StreamId, Vec<(Option<SourcePosition>, Event)>>,
    /// Loads for the store to answer ([`Engine::poll_load`]).
    loads: VecDeque<Load>,
    /// Streams spilled and loads answered since this engine started (diagnostics).
    spill_totals: (u64, u64),
    /// How far ahead of a gap events arrived since the last [`Self::take_reorder_distances`].
    reorder_distances: ReorderDistances,
    /// Events put into slots so far (their `seq`).
    deliveries: u64,
    /// Source stream → the known merges that name it (see `merge_fence`).
    fences: FxHashMap<StreamId, Vec<merge_fence::Fence>>,
    /// Merge target → streams whose head waits for a merge of it to apply.
    fence_waiters: FxHashMap<StreamId, Vec<StreamId>>,
    /// Streams whose head merge waits for its row to be written
    /// ([`Config::merges_written_before_dispatch`]); scheduled again by `take_changes`.
    merges_to_write: Vec<StreamId>,
    /// Events out with no source position and no row yet (a replay dispatched before the
    /// commit that writes it): nothing would deliver them again after a crash, so the
    /// next change set writes their row while they are out.
    out_unwritten: FxHashMap<(StreamId, u64), (Event, Option<u32>)>,
    /// Those whose row was written while out: their outcome deletes or replaces it.
    out_written: FxHashSet<(StreamId, u64)>,
    /// Decisions not yet polled (only with `Config::decisions_traced`).
    decisions: decisions::Decisions,
    /// When this engine was restored (restored events count their wait from then).
    restored_ms: u64,
}

impl Engine {
    /// A fresh engine with no history.
    pub fn new(config: Config) -> Self {
        let dedupe = DedupeWindow::new(config.dedupe_window_ids);
        Engine {
            config,
            names: PerStream::default(),
            ids: FxHashMap::default(),
            streams: PerStream::default(),
            ready: VecDeque::new(),
            express: VecDeque::new(),
            marked_streams: FxHashSet::default(),
            dependents: dependencies::Dependents::default(),
            document_waiters: FxHashMap::default(),
            gaps: BTreeSet::new(),
            delivered_streams: None,
            dedupe,
            checkpoints: CheckpointTracker::default(),
            counters: Counters::default(),
            in_flight: 0,
            next_dead_letter_id: 1,
            dirty: Vec::new(),
            pending_changed: FxHashSet::default(),
            dead_letters_put: Vec::new(),
            dead_letters_delete: Vec::new(),
            dedupe_put: Vec::new(),
            notices: VecDeque::new(),
            notices_dropped: 0,
            spare_extras: Vec::new(),
            parked_queue: VecDeque::new(),
            spilled_waiters: FxHashMap::default(),
            held: FxHashMap::default(),
            loads: VecDeque::new(),
            spill_totals: (0, 0),
            reorder_distances: ReorderDistances::default(),
            deliveries: 0,
            fences: FxHashMap::default(),
            fence_waiters: FxHashMap::default(),
            merges_to_write: Vec::new(),
            out_unwritten: FxHashMap::default(),
            out_written: FxHashSet::default(),
            decisions: decisions::Decisions::default(),
            restored_ms: 0,
        }
    }

    /// Resumes from what a store kept. `now_ms` starts the clock of restored gaps.
    pub fn restore(config: Config, snapshot: Snapshot, now_ms: u64) -> Self {
        let dedupe_window_ids = config.dedupe_window_ids;
        let mut engine = Engine::new(config);
        engine.restored_ms = now_ms;
        engine.dedupe = DedupeWindow::restore(dedupe_window_ids, snapshot.dedupe);
        engine.checkpoints = CheckpointTracker::restore(snapshot.checkpoints);
        engine.counters = snapshot.counters;
        engine.counters.stalled = 0;
        engine.next_dead_letter_id = snapshot.next_dead_letter_id.max(1);
        for record in snapshot.streams {
            let s = engine.intern(&record.stream);
            engine.streams[s].applied = record.applied;
            if let Some((target, cut)) = record.alias {
                let t = engine.intern(&target);
                engine.extra(s).alias = Some((t, cut));
            }
        }
        for (stream, version, id) in snapshot.blocking_dead_letters {
            let s = engine.intern(&stream);
            if version > engine.streams[s].applied {
                engine.mark_dead_lettered(s, version, id);
            }
        }
        for (stream, _) in snapshot.spilled {
            let s = engine.intern(&stream);
            engine.streams[s].flags.insert(SPILLED | PARKED);
        }
        for (awaited, version) in snapshot.spilled_waiters {
            let a = engine.intern(&awaited);
            engine.add_spilled_waiter(a, version);
        }
        for record in snapshot.pending {
            let s = engine.intern(&record.stream);
            engine.put_stored(s, record, 0);
        }
        for s in engine.streams.ids().collect::<Vec<_>>() {
            if engine.streams[s].extra.is_some() {
                engine.recompute_contiguous(s);
                engine.refresh_gap(s, now_ms);
                engine.schedule(s);
            }
        }
        engine
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Decision counters so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// How many [`Work`]s are out.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// How many streams the engine tracks.
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Whether nothing can progress without new input or an operator: no work is out
    /// and none is ready.
    pub fn is_quiescent(&self) -> bool {
        self.in_flight == 0
            && self.ready.is_empty()
            && self.loads.is_empty()
            && self.merges_to_write.is_empty()
    }

    /// Whether loads are out for the store to answer ([`Engine::poll_load`]).
    pub fn has_loads(&self) -> bool {
        !self.loads.is_empty()
    }

    /// Whether something can go on only after the next commit: a merge waiting for its
    /// row to be written ([`Config::merges_written_before_dispatch`]).
    pub fn awaits_commit(&self) -> bool {
        !self.merges_to_write.is_empty()
    }

    /// Records every decision for [`Engine::poll_decision`] from now on, and in the
    /// engines rebuilt from this one's configuration.
    pub fn trace_decisions(&mut self) {
        self.config.decisions_traced = true;
    }

    /// Writes each merge to the store before handing it out (see
    /// [`Config::merges_written_before_dispatch`]); kept across rebuilds, which copy the
    /// configuration.
    pub fn write_merges_before_dispatch(&mut self) {
        self.config.merges_written_before_dispatch = true;
    }

    /// Whether every delivered offset is settled.
    pub fn is_settled(&self) -> bool {
        !self.checkpoints.has_unsettled()
    }

    /// Every partition's checkpoint, as (partition, offset).
    pub fn checkpoints(&self) -> Vec<(u32, u64)> {
        self.checkpoints.checkpoints()
    }

    /// Parses raw input and handles it; what does not parse is dead-lettered with its
    /// reason (in its stream's sequence when its stream and version could be read).
    pub fn handle_bytes(
        &mut self,
        now_ms: u64,
        position: Option<SourcePosition>,
        bytes: &[u8],
    ) -> Disposition {
        self.handle_delivery(now_ms, position, bytes, None, || None)
    }

    /// Parses a broker message whose key must be its stream (Kafka's key, SQS's group
    /// id) and handles it; one whose key is another stream is dead-lettered in that
    /// stream's sequence, like any envelope that does not parse.
    pub fn handle_keyed_bytes(
        &mut self,
        now_ms: u64,
        position: Option<SourcePosition>,
        bytes: &[u8],
        key: &[u8],
    ) -> Disposition {
        self.handle_delivery(now_ms, position, bytes, Some(key), || None)
    }

    /// Parses a broker message and handles it: with a `key`, as
    /// [`Self::handle_keyed_bytes`], else as [`Self::handle_bytes`]. `origin` names the
    /// message the way its broker does (an SQS message id): asked for only when the
    /// message is dead-lettered, and then added to the reason, so that an operator can
    /// find it on the broker's side too.
    pub fn handle_delivery(
        &mut self,
        now_ms: u64,
        position: Option<SourcePosition>,
        bytes: &[u8],
        key: Option<&[u8]>,
        origin: impl FnOnce() -> Option<String>,
    ) -> Disposition {
        let refused = match parse_event(bytes, self.config.op_policy) {
            Ok(event) if key.is_none_or(|key| event.stream.as_bytes() == key) => {
                return self.handle_event(now_ms, position, event);
            }
            Ok(event) => ParseError {
                error: EnvelopeError::KeyMismatch {
                    key: String::from_utf8_lossy(key.unwrap_or_default()).into_owned(),
                    stream: event.stream.to_string(),
                },
                routing: Routing {
                    id: Some(event.id),
                    stream: Some(event.stream),
                    version: Some(event.version),
                },
            },
            Err(refused) => refused,
        };
        let mut reason = refused.error.to_string();
        if let Some(origin) = origin() {
            reason = format!("{reason} ({origin})");
        }
        self.handle_invalid(now_ms, position, bytes, refused.routing, reason)
    }

    /// Dead-letters input that failed [`parse_event`].
    fn handle_invalid(
        &mut self,
        now_ms: u64,
        position: Option<SourcePosition>,
        bytes: &[u8],
        routing: Routing,
        reason: String,
    ) -> Disposition {
        let body = String::from_utf8_lossy(bytes).into_owned();
        let mut kind = DeadLetterKind::Unroutable;
        let mut sequenced_at = None;
        if let (Some(stream), Some(version)) = (&routing.stream, routing.version) {
            let s = self.intern(stream);
            let state = &self.streams[s];
            let monotonic = state.flags.intersects(MONOTONIC);
            let occupied = state.extra.as_ref().is_some_and(|x| {
                x.slots.contains_key(&version) || x.in_flight_version == Some(version)
            });
            if version > state.applied && !monotonic && !occupied {
                kind = DeadLetterKind::Sequenced;
                sequenced_at = Some((s, version));
            }
        }
        let id = self.dead_letter(
            now_ms,
            kind,
            routing.stream,
            routing.version,
            routing.id,
            body,
            reason,
            position,
        );
        if let Some((s, version)) = sequenced_at {
            self.mark_dead_lettered(s, version, id);
            self.extend_contiguous(s);
            self.refresh_gap(s, now_ms);
            self.schedule(s);
        }
        if let Some(position) = position {
            self.checkpoints.deliver(position, true);
        }
        Disposition::DeadLettered
    }

    /// Handles one delivered event.
    pub fn handle_event(
        &mut self,
        now_ms: u64,
        position: Option<SourcePosition>,
        event: Event,
    ) -> Disposition {
        if let Some(streams) = &mut self.delivered_streams {
            streams.push(event.stream.clone());
        }
        let disposition = self.accept(now_ms, position, event);
        if let Some(position) = position {
            let waiting = matches!(disposition, Disposition::Queued | Disposition::Buffered);
            self.checkpoints.deliver(position, !waiting);
        }
        disposition
    }

    /// Reports gaps older than the gap timeout as stalled.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        while let Some(&(since, s)) = self.gaps.first() {
            if since.saturating_add(self.config.gap_timeout_ms) > now_ms {
                break;
            }
            self.gaps.remove(&(since, s));
            self.streams[s].flags.insert(STALLED);
            self.counters.stalled += 1;
            let applied = self.streams[s].applied;
            let waiting = self.streams[s]
                .extra
                .as_ref()
                .and_then(|x| x.slots.keys().next().copied())
                .unwrap_or(applied + 1);
            self.notice(Notice::Stalled {
                stream: self.names[s].clone(),
                missing: applied + 1,
                waiting,
            });
        }
    }

    /// The source has nothing more to deliver (a drained file, `--exit-when-idle`): no
    /// open gap can fill any more, so each is reported stalled now instead of at the gap
    /// timeout.
    pub fn handle_source_drained(&mut self) {
        self.handle_timeout(u64::MAX);
        self.lift_stuck_fences();
    }

    /// The next event to apply, if any stream has one ready.
    #[must_use]
    pub fn poll_work(&mut self, now_ms: u64) -> Option<Work> {
        if let Some(work) = self.express.pop_front() {
            return Some(work);
        }
        while let Some(s) = self.ready.pop_front() {
            self.streams[s].flags.remove(IN_READY);
            if let Some(work) = self.try_dispatch(now_ms, s) {
                return Some(work);
            }
        }
        None
    }

    /// When [`Engine::handle_timeout`] must next be called, if ever.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<u64> {
        self.gaps
            .first()
            .map(|(since, _)| since + self.config.gap_timeout_ms)
    }

    /// The next notice for the operator.
    #[must_use]
    pub fn poll_notice(&mut self) -> Option<Notice> {
        self.notices.pop_front()
    }

    /// How many notices were dropped because nobody polled them.
    pub fn notices_dropped(&self) -> u64 {
        self.notices_dropped
    }

    /// How far ahead of a gap events arrived since the last call (the metrics' histogram).
    pub fn take_reorder_distances(&mut self) -> ReorderDistances {
        std::mem::take(&mut self.reorder_distances)
    }

    pub(super) fn notice(&mut self, notice: Notice) {
        if self.notices.len() == NOTICES_MAX {
            self.notices.pop_front();
            self.notices_dropped += 1;
        }
        self.notices.push_back(notice);
    }
}
