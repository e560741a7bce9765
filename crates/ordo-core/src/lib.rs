//! ordo's ordering core: a deterministic, sans-IO state machine that decides, for every
//! delivered event, whether it is applied now, waits (gap buffer, dependency, busy
//! document), is skipped (duplicate, stale) or is dead-lettered, and which checkpoint is
//! safe to commit.
//!
//! It has no IO, no async runtime and no clock: time is an argument. The runtime and the
//! simulator drive the very same [`Engine`]; see its module for the call order.

mod checkpoint;
mod counters;
mod dedupe;
mod engine;
mod envelope;
pub mod limits;
mod state;

pub use checkpoint::SourcePosition;
pub use counters::{Counters, ReorderDistances, REORDER_BUCKETS};
pub use dedupe::id_hash;
pub use engine::{
    Action, Config, Decision, DecisionKind, Disposition, Engine, Notice, OperatorError, Outcome,
    ReplayOutcome, WaitingEvent, WaitsFor, Work, DECISIONS_MAX, NOTICES_MAX,
};
pub use envelope::{
    parse_event, parse_object, Dependency, EnvelopeError, Event, Op, OpPolicy, ParseError, Routing,
};
pub use state::{
    ChangeSet, DeadLetter, DeadLetterKind, Load, Loaded, PendingRecord, PendingState, Snapshot,
    StreamRecord, VersionMode,
};
