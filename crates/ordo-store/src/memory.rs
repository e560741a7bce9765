//! The in-memory stand-in for the PostgreSQL store, for simulations of several members
//! of a consumer group sharing one store.
//!
//! [`SharedMemory`] is the database; each simulated process opens its own
//! [`SharedMemoryStore`] on it, as each `ordo run` opens its own connection. A store
//! keeps what the PostgreSQL store keeps per connection (the document revisions it read,
//! its claims, its block of dead-letter ids, its counter base, its notifications) and its
//! commits make the same checks ([`crate::sharing`], claims, revisions) before writing
//! anything, all under one lock, so a commit lands whole or not at all. No IO, no clock:
//! one seed of a simulation gives one run.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ordo_core::{
    Counters, DeadLetter, DeadLetterKind, Load, Loaded, PendingRecord, Snapshot, StreamRecord,
};
use ordo_projection::Document;

use crate::error::{CommitError, ConflictReason, ReadError};
use crate::{rows, sharing, CommitBatch, ExportRow, Store, DEAD_LETTER_ID_BLOCK};

/// What the shared database holds.
#[derive(Debug, Default)]
struct Database {
    streams: BTreeMap<Arc<str>, StreamRecord>,
    /// Documents with their revision (1 on insert, +1 per update).
    documents: BTreeMap<Arc<str>, (Option<Document>, u64)>,
    pending: PendingRows,
    dead_letters: BTreeMap<u64, DeadLetter>,
    /// Dedupe entries as (sequence, hash): members number their entries independently,
    /// so one sequence may appear twice (the PostgreSQL store keys blocks by a serial).
    dedupe: BTreeSet<(u64, u64)>,
    dedupe_floor: u64,
    checkpoints: BTreeMap<(String, u32), u64>,
    /// (source, partition) → (member, epoch).
    claims: BTreeMap<(String, u32), (u64, u64)>,
    counters: Counters,
    /// The first dead-letter id not reserved by any process yet.
    dead_letter_ids_next: u64,
    /// Every open store's notification flag (`NOTIFY` on commits that move streams).
    listeners: Vec<Arc<AtomicBool>>,
    members_opened: u64,
    /// A broken store for checker tests: commits skip every sharing check.
    unchecked: bool,
}

/// The shared database. Cloning gives another handle on the same one.
#[derive(Clone, Debug, Default)]
pub struct SharedMemory {
    database: Arc<Mutex<Database>>,
}

impl SharedMemory {
    /// An empty database.
    pub fn new() -> Self {
        SharedMemory::default()
    }

    /// A broken database whose commits make none of the sharing checks (no fencing, no
    /// revisions, no position checks): what a simulation must catch.
    pub fn unchecked() -> Self {
        let database = SharedMemory::default();
        database.lock().unchecked = true;
        database
    }

