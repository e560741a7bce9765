//! Which decision the engine took for each event, when asked to say
//! ([`super::Config::decisions_traced`]): the per-event trace a team reads with
//! `ordo run -v` (buffered, parked on X, released, applied to Y, redirected, duplicate,
//! stale, dead-lettered, waiting for a merge). Off, it costs one branch per decision.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::envelope::Event;

use super::stream::{Slot, StreamId};
use super::Engine;

/// Most decisions kept for [`Engine::poll_decision`]; older ones are dropped and counted.
pub const DECISIONS_MAX: usize = 65_536;

/// What happened to one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecisionKind {
    /// In line: it goes when its turn comes.
    Queued,
    /// Arrived before an earlier version of its stream.
    Buffered,
    /// Names in `after` a version not delivered yet.
    Parked {
        /// The stream awaited.
        on: Arc<str>,
        /// The version awaited.
        version: u64,
    },
    /// A parked event went on.
    Released,
    /// Waits for a merge its stream is a source of (or its document is).
    WaitsForMerge {
        /// The merge's stream.
        target: Arc<str>,
        /// The merge's version.
        version: u64,
    },
    /// Applied, to its own document or, redirected, to a merge target's.
    Applied {
        /// The document.
        document: Arc<str>,
        /// Whether through an alias (late after a merge).
        redirected: bool,
    },
    /// Skipped: seen before.
    Duplicate,
    /// Skipped: a new id at a version its stream holds or passed.
    Stale,
    /// Dead-lettered (entry `entry`).
    DeadLettered {
        /// The entry's id.
        entry: u64,
    },
}

impl DecisionKind {
    /// The decision's name, as the trace prints it.
    pub fn name(&self) -> &'static str {
        match self {
            DecisionKind::Queued => "queued",
            DecisionKind::Buffered => "buffered",
            DecisionKind::Parked { .. } => "parked",
            DecisionKind::Released => "released",
            DecisionKind::WaitsForMerge { .. } => "waits-for-merge",
            DecisionKind::Applied {
                redirected: true, ..
            } => "redirected",
            DecisionKind::Applied { .. } => "applied",
            DecisionKind::Duplicate => "duplicate",
            DecisionKind::Stale => "stale",
            DecisionKind::DeadLettered { .. } => "dead-lettered",
        }
    }
}

/// One decision about one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The event's stream.
    pub stream: Arc<str>,
    /// Its version.
    pub version: u64,
    /// Its id.
    pub id: Box<str>,
    /// What was decided.
    pub kind: DecisionKind,
}

/// The bounded queue of decisions not yet polled.
#[derive(Debug, Default)]
pub(super) struct Decisions {
    queue: VecDeque<Decision>,
    dropped: u64,
}

impl Engine {
    /// Records a decision about `event` of stream `s`, if decisions are traced.
    pub(super) fn decide(&mut self, s: StreamId, event: &Event, kind: DecisionKind) {
        if !self.config.decisions_traced {
            return;
        }
        let decisions = &mut self.decisions;
        if decisions.queue.len() == DECISIONS_MAX {
            decisions.queue.pop_front();
            decisions.dropped += 1;
        }
        decisions.queue.push_back(Decision {
            stream: self.names[s].clone(),
            version: event.version,
            id: event.id.clone(),
            kind,
        });
    }

    /// Records a decision about the event waiting at `version` of `s`, if traced.
    pub(super) fn decide_slot(&mut self, s: StreamId, version: u64, kind: DecisionKind) {
        if !self.config.decisions_traced {
            return;
        }
        let Some(Slot::Event(pending)) = self.streams[s]
            .extra
            .as_ref()
            .and_then(|x| x.slots.get(&version))
        else {
            return;
        };
        let event = pending.event.clone();
        self.decide(s, &event, kind);
    }

    /// The next decision, oldest first (only with [`super::Config::decisions_traced`]).
    #[must_use]
    pub fn poll_decision(&mut self) -> Option<Decision> {
        self.decisions.queue.pop_front()
    }

    /// Decisions dropped because nobody polled them.
    pub fn decisions_dropped(&self) -> u64 {
        self.decisions.dropped
    }
}
