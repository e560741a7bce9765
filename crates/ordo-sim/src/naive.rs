//! The naive consumer: applies every delivery in arrival order, with no version guard, no
//! dedupe, no gap buffer and no dependency wait. It is the baseline that shows what the
//! disorder would have done, and the proof that the convergence checks can fail.

use std::collections::{BTreeMap, HashMap};

use ordo_core::{Event, Op};
use ordo_projection::{Document, DocumentProjection, Projection};

use crate::export::Export;
use crate::oracle::row;

/// Applies `deliveries` in order and returns every stream's final state.
pub fn run(deliveries: &[Event]) -> Export {
    let projection = DocumentProjection;
    let mut versions: BTreeMap<String, u64> = BTreeMap::new();
    let mut documents: HashMap<String, Option<Document>> = HashMap::new();
    let mut aliases: HashMap<String, String> = HashMap::new();
    for event in deliveries {
        let stream = event.stream.to_string();
        let mut target = stream.clone();
        while let Some(next) = aliases.get(&target) {
            if *next == stream {
                break;
            }
            target = next.clone();
        }
        match &event.op {
            Op::Merge { from } => {
                for source in from {
                    if **source == *target || aliases.contains_key(&**source) {
                        continue;
                    }
                    let source_doc = documents.get(&**source).cloned().flatten();
                    let document = documents.entry(target.clone()).or_insert(None);
                    let _ = projection.fold(document, source_doc);
                    documents.insert(source.to_string(), None);
                    aliases.insert(source.to_string(), stream.clone());
                }
            }
            _ => {
                let document = documents.entry(target).or_insert(None);
                // A refused event is simply lost: that is what naive consumers do.
                let _ = projection.apply(document, event);
            }
        }
        versions.insert(stream, event.version);
    }
    let mut export = Export::new();
    for (stream, version) in versions {
        let mut target = stream.clone();
        let mut hops = 0;
        while let Some(next) = aliases.get(&target) {
            target = next.clone();
            hops += 1;
            if hops > aliases.len() {
                break;
            }
        }
        let merged_into = (target != stream).then_some(target);
        export.insert(
            stream.clone(),
            row(version, merged_into, documents.get(&stream)),
        );
    }
    export
}
