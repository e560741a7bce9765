//! What the next commit writes: the change set of streams moved, waiting rows put or
//! deleted, dead letters, dedupe entries and the checkpoints they settle.

use crate::envelope::Dependency;
use crate::state::{ChangeSet, PendingRecord, PendingState, StreamRecord};

use super::stream::{Slot, StreamId, DIRTY};
use super::Engine;

impl Engine {
    /// Everything changed since the last call, for the store to commit.
    pub fn take_changes(&mut self) -> ChangeSet {
        let mut changes = ChangeSet {
            counters: self.counters,
            next_dead_letter_id: self.next_dead_letter_id,
            dedupe_floor: self.dedupe.floor(),
            ..ChangeSet::default()
        };
        self.take_stream_records(&mut changes);
        let parked_rows = self.take_pending_rows(&mut changes);
        self.take_out_unwritten(&mut changes);
        self.fill_parked_awaits(&mut changes, parked_rows);
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

    /// The applied version and alias of every stream that moved.
    fn take_stream_records(&mut self, changes: &mut ChangeSet) {
        for s in std::mem::take(&mut self.dirty) {
            let state = &mut self.streams[s];
            state.flags.remove(DIRTY);
            let alias = state
                .extra
                .as_ref()
                .and_then(|x| x.alias)
                .map(|(t, cut)| (self.names[t].clone(), cut));
            changes.streams.push(StreamRecord {
                stream: self.names[s].clone(),
                applied: state.applied,
                alias,
            });
        }
    }

    /// The waiting rows to put or delete, in stream and version order. A row written here
    /// settles its event's offset. Returns the parked rows, whose `awaits` is filled in
    /// once no slot is borrowed: (row, stream, its `after`).
    fn take_pending_rows(
        &mut self,
        changes: &mut ChangeSet,
    ) -> Vec<(usize, StreamId, Vec<Dependency>)> {
        let mut changed: Vec<(StreamId, u64)> = self.pending_changed.drain().collect();
        changed.sort_unstable();
        let mut parked_rows = Vec::new();
        for (s, version) in changed {
            let name: Box<str> = (*self.names[s]).into();
            let Some(extra) = self.streams[s].extra.as_mut() else {
                changes.pending_delete.push((name, version));
                continue;
            };
            if extra.in_flight_version == Some(version) {
                // Its outcome decides: applied deletes the row, rejected replaces it.
                continue;
            }
            let record = match extra.slots.get_mut(&version) {
                Some(Slot::Event(pending)) if pending.durable => {
                    pending.written = true;
                    if let Some(position) = pending.position.take() {
                        self.checkpoints.settle(position);
                    }
                    if pending.parked {
                        let row = changes.pending_put.len();
                        parked_rows.push((row, s, pending.event.after.clone()));
                    }
                    let state = if pending.parked {
                        PendingState::Parked
                    } else {
                        PendingState::Buffered
                    };
                    PendingRecord {
                        awaits: None,
                        stream: name,
                        version,
                        state,
                        event: Some(pending.event.clone()),
                        partition: pending.home_partition,
                    }
                }
                Some(Slot::Skipped) => PendingRecord {
                    stream: name,
                    version,
                    state: PendingState::Skipped,
                    event: None,
                    partition: None,
                    awaits: None,
                },
                _ => {
                    changes.pending_delete.push((name, version));
                    continue;
                }
            };
            changes.pending_put.push(record);
        }
        parked_rows
    }

    /// Events out with no position and no row: written now, so a crash cannot lose them.
    fn take_out_unwritten(&mut self, changes: &mut ChangeSet) {
        for ((s, version), (event, partition)) in std::mem::take(&mut self.out_unwritten) {
            self.out_written.insert((s, version));
            changes.pending_put.push(PendingRecord {
                stream: (*self.names[s]).into(),
                version,
                state: PendingState::Buffered,
                event: Some(event),
                partition,
                awaits: None,
            });
        }
    }

    /// A parked row says which stream and version it waits for, so a restart can leave it
    /// spilled until that version applies.
    fn fill_parked_awaits(
        &self,
        changes: &mut ChangeSet,
        parked_rows: Vec<(usize, StreamId, Vec<Dependency>)>,
    ) {
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
    }
}
