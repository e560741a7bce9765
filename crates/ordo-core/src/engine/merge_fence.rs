//! Which source events wait for a merge that is known but not yet applied.
//!
//! A merge's cut places it in each source's order: versions at or below the cut come
//! before the merge, versions beyond it after. The engine learns of a merge when it is
//! delivered, and the merge may then wait (for its cuts, behind its stream's gap, for a
//! busy document, for its row to be written). Without a fence, a source event beyond the
//! cut that became ready meanwhile would go to the source's own document, and whether it
//! did would depend on timing: on batching (the counters would say `redirected` or not),
//! and, behind a handler, on a crash. A merge the handler acknowledged but ordo had not
//! committed is sent again after a restart; a source event sent first to the source's own
//! document would be stranded there, because the handler already folded that document
//! away.
//!
//! So a delivered merge *fences* each source: an event of the source beyond the cut,
//! delivered after the merge (or restored from the store: a restart no longer knows what
//! came first), waits until the merge applies and then goes to the target, redirected,
//! however the deliveries were batched. An event whose document is already another
//! stream (an applied alias) waits for a merge of that document only while the merge is
//! on its way (out, or at the head of its stream with every cut met): without a cut
//! nothing orders the two, and a merge still waiting may wait for that very event. Events
//! delivered before the merge keep their old path: they go to the source when ready, and
//! the merge folds them in. A merge a handler may have acknowledged is known again after
//! a restart: it is written before it is called.
//!
//! When the source is drained (`--exit-when-idle`), a merge that still cannot go (a lost
//! event before it, a lost cut) never will; an in-order consumer applies its sources'
//! events without it, so its fences are lifted then.
//!
//! A fence lasts until its merge applies. A merge that is dead-lettered lifts its
//! fences (its sources go on alone; the handler never folded them), a replayed one puts
//! them back. Fences are per engine: in a consumer group, a source event in another
//! member's partition does not see them (docs/design.md, "Handlers").

use crate::envelope::Op;

use super::stream::{Pending, Slot, StreamId, AWAITS_MERGE, FENCED, HAS_FENCE_WAITERS, MONOTONIC};
use super::Engine;

/// One merge known to the engine, seen from one of its sources.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Fence {
    /// The merge's stream (its target).
    pub(super) target: StreamId,
    /// The merge's version in the target.
    pub(super) version: u64,
    /// The source's cut: its last version before the merge.
    pub(super) cut: u64,
    /// The cut, extended over the source's versions delivered before the merge, with no
    /// gap from the cut and no `after` of their own: those go to the source first and the
    /// merge waits for them (whatever the batching; they can wait for nothing the merge
    /// waits for). Versions beyond it wait for the merge.
    pub(super) effective: u64,
    /// When the merge was delivered (0: restored from the store).
    pub(super) seq: u64,
    /// Lifted because the source was drained while the merge could not go.
    pub(super) lifted: bool,
}

impl Engine {
    /// Registers the fences of a merge put into `target`'s slots at `version`.
    pub(super) fn fence_merge_sources(&mut self, target: StreamId, version: u64, seq: u64) {
        let Some(Slot::Event(pending)) = self.streams[target]
            .extra
            .as_ref()
            .and_then(|x| x.slots.get(&version))
        else {
            return;
        };
        let Op::Merge { from } = &pending.event.op else {
            return;
        };
        // A source without a cut dead-letters the merge at dispatch: it fences nothing.
        let cuts: Vec<(Box<str>, u64)> = from
            .iter()
            .filter_map(|source| Some((source.clone(), pending.event.cut_for(source)?)))
            .collect();
        for (source, cut) in cuts {
            let s = self.intern(&source);
            let fence = Fence {
                target,
                version,
                cut,
                // Restored (seq 0): what came before it is no longer known; the source's
                // waiting versions beyond the applied one go after it (a handler may
                // have folded the source already; their keys are known to it if sent).
                effective: if seq == 0 {
                    cut.max(self.streams[s].applied)
                } else {
                    self.delivered_plainly_through(s, cut)
                },
                seq,
                lifted: false,
            };
            let fences = self.fences.entry(s).or_default();
            if !fences.contains(&fence) {
                fences.push(fence);
            }
            self.streams[s].flags.insert(FENCED);
        }
    }

