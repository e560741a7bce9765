//! Sources: where deliveries come from. `file:PATH` (a JSONL file read once) and
//! `log:PATH` (the embedded event log, caught up from the stored position, then
//! followed live).

use std::collections::BTreeSet;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::time::Duration;

use ordo_core::SourcePosition;
use ordo_log::{EventLog, LogError};

/// A parsed source URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceUrl {
    /// `file:PATH`.
    File(String),
    /// `log:PATH`.
    Log(String),
    /// `kafka://HOST:PORT/TOPIC?group=G`.
    Kafka(String),
    /// `nats://HOST:PORT/STREAM?durable=NAME`.
    Nats(String),
    /// `sqs://QUEUE?region=R[&endpoint=URL]`.
    Sqs(String),
}

impl SourceUrl {
    /// Parses a source URL.
    pub fn parse(url: &str) -> Result<Self, SourceError> {
        if let Some(path) = url.strip_prefix("file:") {
            return non_empty(path, url).map(SourceUrl::File);
        }
        if let Some(path) = url.strip_prefix("log:") {
            return non_empty(path, url).map(SourceUrl::Log);
        }
        if url.starts_with("kafka://") {
            return Ok(SourceUrl::Kafka(url.into()));
        }
        if url.starts_with("nats://") {
            return Ok(SourceUrl::Nats(url.into()));
        }
        if url.starts_with("sqs://") {
            return Ok(SourceUrl::Sqs(url.into()));
        }
        Err(SourceError::BadUrl(url.into()))
    }

    /// The key under which this source's checkpoints are stored.
    pub fn checkpoint_key(&self) -> String {
        match self {
            SourceUrl::File(path) => format!("file:{path}"),
            SourceUrl::Log(path) => format!("log:{path}"),
            SourceUrl::Kafka(url) | SourceUrl::Nats(url) | SourceUrl::Sqs(url) => url.clone(),
        }
    }
}

fn non_empty(path: &str, url: &str) -> Result<String, SourceError> {
    if path.is_empty() {
        Err(SourceError::BadUrl(url.into()))
    } else {
        Ok(path.into())
    }
}

/// Why a source failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum SourceError {
    /// Not a source URL ordo understands.
    BadUrl(String),
    /// The file cannot be read.
    File {
        /// The path.
        path: String,
        /// What the system said.
        detail: String,
    },
    /// The event log failed.
    Log(LogError),
    /// This build has no such source.
    Unsupported(String),
    /// The broker failed or cannot be reached.
    Broker(String),
    /// The group's membership failed (see `crate::membership`).
    #[cfg(feature = "postgres")]
    Membership(ordo_store::members::MembersError),
    /// [`CrashAfter`] struck: the run ends here, committing nothing more.
    Crashed {
        /// After how many deliveries.
        deliveries: u64,
    },
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceError::BadUrl(url) => {
                write!(
                    f,
                    "unsupported source URL `{url}` (expected file:PATH, log:PATH, kafka://HOST:PORT/TOPIC?group=G, nats://HOST:PORT/STREAM?durable=NAME or sqs://QUEUE?region=R)"
                )?;
                if !url.contains(':') {
                    // The usual first try: a bare file name.
                    write!(
                        f,
                        "; for a JSONL file, say `file:{url}`; for an event log made by `ordo append`, `log:{url}`"
                    )?;
                }
                Ok(())
            }
            SourceError::File { path, detail } => write!(f, "cannot read `{path}`: {detail}"),
            SourceError::Log(error) => error.fmt(f),
            SourceError::Unsupported(what) => write!(f, "{what}"),
            SourceError::Broker(detail) => write!(f, "broker: {detail}"),
            #[cfg(feature = "postgres")]
            SourceError::Membership(error) => error.fmt(f),
            SourceError::Crashed { deliveries } => {
                write!(f, "crashed on purpose after {deliveries} deliveries")
            }
        }
    }
}

impl std::error::Error for SourceError {}

impl From<LogError> for SourceError {
    fn from(error: LogError) -> Self {
        SourceError::Log(error)
    }
}

/// One delivery: where it was read, its bytes, and its broker key (when it has one).
pub type Delivery = (SourcePosition, Vec<u8>, Option<Vec<u8>>);