    /// Opens one process's store on it.
    pub fn open(&self) -> SharedMemoryStore {
        let notified = Arc::new(AtomicBool::new(false));
        let member = {
            let mut database = self.lock();
            database.listeners.push(notified.clone());
            database.members_opened += 1;
            database.members_opened
        };
        SharedMemoryStore {
            shared: self.clone(),
            member,
            revisions: HashMap::new(),
            claims: Vec::new(),
            claims_source: String::new(),
            dead_letter_ids_next: 0,
            dead_letter_ids_end: 0,
            counters_base: Counters::default(),
            notified,
            notifications_lost: false,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Database> {
        // A panic while holding the lock is a simulation bug already being reported.
        self.database.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every stream's state, as `ordo export` prints it.
    pub fn export(&self) -> Vec<ExportRow> {
        let database = self.lock();
        export(&database)
    }

    /// The checkpoint stored for a partition of `source`.
    pub fn checkpoint(&self, source: &str, partition: u32) -> Option<u64> {
        self.lock()
            .checkpoints
            .get(&(source.to_string(), partition))
            .copied()
    }

    /// The events of `stream` waiting in the store.
    pub fn pending_of(&self, stream: &str) -> Vec<PendingRecord> {
        self.lock()
            .pending
            .values()
            .filter(|r| &*r.stream == stream)
            .cloned()
            .collect()
    }
}

fn export(database: &Database) -> Vec<ExportRow> {
    let found = database
        .streams
        .values()
        .filter(|r| r.applied > 0 || r.alias.is_some())
        .map(|r| {
            let document = database
                .documents
                .get(&r.stream)
                .and_then(|(d, _)| d.as_ref());
            rows::StreamRow {
                stream: r.stream.to_string(),
                version: r.applied,
                alias_target: r.alias.as_ref().map(|(t, _)| t.to_string()),
                doc: match document {
                    Some(Document::Live(value)) => Some(value.to_string()),
                    _ => None,
                },
                deleted: matches!(document, Some(Document::Deleted)),
            }
        })
        .collect();
    rows::export_rows(found).expect("documents written as JSON read back")
}

/// Waiting events as the in-memory stores keep them, keyed by (stream, version).
pub type PendingRows = BTreeMap<(Box<str>, u64), PendingRecord>;

/// The waiting events' part of a snapshot, as the database stores build it: the rows of
/// streams whose head is not parked, and for parked (spilled) streams only their names
/// with their partition, and for each awaited stream the lowest version waited for.
#[allow(clippy::type_complexity)]
pub fn pending_snapshot(
    pending: &PendingRows,
) -> (
    Vec<PendingRecord>,
    Vec<(Box<str>, Option<u32>)>,
    Vec<(Box<str>, u64)>,
) {
    let mut spilled: BTreeMap<&str, Option<u32>> = BTreeMap::new();
    let mut spilled_waiters: BTreeMap<Box<str>, u64> = BTreeMap::new();
    for r in pending.values() {
        if let Some((awaited, version)) = &r.awaits {
            let partition = spilled.entry(&r.stream).or_insert(r.partition);
            *partition = (*partition).min(r.partition);
            let needed = spilled_waiters.entry(awaited.clone()).or_insert(*version);
            *needed = (*needed).min(*version);
        }
    }
    let rows = pending
        .values()
        .filter(|r| !spilled.contains_key(&*r.stream))
        .cloned()
        .collect();
    (
        rows,
        spilled.iter().map(|(s, p)| (Box::from(*s), *p)).collect(),
        spilled_waiters.into_iter().collect(),
    )
}

/// Answers an engine's [`Load`] from waiting events kept in memory, as the database
/// stores answer it with their indexed queries.
pub fn answer_load(pending: &PendingRows, load: &Load) -> Loaded {
    match load {
        Load::Stream(stream) => Loaded {
            records: pending
                .values()
                .filter(|r| *r.stream == **stream)
                .cloned()
                .collect(),
            waiters_remaining_min: None,
        },
        Load::Waiters { awaited, through } => {
            let waits = |r: &PendingRecord| {
                r.awaits
                    .as_ref()
                    .filter(|(stream, _)| **stream == **awaited)
                    .map(|(_, version)| *version)
            };
            let streams: BTreeSet<&str> = pending
                .values()
                .filter(|r| waits(r).is_some_and(|v| v <= *through))
                .map(|r| &*r.stream)
                .collect();
            Loaded {
                records: pending
                    .values()
                    .filter(|r| streams.contains(&*r.stream))
                    .cloned()
                    .collect(),
                waiters_remaining_min: pending
                    .values()
                    .filter_map(waits)
                    .filter(|v| v > through)
                    .min(),
            }
        }
    }
}

/// One simulated process's connection to a [`SharedMemory`].
#[derive(Debug)]
pub struct SharedMemoryStore {
    shared: SharedMemory,
    member: u64,
    revisions: HashMap<Arc<str>, u64>,
    claims: Vec<(u32, u64)>,
    claims_source: String,
    /// As in the PostgreSQL store: `[next, end)` reserved, `next` unused by landed commits.
    dead_letter_ids_next: u64,
    dead_letter_ids_end: u64,
    counters_base: Counters,
    notified: Arc<AtomicBool>,
    notifications_lost: bool,
}

impl SharedMemoryStore {
    /// From now on notifications to this process are lost (or delivered again with
    /// `false`): the periodic re-check must cover for them.
    pub fn lose_notifications(&mut self, lost: bool) {
        self.notifications_lost = lost;
    }

    fn check(
        &self,
        database: &Database,
        source: &str,
        batch: &CommitBatch,
    ) -> Result<(), CommitError> {
        if database.unchecked {
            return Ok(());
        }
        // Fencing first: a member that lost a partition writes nothing at all.
        for &(partition, mine) in &self.claims {
            match database
                .claims
                .get(&(self.claims_source.clone(), partition))
            {
                Some(&(member, epoch)) if member == self.member && epoch == mine => {}
                other => {
                    return Err(CommitError::Fenced {
                        source: source.to_string(),
                        partition,
                        mine: mine as i64,
                        current: other.map_or(0, |(_, epoch)| *epoch as i64),
                    })
                }
            }
        }
        let changed = batch
            .documents
            .iter()
            .filter(|(stream, _)| {
                let expected = self.revisions.get(stream).copied().unwrap_or(0);
                database.documents.get(stream).map_or(0, |(_, r)| *r) != expected
            })
            .count();
        if changed > 0 {
            return Err(CommitError::Conflict(ConflictReason::DocumentsChanged {
                changed,
                written: batch.documents.len(),
            }));
        }
        let changes = &batch.changes;
        sharing::check_documents_live(
            batch.documents.iter().map(|(s, _)| &**s),
            &changes.streams,
            |s| {
                database
                    .streams
                    .get(s)
                    .and_then(|r| r.alias.as_ref().map(|(t, _)| t.to_string()))
            },
        )
        .map_err(CommitError::Conflict)?;
        sharing::check_stream_positions(&changes.streams, |s| {
            database
                .streams
                .get(s)
                .map(|r| (r.applied, r.alias.is_some()))
        })
        .map_err(CommitError::Conflict)?;
        if let Some(entry) = changes
            .dead_letters_put
            .iter()
            .find(|d| d.id >= self.dead_letter_ids_end)
        {
            return Err(CommitError::Conflict(
                ConflictReason::DeadLetterIdOutsideBlock { id: entry.id },
            ));
        }
        Ok(())
    }
}

impl Store for SharedMemoryStore {
    fn snapshot(&mut self, source: &str) -> Result<Snapshot, ReadError> {
        let mut database = self.shared.lock();
        let (pending, spilled, spilled_waiters) = pending_snapshot(&database.pending);
        let mut snapshot = Snapshot {
            streams: database.streams.values().cloned().collect(),
            pending,
            spilled,
            spilled_waiters,
            blocking_dead_letters: database
                .dead_letters
                .values()
                .filter(|d| d.kind == DeadLetterKind::Sequenced)
                .filter_map(|d| Some((d.stream.clone()?, d.version?, d.id)))
                .collect(),
            dedupe: database
                .dedupe
                .iter()
                .filter(|(s, _)| *s >= database.dedupe_floor)
                .copied()
                .collect(),
            checkpoints: database
                .checkpoints
                .iter()
                .filter(|((s, _), _)| s == source)
                .map(|((_, p), o)| (*p, *o))
                .collect(),
            counters: database.counters,
            next_dead_letter_id: 0,
        };
        if self.dead_letter_ids_next < self.dead_letter_ids_end {
            snapshot.next_dead_letter_id = self.dead_letter_ids_next;
        } else {
            // Reserve this process's next block of dead-letter ids.
            let first = database.dead_letter_ids_next.max(1);
            database.dead_letter_ids_next = first + DEAD_LETTER_ID_BLOCK as u64;
            snapshot.next_dead_letter_id = first;
            self.dead_letter_ids_next = first;
            self.dead_letter_ids_end = first + DEAD_LETTER_ID_BLOCK as u64;
        }
        self.counters_base = snapshot.counters;
        self.revisions.clear();
        Ok(snapshot)
    }

    fn documents(&mut self, streams: &[Arc<str>]) -> Result<Vec<Option<Document>>, ReadError> {
        let database = self.shared.lock();
        Ok(streams
            .iter()
            .map(|s| {
                let (document, revision) = database.documents.get(s).cloned().unwrap_or((None, 0));
                self.revisions.insert(s.clone(), revision);
                document
            })
            .collect())
    }

    fn commit(&mut self, source: &str, batch: CommitBatch) -> Result<(), CommitError> {
        let shared = self.shared.clone();
        let mut database = shared.lock();
        self.check(&database, source, &batch)?;
        let CommitBatch {
            changes, documents, ..
        } = batch;
        for (stream, document) in documents {
            let revision = database.documents.get(&stream).map_or(0, |(_, r)| *r) + 1;
            self.revisions.insert(stream.clone(), revision);
            database.documents.insert(stream, (document, revision));
        }
        let moved = !changes.streams.is_empty();
        for record in &changes.streams {
            // Positions never go back, aliases are never dropped (GREATEST, COALESCE).
            let stored = database
                .streams
                .entry(record.stream.clone())
                .or_insert_with(|| StreamRecord {
                    stream: record.stream.clone(),
                    applied: 0,
                    alias: None,
                });
            stored.applied = stored.applied.max(record.applied);
            if stored.alias.is_none() {
                stored.alias = record.alias.clone();
            }
        }
        for key in &changes.pending_delete {
            database.pending.remove(key);
        }
        for record in &changes.pending_put {
            database
                .pending
                .insert((record.stream.clone(), record.version), record.clone());
        }
        for id in &changes.dead_letters_delete {
            database.dead_letters.remove(id);
        }
        for entry in &changes.dead_letters_put {
            database.dead_letters.insert(entry.id, entry.clone());
        }
        database.dedupe.extend(changes.dedupe_put.iter().copied());
        database.dedupe_floor = changes.dedupe_floor;
        let floor = changes.dedupe_floor;
        database.dedupe.retain(|(s, _)| *s >= floor);
        for (partition, offset) in &changes.checkpoints {
            database
                .checkpoints
                .insert((source.to_string(), *partition), *offset);
        }
        // Counters: add what this process counted since it last read or wrote them.
        let sum = sharing::counters_added(database.counters, self.counters_base, changes.counters);
        database.counters = sum;
        self.counters_base = changes.counters;
        self.dead_letter_ids_next = self.dead_letter_ids_next.max(changes.next_dead_letter_id);
        if moved {
            for listener in &database.listeners {
                listener.store(true, Ordering::SeqCst);
            }
        }
        Ok(())
    }

    fn dead_letters(&mut self) -> Result<Vec<DeadLetter>, ReadError> {
        Ok(self.shared.lock().dead_letters.values().cloned().collect())
    }

    fn export(&mut self) -> Result<Vec<ExportRow>, ReadError> {
        Ok(self.shared.export())
    }

    fn counters(&mut self) -> Result<Counters, ReadError> {
        Ok(self.shared.lock().counters)
    }

    fn load_pending(&mut self, load: &Load) -> Result<Loaded, ReadError> {
        Ok(answer_load(&self.shared.lock().pending, load))
    }

    fn stream_records(&mut self, streams: &[Arc<str>]) -> Result<Vec<StreamRecord>, ReadError> {
        let database = self.shared.lock();
        Ok(streams
            .iter()
            .filter_map(|s| database.streams.get(s).cloned())
            .collect())
    }

    fn claim(&mut self, source: &str, partitions: &[u32]) -> Result<(), ReadError> {
        let mut database = self.shared.lock();
        let mut claims = Vec::with_capacity(partitions.len());
        for &partition in partitions {
            let claim = database
                .claims
                .entry((source.to_string(), partition))
                .or_insert((self.member, 0));
            *claim = (self.member, claim.1 + 1);
            claims.push((partition, claim.1));
        }
        self.claims_source = source.to_string();
        self.claims = claims;
        Ok(())
    }

    fn release(&mut self, partitions: &[u32]) -> Result<(), ReadError> {
        self.claims.retain(|(p, _)| !partitions.contains(p));
        Ok(())
    }

    fn forget_documents(&mut self) {
        self.revisions.clear();
    }

    fn dead_letters_present(&mut self, ids: &[u64]) -> Result<Vec<u64>, ReadError> {
        let database = self.shared.lock();
        Ok(ids
            .iter()
            .copied()
            .filter(|id| database.dead_letters.contains_key(id))
            .collect())
    }

    fn poll_progress(&mut self) -> bool {
        let notified = self.notified.swap(false, Ordering::SeqCst);
        notified && !self.notifications_lost
    }
}
