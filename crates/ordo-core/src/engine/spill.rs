//! Which parked streams leave memory, and how they come back: the longest-parked are
//! spilled to the store beyond `parked_streams_in_memory_max`, and loaded back when what
//! they wait for applies or a new event arrives for them.

use rustc_hash::{FxHashMap, FxHashSet};
use std::collections::VecDeque;

use crate::dedupe::id_hash;
use crate::envelope::{Dependency, Op};
use crate::state::{Load, Loaded, PendingRecord, PendingState};

use super::stream::{
    Pending, Slot, StreamId, BLOCKED, IN_FLIGHT, IN_PARKED_QUEUE, IN_READY, LOAD_REQUESTED, PARKED,
    SPARE_EXTRAS_MAX, SPILLED,
};
use super::{Disposition, Engine};

impl Engine {
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
            if !self.streams[s].flags.intersects(SPILLED) {
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
            if !self.streams[s].flags.intersects(SPILLED) {
                continue;
            }
            self.streams[s].flags.remove(SPILLED | LOAD_REQUESTED);
            if self.streams[s].extra.is_some() {
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

    /// Asks for every spilled stream to be loaded back ([`Self::poll_load`]): for views
    /// that list every waiting event (`ordo parked list`), not for consuming.
    pub fn request_all_spilled(&mut self) {
        for s in self.streams.ids().collect::<Vec<_>>() {
            if self.streams[s].flags.intersects(SPILLED) {
                self.request_stream_load(s);
            }
        }
    }

    /// How many streams are spilled (their waiting events only in the store).
    pub fn spilled_streams(&self) -> usize {
        self.streams
            .values()
            .filter(|state| state.flags.intersects(SPILLED))
            .count()
    }

    /// Streams spilled and loads answered since this engine was created or restored.
    pub fn spill_totals(&self) -> (u64, u64) {
        self.spill_totals
    }

    /// Puts a waiting event read back from the store into its stream's slots (its id
    /// joins the dedupe window, so a redelivered copy counts as a duplicate). A row at or
    /// below the applied version was applied in the commit that should have deleted it:
    /// it is deleted now.
    pub(super) fn put_stored(&mut self, s: StreamId, record: PendingRecord, seq: u64) {
        if record.version <= self.streams[s].applied {
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

    pub(super) fn request_stream_load(&mut self, s: StreamId) {
        if !self.streams[s].flags.intersects(LOAD_REQUESTED) {
            self.streams[s].flags.insert(LOAD_REQUESTED);
            self.loads.push_back(Load::Stream(self.names[s].clone()));
        }
    }

    /// Spilled streams wait for `version` of `awaited`; if it applied already, load them.
    pub(super) fn add_spilled_waiter(&mut self, awaited: StreamId, version: u64) {
        if self.streams[awaited].applied >= version {
            self.loads.push_back(Load::Waiters {
                awaited: self.names[awaited].clone(),
                through: self.streams[awaited].applied,
            });
            return;
        }
        let needed = self.spilled_waiters.entry(awaited).or_insert(version);
        *needed = (*needed).min(version);
    }

    pub(super) fn wake_spilled_waiters(&mut self, s: StreamId) {
        if self.spilled_waiters.is_empty() {
            return;
        }
        let applied = self.streams[s].applied;
        if self
            .spilled_waiters
            .get(&s)
            .is_some_and(|&needed| needed <= applied)
        {
            self.spilled_waiters.remove(&s);
            self.loads.push_back(Load::Waiters {
                awaited: self.names[s].clone(),
                through: applied,
            });
        }
    }

    /// Moves the longest-parked streams out of memory while more than the configured
    /// number are parked in memory. Only a stream whose every waiting event is written
    /// (and settled) and whose head is parked on an unmet dependency qualifies.
    pub(super) fn spill_parked(&mut self) {
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
            self.streams[s].flags.remove(IN_PARKED_QUEUE);
            let Some(dependency) = self.spillable(s) else {
                // Moved on, or not (yet) spillable: still parked ones stay candidates.
                if self.streams[s].flags.intersects(PARKED)
                    && !self.streams[s].flags.intersects(SPILLED)
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
            let state = &mut self.streams[s];
            state.flags.insert(SPILLED);
            if let Some(mut extra) = state.extra.take() {
                extra.slots.clear();
                extra.contiguous_through = 0;
                if self.spare_extras.len() < SPARE_EXTRAS_MAX {
                    self.spare_extras.push(extra);
                }
            }
        }
        for s in kept.into_iter().rev() {
            self.streams[s].flags.insert(IN_PARKED_QUEUE);
            self.parked_queue.push_front(s);
        }
        for (awaited, gone) in spilled {
            self.remove_dependents(awaited, |_, waiter| gone.contains(&waiter));
        }
    }

    pub(super) fn parked_head(&self, s: StreamId) -> bool {
        self.streams[s]
            .extra
            .as_ref()
            .and_then(|x| x.slots.first_key_value())
            .is_some_and(|(_, slot)| matches!(slot, Slot::Event(p) if p.parked))
    }

    /// The dependency a parked stream waits for, if the stream may be spilled now.
    pub(super) fn spillable(&self, s: StreamId) -> Option<Dependency> {
        let state = &self.streams[s];
        if state.flags.intersects(IN_FLIGHT | IN_READY | SPILLED)
            || !state.flags.intersects(BLOCKED)
        {
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
}
