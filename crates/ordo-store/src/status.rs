//! What a store says about the consumer writing it, read with a few aggregate queries:
//! `ordo status` prints it and a scrape of `/metrics` exports it. It never rebuilds the
//! engine (cheap on a big store) and never writes.

use ordo_core::Counters;
use serde_json::{json, Value};

/// Most streams [`StoreStatus::longest_waiting`] names.
pub const LONGEST_WAITING_MAX: usize = 10;

/// One source partition's recorded position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    /// The source's checkpoint key (`log:PATH`, `kafka:TOPIC?group=G`, `file:PATH`).
    pub source: String,
    /// The partition.
    pub partition: u32,
    /// The last offset settled: every event up to it is applied or durably waiting (the
    /// source resumes after it).
    pub offset: u64,
    /// When it was last recorded (ms since the Unix epoch; unknown for rows written by
    /// builds before it was kept).
    pub committed_ms: Option<u64>,
}

/// What holds a waiting stream's first waiting event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Blocker {
    /// A version is missing (it never arrived, or was skipped past nothing yet).
    Gap {
        /// The missing version.
        version: u64,
    },
    /// The next version was dead-lettered: the stream waits behind that entry.
    DeadLetter {
        /// The version.
        version: u64,
        /// The dead letter's entry number (`dlq replay --id`).
        id: u64,
    },
    /// The head waits for another stream (`after`, a merge's cut).
    Stream {
        /// The stream waited for.
        stream: String,
        /// The version it must reach.
        version: u64,
    },
    /// An operator paused the stream (`ordo resume` lets it go).
    Paused,
}

impl std::fmt::Display for Blocker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Blocker::Gap { version } => write!(f, "missing version {version}"),
            Blocker::DeadLetter { version, id } => {
                write!(f, "version {version} is dead letter #{id}")
            }
            Blocker::Stream { stream, version } => {
                write!(f, "`{stream}` to reach version {version}")
            }
            Blocker::Paused => write!(f, "paused by an operator"),
        }
    }
}

/// A stream with waiting events, for the "longest waiting" list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitingStream {
    /// The stream.
    pub stream: String,
    /// Its waiting events.
    pub events: u64,
    /// Since when its oldest waiting event waits (ms since the Unix epoch), when known.
    pub since_ms: Option<u64>,
    /// Its applied version.
    pub applied: u64,
    /// What holds it.
    pub blocker: Blocker,
}

/// A store's status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreStatus {
    /// The counters (the same as `run --json`).
    pub counters: Counters,
    /// Every recorded position, by source and partition.
    pub positions: Vec<Position>,
    /// Events waiting behind a gap (or behind a dead letter).
    pub buffered: u64,
    /// Events waiting for another stream.
    pub parked: u64,
    /// Since when the oldest waiting event waits (ms since the Unix epoch).
    pub oldest_waiting_ms: Option<u64>,
    /// Entries in the dead-letter queue.
    pub dead_letters: u64,
    /// When the oldest dead letter was written (ms since the Unix epoch).
    pub oldest_dead_letter_ms: Option<u64>,
    /// The streams waiting longest, oldest first, as many as asked for (`ordo status`:
    /// [`LONGEST_WAITING_MAX`]).
    pub longest_waiting: Vec<WaitingStream>,
    /// The streams and partitions operators paused, in force now.
    pub pauses: Vec<crate::Pause>,
}

impl StoreStatus {
    /// Keeps `pauses` and names them as what holds the paused waiting streams.
    pub(crate) fn mark_paused(&mut self, pauses: Vec<crate::Pause>) {
        for waiting in &mut self.longest_waiting {
            let paused = pauses.iter().any(
                |p| matches!(&p.target, crate::PauseTarget::Stream(s) if *s == waiting.stream),
            );
            if paused {
                waiting.blocker = Blocker::Paused;
            }
        }
        self.pauses = pauses;
    }

    /// Events waiting in all (what `parked list` shows).
    pub fn waiting(&self) -> u64 {
        self.buffered + self.parked
    }

    /// When a position was last recorded (ms since the Unix epoch).
    pub fn last_commit_ms(&self) -> Option<u64> {
        self.positions.iter().filter_map(|p| p.committed_ms).max()
    }

