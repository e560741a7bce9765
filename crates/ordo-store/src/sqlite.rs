//! The embedded default store: one SQLite file (WAL, synchronous=NORMAL).
//!
//! Every batch is one `BEGIN IMMEDIATE` transaction holding the documents, the stream
//! versions and aliases, the waiting events, the dead letters, the dedupe window (one
//! blob row per batch, not one row per event) and the source checkpoints.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ordo_core::{
    ChangeSet, Counters, DeadLetter, DeadLetterKind, Load, Loaded, PendingRecord, Snapshot,
    SourcePosition, StreamRecord,
};
use ordo_projection::Document;
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};

use crate::error::{CommitError, OpenError, ReadError};
use crate::operator::ACTION_COLUMNS;
use crate::rows::{self, corrupt};
use crate::{CommitBatch, ExportRow, Lease, OperatorAction, Store};

/// The schema this build writes. A store with a higher version is refused.
pub const SCHEMA_VERSION: i64 = 2;

/// How long SQLite itself waits on a lock before answering busy.
pub const BUSY_TIMEOUT_MS: u64 = 5_000;

/// Most attempts at one commit while the database answers busy.
pub const COMMIT_ATTEMPTS_MAX: u32 = 5;

/// A lease whose holder has not written for this long is considered abandoned.
pub const LEASE_EXPIRY_MS: u64 = 15_000;

/// Columns added after a table was first created, within [`SCHEMA_VERSION`] (older builds
/// ignore them): version 1 -> 2, waiting events remember their partition (consumer
/// groups) and what a parked one waits for (spilled parked streams are found by it);
/// later, since when an event waits and when a position was recorded (`ordo status`).
const ADDED_COLUMNS: [(&str, &str, &str); 5] = [
    ("pending", "partition", "INTEGER"),
    ("pending", "awaits_stream", "TEXT"),
    ("pending", "awaits_version", "INTEGER"),
    ("pending", "since_ms", "INTEGER"),
    ("checkpoints", "committed_ms", "INTEGER"),
];

/// A read-only connection to `path` (`immutable`: the file is read as it is, with no
/// locking) and the schema version it holds.
fn read_only_connection(
    path: &str,
    immutable: bool,
) -> rusqlite::Result<(Connection, Option<String>)> {
    let connection = if immutable {
        let uri = format!(
            "file:{}?immutable=1",
            path.replace('%', "%25")
                .replace('?', "%3f")
                .replace('#', "%23")
        );
        Connection::open_with_flags(
            uri,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
        )?
    } else {
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?
    };
    connection.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))?;
    let found = connection
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |row| row.get(0),
        )
        .optional()?;
    Ok((connection, found))
}

/// Whether `table` has `column`.
fn has_column(connection: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    connection.query_row(
        "SELECT COUNT(*) FROM pragma_table_info(?1) WHERE name = ?2",
        [table, column],
        |row| Ok(row.get::<_, i64>(0)? > 0),
    )
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    stream TEXT PRIMARY KEY, doc TEXT, deleted INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS streams (
    stream TEXT PRIMARY KEY, applied INTEGER NOT NULL, alias_target TEXT, alias_cut INTEGER);
CREATE TABLE IF NOT EXISTS pending (
    stream TEXT NOT NULL, version INTEGER NOT NULL, state TEXT NOT NULL, event TEXT,
    partition INTEGER, awaits_stream TEXT, awaits_version INTEGER, since_ms INTEGER,
    PRIMARY KEY (stream, version));
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, stream TEXT, version INTEGER, event_id TEXT,
    body TEXT NOT NULL, reason TEXT NOT NULL, partition INTEGER, offset INTEGER,
    at_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS dedupe_blocks (
    first_sequence INTEGER PRIMARY KEY, last_sequence INTEGER NOT NULL, hashes BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (
    source TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL,
    committed_ms INTEGER, PRIMARY KEY (source, partition));
CREATE TABLE IF NOT EXISTS outbox (
    position INTEGER PRIMARY KEY AUTOINCREMENT, stream TEXT NOT NULL, body TEXT NOT NULL,
    published INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS outbox_unpublished ON outbox (published, position);
CREATE TABLE IF NOT EXISTS operator_actions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, requested_ms INTEGER NOT NULL,
    user_name TEXT NOT NULL, verb TEXT NOT NULL, args TEXT NOT NULL, reason TEXT NOT NULL,
    state TEXT NOT NULL, result TEXT NOT NULL DEFAULT '', done_ms INTEGER);
CREATE INDEX IF NOT EXISTS operator_actions_state ON operator_actions (state, id);
CREATE TABLE IF NOT EXISTS journal (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at_ms INTEGER NOT NULL, kind TEXT NOT NULL,
    stream TEXT, version INTEGER, detail TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS journal_stream ON journal (stream, id);
CREATE INDEX IF NOT EXISTS journal_at ON journal (at_ms);
CREATE TABLE IF NOT EXISTS lease (
    id INTEGER PRIMARY KEY CHECK (id = 1), holder TEXT NOT NULL, pid INTEGER NOT NULL,
    heartbeat_ms INTEGER NOT NULL);
";

/// Where an injected commit fault strikes (for crash-consistency tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultStage {
    /// After the documents are written, before the positions: "state written, position
    /// not recorded" if the transaction were not atomic.
    AfterDocuments,
    /// After the positions are written (written first), before the documents: "position
    /// recorded, state not written".
    AfterCheckpoints,
}

/// A SQLite-backed [`Store`].
pub struct SqliteStore {
    connection: Connection,
    path: String,
    commit_attempts_max: u32,
    fault: Option<(u64, FaultStage)>,
    commits: u64,
    leased: bool,
    /// Whether [`SqliteStore::begin_batch`] opened a transaction the next commit ends.
    in_batch: bool,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked)
    )
}