    /// The highest version of `s` from `cut` on such that every version up to it is
    /// applied, out, or waiting with no `after` of its own and no merge.
    ///
    /// It stops below a version an earlier merge already holds back (beyond that merge's
    /// own effective cut): waiting for it would make this merge wait for the other one,
    /// which may wait for this one.
    fn delivered_plainly_through(&self, s: StreamId, cut: u64) -> u64 {
        let state = &self.streams[s];
        let mut through = cut.max(state.applied);
        let Some(extra) = state.extra.as_ref() else {
            return through;
        };
        let held_from = self
            .fences
            .get(&s)
            .into_iter()
            .flatten()
            .filter(|f| !f.lifted)
            .map(|f| f.effective + 1)
            .min()
            .unwrap_or(u64::MAX);
        loop {
            let next = through + 1;
            if next >= held_from {
                return through;
            }
            let plain = extra.in_flight_version == Some(next)
                || matches!(
                    extra.slots.get(&next),
                    Some(Slot::Event(p)) if p.event.after.is_empty()
                        && !matches!(p.event.op, Op::Merge { .. })
                );
            if !plain {
                return through;
            }
            through = next;
        }
    }

    /// What the merge at `target`'s `version` still waits for beyond its declared cuts:
    /// a source's versions delivered before it (its effective cut).
    pub(super) fn effective_cut_unmet(
        &self,
        target: StreamId,
        version: u64,
        event: &super::Event,
    ) -> Option<super::Dependency> {
        let Op::Merge { from } = &event.op else {
            return None;
        };
        from.iter().find_map(|source| {
            let &s = self.ids.get(&**source)?;
            let fence = self
                .fences
                .get(&s)?
                .iter()
                .find(|f| f.target == target && f.version == version && !f.lifted)?;
            let state = &self.streams[s];
            // A version of the source dead-lettered since (a refusal) holds the source,
            // not the merge: the merge goes, and what the source applies after the
            // operator's action reaches the target through the alias.
            let dead_lettered = matches!(
                state
                    .extra
                    .as_ref()
                    .and_then(|x| x.slots.get(&(state.applied + 1))),
                Some(Slot::DeadLettered(_))
            );
            (state.applied < fence.effective && !dead_lettered).then(|| super::Dependency {
                stream: source.clone(),
                version: fence.effective,
            })
        })
    }

    /// Lifts the fences of the merge at `target`'s `version` (applied, skipped or
    /// dead-lettered) and lets whatever waited for it decide again.
    pub(super) fn lift_merge_fences(&mut self, target: StreamId, version: u64) {
        let sources: Vec<StreamId> = self
            .fences
            .iter()
            .filter(|(_, fences)| {
                fences
                    .iter()
                    .any(|f| f.target == target && f.version == version)
            })
            .map(|(&s, _)| s)
            .collect();
        for s in sources {
            self.prune_fences(s, |f| f.target == target && f.version == version);
        }
        self.wake_fence_waiters(target);
    }

    fn prune_fences(&mut self, s: StreamId, gone: impl Fn(&Fence) -> bool) {
        if let Some(fences) = self.fences.get_mut(&s) {
            fences.retain(|f| !gone(f));
            if fences.is_empty() {
                self.fences.remove(&s);
                self.streams[s].flags.remove(FENCED);
            }
        }
    }

    /// Whether the merge behind `fence` still fences: it waits or runs, and the source
    /// was not drained while it could not go (see [`Engine::lift_stuck_fences`]).
    fn fence_holds(&self, fence: &Fence) -> bool {
        if fence.lifted {
            return false;
        }
        let state = &self.streams[fence.target];
        if state.applied >= fence.version {
            return false;
        }
        let Some(extra) = state.extra.as_ref() else {
            return false;
        };
        extra.in_flight_version == Some(fence.version)
            || matches!(extra.slots.get(&fence.version), Some(Slot::Event(_)))
    }

    /// Whether the merge behind `fence` is on its way: out, or at the head of its stream
    /// with every cut met, so that only its document, its row or its turn holds it.
    fn on_its_way(&self, fence: &Fence) -> bool {
        let state = &self.streams[fence.target];
        let Some(extra) = state.extra.as_ref() else {
            return false;
        };
        if extra.in_flight_version == Some(fence.version) {
            return true;
        }
        let head = match extra.slots.first_key_value() {
            Some((&version, _)) if state.flags.intersects(MONOTONIC) => version == fence.version,
            Some(_) => fence.version == state.applied + 1,
            None => false,
        };
        head && matches!(
            extra.slots.get(&fence.version),
            Some(Slot::Event(p)) if self.first_unmet(&p.event).is_none()
                && self.effective_cut_unmet(fence.target, fence.version, &p.event).is_none()
        )
    }

