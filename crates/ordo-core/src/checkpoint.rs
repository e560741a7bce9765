//! Checkpoint tracking per source partition.
//!
//! The checkpoint of a partition is the highest offset at and below which every delivered
//! event is *settled*: applied, skipped, dead-lettered, or handed to the store as buffered
//! or parked. Committing it in the same transaction as the state means a restart re-reads
//! exactly the events whose effects were not committed, and the version guard absorbs the
//! rest. Events still in memory (queued or in flight) hold the checkpoint back.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

/// Where an event came from: a partition of a source and an offset in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourcePosition {
    /// The partition (0 for unpartitioned sources).
    pub partition: u32,
    /// The offset within the partition.
    pub offset: u64,
}

/// Offsets from the lowest unsettled one up, in order, each with whether it is settled.
/// Sources deliver a partition in offset order, so this is a queue: pushed at the back,
/// popped at the front as the oldest settle.
#[derive(Debug, Default)]
struct PartitionTrack {
    window: VecDeque<(u64, bool)>,
    delivered_max: Option<u64>,
    reported: Option<u64>,
}

impl PartitionTrack {
    fn checkpoint(&self) -> Option<u64> {
        match self.window.front() {
            Some(&(lowest, _)) => lowest.checked_sub(1),
            None => self.delivered_max,
        }
        .max(self.reported)
    }

    fn deliver(&mut self, offset: u64, settled: bool) {
        self.delivered_max = self.delivered_max.max(Some(offset));
        if settled && self.window.is_empty() {
            return;
        }
        match self.window.back() {
            Some(&(last, _)) if offset <= last => {
                // Out of order (a redelivery): keep the window sorted.
                let index = self.window.partition_point(|&(o, _)| o < offset);
                if self.window.get(index).map(|&(o, _)| o) == Some(offset) {
                    if !settled {
                        self.window[index].1 = false;
                    }
                } else {
                    self.window.insert(index, (offset, settled));
                }
            }
            _ => self.window.push_back((offset, settled)),
        }
        self.pop_settled();
    }

    fn settle(&mut self, offset: u64) {
        let index = self.index_of(offset);
        if let Some(entry) = self.window.get_mut(index) {
            if entry.0 == offset {
                entry.1 = true;
            }
        }
        self.pop_settled();
    }

    /// Where `offset` is, or would go, in the window. A source delivers one event per
    /// offset, so the window is usually dense and the entry sits `offset - lowest` from
    /// the front, found in O(1) (a binary search over the `VecDeque` took 2 % of a mixed
    /// run); a window with holes falls back to the search.
    fn index_of(&self, offset: u64) -> usize {
        if let Some(&(lowest, _)) = self.window.front() {
            if let Some(guess) = offset.checked_sub(lowest).map(|d| d as usize) {
                if self.window.get(guess).is_some_and(|&(o, _)| o == offset) {
                    return guess;
                }
            }
        }
        self.window.partition_point(|&(o, _)| o < offset)
    }

    fn pop_settled(&mut self) {
        while self.window.front().is_some_and(|&(_, settled)| settled) {
            self.window.pop_front();
        }
    }
}

/// Settled-offset bookkeeping for every partition of every source.
#[derive(Debug, Default)]
pub struct CheckpointTracker {
    partitions: FxHashMap<u32, PartitionTrack>,
    changed: Vec<u32>,
}

impl CheckpointTracker {
    /// Resumes from stored checkpoints.
    pub fn restore(checkpoints: impl IntoIterator<Item = (u32, u64)>) -> Self {
        let mut tracker = CheckpointTracker::default();
        for (partition, offset) in checkpoints {
            let track = tracker.partitions.entry(partition).or_default();
            track.delivered_max = Some(offset);
            track.reported = Some(offset);
        }
        tracker
    }

    /// Records a delivery; an unsettled one holds the checkpoint back until [`Self::settle`].
    pub fn deliver(&mut self, position: SourcePosition, settled: bool) {
        let track = self.partitions.entry(position.partition).or_default();
        track.deliver(position.offset, settled);
        self.note_change(position.partition);
    }

