//! What a delivered event becomes: applied at once (the express lane), queued, buffered
//! behind a gap, counted as a duplicate or stale, or dead-lettered as overflow.

use std::sync::Arc;

use crate::checkpoint::SourcePosition;
use crate::dedupe::id_hash;
use crate::envelope::{Dependency, Event, Op};
use crate::state::DeadLetterKind;

use super::stream::{
    Pending, Slot, StreamId, BLOCKED, DOCUMENT_BUSY, FENCED, IN_FLIGHT, IN_READY, MONOTONIC,
    PAUSED, SPILLED,
};
use super::{Action, DecisionKind, Disposition, Engine, Notice, Work};

impl Engine {
    /// Decides what a delivered event becomes (see the module documentation).
    pub(super) fn accept(
        &mut self,
        now_ms: u64,
        position: Option<SourcePosition>,
        event: Event,
    ) -> Disposition {
        let s = self.intern(&event.stream);
        let hash = id_hash(&event.id);
        if event.version <= self.streams[s].applied {
            return self.skip(self.dedupe.contains(hash), &event);
        }
        if self.streams[s].flags.intersects(SPILLED) {
            return self.hold_until_loaded(s, position, event);
        }
        // The same version already delivered (waiting, out, dead-lettered or skipped): a
        // redelivery, or a second writer. Decided as for an applied version, so that
        // whether the first had applied yet (batching, timing) changes nothing: the first
        // claimant keeps the version, the other is stale.
        if let Some(same_id) = self.version_holder(s, &event) {
            let seen = same_id || self.dedupe.contains(hash);
            return self.skip(seen, &event);
        }
        if let Some(sequence) = self.dedupe.insert(hash) {
            self.dedupe_put.push((sequence, hash));
        }
        if self.takes_express_lane(s, position, &event) {
            self.send_express(s, position, event);
            return Disposition::Queued;
        }
        if let Some(reason) = self.overflow(s, &event) {
            self.dead_letter_event(now_ms, DeadLetterKind::Overflow, &event, reason, position);
            return Disposition::DeadLettered;
        }
        self.put_in_slot(now_ms, s, position, event)
    }

    /// A spilled stream's waiting events are in the store: the event is decided once
    /// they are back.
    fn hold_until_loaded(
        &mut self,
        s: StreamId,
        position: Option<SourcePosition>,
        event: Event,
    ) -> Disposition {
        self.request_stream_load(s);
        let held = self.held.entry(s).or_default();
        // A redelivery of an offset already held is the same delivery: holding it twice
        // would let the second copy, a duplicate once loaded, settle the offset while the
        // first still waits in memory.
        if position.is_some() && held.iter().any(|(p, _)| *p == position) {
            // Counted here; its offset's entry stays with the held copy.
            self.counters.duplicate += 1;
            return Disposition::Duplicate;
        }
        held.push((position, event));
        Disposition::Buffered
    }

    /// Whether the event's version is held already, and if so whether by an event with
    /// the same id (a dead letter, a skip marker or a work out count as another holder).
    fn version_holder(&self, s: StreamId, event: &Event) -> Option<bool> {
        let extra = self.streams[s].extra.as_deref()?;
        match extra.slots.get(&event.version) {
            Some(Slot::Event(pending)) => Some(pending.event.id == event.id),
            Some(Slot::DeadLettered(_)) | Some(Slot::Skipped) => Some(false),
            None => (extra.in_flight_version == Some(event.version)).then_some(false),
        }
    }

    /// The express lane: the next version of an idle stream (nothing waiting, nothing in
    /// flight, no alias, its document free) that waits for nothing is decided at delivery,
    /// without a slot and a trip through the ready queue: most deliveries of a healthy
    /// stream. Not while delivered streams are kept: their positions are read from the
    /// store before anything of them goes out ([`Engine::take_delivered_streams`]).
    fn takes_express_lane(
        &self,
        s: StreamId,
        position: Option<SourcePosition>,
        event: &Event,
    ) -> bool {
        let state = &self.streams[s];
        self.delivered_streams.is_none()
            && state.extra.is_none()
            && !state.flags.intersects(
                BLOCKED
                    | SPILLED
                    | MONOTONIC
                    | IN_FLIGHT
                    | IN_READY
                    | DOCUMENT_BUSY
                    | FENCED
                    | PAUSED,
            )
            && event.version == state.applied + 1
            && position.is_some()
            && event.after.is_empty()
            && !matches!(event.op, Op::Merge { .. })
    }

    /// Hands the event out through the express queue, in the state `try_dispatch` would
    /// have left.
    fn send_express(&mut self, s: StreamId, position: Option<SourcePosition>, event: Event) {
        self.decide(s, &event, DecisionKind::Queued);
        let extra = self.extra(s);
        extra.in_flight_version = Some(event.version);
        extra.contiguous_through = event.version;
        self.streams[s].flags.insert(IN_FLIGHT | DOCUMENT_BUSY);
        self.in_flight += 1;
        self.express.push_back(Work {
            event,
            redirect: None,
            action: Action::Apply,
            stream: s,
            position,
            written: false,
            target: s,
            source_ids: Vec::new(),
        });
    }

