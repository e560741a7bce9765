//! The PostgreSQL store: the same single-transaction guarantee as SQLite, batched writes
//! through `UNNEST`, and what several processes sharing one store need.
//!
//! Client: the synchronous `postgres` crate. ordo's run loop is blocking code (SQLite and
//! the sources block, and a commit must finish before the next batch), so an async client
//! would only add a runtime hop per statement; `postgres` wraps tokio-postgres with its
//! own small runtime and gives the same protocol, types and TLS options.
//!
//! Sharing (members of one Kafka consumer group, operator verbs next to them):
//! - **Optimistic checks in the commit transaction.** Each document row has a revision;
//!   the store remembers the revision of every document it read or wrote and updates a
//!   row only if it still holds that revision. A stream row is locked and must not have
//!   gained an alias this process does not know, nor be at or past the version this
//!   process writes (another member applied it). Any mismatch rolls the batch back as
//!   [`CommitError::Conflict`]: the consumer rebuilds from the store and reads again, so
//!   two processes never both apply to one document from the same starting point.
//! - **Zombie fencing.** A member claims its partitions on assignment (the epoch goes up
//!   by one); every commit re-reads its claims under a share lock and fails with
//!   [`CommitError::Fenced`] if another member claimed one since.
//! - **Progress notifications.** A commit that moves streams sends `NOTIFY`; members with
//!   parked events listen and re-read the positions they wait for
//!   ([`Store::poll_progress`], [`Store::stream_records`]).
//! - **Ids and counters.** Each process reserves dead-letter ids in blocks of
//!   [`DEAD_LETTER_ID_BLOCK`]; counters are added as differences under a row lock.
//! - **Lost connections** are re-established up to [`RECONNECT_ATTEMPTS_MAX`] times per
//!   operation; a commit is retried whole (the optimistic checks make a retry of a commit
//!   that did land a conflict, never a double application).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ordo_core::{
    ChangeSet, Counters, DeadLetter, DeadLetterKind, Load, Loaded, PendingRecord, Snapshot,
    SourcePosition, StreamRecord,
};
use ordo_projection::Document;
use postgres::error::SqlState;
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, GenericClient, NoTls, Transaction};

use crate::error::{CommitError, ConflictReason, OpenError, ReadError};
use crate::rows::{self, corrupt};
use crate::url::redact;
use crate::{sharing, CommitBatch, ExportRow, Store};

/// The schema this build writes (kept in step with the SQLite store's).
pub const POSTGRES_SCHEMA_VERSION: i64 = 2;

use crate::DEAD_LETTER_ID_BLOCK;

/// Most attempts to re-establish a lost connection within one operation.
pub const RECONNECT_ATTEMPTS_MAX: u32 = 5;

/// The advisory lock that serializes schema creation and migration across processes.
const MIGRATION_LOCK_ID: i64 = 7_102_003;

/// The advisory lock one member takes to trim the journal (two members deleting
/// overlapping rows in different orders could deadlock).
const JOURNAL_TRIM_LOCK_ID: i64 = 7_102_004;

// Two locks, two ids.
const _: () = assert!(MIGRATION_LOCK_ID != JOURNAL_TRIM_LOCK_ID);

/// Most times an operation outside a commit runs again after the server chose it as a
/// deadlock's victim.
pub const DEADLOCK_RETRIES_MAX: u32 = 10;

/// Pause before the first reconnect attempt; it doubles with each further attempt.
pub const RECONNECT_PAUSE_MS_FIRST: u64 = 200;

/// Seconds a connection attempt may take before it counts as failed.
pub const CONNECT_TIMEOUT_S: u64 = 5;

/// How long a check for notifications waits for one.
pub const NOTIFY_WAIT_MS: u64 = 1;

/// Most document revisions remembered; beyond it the consumer's cache is cleared too
/// ([`Store::forget_documents`]), so this only guards against a caller that never does.
pub const KNOWN_REVISIONS_MAX: usize = 1_000_000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    stream TEXT PRIMARY KEY, doc TEXT, deleted BOOLEAN NOT NULL DEFAULT FALSE,
    revision BIGINT NOT NULL DEFAULT 1);
CREATE TABLE IF NOT EXISTS streams (
    stream TEXT PRIMARY KEY, applied BIGINT NOT NULL, alias_target TEXT, alias_cut BIGINT);
CREATE TABLE IF NOT EXISTS pending (
    stream TEXT NOT NULL, version BIGINT NOT NULL, state TEXT NOT NULL, event TEXT,
    partition BIGINT, awaits_stream TEXT, awaits_version BIGINT, since_ms BIGINT,
    PRIMARY KEY (stream, version));
