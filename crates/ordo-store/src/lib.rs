//! ordo's durable state behind one trait.
//!
//! A [`Store`] keeps the documents, the core's [`ordo_core::ChangeSet`]s (stream
//! versions, aliases, waiting events, dead letters, the dedupe window) and the source
//! checkpoints. [`Store::commit`] writes one batch of all of them in one transaction, so a
//! crash at any point loses nothing and applies nothing twice: either the effects and the
//! position moved together, or neither did.

mod error;
pub mod outbox;
mod sqlite;
mod url;

use std::sync::Arc;

use ordo_core::{ChangeSet, DeadLetter, Snapshot};
use ordo_projection::Document;

pub use error::{CommitError, OpenError, ReadError};
pub use sqlite::{FaultStage, SqliteStore, SCHEMA_VERSION};
pub use url::StoreUrl;

/// One transaction's worth of work.
#[derive(Debug, Default)]
pub struct CommitBatch {
    /// The core's changes since the last commit.
    pub changes: ChangeSet,
    /// Documents written by the works finished since the last commit (`None`: absent).
    pub documents: Vec<(Arc<str>, Option<Document>)>,
}

/// One row of `ordo export`.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportRow {
    /// The stream.
    pub stream: String,
    /// Its own last applied version.
    pub version: u64,
    /// Its document (`None` when absent, deleted or merged away).
    pub doc: Option<serde_json::Value>,
    /// Whether the document is a tombstone.
    pub deleted: bool,
    /// The final merge target, following aliases.
    pub merged_into: Option<String>,
}

impl ExportRow {
    /// The row as the contract's JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "stream": self.stream,
            "version": self.version,
            "doc": self.doc.clone().unwrap_or(serde_json::Value::Null),
            "deleted": self.deleted,
            "merged_into": self.merged_into,
        })
    }
}

/// Who holds a store for writing. Only one consumer may write a SQLite store at a time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// What the holder is (`run`, `dlq replay`, ...).
    pub holder: String,
    /// Its process id.
    pub pid: u32,
    /// Its last heartbeat (ms since the Unix epoch).
    pub heartbeat_ms: u64,
}

/// Durable state for the core, the projection and the source positions.
pub trait Store {
    /// What the core needs to resume consuming `source` (checkpoints are per source).
    fn snapshot(&mut self, source: &str) -> Result<Snapshot, ReadError>;

    /// The current documents of these streams, in order (`None`: absent).
    fn documents(&mut self, streams: &[Arc<str>]) -> Result<Vec<Option<Document>>, ReadError>;

    /// Writes one batch atomically, with `source`'s checkpoints.
    fn commit(&mut self, source: &str, batch: CommitBatch) -> Result<(), CommitError>;

    /// Every dead letter, oldest first.
    fn dead_letters(&mut self) -> Result<Vec<DeadLetter>, ReadError>;

    /// Every stream's state, sorted by stream.
    fn export(&mut self) -> Result<Vec<ExportRow>, ReadError>;

    /// The counters as of the last commit.
    fn counters(&mut self) -> Result<ordo_core::Counters, ReadError>;
}
