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
    let projection = DocumentProjection;
    let mut versions: BTreeMap<String, u64> = BTreeMap::new();
    let mut documents: HashMap<String, Option<Document>> = HashMap::new();
    let mut aliases: HashMap<String, String> = HashMap::new();
    let mut blocked: HashSet<String> = HashSet::new();
    let resolve = |aliases: &HashMap<String, String>, stream: &str| {
        let mut current = stream.to_string();
        while let Some(next) = aliases.get(&current) {
            current = next.clone();
        }
        current
    };
    for event in history {
        let stream = event.stream.to_string();
        let applied = versions.get(&stream).copied().unwrap_or(0);
        if blocked.contains(&stream) || event.version != applied + 1 {
            blocked.insert(stream);
            continue;
        }
        if skipped.contains(&event.id) {
            versions.insert(stream, event.version);
            continue;
        }
        let deps_met = event
            .after
            .iter()
            .all(|d| versions.get(&*d.stream).copied().unwrap_or(0) >= d.version);
        if !deps_met {
            blocked.insert(stream);
            continue;
        }
        let target = resolve(&aliases, &stream);
        let ok = match &event.op {
            Op::Merge { from } => {
                let valid = from.iter().all(|source| {
                    event.cut_for(source).is_some()
                        && !aliases.contains_key(&**source)
                        && **source != *target
                });
                if valid {
                    let mut folded = documents.get(&target).cloned().flatten();
                    let mut ok = true;
                    for source in from {
                        let source_doc = documents.get(&**source).cloned().flatten();
                        if projection.fold(&mut folded, source_doc).is_err() {
                            ok = false;
                            break;
                        }
                    }
                    if ok {
                        documents.insert(target.clone(), folded);
                        for source in from {
                            documents.insert(source.to_string(), None);
                            aliases.insert(source.to_string(), stream.clone());
                        }
                    }
                    ok
                } else {
                    false
                }
            }
            _ => {
                let document = documents.entry(target).or_insert(None);
                projection.apply(document, event).is_ok()
            }
        };
        if ok {
            versions.insert(stream, event.version);
        } else {
            blocked.insert(stream);
        }
    }
    let mut export = Export::new();
    for (stream, version) in versions {
        let target = resolve(&aliases, &stream);
        let merged_into = (target != stream).then_some(target);
        export.insert(
            stream.clone(),
            row(version, merged_into, documents.get(&stream)),
        );
    }
    export
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
