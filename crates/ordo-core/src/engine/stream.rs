//! What the engine keeps per stream, and the small decisions about one stream's state:
//! whether it is ready, where its run of contiguous versions ends, whether its gap timer
//! runs, whether its head is blocked, and where its aliases lead.

use std::collections::BTreeMap;
use std::ops::{BitOr, Index, IndexMut};

use std::sync::Arc;

use crate::checkpoint::SourcePosition;
use crate::envelope::Event;
use crate::state::VersionMode;

use super::Engine;

/// Dense index of a stream inside one engine: its row in every [`PerStream`] table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct StreamId(u32);

/// One entry per stream the engine knows, indexed by [`StreamId`]. Streams are never
/// removed, so an id stays valid for the engine's life.
#[derive(Debug)]
pub(super) struct PerStream<T>(Vec<T>);

impl<T> Default for PerStream<T> {
    fn default() -> Self {
        PerStream(Vec::new())
    }
}

impl<T> PerStream<T> {
    /// How many streams.
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    /// Adds the next stream's entry; its id is the table's old length. Every table grows
    /// together (`intern`), so the ids agree.
    pub(super) fn push(&mut self, value: T) -> StreamId {
        let id = StreamId(u32::try_from(self.0.len()).expect("fewer than 2^32 streams"));
        self.0.push(value);
        id
    }

    /// Every id, in order.
    pub(super) fn ids(&self) -> impl Iterator<Item = StreamId> {
        (0..self.0.len() as u32).map(StreamId)
    }

    /// Every entry with its id, in order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (StreamId, &T)> {
        self.0
            .iter()
            .enumerate()
            .map(|(i, v)| (StreamId(i as u32), v))
    }

    /// Every entry.
    pub(super) fn values(&self) -> impl Iterator<Item = &T> {
        self.0.iter()
    }
}

impl<T> Index<StreamId> for PerStream<T> {
    type Output = T;
    fn index(&self, s: StreamId) -> &T {
        &self.0[s.0 as usize]
    }
}

impl<T> IndexMut<StreamId> for PerStream<T> {
    fn index_mut(&mut self, s: StreamId) -> &mut T {
        &mut self.0[s.0 as usize]
    }
}

/// What holds a stream or marks it, one bit each: the per-stream state must stay small.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct StreamFlags(u16);

impl StreamFlags {
    /// Whether any flag of `other` is set.
    pub(super) fn intersects(self, other: StreamFlags) -> bool {
        self.0 & other.0 != 0
    }

    /// Sets every flag of `other`.
    pub(super) fn insert(&mut self, other: StreamFlags) {
        self.0 |= other.0;
    }

    /// Clears every flag of `other`.
    pub(super) fn remove(&mut self, other: StreamFlags) {
        self.0 &= !other.0;
    }

    const fn union(self, other: StreamFlags) -> StreamFlags {
        StreamFlags(self.0 | other.0)
    }
}

impl BitOr for StreamFlags {
    type Output = StreamFlags;
    fn bitor(self, other: StreamFlags) -> StreamFlags {
        self.union(other)
    }
}

