//! The final state of a run in the shape of `ordo export`: one row per stream.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{json, Value};

/// One stream's exported state.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// The stream's own last applied version.
    pub version: u64,
    /// The document; `None` when absent, deleted or merged away.
    pub doc: Option<Value>,
    /// Whether the document is a tombstone.
    pub deleted: bool,
    /// The final merge target after following aliases.
    pub merged_into: Option<String>,
}

/// Every stream's row, sorted by stream.
pub type Export = BTreeMap<String, Row>;

/// A store's export (`ordo export`'s rows) in the oracle's shape.
pub fn from_store(rows: Vec<ordo_store::ExportRow>) -> Export {
    rows.into_iter()
        .map(|row| {
            (
                row.stream,
                Row {
                    version: row.version,
                    doc: row.doc,
                    deleted: row.deleted,
                    merged_into: row.merged_into,
                },
            )
        })
        .collect()
}

impl Row {
    /// The row as the contract's JSON object.
    pub fn to_json(&self, stream: &str) -> Value {
        json!({
            "stream": stream,
            "version": self.version,
            "doc": self.doc.clone().unwrap_or(Value::Null),
            "deleted": self.deleted,
            "merged_into": self.merged_into,
        })
    }
}

/// How two exports differ, stream by stream.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Divergence {
    /// `(stream, expected, actual)` for each stream that differs.
    pub streams: Vec<(String, Option<Row>, Option<Row>)>,
}

impl Divergence {
    /// Whether the exports agree.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (stream, expected, actual) in &self.streams {
            let show = |row: &Option<Row>| {
                row.as_ref()
                    .map_or_else(|| "absent".to_string(), |r| r.to_json(stream).to_string())
            };
            writeln!(
                f,
                "  {stream}:\n    expected {}\n    actual   {}",
                show(expected),
                show(actual)
            )?;
        }
        Ok(())
    }
}

/// Compares two exports. With `versions` false, only documents and merge targets count
/// (the naive baseline keeps no versions).
pub fn compare(expected: &Export, actual: &Export, versions: bool) -> Divergence {
    let mut divergence = Divergence::default();
    let streams: std::collections::BTreeSet<&String> =
        expected.keys().chain(actual.keys()).collect();
    for stream in streams {
        let e = expected.get(stream);
        let a = actual.get(stream);
        let same = match (e, a) {
            (Some(e), Some(a)) => {
                e.doc == a.doc
                    && e.deleted == a.deleted
                    && e.merged_into == a.merged_into
                    && (!versions || e.version == a.version)
            }
            (None, None) => true,
            _ => false,
        };
        if !same {
            divergence
                .streams
                .push((stream.clone(), e.cloned(), a.cloned()));
        }
    }
    divergence
}

/// How many entities (streams) differ.
pub fn count_wrong(expected: &Export, actual: &Export, versions: bool) -> usize {
    compare(expected, actual, versions).streams.len()
}
