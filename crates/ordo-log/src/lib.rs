//! The embedded event log: events saved to a SQLite file in one global order.
//!
//! For systems that save events first and publish them after: here the log *is* the
//! store, and readers read it directly, so no crash between "saved" and "published" can
//! leave a reader behind. Producers append with optimistic concurrency per stream (an
//! expected version); readers catch up from a stored position and then follow live
//! appends, woken at once by appends in this process and within
//! [`CROSS_PROCESS_POLL_MS`] by appends from another process (a cheap
//! `PRAGMA data_version` check, not a query storm).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};

/// How often a waiting reader checks for appends made by another process.
pub const CROSS_PROCESS_POLL_MS: u64 = 10;

/// Most events returned by one [`EventLog::read`].
pub const READ_BATCH_MAX: usize = 65_536;

/// How long SQLite itself waits on a lock before answering busy.
pub const BUSY_TIMEOUT_MS: u64 = 5_000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    position INTEGER PRIMARY KEY AUTOINCREMENT, stream TEXT, version INTEGER, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS stream_heads (stream TEXT PRIMARY KEY, version INTEGER NOT NULL);
";

/// Why the log failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum LogError {
    /// The log file does not exist (and was not to be created).
    Missing(String),
    /// The file or its directory cannot be opened for writing.
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
    /// SQLite failed.
    Sqlite(rusqlite::Error),
}

/// Why the file's permission bits refuse this process `path` (to read, or to read and
/// write), in words; `None` when they allow it, or cannot be read. Judged from the mode
/// and owner without opening the file: a descriptor opened and closed here would drop
/// every POSIX lock SQLite holds on the file in this process (SQLite's "how to corrupt",
/// 2.2.1). ACLs and read-only mounts are left to SQLite's own error. The SQLite store
/// judges its file with it too.
pub fn permission_denied(path: &Path, write: bool) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::metadata(path).ok()?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let numbers = |name: &str| -> Option<Vec<u32>> {
        let rest = status.lines().find_map(|line| line.strip_prefix(name))?;
        Some(
            rest.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect(),
        )
    };
    let uid = *numbers("Uid:")?.get(1)?;
    if uid == 0 {
        return None;
    }
    let mut gids = numbers("Groups:").unwrap_or_default();
    gids.push(*numbers("Gid:")?.get(1)?);
    let mode = metadata.mode();
    let shift = if metadata.uid() == uid {
        6
    } else if gids.contains(&metadata.gid()) {
        3
    } else {
        0
    };
    let refused = mode & (0o4 << shift) == 0 || (write && mode & (0o2 << shift) == 0);
    refused.then(|| {
        format!(
            "Permission denied (mode {:o}, owner uid {}; this process runs as uid {uid})",
            mode & 0o777,
            metadata.uid()
        )
    })
}

/// What `path` is when it exists and is not a regular file (a directory, a FIFO, a
/// socket, a device): SQLite says "disk I/O error" of a FIFO or blocks on it, and a file
/// source would wait on it for a writer.
pub fn special_file(path: &str) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    let kind = std::fs::metadata(path).ok()?.file_type();
    Some(match () {
        _ if kind.is_file() => return None,
        _ if kind.is_dir() => "a directory",
        _ if kind.is_fifo() => "a FIFO (named pipe)",
        _ if kind.is_socket() => "a socket",
        _ => "a device",
    })
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogError::Missing(path) => write!(f, "event log `{path}` does not exist"),
            LogError::NotWritable { path, detail } => {
                write!(
                    f,
                    "event log `{path}` cannot be opened for writing: {detail}"
                )
            }
            LogError::NotReadable { path, detail } => {
                write!(f, "event log `{path}` cannot be read: {detail}")
            }
            LogError::NotAFile { path, kind } => {
                write!(f, "event log `{path}` is {kind}, not a file")
            }
            LogError::Sqlite(error) => write!(f, "event log error: {error}"),
        }
    }
}

impl std::error::Error for LogError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LogError::Sqlite(error) => Some(error),
            _ => None,
        }
    }
}

impl From<rusqlite::Error> for LogError {
    fn from(error: rusqlite::Error) -> Self {
        LogError::Sqlite(error)
    }
}

