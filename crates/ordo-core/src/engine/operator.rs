//! Operator actions as inputs: skipping a gap or a lost version, skipping or replaying a
//! dead letter. Each is checked against the engine's state and refused with a reason.

use std::fmt;

use crate::envelope::parse_event;
use crate::state::{DeadLetter, DeadLetterKind};

use super::stream::{Slot, StreamId, IN_FLIGHT, SPILLED};
use super::{Disposition, Engine};

/// Why an operator action was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OperatorError {
    /// The stream is unknown to this engine.
    UnknownStream(String),
    /// The stream has no gap to skip.
    NoGap(String),
    /// The version named is not the stream's next missing one.
    NotNext {
        /// The stream.
        stream: String,
        /// The version named.
        version: u64,
        /// The stream's next version (its applied version + 1).
        next: u64,
    },
    /// The version named is not missing: an event holds it (waiting or being applied).
    NotMissing {
        /// The stream.
        stream: String,
        /// The version named.
        version: u64,
    },
    /// The dead letter is not what the engine has at that stream and version.
    NotBlocking {
        /// The entry's id.
        id: u64,
    },
    /// The dead letter's body is still not a valid event.
    StillInvalid {
        /// The entry's id.
        id: u64,
        /// Why it does not parse.
        reason: String,
    },
    /// The event cannot be taken back now (its stream is full); try again later.
    StreamFull {
        /// The stream.
        stream: String,
    },
}

impl fmt::Display for OperatorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OperatorError::UnknownStream(s) => write!(f, "unknown stream `{s}`"),
            OperatorError::NoGap(s) => write!(f, "stream `{s}` has no gap to skip"),
            OperatorError::NotNext {
                stream,
                version,
                next,
            } => write!(
                f,
                "version {version} is not `{stream}`'s next missing version (that is {next})"
            ),
            OperatorError::NotMissing { stream, version } => write!(
                f,
                "version {version} of `{stream}` is not missing: an event holds it"
            ),
            OperatorError::NotBlocking { id } => {
                write!(
                    f,
                    "dead letter {id} is not the entry holding its stream's version"
                )
            }
            OperatorError::StillInvalid { id, reason } => {
                write!(f, "dead letter {id} is still not a valid event: {reason}")
            }
            OperatorError::StreamFull { stream } => {
                write!(
                    f,
                    "stream `{stream}` holds its maximum of waiting events; retry later"
                )
            }
        }
    }
}

impl std::error::Error for OperatorError {}

/// What replaying a dead letter did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayOutcome {
    /// The event is back in its stream, in line to be applied.
    Requeued,
    /// The version guard skipped it: its stream is already past that version.
    AlreadyApplied,
    /// It was dead-lettered again (its version is held by another event, or the stream
    /// is full); the new entry says why.
    DeadLetteredAgain,
}

impl Engine {
    /// Passes over the missing versions in front of a stalled (or gapped) stream.
    pub fn skip_gap(&mut self, now_ms: u64, stream: &str) -> Result<u64, OperatorError> {
        let s = *self
            .ids
            .get(stream)
            .ok_or_else(|| OperatorError::UnknownStream(stream.into()))?;
        if self.streams[s].flags.intersects(SPILLED) {
            // Parked, so no gap in front of it.
            return Err(OperatorError::NoGap(stream.into()));
        }
        let applied = self.streams[s].applied;
        let first = self.streams[s]
            .extra
            .as_ref()
            .and_then(|x| x.slots.keys().next().copied());
        let in_flight = self.streams[s].flags.intersects(IN_FLIGHT);
        match first {
            Some(first) if first > applied + 1 && !in_flight => {
                let skipped = first - applied - 1;
                self.counters.skipped += skipped;
                self.advance(s, first - 1);
                self.extend_contiguous(s);
                self.refresh_gap(s, now_ms);
                self.schedule(s);
                Ok(skipped)
            }
            _ => Err(OperatorError::NoGap(stream.into())),
        }
    }