CREATE TABLE IF NOT EXISTS dead_letters (
    id BIGINT PRIMARY KEY, kind TEXT NOT NULL, stream TEXT, version BIGINT, event_id TEXT,
    body TEXT NOT NULL, reason TEXT NOT NULL, partition BIGINT, \"offset\" BIGINT,
    at_ms BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS dedupe_blocks (
    block BIGSERIAL PRIMARY KEY, first_sequence BIGINT NOT NULL, last_sequence BIGINT NOT NULL,
    hashes BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (
    source TEXT NOT NULL, partition BIGINT NOT NULL, \"offset\" BIGINT NOT NULL,
    committed_ms BIGINT, PRIMARY KEY (source, partition));
CREATE TABLE IF NOT EXISTS claims (
    source TEXT NOT NULL, partition BIGINT NOT NULL, member TEXT NOT NULL,
    epoch BIGINT NOT NULL, PRIMARY KEY (source, partition));
CREATE TABLE IF NOT EXISTS members (
    source TEXT NOT NULL, member TEXT NOT NULL, partitions BIGINT NOT NULL,
    seen_at TIMESTAMPTZ NOT NULL, PRIMARY KEY (source, member));
CREATE TABLE IF NOT EXISTS journal (
    id BIGSERIAL PRIMARY KEY, at_ms BIGINT NOT NULL, kind TEXT NOT NULL, stream TEXT,
    version BIGINT, detail TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS journal_stream ON journal (stream, id);
CREATE INDEX IF NOT EXISTS journal_at ON journal (at_ms);
CREATE TABLE IF NOT EXISTS operator_actions (
    id BIGSERIAL PRIMARY KEY, requested_ms BIGINT NOT NULL, user_name TEXT NOT NULL,
    verb TEXT NOT NULL, args TEXT NOT NULL, reason TEXT NOT NULL, state TEXT NOT NULL,
    result TEXT NOT NULL DEFAULT '', done_ms BIGINT);
";

/// Version 1 → 2: document revisions, the partition of waiting events and what parked
/// ones wait for, dedupe blocks
/// keyed apart from their (per-member) sequences, partition claims (created above).
const MIGRATE_1_TO_2: &str = "
ALTER TABLE documents ADD COLUMN IF NOT EXISTS revision BIGINT NOT NULL DEFAULT 1;
ALTER TABLE pending ADD COLUMN IF NOT EXISTS partition BIGINT;
ALTER TABLE pending ADD COLUMN IF NOT EXISTS awaits_stream TEXT;
ALTER TABLE pending ADD COLUMN IF NOT EXISTS awaits_version BIGINT;
ALTER TABLE dedupe_blocks DROP CONSTRAINT IF EXISTS dedupe_blocks_pkey;
ALTER TABLE dedupe_blocks ADD COLUMN IF NOT EXISTS block BIGSERIAL PRIMARY KEY;
";

/// Whether an error means the connection is gone (retry on a new one) rather than a
/// statement failed.
fn connection_lost(error: &postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    match error.code() {
        Some(code) => {
            *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
                || code.code().starts_with("08")
        }
        // No SQLSTATE: an IO error on the socket.
        None => error.as_db_error().is_none(),
    }
}

/// Refuses the batch of a member that no longer holds a partition it consumed (zombie
/// fencing): the claims are read under a share lock, so a takeover waits for this commit.
fn check_claims(
    tx: &mut Transaction<'_>,
    claims_source: &str,
    member: &str,
    claims: &[(u32, i64)],
) -> Result<(), WriteError> {
    if !claims.is_empty() {
        let partitions: Vec<i64> = claims.iter().map(|(p, _)| i64::from(*p)).collect();
        let mut current: HashMap<u32, (String, i64)> = HashMap::new();
        for row in tx.query(
            "SELECT partition, member, epoch FROM claims
             WHERE source = $1 AND partition = ANY($2) ORDER BY partition FOR SHARE",
            &[&claims_source, &partitions],
        )? {
            current.insert(row.get::<_, i64>(0) as u32, (row.get(1), row.get(2)));
        }
        for &(partition, mine) in claims {
            match current.get(&partition) {
                Some((holder, epoch)) if holder == member && *epoch == mine => {}
                other => {
                    return Err(WriteError::Fenced {
                        partition,
                        mine,
                        current: other.map_or(0, |(_, epoch)| *epoch),
                    })
                }
            }
        }
    }
    Ok(())
}

/// Documents: a row is updated only at the revision this process saw, and inserted only
/// if none exists; anything else is a conflict, never a blind overwrite.
fn write_documents(
    tx: &mut Transaction<'_>,
    batch: &CommitBatch,
    revisions: &HashMap<Arc<str>, i64>,
) -> Result<Landed, WriteError> {
    let mut landed = Landed {
        revisions: Vec::with_capacity(batch.documents.len()),
    };
    let (mut update_names, mut update_docs, mut update_deleted, mut update_expected) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut insert_names, mut insert_docs, mut insert_deleted) =
        (Vec::new(), Vec::new(), Vec::new());
    for (stream, document) in &batch.documents {
        let (doc, deleted) = match document {
            Some(Document::Live(value)) => (Some(value.to_string()), false),
            Some(Document::Deleted) => (None, true),
            None => (None, false),
        };
        // A document never read here counts as expected absent: if it exists, that
        // is a conflict, never a blind overwrite.
        let expected = revisions.get(stream).copied().unwrap_or(0);
        landed.revisions.push((stream.clone(), expected + 1));
        if expected == 0 {
            insert_names.push(stream.to_string());
            insert_docs.push(doc);
            insert_deleted.push(deleted);
        } else {
            update_names.push(stream.to_string());
            update_docs.push(doc);
            update_deleted.push(deleted);
            update_expected.push(expected);
        }
    }
    if !update_names.is_empty() {
        let updated = tx.execute(
            "UPDATE documents d SET doc = u.doc, deleted = u.deleted, revision = d.revision + 1
             FROM UNNEST($1::text[], $2::text[], $3::bool[], $4::bigint[])
                 AS u(stream, doc, deleted, expected)
             WHERE d.stream = u.stream AND d.revision = u.expected",
            &[
                &update_names,
                &update_docs,
                &update_deleted,
                &update_expected,
            ],
        )?;
        if updated as usize != update_names.len() {
            return Err(WriteError::Conflict(ConflictReason::DocumentsChanged {
                changed: update_names.len() - updated as usize,
                written: update_names.len(),
            }));
        }
    }
    if !insert_names.is_empty() {
        let inserted = tx.execute(
            "INSERT INTO documents (stream, doc, deleted, revision)
             SELECT stream, doc, deleted, 1
             FROM UNNEST($1::text[], $2::text[], $3::bool[]) AS u(stream, doc, deleted)
             ON CONFLICT (stream) DO NOTHING",
            &[&insert_names, &insert_docs, &insert_deleted],
        )?;
        if inserted as usize != insert_names.len() {
            return Err(WriteError::Conflict(ConflictReason::DocumentsCreated {
                created: insert_names.len() - inserted as usize,
                written: insert_names.len(),
            }));
        }
    }
    Ok(landed)
}

/// A document is written for a live stream: if its stream was merged away by another
/// member (not by this batch), this member redirected into a dead document, not knowing
/// the alias chain had grown.
fn check_documents_live(tx: &mut Transaction<'_>, batch: &CommitBatch) -> Result<(), WriteError> {
    if !batch.documents.is_empty() {
        let written: Vec<&str> = batch.documents.iter().map(|(s, _)| &**s).collect();
        let mut aliases: HashMap<String, String> = HashMap::new();
        for row in tx.query(
            "SELECT stream, alias_target FROM streams
             WHERE stream = ANY($1) AND alias_target IS NOT NULL
             ORDER BY stream FOR UPDATE",
            &[&written],
        )? {
            aliases.insert(row.get(0), row.get(1));
        }
        sharing::check_documents_live(written.iter().copied(), &batch.changes.streams, |s| {
            aliases.get(s).cloned()
        })
        .map_err(WriteError::Conflict)?;
    }
    Ok(())
}

/// Stream positions: locked, checked, then written (positions never go back, aliases are
/// never dropped); other members hear of it on the notify channel.
fn write_streams(
    tx: &mut Transaction<'_>,
    changes: &ChangeSet,
    channel: &str,
) -> Result<(), WriteError> {
    if !changes.streams.is_empty() {
        let names: Vec<String> = changes
            .streams
            .iter()
            .map(|r| r.stream.to_string())
            .collect();
        let mut stored: HashMap<String, (u64, bool)> = HashMap::new();
        for row in tx.query(
            "SELECT stream, applied, alias_target IS NOT NULL FROM streams
             WHERE stream = ANY($1) ORDER BY stream FOR UPDATE",
            &[&names],
        )? {
            stored.insert(row.get(0), (row.get::<_, i64>(1) as u64, row.get(2)));
        }
        sharing::check_stream_positions(&changes.streams, |s| stored.get(s).copied())
            .map_err(WriteError::Conflict)?;
        let applied: Vec<i64> = changes.streams.iter().map(|r| r.applied as i64).collect();
        let targets: Vec<Option<String>> = changes
            .streams
            .iter()
            .map(|r| r.alias.as_ref().map(|(t, _)| t.to_string()))
            .collect();
        let cuts: Vec<Option<i64>> = changes
            .streams
            .iter()
            .map(|r| r.alias.as_ref().map(|(_, c)| *c as i64))
            .collect();
        tx.execute(
            "INSERT INTO streams (stream, applied, alias_target, alias_cut)
             SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::bigint[])
             ON CONFLICT (stream) DO UPDATE SET
             applied = GREATEST(streams.applied, excluded.applied),
             alias_target = COALESCE(streams.alias_target, excluded.alias_target),
             alias_cut = COALESCE(streams.alias_cut, excluded.alias_cut)",
            &[&names, &applied, &targets, &cuts],
        )?;
        tx.execute("SELECT pg_notify($1, '')", &[&channel])?;
    }
    Ok(())
}

/// Waiting events: deleted rows, then rows put.
fn write_pending(tx: &mut Transaction<'_>, changes: &ChangeSet) -> Result<(), WriteError> {
    if !changes.pending_delete.is_empty() {
        delete_pending(tx, &changes.pending_delete)?;
    }
    if !changes.pending_put.is_empty() {
        put_pending(tx, &changes.pending_put)?;
    }
    Ok(())
}

/// Deletes the waiting rows of events applied, skipped or replaced.
fn delete_pending(tx: &mut Transaction<'_>, rows: &[(Box<str>, u64)]) -> Result<(), WriteError> {
    let names: Vec<&str> = rows.iter().map(|(s, _)| &**s).collect();
    let versions: Vec<i64> = rows.iter().map(|(_, v)| *v as i64).collect();
    tx.execute(
        "DELETE FROM pending p USING UNNEST($1::text[], $2::bigint[]) AS d(stream, version)
         WHERE p.stream = d.stream AND p.version = d.version",
        &[&names, &versions],
    )?;
    Ok(())
}

/// Puts waiting rows (a rewrite keeps a row's `since_ms`).
fn put_pending(tx: &mut Transaction<'_>, records: &[PendingRecord]) -> Result<(), WriteError> {
    let names: Vec<String> = records.iter().map(|r| r.stream.to_string()).collect();
    let versions: Vec<i64> = records.iter().map(|r| r.version as i64).collect();
    let states: Vec<&str> = records
        .iter()
        .map(|r| rows::pending_state_name(r.state))
        .collect();
    let events: Vec<Option<String>> = records
        .iter()
        .map(|r| r.event.as_ref().map(|e| e.to_json_string()))
        .collect();
    let partitions: Vec<Option<i64>> = records.iter().map(|r| r.partition.map(i64::from)).collect();
    let awaits_streams: Vec<Option<&str>> = records
        .iter()
        .map(|r| r.awaits.as_ref().map(|(s, _)| &**s))
        .collect();
    let awaits_versions: Vec<Option<i64>> = records
        .iter()
        .map(|r| r.awaits.as_ref().map(|(_, v)| *v as i64))
        .collect();
    tx.execute(
        "INSERT INTO pending
             (stream, version, state, event, partition, awaits_stream, awaits_version,
              since_ms)
             SELECT u.*, $8::bigint FROM UNNEST($1::text[], $2::bigint[], $3::text[],
                 $4::text[], $5::bigint[], $6::text[], $7::bigint[]) AS u
             ON CONFLICT (stream, version) DO UPDATE SET state = excluded.state,
             event = excluded.event, partition = excluded.partition,
             awaits_stream = excluded.awaits_stream, awaits_version = excluded.awaits_version",
        &[
            &names,
            &versions,
            &states,
            &events,
            &partitions,
            &awaits_streams,
            &awaits_versions,
            // Wall time, kept by a later rewrite of the row: how long it waits.
            &(crate::now_ms() as i64),
        ],
    )?;
    Ok(())
}

/// Dead letters removed and put; an id past this process's reserved block is refused.
fn write_dead_letters(
    tx: &mut Transaction<'_>,
    changes: &ChangeSet,
    ids_end: u64,
) -> Result<(), WriteError> {
    for id in &changes.dead_letters_delete {
        tx.execute("DELETE FROM dead_letters WHERE id = $1", &[&(*id as i64)])?;
    }
    for entry in &changes.dead_letters_put {
        if entry.id >= ids_end {
            // Past this process's reserved block: another process may own the id.
            return Err(WriteError::Conflict(
                ConflictReason::DeadLetterIdOutsideBlock { id: entry.id },
            ));
        }
        tx.execute(
            "INSERT INTO dead_letters
             (id, kind, stream, version, event_id, body, reason, partition, \"offset\", at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, body = excluded.body,
             reason = excluded.reason",
            &[
                &(entry.id as i64),
                &entry.kind.name(),
                &entry.stream.as_deref(),
                &entry.version.map(|v| v as i64),
                &entry.event_id.as_deref(),
                &entry.body,
                &entry.reason,
                &entry.position.map(|p| i64::from(p.partition)),
                &entry.position.map(|p| p.offset as i64),
                &(entry.at_ms as i64),
            ],
        )?;
    }
    Ok(())
}

/// The batch's dedupe block (the window below its floor dropped) and the checkpoints.
fn write_dedupe_and_checkpoints(
    tx: &mut Transaction<'_>,
    source: &str,
    changes: &ChangeSet,
) -> Result<(), WriteError> {
    if let (Some(first), Some(last)) = (changes.dedupe_put.first(), changes.dedupe_put.last()) {
        let mut hashes = Vec::with_capacity(changes.dedupe_put.len() * 8);
        for (_, hash) in &changes.dedupe_put {
            hashes.extend_from_slice(&hash.to_le_bytes());
        }
        tx.execute(
            "INSERT INTO dedupe_blocks (first_sequence, last_sequence, hashes) VALUES ($1, $2, $3)",
            &[&(first.0 as i64), &(last.0 as i64), &hashes],
        )?;
    }
    tx.execute(
        "DELETE FROM dedupe_blocks WHERE last_sequence < $1",
        &[&(changes.dedupe_floor as i64)],
    )?;
    for (partition, offset) in &changes.checkpoints {
        tx.execute(
            "INSERT INTO checkpoints (source, partition, \"offset\", committed_ms)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (source, partition) DO UPDATE SET \"offset\" = excluded.\"offset\",
             committed_ms = excluded.committed_ms",
            &[
                &source,
                &i64::from(*partition),
                &(*offset as i64),
                &(crate::now_ms() as i64),
            ],
        )?;
    }
    Ok(())
}

/// Counters: what is stored plus what this process counted since it last read or wrote
/// them, so members add up instead of overwriting each other.
fn write_counters(
    tx: &mut Transaction<'_>,
    changes: &ChangeSet,
    base: Counters,
) -> Result<(), WriteError> {
    let stored = tx
        .query_opt(
            "SELECT value FROM meta WHERE key = 'counters' FOR UPDATE",
            &[],
        )?
        .map(|row| row.get::<_, String>(0));
    let stored = rows::counters(stored).unwrap_or_default();
    let sum = sharing::counters_added(stored, base, changes.counters);
    for (key, value) in [
        ("counters", sum.to_json().to_string()),
        ("dedupe_floor", changes.dedupe_floor.to_string()),
    ] {
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&key, &value],
        )?;
    }
    Ok(())
}

