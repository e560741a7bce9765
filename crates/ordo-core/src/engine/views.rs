//! Read-only views for operators and tests: every waiting event with what holds it at the
//! root, the streams' positions and aliases, a stream's dead letter at a version.

use std::sync::Arc;

use crate::envelope::Dependency;

use super::stream::{Pending, Slot, StreamId, MONOTONIC, PAUSED, STALLED};
use super::Engine;

/// One waiting event, for `parked list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitingEvent {
    /// The stream.
    pub stream: Arc<str>,
    /// The version.
    pub version: u64,
    /// The event id (absent for a skip marker).
    pub id: Option<Box<str>>,
    /// What it waits for, in words.
    pub reason: String,
    /// What holds it, at the root (an event behind a waiting head shares the head's).
    pub waits_for: WaitsFor,
}

/// What holds a waiting event, at the root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WaitsFor {
    /// A version of its own stream that was not delivered (a gap).
    Gap {
        /// The first missing version.
        version: u64,
        /// Whether the gap outlived the gap timeout.
        stalled: bool,
    },
    /// A version of another stream (an `after`, a merge's cut).
    Dependency {
        /// The stream.
        stream: Arc<str>,
        /// The version it must apply.
        version: u64,
    },
    /// A dead letter of its own stream (sequenced).
    DeadLetter {
        /// The entry.
        id: u64,
    },
    /// A merge its stream was folded into, or is a source of.
    Merge {
        /// The merge's stream.
        stream: Arc<str>,
        /// The merge's version.
        version: u64,
    },
    /// An operator paused its stream.
    Paused,
    /// Nothing: it goes at the next turn.
    Nothing,
}

impl WaitsFor {
    /// The kind, as `parked list` names it.
    pub fn kind(&self) -> &'static str {
        match self {
            WaitsFor::Gap { .. } => "gap",
            WaitsFor::Dependency { .. } => "dependency",
            WaitsFor::DeadLetter { .. } => "dead-letter",
            WaitsFor::Merge { .. } => "merge",
            WaitsFor::Paused => "paused",
            WaitsFor::Nothing => "nothing",
        }
    }
}

impl Engine {
    /// Every waiting event with what it waits for, sorted by stream and version.
    pub fn waiting(&self) -> Vec<WaitingEvent> {
        let mut all = Vec::new();
        for (s, state) in self.streams.iter() {
            let Some(extra) = state.extra.as_ref() else {
                continue;
            };
            let name = &self.names[s];
            // What holds everything behind it: (in words, at the root).
            let mut blocker: Option<(String, WaitsFor)> = (state.flags.intersects(PAUSED))
                .then(|| (format!("`{name}` paused by an operator"), WaitsFor::Paused));
            let mut expected = state.applied + 1;
            for (&version, slot) in &extra.slots {
                if extra.in_flight_version == Some(expected) {
                    expected += 1;
                }
                let monotonic = state.flags.intersects(MONOTONIC);
                let gap = !monotonic && version > expected;
                if gap && blocker.is_none() {
                    let stalled = state.flags.intersects(STALLED);
                    blocker = Some((
                        format!(
                            "gap: `{name}` is missing version {expected}{}",
                            if stalled { " (stalled)" } else { "" }
                        ),
                        WaitsFor::Gap {
                            version: expected,
                            stalled,
                        },
                    ));
                }
                match slot {
                    Slot::Event(pending) => {
                        let (reason, waits_for) = match &blocker {
                            Some((b, root)) => (format!("waits behind {b}"), root.clone()),
                            None if pending.parked || version == expected => {
                                self.head_wait(s, version, pending)
                            }
                            None => ("ready to apply".into(), WaitsFor::Nothing),
                        };
                        if blocker.is_none() && waits_for != WaitsFor::Nothing {
                            let what = if pending.parked { "parked" } else { "waiting" };
                            blocker = Some((
                                format!("{what} `{name}` version {version}"),
                                waits_for.clone(),
                            ));
                        }
                        all.push(WaitingEvent {
                            stream: name.clone(),
                            version,
                            id: Some(pending.event.id.clone()),
                            reason,
                            waits_for,
                        });
                    }
                    Slot::DeadLettered(id) => {
                        if blocker.is_none() {
                            blocker = Some((
                                format!("dead letter {id} at `{name}` version {version}"),
                                WaitsFor::DeadLetter { id: *id },
                            ));
                        }
                    }
                    Slot::Skipped => {}
                }
                expected = version + 1;
            }
        }
        all.sort_by(|a, b| (&a.stream, a.version).cmp(&(&b.stream, b.version)));
        all
    }

    /// What the head `version` of `s` waits for, in words and at the root.
    pub(super) fn head_wait(
        &self,
        s: StreamId,
        version: u64,
        pending: &Pending,
    ) -> (String, WaitsFor) {
        if let Some(d) = self.first_unmet(&pending.event) {
            let reason = self.dependency_reason(&d);
            let stream = self
                .ids
                .get(&*d.stream)
                .map_or_else(|| Arc::from(&*d.stream), |&a| self.names[a].clone());
            return (
                reason,
                WaitsFor::Dependency {
                    stream,
                    version: d.version,
                },
            );
        }
        if let Some(d) = self.effective_cut_unmet(s, version, &pending.event) {
            let stream = self.names[self.ids[&*d.stream]].clone();
            return (
                format!(
                    "waits for `{}` to apply version {} (delivered before this merge, it goes first)",
                    d.stream, d.version
                ),
                WaitsFor::Dependency {
                    stream,
                    version: d.version,
                },
            );
        }
        self.merge_wait_reason(s, version, pending)
    }

    pub(super) fn dependency_reason(&self, dependency: &Dependency) -> String {
        let mut reason = format!(
            "waits for `{}` to apply version {}",
            dependency.stream, dependency.version
        );
        if let Some(&d) = self.ids.get(&*dependency.stream) {
            let state = &self.streams[d];
            reason.push_str(&format!(" (it has applied {})", state.applied));
            if let Some(Slot::DeadLettered(id)) = state
                .extra
                .as_ref()
                .and_then(|x| x.slots.get(&(state.applied + 1)))
            {
                reason.push_str(&format!("; its next version is dead letter {id}"));
            }
        }
        reason
    }

    /// Each tracked stream's applied version and final merge target, sorted by stream.
    pub fn stream_positions(&self) -> Vec<(Arc<str>, u64, Option<Arc<str>>)> {
        let mut all: Vec<_> = self
            .streams
            .ids()
            .map(|s| {
                let target = self.resolve(s);
                let merged = (target != s).then(|| self.names[target].clone());
                (self.names[s].clone(), self.streams[s].applied, merged)
            })
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// The dead letter a stream waits behind at `version`, if any.
    pub fn dead_letter_at(&self, stream: &str, version: u64) -> Option<u64> {
        let &s = self.ids.get(stream)?;
        match self.streams[s].extra.as_ref()?.slots.get(&version) {
            Some(Slot::DeadLettered(id)) => Some(*id),
            _ => None,
        }
    }

    /// A stream's applied version (0 when unknown).
    pub fn applied_version(&self, stream: &str) -> u64 {
        self.ids.get(stream).map_or(0, |&s| self.streams[s].applied)
    }

    /// Where a stream's events land: itself, or the end of its alias chain.
    pub fn resolve_document(&self, stream: &str) -> Option<Arc<str>> {
        self.ids
            .get(stream)
            .map(|&s| self.names[self.resolve(s)].clone())
    }
}