/// What one poll of a source gave.
#[derive(Debug)]
pub enum Polled {
    /// Deliveries, in order.
    Events(Vec<Delivery>),
    /// Nothing arrived within the wait, but the source is not drained (a consumer group
    /// still joining, a partition not yet read to its end).
    Nothing,
    /// Nothing arrived within the wait; the source is caught up for now.
    Idle,
    /// The source has ended and will never deliver again.
    Finished,
    /// Partitions are being taken away: apply and commit, then call
    /// [`Source::complete_rebalance`].
    Revoked(Vec<u32>),
    /// Partitions are being given: commit, reload state from the store, then call
    /// [`Source::complete_rebalance`] with the stored checkpoints.
    Assigned(Vec<u32>),
}

/// How long a poll of a paused single-partition source waits before saying it is idle:
/// the loop goes on turning (operator actions, commits) without spinning.
const PAUSED_POLL_WAIT: Duration = Duration::from_millis(100);

/// A source of deliveries.
pub trait Source: Send {
    /// Skips what the stored checkpoints say was settled.
    fn resume(&mut self, checkpoints: &[(u32, u64)]);

    /// Up to `max` deliveries, waiting up to `wait` when none is there yet.
    fn poll(&mut self, max: usize, wait: Duration) -> Result<Polled, SourceError>;

    /// Finishes a rebalance announced by [`Polled::Revoked`] or [`Polled::Assigned`],
    /// once the consumer has committed (assignments resume at these checkpoints).
    fn complete_rebalance(&mut self, _checkpoints: &[(u32, u64)]) -> Result<(), SourceError> {
        Ok(())
    }

    /// The store committed these checkpoints (a Kafka source also commits them to the
    /// broker, for lag monitoring only).
    fn committed(&mut self, _checkpoints: &[(u32, u64)]) {}

    /// How the broker names the message delivered at `position`, for a dead letter's
    /// reason (an SQS message id: SQS has no offsets to find a message by). Asked only
    /// for a delivery of the current poll that is being dead-lettered.
    fn origin(&self, _position: SourcePosition) -> Option<String> {
        None
    }

    /// Whether this source is one member of a consumer group: partitions come and go with
    /// [`Polled::Assigned`] and [`Polled::Revoked`], and other members share the store.
    fn is_group(&self) -> bool {
        false
    }

    /// Whether any member of the group may be given any stream's events (an SQS queue
    /// spreads message groups by itself), rather than each stream living in one
    /// partition. Then a stream waiting on a gap of its own may be waiting for a version
    /// another member applied, and the store is asked.
    fn shares_streams(&self) -> bool {
        false
    }

    /// Whether the source answers now, as far as it knows without asking (`/readyz`): a
    /// broker client's view of its connections. Local sources always do.
    fn reachable(&self) -> bool {
        true
    }

    /// Where each partition this process reads ends now, for the lag metrics (empty when
    /// the source cannot say: a file has no end to catch up with).
    fn ends(&mut self) -> Vec<crate::telemetry::PartitionEnd> {
        Vec::new()
    }

    /// Reads nothing from these partitions (the whole set of paused ones, each turn) until
    /// a later call leaves them out; reading a resumed partition goes on where it
    /// stopped. A paused partition is never read to its end: the source is not idle
    /// while one is paused (`--exit-when-idle` waits for the resume).
    fn pause_partitions(&mut self, paused: &BTreeSet<u32>) -> Result<(), SourceError> {
        if paused.is_empty() {
            return Ok(());
        }
        Err(SourceError::Unsupported(
            "this source cannot pause partitions".into(),
        ))
    }

    /// Reads again from these checkpoints: a commit was refused because another process
    /// sharing the store got there first, so the uncommitted deliveries are read again
    /// against the state the store holds now.
    fn rewind(&mut self, _checkpoints: &[(u32, u64)]) -> Result<(), SourceError> {
        Err(SourceError::Unsupported(
            "this source cannot be read again from its checkpoint; another process writes the store (run one consumer per store for file sources)".into(),
        ))
    }
}

/// A source that fails as a crash would after a number of deliveries: the run ends with
/// [`SourceError::Crashed`] and commits nothing more, so what it had not committed is
/// lost as in a `kill -9`. For the demo's crash and for crash tests: the run loop knows
/// nothing of it.
pub struct CrashAfter<S> {
    inner: S,
    deliveries: u64,
    left: u64,
}

