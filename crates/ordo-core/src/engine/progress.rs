//! Other members' progress: which streams parked events wait for, and what to do when a
//! member sharing the store moved one of them.

use std::sync::Arc;

use crate::state::StreamRecord;

use super::stream::{HAS_WAITERS, IN_FLIGHT};
use super::Engine;

impl Engine {
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
            .awaited()
            .chain(self.spilled_waiters.keys().copied())
            .map(|s| self.names[s].clone())
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
        if self.streams[s].flags.intersects(IN_FLIGHT) {
            return false;
        }
        let mut moved = false;
        if let Some((target, cut)) = &record.alias {
            let known = self.streams[s]
                .extra
                .as_ref()
                .is_some_and(|x| x.alias.is_some());
            if !known {
                let t = self.intern(target);
                self.extra(s).alias = Some((t, *cut));
                moved = true;
            }
        }
        if record.applied > self.streams[s].applied {
            moved = true;
            self.streams[s].applied = record.applied;
            if let Some(extra) = self.streams[s].extra.as_mut() {
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
            if self.streams[s].flags.intersects(HAS_WAITERS) {
                self.release_dependents(s, record.applied);
            }
            self.wake_spilled_waiters(s);
            self.schedule(s);
            self.release_if_idle(s);
        }
        moved
    }
}
