//! ordo's ordering core: a deterministic, sans-IO state machine that decides, for every
//! delivered event, whether it is applied now, waits (gap buffer, dependency, busy
//! document), is skipped (duplicate, stale) or is dead-lettered, and which checkpoint is
//! safe to commit.
//!
//! It has no IO, no async runtime and no clock: time is an argument. The runtime and the
//! simulator drive the very same [`Engine`]; see its module for the call order.

pub mod checkpoint;
pub mod counters;
pub mod dedupe;
pub mod engine;
pub mod envelope;
pub mod limits;
pub mod state;

pub use checkpoint::SourcePosition;
pub use counters::{Counters, ReorderDistances, REORDER_BUCKETS};
pub use engine::{
    Action, Config, Decision, DecisionKind, Disposition, Engine, Notice, OperatorError, Outcome,
    ReplayOutcome, WaitingEvent, WaitsFor, Work,
};
pub use envelope::{parse_event, Dependency, EnvelopeError, Event, Op, OpPolicy, ParseError};
pub use state::{
    ChangeSet, DeadLetter, DeadLetterKind, Load, Loaded, PendingRecord, PendingState, Snapshot,
    StreamRecord, VersionMode,
};