/// Why an append was refused. Nothing of it was written.
#[derive(Debug)]
#[non_exhaustive]
pub enum AppendError {
    /// The stream is not at the version the producer expected (someone else wrote).
    WrongExpectedVersion {
        /// The stream.
        stream: String,
        /// What the producer expected.
        expected: ExpectedVersion,
        /// Where the stream is.
        actual: u64,
    },
    /// An event is not a valid envelope, or not for this stream, or out of sequence.
    InvalidEvent {
        /// Its index in the batch.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// The log failed.
    Log(LogError),
}

impl fmt::Display for AppendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppendError::WrongExpectedVersion {
                stream,
                expected,
                actual,
            } => write!(
                f,
                "stream `{stream}` is at version {actual}, expected {expected:?}"
            ),
            AppendError::InvalidEvent { index, reason } => write!(f, "event {index}: {reason}"),
            AppendError::Log(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for AppendError {}

impl From<rusqlite::Error> for AppendError {
    fn from(error: rusqlite::Error) -> Self {
        AppendError::Log(error.into())
    }
}

/// What a producer believes about a stream before appending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The stream has no events yet.
    NoStream,
    /// The stream's last version is exactly this.
    Exact(u64),
}

/// Wakes readers of one log file in this process.
#[derive(Debug, Default)]
struct AppendSignal {
    appends: Mutex<u64>,
    changed: Condvar,
}

fn signal_for(path: &Path) -> Arc<AppendSignal> {
    static SIGNALS: OnceLock<Mutex<HashMap<PathBuf, Arc<AppendSignal>>>> = OnceLock::new();
    let key = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mut signals = SIGNALS
        .get_or_init(Default::default)
        .lock()
        .expect("signal map");
    signals.entry(key).or_default().clone()
}

/// What `ordo append` did with its input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AppendSummary {
    /// Lines appended.
    pub appended: u64,
    /// The log's last position after the append.
    pub last_position: u64,
}

/// A handle on one event log file.
pub struct EventLog {
    connection: Connection,
    signal: Arc<AppendSignal>,
    path: String,
}

impl fmt::Debug for EventLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventLog")
            .field("path", &self.path)
            .finish()
    }
}