/// Operator verbs carry their actions out themselves here (members notice and rebuild):
/// only new records, written with their effects, and the journal entries, trimmed by one
/// member at a time.
fn write_actions_and_journal(
    tx: &mut Transaction<'_>,
    batch: &CommitBatch,
) -> Result<(), WriteError> {
    for action in &batch.actions {
        tx.execute(
            "INSERT INTO operator_actions
             (requested_ms, user_name, verb, args, reason, state, result, done_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &(action.requested_ms as i64),
                &action.user,
                &action.verb,
                &action.args.to_string(),
                &action.reason,
                &action.state.name(),
                &action.result,
                &action.done_ms.map(|ms| ms as i64),
            ],
        )?;
    }
    let mut added = 0;
    for entry in batch.journal_entries() {
        tx.execute(
            "INSERT INTO journal (at_ms, kind, stream, version, detail)
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &(entry.at_ms as i64),
                &entry.kind,
                &entry.stream,
                &entry.version.map(|v| v as i64),
                &entry.detail.to_string(),
            ],
        )?;
        added += 1;
    }
    // One member at a time trims (two deleting overlapping rows in different orders
    // could deadlock); a member that finds the lock taken leaves it to the other.
    let trim = added > 0
        && tx
            .query_one(
                "SELECT pg_try_advisory_xact_lock($1)",
                &[&JOURNAL_TRIM_LOCK_ID],
            )?
            .get::<_, bool>(0);
    if trim {
        let retention = batch.retention;
        tx.execute(
            "DELETE FROM journal WHERE id <= (SELECT MAX(id) FROM journal) - $1",
            &[&(retention.entries_max.min(i64::MAX as u64) as i64)],
        )?;
        let oldest_ms = crate::journal::journal_now(batch).saturating_sub(retention.age_ms_max);
        tx.execute(
            "DELETE FROM journal WHERE at_ms < $1",
            &[&(oldest_ms as i64)],
        )?;
    }
    Ok(())
}

/// Why one attempt at a commit failed.
enum WriteError {
    Conflict(ConflictReason),
    Fenced {
        partition: u32,
        mine: i64,
        current: i64,
    },
    Database(postgres::Error),
}

