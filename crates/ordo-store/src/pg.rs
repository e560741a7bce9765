//! The PostgreSQL store (first cut: the same single-transaction guarantee as SQLite, with
//! batched writes through `UNNEST`).
//!
//! Client: the synchronous `postgres` crate. ordo's run loop is blocking code (SQLite and
//! the sources block, and a commit must finish before the next batch), so an async client
//! would only add a runtime hop per statement; `postgres` wraps tokio-postgres with its
//! own small runtime and gives the same protocol, types and TLS options.
//!
//! Not yet here (issue 6): LISTEN/NOTIFY release of parked events across processes, row
//! locks or version checks so two processes never apply to one document at once, epoch
//! fencing of zombie members, reconnect-and-retry, the lease for non-Kafka sources.

use std::collections::HashMap;
use std::sync::Arc;

use ordo_core::{Counters, DeadLetter, DeadLetterKind, Snapshot, SourcePosition, StreamRecord};
use ordo_projection::Document;
use postgres::{Client, NoTls};

use crate::error::{CommitError, OpenError, ReadError};
use crate::rows::{self, corrupt};
use crate::url::redact;
use crate::{CommitBatch, ExportRow, Store};

/// The schema this build writes (kept in step with the SQLite store's).
pub const POSTGRES_SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    stream TEXT PRIMARY KEY, doc TEXT, deleted BOOLEAN NOT NULL DEFAULT FALSE);
CREATE TABLE IF NOT EXISTS streams (
    stream TEXT PRIMARY KEY, applied BIGINT NOT NULL, alias_target TEXT, alias_cut BIGINT);
CREATE TABLE IF NOT EXISTS pending (
    stream TEXT NOT NULL, version BIGINT NOT NULL, state TEXT NOT NULL, event TEXT,
    PRIMARY KEY (stream, version));