    /// Why the event would overflow its stream's bound on waiting events, if it would.
    /// What extends the run from the applied version is always taken while the stream
    /// flows: it is what lets the waiting ones drain. The bound is for what waits.
    fn overflow(&self, s: StreamId, event: &Event) -> Option<String> {
        let state = &self.streams[s];
        let pending_count = state.extra.as_ref().map_or(0, |x| x.slots.len());
        if pending_count < self.config.stream_pending_events_max {
            return None;
        }
        let flows_next = !state.flags.intersects(BLOCKED | PAUSED)
            && event.version <= self.contiguous_through(s) + 1;
        (!flows_next).then(|| {
            format!(
                "stream `{}` already holds {pending_count} waiting events (the bound); \
                 replay this entry once the stream has caught up",
                event.stream
            )
        })
    }

    /// Where the run of versions delivered without a hole ends (at least the applied one).
    fn contiguous_through(&self, s: StreamId) -> u64 {
        let state = &self.streams[s];
        state
            .extra
            .as_ref()
            .map_or(state.applied, |x| x.contiguous_through.max(state.applied))
    }

    /// Puts the event in its stream's slots: queued when it is next in line and the stream
    /// flows, buffered (made durable) otherwise.
    fn put_in_slot(
        &mut self,
        now_ms: u64,
        s: StreamId,
        position: Option<SourcePosition>,
        event: Event,
    ) -> Disposition {
        let version = event.version;
        let state = &self.streams[s];
        let monotonic = state.flags.intersects(MONOTONIC);
        let waiting = state.flags.intersects(BLOCKED | PAUSED);
        let contiguous_through = self.contiguous_through(s);
        // Without a source position nothing would re-deliver the event after a crash, so
        // it must be durable from the start.
        let in_line =
            !waiting && (monotonic || version == contiguous_through + 1) && position.is_some();
        let gap = !monotonic && version > contiguous_through + 1;
        let counted_parked = self.count_delivery(s, &event, gap, contiguous_through);
        self.deliveries += 1;
        let seq = self.deliveries;
        let merge = matches!(event.op, Op::Merge { .. });
        let pending = Pending {
            event,
            position,
            home_partition: position.map(|p| p.partition),
            durable: !in_line,
            written: false,
            parked: false,
            seq,
            counted_parked,
            delivered_ms: now_ms,
        };
        self.extra(s)
            .slots
            .insert(version, Slot::Event(Box::new(pending)));
        if merge {
            self.fence_merge_sources(s, version, seq);
        }
        if !in_line {
            self.pending_changed.insert((s, version));
        }
        self.extend_contiguous(s);
        self.refresh_gap(s, now_ms);
        self.schedule(s);
        if in_line {
            Disposition::Queued
        } else {
            Disposition::Buffered
        }
    }

    /// Counts an event going into a slot: `buffered` behind a gap, `parked` when an `after`
    /// names a version not delivered yet. Counted by what was delivered before it, never
    /// by what happened to be applied yet: the counters are a function of the deliveries
    /// alone, whatever the batching. Returns whether it counted `parked`.
    fn count_delivery(
        &mut self,
        s: StreamId,
        event: &Event,
        gap: bool,
        contiguous_through: u64,
    ) -> bool {
        if gap {
            self.counters.buffered += 1;
            self.reorder_distances
                .record(event.version - contiguous_through - 1);
        }
        let counted_parked = self.awaits_undelivered(event);
        if counted_parked {
            self.counters.parked += 1;
        }
        if self.config.decisions_traced {
            let kind = if gap {
                DecisionKind::Buffered
            } else if let Some(d) = counted_parked.then(|| self.first_unmet(event)).flatten() {
                DecisionKind::Parked {
                    on: Arc::from(&*d.stream),
                    version: d.version,
                }
            } else {
                DecisionKind::Queued
            };
            self.decide(s, event, kind);
        }
        counted_parked
    }

    pub(super) fn skip(&mut self, seen: bool, event: &Event) -> Disposition {
        let s = self.ids[&*event.stream];
        if seen {
            self.counters.duplicate += 1;
            self.decide(s, event, DecisionKind::Duplicate);
            Disposition::Duplicate
        } else {
            self.counters.stale += 1;
            self.decide(s, event, DecisionKind::Stale);
            self.notice(Notice::Stale {
                stream: self.names[self.ids[&*event.stream]].clone(),
                version: event.version,
                id: event.id.clone(),
            });
            Disposition::Stale
        }
    }

    /// Whether an `after` of `event` names a version not delivered yet: not applied, not
    /// waiting, not out (a spilled stream's waiting versions count as not delivered).
    pub(super) fn awaits_undelivered(&self, event: &Event) -> bool {
        event.after.iter().any(|d| {
            let Some(&a) = self.ids.get(&*d.stream) else {
                return true;
            };
            let state = &self.streams[a];
            if state.applied >= d.version {
                return false;
            }
            !state.extra.as_ref().is_some_and(|x| {
                x.in_flight_version == Some(d.version) || x.slots.contains_key(&d.version)
            })
        })
    }

    pub(super) fn first_unmet(&self, event: &Event) -> Option<Dependency> {
        event
            .after
            .iter()
            .find(|d| self.applied_version(&d.stream) < d.version)
            .cloned()
    }
}