/// Whether the server rolled the transaction back to break a deadlock (or a
/// serialization failure): running it again is safe.
fn deadlock_victim(error: &postgres::Error) -> bool {
    error.code().is_some_and(|code| {
        *code == SqlState::T_R_DEADLOCK_DETECTED || *code == SqlState::T_R_SERIALIZATION_FAILURE
    })
}

impl From<postgres::Error> for WriteError {
    fn from(error: postgres::Error) -> Self {
        // Two members locking rows in different orders: one is chosen to fail, and it
        // recovers like any conflict.
        if deadlock_victim(&error) {
            WriteError::Conflict(ConflictReason::DeadlockVictim(error))
        } else {
            WriteError::Database(error)
        }
    }
}

/// What a commit that landed changes in this process's memory.
struct Landed {
    revisions: Vec<(Arc<str>, i64)>,
}

/// A PostgreSQL-backed [`Store`], shareable by several processes.
pub struct PostgresStore {
    client: Client,
    /// The URL as given (with the password, to reconnect; never printed).
    url: String,
    schema: Option<String>,
    /// This process's identity in `claims`.
    member: String,
    /// Revision of each document read or written (0: no row).
    revisions: HashMap<Arc<str>, i64>,
    /// Partitions claimed for `claims_source`, with the epoch of each claim.
    claims: Vec<(u32, i64)>,
    claims_source: String,
    /// The counters as last read or committed by this process: commits add the
    /// difference, so members never overwrite each other's counts.
    counters_base: Counters,
    /// Dead-letter ids reserved by this process: `[next, end)`, `next` being the first
    /// one no landed commit used. A rebuild (conflict, rebalance) goes on in the same
    /// block; ids of a commit that did not land never reached the table, so they are free.
    dead_letter_ids_next: u64,
    dead_letter_ids_end: u64,
    listener: Option<Client>,
    /// Whether a transactional handler's batch transaction is open on `client` (the next
    /// commit ends it; a lost connection then loses the batch, and is not reconnected).
    in_batch: bool,
    /// Opened by a read-only verb: reconnects stay read-only.
    read_only: bool,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PostgresStore")
    }
}

pub(crate) fn connect(
    url: &str,
    schema: Option<&str>,
    read_only: bool,
) -> Result<Client, postgres::Error> {
    let mut config: postgres::Config = url.parse()?;
    config.connect_timeout(Duration::from_secs(CONNECT_TIMEOUT_S));
    let mut client = config.connect(NoTls)?;
    if read_only {
        // The server refuses any write on this session, whatever a caller tries.
        client.batch_execute("SET default_transaction_read_only = on")?;
        if let Some(schema) = schema {
            client.batch_execute(&format!("SET search_path TO {schema}"))?;
        }
        return Ok(client);
    }
    if let Some(schema) = schema {
        // Members starting together would race on CREATE SCHEMA IF NOT EXISTS (it can
        // fail with a duplicate key): create it under the migration lock.
        let mut transaction = client.transaction()?;
        transaction.batch_execute(&format!(
            "SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID}); CREATE SCHEMA IF NOT EXISTS {schema}"
        ))?;
        transaction.commit()?;
        client.batch_execute(&format!("SET search_path TO {schema}"))?;
    }
    Ok(client)
}

impl PostgresStore {
    /// What `ordo status` and the metrics show (see [`crate::status`]), with the `longest`
    /// streams waiting longest (a scrape asks for none).
    pub fn status(&mut self, longest: usize) -> Result<crate::StoreStatus, ReadError> {
        let (counters, rows) = self.retrying(|store| status_rows(&mut store.client, longest))?;
        let mut status = crate::StoreStatus::from_rows(crate::status::StatusRows {
            counters: rows::counters(counters)?,
            ..rows
        });
        status.mark_paused(self.pauses()?);
        Ok(status)
    }
}

/// The status rows, in one read-only transaction (one consistent view).
fn status_rows(
    client: &mut Client,
    longest: usize,
) -> Result<(Option<String>, crate::status::StatusRows), postgres::Error> {
    let opt = |v: Option<i64>| v.map(|v| v as u64);
    let mut transaction = client
        .build_transaction()
        .read_only(true)
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .start()?;
    let counters = transaction
        .query_opt("SELECT value FROM meta WHERE key = 'counters'", &[])?
        .map(|row| row.get(0));
    let mut rows = crate::status::StatusRows::default();
    for row in transaction.query(
        "SELECT source, partition, \"offset\", committed_ms FROM checkpoints
         ORDER BY source, partition",
        &[],
    )? {
        rows.positions.push(crate::status::Position {
            source: row.get(0),
            partition: row.get::<_, i64>(1) as u32,
            offset: row.get::<_, i64>(2) as u64,
            committed_ms: opt(row.get(3)),
        });
    }
    for row in transaction.query(
        "SELECT state, COUNT(*), MIN(since_ms) FROM pending GROUP BY state",
        &[],
    )? {
        rows.pending
            .push((row.get(0), row.get::<_, i64>(1) as u64, opt(row.get(2))));
    }
    let row = transaction.query_one("SELECT COUNT(*), MIN(at_ms) FROM dead_letters", &[])?;
    rows.dead_letters = (row.get::<_, i64>(0) as u64, opt(row.get(1)));
    if longest > 0 {
        rows.streams = waiting_streams(&mut transaction, longest)?;
    }
    transaction.commit()?;
    Ok((counters, rows))
}

/// The streams waiting longest, with what holds each (within the status transaction).
fn waiting_streams(
    transaction: &mut postgres::Transaction<'_>,
    limit: usize,
) -> Result<Vec<crate::status::StreamRows>, postgres::Error> {
    let opt = |v: Option<i64>| v.map(|v| v as u64);
    let mut streams = Vec::new();
    for row in transaction.query(&crate::status::longest_waiting_sql(limit), &[])? {
        let stream: String = row.get(0);
        let head_version = row.get::<_, i64>(3);
        let head_awaits = transaction
            .query_opt(
                "SELECT awaits_stream, awaits_version FROM pending
                 WHERE stream = $1 AND version = $2 AND state = 'parked'",
                &[&stream, &head_version],
            )?
            .and_then(|r| r.get::<_, Option<String>>(0).zip(opt(r.get(1))));
        let applied = transaction
            .query_opt("SELECT applied FROM streams WHERE stream = $1", &[&stream])?
            .map_or(0, |r| r.get::<_, i64>(0) as u64);
        let dead_letter = transaction
            .query_one(
                "SELECT MIN(id) FROM dead_letters WHERE stream = $1 AND version = $2",
                &[&stream, &(applied as i64 + 1)],
            )?
            .get::<_, Option<i64>>(0)
            .map(|id| id as u64);
        streams.push(crate::status::StreamRows {
            events: row.get::<_, i64>(1) as u64,
            since_ms: opt(row.get(2)),
            head_version: head_version as u64,
            head_awaits,
            applied,
            dead_letter,
            stream,
        });
    }
    Ok(streams)
}

impl PostgresStore {
    /// Connects to `url` (`postgres://…`, optionally `?schema=NAME` to keep ordo's tables
    /// in their own schema, created when missing) and migrates.
    pub fn open(url: &str) -> Result<Self, OpenError> {
        Self::open_as(url, false)
    }

    /// Connects to an existing store for reading only: no schema is created or upgraded,
    /// and the session is read-only (the server refuses writes), so it works with a role
    /// that may only `SELECT`.
    pub fn open_read_only(url: &str) -> Result<Self, OpenError> {
        Self::open_as(url, true)
    }