CREATE TABLE IF NOT EXISTS dead_letters (
    id BIGINT PRIMARY KEY, kind TEXT NOT NULL, stream TEXT, version BIGINT, event_id TEXT,
    body TEXT NOT NULL, reason TEXT NOT NULL, partition BIGINT, \"offset\" BIGINT,
    at_ms BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS dedupe_blocks (
    first_sequence BIGINT PRIMARY KEY, last_sequence BIGINT NOT NULL, hashes BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (
    source TEXT NOT NULL, partition BIGINT NOT NULL, \"offset\" BIGINT NOT NULL,
    PRIMARY KEY (source, partition));
";

fn database(error: postgres::Error) -> String {
    // The client's messages never carry the password; the URL is redacted by callers.
    error.to_string()
}

impl From<postgres::Error> for ReadError {
    fn from(error: postgres::Error) -> Self {
        ReadError::Database(database(error))
    }
}

/// A PostgreSQL-backed [`Store`].
pub struct PostgresStore {
    client: Client,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PostgresStore")
    }
}

impl PostgresStore {
    /// Connects to `url` (`postgres://…`, optionally `?schema=NAME` to keep ordo's tables
    /// in their own schema, created when missing) and migrates.
    pub fn open(url: &str) -> Result<Self, OpenError> {
        let (url, schema) = split_schema(url);
        let mut client = Client::connect(&url, NoTls).map_err(|e| {
            OpenError::Database(format!(
                "cannot connect to {}: {}",
                redact(&url),
                database(e)
            ))
        })?;
        if let Some(schema) = &schema {
            if !schema
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(OpenError::BadUrl(format!(
                    "schema `{schema}` must be [A-Za-z0-9_]"
                )));
            }
            client
                .batch_execute(&format!(
                    "CREATE SCHEMA IF NOT EXISTS {schema}; SET search_path TO {schema}"
                ))
                .map_err(|e| OpenError::Database(database(e)))?;
        }
        let mut transaction = client
            .transaction()
            .map_err(|e| OpenError::Database(database(e)))?;
        // One migrator at a time across processes.
        transaction
            .batch_execute("SELECT pg_advisory_xact_lock(7102003)")
            .map_err(|e| OpenError::Database(database(e)))?;
        transaction
            .batch_execute(SCHEMA)
            .map_err(|e| OpenError::Database(database(e)))?;
        let found: Option<String> = transaction
            .query_opt("SELECT value FROM meta WHERE key = 'schema_version'", &[])
            .map_err(|e| OpenError::Database(database(e)))?
            .map(|row| row.get(0));
        if let Some(found) = found.and_then(|v| v.parse::<i64>().ok()) {
            if found > POSTGRES_SCHEMA_VERSION {
                return Err(OpenError::NewerSchema {
                    found,
                    supported: POSTGRES_SCHEMA_VERSION,
                });
            }
        }
        transaction
            .execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', $1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&POSTGRES_SCHEMA_VERSION.to_string()],
            )
            .map_err(|e| OpenError::Database(database(e)))?;
        transaction
            .commit()
            .map_err(|e| OpenError::Database(database(e)))?;
        Ok(PostgresStore { client })
    }

    /// Writes a free-form setting (the run's engine configuration, for operator verbs).
    pub fn set_setting(&mut self, key: &str, value: &str) -> Result<(), ReadError> {
        self.client.execute(
            "INSERT INTO meta (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&format!("setting:{key}"), &value],
        )?;
        Ok(())
    }

    /// Reads a setting written by [`Self::set_setting`].
    pub fn setting(&mut self, key: &str) -> Result<Option<String>, ReadError> {
        self.meta(&format!("setting:{key}"))
    }

    fn meta(&mut self, key: &str) -> Result<Option<String>, ReadError> {
        Ok(self
            .client
            .query_opt("SELECT value FROM meta WHERE key = $1", &[&key])?
            .map(|row| row.get(0)))
    }

    fn write(&mut self, source: &str, batch: &CommitBatch) -> Result<(), postgres::Error> {
        let changes = &batch.changes;
        let mut transaction = self.client.transaction()?;
        let mut streams = Vec::new();
        let mut docs: Vec<Option<String>> = Vec::new();
        let mut deleted = Vec::new();
        for (stream, document) in &batch.documents {
            streams.push(stream.to_string());
            match document {
                Some(Document::Live(value)) => {
                    docs.push(Some(value.to_string()));
                    deleted.push(false);
                }
                Some(Document::Deleted) => {
                    docs.push(None);
                    deleted.push(true);
                }
                None => {
                    docs.push(None);
                    deleted.push(false);
                }
            }
        }
        if !streams.is_empty() {
            transaction.execute(
                "INSERT INTO documents (stream, doc, deleted)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::bool[])
                 ON CONFLICT (stream) DO UPDATE SET doc = excluded.doc, deleted = excluded.deleted",
                &[&streams, &docs, &deleted],
            )?;
        }
        if !changes.streams.is_empty() {
            let names: Vec<String> = changes
                .streams
                .iter()
                .map(|r| r.stream.to_string())
                .collect();
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
            transaction.execute(
                "INSERT INTO streams (stream, applied, alias_target, alias_cut)
                 SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::bigint[])
                 ON CONFLICT (stream) DO UPDATE SET applied = excluded.applied,
                 alias_target = excluded.alias_target, alias_cut = excluded.alias_cut",
                &[&names, &applied, &targets, &cuts],
            )?;
        }
        if !changes.pending_delete.is_empty() {
            let names: Vec<String> = changes
                .pending_delete
                .iter()
                .map(|(s, _)| s.to_string())
                .collect();
            let versions: Vec<i64> = changes
                .pending_delete
                .iter()
                .map(|(_, v)| *v as i64)
                .collect();
            transaction.execute(
                "DELETE FROM pending p USING UNNEST($1::text[], $2::bigint[]) AS d(stream, version)
                 WHERE p.stream = d.stream AND p.version = d.version",
                &[&names, &versions],
            )?;
        }
        if !changes.pending_put.is_empty() {
            let names: Vec<String> = changes
                .pending_put
                .iter()
                .map(|r| r.stream.to_string())
                .collect();
            let versions: Vec<i64> = changes
                .pending_put
                .iter()
                .map(|r| r.version as i64)
                .collect();
            let states: Vec<&str> = changes
                .pending_put
                .iter()
                .map(|r| rows::pending_state_name(r.state))
                .collect();
            let events: Vec<Option<String>> = changes
                .pending_put
                .iter()
                .map(|r| r.event.as_ref().map(|e| e.to_json_string()))
                .collect();
            transaction.execute(
                "INSERT INTO pending (stream, version, state, event)
                 SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[])
                 ON CONFLICT (stream, version) DO UPDATE SET state = excluded.state, event = excluded.event",
                &[&names, &versions, &states, &events],
            )?;
        }
        for id in &changes.dead_letters_delete {
            transaction.execute("DELETE FROM dead_letters WHERE id = $1", &[&(*id as i64)])?;
        }
        for entry in &changes.dead_letters_put {
            transaction.execute(
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
        if let (Some(first), Some(last)) = (changes.dedupe_put.first(), changes.dedupe_put.last()) {
            let mut hashes = Vec::with_capacity(changes.dedupe_put.len() * 8);
            for (_, hash) in &changes.dedupe_put {
                hashes.extend_from_slice(&hash.to_le_bytes());
            }
            transaction.execute(
                "INSERT INTO dedupe_blocks (first_sequence, last_sequence, hashes) VALUES ($1, $2, $3)
                 ON CONFLICT (first_sequence) DO UPDATE SET last_sequence = excluded.last_sequence,
                 hashes = excluded.hashes",
                &[&(first.0 as i64), &(last.0 as i64), &hashes],
            )?;
        }
        transaction.execute(
            "DELETE FROM dedupe_blocks WHERE last_sequence < $1",
            &[&(changes.dedupe_floor as i64)],
        )?;
        for (partition, offset) in &changes.checkpoints {
            transaction.execute(
                "INSERT INTO checkpoints (source, partition, \"offset\") VALUES ($1, $2, $3)
                 ON CONFLICT (source, partition) DO UPDATE SET \"offset\" = excluded.\"offset\"",
                &[&source, &i64::from(*partition), &(*offset as i64)],
            )?;
        }
        for (key, value) in [
            ("counters", changes.counters.to_json().to_string()),
            (
                "next_dead_letter_id",
                changes.next_dead_letter_id.to_string(),
            ),
            ("dedupe_floor", changes.dedupe_floor.to_string()),
        ] {
            transaction.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&key, &value],
            )?;
        }
        transaction.commit()
    }
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