impl<S: Source> CrashAfter<S> {
    /// `inner`, failing once `deliveries` were handed out.
    pub fn new(inner: S, deliveries: u64) -> Self {
        CrashAfter {
            inner,
            deliveries,
            left: deliveries,
        }
    }
}

impl<S: Source> Source for CrashAfter<S> {
    fn resume(&mut self, checkpoints: &[(u32, u64)]) {
        self.inner.resume(checkpoints);
    }

    fn poll(&mut self, max: usize, wait: Duration) -> Result<Polled, SourceError> {
        if self.left == 0 {
            return Err(SourceError::Crashed {
                deliveries: self.deliveries,
            });
        }
        let max = max.min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let polled = self.inner.poll(max, wait)?;
        if let Polled::Events(events) = &polled {
            self.left -= events.len() as u64;
        }
        Ok(polled)
    }

    fn complete_rebalance(&mut self, checkpoints: &[(u32, u64)]) -> Result<(), SourceError> {
        self.inner.complete_rebalance(checkpoints)
    }

    fn committed(&mut self, checkpoints: &[(u32, u64)]) {
        self.inner.committed(checkpoints);
    }

    fn origin(&self, position: SourcePosition) -> Option<String> {
        self.inner.origin(position)
    }

    fn shares_streams(&self) -> bool {
        self.inner.shares_streams()
    }

    fn is_group(&self) -> bool {
        self.inner.is_group()
    }

    fn reachable(&self) -> bool {
        self.inner.reachable()
    }

    fn ends(&mut self) -> Vec<crate::telemetry::PartitionEnd> {
        self.inner.ends()
    }

    fn pause_partitions(&mut self, paused: &BTreeSet<u32>) -> Result<(), SourceError> {
        self.inner.pause_partitions(paused)
    }

    fn rewind(&mut self, checkpoints: &[(u32, u64)]) -> Result<(), SourceError> {
        self.inner.rewind(checkpoints)
    }
}

/// `file:PATH`: each line is one delivery, its offset the line's index (from 0).
pub struct FileSource {
    reader: BufReader<File>,
    path: String,
    next_offset: u64,
    resume_after: Option<u64>,
    /// An operator paused partition 0, the file's only one.
    paused: bool,
}

impl FileSource {
    /// Opens the file.
    pub fn open(path: &str) -> Result<Self, SourceError> {
        if let Some(kind) = ordo_log::special_file(path) {
            // A FIFO would block until a writer came, and could not be read again from
            // a position after a restart.
            return Err(SourceError::File {
                path: path.into(),
                detail: if kind.contains("FIFO") {
                    format!("it is {kind}, not a file; to stream events in, `ordo append` them to an event log and read log:PATH")
                } else {
                    format!("it is {kind}, not a file")
                },
            });
        }
        let file = File::open(path).map_err(|e| SourceError::File {
            path: path.into(),
            detail: e.to_string(),
        })?;
        Ok(FileSource {
            reader: BufReader::with_capacity(1 << 20, file),
            path: path.into(),
            next_offset: 0,
            resume_after: None,
            paused: false,
        })
    }
}

impl Source for FileSource {
    fn resume(&mut self, checkpoints: &[(u32, u64)]) {
        self.resume_after = checkpoints.iter().find(|(p, _)| *p == 0).map(|(_, o)| *o);
    }

    /// Reads the file again from its start, skipping what the checkpoint covers (after an
    /// operator's action from another process, or a conflict).
    fn rewind(&mut self, checkpoints: &[(u32, u64)]) -> Result<(), SourceError> {
        let file = File::open(&self.path).map_err(|e| SourceError::File {
            path: self.path.clone(),
            detail: e.to_string(),
        })?;
        self.reader = BufReader::with_capacity(1 << 20, file);
        self.next_offset = 0;
        self.resume(checkpoints);
        Ok(())
    }

    fn pause_partitions(&mut self, paused: &BTreeSet<u32>) -> Result<(), SourceError> {
        self.paused = paused.contains(&0);
        Ok(())
    }

