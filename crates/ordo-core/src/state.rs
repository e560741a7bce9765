//! The narrow interface between the core and a store: what the core writes after each
//! batch ([`ChangeSet`]) and what it needs back to resume ([`Snapshot`]).
//!
//! A store applies a change set in the same transaction as the projection's document
//! writes, so state, positions and waiting events move together or not at all.

use std::sync::Arc;

use crate::checkpoint::SourcePosition;
use crate::counters::Counters;
use crate::envelope::Event;

/// How the core chose between waiting and applying for one stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VersionMode {
    /// Version n+1 waits for n; anything at or below the applied version is skipped.
    #[default]
    Gapless,
    /// Apply if newer than the applied version, skip otherwise; never wait.
    Monotonic,
}

/// One stream's durable position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamRecord {
    /// The stream.
    pub stream: Arc<str>,
    /// Its last applied (or operator-skipped) version; 0 before the first.
    pub applied: u64,
    /// When merged away: the stream it was merged into (not resolved) and the cut.
    pub alias: Option<(Arc<str>, u64)>,
}

/// Why an event waits in the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PendingState {
    /// Waiting for a gap to fill, or behind an earlier event of its stream that waits.
    Buffered,
    /// At the head of its stream, waiting for a dependency or a merge cut.
    Parked,
    /// A version an operator skipped before the stream reached it (no event).
    Skipped,
}

/// An event (or a skip marker) waiting in the store.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingRecord {
    /// The stream.
    pub stream: Box<str>,
    /// The version.
    pub version: u64,
    /// Why it waits.
    pub state: PendingState,
    /// The event (absent for [`PendingState::Skipped`]).
    pub event: Option<Event>,
    /// The source partition it was read from, when known: in a consumer group sharing a
    /// store, only the member owning that partition restores it.
    pub partition: Option<u32>,
    /// For a parked event: the stream and version it waits for. The store indexes it, so
    /// that parked events can stay in the store (spilled) until what they wait for applies.
    pub awaits: Option<(Box<str>, u64)>,
}

/// Waiting events the engine asks the store for (see [`crate::Engine::poll_load`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Load {
    /// The waiting events of every spilled stream whose parked head waits for `awaited`
    /// at a version up to `through` (it has just applied that far).
    Waiters {
        /// The stream waited for.
        awaited: Arc<str>,
        /// Its applied version now.
        through: u64,
    },
    /// Every waiting event of one spilled stream (a new event arrived for it).
    Stream(Arc<str>),
}

/// The store's answer to a [`Load`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Loaded {
    /// The waiting events (and skip markers) of the streams asked for.
    pub records: Vec<PendingRecord>,
    /// For [`Load::Waiters`]: the lowest version of the awaited stream that spilled
    /// events still wait for beyond `through`, if any.
    pub waiters_remaining_min: Option<u64>,
}

/// What kind of dead letter an entry is, which decides what replay and skip do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeadLetterKind {
    /// The stream waits at this entry's version until it is replayed or skipped.
    Sequenced,
    /// Nothing could be routed (no valid stream or version); blocks nothing.
    Unroutable,
    /// Another event with a different id already holds this version.
    Conflict,
    /// The stream's pending bound was full; the stream will stall at this version.
    Overflow,
}

impl DeadLetterKind {
    /// The kind's name as stores and the CLI write it.
    pub fn name(self) -> &'static str {
        match self {
            DeadLetterKind::Sequenced => "sequenced",
            DeadLetterKind::Unroutable => "unroutable",
            DeadLetterKind::Conflict => "conflict",
            DeadLetterKind::Overflow => "overflow",
        }
    }

    /// Parses [`Self::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "sequenced" => DeadLetterKind::Sequenced,
            "unroutable" => DeadLetterKind::Unroutable,
            "conflict" => DeadLetterKind::Conflict,
            "overflow" => DeadLetterKind::Overflow,
            _ => return None,
        })
    }
}

/// One entry of the dead-letter queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// Unique, increasing entry number.
    pub id: u64,
    /// What the entry blocks and what replay means.
    pub kind: DeadLetterKind,
    /// The event's stream, when known.
    pub stream: Option<Box<str>>,
    /// The event's version, when known.
    pub version: Option<u64>,
    /// The event's id, when known.
    pub event_id: Option<Box<str>>,
    /// The event as JSON text, or the raw input when it could not be parsed.
    pub body: String,
    /// Why it was dead-lettered.
    pub reason: String,
    /// Where it was read, when it came from a source.
    pub position: Option<SourcePosition>,
    /// When (caller's clock, ms).
    pub at_ms: u64,
}

/// Everything the core changed since the last [`crate::Engine::take_changes`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChangeSet {
    /// Streams whose position or alias changed.
    pub streams: Vec<StreamRecord>,
    /// Waiting events to insert or overwrite, keyed by (stream, version).
    pub pending_put: Vec<PendingRecord>,
    /// Waiting events no longer waiting.
    pub pending_delete: Vec<(Box<str>, u64)>,
    /// New dead letters.
    pub dead_letters_put: Vec<DeadLetter>,
    /// Dead letters replayed or skipped.
    pub dead_letters_delete: Vec<u64>,
    /// Ids added to the dedupe window, as (sequence, hash).
    pub dedupe_put: Vec<(u64, u64)>,
    /// Every dedupe entry below this sequence is forgotten.
    pub dedupe_floor: u64,
    /// Partition checkpoints that moved, as (partition, offset).
    pub checkpoints: Vec<(u32, u64)>,
    /// The counters now.
    pub counters: Counters,
    /// The next dead-letter id to hand out.
    pub next_dead_letter_id: u64,
}

impl ChangeSet {
    /// Whether nothing but the counters would be written.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
            && self.pending_put.is_empty()
            && self.pending_delete.is_empty()
            && self.dead_letters_put.is_empty()
            && self.dead_letters_delete.is_empty()
            && self.dedupe_put.is_empty()
            && self.checkpoints.is_empty()
    }
}

/// What the core needs to resume: the durable state as a store read it back.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Every stream's position and alias.
    pub streams: Vec<StreamRecord>,
    /// Every waiting event and skip marker.
    pub pending: Vec<PendingRecord>,
    /// Sequenced dead letters, as (stream, version, dead-letter id): their streams wait.
    pub blocking_dead_letters: Vec<(Box<str>, u64, u64)>,
    /// The dedupe window, as (sequence, hash).
    pub dedupe: Vec<(u64, u64)>,
    /// Partition checkpoints, as (partition, offset).
    pub checkpoints: Vec<(u32, u64)>,
    /// The counters at the last commit.
    pub counters: Counters,
    /// The next dead-letter id to hand out.
    pub next_dead_letter_id: u64,
    /// Streams whose head is parked, with their partition: their waiting events stay in
    /// the store (not in `pending`) until what they wait for applies.
    pub spilled: Vec<(Box<str>, Option<u32>)>,
    /// For each stream spilled streams wait for, the lowest version any of them needs.
    pub spilled_waiters: Vec<(Box<str>, u64)>,
}

impl Snapshot {
    /// Keeps only the waiting events a member owning `partitions` should restore: those
    /// read from one of them, and those whose partition is unknown (operator replays,
    /// skip markers). Another member's waiting events stay in the store for it.
    pub fn retain_partitions(&mut self, partitions: &[u32]) {
        self.pending.retain(|record| {
            record
                .partition
                .is_none_or(|partition| partitions.contains(&partition))
        });
        self.spilled.retain(|(_, partition)| {
            partition.is_none_or(|partition| partitions.contains(&partition))
        });
    }
}
