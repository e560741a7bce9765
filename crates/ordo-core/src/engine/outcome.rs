//! What a finished [`Work`] releases: the applied version moves on, merges leave their
//! aliases, and whatever waited for the stream or its documents decides again.

use crate::state::DeadLetterKind;

use super::stream::{
    Slot, StreamId, BEHIND_DEAD_LETTER, DOCUMENT_BUSY, HAS_WAITERS, IN_FLIGHT, MONOTONIC,
};
use super::{Action, DecisionKind, Engine, Notice, Outcome, Work};

impl Engine {
    /// Takes back a [`Work`] with the projection's verdict.
    pub fn handle_outcome(&mut self, now_ms: u64, mut work: Work, outcome: Outcome) {
        debug_assert!(work.locked().count() >= 1);
        let s = work.stream;
        let target = work.target;
        let source_ids = std::mem::take(&mut work.source_ids);
        let version = work.event.version;
        {
            let state = &mut self.streams[s];
            assert!(
                state.flags.intersects(IN_FLIGHT),
                "outcome for a stream with no work out"
            );
            let extra = state
                .extra
                .as_mut()
                .expect("in-flight stream has extra state");
            assert_eq!(
                extra.in_flight_version,
                Some(version),
                "outcome for another version"
            );
            extra.in_flight_version = None;
            state.flags.remove(IN_FLIGHT);
        }
        self.in_flight -= 1;
        for document in std::iter::once(target).chain(source_ids.iter().copied()) {
            self.streams[document].flags.remove(DOCUMENT_BUSY);
        }
        // Rare (replays out across a commit): no lookups on the common path.
        if !self.out_unwritten.is_empty() {
            self.out_unwritten.remove(&(s, version));
        }
        if !self.out_written.is_empty() && self.out_written.remove(&(s, version)) {
            work.written = true;
        }
        match outcome {
            Outcome::Applied => self.applied(work),
            Outcome::Rejected { reason } => {
                let id = self.dead_letter_event(
                    now_ms,
                    DeadLetterKind::Sequenced,
                    &work.event,
                    reason,
                    None,
                );
                self.mark_dead_lettered(s, version, id);
                if matches!(work.action, Action::Merge { .. }) {
                    self.lift_merge_fences(s, version);
                }
                if let Some(position) = work.position {
                    self.checkpoints.settle(position);
                }
                if work.written {
                    self.pending_changed.insert((s, version));
                }
                self.block(s, BEHIND_DEAD_LETTER);
            }
        }
        for document in std::iter::once(target).chain(source_ids) {
            self.wake_document_waiters(document);
        }
        self.refresh_gap(s, now_ms);
        self.schedule(s);
        self.release_if_idle(s);
    }

    pub(super) fn applied(&mut self, work: Work) {
        let s = work.stream;
        let version = work.event.version;
        self.counters.applied += 1;
        if self.config.decisions_traced {
            let kind = DecisionKind::Applied {
                document: self.names[work.target].clone(),
                redirected: work.redirected(),
            };
            self.decide(s, &work.event, kind);
        }
        if let Some(position) = work.position {
            self.checkpoints.settle(position);
        }
        if work.written {
            self.pending_changed.insert((s, version));
        }
        if work.redirected() {
            self.counters.redirected += 1;
            self.counters.late_after_merge += 1;
            self.notice(Notice::LateAfterMerge {
                stream: self.names[s].clone(),
                version,
                target: self.names[work.target].clone(),
                redirected: true,
            });
        }
        if let Action::Merge { sources } = &work.action {
            self.lift_merge_fences(s, version);
            for source in sources {
                let source_id = self.ids[source];
                let cut = work
                    .event
                    .cut_for(source)
                    .expect("merge dispatched only with a cut for every source");
                let source_applied = self.streams[source_id].applied;
                let late = source_applied.saturating_sub(cut);
                self.counters.late_after_merge += late;
                // One notice per counted event: each went to the source before the merge.
                for version in cut + 1..=source_applied {
                    self.notice(Notice::LateAfterMerge {
                        stream: source.clone(),
                        version,
                        target: self.names[s].clone(),
                        redirected: false,
                    });
                }
                self.extra(source_id).alias = Some((s, cut));
                self.mark_dirty(source_id);
            }
        }
        self.advance(s, version);
    }

    /// Moves a stream's applied version forward and releases whatever waited for it.
    pub(super) fn advance(&mut self, s: StreamId, version: u64) {
        let state = &mut self.streams[s];
        state.applied = state.applied.max(version);
        let applied = state.applied;
        let monotonic = state.flags.intersects(MONOTONIC);
        if let Some(extra) = state.extra.as_mut() {
            extra.contiguous_through = extra.contiguous_through.max(applied);
            if monotonic {
                // Anything still waiting at or below the new version is now stale.
                let old: Vec<u64> = extra.slots.range(..=applied).map(|(v, _)| *v).collect();
                for v in old {
                    if let Some(Slot::Event(pending)) = extra.slots.remove(&v) {
                        self.counters.stale += 1;
                        if let Some(position) = pending.position {
                            self.checkpoints.settle(position);
                        }
                        if pending.written {
                            self.pending_changed.insert((s, v));
                        }
                    }
                }
            }
        }
        self.mark_dirty(s);
        if self.streams[s].flags.intersects(HAS_WAITERS) {
            self.release_dependents(s, applied);
        }
        self.wake_fence_waiters(s);
        self.wake_spilled_waiters(s);
    }
}