    fn poll(&mut self, max: usize, wait: Duration) -> Result<Polled, SourceError> {
        if self.paused {
            std::thread::sleep(wait.min(PAUSED_POLL_WAIT));
            return Ok(Polled::Nothing);
        }
        let mut events = Vec::new();
        while events.len() < max {
            let mut line = Vec::new();
            let read = self
                .reader
                .read_until(b'\n', &mut line)
                .map_err(|e| SourceError::File {
                    path: self.path.clone(),
                    detail: e.to_string(),
                })?;
            if read == 0 {
                break;
            }
            let offset = self.next_offset;
            self.next_offset += 1;
            if self.resume_after.is_some_and(|after| offset <= after) {
                continue;
            }
            while matches!(line.last(), Some(b'\n' | b'\r')) {
                line.pop();
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                // Blank lines are not events; they still take an offset so that resuming
                // counts lines the same way every time.
                continue;
            }
            events.push((
                SourcePosition {
                    partition: 0,
                    offset,
                },
                line,
                None,
            ));
        }
        Ok(if events.is_empty() {
            Polled::Finished
        } else {
            Polled::Events(events)
        })
    }
}

/// `log:PATH`: the embedded event log; offsets are log positions.
pub struct LogSource {
    log: EventLog,
    after: u64,
    /// An operator paused partition 0, the log's only one.
    paused: bool,
}

impl LogSource {
    /// Opens the log (it must exist).
    pub fn open(path: &str) -> Result<Self, SourceError> {
        Ok(LogSource {
            log: EventLog::open(path, false)?,
            after: 0,
            paused: false,
        })
    }
}

impl Source for LogSource {
    fn ends(&mut self) -> Vec<crate::telemetry::PartitionEnd> {
        match self.log.last_position() {
            Ok(last) => vec![crate::telemetry::PartitionEnd {
                partition: 0,
                caught_up_at: last,
                events: last,
            }],
            Err(error) => {
                tracing::warn!(%error, "the event log's end cannot be read");
                Vec::new()
            }
        }
    }

    fn resume(&mut self, checkpoints: &[(u32, u64)]) {
        self.after = checkpoints
            .iter()
            .find(|(p, _)| *p == 0)
            .map_or(0, |(_, o)| *o);
    }

    fn rewind(&mut self, checkpoints: &[(u32, u64)]) -> Result<(), SourceError> {
        self.resume(checkpoints);
        Ok(())
    }

    fn pause_partitions(&mut self, paused: &BTreeSet<u32>) -> Result<(), SourceError> {
        self.paused = paused.contains(&0);
        Ok(())
    }

    fn poll(&mut self, max: usize, wait: Duration) -> Result<Polled, SourceError> {
        if self.paused {
            std::thread::sleep(wait.min(PAUSED_POLL_WAIT));
            return Ok(Polled::Nothing);
        }
        let mut rows = self.log.read(self.after, max)?;
        if rows.is_empty() && !wait.is_zero() && self.log.wait_for_append(self.after, wait)? {
            rows = self.log.read(self.after, max)?;
        }
        if rows.is_empty() {
            return Ok(Polled::Idle);
        }
        self.after = rows.last().map_or(self.after, |(p, _)| *p);
        Ok(Polled::Events(
            rows.into_iter()
                .map(|(offset, body)| {
                    (
                        SourcePosition {
                            partition: 0,
                            offset,
                        },
                        body.into_bytes(),
                        None,
                    )
                })
                .collect(),
        ))
    }
}

/// Opens the source a URL names.
pub fn open(url: &SourceUrl) -> Result<Box<dyn Source>, SourceError> {
    match url {
        SourceUrl::File(path) => Ok(Box::new(FileSource::open(path)?)),
        SourceUrl::Log(path) => Ok(Box::new(LogSource::open(path)?)),
        SourceUrl::Kafka(_) | SourceUrl::Nats(_) | SourceUrl::Sqs(_) => {
            Err(SourceError::Unsupported(
                "broker sources are opened by their own crates (ordo-kafka, ordo-nats, ordo-sqs)"
                    .into(),
            ))
        }
    }
}

/// Events of the embedded log beyond a recorded position (`ordo status`, the console),
/// read through a read-only handle; `None` for other sources or a log that cannot be read
/// from here.
pub fn log_lag(position: &ordo_store::status::Position) -> Option<u64> {
    let path = position.source.strip_prefix("log:")?;
    let mut log = ordo_log::EventLog::open_read_only(path).ok()?;
    Some(log.last_position().ok()?.saturating_sub(position.offset))
}
