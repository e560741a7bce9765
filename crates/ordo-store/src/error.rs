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
    /// The file exists but this process may not read it.
    NotReadable {
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
    /// The file exists but SQLite cannot read it as a database (damaged, or not a
    /// database at all).
    #[cfg(feature = "sqlite")]
    NotAStore {
        /// The path.
        path: String,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The file is a database without ordo's schema version, or with one that does not
    /// read as a number: not an ordo store, or a damaged one.
    NoSchemaVersion {
        /// The path, or the PostgreSQL URL (redacted).
        store: String,
        /// What was found instead of a version, if anything.
        found: Option<String>,
    },
    /// SQLite would not switch the store to write-ahead logging (a file system without
    /// shared memory, or a store opened by something else in another mode).
    NoWal {
        /// The journal mode SQLite kept.
        mode: String,
    },
    /// The PostgreSQL server cannot be reached.
    #[cfg(feature = "postgres")]
    Connect {
        /// The URL, with its password redacted.
        url: String,
        /// What the client said.
        source: postgres::Error,
    },
    /// Any other SQLite error.
    #[cfg(feature = "sqlite")]
    Sqlite(rusqlite::Error),
    /// Any other PostgreSQL error.
    #[cfg(feature = "postgres")]
    Postgres(postgres::Error),
    /// The URL names a backend this build of ordo leaves out (its cargo feature is off).
    NotBuilt(&'static str),
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
            OpenError::NotReadable { path, detail } => {
                write!(f, "store `{path}` cannot be read: {detail}")
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
            #[cfg(feature = "sqlite")]
            OpenError::NotAStore { path, source } => {
                write!(f, "`{path}` cannot be read as an ordo store ({source})")
            }
            OpenError::NoSchemaVersion { store, found: None } => {
                write!(f, "`{store}` has no ordo schema version: not an ordo store")
            }
            OpenError::NoSchemaVersion {
                store,
                found: Some(found),
            } => write!(f, "`{store}` has a bad schema version `{found}`"),
            OpenError::NoWal { mode } => write!(
                f,
                "could not enable WAL (got {mode}); the store needs a local file system"
            ),
            #[cfg(feature = "postgres")]
            OpenError::Connect { url, source } => {
                write!(f, "cannot connect to {url}: {}", postgres_detail(source))
            }
            #[cfg(feature = "sqlite")]
            OpenError::Sqlite(error) => write!(f, "store error: {error}"),
            #[cfg(feature = "postgres")]
            OpenError::Postgres(error) => write!(f, "store error: {}", postgres_detail(error)),
            OpenError::NotBuilt(backend) => write!(
                f,
                "this ordo was built without the `{backend}` store (cargo feature `{backend}`)"
            ),
        }
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            #[cfg(feature = "sqlite")]
            OpenError::NotAStore { source, .. } | OpenError::Sqlite(source) => Some(source),
            #[cfg(feature = "postgres")]
            OpenError::Connect { source, .. } | OpenError::Postgres(source) => Some(source),
            _ => None,
        }
    }
}

#[cfg(feature = "sqlite")]
impl From<rusqlite::Error> for OpenError {
    fn from(error: rusqlite::Error) -> Self {
        OpenError::Sqlite(error)
    }
}

#[cfg(feature = "postgres")]
impl From<postgres::Error> for OpenError {
    fn from(error: postgres::Error) -> Self {
        OpenError::Postgres(error)
    }
}

/// A PostgreSQL error in words: a server error's own message and SQLSTATE say more than
/// the client's "db error". The client's messages never carry the password.
#[cfg(feature = "postgres")]
pub(crate) fn postgres_detail(error: &postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => error.to_string(),
    }
}

/// Why a read failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReadError {
    /// SQLite failed.
    #[cfg(feature = "sqlite")]
    Sqlite(rusqlite::Error),
    /// PostgreSQL failed.
    #[cfg(feature = "postgres")]
    Postgres(postgres::Error),
    /// The store could not be opened for the read.
    Open(Box<OpenError>),
    /// A stored value does not decode (a bug or a damaged store).
    Corrupt(String),
    /// The connection to the database server was lost and could not be re-established
    /// within the retry bound.
    Unavailable(String),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            #[cfg(feature = "sqlite")]
            ReadError::Sqlite(error) => write!(f, "store read failed: {error}"),
            #[cfg(feature = "postgres")]
            ReadError::Postgres(error) => {
                write!(f, "store read failed: {}", postgres_detail(error))
            }
            ReadError::Open(error) => write!(f, "{error}"),
            ReadError::Corrupt(detail) => write!(f, "store holds an undecodable value: {detail}"),
            ReadError::Unavailable(detail) => write!(f, "store unavailable: {detail}"),
        }
    }
}

