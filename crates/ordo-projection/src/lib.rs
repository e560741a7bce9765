//! Projections turn events into per-stream state.
//!
//! [`Projection`] is the trait Rust users implement; [`DocumentProjection`] is the
//! built-in one with DESIGN.md's semantics (`set`, `patch`, `incr`, `delete`, `merge`).
//! The ordering core never calls a projection: a runtime (or the simulator) takes a
//! [`ordo_core::Work`] from the core, runs the projection on it, and reports the outcome.

use std::fmt;

use ordo_core::{Action, Event, Op, Outcome, Work};
use serde_json::{Map, Number, Value};

/// Why a projection refused an event. The event is dead-lettered with this reason and
/// its stream waits behind it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// For the operator.
    pub reason: String,
}

impl Rejection {
    /// A rejection with this reason.
    pub fn new(reason: impl Into<String>) -> Self {
        Rejection {
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for Rejection {}

/// Per-stream state built from events.
///
/// Both methods must leave `document` unchanged when they return an error, so that a
/// rejected event has no effect at all.
pub trait Projection {
    /// One stream's state. `None` is "no state yet".
    type Document: Clone;

    /// Applies one event to its document.
    fn apply(&self, document: &mut Option<Self::Document>, event: &Event) -> Result<(), Rejection>;

    /// Folds a merge source's state into the target's; the source is consumed.
    fn fold(
        &self,
        target: &mut Option<Self::Document>,
        source: Option<Self::Document>,
    ) -> Result<(), Rejection>;
}

/// Access to the documents a [`Work`] touches, however they are held (a map, a cache in
/// front of a store). Every slot asked for must be present (loaded beforehand).
pub trait DocumentSlots<D> {
    /// The document of `stream`, for reading and writing.
    fn slot(&mut self, stream: &str) -> &mut Option<D>;
}

impl<D> DocumentSlots<D> for std::collections::HashMap<std::sync::Arc<str>, Option<D>> {
    fn slot(&mut self, stream: &str) -> &mut Option<D> {
        if !self.contains_key(stream) {
            self.insert(std::sync::Arc::from(stream), None);
        }
        self.get_mut(stream).expect("inserted above")
    }
}

/// Runs one [`Work`] through a projection: applies the event, or folds a merge's sources
/// into the target and clears them. Nothing changes when the outcome is a rejection.
pub fn run_work<P: Projection>(
    projection: &P,
    work: &Work,
    documents: &mut impl DocumentSlots<P::Document>,
) -> Outcome {
    let result = match &work.action {
        Action::Apply => projection.apply(documents.slot(work.document()), &work.event),
        Action::Merge { sources } => {
            let mut folded = documents.slot(work.document()).clone();
            let mut result = Ok(());
            for source in sources {
                let source_document = documents.slot(source).clone();
                result = projection.fold(&mut folded, source_document);
                if result.is_err() {
                    break;
                }
            }
            if result.is_ok() {
                *documents.slot(work.document()) = folded;
                for source in sources {
                    *documents.slot(source) = None;
                }
            }
            result
        }
    };
    match result {
        Ok(()) => Outcome::Applied,
        Err(rejection) => Outcome::Rejected {
            reason: rejection.reason,
        },
    }
}

/// The documents a [`Work`] writes when applied: its document and a merge's sources.
pub fn touched(work: &Work) -> Vec<&str> {
    let mut streams = vec![work.document()];
    if let Action::Merge { sources } = &work.action {
        streams.extend(sources.iter().map(|s| &**s));
    }
    streams
}

/// One stream's state under the document projection.
#[derive(Clone, Debug, PartialEq)]
pub enum Document {
    /// A live JSON document (always an object).
    Live(Value),
    /// Deleted: a tombstone. The stream's version is kept by the core, so a stale
    /// re-create stays rejected.
    Deleted,
}

impl Document {
    /// The live value, if any.
    pub fn value(&self) -> Option<&Value> {
        match self {
            Document::Live(value) => Some(value),
            Document::Deleted => None,
        }
    }
}

/// The built-in document projection (DESIGN.md, "Built-in document projection").
#[derive(Clone, Copy, Debug, Default)]
pub struct DocumentProjection;

impl Projection for DocumentProjection {
    type Document = Document;

    fn apply(&self, document: &mut Option<Document>, event: &Event) -> Result<(), Rejection> {
        match &event.op {
            Op::Set => {
                let object = expect_object(&event.data, "set")?;
                *document = Some(Document::Live(Value::Object(object.clone())));
            }
            Op::Patch => {
                expect_object(&event.data, "patch")?;
                let mut value = match document.take() {
                    Some(Document::Live(value)) => value,
                    _ => Value::Object(Map::new()),
                };
                merge_patch(&mut value, &event.data);
                *document = Some(Document::Live(value));
            }
            Op::Incr => {
                let increments = expect_object(&event.data, "incr")?;
                let current = match document {
                    Some(Document::Live(Value::Object(object))) => Some(&*object),
                    _ => None,
                };
                // Check every field before touching any, so a refusal changes nothing.
                let mut sums = Vec::with_capacity(increments.len());
                for (field, amount) in increments {
                    let amount = amount.as_i64().ok_or_else(|| {
                        Rejection::new(format!(
                            "incr: `{field}` must be an integer amount, got {amount}"
                        ))
                    })?;
                    let base = match current.and_then(|object| object.get(field)) {
                        None => 0,
                        Some(value) => value.as_i64().ok_or_else(|| {
                            Rejection::new(format!(
                                "incr: field `{field}` holds {value}, not an integer"
                            ))
                        })?,
                    };
                    let sum = base.checked_add(amount).ok_or_else(|| {
                        Rejection::new(format!(
                            "incr: `{field}` would overflow ({base} + {amount})"
                        ))
                    })?;
                    sums.push((field.clone(), sum));
                }
                let mut object = match document.take() {
                    Some(Document::Live(Value::Object(object))) => object,
                    _ => Map::new(),
                };
                for (field, sum) in sums {
                    object.insert(field, Value::from(sum));
                }
                *document = Some(Document::Live(Value::Object(object)));
            }
            Op::Delete => *document = Some(Document::Deleted),
            Op::Merge { .. } => {
                return Err(Rejection::new(
                    "merge events are folded by the runtime, not applied (a bug if seen)",
                ))
            }
            Op::Custom(name) => {
                return Err(Rejection::new(format!(
                    "the document projection has no op `{name}`"
                )))
            }
        }
        Ok(())
    }

    fn fold(
        &self,
        target: &mut Option<Document>,
        source: Option<Document>,
    ) -> Result<(), Rejection> {
        let Some(Document::Live(source)) = source else {
            return Ok(());
        };
        match target {
            Some(Document::Live(value)) => {
                let mut folded = value.clone();
                fold_value(&mut folded, source)?;
                *value = folded;
            }
            _ => *target = Some(Document::Live(source)),
        }
        Ok(())
    }
}

fn expect_object<'a>(data: &'a Value, op: &str) -> Result<&'a Map<String, Value>, Rejection> {
    data.as_object()
        .ok_or_else(|| Rejection::new(format!("{op}: `data` must be an object, got {data}")))
}

/// RFC 7396 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(object) = target else {
        unreachable!("made an object above");
    };
    for (key, value) in patch {
        if value.is_null() {
            object.remove(key);
        } else {
            merge_patch(object.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// Folds `source` into `target`: numbers add, objects merge key by key, arrays
/// concatenate, any other value keeps the target's.
pub fn fold_value(target: &mut Value, source: Value) -> Result<(), Rejection> {
    match (target, source) {
        (Value::Number(a), Value::Number(b)) => *a = add_numbers(a, &b)?,
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in b {
                match a.get_mut(&key) {
                    Some(existing) => fold_value(existing, value)?,
                    None => {
                        a.insert(key, value);
                    }
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => a.extend(b),
        _ => {}
    }
    Ok(())
}

fn add_numbers(a: &Number, b: &Number) -> Result<Number, Rejection> {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return x
            .checked_add(y)
            .map(Number::from)
            .ok_or_else(|| Rejection::new(format!("merge: {x} + {y} overflows")));
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return x
            .checked_add(y)
            .map(Number::from)
            .ok_or_else(|| Rejection::new(format!("merge: {x} + {y} overflows")));
    }
    let sum = a.as_f64().unwrap_or(0.0) + b.as_f64().unwrap_or(0.0);
    Number::from_f64(sum).ok_or_else(|| Rejection::new(format!("merge: {a} + {b} is not finite")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ordo_core::{parse_event, OpPolicy};
    use serde_json::json;

    fn event(op: &str, data: Value) -> Event {
        let text =
            json!({"id": "e", "stream": "s", "version": 1, "type": "T", "op": op, "data": data});
        parse_event(text.to_string().as_bytes(), OpPolicy::Document).unwrap()
    }

    fn apply(document: &mut Option<Document>, op: &str, data: Value) -> Result<(), Rejection> {
        DocumentProjection.apply(document, &event(op, data))
    }

    #[test]
    fn set_patch_incr_delete() {
        let mut doc = None;
        apply(&mut doc, "set", json!({"a": 1, "b": {"c": 2}})).unwrap();
        apply(
            &mut doc,
            "patch",
            json!({"b": {"c": null, "d": 3}, "e": "x"}),
        )
        .unwrap();
        assert_eq!(
            doc,
            Some(Document::Live(json!({"a": 1, "b": {"d": 3}, "e": "x"})))
        );
        apply(&mut doc, "incr", json!({"a": 4, "n": -2})).unwrap();
        assert_eq!(doc.as_ref().unwrap().value().unwrap()["a"], 5);
        assert_eq!(doc.as_ref().unwrap().value().unwrap()["n"], -2);
        apply(&mut doc, "delete", Value::Null).unwrap();
        assert_eq!(doc, Some(Document::Deleted));
        apply(&mut doc, "incr", json!({"a": 1})).unwrap();
        assert_eq!(doc, Some(Document::Live(json!({"a": 1}))));
    }

    #[test]
    fn incr_refuses_overflow_and_non_integers_without_changing_anything() {
        let mut doc = Some(Document::Live(json!({"a": i64::MAX, "s": "x", "b": 1})));
        let before = doc.clone();
        assert!(apply(&mut doc, "incr", json!({"b": 1, "a": 1}))
            .unwrap_err()
            .reason
            .contains("overflow"));
        assert!(apply(&mut doc, "incr", json!({"b": 1, "s": 1}))
            .unwrap_err()
            .reason
            .contains("not an integer"));
        assert!(apply(&mut doc, "incr", json!({"b": 1.5})).is_err());
        assert!(apply(&mut doc, "set", json!([1])).is_err());
        assert!(apply(&mut doc, "patch", json!("x")).is_err());
        assert_eq!(doc, before);
    }

    #[test]
    fn fold_adds_merges_concatenates_and_keeps_the_target() {
        let mut target = Some(Document::Live(
            json!({"n": 1, "o": {"x": 1}, "l": [1], "s": "t", "f": 1.5}),
        ));
        let source = Some(Document::Live(
            json!({"n": 2, "o": {"x": 2, "y": 3}, "l": [2], "s": "s", "f": 1, "new": true}),
        ));
        DocumentProjection.fold(&mut target, source).unwrap();
        assert_eq!(
            target,
            Some(Document::Live(
                json!({"n": 3, "o": {"x": 3, "y": 3}, "l": [1, 2], "s": "t", "f": 2.5, "new": true})
            ))
        );
        let mut empty = None;
        DocumentProjection
            .fold(&mut empty, Some(Document::Deleted))
            .unwrap();
        assert_eq!(empty, None);
        DocumentProjection
            .fold(&mut empty, Some(Document::Live(json!({"a": 1}))))
            .unwrap();
        assert_eq!(empty, Some(Document::Live(json!({"a": 1}))));
    }

    #[test]
    fn fold_overflow_is_refused_and_leaves_the_target() {
        let mut target = Some(Document::Live(json!({"a": 1, "n": i64::MAX})));
        let before = target.clone();
        assert!(DocumentProjection
            .fold(&mut target, Some(Document::Live(json!({"a": 1, "n": 1}))))
            .is_err());
        assert_eq!(target, before);
    }
}