    /// Passes over one version known lost (`ordo parked skip`): `version` must be the
    /// stream's next (applied + 1), held by no event, with later events waiting behind it.
    /// Counted as `skipped`; what it unblocks is released.
    pub fn skip_missing(
        &mut self,
        now_ms: u64,
        stream: &str,
        version: u64,
    ) -> Result<(), OperatorError> {
        let s = *self
            .ids
            .get(stream)
            .ok_or_else(|| OperatorError::UnknownStream(stream.into()))?;
        let state = &self.streams[s];
        let next = state.applied + 1;
        if version != next {
            return Err(OperatorError::NotNext {
                stream: stream.into(),
                version,
                next,
            });
        }
        let held = state.flags.intersects(IN_FLIGHT)
            || state
                .extra
                .as_ref()
                .is_some_and(|x| x.slots.contains_key(&version));
        if held {
            return Err(OperatorError::NotMissing {
                stream: stream.into(),
                version,
            });
        }
        let waits_behind = state
            .extra
            .as_ref()
            .is_some_and(|x| x.slots.keys().next().is_some_and(|&v| v > version));
        if state.flags.intersects(SPILLED) || !waits_behind {
            // Nothing waits for it: skipping would turn a late arrival into a stale one.
            return Err(OperatorError::NoGap(stream.into()));
        }
        self.counters.skipped += 1;
        self.advance(s, version);
        self.extend_contiguous(s);
        self.refresh_gap(s, now_ms);
        self.schedule(s);
        Ok(())
    }

    /// Skips a dead letter: a sequenced entry's version is passed over and its stream goes
    /// on; any other entry is simply removed.
    pub fn skip_dead_letter(
        &mut self,
        now_ms: u64,
        entry: &DeadLetter,
    ) -> Result<(), OperatorError> {
        if entry.kind == DeadLetterKind::Sequenced {
            let s = self.sequenced_slot(entry)?;
            let version = entry.version.expect("sequenced entries have a version");
            let applied = self.streams[s].applied;
            if version == applied + 1 {
                self.extra(s).slots.remove(&version);
                self.counters.skipped += 1;
                self.advance(s, version);
                self.unblock(s);
            } else {
                self.extra(s).slots.insert(version, Slot::Skipped);
                self.pending_changed.insert((s, version));
            }
            self.refresh_gap(s, now_ms);
        }
        self.dead_letters_delete.push(entry.id);
        Ok(())
    }

    /// Puts a dead letter's event back in its stream, version-guarded: an event its stream
    /// is already past is a counted no-op.
    pub fn replay_dead_letter(
        &mut self,
        now_ms: u64,
        entry: &DeadLetter,
    ) -> Result<ReplayOutcome, OperatorError> {
        let event = parse_event(entry.body.as_bytes(), self.config.op_policy).map_err(|e| {
            OperatorError::StillInvalid {
                id: entry.id,
                reason: e.to_string(),
            }
        })?;
        let sequenced = entry.kind == DeadLetterKind::Sequenced;
        let s = if sequenced {
            self.sequenced_slot(entry)?
        } else {
            self.intern(&event.stream)
        };
        // A sequenced entry frees its own slot when it is taken back.
        let pending_count = self.streams[s].extra.as_ref().map_or(0, |x| x.slots.len());
        if pending_count >= self.config.stream_pending_events_max + usize::from(sequenced) {
            return Err(OperatorError::StreamFull {
                stream: event.stream.to_string(),
            });
        }
        if sequenced {
            self.extra(s).slots.remove(&event.version);
            self.unblock(s);
        }
        self.dead_letters_delete.push(entry.id);
        // No source position: the event is written to the store in the same commit that
        // deletes the dead letter, so a crash cannot lose it.
        let version = event.version;
        let disposition = self.handle_event(now_ms, None, event);
        if let Some(Slot::Event(pending)) = self.streams[s]
            .extra
            .as_mut()
            .and_then(|x| x.slots.get_mut(&version))
        {
            pending.home_partition = entry.position.map(|p| p.partition);
        }
        Ok(match disposition {
            Disposition::Duplicate | Disposition::Stale => ReplayOutcome::AlreadyApplied,
            Disposition::DeadLettered => ReplayOutcome::DeadLetteredAgain,
            Disposition::Queued | Disposition::Buffered => ReplayOutcome::Requeued,
        })
    }

    pub(super) fn sequenced_slot(&mut self, entry: &DeadLetter) -> Result<StreamId, OperatorError> {
        let not_blocking = OperatorError::NotBlocking { id: entry.id };
        let (Some(stream), Some(version)) = (&entry.stream, entry.version) else {
            return Err(not_blocking);
        };
        let s = *self.ids.get(&**stream).ok_or(not_blocking.clone())?;
        match self.streams[s]
            .extra
            .as_ref()
            .and_then(|x| x.slots.get(&version))
        {
            Some(Slot::DeadLettered(id)) if *id == entry.id => Ok(s),
            _ => Err(not_blocking),
        }
    }
}
