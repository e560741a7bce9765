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

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::checkpoint::{CheckpointTracker, SourcePosition};
use crate::counters::{Counters, ReorderDistances};
use crate::dedupe::{id_hash, DedupeWindow};
use crate::envelope::{parse_event, Dependency, Event, Op, OpPolicy, ParseError};
use crate::limits::{
    DEDUPE_WINDOW_IDS_DEFAULT, GAP_TIMEOUT_MS_DEFAULT, LONG_PARKED_MS_DEFAULT,
    PARKED_STREAMS_IN_MEMORY_DEFAULT, STREAM_PENDING_EVENTS_DEFAULT,
};
use crate::state::{
    ChangeSet, DeadLetter, DeadLetterKind, Load, Loaded, PendingRecord, PendingState, Snapshot,
    StreamRecord, VersionMode,
};

/// Most notices kept for [`Engine::poll_notice`]; older ones are dropped and counted.
pub const NOTICES_MAX: usize = 4096;

/// Dense index of a stream inside one engine.
type StreamId = u32;

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
            stream_pending_events_max: STREAM_PENDING_EVENTS_DEFAULT,
            gap_timeout_ms: GAP_TIMEOUT_MS_DEFAULT,
            op_policy: OpPolicy::Document,
            parked_streams_in_memory_max: PARKED_STREAMS_IN_MEMORY_DEFAULT,
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

/// Why an operator action was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OperatorError {
    /// The stream is unknown to this engine.
    UnknownStream(String),
    /// The stream has no gap to skip.
    NoGap(String),
    /// The version named is not the stream's next missing one.
    NotNext {
        /// The stream.
        stream: String,
        /// The version named.
        version: u64,
        /// The stream's next version (its applied version + 1).
        next: u64,
    },
    /// The version named is not missing: an event holds it (waiting or being applied).
    NotMissing {
        /// The stream.
        stream: String,
        /// The version named.
        version: u64,
    },
    /// The dead letter is not what the engine has at that stream and version.
    NotBlocking {
        /// The entry's id.
        id: u64,
    },
    /// The dead letter's body is still not a valid event.
    StillInvalid {
        /// The entry's id.
        id: u64,
        /// Why it does not parse.
        reason: String,
    },
    /// The event cannot be taken back now (its stream is full); try again later.
    StreamFull {
        /// The stream.
        stream: String,
    },
}

impl fmt::Display for OperatorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OperatorError::UnknownStream(s) => write!(f, "unknown stream `{s}`"),
            OperatorError::NoGap(s) => write!(f, "stream `{s}` has no gap to skip"),
            OperatorError::NotNext {
                stream,
                version,
                next,
            } => write!(
                f,
                "version {version} is not `{stream}`'s next missing version (that is {next})"
            ),
            OperatorError::NotMissing { stream, version } => write!(
                f,
                "version {version} of `{stream}` is not missing: an event holds it"
            ),
            OperatorError::NotBlocking { id } => {
                write!(
                    f,
                    "dead letter {id} is not the entry holding its stream's version"
                )
            }
            OperatorError::StillInvalid { id, reason } => {
                write!(f, "dead letter {id} is still not a valid event: {reason}")
            }
            OperatorError::StreamFull { stream } => {
                write!(
                    f,
                    "stream `{stream}` holds its maximum of waiting events; retry later"
                )
            }
        }
    }
}

impl std::error::Error for OperatorError {}

/// What replaying a dead letter did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayOutcome {
    /// The event is back in its stream, in line to be applied.
    Requeued,
    /// The version guard skipped it: its stream is already past that version.
    AlreadyApplied,
    /// It was dead-lettered again (its version is held by another event, or the stream
    /// is full); the new entry says why.
    DeadLetteredAgain,
}

/// One waiting event, for `parked list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitingEvent {
    /// The stream.
    pub stream: Arc<str>,
    /// The version.
    pub version: u64,
    /// The event id (absent for a skip marker).
    pub id: Option<Box<str>>,
    /// What it waits for, in words.
    pub reason: String,
    /// What holds it, at the root (an event behind a waiting head shares the head's).
    pub waits_for: WaitsFor,
}

/// What holds a waiting event, at the root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WaitsFor {
    /// A version of its own stream that was not delivered (a gap).
    Gap {
        /// The first missing version.
        version: u64,
        /// Whether the gap outlived the gap timeout.
        stalled: bool,
    },
    /// A version of another stream (an `after`, a merge's cut).
    Dependency {
        /// The stream.
        stream: Arc<str>,
        /// The version it must apply.
        version: u64,
    },
    /// A dead letter of its own stream (sequenced).
    DeadLetter {
        /// The entry.
        id: u64,
    },
    /// A merge its stream was folded into, or is a source of.
    Merge {
        /// The merge's stream.
        stream: Arc<str>,
        /// The merge's version.
        version: u64,
    },
    /// An operator paused its stream.
    Paused,
    /// Nothing: it goes at the next turn.
    Nothing,
}

impl WaitsFor {
    /// The kind, as `parked list` names it.
    pub fn kind(&self) -> &'static str {
        match self {
            WaitsFor::Gap { .. } => "gap",
            WaitsFor::Dependency { .. } => "dependency",
            WaitsFor::DeadLetter { .. } => "dead-letter",
            WaitsFor::Merge { .. } => "merge",
            WaitsFor::Paused => "paused",
            WaitsFor::Nothing => "nothing",
        }
    }
}

const IN_FLIGHT: u16 = 1;
const IN_READY: u16 = 1 << 1;
const DIRTY: u16 = 1 << 2;
const MONOTONIC: u16 = 1 << 3;
const DOCUMENT_BUSY: u16 = 1 << 4;
const STALLED: u16 = 1 << 5;
/// The head is parked or dead-lettered: everything behind it is made durable.
const WAITING: u16 = 1 << 6;
const HAS_WAITERS: u16 = 1 << 7;
/// Parked, with its waiting events only in the store (see [`Engine::poll_load`]).
const SPILLED: u16 = 1 << 8;
/// In `parked_queue`.
const IN_PARKED_QUEUE: u16 = 1 << 9;
/// A [`Load::Stream`] for it is out.
const LOAD_REQUESTED: u16 = 1 << 10;
/// A merge known to the engine names it as a source (see `merge_fence`).
const FENCED: u16 = 1 << 11;
/// Streams wait for a merge of this stream to apply (see `merge_fence`).
const HAS_FENCE_WAITERS: u16 = 1 << 12;
/// An operator paused it (see `pause`): nothing of it is dispatched.
const PAUSED: u16 = 1 << 13;

mod decisions;
mod merge_fence;
mod pause;

pub use decisions::{Decision, DecisionKind, DECISIONS_MAX};

/// Per-stream state, kept small: idle streams are the common case.
#[derive(Debug, Default)]
struct StreamState {
    applied: u64,
    flags: u16,
    extra: Option<Box<StreamExtra>>,
}

#[derive(Debug, Default)]
struct StreamExtra {
    /// Waiting events by version (all above `applied`).
    slots: BTreeMap<u64, Slot>,
    /// Every version in `applied+1..=contiguous_through` is in a slot or in flight.
    contiguous_through: u64,
    gap_since_ms: Option<u64>,
    /// Merged into (target, cut).
    alias: Option<(StreamId, u64)>,
    in_flight_version: Option<u64>,
}

#[derive(Debug)]
enum Slot {
    Event(Box<Pending>),
    DeadLettered(u64),
    Skipped,
}

#[derive(Debug)]
struct Pending {
    event: Event,
    /// The event's offset while it is unsettled. A waiting event's offset settles when the
    /// change set that writes its row is taken; an applied one's when it is applied.
    position: Option<SourcePosition>,
    /// The partition it was read from, kept after its offset settles: members of a group
    /// sharing a store restore only the waiting events of their own partitions.
    home_partition: Option<u32>,
    /// Must be written to the store if it is still waiting at the next commit.
    durable: bool,
    /// The store holds its row.
    written: bool,
    parked: bool,
    /// When it was delivered, in deliveries to this engine (0: restored from the store).
    /// Only a merge delivered before it can fence it (see `merge_fence`).
    seq: u64,
    /// Counted `parked` at delivery (an `after` named a version not yet delivered); it
    /// counts `released` when it goes out.
    counted_parked: bool,
    /// When it was delivered (caller's clock): a long-parked release is noticed.
    delivered_ms: u64,
}

