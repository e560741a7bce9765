//! One error type per store operation.

use std::fmt;

/// Why a store could not be opened.
#[derive(Debug)]
#[non_exhaustive]
pub enum OpenError {
    /// The URL is not one ordo understands.
    BadUrl(String),
    /// The store does not exist and this operation does not create one.
    Missing(String),
    /// The file or its directory cannot be created or written.
    NotWritable {
        /// The path.
        path: String,
        /// What the system said.
        detail: String,
    },
    /// The path names something that is not a regular file (a directory, a FIFO).
    NotAFile {
        /// The path.
        path: String,
        /// What it is instead.
        kind: &'static str,
    },
    /// The store was written by a newer ordo; opening it could corrupt it.
    NewerSchema {
        /// The schema version found.
        found: i64,
        /// The newest version this build understands.
        supported: i64,
    },
    /// Another process holds the store for writing.
    LeaseHeld {
        /// What holds it.
        holder: String,
        /// Its process id.
        pid: u32,
    },
    /// A read-only open found a store an older ordo wrote: reading it needs the
    /// upgrade a writing verb makes, and a read-only verb never writes.
    OlderSchema {
        /// What is missing, in words.
        missing: String,
    },
    /// Any other database error.
    Database(String),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::BadUrl(url) => {
                write!(
                    f,
                    "unsupported store URL `{url}` (expected sqlite:PATH or postgres://...)"
                )?;
                if !url.contains(':') {
                    // The usual first try: a bare file name.
                    write!(f, "; for a SQLite file, say `sqlite:{url}`")?;
                }
                Ok(())
            }
            OpenError::Missing(path) => write!(f, "store `{path}` does not exist"),
            OpenError::OlderSchema { missing } => write!(
                f,
                "the store was written by an older ordo ({missing}); `ordo run` upgrades it \
                 (read-only verbs never write)"
            ),
            OpenError::NotWritable { path, detail } => {
                write!(f, "store `{path}` cannot be opened for writing: {detail}")
            }
            OpenError::NotAFile { path, kind } => {
                write!(f, "store `{path}` is {kind}, not a file (sqlite:PATH names a file)")
            }
            OpenError::NewerSchema { found, supported } => write!(
                f,
                "store schema version {found} is newer than this ordo supports ({supported}); upgrade ordo"
            ),
            OpenError::LeaseHeld { holder, pid } => write!(
                f,
                "store is in use by `{holder}` (pid {pid}); stop it first"
            ),
            OpenError::Database(detail) => write!(f, "store error: {detail}"),
        }
    }
}

impl std::error::Error for OpenError {}

/// Why a read failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReadError {
    /// The database failed.
    Database(String),
    /// A stored value does not decode (a bug or a damaged store).
    Corrupt(String),
    /// The connection to the database server was lost and could not be re-established
    /// within the retry bound.
    Unavailable(String),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Database(detail) => write!(f, "store read failed: {detail}"),
            ReadError::Corrupt(detail) => write!(f, "store holds an undecodable value: {detail}"),
            ReadError::Unavailable(detail) => write!(f, "store unavailable: {detail}"),
        }
    }
}

impl std::error::Error for ReadError {}

impl From<rusqlite::Error> for ReadError {
    fn from(error: rusqlite::Error) -> Self {
        ReadError::Database(error.to_string())
    }
}

/// Why a commit failed. Nothing of the batch was written.
#[derive(Debug)]
#[non_exhaustive]
pub enum CommitError {
    /// The database stayed busy through every retry.
    Busy {
        /// How many attempts were made.
        attempts: u32,
    },
    /// A fault injected for testing stopped the commit half-way (rolled back).
    Injected(String),
    /// Another process sharing the store changed something this batch was computed from
    /// (a document's revision, a stream's position or alias). Rolled back; the consumer
    /// rebuilds from the store and reads its uncommitted deliveries again.
    Conflict(String),
    /// This process no longer owns a partition it consumed: another member claimed it
    /// after a rebalance (zombie fencing). Rolled back; nothing of the batch is written.
    Fenced {
        /// The source.
        source: String,
        /// The partition taken over.
        partition: u32,
        /// The epoch this process claimed.
        mine: i64,
        /// The epoch the store holds now.
        current: i64,
    },
    /// The connection to the database server was lost and could not be re-established
    /// within the retry bound; nothing of the batch is written.
    Unavailable(String),
    /// Any other database error.
    Database(String),
}

impl fmt::Display for CommitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommitError::Busy { attempts } => {
                write!(f, "store stayed busy through {attempts} commit attempts")
            }
            CommitError::Injected(what) => write!(f, "injected fault: {what}"),
            CommitError::Conflict(detail) => {
                write!(f, "commit conflicts with another member: {detail}")
            }
            CommitError::Fenced {
                source,
                partition,
                mine,
                current,
            } => write!(
                f,
                "fenced: partition {partition} of `{source}` was claimed by another member (epoch {current}, this member holds {mine}); this member lost it in a rebalance and wrote nothing"
            ),
            CommitError::Unavailable(detail) => write!(f, "commit failed, store unavailable: {detail}"),
            CommitError::Database(detail) => write!(f, "commit failed: {detail}"),
        }
    }
}

impl std::error::Error for CommitError {}