    /// The status as one JSON object; ages are counted from `now_ms`.
    pub fn to_json(&self, now_ms: u64) -> Value {
        let age_s = |at: Option<u64>| at.map(|at| now_ms.saturating_sub(at) as f64 / 1000.0);
        json!({
            "counters": self.counters.to_json(),
            "positions": self.positions.iter().map(|p| json!({
                "source": p.source,
                "partition": p.partition,
                "offset": p.offset,
                "committed_age_seconds": age_s(p.committed_ms),
            })).collect::<Vec<_>>(),
            "waiting": {
                "events": self.waiting(),
                "buffered": self.buffered,
                "parked": self.parked,
                "oldest_age_seconds": age_s(self.oldest_waiting_ms),
            },
            "dead_letters": {
                "entries": self.dead_letters,
                "oldest_age_seconds": age_s(self.oldest_dead_letter_ms),
            },
            "stalled_streams": self.counters.stalled,
            "longest_waiting": self.longest_waiting.iter().map(|w| json!({
                "stream": w.stream,
                "events": w.events,
                "applied": w.applied,
                "age_seconds": age_s(w.since_ms),
                "waits_for": w.blocker.to_string(),
            })).collect::<Vec<_>>(),
            "last_commit_age_seconds": age_s(self.last_commit_ms()),
            "paused": self.pauses.iter().map(|p| {
                let mut paused = p.target.to_args();
                paused["by"] = json!(p.user);
                paused["reason"] = json!(p.reason);
                paused["age_seconds"] = json!(age_s(Some(p.since_ms)));
                paused
            }).collect::<Vec<_>>(),
        })
    }
}

/// The rows a store answers for its status, combined by [`StoreStatus::from_rows`].
#[derive(Debug, Default)]
pub(crate) struct StatusRows {
    pub counters: Counters,
    pub positions: Vec<Position>,
    /// `(state, events, oldest since_ms)` per pending state.
    pub pending: Vec<(String, u64, Option<u64>)>,
    /// `(entries, oldest at_ms)`.
    pub dead_letters: (u64, Option<u64>),
    /// The streams waiting longest, with their head row and what the blocker lookup found.
    pub streams: Vec<StreamRows>,
}

/// One waiting stream as read: its head row and the rows its blocker is judged by.
#[derive(Debug)]
pub(crate) struct StreamRows {
    pub stream: String,
    pub events: u64,
    pub since_ms: Option<u64>,
    pub head_version: u64,
    pub head_awaits: Option<(String, u64)>,
    pub applied: u64,
    /// The dead letter at `applied + 1`, if there is one.
    pub dead_letter: Option<u64>,
}

impl StoreStatus {
    pub(crate) fn from_rows(rows: StatusRows) -> Self {
        let mut status = StoreStatus {
            counters: rows.counters,
            positions: rows.positions,
            dead_letters: rows.dead_letters.0,
            oldest_dead_letter_ms: rows.dead_letters.1,
            ..StoreStatus::default()
        };
        for (state, events, since_ms) in rows.pending {
            match state.as_str() {
                "buffered" => status.buffered += events,
                "parked" => status.parked += events,
                // A skipped version is a marker, not a waiting event.
                _ => continue,
            }
            status.oldest_waiting_ms = match (status.oldest_waiting_ms, since_ms) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        status.longest_waiting = rows
            .streams
            .into_iter()
            .map(|s| {
                let next = s.applied + 1;
                let blocker = match (s.dead_letter, &s.head_awaits) {
                    (Some(id), _) => Blocker::DeadLetter { version: next, id },
                    (None, _) if s.head_version > next => Blocker::Gap { version: next },
                    (None, Some((stream, version))) => Blocker::Stream {
                        stream: stream.clone(),
                        version: *version,
                    },
                    // The head is next and waits for nothing recorded: it is about to go.
                    (None, None) => Blocker::Gap { version: next },
                };
                WaitingStream {
                    stream: s.stream,
                    events: s.events,
                    since_ms: s.since_ms,
                    applied: s.applied,
                    blocker,
                }
            })
            .collect();
        status
    }
}

/// The query that names the streams waiting longest: oldest first, those of unknown age
/// last, at most `limit`.
pub(crate) fn longest_waiting_sql(limit: usize) -> String {
    format!(
        "SELECT stream, COUNT(*), MIN(since_ms), MIN(version) FROM pending
         WHERE state <> 'skipped' GROUP BY stream
         ORDER BY MIN(since_ms) IS NULL, MIN(since_ms), stream LIMIT {limit}"
    )
}

/// Most streams a waiting list names (the console's Waiting page).
pub const WAITING_STREAMS_MAX: usize = 1_000;
const _: () = assert!(LONGEST_WAITING_MAX <= WAITING_STREAMS_MAX);
