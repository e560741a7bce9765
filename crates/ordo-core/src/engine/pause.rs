//! Which streams an operator holds back: a paused stream dispatches nothing, and what
//! arrives for it is made durable (written as waiting at the next commit), so the
//! source's positions go on past it and a restart loses none of it. Resuming it puts
//! its head back in the ready queue, where the usual rules (gaps, `after`, merges, its
//! dead letters) judge it again.
//!
//! A pause holds the stream's own events only: a late event of another stream merged
//! into it still applies to its document (that event's order is its own stream's).
//! What arrives beyond `stream_pending_events_max` for a paused stream is dead-lettered
//! as overflow, as for any stream that cannot drain; a long pause of a hot stream is
//! better done on its partition, which stops reading instead.

use std::sync::Arc;

use super::stream::{Slot, StreamId, PAUSED};
use super::Engine;

impl Engine {
    /// Pauses `stream`; false if it was paused already. An event of it already out
    /// finishes; nothing after it goes until [`Engine::resume`].
    pub fn pause(&mut self, stream: &str) -> bool {
        let s = self.intern(stream);
        if self.streams[s].flags.intersects(PAUSED) {
            return false;
        }
        self.streams[s].flags.insert(PAUSED);
        self.make_durable(s);
        true
    }

    /// Resumes `stream`; false if it was not paused.
    pub fn resume(&mut self, stream: &str) -> bool {
        let Some(&s) = self.ids.get(stream) else {
            return false;
        };
        if !self.streams[s].flags.intersects(PAUSED) {
            return false;
        }
        self.streams[s].flags.remove(PAUSED);
        self.schedule(s);
        true
    }

    /// Whether `stream` is paused.
    pub fn is_paused(&self, stream: &str) -> bool {
        self.ids.get(stream).is_some_and(|&s| self.is_paused_id(s))
    }

    /// The paused streams, sorted.
    pub fn paused_streams(&self) -> Vec<Arc<str>> {
        let mut paused: Vec<Arc<str>> = self
            .streams
            .ids()
            .filter(|&s| self.is_paused_id(s))
            .map(|s| self.names[s].clone())
            .collect();
        paused.sort();
        paused
    }

    pub(super) fn is_paused_id(&self, s: StreamId) -> bool {
        self.streams[s].flags.intersects(PAUSED)
    }

    /// Marks every waiting event of `s` to be written at the next commit: nothing
    /// re-delivers what waits behind a held head once the source moves on.
    pub(super) fn make_durable(&mut self, s: StreamId) {
        let Some(extra) = self.streams[s].extra.as_mut() else {
            return;
        };
        for (&version, slot) in extra.slots.iter_mut() {
            if let Slot::Event(pending) = slot {
                if !pending.durable {
                    pending.durable = true;
                    self.pending_changed.insert((s, version));
                }
            }
        }
    }
}
