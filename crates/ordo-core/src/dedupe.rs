//! The dedupe window: the most recent event ids, oldest forgotten first.
//!
//! Correctness never depends on this window: the version guard alone decides whether an
//! event is applied. The window tells a *duplicate* (an id seen before: redelivery, a
//! producer retry) from a *stale* event (an unseen id at an old version: a replay, a
//! second writer), which is what an operator needs to know about the disorder. Ids are
//! kept as 64-bit FNV-1a hashes, so the window's memory is bounded by its capacity alone
//! and a collision can at worst misname one skip.

use std::collections::hash_map::Entry;

use rustc_hash::FxHashMap;

/// A stable 64-bit hash of an event id (FNV-1a), the same on every machine and version,
/// so that a window written to a store is read back meaning the same ids.
pub fn id_hash(id: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in id.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// A bounded set of the most recent id hashes.
///
/// One hash table maps each remembered hash to the sequence number it was inserted at;
/// an entry older than the last `capacity` insertions counts as forgotten. When the table
/// holds twice the capacity it is swept once (amortized O(1) per insertion), so memory
/// stays bounded. One table, not a FIFO plus a set: every event costs one probe, and no
/// per-id removal litters the open-addressing table with tombstones.
#[derive(Debug)]
pub struct DedupeWindow {
    capacity: u64,
    members: FxHashMap<u64, u64>,
    next_sequence: u64,
}

impl DedupeWindow {
    /// An empty window remembering the last `capacity` ids.
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "dedupe window capacity must be positive");
        DedupeWindow {
            capacity: capacity as u64,
            members: FxHashMap::default(),
            next_sequence: 0,
        }
    }

    /// Whether the id hash is remembered.
    pub fn contains(&self, hash: u64) -> bool {
        self.members
            .get(&hash)
            .is_some_and(|&sequence| sequence >= self.floor())
    }

    /// Remembers a hash; returns its sequence number, or `None` if it was already there.
    pub fn insert(&mut self, hash: u64) -> Option<u64> {
        let floor = self.floor();
        let sequence = self.next_sequence;
        match self.members.entry(hash) {
            Entry::Occupied(entry) if *entry.get() >= floor => return None,
            Entry::Occupied(mut entry) => {
                entry.insert(sequence);
            }
            Entry::Vacant(entry) => {
                entry.insert(sequence);
            }
        }
        self.next_sequence += 1;
        if self.members.len() as u64 >= self.capacity.saturating_mul(2) {
            let floor = self.floor();
            self.members.retain(|_, sequence| *sequence >= floor);
        }
        Some(sequence)
    }

    /// Sequence number of the oldest remembered id (everything below it is forgotten).
    pub fn floor(&self) -> u64 {
        self.next_sequence.saturating_sub(self.capacity)
    }

    /// How many ids are remembered.
    pub fn len(&self) -> usize {
        let floor = self.floor();
        self.members.values().filter(|&&s| s >= floor).count()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The remembered hashes with their sequence numbers, oldest first.
    pub fn entries(&self) -> Vec<(u64, u64)> {
        let floor = self.floor();
        let mut entries: Vec<(u64, u64)> = self
            .members
            .iter()
            .filter(|(_, &sequence)| sequence >= floor)
            .map(|(&hash, &sequence)| (sequence, hash))
            .collect();
        entries.sort_unstable();
        entries
    }

    /// Rebuilds a window from stored `(sequence, hash)` pairs, any order.
    pub fn restore(capacity: usize, entries: Vec<(u64, u64)>) -> Self {
        let mut window = DedupeWindow::new(capacity);
        window.next_sequence = entries.iter().map(|(s, _)| s + 1).max().unwrap_or(0);
        let floor = window.floor();
        for (sequence, hash) in entries {
            if sequence >= floor {
                let kept = window.members.entry(hash).or_insert(sequence);
                *kept = (*kept).max(sequence);
            }
        }
        window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgets_the_oldest_beyond_capacity_and_stays_bounded() {
        let mut window = DedupeWindow::new(3);
        assert_eq!(window.insert(1), Some(0));
        assert_eq!(window.insert(1), None);
        assert_eq!(window.insert(2), Some(1));
        assert_eq!(window.insert(3), Some(2));
        assert_eq!(window.insert(4), Some(3));
        assert!(!window.contains(1), "the oldest went");
        assert!(window.contains(2) && window.contains(3) && window.contains(4));
        assert_eq!(window.floor(), 1);
        assert_eq!(window.entries(), vec![(1, 2), (2, 3), (3, 4)]);
        assert_eq!(window.insert(1), Some(4), "a forgotten id is new again");
        for hash in 10..1000 {
            window.insert(hash);
        }
        assert!(window.members.len() <= 6, "swept: {}", window.members.len());
        let mut restored = DedupeWindow::restore(3, window.entries());
        assert_eq!(restored.entries(), window.entries());
        assert_eq!(
            restored.insert(5000),
            window.insert(5000),
            "sequence numbers continue"
        );
    }

    #[test]
    fn hash_is_stable() {
        assert_eq!(id_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(id_hash("a"), 0xaf63_dc4c_8601_ec8c);
    }
}
