//! The dependency index: which parked heads wait for which version of which stream. A
//! stream that others wait for carries [`HAS_WAITERS`], so that applying a version of an
//! awaited-by-nobody stream (the common case) costs no lookup.

use rustc_hash::FxHashMap;

use super::stream::{StreamId, HAS_WAITERS};
use super::Engine;

/// Awaited stream → (version needed, waiting stream), for the parked heads in memory.
#[derive(Debug, Default)]
pub(super) struct Dependents {
    by_awaited: FxHashMap<StreamId, Vec<(u64, StreamId)>>,
}

impl Dependents {
    /// Whether no parked head in memory waits.
    pub(super) fn is_empty(&self) -> bool {
        self.by_awaited.is_empty()
    }

    /// The streams waited for.
    pub(super) fn awaited(&self) -> impl Iterator<Item = StreamId> + '_ {
        self.by_awaited.keys().copied()
    }
}

impl Engine {
    /// `waiter`'s head waits for `awaited` to apply `version`.
    pub(super) fn add_dependent(&mut self, awaited: StreamId, version: u64, waiter: StreamId) {
        self.dependents
            .by_awaited
            .entry(awaited)
            .or_default()
            .push((version, waiter));
        self.streams[awaited].flags.insert(HAS_WAITERS);
    }

    /// Removes the waiters of `awaited` that `gone` picks (given the version each needs),
    /// and returns them in the order they parked.
    pub(super) fn remove_dependents(
        &mut self,
        awaited: StreamId,
        mut gone: impl FnMut(u64, StreamId) -> bool,
    ) -> Vec<StreamId> {
        let Some(waiters) = self.dependents.by_awaited.get_mut(&awaited) else {
            return Vec::new();
        };
        let mut removed = Vec::new();
        waiters.retain(|&(needed, waiter)| {
            let remove = gone(needed, waiter);
            if remove {
                removed.push(waiter);
            }
            !remove
        });
        if waiters.is_empty() {
            self.dependents.by_awaited.remove(&awaited);
            self.streams[awaited].flags.remove(HAS_WAITERS);
        }
        removed
    }

    /// `s` applied through `applied`: the heads that waited for no more than that decide
    /// again.
    pub(super) fn release_dependents(&mut self, s: StreamId, applied: u64) {
        for waiter in self.remove_dependents(s, |needed, _| needed <= applied) {
            self.unblock(waiter);
        }
    }
}
