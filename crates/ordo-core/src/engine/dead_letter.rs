//! Dead-lettering: the entry written for the store, the notice, and the marker a
//! sequenced entry leaves in its stream's slots (the stream waits behind it).

use std::sync::Arc;

use crate::checkpoint::SourcePosition;
use crate::envelope::Event;
use crate::state::{DeadLetter, DeadLetterKind};

use super::stream::{Slot, StreamId};
use super::{DecisionKind, Engine, Notice};

impl Engine {
    pub(super) fn dead_letter_event(
        &mut self,
        now_ms: u64,
        kind: DeadLetterKind,
        event: &Event,
        reason: String,
        position: Option<SourcePosition>,
    ) -> u64 {
        if self.config.decisions_traced {
            if let Some(&s) = self.ids.get(&*event.stream) {
                let entry = self.next_dead_letter_id;
                self.decide(s, event, DecisionKind::DeadLettered { entry });
            }
        }
        self.dead_letter(
            now_ms,
            kind,
            Some(event.stream.clone()),
            Some(event.version),
            Some(event.id.clone()),
            event.to_json_string(),
            reason,
            position,
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn dead_letter(
        &mut self,
        now_ms: u64,
        kind: DeadLetterKind,
        stream: Option<Box<str>>,
        version: Option<u64>,
        event_id: Option<Box<str>>,
        body: String,
        reason: String,
        position: Option<SourcePosition>,
    ) -> u64 {
        let id = self.next_dead_letter_id;
        self.next_dead_letter_id += 1;
        self.counters.dead_lettered += 1;
        self.notice(Notice::DeadLettered {
            id,
            stream: stream.as_deref().map(Arc::from),
            version,
            kind,
            reason: reason.clone(),
        });
        self.dead_letters_put.push(DeadLetter {
            id,
            kind,
            stream,
            version,
            event_id,
            body,
            reason,
            position,
            at_ms: now_ms,
        });
        id
    }

    pub(super) fn mark_dead_lettered(&mut self, s: StreamId, version: u64, id: u64) {
        self.extra(s).slots.insert(version, Slot::DeadLettered(id));
        self.marked_streams.insert(s);
    }

    /// The ids of the dead letters streams wait behind here (sequenced entries). A member
    /// of a group compares them with the store: an operator may have replayed or skipped
    /// one from another process.
    pub fn dead_letter_markers(&mut self) -> Vec<u64> {
        let mut markers = Vec::new();
        let streams = &self.streams;
        self.marked_streams.retain(|&s| {
            let before = markers.len();
            if let Some(extra) = streams[s].extra.as_ref() {
                markers.extend(extra.slots.values().filter_map(|slot| match slot {
                    Slot::DeadLettered(id) => Some(*id),
                    _ => None,
                }));
            }
            // A stream whose markers are all gone (replayed, skipped, passed) is dropped.
            markers.len() > before
        });
        markers.sort_unstable();
        markers
    }
}