    fn open_as(url: &str, read_only: bool) -> Result<Self, OpenError> {
        let (url, schema) = split_schema(url);
        if let Some(schema) = &schema {
            if !schema
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(OpenError::BadUrl(format!(
                    "schema `{schema}` must be [A-Za-z0-9_]"
                )));
            }
        }
        let mut client =
            connect(&url, schema.as_deref(), read_only).map_err(|e| OpenError::Connect {
                url: redact(&url),
                source: e,
            })?;
        let checked = if read_only {
            check_current(&mut client)
        } else {
            migrate(&mut client)
        };
        checked.map_err(|e| match e {
            MigrateError::Missing => OpenError::Missing(format!(
                "{}{}",
                redact(&url),
                schema
                    .as_ref()
                    .map(|s| format!(" (schema {s})"))
                    .unwrap_or_default()
            )),
            MigrateError::Older(missing) => OpenError::OlderSchema { missing },
            MigrateError::Newer(found) => OpenError::NewerSchema {
                found,
                supported: POSTGRES_SCHEMA_VERSION,
            },
            MigrateError::Database(e) => OpenError::Postgres(e),
        })?;
        let member = format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        Ok(PostgresStore {
            client,
            url,
            schema,
            member,
            revisions: HashMap::new(),
            claims: Vec::new(),
            claims_source: String::new(),
            counters_base: Counters::default(),
            dead_letter_ids_next: 0,
            dead_letter_ids_end: 0,
            listener: None,
            in_batch: false,
            read_only,
        })
    }

    /// The channel commits notify on (one per schema).
    fn channel(&self) -> String {
        format!(
            "ordo_progress_{}",
            self.schema.as_deref().unwrap_or("public")
        )
    }

    /// Runs `operation`, re-establishing a lost connection up to
    /// [`RECONNECT_ATTEMPTS_MAX`] times; `Err(message)` when it cannot. An operation the
    /// server chose as a deadlock's victim (two members claiming partitions while the
    /// other commits, say) ran in a transaction that rolled back whole: it runs again, up
    /// to [`DEADLOCK_RETRIES_MAX`] times.
    fn retrying<T>(
        &mut self,
        mut operation: impl FnMut(&mut Self) -> Result<T, postgres::Error>,
    ) -> Result<T, ReadError> {
        let mut pause_ms = RECONNECT_PAUSE_MS_FIRST;
        let mut attempt = 0;
        let mut deadlocks = 0;
        loop {
            match operation(self) {
                Ok(value) => return Ok(value),
                Err(error) if connection_lost(&error) => {
                    attempt += 1;
                    self.reconnect(&error, attempt, &mut pause_ms, "")
                        .map_err(ReadError::Unavailable)?;
                }
                Err(error) if deadlocks < DEADLOCK_RETRIES_MAX && deadlock_victim(&error) => {
                    deadlocks += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10 * u64::from(deadlocks)));
                }
                Err(error) => return Err(ReadError::Postgres(error)),
            }
        }
    }

    /// After a lost connection: waits `pause_ms` (doubled for next time) and connects
    /// again; `Err(message)` once `attempt` is past the bound.
    fn reconnect(
        &mut self,
        error: &postgres::Error,
        attempt: u32,
        pause_ms: &mut u64,
        during: &str,
    ) -> Result<(), String> {
        if self.in_batch {
            // The handler's writes went with the connection: reconnecting and committing
            // ordo's part alone would record versions without their effects.
            self.in_batch = false;
            return Err(format!(
                "lost the connection to {} inside a handler's batch transaction (rolled back; a restart reads the batch again): {error}",
                redact(&self.url)
            ));
        }
        if attempt > RECONNECT_ATTEMPTS_MAX {
            return Err(format!(
                "lost the connection to {} and could not re-establish it in {RECONNECT_ATTEMPTS_MAX} attempts: {error}",
                redact(&self.url)
            ));
        }
        tracing::warn!(
            "lost the connection to {}{during} ({error}); reconnecting (attempt {attempt} of {RECONNECT_ATTEMPTS_MAX})",
            redact(&self.url),
        );
        std::thread::sleep(Duration::from_millis(*pause_ms));
        *pause_ms *= 2;
        if let Ok(client) = connect(&self.url, self.schema.as_deref(), self.read_only) {
            self.client = client;
        }
        Ok(())
    }

    /// Journal entries, oldest first.
    pub fn journal(
        &mut self,
        filter: &crate::journal::JournalFilter,
    ) -> Result<Vec<crate::journal::JournalEntry>, ReadError> {
        let sql = crate::journal::filter_sql(filter, true);
        let since = filter.since_ms.map(|ms| ms as i64);
        let limit = filter.limit.min(i64::MAX as u64) as i64;
        let mut parameters: Vec<&(dyn postgres::types::ToSql + Sync)> = Vec::new();
        if let Some(stream) = &filter.stream {
            parameters.push(stream);
        }
        if let Some(kind) = &filter.kind {
            parameters.push(kind);
        }
        if let Some(since) = &since {
            parameters.push(since);
        }
        if filter.limit > 0 {
            parameters.push(&limit);
        }
        let rows = self.retrying(|store| store.client.query(&sql, &parameters))?;
        rows.into_iter()
            .map(|row| {
                crate::journal::entry_from_row(
                    row.get(0),
                    row.get(1),
                    row.get(2),
                    row.get(3),
                    row.get(4),
                    row.get(5),
                )
            })
            .collect()
    }

    /// Writes a free-form setting (the run's engine configuration, for operator verbs).
    pub fn set_setting(&mut self, key: &str, value: &str) -> Result<(), ReadError> {
        let key = format!("setting:{key}");
        self.retrying(|store| {
            store.client.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&key, &value],
            )
        })?;
        Ok(())
    }

    /// Reads a setting written by [`Self::set_setting`].
    pub fn setting(&mut self, key: &str) -> Result<Option<String>, ReadError> {
        let key = format!("setting:{key}");
        self.retrying(|store| meta(&mut store.client, &key))
    }

    /// This process's identity in the partition claims.
    pub fn member(&self) -> &str {
        &self.member
    }

    /// Names this process in the partition claims and the group (`--member-id`): a
    /// member restarted under the same name takes its partitions back at once. Two
    /// processes running at once must not share a name; the claims' epochs still fence
    /// the older one.
    pub fn set_member(&mut self, member: &str) {
        assert!(self.claims.is_empty(), "named before any claim");
        self.member = member.to_string();
    }

    /// This process's heartbeat and view in a group reading `source` as `partitions`
    /// partitions, on its own connection to this store's database.
    pub fn members(
        &self,
        source: &str,
        partitions: u32,
        session_timeout: Duration,
    ) -> crate::members::PgMembers {
        crate::members::PgMembers::new(
            self.url.clone(),
            self.schema.clone(),
            source,
            &self.member,
            partitions,
            session_timeout,
        )
    }

    /// The server-side process id of this store's connection (tests cut it with
    /// `pg_terminate_backend`).
    pub fn backend_pid(&mut self) -> Result<i32, ReadError> {
        self.retrying(|store| {
            store
                .client
                .query_one("SELECT pg_backend_pid()", &[])
                .map(|row| row.get(0))
        })
    }

    fn write(&mut self, source: &str, batch: &CommitBatch) -> Result<Landed, WriteError> {
        let changes = &batch.changes;
        let channel = self.channel();
        let mut transaction = self.client.transaction()?;
        let tx = &mut transaction;
        // Fencing first: a member that lost a partition writes nothing at all.
        check_claims(tx, &self.claims_source, &self.member, &self.claims)?;
        let landed = write_documents(tx, batch, &self.revisions)?;
        check_documents_live(tx, batch)?;
        write_streams(tx, changes, &channel)?;
        write_pending(tx, changes)?;
        write_dead_letters(tx, changes, self.dead_letter_ids_end)?;
        write_dedupe_and_checkpoints(tx, source, changes)?;
        write_counters(tx, changes, self.counters_base)?;
        write_actions_and_journal(tx, batch)?;
        transaction.commit()?;
        Ok(landed)
    }

    fn pending_rows(
        &mut self,
        sql: &str,
        parameters: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Vec<PendingRecord>, ReadError> {
        let found = self.retrying(|store| store.client.query(sql, parameters))?;
        let mut records = Vec::with_capacity(found.len());
        for row in found {
            let state: String = row.get(2);
            records.push(rows::pending_record(
                row.get(0),
                row.get::<_, i64>(1) as u64,
                &state,
                row.get(3),
                row.get(4),
                (row.get(5), row.get(6)),
            )?);
        }
        Ok(records)
    }

    fn snapshot_once(&mut self, source: &str) -> Result<Snapshot, postgres::Error> {
        let client = &mut self.client;
        let mut snapshot = Snapshot::default();
        for row in client.query(
            "SELECT stream, applied, alias_target, alias_cut FROM streams",
            &[],
        )? {
            snapshot.streams.push(stream_record(&row));
        }
        for row in client.query(
            "SELECT stream, version, id FROM dead_letters
             WHERE kind = 'sequenced' AND stream IS NOT NULL AND version IS NOT NULL",
            &[],
        )? {
            snapshot.blocking_dead_letters.push((
                row.get::<_, String>(0).into_boxed_str(),
                row.get::<_, i64>(1) as u64,
                row.get::<_, i64>(2) as u64,
            ));
        }
        for row in client.query(
            "SELECT partition, \"offset\" FROM checkpoints WHERE source = $1",
            &[&source],
        )? {
            snapshot
                .checkpoints
                .push((row.get::<_, i64>(0) as u32, row.get::<_, i64>(1) as u64));
        }
        if self.dead_letter_ids_next < self.dead_letter_ids_end {
            snapshot.next_dead_letter_id = self.dead_letter_ids_next;
            return Ok(snapshot);
        }
        if self.read_only {
            // A reader writes no dead letter: it reserves no ids, it only reads the next.
            let next = client
                .query_opt(
                    "SELECT (value)::bigint FROM meta WHERE key = 'next_dead_letter_id'",
                    &[],
                )?
                .map_or(1, |row| row.get::<_, i64>(0));
            snapshot.next_dead_letter_id = next.max(1) as u64;
            return Ok(snapshot);
        }
        // Reserve this process's next block of dead-letter ids.
        let end: i64 = client
            .query_one(
                "INSERT INTO meta (key, value) VALUES ('next_dead_letter_id', $1)
                 ON CONFLICT (key) DO UPDATE
                 SET value = ((meta.value)::bigint + $2)::text
                 RETURNING (value)::bigint",
                &[
                    &(1 + DEAD_LETTER_ID_BLOCK).to_string(),
                    &DEAD_LETTER_ID_BLOCK,
                ],
            )?
            .get(0);
        snapshot.next_dead_letter_id = (end - DEAD_LETTER_ID_BLOCK).max(1) as u64;
        self.dead_letter_ids_next = snapshot.next_dead_letter_id;
        self.dead_letter_ids_end = end as u64;
        Ok(snapshot)
    }
}