impl EventLog {
    /// Opens an existing log for reading only: nothing is created or written (`ordo
    /// status` measuring lag beside a running appender).
    pub fn open_read_only(path: &str) -> Result<Self, LogError> {
        let file = Path::new(path);
        let exists = file.try_exists().map_err(|e| LogError::NotReadable {
            path: path.into(),
            detail: e.to_string(),
        })?;
        if !exists {
            return Err(LogError::Missing(path.into()));
        }
        if let Some(kind) = special_file(path) {
            return Err(LogError::NotAFile {
                path: path.into(),
                kind,
            });
        }
        if let Some(refused) = permission_denied(file, false) {
            return Err(LogError::NotReadable {
                path: path.into(),
                detail: refused,
            });
        }
        // As for a store (ordo_store's SqliteStore::open_read_only): with no -wal file no
        // writer has the log open, and it is read as it stands, creating nothing.
        let connection = if Path::new(&format!("{path}-wal")).exists() {
            Connection::open_with_flags(file, OpenFlags::SQLITE_OPEN_READ_ONLY)?
        } else {
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
        };
        connection.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))?;
        Ok(EventLog {
            connection,
            signal: signal_for(file),
            path: path.into(),
        })
    }

    /// Opens the log at `path`, creating it when `create` is set.
    pub fn open(path: &str, create: bool) -> Result<Self, LogError> {
        let file = Path::new(path);
        if let Some(kind) = special_file(path) {
            return Err(LogError::NotAFile {
                path: path.into(),
                kind,
            });
        }
        let exists = file.try_exists().map_err(|e| LogError::NotWritable {
            path: path.into(),
            detail: e.to_string(),
        })?;
        if !exists {
            if !create {
                return Err(LogError::Missing(path.into()));
            }
            if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
                if !parent.is_dir() {
                    return Err(LogError::NotWritable {
                        path: path.into(),
                        detail: format!("directory `{}` does not exist", parent.display()),
                    });
                }
            }
        } else if let Some(refused) = permission_denied(file, true) {
            return Err(LogError::NotWritable {
                path: path.into(),
                detail: refused,
            });
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE;
        let connection =
            Connection::open_with_flags(file, flags).map_err(|e| LogError::NotWritable {
                path: path.into(),
                detail: e.to_string(),
            })?;
        connection.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))?;
        connection.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
        connection.execute_batch("PRAGMA synchronous=NORMAL;")?;
        connection.execute_batch(SCHEMA)?;
        Ok(EventLog {
            connection,
            signal: signal_for(file),
            path: path.into(),
        })
    }

    /// Appends events to one stream if it is at `expected`; each must be a valid
    /// envelope of that stream, versions consecutive from the stream's next one.
    /// Returns the position of the last event.
    pub fn append(
        &mut self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[String],
    ) -> Result<u64, AppendError> {
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let actual: u64 = transaction
            .query_row(
                "SELECT version FROM stream_heads WHERE stream = ?1",
                params![stream],
                |row| row.get::<_, i64>(0),
            )
            .optional()?
            .unwrap_or(0) as u64;
        let matches = match expected {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == 0,
            ExpectedVersion::Exact(version) => actual == version,
        };
        if !matches {
            return Err(AppendError::WrongExpectedVersion {
                stream: stream.into(),
                expected,
                actual,
            });
        }
        let mut last_position = 0;
        let mut version = actual;
        for (index, body) in events.iter().enumerate() {
            let event = ordo_core::parse_event(body.as_bytes(), ordo_core::OpPolicy::Custom)
                .map_err(|e| AppendError::InvalidEvent {
                    index,
                    reason: e.to_string(),
                })?;
            if &*event.stream != stream || event.version != version + 1 {
                return Err(AppendError::InvalidEvent {
                    index,
                    reason: format!(
                        "expected stream `{stream}` version {}, got `{}` version {}",
                        version + 1,
                        event.stream,
                        event.version
                    ),
                });
            }
            version += 1;
            transaction
                .prepare_cached("INSERT INTO events (stream, version, body) VALUES (?1, ?2, ?3)")?
                .execute(params![stream, version as i64, body])?;
            last_position = transaction.last_insert_rowid() as u64;
        }
        transaction.execute(
            "INSERT INTO stream_heads (stream, version) VALUES (?1, ?2)
             ON CONFLICT (stream) DO UPDATE SET version = excluded.version",
            params![stream, version as i64],
        )?;
        transaction.commit()?;
        self.wake();
        Ok(last_position)
    }

    /// Appends lines exactly as given (`ordo append`): no validation, so that invalid
    /// input reaches the consumer and is dead-lettered there with its reason.
    pub fn append_lines<'a>(
        &mut self,
        lines: impl IntoIterator<Item = &'a str>,
    ) -> Result<AppendSummary, LogError> {
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut summary = AppendSummary::default();
        {
            let mut insert = transaction
                .prepare_cached("INSERT INTO events (stream, version, body) VALUES (?1, ?2, ?3)")?;
            let mut head = transaction.prepare_cached(
                "INSERT INTO stream_heads (stream, version) VALUES (?1, ?2)
                 ON CONFLICT (stream) DO UPDATE SET version = MAX(version, excluded.version)",
            )?;
            for line in lines {
                // Routing columns are informational; the body is what readers get.
                let routing =
                    ordo_core::parse_event(line.as_bytes(), ordo_core::OpPolicy::Custom).ok();
                let stream = routing.as_ref().map(|e| e.stream.to_string());
                let version = routing.as_ref().map(|e| e.version as i64);
                insert.execute(params![stream, version, line])?;
                summary.last_position = transaction.last_insert_rowid() as u64;
                if let (Some(stream), Some(version)) = (stream, version) {
                    head.execute(params![stream, version])?;
                }
                summary.appended += 1;
            }
        }
        transaction.commit()?;
        self.wake();
        Ok(summary)
    }

    fn wake(&self) {
        let mut appends = self.signal.appends.lock().expect("append signal");
        *appends += 1;
        self.signal.changed.notify_all();
    }

    /// Up to `limit` events after `position`, in order, as (position, body).
    pub fn read(&mut self, after: u64, limit: usize) -> Result<Vec<(u64, String)>, LogError> {
        let limit = limit.clamp(1, READ_BATCH_MAX);
        let mut statement = self.connection.prepare_cached(
            "SELECT position, body FROM events WHERE position > ?1 ORDER BY position LIMIT ?2",
        )?;
        let rows = statement.query_map(params![after as i64, limit as i64], |row| {
            Ok((row.get::<_, i64>(0)? as u64, row.get::<_, String>(1)?))
        })?;
        let mut events = Vec::new();
        for row in rows {
            events.push(row?);
        }
        Ok(events)
    }

    /// The last position written (0 when empty).
    pub fn last_position(&mut self) -> Result<u64, LogError> {
        Ok(self.connection.query_row(
            "SELECT COALESCE(MAX(position), 0) FROM events",
            [],
            |row| row.get::<_, i64>(0),
        )? as u64)
    }

    /// The stream's last version in the log (0 when it has none).
    pub fn stream_version(&mut self, stream: &str) -> Result<u64, LogError> {
        Ok(self
            .connection
            .query_row(
                "SELECT version FROM stream_heads WHERE stream = ?1",
                params![stream],
                |row| row.get::<_, i64>(0),
            )
            .optional()?
            .unwrap_or(0) as u64)
    }

    /// Blocks until something may have been appended after `position`, or `timeout`
    /// passes. Returns whether the log now has events after `position`.
    pub fn wait_for_append(&mut self, position: u64, timeout: Duration) -> Result<bool, LogError> {
        let deadline = Instant::now() + timeout;
        let mut data_version = self.data_version()?;
        loop {
            if self.last_position()? > position {
                return Ok(true);
            }
            // Sleep until this process appends (condvar) or another process's commit
            // changes `data_version`; only then is the log queried again.
            loop {
                let now = Instant::now();
                if now >= deadline {
                    return Ok(false);
                }
                let slice = (deadline - now).min(Duration::from_millis(CROSS_PROCESS_POLL_MS));
                let woken = {
                    let appends = self.signal.appends.lock().expect("append signal");
                    let seen = *appends;
                    let (appends, _) = self
                        .signal
                        .changed
                        .wait_timeout_while(appends, slice, |count| *count == seen)
                        .expect("append signal");
                    *appends != seen
                };
                let current = self.data_version()?;
                if woken || current != data_version {
                    data_version = current;
                    break;
                }
            }
        }
    }

    fn data_version(&self) -> Result<i64, LogError> {
        Ok(self
            .connection
            .query_row("PRAGMA data_version", [], |row| row.get(0))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(stream: &str, version: u64) -> String {
        format!(
            r#"{{"id":"{stream}-{version}","stream":"{stream}","version":{version},"type":"T","op":"incr","data":{{"n":1}}}}"#
        )
    }

    #[test]
    fn appends_with_expected_versions_and_reads_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.db");
        let mut log = EventLog::open(path.to_str().unwrap(), true).unwrap();
        log.append(
            "a",
            ExpectedVersion::NoStream,
            &[body("a", 1), body("a", 2)],
        )
        .unwrap();
        assert!(matches!(
            log.append("a", ExpectedVersion::Exact(1), &[body("a", 2)]),
            Err(AppendError::WrongExpectedVersion { actual: 2, .. })
        ));
        assert!(matches!(
            log.append("a", ExpectedVersion::Exact(2), &[body("a", 4)]),
            Err(AppendError::InvalidEvent { .. })
        ));
        log.append("a", ExpectedVersion::Exact(2), &[body("a", 3)])
            .unwrap();
        log.append_lines(["not json", &body("b", 1)]).unwrap();
        let all = log.read(0, 100).unwrap();
        assert_eq!(all.len(), 5);
        assert_eq!(all[3].1, "not json");
        assert_eq!(log.read(3, 1).unwrap()[0].0, 4);
        assert_eq!(log.stream_version("a").unwrap(), 3);
    }

    #[test]
    fn a_reader_wakes_promptly_on_an_append_from_another_handle() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.db");
        let path = path.to_str().unwrap().to_string();
        let mut reader = EventLog::open(&path, true).unwrap();
        let writer_path = path.clone();
        let started = Instant::now();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            let mut log = EventLog::open(&writer_path, false).unwrap();
            log.append_lines([body("x", 1).as_str()]).unwrap();
        });
        assert!(reader.wait_for_append(0, Duration::from_secs(5)).unwrap());
        writer.join().unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(!reader
            .wait_for_append(1, Duration::from_millis(20))
            .unwrap());
    }
}