impl std::error::Error for ReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            #[cfg(feature = "sqlite")]
            ReadError::Sqlite(error) => Some(error),
            #[cfg(feature = "postgres")]
            ReadError::Postgres(error) => Some(error),
            ReadError::Open(error) => Some(error),
            ReadError::Corrupt(_) | ReadError::Unavailable(_) => None,
        }
    }
}

#[cfg(feature = "sqlite")]
impl From<rusqlite::Error> for ReadError {
    fn from(error: rusqlite::Error) -> Self {
        ReadError::Sqlite(error)
    }
}

#[cfg(feature = "postgres")]
impl From<postgres::Error> for ReadError {
    fn from(error: postgres::Error) -> Self {
        ReadError::Postgres(error)
    }
}

impl From<OpenError> for ReadError {
    fn from(error: OpenError) -> Self {
        ReadError::Open(Box::new(error))
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
    Conflict(ConflictReason),
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
    /// SQLite failed (a full disk, a read-only file, a damaged page): the transaction
    /// rolled back whole.
    #[cfg(feature = "sqlite")]
    Sqlite(rusqlite::Error),
    /// PostgreSQL failed (out of space, a constraint): the transaction rolled back whole.
    #[cfg(feature = "postgres")]
    Postgres(postgres::Error),
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
            #[cfg(feature = "sqlite")]
            CommitError::Sqlite(error) => write!(f, "commit failed: {error}"),
            #[cfg(feature = "postgres")]
            CommitError::Postgres(error) => {
                write!(f, "commit failed: {}", postgres_detail(error))
            }
        }
    }
}

impl std::error::Error for CommitError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            #[cfg(feature = "sqlite")]
            CommitError::Sqlite(error) => Some(error),
            #[cfg(feature = "postgres")]
            CommitError::Postgres(error) => Some(error),
            CommitError::Conflict(reason) => Some(reason),
            _ => None,
        }
    }
}

/// What another member sharing the store changed that a batch was computed from. The
/// batch rolls back; the consumer rebuilds from the store.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConflictReason {
    /// Documents this batch writes were changed by another member since they were read
    /// (their revisions moved).
    DocumentsChanged {
        /// How many.
        changed: usize,
        /// Of how many written.
        written: usize,
    },
    /// Documents this batch creates were created by another member meanwhile.
    DocumentsCreated {
        /// How many.
        created: usize,
        /// Of how many created.
        written: usize,
    },
    /// The batch writes the document of a stream another member merged away (the alias
    /// chain grew elsewhere).
    DocumentMergedAway {
        /// The document's stream.
        document: String,
        /// Where another member merged it.
        target: String,
    },
    /// The batch moves a stream another member merged away.
    StreamMergedAway {
        /// The stream.
        stream: String,
    },
    /// Another member already applied the version this batch brings a stream to.
    AlreadyApplied {
        /// The stream.
        stream: String,
        /// Its stored applied version.
        stored: u64,
        /// The version this batch brings it to.
        batch: u64,
    },
    /// A dead letter's id is past this process's reserved block of ids.
    DeadLetterIdOutsideBlock {
        /// The id.
        id: u64,
    },
    /// PostgreSQL rolled the transaction back to break a deadlock or a serialization
    /// failure between members: running it again is safe.
    #[cfg(feature = "postgres")]
    DeadlockVictim(postgres::Error),
}

impl fmt::Display for ConflictReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConflictReason::DocumentsChanged { changed, written } => write!(
                f,
                "{changed} of {written} documents were changed by another member since they were read"
            ),
            ConflictReason::DocumentsCreated { created, written } => write!(
                f,
                "{created} of {written} new documents were created by another member meanwhile"
            ),
            ConflictReason::DocumentMergedAway { document, target } => write!(
                f,
                "document `{document}` belongs to a stream merged into `{target}` by another member"
            ),
            ConflictReason::StreamMergedAway { stream } => {
                write!(f, "stream `{stream}` was merged away by another member")
            }
            ConflictReason::AlreadyApplied {
                stream,
                stored,
                batch,
            } => write!(
                f,
                "stream `{stream}` is already at version {stored} (this batch brings it to {batch})"
            ),
            ConflictReason::DeadLetterIdOutsideBlock { id } => write!(
                f,
                "dead-letter id {id} is past this process's reserved block"
            ),
            #[cfg(feature = "postgres")]
            ConflictReason::DeadlockVictim(error) => {
                write!(f, "chosen to break a deadlock: {}", postgres_detail(error))
            }
        }
    }
}

impl std::error::Error for ConflictReason {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            #[cfg(feature = "postgres")]
            ConflictReason::DeadlockVictim(error) => Some(error),
            _ => None,
        }
    }
}