/// A work of it is out (its `in_flight_version`).
pub(super) const IN_FLIGHT: StreamFlags = StreamFlags(1);
/// In the ready queue.
pub(super) const IN_READY: StreamFlags = StreamFlags(1 << 1);
/// Its record is in the next change set.
pub(super) const DIRTY: StreamFlags = StreamFlags(1 << 2);
/// Versioned monotonically: gaps are allowed, lower versions are stale.
pub(super) const MONOTONIC: StreamFlags = StreamFlags(1 << 3);
/// Its document is locked by a work that is out (its own or a redirected one).
pub(super) const DOCUMENT_BUSY: StreamFlags = StreamFlags(1 << 4);
/// Its gap outlived the gap timeout.
pub(super) const STALLED: StreamFlags = StreamFlags(1 << 5);
/// Its head waits for another stream's version: an `after`, or a merge's cut (and every
/// stream spilled at a restart, whose heads were parked on one).
pub(super) const PARKED: StreamFlags = StreamFlags(1 << 6);
/// Another stream's parked head waits for it (see `dependencies`).
pub(super) const HAS_WAITERS: StreamFlags = StreamFlags(1 << 7);
/// Parked, with its waiting events only in the store (see [`Engine::poll_load`]).
pub(super) const SPILLED: StreamFlags = StreamFlags(1 << 8);
/// In `parked_queue`.
pub(super) const IN_PARKED_QUEUE: StreamFlags = StreamFlags(1 << 9);
/// A [`Load::Stream`] for it is out.
pub(super) const LOAD_REQUESTED: StreamFlags = StreamFlags(1 << 10);
/// A merge known to the engine names it as a source (see `merge_fence`).
pub(super) const FENCED: StreamFlags = StreamFlags(1 << 11);
/// Streams wait for a merge of this stream to apply (see `merge_fence`).
pub(super) const HAS_FENCE_WAITERS: StreamFlags = StreamFlags(1 << 12);
/// An operator paused it (see `pause`): nothing of it is dispatched.
pub(super) const PAUSED: StreamFlags = StreamFlags(1 << 13);
/// Its head is its own dead letter (sequenced): it waits for a replay or a skip.
pub(super) const BEHIND_DEAD_LETTER: StreamFlags = StreamFlags(1 << 14);
/// Its head waits for a merge that fences it to apply (see `merge_fence`).
pub(super) const AWAITS_MERGE: StreamFlags = StreamFlags(1 << 15);
/// The head cannot move until something else happens (one of the reasons above); what
/// arrives behind it is made durable. Whatever ends the wait clears every reason and
/// dispatch judges the head again, so a stale wake-up costs one look, never an order.
pub(super) const BLOCKED: StreamFlags = PARKED.union(BEHIND_DEAD_LETTER).union(AWAITS_MERGE);

/// Per-stream state, kept small: idle streams are the common case.
#[derive(Debug, Default)]
pub(super) struct StreamState {
    pub(super) applied: u64,
    pub(super) flags: StreamFlags,
    pub(super) extra: Option<Box<StreamExtra>>,
}

#[derive(Debug, Default)]
pub(super) struct StreamExtra {
    /// Waiting events by version (all above `applied`).
    pub(super) slots: BTreeMap<u64, Slot>,
    /// Every version in `applied+1..=contiguous_through` is in a slot or in flight.
    pub(super) contiguous_through: u64,
    pub(super) gap_since_ms: Option<u64>,
    /// Merged into (target, cut).
    pub(super) alias: Option<(StreamId, u64)>,
    pub(super) in_flight_version: Option<u64>,
}

#[derive(Debug)]
pub(super) enum Slot {
    Event(Box<Pending>),
    DeadLettered(u64),
    Skipped,
}

#[derive(Debug)]
pub(super) struct Pending {
    pub(super) event: Event,
    /// The event's offset while it is unsettled. A waiting event's offset settles when the
    /// change set that writes its row is taken; an applied one's when it is applied.
    pub(super) position: Option<SourcePosition>,
    /// The partition it was read from, kept after its offset settles: members of a group
    /// sharing a store restore only the waiting events of their own partitions.
    pub(super) home_partition: Option<u32>,
    /// Must be written to the store if it is still waiting at the next commit.
    pub(super) durable: bool,
    /// The store holds its row.
    pub(super) written: bool,
    pub(super) parked: bool,
    /// When it was delivered, in deliveries to this engine (0: restored from the store).
    /// Only a merge delivered before it can fence it (see `merge_fence`).
    pub(super) seq: u64,
    /// Counted `parked` at delivery (an `after` named a version not yet delivered); it
    /// counts `released` when it goes out.
    pub(super) counted_parked: bool,
    /// When it was delivered (caller's clock): a long-parked release is noticed.
    pub(super) delivered_ms: u64,
}