impl SqliteStore {
    /// Opens the store at `path`, creating it (and its schema) when `create` is set.
    pub fn open(path: &str, create: bool) -> Result<Self, OpenError> {
        let file = Path::new(path);
        let exists = file.try_exists().map_err(|e| OpenError::NotWritable {
            path: path.into(),
            detail: e.to_string(),
        })?;
        if !create && !exists {
            return Err(OpenError::Missing(path.into()));
        }
        not_a_file(path)?;
        if exists {
            if let Some(refused) = ordo_log::permission_denied(file, true) {
                return Err(OpenError::NotWritable {
                    path: path.into(),
                    detail: refused,
                });
            }
        } else if create {
            create_empty(file).map_err(|detail| OpenError::NotWritable {
                path: path.into(),
                detail,
            })?;
        }
        let flags = if create {
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
        } else {
            OpenFlags::SQLITE_OPEN_READ_WRITE
        };
        let connection =
            Connection::open_with_flags(file, flags).map_err(|e| OpenError::NotWritable {
                path: path.into(),
                detail: e.to_string(),
            })?;
        connection
            .busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))
            .map_err(OpenError::Sqlite)?;
        // WAL lets readers (export, dlq list) run beside the consumer; NORMAL syncs at
        // checkpoints, which in WAL mode loses no committed transaction on a process
        // crash (only on power loss, the last ones).
        let mode: String = connection
            .query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))
            .map_err(|e| OpenError::NotWritable {
                path: path.into(),
                detail: e.to_string(),
            })?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(OpenError::NoWal { mode });
        }
        connection
            .execute_batch("PRAGMA synchronous=NORMAL; PRAGMA temp_store=MEMORY;")
            .map_err(OpenError::Sqlite)?;
        let mut store = SqliteStore::over(connection, path);
        store.migrate()?;
        Ok(store)
    }

    /// Opens an existing store for reading only: nothing is created or written (no
    /// schema, no upgrade, no WAL switch), so it works on a store this user may not
    /// write, and beside a running consumer.
    pub fn open_read_only(path: &str) -> Result<Self, OpenError> {
        let exists = Path::new(path)
            .try_exists()
            .map_err(|e| OpenError::NotReadable {
                path: path.into(),
                detail: e.to_string(),
            })?;
        if !exists {
            return Err(OpenError::Missing(path.into()));
        }
        not_a_file(path)?;
        if let Some(refused) = ordo_log::permission_denied(Path::new(path), false) {
            return Err(OpenError::NotReadable {
                path: path.into(),
                detail: refused,
            });
        }
        // With no -wal file, no writer has the store open and every commit is in the
        // file itself: read it as it stands, which creates nothing (a WAL reader would
        // create -wal and -shm files, and cannot where it may not write). With one, a
        // writer runs (or crashed): its WAL must be read too.
        let immutable = !Path::new(&format!("{path}-wal")).exists();
        let (connection, found) =
            read_only_connection(path, immutable).map_err(|source| OpenError::NotAStore {
                path: path.into(),
                source,
            })?;
        let found: i64 = match found.as_deref().map(str::parse) {
            Some(Ok(found)) => found,
            _ => {
                return Err(OpenError::NoSchemaVersion {
                    store: path.into(),
                    found,
                })
            }
        };
        if found > SCHEMA_VERSION {
            return Err(OpenError::NewerSchema {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if found < SCHEMA_VERSION {
            return Err(OpenError::OlderSchema {
                missing: format!("schema version {found}, this build reads {SCHEMA_VERSION}"),
            });
        }
        for (table, column, _) in ADDED_COLUMNS {
            if !has_column(&connection, table, column).map_err(OpenError::Sqlite)? {
                return Err(OpenError::OlderSchema {
                    missing: format!("no column {table}.{column}"),
                });
            }
        }
        Ok(SqliteStore::over(connection, path))
    }

    /// A store over an opened connection, with nothing of its own yet.
    fn over(connection: Connection, path: &str) -> Self {
        SqliteStore {
            connection,
            path: path.into(),
            commit_attempts_max: COMMIT_ATTEMPTS_MAX,
            fault: None,
            commits: 0,
            leased: false,
            in_batch: false,
        }
    }

    fn migrate(&mut self) -> Result<(), OpenError> {
        let found: Option<String> = self
            .connection
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |row| row.get(0),
            )
            .optional()
            .or_else(|e| match e {
                // A fresh file has no meta table yet.
                rusqlite::Error::SqliteFailure(_, Some(ref message))
                    if message.contains("no such table") =>
                {
                    Ok(None)
                }
                other => Err(other),
            })
            .map_err(OpenError::Sqlite)?;
        if let Some(found) = found {
            let found: i64 = found.parse().map_err(|_| OpenError::NoSchemaVersion {
                store: self.path.clone(),
                found: Some(found.clone()),
            })?;
            if found > SCHEMA_VERSION {
                return Err(OpenError::NewerSchema {
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
        }
        // IMMEDIATE: take the write lock up front, so a busy database is waited for
        // instead of failing the upgrade from a read lock.
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(OpenError::Sqlite)?;
        transaction
            .execute_batch(SCHEMA)
            .map_err(OpenError::Sqlite)?;
        for (table, column, kind) in ADDED_COLUMNS {
            if !has_column(&transaction, table, column).map_err(OpenError::Sqlite)? {
                transaction
                    .execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind}"))
                    .map_err(OpenError::Sqlite)?;
            }
        }
        transaction
            .execute_batch(
                "CREATE INDEX IF NOT EXISTS pending_awaits ON pending (awaits_stream, awaits_version)",
            )
            .map_err(OpenError::Sqlite)?;
        transaction
            .execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![SCHEMA_VERSION.to_string()],
            )
            .map_err(OpenError::Sqlite)?;
        transaction.commit().map_err(OpenError::Sqlite)
    }

    /// What `ordo status` and the metrics show (see [`crate::status`]).
    pub fn status(&mut self, longest: usize) -> Result<crate::StoreStatus, ReadError> {
        // One read transaction: a commit landing meanwhile cannot make the counters,
        // the waiting events and the dead letters disagree.
        let connection = self.connection.unchecked_transaction()?;
        let counters = connection
            .query_row("SELECT value FROM meta WHERE key = 'counters'", [], |row| {
                row.get::<_, String>(0)
            })
            .optional()?;
        let mut rows = crate::status::StatusRows {
            counters: rows::counters(counters)?,
            ..Default::default()
        };
        let opt = |v: Option<i64>| v.map(|v| v as u64);
        rows.positions = connection
            .prepare(
                "SELECT source, partition, offset, committed_ms FROM checkpoints
                 ORDER BY source, partition",
            )?
            .query_map([], |row| {
                Ok(crate::status::Position {
                    source: row.get(0)?,
                    partition: row.get::<_, i64>(1)? as u32,
                    offset: row.get::<_, i64>(2)? as u64,
                    committed_ms: opt(row.get(3)?),
                })
            })?
            .collect::<Result<_, _>>()?;
        rows.pending = connection
            .prepare("SELECT state, COUNT(*), MIN(since_ms) FROM pending GROUP BY state")?
            .query_map([], |row| {
                Ok((row.get(0)?, row.get::<_, i64>(1)? as u64, opt(row.get(2)?)))
            })?
            .collect::<Result<_, _>>()?;
        rows.dead_letters =
            connection.query_row("SELECT COUNT(*), MIN(at_ms) FROM dead_letters", [], |row| {
                Ok((row.get::<_, i64>(0)? as u64, opt(row.get(1)?)))
            })?;
        if longest > 0 {
            rows.streams = waiting_streams(&connection, longest)?;
        }
        connection.commit()?;
        let mut status = crate::StoreStatus::from_rows(rows);
        status.mark_paused(self.pauses()?);
        Ok(status)
    }
}

/// The streams waiting longest, with what holds each (within the status transaction).
fn waiting_streams(
    connection: &Connection,
    limit: usize,
) -> Result<Vec<crate::status::StreamRows>, ReadError> {
    let opt = |v: Option<i64>| v.map(|v| v as u64);
    let mut found = Vec::new();
    {
        let mut statement = connection.prepare(&crate::status::longest_waiting_sql(limit))?;
        let streams: Vec<(String, u64, Option<u64>, u64)> = statement
            .query_map([], |row| {
                Ok((
                    row.get(0)?,
                    row.get::<_, i64>(1)? as u64,
                    opt(row.get(2)?),
                    row.get::<_, i64>(3)? as u64,
                ))
            })?
            .collect::<Result<_, _>>()?;
        for (stream, events, since_ms, head_version) in streams {
            let head_awaits = connection
                .query_row(
                    "SELECT awaits_stream, awaits_version FROM pending
                     WHERE stream = ?1 AND version = ?2 AND state = 'parked'",
                    params![stream, head_version as i64],
                    |row| Ok((row.get::<_, Option<String>>(0)?, opt(row.get(1)?))),
                )
                .optional()?
                .and_then(|(s, v)| s.zip(v));
            let applied = opt(connection
                .query_row(
                    "SELECT applied FROM streams WHERE stream = ?1",
                    [&stream],
                    |row| row.get(0),
                )
                .optional()?)
            .unwrap_or(0);
            let dead_letter = opt(connection.query_row(
                "SELECT MIN(id) FROM dead_letters WHERE stream = ?1 AND version = ?2",
                params![stream, applied as i64 + 1],
                |row| row.get(0),
            )?);
            found.push(crate::status::StreamRows {
                stream,
                events,
                since_ms,
                head_version,
                head_awaits,
                applied,
                dead_letter,
            });
        }
    }
    Ok(found)
}

impl SqliteStore {
    /// Reads and decodes every waiting row (what a restore that loads everything would
    /// do; the parked-events benchmark measures against it). Returns how many.
    pub fn read_all_pending(&mut self) -> Result<usize, ReadError> {
        Ok(self
            .pending_rows(
                &format!(
                    "SELECT {} FROM pending ORDER BY stream, version",
                    rows::PENDING_COLUMNS
                ),
                &[],
            )?
            .len())
    }

    fn pending_rows(
        &self,
        sql: &str,
        parameters: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<PendingRecord>, ReadError> {
        let mut statement = self.connection.prepare_cached(sql)?;
        let mut found = statement.query(parameters)?;
        let mut records = Vec::new();
        while let Some(row) = found.next()? {
            let version: i64 = row.get(1)?;
            let state: String = row.get(2)?;
            records.push(rows::pending_record(
                row.get(0)?,
                version as u64,
                &state,
                row.get(3)?,
                row.get(4)?,
                (row.get(5)?, row.get(6)?),
            )?);
        }
        Ok(records)
    }

    /// The file's path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Sets how long SQLite waits on a lock and how many commit attempts are made.
    pub fn set_busy_limits(&mut self, timeout_ms: u64, attempts: u32) -> Result<(), ReadError> {
        assert!(attempts >= 1, "at least one commit attempt");
        self.connection
            .busy_timeout(Duration::from_millis(timeout_ms))?;
        self.commit_attempts_max = attempts;
        Ok(())
    }

    /// Makes commit number `commit` (1-based) fail at `stage`, rolled back (tests only).
    #[cfg(feature = "fault-injection")]
    pub fn inject_fault(&mut self, commit: u64, stage: FaultStage) {
        self.fault = Some((commit, stage));
    }

    /// Takes the store for writing; refused while another live holder has it.
    pub fn acquire_lease(&mut self, holder: &str) -> Result<(), OpenError> {
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(OpenError::Sqlite)?;
        let current: Option<Lease> = transaction
            .query_row(
                "SELECT holder, pid, heartbeat_ms FROM lease WHERE id = 1",
                [],
                |row| {
                    Ok(Lease {
                        holder: row.get(0)?,
                        pid: row.get::<_, i64>(1)? as u32,
                        heartbeat_ms: row.get::<_, i64>(2)? as u64,
                    })
                },
            )
            .optional()
            .map_err(OpenError::Sqlite)?;
        if let Some(lease) = current {
            let fresh = crate::now_ms().saturating_sub(lease.heartbeat_ms) < LEASE_EXPIRY_MS;
            let alive = Path::new(&format!("/proc/{}", lease.pid)).exists();
            if fresh && alive && lease.pid != std::process::id() {
                return Err(OpenError::LeaseHeld {
                    holder: lease.holder,
                    pid: lease.pid,
                });
            }
        }
        transaction
            .execute(
                "INSERT INTO lease (id, holder, pid, heartbeat_ms) VALUES (1, ?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, pid = excluded.pid,
                 heartbeat_ms = excluded.heartbeat_ms",
                params![holder, std::process::id() as i64, crate::now_ms() as i64],
            )
            .map_err(OpenError::Sqlite)?;
        transaction.commit().map_err(OpenError::Sqlite)?;
        self.leased = true;
        Ok(())
    }

    /// Leaves an operator action for the `ordo run` holding the store; its id.
    pub fn request_action(&mut self, action: &OperatorAction) -> Result<u64, ReadError> {
        Ok(insert_action(&self.connection, action)?)
    }

    /// Withdraws a request nobody took up (it is recorded refused); false if the running
    /// consumer took it meanwhile.
    pub fn withdraw_action(&mut self, id: u64, why: &str) -> Result<bool, ReadError> {
        let changed = self.connection.execute(
            "UPDATE operator_actions SET state = 'refused', result = ?2, done_ms = ?3
             WHERE id = ?1 AND state = 'pending'",
            params![id as i64, why, crate::now_ms() as i64],
        )?;
        Ok(changed == 1)
    }

    /// Journal entries, oldest first.
    pub fn journal(
        &mut self,
        filter: &crate::journal::JournalFilter,
    ) -> Result<Vec<crate::journal::JournalEntry>, ReadError> {
        let sql = crate::journal::filter_sql(filter, false);
        let mut parameters: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
        if let Some(stream) = &filter.stream {
            parameters.push(Box::new(stream.clone()));
        }
        if let Some(kind) = &filter.kind {
            parameters.push(Box::new(kind.clone()));
        }
        if let Some(since) = filter.since_ms {
            parameters.push(Box::new(since as i64));
        }
        if filter.limit > 0 {
            parameters.push(Box::new(filter.limit.min(i64::MAX as u64) as i64));
        }
        let mut statement = self.connection.prepare(&sql)?;
        let mut rows = statement.query(rusqlite::params_from_iter(parameters.iter()))?;
        let mut entries = Vec::new();
        while let Some(row) = rows.next()? {
            entries.push(crate::journal::entry_from_row(
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
                row.get(5)?,
            )?);
        }
        Ok(entries)
    }

    /// One operator action as stored now.
    pub fn action(&mut self, id: u64) -> Result<Option<OperatorAction>, ReadError> {
        let sql = format!("SELECT {ACTION_COLUMNS} FROM operator_actions WHERE id = ?1");
        Ok(action_rows(&self.connection, &sql, &[&(id as i64)])?.pop())
    }

    /// The most recent operator actions, oldest first (at most `limit`).
    pub fn actions(&mut self, limit: u64) -> Result<Vec<OperatorAction>, ReadError> {
        let sql = format!(
            "SELECT {ACTION_COLUMNS} FROM (SELECT * FROM operator_actions ORDER BY id DESC
             LIMIT ?1) ORDER BY id"
        );
        action_rows(&self.connection, &sql, &[&(limit as i64)])
    }

    /// Gives the store back.
    pub fn release_lease(&mut self) {
        if self.leased {
            let _ = self.connection.execute(
                "DELETE FROM lease WHERE id = 1 AND pid = ?1",
                params![std::process::id() as i64],
            );
            self.leased = false;
        }
    }

    /// Appends events to the outbox in one transaction of its own (see [`crate::outbox`]
    /// for writing them in the application's transaction).
    pub fn outbox_append(&mut self, events: &[(String, String)]) -> Result<(), ReadError> {
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for (stream, body) in events {
            crate::outbox::write(&transaction, stream, body)?;
        }
        transaction.commit()?;
        Ok(())
    }

    /// Up to `limit` unpublished outbox rows, in order, as (position, stream, body).
    pub fn outbox_unpublished(
        &mut self,
        limit: usize,
    ) -> Result<Vec<(u64, String, String)>, ReadError> {
        let mut statement = self.connection.prepare_cached(
            "SELECT position, stream, body FROM outbox WHERE published = 0 ORDER BY position LIMIT ?1",
        )?;
        let rows = statement.query_map(params![limit as i64], |row| {
            Ok((row.get::<_, i64>(0)? as u64, row.get(1)?, row.get(2)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row?);
        }
        Ok(out)
    }

    /// Outbox rows not yet published (the relay's backlog).
    pub fn outbox_backlog(&mut self) -> Result<u64, ReadError> {
        Ok(self.connection.query_row(
            "SELECT COUNT(*) FROM outbox WHERE published = 0",
            [],
            |row| row.get::<_, i64>(0),
        )? as u64)
    }

    /// Marks every outbox row up to `position` published.
    pub fn outbox_mark_published(&mut self, position: u64) -> Result<(), ReadError> {
        self.connection.execute(
            "UPDATE outbox SET published = 1 WHERE published = 0 AND position <= ?1",
            params![position as i64],
        )?;
        Ok(())
    }

    /// How many events wait in the store.
    pub fn pending_count(&mut self) -> Result<u64, ReadError> {
        Ok(self
            .connection
            .query_row("SELECT COUNT(*) FROM pending", [], |row| {
                row.get::<_, i64>(0)
            })? as u64)
    }

    /// Writes a free-form setting (the run's engine configuration, for operator verbs).
    pub fn set_setting(&mut self, key: &str, value: &str) -> Result<(), ReadError> {
        self.connection.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![format!("setting:{key}"), value],
        )?;
        Ok(())
    }

    /// Reads a setting written by [`Self::set_setting`].
    pub fn setting(&self, key: &str) -> Result<Option<String>, ReadError> {
        self.meta(&format!("setting:{key}"))
    }

    fn meta(&self, key: &str) -> Result<Option<String>, ReadError> {
        Ok(self
            .connection
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                params![key],
                |row| row.get(0),
            )
            .optional()?)
    }

    fn write(&mut self, source: &str, batch: &CommitBatch) -> Result<(), WriteFailure> {
        let commit_number = self.commits + 1;
        let fault = self
            .fault
            .filter(|(n, _)| *n == commit_number)
            .map(|(_, stage)| stage);
        if self.in_batch {
            // A transactional handler wrote into the batch's open transaction: ordo's
            // changes join it, and it ends whole (committed, or rolled back with them).
            self.in_batch = false;
            let written = write_changes(&self.connection, source, batch, fault, self.leased);
            let end = if written.is_ok() {
                "COMMIT"
            } else {
                "ROLLBACK"
            };
            let ended = self.connection.execute_batch(end);
            if ended.is_err() && !self.connection.is_autocommit() {
                // A COMMIT that failed (busy, full disk) leaves the transaction open.
                let _ = self.connection.execute_batch("ROLLBACK");
            }
            written?;
            return Ok(ended?);
        }
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        write_changes(&transaction, source, batch, fault, self.leased)?;
        transaction.commit()?;
        Ok(())
    }

    /// Opens the batch's write transaction, if it is not open: a transactional handler's
    /// writes then go into the very transaction that the next commit ends with ordo's
    /// versions and positions.
    pub fn begin_batch(&mut self) -> Result<(), ReadError> {
        if !self.in_batch {
            self.connection.execute_batch("BEGIN IMMEDIATE")?;
            self.in_batch = true;
        }
        Ok(())
    }

    /// The connection, for a transactional handler (inside the batch's transaction once
    /// [`Self::begin_batch`] opened it).
    pub fn connection(&self) -> &Connection {
        &self.connection
    }
}

/// Writes one commit's changes through `transaction` (ordo's own, or the batch's).
fn write_changes(
    transaction: &Connection,
    source: &str,
    batch: &CommitBatch,
    fault: Option<FaultStage>,
    leased: bool,
) -> Result<(), WriteFailure> {
    let changes = &batch.changes;
    if fault == Some(FaultStage::AfterCheckpoints) {
        write_checkpoints(transaction, source, changes)?;
        return Err(injected("after checkpoints, before documents"));
    }
    write_documents(transaction, &batch.documents)?;
    if fault == Some(FaultStage::AfterDocuments) {
        return Err(injected("after documents, before checkpoints"));
    }
    write_streams(transaction, changes)?;
    write_pending(transaction, changes)?;
    write_dead_letters(transaction, changes)?;
    write_dedupe(transaction, changes)?;
    write_checkpoints(transaction, source, changes)?;
    write_meta(transaction, changes)?;
    write_actions(transaction, &batch.actions)?;
    write_journal(transaction, batch)?;
    if leased {
        transaction
            .prepare_cached("UPDATE lease SET heartbeat_ms = ?1 WHERE id = 1")?
            .execute(params![crate::now_ms() as i64])?;
    }
    Ok(())
}

/// Every partition's checkpoint for `source`, with the time it was committed.
fn write_checkpoints(
    transaction: &Connection,
    source: &str,
    changes: &ChangeSet,
) -> rusqlite::Result<()> {
    let mut statement = transaction.prepare_cached(
        "INSERT INTO checkpoints (source, partition, offset, committed_ms)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (source, partition) DO UPDATE SET offset = excluded.offset,
         committed_ms = excluded.committed_ms",
    )?;
    let committed_ms = crate::now_ms() as i64;
    for (partition, offset) in &changes.checkpoints {
        statement.execute(params![
            source,
            *partition as i64,
            *offset as i64,
            committed_ms
        ])?;
    }
    Ok(())
}

/// The documents the finished works produced (live, deleted, or cleared by a merge).
fn write_documents(
    transaction: &Connection,
    documents: &[(Arc<str>, Option<Document>)],
) -> rusqlite::Result<()> {
    let mut statement = transaction.prepare_cached(
        "INSERT INTO documents (stream, doc, deleted) VALUES (?1, ?2, ?3)
         ON CONFLICT (stream) DO UPDATE SET doc = excluded.doc, deleted = excluded.deleted",
    )?;
    for (stream, document) in documents {
        let (doc, deleted) = match document {
            Some(Document::Live(value)) => (Some(value.to_string()), 0),
            Some(Document::Deleted) => (None, 1),
            None => (None, 0),
        };
        statement.execute(params![&**stream, doc, deleted])?;
    }
    Ok(())
}

/// Each moved stream's applied version and alias.
fn write_streams(transaction: &Connection, changes: &ChangeSet) -> rusqlite::Result<()> {
    let mut statement = transaction.prepare_cached(
        "INSERT INTO streams (stream, applied, alias_target, alias_cut) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (stream) DO UPDATE SET applied = excluded.applied,
         alias_target = excluded.alias_target, alias_cut = excluded.alias_cut",
    )?;
    for record in &changes.streams {
        let (target, cut) = match &record.alias {
            Some((target, cut)) => (Some(&**target), Some(*cut as i64)),
            None => (None, None),
        };
        statement.execute(params![&*record.stream, record.applied as i64, target, cut])?;
    }
    Ok(())
}

/// Waiting events: deleted rows, then rows put (a rewrite keeps a row's `since_ms`).
fn write_pending(transaction: &Connection, changes: &ChangeSet) -> rusqlite::Result<()> {
    let mut delete =
        transaction.prepare_cached("DELETE FROM pending WHERE stream = ?1 AND version = ?2")?;
    for (stream, version) in &changes.pending_delete {
        delete.execute(params![&**stream, *version as i64])?;
    }
    let mut put = transaction.prepare_cached(
        "INSERT INTO pending
         (stream, version, state, event, partition, awaits_stream, awaits_version, since_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (stream, version) DO UPDATE SET state = excluded.state,
         event = excluded.event, partition = excluded.partition,
         awaits_stream = excluded.awaits_stream, awaits_version = excluded.awaits_version",
    )?;
    // Wall time, kept by a later rewrite of the row (the conflict clause leaves it):
    // how long the event has waited, for `ordo status` and the metrics.
    let since_ms = crate::now_ms() as i64;
    for record in &changes.pending_put {
        let state = rows::pending_state_name(record.state);
        let event = record.event.as_ref().map(|e| e.to_json_string());
        put.execute(params![
            &*record.stream,
            record.version as i64,
            state,
            event,
            record.partition.map(i64::from),
            record.awaits.as_ref().map(|(s, _)| &**s),
            record.awaits.as_ref().map(|(_, v)| *v as i64),
            since_ms
        ])?;
    }
    Ok(())
}

/// Dead letters removed and put.
fn write_dead_letters(transaction: &Connection, changes: &ChangeSet) -> rusqlite::Result<()> {
    let mut delete = transaction.prepare_cached("DELETE FROM dead_letters WHERE id = ?1")?;
    for id in &changes.dead_letters_delete {
        delete.execute(params![*id as i64])?;
    }
    let mut put = transaction.prepare_cached(
        "INSERT OR REPLACE INTO dead_letters
         (id, kind, stream, version, event_id, body, reason, partition, offset, at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    for entry in &changes.dead_letters_put {
        put.execute(params![
            entry.id as i64,
            entry.kind.name(),
            entry.stream.as_deref(),
            entry.version.map(|v| v as i64),
            entry.event_id.as_deref(),
            entry.body,
            entry.reason,
            entry.position.map(|p| p.partition as i64),
            entry.position.map(|p| p.offset as i64),
            entry.at_ms as i64,
        ])?;
    }
    Ok(())
}

/// The batch's dedupe block, and the window below its floor dropped.
fn write_dedupe(transaction: &Connection, changes: &ChangeSet) -> rusqlite::Result<()> {
    if let (Some(first), Some(last)) = (changes.dedupe_put.first(), changes.dedupe_put.last()) {
        // Sequences in one change set are consecutive; keep the block contiguous.
        let mut hashes = Vec::with_capacity(changes.dedupe_put.len() * 8);
        for (_, hash) in &changes.dedupe_put {
            hashes.extend_from_slice(&hash.to_le_bytes());
        }
        transaction
        .prepare_cached(
            "INSERT OR REPLACE INTO dedupe_blocks (first_sequence, last_sequence, hashes) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![first.0 as i64, last.0 as i64, hashes])?;
    }
    transaction
        .prepare_cached("DELETE FROM dedupe_blocks WHERE last_sequence < ?1")?
        .execute(params![changes.dedupe_floor as i64])?;
    Ok(())
}

/// The counters, the next dead-letter id and the dedupe floor.
fn write_meta(transaction: &Connection, changes: &ChangeSet) -> rusqlite::Result<()> {
    let mut meta = transaction.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?;
    meta.execute(params!["counters", changes.counters.to_json().to_string()])?;
    meta.execute(params![
        "next_dead_letter_id",
        changes.next_dead_letter_id.to_string()
    ])?;
    meta.execute(params!["dedupe_floor", changes.dedupe_floor.to_string()])?;
    Ok(())
}

/// Records operator actions: a request taken up is updated, a new record inserted.
fn write_actions(transaction: &Connection, actions: &[OperatorAction]) -> rusqlite::Result<()> {
    for action in actions {
        let done_ms = action.done_ms.map(|ms| ms as i64);
        if action.id > 0 {
            transaction
                .prepare_cached(
                    "UPDATE operator_actions SET state = ?2, result = ?3, done_ms = ?4
                     WHERE id = ?1",
                )?
                .execute(params![
                    action.id as i64,
                    action.state.name(),
                    action.result,
                    done_ms
                ])?;
        } else {
            insert_action(transaction, action)?;
        }
    }
    Ok(())
}

/// Adds the batch's journal entries (and one per operator action carried out), then
/// applies the retention if anything was added.
fn write_journal(transaction: &Connection, batch: &CommitBatch) -> rusqlite::Result<()> {
    let mut added = 0;
    let mut insert = transaction.prepare_cached(
        "INSERT INTO journal (at_ms, kind, stream, version, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for entry in batch.journal_entries() {
        insert.execute(params![
            entry.at_ms as i64,
            entry.kind,
            entry.stream,
            entry.version.map(|v| v as i64),
            entry.detail.to_string()
        ])?;
        added += 1;
    }
    if added > 0 {
        let retention = batch.retention;
        transaction
            .prepare_cached("DELETE FROM journal WHERE id <= (SELECT MAX(id) FROM journal) - ?1")?
            .execute(params![retention.entries_max.min(i64::MAX as u64) as i64])?;
        transaction
            .prepare_cached("DELETE FROM journal WHERE at_ms < ?1")?
            .execute(params![
                crate::journal::journal_now(batch).saturating_sub(retention.age_ms_max) as i64
            ])?;
    }
    Ok(())
}

fn insert_action(connection: &Connection, action: &OperatorAction) -> rusqlite::Result<u64> {
    connection
        .prepare_cached(
            "INSERT INTO operator_actions
             (requested_ms, user_name, verb, args, reason, state, result, done_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![
            action.requested_ms as i64,
            action.user,
            action.verb,
            action.args.to_string(),
            action.reason,
            action.state.name(),
            action.result,
            action.done_ms.map(|ms| ms as i64)
        ])?;
    Ok(connection.last_insert_rowid() as u64)
}

fn action_rows(
    connection: &Connection,
    sql: &str,
    parameters: &[&dyn rusqlite::ToSql],
) -> Result<Vec<OperatorAction>, ReadError> {
    let mut statement = connection.prepare_cached(sql)?;
    let mut rows = statement.query(parameters)?;
    let mut actions = Vec::new();
    while let Some(row) = rows.next()? {
        actions.push(crate::operator::action_from_row(
            row.get(0)?,
            row.get(1)?,
            row.get(2)?,
            row.get(3)?,
            row.get(4)?,
            row.get(5)?,
            row.get(6)?,
            row.get(7)?,
            row.get(8)?,
        )?);
    }
    Ok(actions)
}

/// Why one commit attempt failed.
enum WriteFailure {
    Database(rusqlite::Error),
    Injected(String),
}

impl From<rusqlite::Error> for WriteFailure {
    fn from(error: rusqlite::Error) -> Self {
        WriteFailure::Database(error)
    }
}

fn injected(what: &str) -> WriteFailure {
    WriteFailure::Injected(format!("ordo injected fault: {what}"))
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        if self.in_batch {
            // An uncommitted batch goes (it would also take the lease release with it).
            let _ = self.connection.execute_batch("ROLLBACK");
            self.in_batch = false;
        }
        self.release_lease();
    }
}

impl crate::BatchTransaction for SqliteStore {
    type Connection = Connection;

    fn begin_work(&mut self) -> Result<&mut Connection, ReadError> {
        self.begin_batch()?;
        self.connection.execute_batch("SAVEPOINT ordo_work")?;
        Ok(&mut self.connection)
    }

    fn end_work(&mut self, keep: bool) -> Result<(), ReadError> {
        let end = if keep {
            "RELEASE ordo_work"
        } else {
            "ROLLBACK TO ordo_work; RELEASE ordo_work"
        };
        self.connection.execute_batch(end)?;
        Ok(())
    }
}

impl Store for SqliteStore {
    fn pauses(&mut self) -> Result<Vec<crate::Pause>, ReadError> {
        let actions = action_rows(&self.connection, &crate::operator::pause_actions_sql(), &[])?;
        Ok(crate::pauses_in_force(&actions))
    }

    fn requested_actions(&mut self) -> Result<Vec<OperatorAction>, ReadError> {
        let sql = format!(
            "SELECT {ACTION_COLUMNS} FROM operator_actions WHERE state = 'pending' ORDER BY id"
        );
        action_rows(&self.connection, &sql, &[])
    }

    fn snapshot(&mut self, source: &str) -> Result<Snapshot, ReadError> {
        let connection = &self.connection;
        let mut snapshot = Snapshot {
            streams: snapshot_rows::streams(connection)?,
            blocking_dead_letters: snapshot_rows::blocking_dead_letters(connection)?,
            checkpoints: snapshot_rows::checkpoints(connection, source)?,
            ..Snapshot::default()
        };
        // Parked streams stay in the store (spilled); only their names and what they wait
        // for are read. The rest of the waiting events come back into memory.
        snapshot.pending = self.pending_rows(&rows::unparked_pending_sql(), &[])?;
        snapshot.spilled = snapshot_rows::spilled_streams(&self.connection)?;
        snapshot.spilled_waiters = snapshot_rows::spilled_waiters(&self.connection)?;
        let floor: u64 = self
            .meta("dedupe_floor")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        snapshot_rows::dedupe(&self.connection, floor, &mut snapshot.dedupe)?;
        snapshot.counters = self.counters()?;
        snapshot.next_dead_letter_id = self
            .meta("next_dead_letter_id")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        Ok(snapshot)
    }

    fn documents(&mut self, streams: &[Arc<str>]) -> Result<Vec<Option<Document>>, ReadError> {
        let mut statement = self
            .connection
            .prepare_cached("SELECT doc, deleted FROM documents WHERE stream = ?1")?;
        let mut documents = Vec::with_capacity(streams.len());
        for stream in streams {
            let row: Option<(Option<String>, i64)> = statement
                .query_row(params![&**stream], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?;
            documents.push(match row {
                None => None,
                Some((doc, deleted)) => rows::document(stream, doc, deleted != 0)?,
            });
        }
        Ok(documents)
    }

    fn commit(&mut self, source: &str, batch: CommitBatch) -> Result<(), CommitError> {
        // A batch transaction that failed is rolled back with a handler's writes in it:
        // committing ordo's part again alone would record versions without their effects.
        let retryable = !self.in_batch;
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.write(source, &batch) {
                Ok(()) => {
                    self.commits += 1;
                    return Ok(());
                }
                Err(WriteFailure::Injected(message)) => {
                    self.commits += 1;
                    self.fault = None;
                    return Err(CommitError::Injected(message));
                }
                Err(WriteFailure::Database(error)) if is_busy(&error) => {
                    if !retryable || attempts >= self.commit_attempts_max {
                        return Err(CommitError::Busy { attempts });
                    }
                    std::thread::sleep(Duration::from_millis(50 * u64::from(attempts)));
                }
                Err(WriteFailure::Database(error)) => return Err(CommitError::Sqlite(error)),
            }
        }
    }

    fn dead_letters(&mut self) -> Result<Vec<DeadLetter>, ReadError> {
        let mut statement = self.connection.prepare(
            "SELECT id, kind, stream, version, event_id, body, reason, partition, offset, at_ms
             FROM dead_letters ORDER BY id",
        )?;
        let mut rows = statement.query([])?;
        let mut entries = Vec::new();
        while let Some(row) = rows.next()? {
            let kind: String = row.get(1)?;
            let partition: Option<i64> = row.get(7)?;
            let offset: Option<i64> = row.get(8)?;
            entries.push(DeadLetter {
                id: row.get::<_, i64>(0)? as u64,
                kind: DeadLetterKind::from_name(&kind)
                    .ok_or_else(|| corrupt(format!("dead letter kind `{kind}`")))?,
                stream: row.get::<_, Option<String>>(2)?.map(String::into_boxed_str),
                version: row.get::<_, Option<i64>>(3)?.map(|v| v as u64),
                event_id: row.get::<_, Option<String>>(4)?.map(String::into_boxed_str),
                body: row.get(5)?,
                reason: row.get(6)?,
                position: partition.zip(offset).map(|(p, o)| SourcePosition {
                    partition: p as u32,
                    offset: o as u64,
                }),
                at_ms: row.get::<_, i64>(9)? as u64,
            });
        }
        Ok(entries)
    }

    fn export(&mut self) -> Result<Vec<ExportRow>, ReadError> {
        let mut statement = self.connection.prepare(
            "SELECT s.stream, s.applied, s.alias_target, d.doc, COALESCE(d.deleted, 0)
             FROM streams s LEFT JOIN documents d ON d.stream = s.stream
             WHERE s.applied > 0 OR s.alias_target IS NOT NULL
             ORDER BY s.stream",
        )?;
        let mut query = statement.query([])?;
        let mut found = Vec::new();
        while let Some(row) = query.next()? {
            found.push(rows::StreamRow {
                stream: row.get(0)?,
                version: row.get::<_, i64>(1)? as u64,
                alias_target: row.get(2)?,
                doc: row.get(3)?,
                deleted: row.get::<_, i64>(4)? != 0,
            });
        }
        rows::export_rows(found)
    }

    fn counters(&mut self) -> Result<Counters, ReadError> {
        rows::counters(self.meta("counters")?)
    }

    fn load_pending(&mut self, load: &Load) -> Result<Loaded, ReadError> {
        match load {
            Load::Stream(stream) => Ok(Loaded {
                records: self.pending_rows(
                    &format!(
                        "SELECT {} FROM pending WHERE stream = ?1 ORDER BY version",
                        rows::PENDING_COLUMNS
                    ),
                    &[&&**stream as &dyn rusqlite::ToSql],
                )?,
                waiters_remaining_min: None,
            }),
            Load::Waiters { awaited, through } => {
                let through = *through as i64;
                let records = self.pending_rows(
                    &format!(
                        "SELECT {} FROM pending WHERE stream IN
                         (SELECT stream FROM pending WHERE awaits_stream = ?1 AND awaits_version <= ?2)
                         ORDER BY stream, version",
                        rows::PENDING_COLUMNS
                    ),
                    &[&&**awaited as &dyn rusqlite::ToSql, &through],
                )?;
                let remaining: Option<i64> = self.connection.query_row(
                    "SELECT MIN(awaits_version) FROM pending
                     WHERE awaits_stream = ?1 AND awaits_version > ?2",
                    params![&**awaited, through],
                    |row| row.get(0),
                )?;
                Ok(Loaded {
                    records,
                    waiters_remaining_min: remaining.map(|v| v as u64),
                })
            }
        }
    }

    fn stream_records(&mut self, streams: &[Arc<str>]) -> Result<Vec<StreamRecord>, ReadError> {
        let mut statement = self.connection.prepare_cached(
            "SELECT applied, alias_target, alias_cut FROM streams WHERE stream = ?1",
        )?;
        let mut records = Vec::new();
        for stream in streams {
            let found = statement
                .query_row(params![&**stream], |row| {
                    let applied: i64 = row.get(0)?;
                    let target: Option<String> = row.get(1)?;
                    let cut: Option<i64> = row.get(2)?;
                    Ok(StreamRecord {
                        stream: stream.clone(),
                        applied: applied as u64,
                        alias: target.zip(cut).map(|(t, c)| (Arc::from(t), c as u64)),
                    })
                })
                .optional()?;
            records.extend(found);
        }
        Ok(records)
    }
}

/// Creates the empty file a new store starts as (SQLite takes an empty file for a new
/// database), so that a directory this process may not write is named as such.
fn create_empty(file: &Path) -> Result<(), String> {
    if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            return Err(format!("directory `{}` does not exist", parent.display()));
        }
    }
    use std::os::unix::fs::OpenOptionsExt;
    // A new file of its own: no lock of this process is on it. SQLite's own mode.
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(file)
    {
        Ok(_) => Ok(()),
        // Another process created it meanwhile: SQLite opens it as it is.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// Refuses a path that exists and is not a regular file: SQLite would say "disk I/O
/// error" of a FIFO, or block on it.
fn not_a_file(path: &str) -> Result<(), OpenError> {
    match ordo_log::special_file(path) {
        Some(kind) => Err(OpenError::NotAFile {
            path: path.into(),
            kind,
        }),
        None => Ok(()),
    }
}

/// The parts of a restart's [`Snapshot`], each read with one query.
mod snapshot_rows {
    use std::sync::Arc;

    use ordo_core::StreamRecord;
    use rusqlite::{params, Connection};

    use super::rows;
    use crate::error::ReadError;

    /// A spilled stream and the partition it was read from.
    type SpilledStream = (Box<str>, Option<u32>);

    pub(super) fn streams(connection: &Connection) -> Result<Vec<StreamRecord>, ReadError> {
        let mut statement =
            connection.prepare("SELECT stream, applied, alias_target, alias_cut FROM streams")?;
        let rows = statement.query_map([], |row| {
            let stream: String = row.get(0)?;
            let applied: i64 = row.get(1)?;
            let target: Option<String> = row.get(2)?;
            let cut: Option<i64> = row.get(3)?;
            Ok(StreamRecord {
                stream: Arc::from(stream),
                applied: applied as u64,
                alias: target.zip(cut).map(|(t, c)| (Arc::from(t), c as u64)),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Spilled streams and the partition each was read from.
    pub(super) fn spilled_streams(
        connection: &Connection,
    ) -> Result<Vec<SpilledStream>, ReadError> {
        let mut statement = connection.prepare(rows::SPILLED_STREAMS_SQL)?;
        let rows = statement.query_map([], |row| {
            let stream: String = row.get(0)?;
            let partition: Option<i64> = row.get(1)?;
            Ok((
                stream.into_boxed_str(),
                partition.and_then(|p| u32::try_from(p).ok()),
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// What each spilled stream waits for: (stream, version).
    pub(super) fn spilled_waiters(
        connection: &Connection,
    ) -> Result<Vec<(Box<str>, u64)>, ReadError> {
        let mut statement = connection.prepare(rows::SPILLED_WAITERS_SQL)?;
        let rows = statement.query_map([], |row| {
            let stream: String = row.get(0)?;
            let version: i64 = row.get(1)?;
            Ok((stream.into_boxed_str(), version as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Sequenced dead letters, which hold their streams: (stream, version, id).
    pub(super) fn blocking_dead_letters(
        connection: &Connection,
    ) -> Result<Vec<(Box<str>, u64, u64)>, ReadError> {
        let mut statement = connection.prepare(
            "SELECT stream, version, id FROM dead_letters
             WHERE kind = 'sequenced' AND stream IS NOT NULL AND version IS NOT NULL",
        )?;
        let rows = statement.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?.into_boxed_str(),
                row.get::<_, i64>(1)? as u64,
                row.get::<_, i64>(2)? as u64,
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The dedupe window's ids at or above `floor`, appended to `dedupe`.
    pub(super) fn dedupe(
        connection: &Connection,
        floor: u64,
        dedupe: &mut Vec<(u64, u64)>,
    ) -> Result<(), ReadError> {
        let mut statement = connection
            .prepare("SELECT first_sequence, hashes FROM dedupe_blocks ORDER BY first_sequence")?;
        let mut found = statement.query([])?;
        while let Some(row) = found.next()? {
            let first: i64 = row.get(0)?;
            let hashes: Vec<u8> = row.get(1)?;
            rows::dedupe_block(first as u64, &hashes, floor, dedupe)?;
        }
        Ok(())
    }

    /// `source`'s committed checkpoints: (partition, offset).
    pub(super) fn checkpoints(
        connection: &Connection,
        source: &str,
    ) -> Result<Vec<(u32, u64)>, ReadError> {
        let mut statement =
            connection.prepare("SELECT partition, offset FROM checkpoints WHERE source = ?1")?;
        let rows = statement.query_map(params![source], |row| {
            Ok((row.get::<_, i64>(0)? as u32, row.get::<_, i64>(1)? as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ordo_core::{parse_event, Config, Engine, OpPolicy, Outcome};

    fn event(stream: &str, version: u64) -> ordo_core::Event {
        let text = format!(
            r#"{{"id":"{stream}-{version}","stream":"{stream}","version":{version},"type":"T","op":"incr","data":{{"n":1}}}}"#
        );
        parse_event(text.as_bytes(), OpPolicy::Document).unwrap()
    }

    #[test]
    fn a_commit_round_trips_through_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let path = path.to_str().unwrap();
        let mut store = SqliteStore::open(path, true).unwrap();
        let mut engine = Engine::new(Config::default());
        let at = |offset| {
            Some(SourcePosition {
                partition: 0,
                offset,
            })
        };
        engine.handle_event(0, at(0), event("a", 1));
        engine.handle_event(0, at(1), event("a", 3));
        engine.handle_bytes(0, at(2), b"garbage");
        let work = engine.poll_work(0).unwrap();
        engine.handle_outcome(0, work, Outcome::Applied);
        let changes = engine.take_changes();
        let documents = vec![(
            Arc::from("a"),
            Some(Document::Live(serde_json::json!({"n": 1}))),
        )];
        store
            .commit(
                "file:x",
                CommitBatch {
                    changes,
                    documents,
                    actions: Vec::new(),
                    journal: Vec::new(),
                    retention: Default::default(),
                    now_ms: 0,
                },
            )
            .unwrap();

        let snapshot = store.snapshot("file:x").unwrap();
        assert_eq!(snapshot.checkpoints, vec![(0, 2)]);
        assert_eq!(snapshot.pending.len(), 1);
        assert_eq!(snapshot.dedupe.len(), 2);
        assert_eq!(store.snapshot("other").unwrap().checkpoints, vec![]);
        assert_eq!(
            store.dead_letters().unwrap()[0].kind,
            DeadLetterKind::Unroutable
        );
        let export = store.export().unwrap();
        assert_eq!(export[0].doc, Some(serde_json::json!({"n": 1})));
        assert_eq!(export[0].version, 1);
        let restored = Engine::restore(Config::default(), snapshot, 0);
        assert_eq!(restored.applied_version("a"), 1);
    }

    #[test]
    #[cfg(feature = "fault-injection")]
    fn an_injected_fault_rolls_back_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut store = SqliteStore::open(path.to_str().unwrap(), true).unwrap();
        for stage in [FaultStage::AfterDocuments, FaultStage::AfterCheckpoints] {
            store.inject_fault(store.commits + 1, stage);
            let changes = ordo_core::ChangeSet {
                checkpoints: vec![(0, 9)],
                ..Default::default()
            };
            let documents = vec![(Arc::from("a"), Some(Document::Deleted))];
            assert!(matches!(
                store.commit(
                    "src",
                    CommitBatch {
                        changes,
                        documents,
                        ..CommitBatch::default()
                    }
                ),
                Err(CommitError::Injected(_))
            ));
            assert_eq!(store.snapshot("src").unwrap().checkpoints, vec![]);
            assert_eq!(store.documents(&[Arc::from("a")]).unwrap(), vec![None]);
        }
    }

    #[test]
    fn migrates_a_version_1_store_keeping_its_waiting_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let path = path.to_str().unwrap();
        drop(SqliteStore::open(path, true).unwrap());
        // Version 1 had no partition column for waiting events.
        let connection = Connection::open(path).unwrap();
        connection
            .execute_batch(
                "ALTER TABLE pending DROP COLUMN partition;
                 INSERT INTO pending (stream, version, state, event) VALUES ('a', 2, 'skipped', NULL);
                 UPDATE meta SET value = '1' WHERE key = 'schema_version'",
            )
            .unwrap();
        drop(connection);
        let mut store = SqliteStore::open(path, true).unwrap();
        let snapshot = store.snapshot("s").unwrap();
        assert_eq!(snapshot.pending.len(), 1);
        assert_eq!(snapshot.pending[0].partition, None);
        assert_eq!(
            store.meta("schema_version").unwrap().as_deref(),
            Some(SCHEMA_VERSION.to_string().as_str())
        );
    }

    #[test]
    fn refuses_a_newer_schema_and_a_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let path = path.to_str().unwrap();
        assert!(matches!(
            SqliteStore::open(path, false),
            Err(OpenError::Missing(_))
        ));
        drop(SqliteStore::open(path, true).unwrap());
        let connection = Connection::open(path).unwrap();
        connection
            .execute(
                "UPDATE meta SET value = '99' WHERE key = 'schema_version'",
                [],
            )
            .unwrap();
        drop(connection);
        assert!(matches!(
            SqliteStore::open(path, true),
            Err(OpenError::NewerSchema { found: 99, .. })
        ));
        let nowhere = dir.path().join("no/such/dir/s.db");
        assert!(matches!(
            SqliteStore::open(nowhere.to_str().unwrap(), true),
            Err(OpenError::NotWritable { .. })
        ));
    }

    #[test]
    fn a_busy_database_is_retried_within_a_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let path = path.to_str().unwrap().to_string();
        let mut store = SqliteStore::open(&path, true).unwrap();
        store.set_busy_limits(50, 3).unwrap();
        let hold = |millis: u64| {
            let path = path.clone();
            let (locked, wait) = std::sync::mpsc::channel();
            let holder = std::thread::spawn(move || {
                let mut other = Connection::open(&path).unwrap();
                let transaction = other
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .unwrap();
                locked.send(()).unwrap();
                std::thread::sleep(Duration::from_millis(millis));
                transaction.commit().unwrap();
            });
            wait.recv().unwrap();
            holder
        };
        // Held briefly: a later attempt gets through.
        let holder = hold(120);
        store.commit("src", CommitBatch::default()).unwrap();
        holder.join().unwrap();
        // Held past every attempt: a clear error, nothing written.
        let holder = hold(2_000);
        assert!(matches!(
            store.commit("src", CommitBatch::default()),
            Err(CommitError::Busy { attempts: 3 })
        ));
        holder.join().unwrap();
    }

    #[test]
    fn a_lease_keeps_a_second_writer_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let path = path.to_str().unwrap();
        let mut first = SqliteStore::open(path, true).unwrap();
        first.acquire_lease("run").unwrap();
        // Same process: allowed (pid equal). Simulate another live holder by pid 1.
        first
            .connection
            .execute("UPDATE lease SET pid = 1", [])
            .unwrap();
        let mut second = SqliteStore::open(path, true).unwrap();
        assert!(matches!(
            second.acquire_lease("run"),
            Err(OpenError::LeaseHeld { pid: 1, .. })
        ));
    }
}
