//! Other members' progress: which streams parked events wait for, and what to do when a
//! member sharing the store moved one of them.

use std::sync::Arc;

use crate::state::StreamRecord;

use super::stream::{Slot, HAS_WAITERS, IN_FLIGHT};
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

    /// Streams with an open gap (an event waits for an earlier version of its own
    /// stream), sorted. Where any member may apply any stream (an SQS queue spreads
    /// streams by itself, not by partition), another member may have applied the
    /// missing version: these are looked up in the store like awaited streams.
    pub fn gapped_streams(&self) -> Vec<Arc<str>> {
        let mut gapped: Vec<Arc<str>> = self
            .gaps
            .iter()
            .map(|(_, s)| self.names[*s].clone())
            .collect();
        gapped.sort();
        gapped
    }

    /// Keeps (or stops keeping) the streams of delivered events, for
    /// [`Self::take_delivered_streams`].
    pub fn keep_delivered_streams(&mut self, keep: bool) {
        self.delivered_streams = keep.then(Vec::new);
    }

    /// The streams of events delivered since the last call, sorted and distinct. Where
    /// any member may apply any stream, another member may have applied a delivered
    /// event's stream past what this engine knows (an SQS message applied there, then
    /// given out again after that member died before deleting it): its position is read
    /// from the store and handed to [`Self::handle_progress`] before anything of it is
    /// applied, or the event would be applied twice onto a document that already holds it.
    pub fn take_delivered_streams(&mut self) -> Vec<Box<str>> {
        let Some(streams) = self.delivered_streams.as_mut() else {
            return Vec::new();
        };
        let mut taken = std::mem::take(streams);
        taken.sort_unstable();
        taken.dedup();
        taken
    }

    /// Whether any stream has an open gap (see [`Self::gapped_streams`]).
    pub fn has_gaps(&self) -> bool {
        !self.gaps.is_empty()
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
                // applied it; forget it without touching its rows. A copy read here and
                // not yet written is stale: its offset settles, or the checkpoint (and
                // what a queue deletes by it) would wait for it forever.
                let passed: Vec<u64> = extra
                    .slots
                    .range(..=record.applied)
                    .map(|(v, _)| *v)
                    .collect();
                for version in passed {
                    if let Some(Slot::Event(pending)) = extra.slots.remove(&version) {
                        if let Some(position) = pending.position {
                            self.checkpoints.settle(position);
                            self.counters.stale += 1;
                        }
                    }
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
