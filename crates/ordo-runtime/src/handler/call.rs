//! One handler call: what the handler is told (the contract's request body) and what it
//! may answer.

use ordo_core::{Action, Event, Work};
use serde_json::{Map, Value};

/// One event handed to a handler, when its turn came.
#[derive(Clone, Copy, Debug)]
pub struct Call<'a> {
    work: &'a Work,
    attempt: u32,
}

impl<'a> Call<'a> {
    /// The call of `work`, its `attempt`-th (from 1).
    pub fn new(work: &'a Work, attempt: u32) -> Self {
        debug_assert!(attempt >= 1);
        Call { work, attempt }
    }

    /// The envelope as delivered.
    pub fn event(&self) -> &'a Event {
        &self.work.event
    }

    /// The stream whose state the event changes: its own, or the merge target its
    /// aliases lead to (then [`Self::redirected`] is true: a late-after-merge event).
    pub fn document(&self) -> &'a str {
        self.work.document()
    }

    /// Whether the event was redirected into the stream that its stream was merged into.
    pub fn redirected(&self) -> bool {
        self.work.document() != &*self.work.event.stream
    }

    /// A merge's documents to fold into [`Self::document`] (aliases already followed);
    /// `None` for any other event.
    pub fn sources(&self) -> Option<&'a [std::sync::Arc<str>]> {
        match &self.work.action {
            Action::Merge { sources } => Some(sources),
            Action::Apply => None,
        }
    }

    /// Which call of this event this is, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The key a handler deduplicates by: the event's id.
    pub fn idempotency_key(&self) -> &'a str {
        &self.work.event.id
    }

    /// The contract's request body: `{"event", "document", "redirected", "sources"?,
    /// "attempt"}`.
    pub fn body(&self) -> Map<String, Value> {
        let mut body = Map::new();
        body.insert("event".into(), self.work.event.to_json());
        body.insert("document".into(), Value::from(self.document()));
        body.insert("redirected".into(), Value::from(self.redirected()));
        if let Some(sources) = self.sources() {
            let sources = sources.iter().map(|s| Value::from(&**s)).collect();
            body.insert("sources".into(), Value::Array(sources));
        }
        body.insert("attempt".into(), Value::from(self.attempt));
        body
    }
}

/// What a handler says about one call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Applied: the version is recorded and the stream's next event may go.
    Applied,
    /// Refused for good: the event is dead-lettered with this reason and its stream waits
    /// behind it (an operator replays, corrects or skips it).
    Rejected {
        /// For the operator (clipped to [`super::REASON_BYTES_MAX`] bytes).
        reason: String,
    },
    /// Failed for now: called again after a backoff, up to the attempt limit, then
    /// dead-lettered with this reason.
    Retry {
        /// What went wrong, kept for the dead letter if every attempt fails.
        reason: String,
        /// How long the handler asked to be left alone (`Retry-After`), if it did.
        after_ms: Option<u64>,
    },
}

impl Answer {
    /// A retry without a requested pause.
    pub fn retry(reason: impl Into<String>) -> Self {
        Answer::Retry {
            reason: reason.into(),
            after_ms: None,
        }
    }
}
