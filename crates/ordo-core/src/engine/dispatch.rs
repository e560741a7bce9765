//! Whether a stream's head goes out now, and if not what it waits for: an unmet `after`
//! (parked), a merge that fences it, a busy document, or its own dead letter.

use crate::envelope::{Dependency, Op};
use crate::state::DeadLetterKind;

use super::stream::{
    Pending, Slot, StreamId, BEHIND_DEAD_LETTER, BLOCKED, DOCUMENT_BUSY, FENCED, IN_FLIGHT,
    IN_PARKED_QUEUE, MONOTONIC, PARKED, PAUSED,
};
use super::{Action, DecisionKind, Engine, Notice, Work};

impl Engine {
    /// Hands out the head of `s` if nothing holds it; otherwise records what it waits for
    /// (and where it will be woken from).
    pub(super) fn try_dispatch(&mut self, now_ms: u64, s: StreamId) -> Option<Work> {
        let (version, merge) = self.dispatchable_head(s)?;
        if self.head_must_wait(now_ms, s, version) {
            return None;
        }
        let target = self.resolve(s);
        let (action, source_ids) = if merge {
            match self.merge_sources(s, version, target) {
                Ok(merge) => merge,
                Err(reason) => {
                    self.reject_head(now_ms, s, version, reason);
                    return None;
                }
            }
        } else {
            (Action::Apply, Vec::new())
        };
        if !self.lock_documents(s, target, &source_ids) {
            return None;
        }
        Some(self.hand_out(now_ms, s, version, target, action, source_ids))
    }

    /// The version of the head of `s`, and whether it is a merge, if it holds an event that
    /// is next in line. A dead letter at the head blocks the stream; a skip marker is
    /// passed over.
    fn dispatchable_head(&mut self, s: StreamId) -> Option<(u64, bool)> {
        let state = &self.streams[s];
        if state.flags.intersects(IN_FLIGHT | BLOCKED | PAUSED) {
            return None;
        }
        let (&version, slot) = state.extra.as_ref()?.slots.first_key_value()?;
        if !state.flags.intersects(MONOTONIC) && version != state.applied + 1 {
            return None;
        }
        match slot {
            Slot::Event(pending) => Some((version, matches!(pending.event.op, Op::Merge { .. }))),
            Slot::DeadLettered(_) => {
                self.block(s, BEHIND_DEAD_LETTER);
                None
            }
            Slot::Skipped => {
                self.extra(s).slots.remove(&version);
                self.pending_changed.insert((s, version));
                self.counters.skipped += 1;
                self.advance(s, version);
                self.schedule(s);
                None
            }
        }
    }

    /// The head event of `s` at `version` (checked by [`Self::dispatchable_head`]).
    fn head(&self, s: StreamId, version: u64) -> &Pending {
        match self.streams[s]
            .extra
            .as_ref()
            .and_then(|x| x.slots.get(&version))
        {
            Some(Slot::Event(pending)) => pending,
            _ => panic!("the head of a stream being dispatched is an event"),
        }
    }

    /// Whether the head at `version` must wait, in this order: a merge without a cut for
    /// every source is refused; an unmet `after` or cut parks it; a merge that fences it
    /// holds it; a merge to be written first waits for the commit.
    fn head_must_wait(&mut self, now_ms: u64, s: StreamId, version: u64) -> bool {
        let pending = self.head(s, version);
        if let Some(reason) = pending.event.merge_without_cut() {
            self.reject_head(now_ms, s, version, reason);
            return true;
        }
        let unmet = self
            .first_unmet(&pending.event)
            .or_else(|| self.effective_cut_unmet(s, version, &pending.event));
        if let Some(dependency) = unmet {
            self.park(s, version, dependency);
            return true;
        }
        let seq = pending.seq;
        let unwritten_merge = matches!(pending.event.op, Op::Merge { .. }) && !pending.written;
        let own_sources: Vec<Box<str>> = match &pending.event.op {
            Op::Merge { from } => from.clone(),
            _ => Vec::new(),
        };
        if self.streams[s].flags.intersects(FENCED) || self.resolve(s) != s {
            if let Some((target, merge_version)) =
                self.merge_fence_for(s, version, seq, &own_sources)
            {
                let kind = DecisionKind::WaitsForMerge {
                    target: self.names[target].clone(),
                    version: merge_version,
                };
                self.decide_slot(s, version, kind);
                self.wait_for_merge(s, target, merge_version);
                return true;
            }
            self.prune_stale_fences(s);
        }
        if unwritten_merge && self.config.merges_written_before_dispatch {
            self.write_merge_first(s, version);
            return true;
        }
        false
    }

