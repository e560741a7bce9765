//! The in-order, exactly-once consumer: the definition of the right answer.
//!
//! It applies a history in an order that respects every stream's versions and every
//! `after` (the order the history was written in), each event once, with the same
//! projection, and no buffering, deduplication or waiting machinery at all. It shares no
//! code with the engine, so agreement between the two means something.

use std::collections::{BTreeMap, HashMap, HashSet};

use ordo_core::{Event, Op};
use ordo_projection::{Document, DocumentProjection, Projection};

use crate::export::{Export, Row};

/// Runs `history` in order and returns every stream's final state.
///
/// An event the projection refuses blocks its stream from there on (as a sequenced
/// dead letter does), and so does anything that depends on a blocked version.
pub fn run(history: &[Event]) -> Export {
    run_skipping(history, &HashSet::new())
}

/// [`run`], with the events whose ids are in `skipped` passed over by an operator: the
/// stream's version moves past them, and nothing else happens (no `after` is waited for,
/// no document changes).
pub fn run_skipping(history: &[Event], skipped: &HashSet<Box<str>>) -> Export {
    let mut oracle = InOrder::default();
    for event in history {
        let stream = event.stream.to_string();
        let applied = oracle.versions.get(&stream).copied().unwrap_or(0);
        if oracle.blocked.contains(&stream) || event.version != applied + 1 {
            oracle.blocked.insert(stream);
            continue;
        }
        if skipped.contains(&event.id) {
            oracle.versions.insert(stream, event.version);
            continue;
        }
        let deps_met = event
            .after
            .iter()
            .all(|d| oracle.versions.get(&*d.stream).copied().unwrap_or(0) >= d.version);
        if !deps_met {
            oracle.blocked.insert(stream);
            continue;
        }
        let target = oracle.resolve(&stream);
        let ok = match &event.op {
            Op::Merge { from } => oracle.merge(event, &stream, &target, from),
            _ => {
                let document = oracle.documents.entry(target).or_insert(None);
                DocumentProjection.apply(document, event).is_ok()
            }
        };
        if ok {
            oracle.versions.insert(stream, event.version);
        } else {
            oracle.blocked.insert(stream);
        }
    }
    oracle.export()
}

/// The in-order consumer's state: each stream's version, the documents, the aliases of
/// streams merged away, and the streams stopped for good (a gap, a refused event).
#[derive(Default)]
struct InOrder {
    versions: BTreeMap<String, u64>,
    documents: HashMap<String, Option<Document>>,
    aliases: HashMap<String, String>,
    blocked: HashSet<String>,
}

impl InOrder {
    /// Where `stream`'s events go: the end of its alias chain.
    fn resolve(&self, stream: &str) -> String {
        let mut current = stream.to_string();
        while let Some(next) = self.aliases.get(&current) {
            current = next.clone();
        }
        current
    }

    /// Folds `from` into `target` (the document of `stream`, the merge's own stream).
    /// False when the merge is refused: a source without a cut, merged away already, or
    /// the target itself, or a fold the projection refuses.
    fn merge(&mut self, event: &Event, stream: &str, target: &str, from: &[Box<str>]) -> bool {
        let valid = from.iter().all(|source| {
            event.cut_for(source).is_some()
                && !self.aliases.contains_key(&**source)
                && **source != *target
        });
        if !valid {
            return false;
        }
        let mut folded = self.documents.get(target).cloned().flatten();
        for source in from {
            let source_doc = self.documents.get(&**source).cloned().flatten();
            if DocumentProjection.fold(&mut folded, source_doc).is_err() {
                return false;
            }
        }
        self.documents.insert(target.to_string(), folded);
        for source in from {
            self.documents.insert(source.to_string(), None);
            self.aliases.insert(source.to_string(), stream.to_string());
        }
        true
    }

    fn export(&self) -> Export {
        let mut export = Export::new();
        for (stream, version) in &self.versions {
            let target = self.resolve(stream);
            let merged_into = (target != *stream).then_some(target);
            export.insert(
                stream.clone(),
                row(*version, merged_into, self.documents.get(stream)),
            );
        }
        export
    }
}

/// Builds an export row from a document.
pub fn row(version: u64, merged_into: Option<String>, document: Option<&Option<Document>>) -> Row {
    if merged_into.is_some() {
        return Row {
            version,
            doc: None,
            deleted: false,
            merged_into,
        };
    }
    match document {
        Some(Some(Document::Live(value))) => Row {
            version,
            doc: Some(value.clone()),
            deleted: false,
            merged_into: None,
        },
        Some(Some(Document::Deleted)) => Row {
            version,
            doc: None,
            deleted: true,
            merged_into: None,
        },
        _ => Row {
            version,
            doc: None,
            deleted: false,
            merged_into: None,
        },
    }
}
