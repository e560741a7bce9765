//! ordo's durable state behind one trait.
//!
//! A [`Store`] keeps the documents, the core's [`ordo_core::ChangeSet`]s (stream
//! versions, aliases, waiting events, dead letters, the dedupe window) and the source
//! checkpoints. [`Store::commit`] writes one batch of all of them in one transaction, so a
//! crash at any point loses nothing and applies nothing twice: either the effects and the
//! position moved together, or neither did.

#[cfg(not(any(feature = "sqlite", feature = "postgres")))]
compile_error!("ordo-store needs a backend: enable the `sqlite` or `postgres` feature (both are on by default)");

mod error;
pub mod journal;
#[cfg(feature = "postgres")]
pub mod members;
mod memory;
mod operator;
#[cfg(feature = "sqlite")]
pub mod outbox;
#[cfg(feature = "postgres")]
mod pg;
mod rows;
pub mod sharing;
#[cfg(feature = "sqlite")]
mod sqlite;
pub mod status;
mod url;

use std::sync::Arc;

use ordo_core::{ChangeSet, DeadLetter, Load, Loaded, Snapshot, StreamRecord};
use ordo_projection::Document;

pub use error::{CommitError, ConflictReason, OpenError, ReadError};
pub use memory::{answer_load, pending_snapshot, PendingRows, SharedMemory, SharedMemoryStore};
pub use operator::{
    pauses_in_force, ActionState, OperatorAction, Pause, PauseTarget, PAUSE_VERB, RESUME_VERB,
};
#[cfg(feature = "postgres")]
pub use pg::{PostgresStore, POSTGRES_SCHEMA_VERSION, RECONNECT_ATTEMPTS_MAX};
#[cfg(feature = "sqlite")]
pub use sqlite::{FaultStage, SqliteStore, SCHEMA_VERSION};
pub use status::StoreStatus;
pub use url::{redact, StoreUrl};

/// The SQLite client a transactional handler writes through (the version ordo uses).
#[cfg(feature = "sqlite")]
pub use rusqlite;

/// The PostgreSQL client a transactional handler writes through (the version ordo uses).
#[cfg(feature = "postgres")]
pub use postgres;

/// Dead-letter ids each process sharing a store reserves at a time (at its first
/// snapshot, then whenever the block is used up; rebuilds go on in the block).
pub const DEAD_LETTER_ID_BLOCK: i64 = 10_000;

/// The system clock (ms since the Unix epoch), for what a store stamps itself.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One transaction's worth of work.
#[derive(Debug, Default)]
pub struct CommitBatch {
    /// The core's changes since the last commit.
    pub changes: ChangeSet,
    /// Documents written by the works finished since the last commit (`None`: absent).
    pub documents: Vec<(Arc<str>, Option<Document>)>,
    /// Operator actions carried out in this batch: new records (id 0), or requests taken
    /// up (their row is updated). Written in the same transaction as their effects, each
    /// with a journal entry.
    pub actions: Vec<OperatorAction>,
    /// What was noticed while the batch was read and applied (`ordo notices`).
    pub journal: Vec<journal::JournalEntry>,
    /// What the journal keeps; applied when this batch adds entries.
    pub retention: journal::Retention,
    /// The committer's clock now (ms), which the journal's entry times come from (0: the
    /// system clock); the age retention counts from it.
    pub now_ms: u64,
}

impl CommitBatch {
    /// What the batch adds to the journal: its entries, then one per operator action it
    /// carries out (a request merely recorded is not journaled until taken up).
    pub(crate) fn journal_entries(&self) -> impl Iterator<Item = journal::JournalEntry> + '_ {
        let operator = self
            .actions
            .iter()
            .filter(|a| a.state != ActionState::Pending)
            .map(journal::operator_entry);
        self.journal.iter().cloned().chain(operator)
    }
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

/// A store whose commit transaction a transactional handler writes into: the team's own
/// tables change in the very transaction that records ordo's versions and positions, so
/// a crash at any point leaves both equal (exactly once, without idempotency keys).
pub trait BatchTransaction: Store {
    /// What the handler writes through.
    type Connection;

    /// Opens the batch's transaction (if it is not open) and a savepoint for one work.
    fn begin_work(&mut self) -> Result<&mut Self::Connection, ReadError>;

    /// Ends the work's savepoint: its writes kept (applied), or rolled back (rejected).
    fn end_work(&mut self, keep: bool) -> Result<(), ReadError>;
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

    /// Answers an engine's [`Load`]: the waiting events of spilled streams.
    fn load_pending(&mut self, load: &Load) -> Result<Loaded, ReadError>;