    /// What the merge at the head (`version`) asks: fold its sources into `target`. A merge
    /// whose source is merged already, or that would close an alias cycle, is refused with
    /// the reason.
    fn merge_sources(
        &self,
        s: StreamId,
        version: u64,
        target: StreamId,
    ) -> Result<(Action, Vec<StreamId>), String> {
        let pending = self.head(s, version);
        let Op::Merge { from } = &pending.event.op else {
            return Ok((Action::Apply, Vec::new()));
        };
        let mut sources = Vec::with_capacity(from.len());
        let mut source_ids = Vec::with_capacity(from.len());
        for source in from {
            // The cut was met (`head_must_wait`), so the source is tracked.
            let id = self.ids[&**source];
            let resolved = self.resolve(id);
            if resolved != id {
                return Err(format!(
                    "source `{source}` is already merged into `{}`",
                    self.names[resolved]
                ));
            }
            if id == target {
                return Err(format!(
                    "alias cycle: `{}` is already merged into `{source}`",
                    pending.event.stream
                ));
            }
            sources.push(self.names[id].clone());
            source_ids.push(id);
        }
        Ok((Action::Merge { sources }, source_ids))
    }

    /// Locks the documents a work of `s` touches, or queues `s` behind the first busy one.
    fn lock_documents(&mut self, s: StreamId, target: StreamId, sources: &[StreamId]) -> bool {
        let locked = std::iter::once(target).chain(sources.iter().copied());
        if let Some(busy) = locked
            .clone()
            .find(|&d| self.streams[d].flags.intersects(DOCUMENT_BUSY))
        {
            self.document_waiters.entry(busy).or_default().push(s);
            return false;
        }
        for d in locked {
            self.streams[d].flags.insert(DOCUMENT_BUSY);
        }
        true
    }

    /// Takes the head out of its slot and into a [`Work`]: the stream is in flight until
    /// the work comes back.
    fn hand_out(
        &mut self,
        now_ms: u64,
        s: StreamId,
        version: u64,
        target: StreamId,
        action: Action,
        source_ids: Vec<StreamId>,
    ) -> Work {
        let extra = self.extra(s);
        let Some(Slot::Event(pending)) = extra.slots.remove(&version) else {
            panic!("the head of a stream being dispatched is an event");
        };
        extra.in_flight_version = Some(version);
        self.streams[s].flags.insert(IN_FLIGHT);
        self.in_flight += 1;
        let pending = *pending;
        if pending.counted_parked {
            self.count_release(now_ms, s, version, &pending);
        }
        if pending.position.is_none() && !pending.written {
            self.out_unwritten.insert(
                (s, version),
                (pending.event.clone(), pending.home_partition),
            );
        }
        Work {
            event: pending.event,
            redirect: (target != s).then(|| self.names[target].clone()),
            action,
            stream: s,
            position: pending.position,
            written: pending.written,
            target,
            source_ids,
        }
    }

    /// A parked event goes out: counted `released`, and noticed if it waited long.
    fn count_release(&mut self, now_ms: u64, s: StreamId, version: u64, pending: &Pending) {
        self.counters.released += 1;
        self.decide(s, &pending.event, DecisionKind::Released);
        let waited_ms = now_ms.saturating_sub(pending.delivered_ms);
        if waited_ms >= self.config.long_parked_ms {
            self.notice(Notice::Released {
                stream: self.names[s].clone(),
                version,
                waited_ms,
            });
        }
    }

    /// Holds a merge until the next change set has written it (see
    /// [`Config::merges_written_before_dispatch`]).
    pub(super) fn write_merge_first(&mut self, s: StreamId, version: u64) {
        if let Some(Slot::Event(pending)) = self.extra(s).slots.get_mut(&version) {
            pending.durable = true;
        }
        self.pending_changed.insert((s, version));
        if !self.merges_to_write.contains(&s) {
            self.merges_to_write.push(s);
        }
    }

    pub(super) fn park(&mut self, s: StreamId, version: u64, dependency: Dependency) {
        let awaited = self.intern(&dependency.stream);
        if let Some(Slot::Event(pending)) = self.extra(s).slots.get_mut(&version) {
            pending.parked = true;
            // Parked events are durable whatever they were: the wait may be long.
            pending.durable = true;
        }
        self.pending_changed.insert((s, version));
        self.add_dependent(awaited, dependency.version, s);
        if !self.streams[s].flags.intersects(IN_PARKED_QUEUE) {
            self.streams[s].flags.insert(IN_PARKED_QUEUE);
            self.parked_queue.push_back(s);
        }
        self.block(s, PARKED);
    }

    /// Dead-letters the head of a stream in sequence: the stream waits behind it.
    pub(super) fn reject_head(&mut self, now_ms: u64, s: StreamId, version: u64, reason: String) {
        let Some(Slot::Event(pending)) = self.extra(s).slots.remove(&version) else {
            unreachable!("rejecting a head event that is not there");
        };
        if matches!(pending.event.op, Op::Merge { .. }) {
            self.lift_merge_fences(s, version);
        }
        if let Some(position) = pending.position {
            self.checkpoints.settle(position);
        }
        let id = self.dead_letter_event(
            now_ms,
            DeadLetterKind::Sequenced,
            &pending.event,
            reason,
            None,
        );
        self.mark_dead_lettered(s, version, id);
        self.pending_changed.insert((s, version));
        self.block(s, BEHIND_DEAD_LETTER);
    }

    pub(super) fn wake_document_waiters(&mut self, document: StreamId) {
        if let Some(waiters) = self.document_waiters.remove(&document) {
            for waiter in waiters {
                self.schedule(waiter);
            }
        }
    }
}