    /// Marks a delivered offset settled.
    pub fn settle(&mut self, position: SourcePosition) {
        if let Some(track) = self.partitions.get_mut(&position.partition) {
            track.settle(position.offset);
            self.note_change(position.partition);
        }
    }

    fn note_change(&mut self, partition: u32) {
        if self.changed.last() != Some(&partition) && !self.changed.contains(&partition) {
            self.changed.push(partition);
        }
    }

    /// The partition's checkpoint, if any offset of it is settled.
    #[cfg(test)]
    fn checkpoint(&self, partition: u32) -> Option<u64> {
        self.partitions
            .get(&partition)
            .and_then(PartitionTrack::checkpoint)
    }

    /// Whether any delivered offset of any partition is unsettled.
    pub fn has_unsettled(&self) -> bool {
        self.partitions.values().any(|t| !t.window.is_empty())
    }

    /// Checkpoints that moved since the last call, as `(partition, offset)`.
    pub fn take_changes(&mut self) -> Vec<(u32, u64)> {
        let mut moved = Vec::new();
        for partition in self.changed.drain(..) {
            let track = self
                .partitions
                .get_mut(&partition)
                .expect("changed partition exists");
            let checkpoint = track.checkpoint();
            if checkpoint != track.reported {
                track.reported = checkpoint;
                if let Some(offset) = checkpoint {
                    moved.push((partition, offset));
                }
            }
        }
        moved.sort_unstable();
        moved
    }

    /// Every partition's current checkpoint.
    pub fn checkpoints(&self) -> Vec<(u32, u64)> {
        let mut all: Vec<(u32, u64)> = self
            .partitions
            .iter()
            .filter_map(|(p, t)| t.checkpoint().map(|o| (*p, o)))
            .collect();
        all.sort_unstable();
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: u64) -> SourcePosition {
        SourcePosition {
            partition: 0,
            offset,
        }
    }

    #[test]
    fn an_unsettled_offset_holds_the_checkpoint_back() {
        let mut tracker = CheckpointTracker::default();
        tracker.deliver(at(0), true);
        tracker.deliver(at(1), false);
        tracker.deliver(at(2), true);
        tracker.deliver(at(3), false);
        assert_eq!(tracker.checkpoint(0), Some(0));
        tracker.settle(at(3));
        assert_eq!(tracker.checkpoint(0), Some(0));
        tracker.settle(at(1));
        assert_eq!(tracker.checkpoint(0), Some(3));
        assert_eq!(tracker.take_changes(), vec![(0, 3)]);
        assert_eq!(tracker.take_changes(), vec![]);
    }

    #[test]
    fn offsets_with_holes_and_redeliveries_settle_where_they_are() {
        // Offsets 10, 11, 14, 15, 17 (the gaps are offsets the source skipped), then a
        // redelivery of 11: the window is not dense, so a guess by distance misses.
        let mut tracker = CheckpointTracker::restore([(0, 9)]);
        for offset in [10, 11, 14, 15, 17] {
            tracker.deliver(at(offset), false);
        }
        tracker.deliver(at(11), false);
        tracker.settle(at(14));
        tracker.settle(at(17));
        tracker.settle(at(13)); // never delivered: changes nothing
        assert_eq!(tracker.checkpoint(0), Some(9));
        tracker.settle(at(10));
        assert_eq!(tracker.checkpoint(0), Some(10));
        tracker.settle(at(11));
        assert_eq!(tracker.checkpoint(0), Some(14), "15 still holds it");
        tracker.settle(at(15));
        assert_eq!(tracker.checkpoint(0), Some(17));
    }

    #[test]
    fn a_first_unsettled_offset_gives_no_checkpoint() {
        let mut tracker = CheckpointTracker::default();
        tracker.deliver(at(0), false);
        assert_eq!(tracker.checkpoint(0), None);
        let mut restored = CheckpointTracker::restore([(0, 9)]);
        restored.deliver(at(10), false);
        assert_eq!(restored.checkpoint(0), Some(9), "never moves backwards");
    }
}