fn stream_record(row: &postgres::Row) -> StreamRecord {
    let target: Option<String> = row.get(2);
    let cut: Option<i64> = row.get(3);
    StreamRecord {
        stream: Arc::from(row.get::<_, String>(0)),
        applied: row.get::<_, i64>(1) as u64,
        alias: target.zip(cut).map(|(t, c)| (Arc::from(t), c as u64)),
    }
}

fn meta(client: &mut Client, key: &str) -> Result<Option<String>, postgres::Error> {
    Ok(client
        .query_opt("SELECT value FROM meta WHERE key = $1", &[&key])?
        .map(|row| row.get(0)))
}

enum MigrateError {
    Newer(i64),
    /// A read-only open found no ordo tables.
    Missing,
    /// A read-only open found a store that needs an upgrade.
    Older(String),
    Database(postgres::Error),
}

/// Columns added within [`POSTGRES_SCHEMA_VERSION`] (older builds ignore them): since when
/// an event waits, and when a position was recorded (`ordo status`).
const ADDED_COLUMNS: [(&str, &str); 2] = [("pending", "since_ms"), ("checkpoints", "committed_ms")];

/// Whether `table` in the current schema has `column`.
fn has_column(
    client: &mut impl GenericClient,
    table: &str,
    column: &str,
) -> Result<bool, postgres::Error> {
    Ok(client
        .query_opt(
            "SELECT 1 FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = $1 AND column_name = $2",
            &[&table, &column],
        )?
        .is_some())
}

/// What a read-only open checks instead of migrating: the store exists and is of this
/// build's schema.
fn check_current(client: &mut Client) -> Result<(), MigrateError> {
    let has_meta: bool = client
        .query_one("SELECT to_regclass('meta') IS NOT NULL", &[])?
        .get(0);
    if !has_meta {
        return Err(MigrateError::Missing);
    }
    let found = client
        .query_opt("SELECT value FROM meta WHERE key = 'schema_version'", &[])?
        .and_then(|row| row.get::<_, String>(0).parse::<i64>().ok())
        .ok_or(MigrateError::Missing)?;
    if found > POSTGRES_SCHEMA_VERSION {
        return Err(MigrateError::Newer(found));
    }
    if found < POSTGRES_SCHEMA_VERSION {
        return Err(MigrateError::Older(format!(
            "schema version {found}, this build reads {POSTGRES_SCHEMA_VERSION}"
        )));
    }
    for (table, column) in ADDED_COLUMNS {
        if !has_column(client, table, column)? {
            return Err(MigrateError::Older(format!("no column {table}.{column}")));
        }
    }
    Ok(())
}

impl From<postgres::Error> for MigrateError {
    fn from(error: postgres::Error) -> Self {
        MigrateError::Database(error)
    }
}

fn migrate(client: &mut Client) -> Result<(), MigrateError> {
    let mut transaction = client.transaction()?;
    // One migrator at a time across processes.
    transaction.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_ID])?;
    let has_meta: bool = transaction
        .query_one("SELECT to_regclass('meta') IS NOT NULL", &[])?
        .get(0);
    let found = if has_meta {
        transaction
            .query_opt("SELECT value FROM meta WHERE key = 'schema_version'", &[])?
            .and_then(|row| row.get::<_, String>(0).parse::<i64>().ok())
    } else {
        None
    };
    if let Some(found) = found {
        if found > POSTGRES_SCHEMA_VERSION {
            return Err(MigrateError::Newer(found));
        }
    }
    let current = found == Some(POSTGRES_SCHEMA_VERSION) && all_exist(&mut transaction)?;
    if !current {
        // Only when something is missing: `CREATE INDEX IF NOT EXISTS` locks its table
        // before it looks, and a member starting beside committing ones would deadlock.
        transaction.batch_execute(SCHEMA)?;
    }
    if found == Some(1) {
        transaction.batch_execute(MIGRATE_1_TO_2)?;
    }
    // Within version 2 (older builds ignore them): since when an event waits, and when a
    // position was recorded (`ordo status`). Altered only when missing: an ALTER locks
    // the table even when it changes nothing.
    for (table, column) in ADDED_COLUMNS {
        if !has_column(&mut transaction, table, column)? {
            transaction
                .batch_execute(&format!("ALTER TABLE {table} ADD COLUMN {column} BIGINT"))?;
        }
    }
    if !current {
        transaction.batch_execute(
            "CREATE INDEX IF NOT EXISTS pending_awaits ON pending (awaits_stream, awaits_version)",
        )?;
        transaction.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', $1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&POSTGRES_SCHEMA_VERSION.to_string()],
        )?;
    }
    transaction.commit()?;
    Ok(())
}

/// Every table and index [`SCHEMA`] and the migrations create.
const SCHEMA_OBJECTS: [&str; 14] = [
    "meta",
    "documents",
    "streams",
    "pending",
    "dead_letters",
    "dedupe_blocks",
    "checkpoints",
    "claims",
    "members",
    "journal",
    "journal_stream",
    "journal_at",
    "operator_actions",
    "pending_awaits",
];