/// Most released per-stream extras kept for reuse.
pub(super) const SPARE_EXTRAS_MAX: usize = 1024;

impl Engine {
    pub(super) fn intern(&mut self, name: &str) -> StreamId {
        if let Some(&s) = self.ids.get(name) {
            return s;
        }
        let name: Arc<str> = Arc::from(name);
        let mut state = StreamState::default();
        if self.config.mode_for(&name) == VersionMode::Monotonic {
            state.flags.insert(MONOTONIC);
        }
        let s = self.streams.push(state);
        let named = self.names.push(name.clone());
        debug_assert_eq!(s, named, "every per-stream table grows together");
        self.ids.insert(name, s);
        s
    }

    pub(super) fn extra(&mut self, s: StreamId) -> &mut StreamExtra {
        let state = &mut self.streams[s];
        if state.extra.is_none() {
            let mut extra = self.spare_extras.pop().unwrap_or_default();
            extra.contiguous_through = state.applied;
            state.extra = Some(extra);
        }
        state.extra.as_mut().expect("set above")
    }

    /// Gives an idle stream's extra state back: idle streams are the common case and
    /// must stay small.
    pub(super) fn release_if_idle(&mut self, s: StreamId) {
        let state = &mut self.streams[s];
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

    pub(super) fn mark_dirty(&mut self, s: StreamId) {
        let state = &mut self.streams[s];
        if !state.flags.intersects(DIRTY) {
            state.flags.insert(DIRTY);
            self.dirty.push(s);
        }
    }

    pub(super) fn schedule(&mut self, s: StreamId) {
        let state = &mut self.streams[s];
        // A spilled stream's events are in the store: nothing of it goes before they are
        // loaded back.
        if state
            .flags
            .intersects(IN_READY | IN_FLIGHT | BLOCKED | SPILLED | PAUSED)
        {
            return;
        }
        let Some(extra) = state.extra.as_ref() else {
            return;
        };
        let has_head = match extra.slots.first_key_value() {
            Some((&version, _)) => {
                state.flags.intersects(MONOTONIC) || version == state.applied + 1
            }
            None => false,
        };
        if has_head {
            state.flags.insert(IN_READY);
            self.ready.push_back(s);
        }
    }

    pub(super) fn recompute_contiguous(&mut self, s: StreamId) {
        let applied = self.streams[s].applied;
        self.extra(s).contiguous_through = applied;
        self.extend_contiguous(s);
    }

    pub(super) fn extend_contiguous(&mut self, s: StreamId) {
        let applied = self.streams[s].applied;
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
    pub(super) fn refresh_gap(&mut self, s: StreamId, now_ms: u64) {
        let state = &mut self.streams[s];
        let Some(extra) = state.extra.as_mut() else {
            return;
        };
        let gapped = !state.flags.intersects(MONOTONIC)
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
                if state.flags.intersects(STALLED) {
                    state.flags.remove(STALLED);
                    self.counters.stalled -= 1;
                }
            }
            _ => {}
        }
    }

    /// The head cannot move, for `reason` (one of [`BLOCKED`]'s flags): everything behind
    /// it is made durable so that its offsets settle at the next commit and the checkpoint
    /// is not held back by a wait of unknown length.
    pub(super) fn block(&mut self, s: StreamId, reason: StreamFlags) {
        debug_assert!(reason != StreamFlags::default() && reason | BLOCKED == BLOCKED);
        self.streams[s].flags.insert(reason);
        self.make_durable(s);
    }

    pub(super) fn unblock(&mut self, s: StreamId) {
        self.streams[s].flags.remove(BLOCKED);
        self.schedule(s);
    }

    /// Follows aliases to the end. Merges refuse cycles, so the chain ends.
    pub(super) fn resolve(&self, mut s: StreamId) -> StreamId {
        while let Some((target, _)) = self.streams[s].extra.as_ref().and_then(|x| x.alias) {
            s = target;
        }
        s
    }
}