    /// The source is drained: a merge that cannot go now never will (a lost event before
    /// it, or a lost cut), and an in-order consumer applies its sources' events without
    /// it. Its fences are lifted and whatever waited for it goes on.
    pub(super) fn lift_stuck_fences(&mut self) {
        let mut targets = Vec::new();
        let stuck: Vec<(StreamId, usize)> = self
            .fences
            .iter()
            .flat_map(|(&s, fences)| {
                fences
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| !f.lifted && !self.on_its_way(f))
                    .map(move |(i, _)| (s, i))
            })
            .collect();
        for (s, i) in stuck {
            let fence = &mut self.fences.get_mut(&s).expect("collected above")[i];
            fence.lifted = true;
            targets.push(fence.target);
        }
        targets.sort_unstable();
        targets.dedup();
        for target in targets {
            self.wake_fence_waiters(target);
        }
    }

    /// The merge (target, version) that version `version` of `s`, delivered at `seq`,
    /// must wait for, if any.
    ///
    /// A merge never waits for a merge of one of its own sources: the two would name
    /// each other (a producer's cycle) and wait for each other forever; one goes, the
    /// other is refused at dispatch as before.
    pub(super) fn merge_fence_for(
        &self,
        s: StreamId,
        version: u64,
        seq: u64,
        own_sources: &[Box<str>],
    ) -> Option<(StreamId, u64)> {
        let own = self
            .fences
            .get(&s)
            .into_iter()
            .flatten()
            .filter(|f| f.effective < version);
        // Through an alias there is no cut to order the event against the merge, and the
        // merge's own waits may depend on it (a cycle a history allows): only a merge on
        // its way, which waits for nothing of that kind, holds such an event.
        let document = self.resolve(s);
        let inherited = (document != s)
            .then(|| self.fences.get(&document))
            .flatten()
            .into_iter()
            .flatten()
            .filter(|f| f.seq <= seq && self.on_its_way(f));
        // A merge of the event's own stream is ordered by the stream itself (and must not
        // wait for itself when it names its own document's source).
        own.chain(inherited)
            .find(|f| {
                f.target != s
                    && !own_sources
                        .iter()
                        .any(|source| **source == *self.names[f.target])
                    && self.fence_holds(f)
            })
            .map(|f| (f.target, f.version))
    }

    /// What a head with no unmet `after` waits for: a merge, or nothing.
    pub(super) fn merge_wait_reason(
        &self,
        s: StreamId,
        version: u64,
        pending: &Pending,
    ) -> (String, super::WaitsFor) {
        let own_sources: &[Box<str>] = match &pending.event.op {
            Op::Merge { from } => from,
            _ => &[],
        };
        match self.merge_fence_for(s, version, pending.seq, own_sources) {
            Some((target, merge_version)) => (
                format!(
                    "waits for the merge at `{}` version {merge_version} (it comes after the merge's cut)",
                    self.names[target]
                ),
                super::WaitsFor::Merge {
                    stream: self.names[target].clone(),
                    version: merge_version,
                },
            ),
            None => ("ready to apply".into(), super::WaitsFor::Nothing),
        }
    }

    /// Drops the fences of `s` whose merge no longer waits (moved on without this
    /// engine seeing it: another member's progress, a rebuild).
    pub(super) fn prune_stale_fences(&mut self, s: StreamId) {
        let stale: Vec<Fence> = self
            .fences
            .get(&s)
            .into_iter()
            .flatten()
            .filter(|f| !self.fence_holds(f))
            .copied()
            .collect();
        if !stale.is_empty() {
            self.prune_fences(s, |f| stale.contains(f));
        }
    }

    /// The head `version` of `s` waits for the merge at `target`'s `merge_version`.
    pub(super) fn wait_for_merge(&mut self, s: StreamId, target: StreamId, merge_version: u64) {
        debug_assert!(self.streams[target].applied < merge_version);
        self.fence_waiters.entry(target).or_default().push(s);
        self.streams[target].flags.insert(HAS_FENCE_WAITERS);
        self.block(s, AWAITS_MERGE);
    }

    /// Every stream waiting for a merge of `target` decides again (it may wait for
    /// another one).
    pub(super) fn wake_fence_waiters(&mut self, target: StreamId) {
        if !self.streams[target].flags.intersects(HAS_FENCE_WAITERS) {
            return;
        }
        self.streams[target].flags.remove(HAS_FENCE_WAITERS);
        for s in self.fence_waiters.remove(&target).unwrap_or_default() {
            self.unblock(s);
        }
    }

    /// Whether `s` holds a merge among its waiting events. Such a stream never leaves
    /// memory (its fences must hold across a spill and a restart).
    pub(super) fn holds_merge(&self, s: StreamId) -> bool {
        self.streams[s].extra.as_ref().is_some_and(|x| {
            x.slots.values().any(
                |slot| matches!(slot, Slot::Event(p) if matches!(p.event.op, Op::Merge { .. })),
            )
        })
    }
}