    /// These streams' positions and aliases as stored now (streams never written are
    /// left out). Members of a group read the streams their parked events wait for.
    fn stream_records(&mut self, streams: &[Arc<str>]) -> Result<Vec<StreamRecord>, ReadError>;

    /// Takes `partitions` of `source` for this process (on a consumer-group assignment):
    /// from now on, a commit by any earlier owner of one of them is refused
    /// ([`CommitError::Fenced`]). A store with a single writer needs no claims.
    fn claim(&mut self, _source: &str, _partitions: &[u32]) -> Result<(), ReadError> {
        Ok(())
    }

    /// Gives claimed partitions up (on revocation, after the last commit for them).
    fn release(&mut self, _partitions: &[u32]) -> Result<(), ReadError> {
        Ok(())
    }

    /// The caller dropped its cached documents: a store tracking what was read may forget
    /// it too.
    fn forget_documents(&mut self) {}

    /// Which of these dead letters are still in the store (another process may have
    /// replayed or skipped the others).
    fn dead_letters_present(&mut self, ids: &[u64]) -> Result<Vec<u64>, ReadError> {
        Ok(self
            .dead_letters()?
            .into_iter()
            .map(|entry| entry.id)
            .filter(|id| ids.contains(id))
            .collect())
    }

    /// Whether another process may have moved streams since the last call (PostgreSQL: a
    /// `NOTIFY` arrived). A store with a single writer never says so.
    fn poll_progress(&mut self) -> bool {
        false
    }

    /// Operator actions requested for the running consumer and not yet taken up, oldest
    /// first. Only a store an operator verb cannot write while `ordo run` holds it (SQLite)
    /// has any: elsewhere the verb carries the action out itself.
    fn requested_actions(&mut self) -> Result<Vec<OperatorAction>, ReadError> {
        Ok(Vec::new())
    }

    /// The newest operator action an operator verb carried out itself against this store
    /// while consumers may run (PostgreSQL); 0 where verbs leave requests instead.
    fn last_action_id(&mut self) -> Result<u64, ReadError> {
        Ok(0)
    }

    /// The pauses in force (see [`pauses_in_force`]); none in a store that keeps no
    /// operator actions.
    fn pauses(&mut self) -> Result<Vec<Pause>, ReadError> {
        Ok(Vec::new())
    }
}

/// Either store, chosen by URL (what the CLI opens).
#[derive(Debug)]
pub enum AnyStore {
    /// `sqlite:PATH`.
    #[cfg(feature = "sqlite")]
    Sqlite(SqliteStore),
    /// `postgres://…` (boxed: it is much larger than the SQLite store).
    #[cfg(feature = "postgres")]
    Postgres(Box<PostgresStore>),
}

/// Runs `$body` with `$s` bound to whichever backend `$store` holds (each arm only when
/// its backend is built).
macro_rules! each_backend {
    ($store:expr, $s:ident => $body:expr) => {
        match $store {
            #[cfg(feature = "sqlite")]
            AnyStore::Sqlite($s) => $body,
            #[cfg(feature = "postgres")]
            AnyStore::Postgres($s) => $body,
        }
    };
}

impl AnyStore {
    /// What `ordo status` shows (see [`status`]), with the streams waiting longest.
    pub fn status(&mut self) -> Result<StoreStatus, ReadError> {
        each_backend!(self, s => s.status(status::LONGEST_WAITING_MAX))
    }

    /// [`Self::status`] naming up to `streams` waiting streams (at most
    /// [`status::WAITING_STREAMS_MAX`]).
    pub fn status_waiting(&mut self, streams: usize) -> Result<StoreStatus, ReadError> {
        let streams = streams.min(status::WAITING_STREAMS_MAX);
        each_backend!(self, s => s.status(streams))
    }

    /// What a metrics scrape reads: [`Self::status`] without the longest-waiting streams
    /// (a scan of every waiting event, which no metric needs).
    pub fn status_summary(&mut self) -> Result<StoreStatus, ReadError> {
        each_backend!(self, s => s.status(0))
    }

    /// Opens the store a URL names; `create` for verbs that may create a SQLite file.
    pub fn open(url: &str, create: bool) -> Result<Self, OpenError> {
        match StoreUrl::parse(url)? {
            #[cfg(feature = "sqlite")]
            StoreUrl::Sqlite(path) => Ok(AnyStore::Sqlite(SqliteStore::open(&path, create)?)),
            #[cfg(feature = "postgres")]
            StoreUrl::Postgres(url) => Ok(AnyStore::Postgres(Box::new(PostgresStore::open(&url)?))),
            #[allow(unreachable_patterns)]
            other => {
                let _ = create;
                Err(OpenError::NotBuilt(other.backend()))
            }
        }
    }