impl Store for PostgresStore {
    fn snapshot(&mut self, source: &str) -> Result<Snapshot, ReadError> {
        let mut snapshot = Snapshot::default();
        for row in self.client.query(
            "SELECT stream, applied, alias_target, alias_cut FROM streams",
            &[],
        )? {
            let target: Option<String> = row.get(2);
            let cut: Option<i64> = row.get(3);
            snapshot.streams.push(StreamRecord {
                stream: Arc::from(row.get::<_, String>(0)),
                applied: row.get::<_, i64>(1) as u64,
                alias: target.zip(cut).map(|(t, c)| (Arc::from(t), c as u64)),
            });
        }
        for row in self.client.query(
            "SELECT stream, version, state, event FROM pending ORDER BY stream, version",
            &[],
        )? {
            let state: String = row.get(2);
            snapshot.pending.push(rows::pending_record(
                row.get(0),
                row.get::<_, i64>(1) as u64,
                &state,
                row.get(3),
            )?);
        }
        for row in self.client.query(
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
        let floor: u64 = self
            .meta("dedupe_floor")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        for row in self.client.query(
            "SELECT first_sequence, hashes FROM dedupe_blocks ORDER BY first_sequence",
            &[],
        )? {
            let first: i64 = row.get(0);
            let hashes: Vec<u8> = row.get(1);
            rows::dedupe_block(first as u64, &hashes, floor, &mut snapshot.dedupe)?;
        }
        for row in self.client.query(
            "SELECT partition, \"offset\" FROM checkpoints WHERE source = $1",
            &[&source],
        )? {
            snapshot
                .checkpoints
                .push((row.get::<_, i64>(0) as u32, row.get::<_, i64>(1) as u64));
        }
        snapshot.counters = self.counters()?;
        snapshot.next_dead_letter_id = self
            .meta("next_dead_letter_id")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        Ok(snapshot)
    }

    fn documents(&mut self, streams: &[Arc<str>]) -> Result<Vec<Option<Document>>, ReadError> {
        let names: Vec<&str> = streams.iter().map(|s| &**s).collect();
        let mut found: HashMap<String, Option<Document>> = HashMap::new();
        for row in self.client.query(
            "SELECT stream, doc, deleted FROM documents WHERE stream = ANY($1)",
            &[&names],
        )? {
            let stream: String = row.get(0);
            let document = rows::document(&stream, row.get(1), row.get(2))?;
            found.insert(stream, document);
        }
        Ok(streams
            .iter()
            .map(|s| found.remove(&**s).flatten())
            .collect())
    }

    fn commit(&mut self, source: &str, batch: CommitBatch) -> Result<(), CommitError> {
        self.write(source, &batch)
            .map_err(|e| CommitError::Database(database(e)))
    }

    fn dead_letters(&mut self) -> Result<Vec<DeadLetter>, ReadError> {
        let mut entries = Vec::new();
        for row in self.client.query(
            "SELECT id, kind, stream, version, event_id, body, reason, partition, \"offset\", at_ms
             FROM dead_letters ORDER BY id",
            &[],
        )? {
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
            .client
            .query(
                "SELECT s.stream, s.applied, s.alias_target, d.doc, COALESCE(d.deleted, FALSE)
                 FROM streams s LEFT JOIN documents d ON d.stream = s.stream
                 WHERE s.applied > 0 OR s.alias_target IS NOT NULL
                 ORDER BY s.stream COLLATE \"C\"",
                &[],
            )?
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
        rows::counters(self.meta("counters")?)
    }
}
