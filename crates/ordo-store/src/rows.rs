//! Decoding shared by every store: what a row holds means the same in SQLite and in
//! PostgreSQL, so it is turned into ordo's types in one place.

use std::collections::HashMap;

use ordo_core::{parse_event, Counters, OpPolicy, PendingRecord, PendingState};
use ordo_projection::Document;
use serde_json::Value;

use crate::error::ReadError;
use crate::ExportRow;

pub(crate) fn corrupt(what: impl Into<String>) -> ReadError {
    ReadError::Corrupt(what.into())
}

/// A pending row's state as stored.
pub(crate) fn pending_state_name(state: PendingState) -> &'static str {
    match state {
        PendingState::Buffered => "buffered",
        PendingState::Parked => "parked",
        PendingState::Skipped => "skipped",
    }
}

/// The columns every pending-row query selects, in [`pending_record`]'s order.
pub(crate) const PENDING_COLUMNS: &str =
    "stream, version, state, event, partition, awaits_stream, awaits_version";

/// A snapshot's waiting events: the rows of every stream whose head is not parked
/// (parked streams stay in the store, spilled). The same text for both databases.
pub(crate) fn unparked_pending_sql() -> String {
    format!(
        "SELECT {PENDING_COLUMNS} FROM pending WHERE stream NOT IN
         (SELECT stream FROM pending WHERE awaits_stream IS NOT NULL)
         ORDER BY stream, version"
    )
}

/// A snapshot's spilled streams, with the partition they were read from.
pub(crate) const SPILLED_STREAMS_SQL: &str =
    "SELECT stream, MIN(partition) FROM pending WHERE awaits_stream IS NOT NULL
     GROUP BY stream";

/// For each stream spilled streams wait for, the lowest version any of them needs.
pub(crate) const SPILLED_WAITERS_SQL: &str =
    "SELECT awaits_stream, MIN(awaits_version) FROM pending
     WHERE awaits_stream IS NOT NULL GROUP BY awaits_stream";

/// A pending row back into a record.
pub(crate) fn pending_record(
    stream: String,
    version: u64,
    state: &str,
    event: Option<String>,
    partition: Option<i64>,
    awaits: (Option<String>, Option<i64>),
) -> Result<PendingRecord, ReadError> {
    let state = match state {
        "buffered" => PendingState::Buffered,
        "parked" => PendingState::Parked,
        "skipped" => PendingState::Skipped,
        other => return Err(corrupt(format!("pending state `{other}`"))),
    };
    let event = match event {
        Some(text) => Some(
            parse_event(text.as_bytes(), OpPolicy::Custom)
                .map_err(|e| corrupt(format!("pending event of `{stream}`: {e}")))?,
        ),
        None => None,
    };
    Ok(PendingRecord {
        stream: stream.into(),
        version,
        state,
        event,
        partition: partition.and_then(|p| u32::try_from(p).ok()),
        awaits: match awaits {
            (Some(stream), Some(version)) => Some((stream.into_boxed_str(), version as u64)),
            _ => None,
        },
    })
}

/// One dedupe block (consecutive sequences from `first`, 8 bytes per hash) into
/// `(sequence, hash)` pairs, dropping those below `floor`.
pub(crate) fn dedupe_block(
    first: u64,
    hashes: &[u8],
    floor: u64,
    out: &mut Vec<(u64, u64)>,
) -> Result<(), ReadError> {
    if !hashes.len().is_multiple_of(8) {
        return Err(corrupt("dedupe block length"));
    }
    for (index, chunk) in hashes.chunks_exact(8).enumerate() {
        let sequence = first + index as u64;
        if sequence >= floor {
            out.push((
                sequence,
                u64::from_le_bytes(chunk.try_into().expect("8 bytes")),
            ));
        }
    }
    Ok(())
}

/// A document row: live JSON, a tombstone, or nothing.
pub(crate) fn document(
    stream: &str,
    doc: Option<String>,
    deleted: bool,
) -> Result<Option<Document>, ReadError> {
    Ok(match (doc, deleted) {
        (Some(text), _) => Some(Document::Live(
            serde_json::from_str(&text)
                .map_err(|e| corrupt(format!("document of `{stream}`: {e}")))?,
        )),
        (None, true) => Some(Document::Deleted),
        (None, false) => None,
    })
}

/// One stream as the export query reads it.
pub(crate) struct StreamRow {
    pub stream: String,
    pub version: u64,
    pub alias_target: Option<String>,
    pub doc: Option<String>,
    pub deleted: bool,
}

/// Export rows, sorted as given, with aliases followed to their final target.
pub(crate) fn export_rows(rows: Vec<StreamRow>) -> Result<Vec<ExportRow>, ReadError> {
    let aliases: HashMap<&str, &str> = rows
        .iter()
        .filter_map(|r| r.alias_target.as_deref().map(|t| (r.stream.as_str(), t)))
        .collect();
    let resolve = |stream: &str| {
        let mut current = stream;
        // Merges refuse cycles; the bound only guards a damaged store.
        for _ in 0..=aliases.len() {
            match aliases.get(current) {
                Some(next) => current = next,
                None => break,
            }
        }
        current.to_string()
    };
    let resolved: Vec<String> = rows.iter().map(|r| resolve(&r.stream)).collect();
    rows.into_iter()
        .zip(resolved)
        .map(|(row, target)| {
            let merged_into = (target != row.stream).then_some(target);
            let doc = match (&merged_into, row.doc) {
                (None, Some(text)) => Some(
                    serde_json::from_str::<Value>(&text)
                        .map_err(|e| corrupt(format!("document of `{}`: {e}", row.stream)))?,
                ),
                _ => None,
            };
            Ok(ExportRow {
                deleted: row.deleted && merged_into.is_none(),
                stream: row.stream,
                version: row.version,
                doc,
                merged_into,
            })
        })
        .collect()
}

/// The counters as stored in `meta` (absent: all zero).
pub(crate) fn counters(text: Option<String>) -> Result<Counters, ReadError> {
    let Some(text) = text else {
        return Ok(Counters::default());
    };
    let value: Value =
        serde_json::from_str(&text).map_err(|e| corrupt(format!("counters: {e}")))?;
    let object = value
        .as_object()
        .ok_or_else(|| corrupt("counters are not an object"))?;
    Ok(Counters::from_fields(
        object
            .iter()
            .filter_map(|(k, v)| v.as_u64().map(|v| (k.as_str(), v))),
    ))
}