    /// Opens an existing store for reading only: nothing is created, upgraded or written
    /// (`status`, `export`, `dlq list`, `parked list`, `notices`, the metrics endpoint).
    pub fn open_read_only(url: &str) -> Result<Self, OpenError> {
        match StoreUrl::parse(url)? {
            #[cfg(feature = "sqlite")]
            StoreUrl::Sqlite(path) => Ok(AnyStore::Sqlite(SqliteStore::open_read_only(&path)?)),
            #[cfg(feature = "postgres")]
            StoreUrl::Postgres(url) => Ok(AnyStore::Postgres(Box::new(
                PostgresStore::open_read_only(&url)?,
            ))),
            #[allow(unreachable_patterns)]
            other => Err(OpenError::NotBuilt(other.backend())),
        }
    }

    /// Takes a SQLite store for writing (PostgreSQL stores are shared by design).
    pub fn acquire_lease(&mut self, holder: &str) -> Result<(), OpenError> {
        match self {
            #[cfg(feature = "sqlite")]
            AnyStore::Sqlite(store) => store.acquire_lease(holder),
            #[cfg(feature = "postgres")]
            AnyStore::Postgres(_) => {
                let _ = holder;
                Ok(())
            }
        }
    }

    /// Journal entries, oldest first.
    pub fn journal(
        &mut self,
        filter: &journal::JournalFilter,
    ) -> Result<Vec<journal::JournalEntry>, ReadError> {
        each_backend!(self, s => s.journal(filter))
    }

    /// The SQLite store, if it is one.
    #[cfg(feature = "sqlite")]
    pub fn as_sqlite(&mut self) -> Option<&mut SqliteStore> {
        match self {
            AnyStore::Sqlite(store) => Some(store),
            #[cfg(feature = "postgres")]
            AnyStore::Postgres(_) => None,
        }
    }

    /// Writes a setting.
    pub fn set_setting(&mut self, key: &str, value: &str) -> Result<(), ReadError> {
        each_backend!(self, s => s.set_setting(key, value))
    }

    /// Reads a setting.
    pub fn setting(&mut self, key: &str) -> Result<Option<String>, ReadError> {
        each_backend!(self, s => s.setting(key))
    }
}

impl Store for AnyStore {
    fn snapshot(&mut self, source: &str) -> Result<Snapshot, ReadError> {
        each_backend!(self, s => s.snapshot(source))
    }

    fn documents(&mut self, streams: &[Arc<str>]) -> Result<Vec<Option<Document>>, ReadError> {
        each_backend!(self, s => s.documents(streams))
    }

    fn commit(&mut self, source: &str, batch: CommitBatch) -> Result<(), CommitError> {
        each_backend!(self, s => s.commit(source, batch))
    }

    fn dead_letters(&mut self) -> Result<Vec<DeadLetter>, ReadError> {
        each_backend!(self, s => s.dead_letters())
    }

    fn export(&mut self) -> Result<Vec<ExportRow>, ReadError> {
        each_backend!(self, s => s.export())
    }

    fn counters(&mut self) -> Result<ordo_core::Counters, ReadError> {
        each_backend!(self, s => s.counters())
    }

    fn load_pending(&mut self, load: &Load) -> Result<Loaded, ReadError> {
        each_backend!(self, s => s.load_pending(load))
    }

    fn stream_records(&mut self, streams: &[Arc<str>]) -> Result<Vec<StreamRecord>, ReadError> {
        each_backend!(self, s => s.stream_records(streams))
    }

    fn claim(&mut self, source: &str, partitions: &[u32]) -> Result<(), ReadError> {
        each_backend!(self, s => s.claim(source, partitions))
    }

    fn release(&mut self, partitions: &[u32]) -> Result<(), ReadError> {
        each_backend!(self, s => s.release(partitions))
    }

    fn forget_documents(&mut self) {
        each_backend!(self, s => s.forget_documents())
    }

    fn dead_letters_present(&mut self, ids: &[u64]) -> Result<Vec<u64>, ReadError> {
        each_backend!(self, s => s.dead_letters_present(ids))
    }

    fn requested_actions(&mut self) -> Result<Vec<OperatorAction>, ReadError> {
        each_backend!(self, s => s.requested_actions())
    }

    fn last_action_id(&mut self) -> Result<u64, ReadError> {
        each_backend!(self, s => s.last_action_id())
    }

    fn pauses(&mut self) -> Result<Vec<Pause>, ReadError> {
        each_backend!(self, s => s.pauses())
    }

    fn poll_progress(&mut self) -> bool {
        each_backend!(self, s => s.poll_progress())
    }
}