/// Whether every table and index of the schema is there.
fn all_exist(transaction: &mut postgres::Transaction<'_>) -> Result<bool, postgres::Error> {
    let names: Vec<&str> = SCHEMA_OBJECTS.to_vec();
    transaction
        .query_one(
            "SELECT bool_and(to_regclass(name) IS NOT NULL) FROM unnest($1::TEXT[]) AS name",
            &[&names],
        )
        .map(|row| row.get::<_, Option<bool>>(0).unwrap_or(false))
}

/// Splits ordo's own `schema=NAME` query parameter off a PostgreSQL URL.
fn split_schema(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), None);
    };
    let mut schema = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.strip_prefix("schema=") {
            Some(name) => {
                schema = Some(name.to_string());
                false
            }
            None => true,
        })
        .collect();
    let url = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    (url, schema)
}

impl PostgresStore {
    /// Opens the batch's transaction, if it is not open: a transactional handler's writes
    /// then go into the very transaction that the next commit ends with ordo's changes.
    pub fn begin_batch(&mut self) -> Result<(), ReadError> {
        if !self.in_batch {
            self.client.batch_execute("BEGIN")?;
            self.in_batch = true;
        }
        Ok(())
    }
}

impl crate::BatchTransaction for PostgresStore {
    type Connection = Client;

    fn begin_work(&mut self) -> Result<&mut Client, ReadError> {
        self.begin_batch()?;
        self.client.batch_execute("SAVEPOINT ordo_work")?;
        Ok(&mut self.client)
    }

    fn end_work(&mut self, keep: bool) -> Result<(), ReadError> {
        let end = if keep {
            "RELEASE ordo_work"
        } else {
            "ROLLBACK TO ordo_work; RELEASE ordo_work"
        };
        self.client.batch_execute(end)?;
        Ok(())
    }
}

