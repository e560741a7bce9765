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

/// Most ids kept in the window's small table of recent insertions before they move to
/// the large one.
pub const RECENT_IDS_MAX: usize = 8192;

/// A bounded set of the most recent id hashes.
///
/// A hash table maps each remembered hash to the sequence number it was inserted at; an
/// entry older than the last `capacity` insertions counts as forgotten. When the table
/// holds twice the capacity it is swept once (amortized O(1) per insertion), so memory
/// stays bounded. No FIFO beside it and no per-id removal: every insertion is one probe.
///
/// Insertions go first into a small table of recent ones ([`RECENT_IDS_MAX`]), which stays
/// in cache, and move to the large table in one tight loop when it is full: a new id's
/// bucket in a table of two million entries is a cache miss, and a miss per delivery was
/// about a third of the engine's time; in a batch the misses overlap. An insertion does
/// not look for the id in the large table (that would be the miss again): an id seen
/// before simply takes a new, later sequence number, which only keeps it remembered
/// longer.
#[derive(Debug)]
pub struct DedupeWindow {
    capacity: u64,
    members: FxHashMap<u64, u64>,
    /// The most recent insertions, newer than anything in `members` for the same hash.
    recent: FxHashMap<u64, u64>,
    recent_max: usize,
    next_sequence: u64,
}

impl DedupeWindow {
    /// An empty window remembering the last `capacity` ids.
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "dedupe window capacity must be positive");
        DedupeWindow {
            capacity: capacity as u64,
            members: FxHashMap::default(),
            recent: FxHashMap::default(),
            recent_max: capacity.min(RECENT_IDS_MAX),
            next_sequence: 0,
        }
    }

    fn sequence_of(&self, hash: u64) -> Option<u64> {
        self.recent
            .get(&hash)
            .or_else(|| self.members.get(&hash))
            .copied()
    }

    /// Whether the id hash is remembered.
    pub fn contains(&self, hash: u64) -> bool {
        self.sequence_of(hash)
            .is_some_and(|sequence| sequence >= self.floor())
    }

    /// Remembers a hash and returns its sequence number, or `None` when it is among the
    /// most recent insertions already. (An older one takes a new sequence number.)
    pub fn insert(&mut self, hash: u64) -> Option<u64> {
        let floor = self.floor();
        let sequence = self.next_sequence;
        match self.recent.entry(hash) {
            Entry::Occupied(entry) if *entry.get() >= floor => return None,
            Entry::Occupied(mut entry) => {
                entry.insert(sequence);
            }
            Entry::Vacant(entry) => {
                entry.insert(sequence);
            }
        }
        self.next_sequence += 1;
        if self.recent.len() >= self.recent_max {
            self.members.extend(self.recent.drain());
            if self.members.len() as u64 >= self.capacity.saturating_mul(2) {
                let floor = self.floor();
                self.members.retain(|_, sequence| *sequence >= floor);
            }
        }
        Some(sequence)
    }

    /// Sequence number of the oldest remembered id (everything below it is forgotten).
    pub fn floor(&self) -> u64 {
        self.next_sequence.saturating_sub(self.capacity)
    }

    /// Every remembered hash with its newest sequence number.
    #[cfg(test)]
    fn live(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let floor = self.floor();
        let older = self
            .members
            .iter()
            .filter(|(hash, _)| !self.recent.contains_key(hash));
        self.recent
            .iter()
            .chain(older)
            .filter(move |(_, &sequence)| sequence >= floor)
            .map(|(&hash, &sequence)| (hash, sequence))
    }

    /// The remembered hashes with their sequence numbers, oldest first.
    #[cfg(test)]
    fn entries(&self) -> Vec<(u64, u64)> {
        let mut entries: Vec<(u64, u64)> = self.live().map(|(h, s)| (s, h)).collect();
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
    fn recent_insertions_move_to_the_large_table_and_stay_remembered() {
        let capacity = RECENT_IDS_MAX * 4;
        let mut window = DedupeWindow::new(capacity);
        let total = RECENT_IDS_MAX as u64 * 3 + 17;
        for hash in 1..=total {
            assert_eq!(window.insert(hash), Some(hash - 1));
        }
        assert!(
            window.members.len() >= RECENT_IDS_MAX * 3,
            "moved in batches"
        );
        assert!((1..=total).all(|hash| window.contains(hash)));
        assert!(!window.contains(total + 1));
        // An id already moved to the large table takes a new sequence: remembered
        // longer, listed once, with its newest sequence.
        assert_eq!(window.insert(1), Some(total));
        let entries = window.entries();
        assert_eq!(entries.len(), total as usize);
        assert_eq!(entries.last(), Some(&(total, 1)));
        // Restored from its entries, it answers alike.
        let restored = DedupeWindow::restore(capacity, entries.clone());
        assert_eq!(restored.entries(), entries);
        // Beyond the capacity, the oldest are forgotten wherever they are kept.
        for hash in 10_000_000..10_000_000 + capacity as u64 {
            window.insert(hash);
        }
        assert!(!window.contains(2), "forgotten");
        assert!(window.contains(10_000_000 + capacity as u64 - 1));
        assert!(window.members.len() + window.recent.len() <= capacity * 2 + RECENT_IDS_MAX);
    }

    #[test]
    fn hash_is_stable() {
        assert_eq!(id_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(id_hash("a"), 0xaf63_dc4c_8601_ec8c);
    }
}