/// The ordering core. See the module documentation for the call order.
#[derive(Debug)]
pub struct Engine {
    config: Config,
    names: Vec<Arc<str>>,
    ids: FxHashMap<Arc<str>, StreamId>,
    streams: Vec<StreamState>,
    ready: VecDeque<StreamId>,
    /// Works decided at delivery (the express lane, see `accept`), handed out first.
    express: VecDeque<Work>,
    /// Streams that got a dead-letter marker in their slots (a superset: pruned by
    /// [`Engine::dead_letter_markers`]), so that listing the markers does not walk every
    /// stream.
    marked_streams: FxHashSet<StreamId>,
    /// Awaited stream → (version needed, waiting stream).
    dependents: FxHashMap<StreamId, Vec<(u64, StreamId)>>,
    /// Busy document → streams waiting for it.
    document_waiters: FxHashMap<StreamId, Vec<StreamId>>,
    /// Open gaps not yet stalled, by start time.
    gaps: BTreeSet<(u64, StreamId)>,
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

/// Most released per-stream extras kept for reuse.
const SPARE_EXTRAS_MAX: usize = 1024;

impl Engine {
    /// A fresh engine with no history.
    pub fn new(config: Config) -> Self {
        let dedupe = DedupeWindow::new(config.dedupe_window_ids);
        Engine {
            config,
            names: Vec::new(),
            ids: FxHashMap::default(),
            streams: Vec::new(),
            ready: VecDeque::new(),
            express: VecDeque::new(),
            marked_streams: FxHashSet::default(),
            dependents: FxHashMap::default(),
            document_waiters: FxHashMap::default(),
            gaps: BTreeSet::new(),
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
            engine.streams[s as usize].applied = record.applied;
            if let Some((target, cut)) = record.alias {
                let t = engine.intern(&target);
                engine.extra(s).alias = Some((t, cut));
            }
        }
        for (stream, version, id) in snapshot.blocking_dead_letters {
            let s = engine.intern(&stream);
            if version > engine.streams[s as usize].applied {
                engine.mark_dead_lettered(s, version, id);
            }
        }
        for (stream, _) in snapshot.spilled {
            let s = engine.intern(&stream);
            engine.streams[s as usize].flags |= SPILLED | WAITING;
        }
        for (awaited, version) in snapshot.spilled_waiters {
            let a = engine.intern(&awaited);
            engine.add_spilled_waiter(a, version);
        }
        for record in snapshot.pending {
            let s = engine.intern(&record.stream);
            engine.put_stored(s, record, 0);
        }
        for s in 0..engine.streams.len() as StreamId {
            if engine.streams[s as usize].extra.is_some() {
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

    // ----- inputs -----

    /// Parses raw input and handles it; what does not parse is dead-lettered with its
    /// reason (in its stream's sequence when its stream and version could be read).
    pub fn handle_bytes(
        &mut self,
        now_ms: u64,
        position: Option<SourcePosition>,
        bytes: &[u8],
    ) -> Disposition {
        match parse_event(bytes, self.config.op_policy) {
            Ok(event) => self.handle_event(now_ms, position, event),
            Err(refused) => self.handle_invalid(now_ms, position, bytes, refused),
        }
    }

    /// Dead-letters input that failed [`parse_event`].
    pub fn handle_invalid(
        &mut self,
        now_ms: u64,
        position: Option<SourcePosition>,
        bytes: &[u8],
        refused: ParseError,
    ) -> Disposition {
        let body = String::from_utf8_lossy(bytes).into_owned();
        let reason = refused.error.to_string();
        let routing = refused.routing;
        let mut kind = DeadLetterKind::Unroutable;
        let mut sequenced_at = None;
        if let (Some(stream), Some(version)) = (&routing.stream, routing.version) {
            let s = self.intern(stream);
            let state = &self.streams[s as usize];
            let monotonic = state.flags & MONOTONIC != 0;
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
        let disposition = self.accept(now_ms, position, event);
        if let Some(position) = position {
            let waiting = matches!(disposition, Disposition::Queued | Disposition::Buffered);
            self.checkpoints.deliver(position, !waiting);
        }
        disposition
    }

    fn accept(
        &mut self,
        now_ms: u64,
        position: Option<SourcePosition>,
        event: Event,
    ) -> Disposition {
        let s = self.intern(&event.stream);
        let hash = id_hash(&event.id);
        let version = event.version;
        let applied = self.streams[s as usize].applied;
        if version <= applied {
            return self.skip(self.dedupe.contains(hash), &event);
        }
        if self.streams[s as usize].flags & SPILLED != 0 {
            // Its waiting events are in the store: decide once they are back.
            self.request_stream_load(s);
            let held = self.held.entry(s).or_default();
            // A redelivery of an offset already held is the same delivery: holding it
            // twice would let the second copy, a duplicate once loaded, settle the offset
            // while the first still waits in memory.
            if position.is_some() && held.iter().any(|(p, _)| *p == position) {
                // Counted here; its offset's entry stays with the held copy.
                self.counters.duplicate += 1;
                return Disposition::Duplicate;
            }
            held.push((position, event));
            return Disposition::Buffered;
        }
        // The same version already delivered (waiting, out, dead-lettered or skipped): a
        // redelivery, or a second writer. Decided as for an applied version, so that
        // whether the first had applied yet (batching, timing) changes nothing: the first
        // claimant keeps the version, the other is stale.
        if let Some(extra) = self.streams[s as usize].extra.as_deref() {
            let holder = match extra.slots.get(&version) {
                Some(Slot::Event(pending)) => Some(Some(pending.event.id.clone())),
                Some(Slot::DeadLettered(_)) | Some(Slot::Skipped) => Some(None),
                None if extra.in_flight_version == Some(version) => Some(None),
                None => None,
            };
            if let Some(holder_id) = holder {
                let seen = holder_id.is_some_and(|id| id == event.id) || self.dedupe.contains(hash);
                return self.skip(seen, &event);
            }
        }
        if let Some(sequence) = self.dedupe.insert(hash) {
            self.dedupe_put.push((sequence, hash));
        }
        // The express lane: the next version of an idle stream (nothing waiting, nothing
        // in flight, no alias, its document free) that waits for nothing is decided here,
        // without a slot and a trip through the ready queue — most deliveries of a
        // healthy stream. It ends in the state `try_dispatch` would have left.
        let state = &self.streams[s as usize];
        if state.extra.is_none()
            && state.flags
                & (WAITING
                    | SPILLED
                    | MONOTONIC
                    | IN_FLIGHT
                    | IN_READY
                    | DOCUMENT_BUSY
                    | FENCED
                    | PAUSED)
                == 0
            && version == applied + 1
            && position.is_some()
            && event.after.is_empty()
            && !matches!(event.op, Op::Merge { .. })
        {
            self.decide(s, &event, DecisionKind::Queued);
            let extra = self.extra(s);
            extra.in_flight_version = Some(version);
            extra.contiguous_through = version;
            self.streams[s as usize].flags |= IN_FLIGHT | DOCUMENT_BUSY;
            self.in_flight += 1;
            self.express.push_back(Work {
                event,
                redirect: None,
                action: Action::Apply,
                stream: s,
                position,
                written: false,
                target: s,
                source_ids: Vec::new(),
            });
            return Disposition::Queued;
        }
        let pending_count = self.streams[s as usize]
            .extra
            .as_ref()
            .map_or(0, |x| x.slots.len());
        // What extends the run from the applied version is always taken while the stream
        // flows: it is what lets the waiting ones drain. The bound is for what waits.
        let state = &self.streams[s as usize];
        let flows_next = state.flags & (WAITING | PAUSED) == 0
            && version
                <= state
                    .extra
                    .as_ref()
                    .map_or(applied, |x| x.contiguous_through.max(applied))
                    + 1;
        if pending_count >= self.config.stream_pending_events_max && !flows_next {
            let reason = format!(
                "stream `{}` already holds {pending_count} waiting events (the bound); \
                 replay this entry once the stream has caught up",
                event.stream
            );
            self.dead_letter_event(now_ms, DeadLetterKind::Overflow, &event, reason, position);
            return Disposition::DeadLettered;
        }
        let state = &self.streams[s as usize];
        let monotonic = state.flags & MONOTONIC != 0;
        let waiting = state.flags & (WAITING | PAUSED) != 0;
        let contiguous_through = state
            .extra
            .as_ref()
            .map_or(applied, |x| x.contiguous_through.max(applied));
        // Without a source position nothing would re-deliver the event after a crash, so
        // it must be durable from the start.
        let in_line =
            !waiting && (monotonic || version == contiguous_through + 1) && position.is_some();
        let gap = !monotonic && version > contiguous_through + 1;
        // Counted by what was delivered before it, never by what happened to be applied
        // yet: the counters are a function of the deliveries alone, whatever the batching.
        if gap {
            self.counters.buffered += 1;
            self.reorder_distances
                .record(version - contiguous_through - 1);
        }
        let counted_parked = self.awaits_undelivered(&event);
        if counted_parked {
            self.counters.parked += 1;
        }
        if self.config.decisions_traced {
            let kind = if gap {
                DecisionKind::Buffered
            } else if let Some(d) = counted_parked.then(|| self.first_unmet(&event)).flatten() {
                DecisionKind::Parked {
                    on: Arc::from(&*d.stream),
                    version: d.version,
                }
            } else {
                DecisionKind::Queued
            };
            self.decide(s, &event, kind);
        }
        self.deliveries += 1;
        let seq = self.deliveries;
        let merge = matches!(event.op, Op::Merge { .. });
        let extra = self.extra(s);
        extra.slots.insert(
            version,
            Slot::Event(Box::new(Pending {
                event,
                position,
                home_partition: position.map(|p| p.partition),
                durable: !in_line,
                written: false,
                parked: false,
                seq,
                counted_parked,
                delivered_ms: now_ms,
            })),
        );
        if merge {
            self.fence_merge_sources(s, version, seq);
        }
        if !in_line {
            self.pending_changed.insert((s, version));
        }
        self.extend_contiguous(s);
        self.refresh_gap(s, now_ms);
        self.schedule(s);
        if in_line {
            Disposition::Queued
        } else {
            Disposition::Buffered
        }
    }

    fn skip(&mut self, seen: bool, event: &Event) -> Disposition {
        let s = self.ids[&*event.stream];
        if seen {
            self.counters.duplicate += 1;
            self.decide(s, event, DecisionKind::Duplicate);
            Disposition::Duplicate
        } else {
            self.counters.stale += 1;
            self.decide(s, event, DecisionKind::Stale);
            self.notice(Notice::Stale {
                stream: self.names[self.ids[&*event.stream] as usize].clone(),
                version: event.version,
                id: event.id.clone(),
            });
            Disposition::Stale
        }
    }

    /// Takes back a [`Work`] with the projection's verdict.
    pub fn handle_outcome(&mut self, now_ms: u64, mut work: Work, outcome: Outcome) {
        debug_assert!(work.locked().count() >= 1);
        let s = work.stream;
        let target = work.target;
        let source_ids = std::mem::take(&mut work.source_ids);
        let version = work.event.version;
        {
            let state = &mut self.streams[s as usize];
            assert!(
                state.flags & IN_FLIGHT != 0,
                "outcome for a stream with no work out"
            );
            let extra = state
                .extra
                .as_mut()
                .expect("in-flight stream has extra state");
            assert_eq!(
                extra.in_flight_version,
                Some(version),
                "outcome for another version"
            );
            extra.in_flight_version = None;
            state.flags &= !IN_FLIGHT;
        }
        self.in_flight -= 1;
        for document in std::iter::once(target).chain(source_ids.iter().copied()) {
            self.streams[document as usize].flags &= !DOCUMENT_BUSY;
        }
        // Rare (replays out across a commit): no lookups on the common path.
        if !self.out_unwritten.is_empty() {
            self.out_unwritten.remove(&(s, version));
        }
        if !self.out_written.is_empty() && self.out_written.remove(&(s, version)) {
            work.written = true;
        }
        match outcome {
            Outcome::Applied => self.applied(work),
            Outcome::Rejected { reason } => {
                let id = self.dead_letter_event(
                    now_ms,
                    DeadLetterKind::Sequenced,
                    &work.event,
                    reason,
                    None,
                );
                self.mark_dead_lettered(s, version, id);
                if matches!(work.action, Action::Merge { .. }) {
                    self.lift_merge_fences(s, version);
                }
                if let Some(position) = work.position {
                    self.checkpoints.settle(position);
                }
                if work.written {
                    self.pending_changed.insert((s, version));
                }
                self.block(s);
            }
        }
        for document in std::iter::once(target).chain(source_ids) {
            self.wake_document_waiters(document);
        }
        self.refresh_gap(s, now_ms);
        self.schedule(s);
        self.release_if_idle(s);
    }

    fn applied(&mut self, work: Work) {
        let s = work.stream;
        let version = work.event.version;
        self.counters.applied += 1;
        if self.config.decisions_traced {
            let kind = DecisionKind::Applied {
                document: self.names[work.target as usize].clone(),
                redirected: work.redirected(),
            };
            self.decide(s, &work.event, kind);
        }
        if let Some(position) = work.position {
            self.checkpoints.settle(position);
        }
        if work.written {
            self.pending_changed.insert((s, version));
        }
        if work.redirected() {
            self.counters.redirected += 1;
            self.counters.late_after_merge += 1;
            self.notice(Notice::LateAfterMerge {
                stream: self.names[s as usize].clone(),
                version,
                target: self.names[work.target as usize].clone(),
                redirected: true,
            });
        }
        if let Action::Merge { sources } = &work.action {
            self.lift_merge_fences(s, version);
            for source in sources {
                let source_id = self.ids[source];
                let cut = work
                    .event
                    .cut_for(source)
                    .expect("merge dispatched only with a cut for every source");
                let source_applied = self.streams[source_id as usize].applied;
                let late = source_applied.saturating_sub(cut);
                self.counters.late_after_merge += late;
                // One notice per counted event: each went to the source before the merge.
                for version in cut + 1..=source_applied {
                    self.notice(Notice::LateAfterMerge {
                        stream: source.clone(),
                        version,
                        target: self.names[s as usize].clone(),
                        redirected: false,
                    });
                }
                self.extra(source_id).alias = Some((s, cut));
                self.mark_dirty(source_id);
            }
        }
        self.advance(s, version);
    }

    /// Moves a stream's applied version forward and releases whatever waited for it.
    fn advance(&mut self, s: StreamId, version: u64) {
        let state = &mut self.streams[s as usize];
        state.applied = state.applied.max(version);
        let applied = state.applied;
        let monotonic = state.flags & MONOTONIC != 0;
        if let Some(extra) = state.extra.as_mut() {
            extra.contiguous_through = extra.contiguous_through.max(applied);
            if monotonic {
                // Anything still waiting at or below the new version is now stale.
                let old: Vec<u64> = extra.slots.range(..=applied).map(|(v, _)| *v).collect();
                for v in old {
                    if let Some(Slot::Event(pending)) = extra.slots.remove(&v) {
                        self.counters.stale += 1;
                        if let Some(position) = pending.position {
                            self.checkpoints.settle(position);
                        }
                        if pending.written {
                            self.pending_changed.insert((s, v));
                        }
                    }
                }
            }
        }
        self.mark_dirty(s);
        if self.streams[s as usize].flags & HAS_WAITERS != 0 {
            self.release_dependents(s, applied);
        }
        self.wake_fence_waiters(s);
        self.wake_spilled_waiters(s);
    }

    fn release_dependents(&mut self, s: StreamId, applied: u64) {
        let Some(waiters) = self.dependents.get_mut(&s) else {
            return;
        };
        let mut released = Vec::new();
        waiters.retain(|&(needed, waiter)| {
            if needed <= applied {
                released.push(waiter);
                false
            } else {
                true
            }
        });
        if waiters.is_empty() {
            self.dependents.remove(&s);
            self.streams[s as usize].flags &= !HAS_WAITERS;
        }
        for waiter in released {
            self.unblock(waiter);
        }
    }

    /// Reports gaps older than the gap timeout as stalled.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        while let Some(&(since, s)) = self.gaps.first() {
            if since.saturating_add(self.config.gap_timeout_ms) > now_ms {
                break;
            }
            self.gaps.remove(&(since, s));
            self.streams[s as usize].flags |= STALLED;
            self.counters.stalled += 1;
            let applied = self.streams[s as usize].applied;
            let waiting = self.streams[s as usize]
                .extra
                .as_ref()
                .and_then(|x| x.slots.keys().next().copied())
                .unwrap_or(applied + 1);
            self.notice(Notice::Stalled {
                stream: self.names[s as usize].clone(),
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

    // ----- outputs -----

    /// The next event to apply, if any stream has one ready.
    #[must_use]
    pub fn poll_work(&mut self, now_ms: u64) -> Option<Work> {
        if let Some(work) = self.express.pop_front() {
            return Some(work);
        }
        while let Some(s) = self.ready.pop_front() {
            self.streams[s as usize].flags &= !IN_READY;
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

    /// Everything changed since the last call, for the store to commit.
    pub fn take_changes(&mut self) -> ChangeSet {
        let mut changes = ChangeSet {
            counters: self.counters,
            next_dead_letter_id: self.next_dead_letter_id,
            dedupe_floor: self.dedupe.floor(),
            ..ChangeSet::default()
        };
        for s in std::mem::take(&mut self.dirty) {
            let state = &mut self.streams[s as usize];
            state.flags &= !DIRTY;
            let alias = state
                .extra
                .as_ref()
                .and_then(|x| x.alias)
                .map(|(t, cut)| (self.names[t as usize].clone(), cut));
            changes.streams.push(StreamRecord {
                stream: self.names[s as usize].clone(),
                applied: state.applied,
                alias,
            });
        }
        let mut changed: Vec<(StreamId, u64)> = self.pending_changed.drain().collect();
        changed.sort_unstable();
        // Parked rows say what they wait for (filled in below, once no slot is borrowed).
        let mut parked_rows: Vec<(usize, StreamId, Vec<Dependency>)> = Vec::new();
        for (s, version) in changed {
            let name: Box<str> = (*self.names[s as usize]).into();
            let Some(extra) = self.streams[s as usize].extra.as_mut() else {
                changes.pending_delete.push((name, version));
                continue;
            };
            if extra.in_flight_version == Some(version) {
                // Its outcome decides: applied deletes the row, rejected replaces it.
                continue;
            }
            match extra.slots.get_mut(&version) {
                Some(Slot::Event(pending)) if pending.durable => {
                    pending.written = true;
                    if let Some(position) = pending.position.take() {
                        self.checkpoints.settle(position);
                    }
                    if pending.parked {
                        parked_rows.push((
                            changes.pending_put.len(),
                            s,
                            pending.event.after.clone(),
                        ));
                    }
                    changes.pending_put.push(PendingRecord {
                        awaits: None,
                        stream: name,
                        version,
                        state: if pending.parked {
                            PendingState::Parked
                        } else {
                            PendingState::Buffered
                        },
                        event: Some(pending.event.clone()),
                        partition: pending.home_partition,
                    })
                }
                Some(Slot::Skipped) => changes.pending_put.push(PendingRecord {
                    stream: name,
                    version,
                    state: PendingState::Skipped,
                    event: None,
                    partition: None,
                    awaits: None,
                }),
                _ => changes.pending_delete.push((name, version)),
            }
        }
        // Out with no position and no row: written now, so a crash cannot lose them.
        for ((s, version), (event, partition)) in std::mem::take(&mut self.out_unwritten) {
            self.out_written.insert((s, version));
            changes.pending_put.push(PendingRecord {
                stream: (*self.names[s as usize]).into(),
                version,
                state: PendingState::Buffered,
                event: Some(event),
                partition,
                awaits: None,
            });
        }
        for (row, s, after) in parked_rows {
            if self.holds_merge(s) {
                // Read back at a restart instead of spilled: its fences must hold.
                continue;
            }
            changes.pending_put[row].awaits = after
                .iter()
                .find(|d| self.applied_version(&d.stream) < d.version)
                .map(|d| (d.stream.clone(), d.version));
        }
        changes.dead_letters_put = std::mem::take(&mut self.dead_letters_put);
        changes.dead_letters_delete = std::mem::take(&mut self.dead_letters_delete);
        changes.dedupe_put = std::mem::take(&mut self.dedupe_put);
        // After the pending rows above: their offsets settle in this very change set.
        changes.checkpoints = self.checkpoints.take_changes();
        // Every parked stream's rows are in this change set or an earlier one (nothing is
        // left in `pending_changed`): the longest-parked may now leave memory.
        debug_assert!(self.pending_changed.is_empty());
        // Their rows are in this change set: they go once it is committed (the caller
        // commits before it polls again).
        for s in std::mem::take(&mut self.merges_to_write) {
            self.schedule(s);
        }
        self.spill_parked();
        changes
    }

    // ----- operator actions -----

    /// Passes over the missing versions in front of a stalled (or gapped) stream.
    pub fn skip_gap(&mut self, now_ms: u64, stream: &str) -> Result<u64, OperatorError> {
        let s = *self
            .ids
            .get(stream)
            .ok_or_else(|| OperatorError::UnknownStream(stream.into()))?;
        if self.streams[s as usize].flags & SPILLED != 0 {
            // Parked, so no gap in front of it.
            return Err(OperatorError::NoGap(stream.into()));
        }
        let applied = self.streams[s as usize].applied;
        let first = self.streams[s as usize]
            .extra
            .as_ref()
            .and_then(|x| x.slots.keys().next().copied());
        let in_flight = self.streams[s as usize].flags & IN_FLIGHT != 0;
        match first {
            Some(first) if first > applied + 1 && !in_flight => {
                let skipped = first - applied - 1;
                self.counters.skipped += skipped;
                self.advance(s, first - 1);
                self.extend_contiguous(s);
                self.refresh_gap(s, now_ms);
                self.schedule(s);
                Ok(skipped)
            }
            _ => Err(OperatorError::NoGap(stream.into())),
        }
    }

    /// Passes over one version known lost (`ordo parked skip`): `version` must be the
    /// stream's next (applied + 1), held by no event, with later events waiting behind it.
    /// Counted as `skipped`; what it unblocks is released.
    pub fn skip_missing(
        &mut self,
        now_ms: u64,
        stream: &str,
        version: u64,
    ) -> Result<(), OperatorError> {
        let s = *self
            .ids
            .get(stream)
            .ok_or_else(|| OperatorError::UnknownStream(stream.into()))?;
        let state = &self.streams[s as usize];
        let next = state.applied + 1;
        if version != next {
            return Err(OperatorError::NotNext {
                stream: stream.into(),
                version,
                next,
            });
        }
        let held = state.flags & IN_FLIGHT != 0
            || state
                .extra
                .as_ref()
                .is_some_and(|x| x.slots.contains_key(&version));
        if held {
            return Err(OperatorError::NotMissing {
                stream: stream.into(),
                version,
            });
        }
        let waits_behind = state
            .extra
            .as_ref()
            .is_some_and(|x| x.slots.keys().next().is_some_and(|&v| v > version));
        if state.flags & SPILLED != 0 || !waits_behind {
            // Nothing waits for it: skipping would turn a late arrival into a stale one.
            return Err(OperatorError::NoGap(stream.into()));
        }
        self.counters.skipped += 1;
        self.advance(s, version);
        self.extend_contiguous(s);
        self.refresh_gap(s, now_ms);
        self.schedule(s);
        Ok(())
    }

    /// Skips a dead letter: a sequenced entry's version is passed over and its stream goes
    /// on; any other entry is simply removed.
    pub fn skip_dead_letter(
        &mut self,
        now_ms: u64,
        entry: &DeadLetter,
    ) -> Result<(), OperatorError> {
        if entry.kind == DeadLetterKind::Sequenced {
            let s = self.sequenced_slot(entry)?;
            let version = entry.version.expect("sequenced entries have a version");
            let applied = self.streams[s as usize].applied;
            if version == applied + 1 {
                self.extra(s).slots.remove(&version);
                self.counters.skipped += 1;
                self.advance(s, version);
                self.unblock(s);
            } else {
                self.extra(s).slots.insert(version, Slot::Skipped);
                self.pending_changed.insert((s, version));
            }
            self.refresh_gap(s, now_ms);
        }
        self.dead_letters_delete.push(entry.id);
        Ok(())
    }

    /// Puts a dead letter's event back in its stream, version-guarded: an event its stream
    /// is already past is a counted no-op.
    pub fn replay_dead_letter(
        &mut self,
        now_ms: u64,
        entry: &DeadLetter,
    ) -> Result<ReplayOutcome, OperatorError> {
        let event = parse_event(entry.body.as_bytes(), self.config.op_policy).map_err(|e| {
            OperatorError::StillInvalid {
                id: entry.id,
                reason: e.to_string(),
            }
        })?;
        let sequenced = entry.kind == DeadLetterKind::Sequenced;
        let s = if sequenced {
            self.sequenced_slot(entry)?
        } else {
            self.intern(&event.stream)
        };
        // A sequenced entry frees its own slot when it is taken back.
        let pending_count = self.streams[s as usize]
            .extra
            .as_ref()
            .map_or(0, |x| x.slots.len());
        if pending_count >= self.config.stream_pending_events_max + usize::from(sequenced) {
            return Err(OperatorError::StreamFull {
                stream: event.stream.to_string(),
            });
        }
        if sequenced {
            self.extra(s).slots.remove(&event.version);
            self.unblock(s);
        }
        self.dead_letters_delete.push(entry.id);
        // No source position: the event is written to the store in the same commit that
        // deletes the dead letter, so a crash cannot lose it.
        let version = event.version;
        let disposition = self.handle_event(now_ms, None, event);
        if let Some(Slot::Event(pending)) = self.streams[s as usize]
            .extra
            .as_mut()
            .and_then(|x| x.slots.get_mut(&version))
        {
            pending.home_partition = entry.position.map(|p| p.partition);
        }
        Ok(match disposition {
            Disposition::Duplicate | Disposition::Stale => ReplayOutcome::AlreadyApplied,
            Disposition::DeadLettered => ReplayOutcome::DeadLetteredAgain,
            Disposition::Queued | Disposition::Buffered => ReplayOutcome::Requeued,
        })
    }

    fn sequenced_slot(&mut self, entry: &DeadLetter) -> Result<StreamId, OperatorError> {
        let not_blocking = OperatorError::NotBlocking { id: entry.id };
        let (Some(stream), Some(version)) = (&entry.stream, entry.version) else {
            return Err(not_blocking);
        };
        let s = *self.ids.get(&**stream).ok_or(not_blocking.clone())?;
        match self.streams[s as usize]
            .extra
            .as_ref()
            .and_then(|x| x.slots.get(&version))
        {
            Some(Slot::DeadLettered(id)) if *id == entry.id => Ok(s),
            _ => Err(not_blocking),
        }
    }

    // ----- other members' progress -----

    /// Whether parked events wait for other streams (an `after` or a merge cut). A member
    /// of a group sharing a store then reads those streams' positions when another member
    /// may have moved them ([`Self::awaited_streams`], [`Self::handle_progress`]).
    pub fn is_awaiting(&self) -> bool {
        !self.dependents.is_empty() || !self.spilled_waiters.is_empty()
    }

    /// The streams that parked events wait for, sorted (see [`Self::is_awaiting`]).
    pub fn awaited_streams(&self) -> Vec<Arc<str>> {
        let mut awaited: Vec<Arc<str>> = self
            .dependents
            .keys()
            .chain(self.spilled_waiters.keys())
            .map(|&s| self.names[s as usize].clone())
            .collect();
        awaited.sort();
        awaited.dedup();
        awaited
    }

    /// Another member (sharing the store) moved a stream this engine does not own: its
    /// applied version and alias as the store has them now. Parked events waiting for it
    /// are released. Ignored for a stream with an event in flight here (this engine owns
    /// it; a store conflict, not this call, settles a disagreement). Nothing is marked for
    /// writing: the record came from the store. Returns whether the stream moved.
    pub fn handle_progress(&mut self, now_ms: u64, record: &StreamRecord) -> bool {
        let Some(&s) = self.ids.get(&*record.stream) else {
            return false;
        };
        if self.streams[s as usize].flags & IN_FLIGHT != 0 {
            return false;
        }
        let mut moved = false;
        if let Some((target, cut)) = &record.alias {
            let known = self.streams[s as usize]
                .extra
                .as_ref()
                .is_some_and(|x| x.alias.is_some());
            if !known {
                let t = self.intern(target);
                self.extra(s).alias = Some((t, *cut));
                moved = true;
            }
        }
        if record.applied > self.streams[s as usize].applied {
            moved = true;
            self.streams[s as usize].applied = record.applied;
            if let Some(extra) = self.streams[s as usize].extra.as_mut() {
                // What waits here at or below the new position belongs to the member that
                // applied it; forget it without touching its rows.
                let passed: Vec<u64> = extra
                    .slots
                    .range(..=record.applied)
                    .map(|(v, _)| *v)
                    .collect();
                for version in passed {
                    extra.slots.remove(&version);
                }
                self.recompute_contiguous(s);
                self.refresh_gap(s, now_ms);
            }
            if self.streams[s as usize].flags & HAS_WAITERS != 0 {
                self.release_dependents(s, record.applied);
            }
            self.wake_spilled_waiters(s);
            self.schedule(s);
            self.release_if_idle(s);
        }
        moved
    }

    // ----- spilled streams -----

    /// The next load the store must answer with [`Self::handle_loaded`]: waiting events
    /// of spilled streams that may go on now, or of a spilled stream a new event arrived
    /// for. Answer every load before the next [`Self::take_changes`].
    #[must_use]
    pub fn poll_load(&mut self) -> Option<Load> {
        self.loads.pop_front()
    }

    /// The store's answer to a [`Load`]: the spilled streams' waiting events come back
    /// into memory and go on (or park again), and events held for them are accepted.
    pub fn handle_loaded(&mut self, now_ms: u64, load: &Load, loaded: Loaded) {
        self.spill_totals.1 += 1;
        let mut streams: Vec<StreamId> = Vec::new();
        if let Load::Stream(stream) = load {
            if let Some(&s) = self.ids.get(&**stream) {
                streams.push(s);
            }
        }
        let mut records = loaded.records;
        records.sort_by(|a, b| (&a.stream, a.version).cmp(&(&b.stream, b.version)));
        for record in records {
            let Some(&s) = self.ids.get(&*record.stream) else {
                continue;
            };
            if self.streams[s as usize].flags & SPILLED == 0 {
                // Already in memory (loaded by an earlier answer), or not this engine's.
                continue;
            }
            if streams.last() != Some(&s) {
                streams.push(s);
            }
            // Back from a spill: when it came is unknown here, so it counts as after
            // every merge (a merge on its way fences it).
            self.put_stored(s, record, u64::MAX);
        }
        streams.sort_unstable();
        streams.dedup();
        for s in streams {
            if self.streams[s as usize].flags & SPILLED == 0 {
                continue;
            }
            self.streams[s as usize].flags &= !(SPILLED | LOAD_REQUESTED);
            if self.streams[s as usize].extra.is_some() {
                self.recompute_contiguous(s);
                self.refresh_gap(s, now_ms);
            }
            // Dispatch decides again: go on, or park on what is still missing.
            self.unblock(s);
            for (position, event) in self.held.remove(&s).unwrap_or_default() {
                let disposition = self.accept(now_ms, position, event);
                let waiting = matches!(disposition, Disposition::Queued | Disposition::Buffered);
                if let (Some(position), false) = (position, waiting) {
                    self.checkpoints.settle(position);
                }
            }
            self.release_if_idle(s);
        }
        if let (Load::Waiters { awaited, .. }, Some(version)) = (load, loaded.waiters_remaining_min)
        {
            let a = self.intern(awaited);
            self.add_spilled_waiter(a, version);
        }
    }

    /// How far ahead of a gap events arrived since the last call (the metrics' histogram).
    pub fn take_reorder_distances(&mut self) -> ReorderDistances {
        std::mem::take(&mut self.reorder_distances)
    }

    /// Streams spilled and loads answered since this engine was created or restored.
    pub fn spill_totals(&self) -> (u64, u64) {
        self.spill_totals
    }

    /// The ids of the dead letters streams wait behind here (sequenced entries). A member
    /// of a group compares them with the store: an operator may have replayed or skipped
    /// one from another process.
    pub fn dead_letter_markers(&mut self) -> Vec<u64> {
        let mut markers = Vec::new();
        let streams = &self.streams;
        self.marked_streams.retain(|&s| {
            let before = markers.len();
            if let Some(extra) = streams[s as usize].extra.as_ref() {
                markers.extend(extra.slots.values().filter_map(|slot| match slot {
                    Slot::DeadLettered(id) => Some(*id),
                    _ => None,
                }));
            }
            // A stream whose markers are all gone (replayed, skipped, passed) is dropped.
            markers.len() > before
        });
        markers.sort_unstable();
        markers
    }

    fn mark_dead_lettered(&mut self, s: StreamId, version: u64, id: u64) {
        self.extra(s).slots.insert(version, Slot::DeadLettered(id));
        self.marked_streams.insert(s);
    }

    /// Asks for every spilled stream to be loaded back ([`Self::poll_load`]): for views
    /// that list every waiting event (`ordo parked list`), not for consuming.
    pub fn request_all_spilled(&mut self) {
        for s in 0..self.streams.len() as StreamId {
            if self.streams[s as usize].flags & SPILLED != 0 {
                self.request_stream_load(s);
            }
        }
    }

    /// How many streams are spilled (their waiting events only in the store).
    pub fn spilled_streams(&self) -> usize {
        self.streams
            .iter()
            .filter(|state| state.flags & SPILLED != 0)
            .count()
    }

    /// Puts a waiting event read back from the store into its stream's slots (its id
    /// joins the dedupe window, so a redelivered copy counts as a duplicate). A row at or
    /// below the applied version was applied in the commit that should have deleted it:
    /// it is deleted now.
    fn put_stored(&mut self, s: StreamId, record: PendingRecord, seq: u64) {
        if record.version <= self.streams[s as usize].applied {
            self.pending_changed.insert((s, record.version));
            return;
        }
        let version = record.version;
        let slot = match (record.state, record.event) {
            (PendingState::Skipped, _) | (_, None) => Slot::Skipped,
            (state, Some(event)) => {
                self.dedupe.insert(id_hash(&event.id));
                Slot::Event(Box::new(Pending {
                    event,
                    position: None,
                    home_partition: record.partition,
                    durable: true,
                    written: true,
                    parked: state == PendingState::Parked,
                    seq,
                    counted_parked: false,
                    delivered_ms: self.restored_ms,
                }))
            }
        };
        let merge = matches!(&slot, Slot::Event(p) if matches!(p.event.op, Op::Merge { .. }));
        self.extra(s).slots.insert(version, slot);
        if merge {
            self.fence_merge_sources(s, version, 0);
        }
    }

    fn request_stream_load(&mut self, s: StreamId) {
        if self.streams[s as usize].flags & LOAD_REQUESTED == 0 {
            self.streams[s as usize].flags |= LOAD_REQUESTED;
            self.loads
                .push_back(Load::Stream(self.names[s as usize].clone()));
        }
    }

    /// Spilled streams wait for `version` of `awaited`; if it applied already, load them.
    fn add_spilled_waiter(&mut self, awaited: StreamId, version: u64) {
        if self.streams[awaited as usize].applied >= version {
            self.loads.push_back(Load::Waiters {
                awaited: self.names[awaited as usize].clone(),
                through: self.streams[awaited as usize].applied,
            });
            return;
        }
        let needed = self.spilled_waiters.entry(awaited).or_insert(version);
        *needed = (*needed).min(version);
    }

    fn wake_spilled_waiters(&mut self, s: StreamId) {
        if self.spilled_waiters.is_empty() {
            return;
        }
        let applied = self.streams[s as usize].applied;
        if self
            .spilled_waiters
            .get(&s)
            .is_some_and(|&needed| needed <= applied)
        {
            self.spilled_waiters.remove(&s);
            self.loads.push_back(Load::Waiters {
                awaited: self.names[s as usize].clone(),
                through: applied,
            });
        }
    }

    /// Moves the longest-parked streams out of memory while more than the configured
    /// number are parked in memory. Only a stream whose every waiting event is written
    /// (and settled) and whose head is parked on an unmet dependency qualifies.
    fn spill_parked(&mut self) {
        let max = self.config.parked_streams_in_memory_max;
        if self.parked_queue.len() <= max {
            return;
        }
        let mut spilled: FxHashMap<StreamId, FxHashSet<StreamId>> = FxHashMap::default();
        let mut kept = VecDeque::new();
        while self.parked_queue.len() > max {
            let Some(s) = self.parked_queue.pop_front() else {
                break;
            };
            self.streams[s as usize].flags &= !IN_PARKED_QUEUE;
            let Some(dependency) = self.spillable(s) else {
                // Moved on, or not (yet) spillable: still parked ones stay candidates.
                if self.streams[s as usize].flags & WAITING != 0
                    && self.streams[s as usize].flags & SPILLED == 0
                    && self.parked_head(s)
                {
                    kept.push_back(s);
                }
                continue;
            };
            let awaited = self.intern(&dependency.stream);
            spilled.entry(awaited).or_default().insert(s);
            self.add_spilled_waiter(awaited, dependency.version);
            self.spill_totals.0 += 1;
            let state = &mut self.streams[s as usize];
            state.flags |= SPILLED;
            if let Some(mut extra) = state.extra.take() {
                extra.slots.clear();
                extra.contiguous_through = 0;
                if self.spare_extras.len() < SPARE_EXTRAS_MAX {
                    self.spare_extras.push(extra);
                }
            }
        }
        for s in kept.into_iter().rev() {
            self.streams[s as usize].flags |= IN_PARKED_QUEUE;
            self.parked_queue.push_front(s);
        }
        for (awaited, gone) in spilled {
            if let Some(waiters) = self.dependents.get_mut(&awaited) {
                waiters.retain(|(_, waiter)| !gone.contains(waiter));
                if waiters.is_empty() {
                    self.dependents.remove(&awaited);
                    self.streams[awaited as usize].flags &= !HAS_WAITERS;
                }
            }
        }
    }

    fn parked_head(&self, s: StreamId) -> bool {
        self.streams[s as usize]
            .extra
            .as_ref()
            .and_then(|x| x.slots.first_key_value())
            .is_some_and(|(_, slot)| matches!(slot, Slot::Event(p) if p.parked))
    }

    /// The dependency a parked stream waits for, if the stream may be spilled now.
    fn spillable(&self, s: StreamId) -> Option<Dependency> {
        let state = &self.streams[s as usize];
        if state.flags & (IN_FLIGHT | IN_READY | SPILLED) != 0 || state.flags & WAITING == 0 {
            return None;
        }
        let extra = state.extra.as_ref()?;
        if extra.alias.is_some() || extra.in_flight_version.is_some() || self.holds_merge(s) {
            return None;
        }
        let all_written = extra.slots.values().all(|slot| match slot {
            Slot::Event(p) => p.written && p.position.is_none(),
            Slot::Skipped => true,
            Slot::DeadLettered(_) => false,
        });
        if !all_written {
            return None;
        }
        let (_, Slot::Event(head)) = extra.slots.first_key_value()? else {
            return None;
        };
        if !head.parked {
            return None;
        }
        self.first_unmet(&head.event)
    }

    // ----- views -----

    /// Every waiting event with what it waits for, sorted by stream and version.
    pub fn waiting(&self) -> Vec<WaitingEvent> {
        let mut all = Vec::new();
        for (s, state) in self.streams.iter().enumerate() {
            let Some(extra) = state.extra.as_ref() else {
                continue;
            };
            let name = &self.names[s];
            // What holds everything behind it: (in words, at the root).
            let mut blocker: Option<(String, WaitsFor)> = (state.flags & PAUSED != 0)
                .then(|| (format!("`{name}` paused by an operator"), WaitsFor::Paused));
            let mut expected = state.applied + 1;
            for (&version, slot) in &extra.slots {
                if extra.in_flight_version == Some(expected) {
                    expected += 1;
                }
                let monotonic = state.flags & MONOTONIC != 0;
                let gap = !monotonic && version > expected;
                if gap && blocker.is_none() {
                    let stalled = state.flags & STALLED != 0;
                    blocker = Some((
                        format!(
                            "gap: `{name}` is missing version {expected}{}",
                            if stalled { " (stalled)" } else { "" }
                        ),
                        WaitsFor::Gap {
                            version: expected,
                            stalled,
                        },
                    ));
                }
                match slot {
                    Slot::Event(pending) => {
                        let (reason, waits_for) = match &blocker {
                            Some((b, root)) => (format!("waits behind {b}"), root.clone()),
                            None if pending.parked || version == expected => {
                                self.head_wait(s as StreamId, version, pending)
                            }
                            None => ("ready to apply".into(), WaitsFor::Nothing),
                        };
                        if blocker.is_none() && waits_for != WaitsFor::Nothing {
                            let what = if pending.parked { "parked" } else { "waiting" };
                            blocker = Some((
                                format!("{what} `{name}` version {version}"),
                                waits_for.clone(),
                            ));
                        }
                        all.push(WaitingEvent {
                            stream: name.clone(),
                            version,
                            id: Some(pending.event.id.clone()),
                            reason,
                            waits_for,
                        });
                    }
                    Slot::DeadLettered(id) => {
                        if blocker.is_none() {
                            blocker = Some((
                                format!("dead letter {id} at `{name}` version {version}"),
                                WaitsFor::DeadLetter { id: *id },
                            ));
                        }
                    }
                    Slot::Skipped => {}
                }
                expected = version + 1;
            }
        }
        all.sort_by(|a, b| (&a.stream, a.version).cmp(&(&b.stream, b.version)));
        all
    }

    /// What the head `version` of `s` waits for, in words and at the root.
    fn head_wait(&self, s: StreamId, version: u64, pending: &Pending) -> (String, WaitsFor) {
        if let Some(d) = self.first_unmet(&pending.event) {
            let reason = self.dependency_reason(&d);
            let stream = self.ids.get(&*d.stream).map_or_else(
                || Arc::from(&*d.stream),
                |&a| self.names[a as usize].clone(),
            );
            return (
                reason,
                WaitsFor::Dependency {
                    stream,
                    version: d.version,
                },
            );
        }
        if let Some(d) = self.effective_cut_unmet(s, version, &pending.event) {
            let stream = self.names[self.ids[&*d.stream] as usize].clone();
            return (
                format!(
                    "waits for `{}` to apply version {} (delivered before this merge, it goes first)",
                    d.stream, d.version
                ),
                WaitsFor::Dependency {
                    stream,
                    version: d.version,
                },
            );
        }
        self.merge_wait_reason(s, version, pending)
    }

    fn dependency_reason(&self, dependency: &Dependency) -> String {
        let mut reason = format!(
            "waits for `{}` to apply version {}",
            dependency.stream, dependency.version
        );
        if let Some(&d) = self.ids.get(&*dependency.stream) {
            let state = &self.streams[d as usize];
            reason.push_str(&format!(" (it has applied {})", state.applied));
            if let Some(Slot::DeadLettered(id)) = state
                .extra
                .as_ref()
                .and_then(|x| x.slots.get(&(state.applied + 1)))
            {
                reason.push_str(&format!("; its next version is dead letter {id}"));
            }
        }
        reason
    }

    /// Each tracked stream's applied version and final merge target, sorted by stream.
    pub fn stream_positions(&self) -> Vec<(Arc<str>, u64, Option<Arc<str>>)> {
        let mut all: Vec<_> = (0..self.streams.len() as StreamId)
            .map(|s| {
                let target = self.resolve(s);
                let merged = (target != s).then(|| self.names[target as usize].clone());
                (
                    self.names[s as usize].clone(),
                    self.streams[s as usize].applied,
                    merged,
                )
            })
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// The dead letter a stream waits behind at `version`, if any.
    pub fn dead_letter_at(&self, stream: &str, version: u64) -> Option<u64> {
        let &s = self.ids.get(stream)?;
        match self.streams[s as usize].extra.as_ref()?.slots.get(&version) {
            Some(Slot::DeadLettered(id)) => Some(*id),
            _ => None,
        }
    }

    /// A stream's applied version (0 when unknown).
    pub fn applied_version(&self, stream: &str) -> u64 {
        self.ids
            .get(stream)
            .map_or(0, |&s| self.streams[s as usize].applied)
    }

    /// Where a stream's events land: itself, or the end of its alias chain.
    pub fn resolve_document(&self, stream: &str) -> Option<Arc<str>> {
        self.ids
            .get(stream)
            .map(|&s| self.names[self.resolve(s) as usize].clone())
    }

    // ----- internals -----

    fn intern(&mut self, name: &str) -> StreamId {
        if let Some(&s) = self.ids.get(name) {
            return s;
        }
        let s = StreamId::try_from(self.streams.len()).expect("fewer than 2^32 streams");
        let name: Arc<str> = Arc::from(name);
        let mut state = StreamState::default();
        if self.config.mode_for(&name) == VersionMode::Monotonic {
            state.flags |= MONOTONIC;
        }
        self.ids.insert(name.clone(), s);
        self.names.push(name);
        self.streams.push(state);
        s
    }

    fn extra(&mut self, s: StreamId) -> &mut StreamExtra {
        let state = &mut self.streams[s as usize];
        if state.extra.is_none() {
            let mut extra = self.spare_extras.pop().unwrap_or_default();
            extra.contiguous_through = state.applied;
            state.extra = Some(extra);
        }
        state.extra.as_mut().expect("set above")
    }

    /// Gives an idle stream's extra state back: idle streams are the common case and
    /// must stay small.
    fn release_if_idle(&mut self, s: StreamId) {
        let state = &mut self.streams[s as usize];
        let idle = state.extra.as_ref().is_some_and(|x| {
            x.slots.is_empty()
                && x.alias.is_none()
                && x.in_flight_version.is_none()
                && x.gap_since_ms.is_none()
        });
        if idle {
            let extra = state.extra.take().expect("checked above");
            if self.spare_extras.len() < SPARE_EXTRAS_MAX {
                self.spare_extras.push(extra);
            }
        }
    }

    fn mark_dirty(&mut self, s: StreamId) {
        let state = &mut self.streams[s as usize];
        if state.flags & DIRTY == 0 {
            state.flags |= DIRTY;
            self.dirty.push(s);
        }
    }

    fn schedule(&mut self, s: StreamId) {
        let state = &mut self.streams[s as usize];
        // A spilled stream's events are in the store: nothing of it goes before they are
        // loaded back.
        if state.flags & (IN_READY | IN_FLIGHT | WAITING | SPILLED | PAUSED) != 0 {
            return;
        }
        let Some(extra) = state.extra.as_ref() else {
            return;
        };
        let has_head = match extra.slots.first_key_value() {
            Some((&version, _)) => state.flags & MONOTONIC != 0 || version == state.applied + 1,
            None => false,
        };
        if has_head {
            state.flags |= IN_READY;
            self.ready.push_back(s);
        }
    }

    fn recompute_contiguous(&mut self, s: StreamId) {
        let applied = self.streams[s as usize].applied;
        self.extra(s).contiguous_through = applied;
        self.extend_contiguous(s);
    }

    fn extend_contiguous(&mut self, s: StreamId) {
        let applied = self.streams[s as usize].applied;
        let extra = self.extra(s);
        let mut through = extra.contiguous_through.max(applied);
        while extra.slots.contains_key(&(through + 1))
            || extra.in_flight_version == Some(through + 1)
        {
            through += 1;
        }
        extra.contiguous_through = through;
    }

    /// Opens or closes the stream's gap timer to match its state.
    fn refresh_gap(&mut self, s: StreamId, now_ms: u64) {
        let state = &mut self.streams[s as usize];
        let Some(extra) = state.extra.as_mut() else {
            return;
        };
        let gapped = state.flags & MONOTONIC == 0
            && extra.in_flight_version.is_none()
            && extra
                .slots
                .first_key_value()
                .is_some_and(|(&version, _)| version > state.applied + 1);
        match (gapped, extra.gap_since_ms) {
            (true, None) => {
                extra.gap_since_ms = Some(now_ms);
                self.gaps.insert((now_ms, s));
            }
            (false, Some(since)) => {
                extra.gap_since_ms = None;
                self.gaps.remove(&(since, s));
                if state.flags & STALLED != 0 {
                    state.flags &= !STALLED;
                    self.counters.stalled -= 1;
                }
            }
            _ => {}
        }
    }

    /// The head cannot move: everything behind it is made durable so that its offsets
    /// settle at the next commit and the checkpoint is not held back by a wait of unknown
    /// length.
    fn block(&mut self, s: StreamId) {
        self.streams[s as usize].flags |= WAITING;
        self.make_durable(s);
    }

    fn unblock(&mut self, s: StreamId) {
        self.streams[s as usize].flags &= !WAITING;
        self.schedule(s);
    }

    /// Whether an `after` of `event` names a version not delivered yet: not applied, not
    /// waiting, not out (a spilled stream's waiting versions count as not delivered).
    fn awaits_undelivered(&self, event: &Event) -> bool {
        event.after.iter().any(|d| {
            let Some(&a) = self.ids.get(&*d.stream) else {
                return true;
            };
            let state = &self.streams[a as usize];
            if state.applied >= d.version {
                return false;
            }
            !state.extra.as_ref().is_some_and(|x| {
                x.in_flight_version == Some(d.version) || x.slots.contains_key(&d.version)
            })
        })
    }

    fn first_unmet(&self, event: &Event) -> Option<Dependency> {
        event
            .after
            .iter()
            .find(|d| self.applied_version(&d.stream) < d.version)
            .cloned()
    }

    /// Follows aliases to the end. Merges refuse cycles, so the chain ends.
    fn resolve(&self, mut s: StreamId) -> StreamId {
        while let Some((target, _)) = self.streams[s as usize]
            .extra
            .as_ref()
            .and_then(|x| x.alias)
        {
            s = target;
        }
        s
    }

    fn try_dispatch(&mut self, now_ms: u64, s: StreamId) -> Option<Work> {
        let state = &self.streams[s as usize];
        if state.flags & (IN_FLIGHT | WAITING | PAUSED) != 0 {
            return None;
        }
        let monotonic = state.flags & MONOTONIC != 0;
        let applied = state.applied;
        let (version, slot) = state.extra.as_ref()?.slots.first_key_value()?;
        let version = *version;
        if !monotonic && version != applied + 1 {
            return None;
        }
        let pending = match slot {
            Slot::DeadLettered(_) => {
                self.block(s);
                return None;
            }
            Slot::Skipped => {
                self.extra(s).slots.remove(&version);
                self.pending_changed.insert((s, version));
                self.counters.skipped += 1;
                self.advance(s, version);
                self.schedule(s);
                return None;
            }
            Slot::Event(pending) => pending,
        };
        // A merge must name a cut for each source before anything else is judged.
        if let Some(reason) = pending.event.merge_without_cut() {
            self.reject_head(now_ms, s, version, reason);
            return None;
        }
        if let Some(dependency) = self.first_unmet(&pending.event) {
            self.park(s, version, dependency);
            return None;
        }
        if let Some(dependency) = self.effective_cut_unmet(s, version, &pending.event) {
            self.park(s, version, dependency);
            return None;
        }
        let seq = pending.seq;
        let unwritten_merge = matches!(pending.event.op, Op::Merge { .. }) && !pending.written;
        let own_sources: Vec<Box<str>> = match &pending.event.op {
            Op::Merge { from } => from.clone(),
            _ => Vec::new(),
        };
        if self.streams[s as usize].flags & FENCED != 0 || self.resolve(s) != s {
            if let Some((target, merge_version)) =
                self.merge_fence_for(s, version, seq, &own_sources)
            {
                self.decide_slot(
                    s,
                    version,
                    DecisionKind::WaitsForMerge {
                        target: self.names[target as usize].clone(),
                        version: merge_version,
                    },
                );
                self.wait_for_merge(s, target, merge_version);
                return None;
            }
            self.prune_stale_fences(s);
        }
        if unwritten_merge && self.config.merges_written_before_dispatch {
            self.write_merge_first(s, version);
            return None;
        }
        let mut action = Action::Apply;
        let target = self.resolve(s);
        let mut source_ids = Vec::new();
        let pending = match self.streams[s as usize]
            .extra
            .as_ref()
            .and_then(|x| x.slots.get(&version))
        {
            Some(Slot::Event(pending)) => pending,
            _ => unreachable!("head slot checked above"),
        };
        if let Op::Merge { from } = &pending.event.op {
            let mut sources = Vec::with_capacity(from.len());
            for source in from {
                let source_id = self.ids.get(&**source).copied();
                let refusal = match source_id {
                    Some(id) if self.resolve(id) != id => Some(format!(
                        "source `{source}` is already merged into `{}`",
                        self.names[self.resolve(id) as usize]
                    )),
                    Some(id) if id == target => Some(format!(
                        "alias cycle: `{}` is already merged into `{source}`",
                        pending.event.stream
                    )),
                    // The cut was met, so the source is known.
                    None => unreachable!("a source whose cut was met is tracked"),
                    Some(id) => {
                        sources.push(self.names[id as usize].clone());
                        source_ids.push(id);
                        None
                    }
                };
                if let Some(reason) = refusal {
                    self.reject_head(now_ms, s, version, reason);
                    return None;
                }
            }
            action = Action::Merge { sources };
        }
        let locked = std::iter::once(target).chain(source_ids.iter().copied());
        if let Some(busy) = locked
            .clone()
            .find(|&d| self.streams[d as usize].flags & DOCUMENT_BUSY != 0)
        {
            self.document_waiters.entry(busy).or_default().push(s);
            return None;
        }
        for d in locked {
            self.streams[d as usize].flags |= DOCUMENT_BUSY;
        }
        let extra = self.extra(s);
        let Some(Slot::Event(pending)) = extra.slots.remove(&version) else {
            unreachable!("head slot checked above");
        };
        extra.in_flight_version = Some(version);
        self.streams[s as usize].flags |= IN_FLIGHT;
        self.in_flight += 1;
        let pending = *pending;
        if pending.counted_parked {
            self.counters.released += 1;
            self.decide(s, &pending.event, DecisionKind::Released);
            let waited_ms = now_ms.saturating_sub(pending.delivered_ms);
            if waited_ms >= self.config.long_parked_ms {
                self.notice(Notice::Released {
                    stream: self.names[s as usize].clone(),
                    version,
                    waited_ms,
                });
            }
        }
        if pending.position.is_none() && !pending.written {
            self.out_unwritten.insert(
                (s, version),
                (pending.event.clone(), pending.home_partition),
            );
        }
        Some(Work {
            event: pending.event,
            redirect: (target != s).then(|| self.names[target as usize].clone()),
            action,
            stream: s,
            position: pending.position,
            written: pending.written,
            target,
            source_ids,
        })
    }

    /// Holds a merge until the next change set has written it (see
    /// [`Config::merges_written_before_dispatch`]).
    fn write_merge_first(&mut self, s: StreamId, version: u64) {
        if let Some(Slot::Event(pending)) = self.extra(s).slots.get_mut(&version) {
            pending.durable = true;
        }
        self.pending_changed.insert((s, version));
        if !self.merges_to_write.contains(&s) {
            self.merges_to_write.push(s);
        }
    }

    fn park(&mut self, s: StreamId, version: u64, dependency: Dependency) {
        let awaited = self.intern(&dependency.stream);
        if let Some(Slot::Event(pending)) = self.extra(s).slots.get_mut(&version) {
            pending.parked = true;
            // Parked events are durable whatever they were: the wait may be long.
            pending.durable = true;
        }
        self.pending_changed.insert((s, version));
        self.dependents
            .entry(awaited)
            .or_default()
            .push((dependency.version, s));
        self.streams[awaited as usize].flags |= HAS_WAITERS;
        if self.streams[s as usize].flags & IN_PARKED_QUEUE == 0 {
            self.streams[s as usize].flags |= IN_PARKED_QUEUE;
            self.parked_queue.push_back(s);
        }
        self.block(s);
    }

    /// Dead-letters the head of a stream in sequence: the stream waits behind it.
    fn reject_head(&mut self, now_ms: u64, s: StreamId, version: u64, reason: String) {
        let Some(Slot::Event(pending)) = self.extra(s).slots.remove(&version) else {
            unreachable!("rejecting a head event that is not there");
        };
        if matches!(pending.event.op, Op::Merge { .. }) {
            self.lift_merge_fences(s, version);
        }
        if let Some(position) = pending.position {
            self.checkpoints.settle(position);
        }
        let id = self.dead_letter_event(
            now_ms,
            DeadLetterKind::Sequenced,
            &pending.event,
            reason,
            None,
        );
        self.mark_dead_lettered(s, version, id);
        self.pending_changed.insert((s, version));
        self.block(s);
    }

    fn wake_document_waiters(&mut self, document: StreamId) {
        if let Some(waiters) = self.document_waiters.remove(&document) {
            for waiter in waiters {
                self.schedule(waiter);
            }
        }
    }

    fn dead_letter_event(
        &mut self,
        now_ms: u64,
        kind: DeadLetterKind,
        event: &Event,
        reason: String,
        position: Option<SourcePosition>,
    ) -> u64 {
        if self.config.decisions_traced {
            if let Some(&s) = self.ids.get(&*event.stream) {
                let entry = self.next_dead_letter_id;
                self.decide(s, event, DecisionKind::DeadLettered { entry });
            }
        }
        self.dead_letter(
            now_ms,
            kind,
            Some(event.stream.clone()),
            Some(event.version),
            Some(event.id.clone()),
            event.to_json_string(),
            reason,
            position,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn dead_letter(
        &mut self,
        now_ms: u64,
        kind: DeadLetterKind,
        stream: Option<Box<str>>,
        version: Option<u64>,
        event_id: Option<Box<str>>,
        body: String,
        reason: String,
        position: Option<SourcePosition>,
    ) -> u64 {
        let id = self.next_dead_letter_id;
        self.next_dead_letter_id += 1;
        self.counters.dead_lettered += 1;
        self.notice(Notice::DeadLettered {
            id,
            stream: stream.as_deref().map(Arc::from),
            version,
            kind,
            reason: reason.clone(),
        });
        self.dead_letters_put.push(DeadLetter {
            id,
            kind,
            stream,
            version,
            event_id,
            body,
            reason,
            position,
            at_ms: now_ms,
        });
        id
    }

    fn notice(&mut self, notice: Notice) {
        if self.notices.len() == NOTICES_MAX {
            self.notices.pop_front();
            self.notices_dropped += 1;
        }
        self.notices.push_back(notice);
    }
}