impl Store for PostgresStore {
    fn pauses(&mut self) -> Result<Vec<crate::Pause>, ReadError> {
        let sql = crate::operator::pause_actions_sql();
        let rows = self.retrying(|store| store.client.query(&sql, &[]))?;
        let actions = rows
            .iter()
            .map(|row| {
                crate::operator::action_from_row(
                    row.get(0),
                    row.get(1),
                    row.get(2),
                    row.get(3),
                    row.get(4),
                    row.get(5),
                    row.get(6),
                    row.get(7),
                    row.get(8),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(crate::pauses_in_force(&actions))
    }

    fn last_action_id(&mut self) -> Result<u64, ReadError> {
        let row = self.retrying(|store| {
            store
                .client
                .query_one("SELECT COALESCE(MAX(id), 0) FROM operator_actions", &[])
        })?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    fn snapshot(&mut self, source: &str) -> Result<Snapshot, ReadError> {
        let mut snapshot = self.retrying(|store| store.snapshot_once(source))?;
        // Parked streams stay in the store (spilled): only their names and what they wait
        // for are read.
        snapshot.pending = self.pending_rows(&rows::unparked_pending_sql(), &[])?;
        let spilled = self.retrying(|store| store.client.query(rows::SPILLED_STREAMS_SQL, &[]))?;
        for row in spilled {
            let partition: Option<i64> = row.get(1);
            snapshot.spilled.push((
                row.get::<_, String>(0).into_boxed_str(),
                partition.and_then(|p| u32::try_from(p).ok()),
            ));
        }
        let waiters = self.retrying(|store| store.client.query(rows::SPILLED_WAITERS_SQL, &[]))?;
        for row in waiters {
            snapshot.spilled_waiters.push((
                row.get::<_, String>(0).into_boxed_str(),
                row.get::<_, i64>(1) as u64,
            ));
        }
        let floor: u64 = self
            .retrying(|store| meta(&mut store.client, "dedupe_floor"))?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let blocks = self.retrying(|store| {
            store.client.query(
                "SELECT first_sequence, hashes FROM dedupe_blocks ORDER BY first_sequence",
                &[],
            )
        })?;
        for row in blocks {
            let first: i64 = row.get(0);
            let hashes: Vec<u8> = row.get(1);
            rows::dedupe_block(first as u64, &hashes, floor, &mut snapshot.dedupe)?;
        }
        snapshot.counters = self.counters()?;
        self.counters_base = snapshot.counters;
        self.revisions.clear();
        Ok(snapshot)
    }

    fn documents(&mut self, streams: &[Arc<str>]) -> Result<Vec<Option<Document>>, ReadError> {
        let names: Vec<&str> = streams.iter().map(|s| &**s).collect();
        let found_rows = self.retrying(|store| {
            store.client.query(
                "SELECT stream, doc, deleted, revision FROM documents WHERE stream = ANY($1)",
                &[&names],
            )
        })?;
        let mut found: HashMap<String, (Option<Document>, i64)> = HashMap::new();
        for row in found_rows {
            let stream: String = row.get(0);
            let document = rows::document(&stream, row.get(1), row.get(2))?;
            found.insert(stream, (document, row.get(3)));
        }
        if self.revisions.len() > KNOWN_REVISIONS_MAX {
            // Only reached when a caller never forgets; an unknown revision later fails
            // safe (as a conflict), never as a blind overwrite.
            self.revisions.clear();
        }
        Ok(streams
            .iter()
            .map(|s| {
                let (document, revision) = found.remove(&**s).unwrap_or((None, 0));
                self.revisions.insert(s.clone(), revision);
                document
            })
            .collect())
    }

    fn commit(&mut self, source: &str, batch: CommitBatch) -> Result<(), CommitError> {
        let mut pause_ms = RECONNECT_PAUSE_MS_FIRST;
        let mut attempt = 0;
        loop {
            // Inside an open batch `write`'s own transaction nests: its COMMIT ends the
            // batch with the handler's writes, and a refusal's ROLLBACK undoes them too.
            // Either way the batch is over: committed, or rolled back by the dropped
            // transaction or with the connection.
            let written = self.write(source, &batch);
            let batch_was_open = std::mem::replace(&mut self.in_batch, false);
            match written {
                Ok(landed) => {
                    for (stream, revision) in landed.revisions {
                        self.revisions.insert(stream, revision);
                    }
                    self.counters_base = batch.changes.counters;
                    self.dead_letter_ids_next = self
                        .dead_letter_ids_next
                        .max(batch.changes.next_dead_letter_id);
                    return Ok(());
                }
                Err(WriteError::Conflict(detail)) => return Err(CommitError::Conflict(detail)),
                Err(WriteError::Fenced {
                    partition,
                    mine,
                    current,
                }) => {
                    return Err(CommitError::Fenced {
                        source: source.to_string(),
                        partition,
                        mine,
                        current,
                    })
                }
                Err(WriteError::Database(error)) if connection_lost(&error) => {
                    if batch_was_open {
                        self.in_batch = true; // so that `reconnect` refuses, and says why
                    }
                    attempt += 1;
                    self.reconnect(
                        &error,
                        attempt,
                        &mut pause_ms,
                        " during a commit (the batch is written whole or not at all)",
                    )
                    .map_err(CommitError::Unavailable)?;
                }
                Err(WriteError::Database(error)) => return Err(CommitError::Postgres(error)),
            }
        }
    }

    fn dead_letters(&mut self) -> Result<Vec<DeadLetter>, ReadError> {
        let found = self.retrying(|store| {
            store.client.query(
                "SELECT id, kind, stream, version, event_id, body, reason, partition, \"offset\", at_ms
                 FROM dead_letters ORDER BY id",
                &[],
            )
        })?;
        let mut entries = Vec::new();
        for row in found {
            let kind: String = row.get(1);
            let partition: Option<i64> = row.get(7);
            let offset: Option<i64> = row.get(8);
            entries.push(DeadLetter {
                id: row.get::<_, i64>(0) as u64,
                kind: DeadLetterKind::from_name(&kind)
                    .ok_or_else(|| corrupt(format!("dead letter kind `{kind}`")))?,
                stream: row.get::<_, Option<String>>(2).map(String::into_boxed_str),
                version: row.get::<_, Option<i64>>(3).map(|v| v as u64),
                event_id: row.get::<_, Option<String>>(4).map(String::into_boxed_str),
                body: row.get(5),
                reason: row.get(6),
                position: partition.zip(offset).map(|(p, o)| SourcePosition {
                    partition: p as u32,
                    offset: o as u64,
                }),
                at_ms: row.get::<_, i64>(9) as u64,
            });
        }
        Ok(entries)
    }

    fn export(&mut self) -> Result<Vec<ExportRow>, ReadError> {
        let found = self
            .retrying(|store| {
                store.client.query(
                    "SELECT s.stream, s.applied, s.alias_target, d.doc, COALESCE(d.deleted, FALSE)
                     FROM streams s LEFT JOIN documents d ON d.stream = s.stream
                     WHERE s.applied > 0 OR s.alias_target IS NOT NULL
                     ORDER BY s.stream COLLATE \"C\"",
                    &[],
                )
            })?
            .into_iter()
            .map(|row| rows::StreamRow {
                stream: row.get(0),
                version: row.get::<_, i64>(1) as u64,
                alias_target: row.get(2),
                doc: row.get(3),
                deleted: row.get(4),
            })
            .collect();
        rows::export_rows(found)
    }

    fn counters(&mut self) -> Result<Counters, ReadError> {
        let text = self.retrying(|store| meta(&mut store.client, "counters"))?;
        rows::counters(text)
    }

    fn claim(&mut self, source: &str, partitions: &[u32]) -> Result<(), ReadError> {
        let member = self.member.clone();
        // In partition order, as commits lock their claims: fewer deadlocks to break.
        let mut partitions = partitions.to_vec();
        partitions.sort_unstable();
        let claims = self.retrying(|store| {
            let mut transaction = store.client.transaction()?;
            let mut claims = Vec::with_capacity(partitions.len());
            for &partition in &partitions {
                let epoch: i64 = transaction
                    .query_one(
                        "INSERT INTO claims (source, partition, member, epoch) VALUES ($1, $2, $3, 1)
                         ON CONFLICT (source, partition) DO UPDATE
                         SET member = excluded.member, epoch = claims.epoch + 1
                         RETURNING epoch",
                        &[&source, &i64::from(partition), &member],
                    )?
                    .get(0);
                claims.push((partition, epoch));
            }
            transaction.commit()?;
            Ok(claims)
        })?;
        self.claims_source = source.to_string();
        self.claims = claims;
        Ok(())
    }

    fn release(&mut self, partitions: &[u32]) -> Result<(), ReadError> {
        // A partition taken for this member (by its group's heartbeat) but never claimed
        // here has no epoch of ours: it is released at whatever epoch it has.
        let released: Vec<(i64, i64)> = partitions
            .iter()
            .map(|&p| {
                let epoch = self
                    .claims
                    .iter()
                    .find(|(c, _)| *c == p)
                    .map_or(-1, |c| c.1);
                (i64::from(p), epoch)
            })
            .collect();
        self.claims.retain(|(p, _)| !partitions.contains(p));
        if self.claims_source.is_empty() || released.is_empty() {
            return Ok(());
        }
        // Marked released (not deleted: the epoch goes on), so that a member waiting for
        // one of them takes it at once rather than when this one's heartbeat ages; only
        // at the epoch this process claimed, so that an older incarnation under the same
        // name never releases what a newer one holds.
        let source = self.claims_source.clone();
        let member = self.member.clone();
        let (numbers, epochs): (Vec<i64>, Vec<i64>) = released.into_iter().unzip();
        self.retrying(|store| {
            store.client.execute(
                "UPDATE claims SET member = '' FROM unnest($3::BIGINT[], $4::BIGINT[]) AS r(partition, epoch)
                 WHERE claims.source = $1 AND claims.member = $2
                   AND claims.partition = r.partition AND (r.epoch < 0 OR claims.epoch = r.epoch)",
                &[&source, &member, &numbers, &epochs],
            )
        })?;
        Ok(())
    }

    fn forget_documents(&mut self) {
        self.revisions.clear();
    }

    fn load_pending(&mut self, load: &Load) -> Result<Loaded, ReadError> {
        match load {
            Load::Stream(stream) => {
                let name: &str = stream;
                Ok(Loaded {
                    records: self.pending_rows(
                        &format!(
                            "SELECT {} FROM pending WHERE stream = $1 ORDER BY version",
                            rows::PENDING_COLUMNS
                        ),
                        &[&name],
                    )?,
                    waiters_remaining_min: None,
                })
            }
            Load::Waiters { awaited, through } => {
                let name: &str = awaited;
                let through = *through as i64;
                let records = self.pending_rows(
                    &format!(
                        "SELECT {} FROM pending WHERE stream IN
                         (SELECT stream FROM pending WHERE awaits_stream = $1 AND awaits_version <= $2)
                         ORDER BY stream, version",
                        rows::PENDING_COLUMNS
                    ),
                    &[&name, &through],
                )?;
                let remaining: Option<i64> = self.retrying(|store| {
                    store
                        .client
                        .query_one(
                            "SELECT MIN(awaits_version) FROM pending
                             WHERE awaits_stream = $1 AND awaits_version > $2",
                            &[&name, &through],
                        )
                        .map(|row| row.get(0))
                })?;
                Ok(Loaded {
                    records,
                    waiters_remaining_min: remaining.map(|v| v as u64),
                })
            }
        }
    }

    fn stream_records(&mut self, streams: &[Arc<str>]) -> Result<Vec<StreamRecord>, ReadError> {
        let names: Vec<&str> = streams.iter().map(|s| &**s).collect();
        let found = self.retrying(|store| {
            store.client.query(
                "SELECT stream, applied, alias_target, alias_cut FROM streams WHERE stream = ANY($1)",
                &[&names],
            )
        })?;
        Ok(found.iter().map(stream_record).collect())
    }

    fn dead_letters_present(&mut self, ids: &[u64]) -> Result<Vec<u64>, ReadError> {
        let ids: Vec<i64> = ids.iter().map(|&id| id as i64).collect();
        let found = self.retrying(|store| {
            store
                .client
                .query("SELECT id FROM dead_letters WHERE id = ANY($1)", &[&ids])
        })?;
        Ok(found
            .iter()
            .map(|row| row.get::<_, i64>(0) as u64)
            .collect())
    }

    fn poll_progress(&mut self) -> bool {
        if self.listener.is_none() {
            let channel = self.channel();
            self.listener = connect(&self.url, self.schema.as_deref(), self.read_only)
                .and_then(|mut client| {
                    client.batch_execute(&format!("LISTEN {channel}"))?;
                    Ok(client)
                })
                .ok();
            // Whatever happened before listening is unknown: say "maybe".
            return true;
        }
        let listener = self.listener.as_mut().expect("set above");
        let mut notified = false;
        let mut lost = false;
        {
            let mut notifications = listener.notifications();
            // Not `iter()`: without a moment of waiting the client's runtime never reads
            // the socket, and nothing would ever arrive.
            let mut iter = notifications.timeout_iter(Duration::from_millis(NOTIFY_WAIT_MS));
            loop {
                match iter.next() {
                    Ok(Some(_)) => notified = true,
                    Ok(None) => break,
                    Err(_) => {
                        lost = true;
                        break;
                    }
                }
            }
        }
        if lost {
            // Listen again next time; the periodic re-check covers the gap.
            self.listener = None;
            return true;
        }
        notified
    }
}
