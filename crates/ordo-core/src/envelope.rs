//! The event envelope: JSON in, a typed [`Event`] out, or an [`EnvelopeError`] naming the
//! defect.
//!
//! Validation is strict where ordering depends on a field (`id`, `stream`, `version`,
//! `after`, a merge's sources) because a wrong value there would silently corrupt the
//! order of other events. Fields the core does not interpret are kept untouched in
//! [`Event::extra`] and handed to projections.

use crate::limits::{
    AFTER_ENTRIES_MAX, EVENT_BYTES_MAX, EVENT_ID_BYTES_MAX, MERGE_SOURCES_MAX,
    STREAM_NAME_BYTES_MAX, VERSION_MAX,
};
use serde_json::{Map, Value};
use std::fmt;

/// What the built-in document projection does with an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Replace the document with `data`.
    Set,
    /// RFC 7396 merge patch of `data` onto the document.
    Patch,
    /// Add integers to top-level fields.
    Incr,
    /// Tombstone the document; the version is kept.
    Delete,
    /// Fold the named source streams into this one and alias them to it.
    Merge {
        /// The source streams, in the order they are folded.
        from: Vec<Box<str>>,
    },
    /// An op only a custom projection understands (accepted with [`OpPolicy::Custom`]).
    Custom(Box<str>),
}

impl Op {
    /// The op's name as it appears in the envelope.
    pub fn name(&self) -> &str {
        match self {
            Op::Set => "set",
            Op::Patch => "patch",
            Op::Incr => "incr",
            Op::Delete => "delete",
            Op::Merge { .. } => "merge",
            Op::Custom(name) => name,
        }
    }
}

/// "Apply only once `stream` has applied `version`".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dependency {
    /// The stream waited for.
    pub stream: Box<str>,
    /// The version it must have applied.
    pub version: u64,
}

/// A validated event.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Unique per event; a repeated id is a duplicate.
    pub id: Box<str>,
    /// The entity and ordering boundary.
    pub stream: Box<str>,
    /// Position in the stream, from 1.
    pub version: u64,
    /// The event's name (`type` in the envelope).
    pub event_type: Box<str>,
    /// What the document projection does.
    pub op: Op,
    /// The op's argument (`null` when absent).
    pub data: Value,
    /// Streams and versions that must be applied first.
    pub after: Vec<Dependency>,
    /// Every other field of the envelope, kept for projections.
    pub extra: Option<Box<Map<String, Value>>>,
}

impl Event {
    /// The envelope as a JSON object, fields in a stable order, extra fields kept.
    pub fn to_json(&self) -> Value {
        let mut object = Map::new();
        object.insert("id".into(), Value::from(&*self.id));
        object.insert("stream".into(), Value::from(&*self.stream));
        object.insert("version".into(), Value::from(self.version));
        object.insert("type".into(), Value::from(&*self.event_type));
        object.insert("op".into(), Value::from(self.op.name()));
        let data = match &self.op {
            Op::Merge { from } if self.data.is_null() => {
                let from: Vec<Value> = from.iter().map(|s| Value::from(&**s)).collect();
                let mut data = Map::new();
                data.insert("from".into(), Value::Array(from));
                Value::Object(data)
            }
            _ => self.data.clone(),
        };
        if !data.is_null() {
            object.insert("data".into(), data);
        }
        if !self.after.is_empty() {
            let after = self
                .after
                .iter()
                .map(|d| {
                    let mut entry = Map::new();
                    entry.insert("stream".into(), Value::from(&*d.stream));
                    entry.insert("version".into(), Value::from(d.version));
                    Value::Object(entry)
                })
                .collect();
            object.insert("after".into(), Value::Array(after));
        }
        if let Some(extra) = &self.extra {
            for (key, value) in extra.iter() {
                object.insert(key.clone(), value.clone());
            }
        }
        Value::Object(object)
    }

    /// The envelope as compact JSON text (what stores keep for buffered events).
    pub fn to_json_string(&self) -> String {
        self.to_json().to_string()
    }

    /// The cut this merge declares for `source`, if any.
    pub fn cut_for(&self, source: &str) -> Option<u64> {
        self.after
            .iter()
            .find(|d| &*d.stream == source)
            .map(|d| d.version)
    }

    /// Why this merge cannot be applied as it is: a source without a cut (`None` for a
    /// merge that names every cut, and for any other op).
    pub fn merge_without_cut(&self) -> Option<String> {
        let Op::Merge { from } = &self.op else {
            return None;
        };
        let missing = from.iter().find(|f| self.cut_for(f).is_none())?;
        Some(format!(
            "merge has no cut for source `{missing}`: its `after` must name the last version of each source that belongs before the merge"
        ))
    }
}

/// Which ops the parser accepts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OpPolicy {
    /// Only the document projection's ops; any other is [`EnvelopeError::UnknownOp`].
    #[default]
    Document,
    /// Unknown ops become [`Op::Custom`] for a custom projection; `merge` keeps its meaning.
    Custom,
}

/// Why an envelope was refused. Each variant names one defect.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The text is longer than [`EVENT_BYTES_MAX`].
    TooLarge {
        /// The text's length in bytes.
        bytes: usize,
    },
    /// The text is not valid JSON (or not UTF-8).
    InvalidJson {
        /// The parser's message.
        detail: String,
    },
    /// The JSON value is not an object.
    NotAnObject,
    /// A required field is absent (or `null`).
    MissingField {
        /// The field's name.
        field: &'static str,
    },
    /// A field has the wrong JSON type.
    WrongType {
        /// The field's name.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// A string field is empty.
    Empty {
        /// The field's name.
        field: &'static str,
    },
    /// A string field is longer than its limit.
    TooLong {
        /// The field's name.
        field: &'static str,
        /// Its length in bytes.
        bytes: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// `version` is not an integer from 1 to [`VERSION_MAX`] (zero, negative, fractional
    /// or out of range).
    BadVersion {
        /// The value as written.
        value: String,
    },
    /// `after` is not an array of `{stream, version}` objects within the limits.
    AfterMalformed {
        /// What is wrong with it.
        detail: String,
    },
    /// `op` names no operation the document projection knows.
    UnknownOp {
        /// The op as written.
        op: String,
    },
    /// A `merge` has no valid `data.from` list.
    MergeMalformed {
        /// What is wrong with it.
        detail: String,
    },
    /// The message is empty (a broker message with no value).
    EmptyMessage,
    /// The broker message's key is not the event's `stream`: it may sit in the wrong
    /// partition, so its order relative to its stream is unknown.
    KeyMismatch {
        /// The message key.
        key: String,
        /// The event's stream.
        stream: String,
    },
}

impl fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvelopeError::TooLarge { bytes } => {
                write!(
                    f,
                    "event is {bytes} bytes, over the {EVENT_BYTES_MAX}-byte limit"
                )
            }
            EnvelopeError::InvalidJson { detail } => write!(f, "invalid JSON: {detail}"),
            EnvelopeError::NotAnObject => write!(f, "event is not a JSON object"),
            EnvelopeError::MissingField { field } => write!(f, "missing field `{field}`"),
            EnvelopeError::WrongType { field, expected } => {
                write!(f, "field `{field}` must be {expected}")
            }
            EnvelopeError::Empty { field } => write!(f, "field `{field}` is empty"),
            EnvelopeError::TooLong { field, bytes, max } => {
                write!(
                    f,
                    "field `{field}` is {bytes} bytes, over the {max}-byte limit"
                )
            }
            EnvelopeError::BadVersion { value } => {
                write!(
                    f,
                    "`version` must be an integer from 1 to {VERSION_MAX}, got {value}"
                )
            }
            EnvelopeError::AfterMalformed { detail } => write!(f, "malformed `after`: {detail}"),
            EnvelopeError::UnknownOp { op } => write!(f, "unknown op `{op}`"),
            EnvelopeError::MergeMalformed { detail } => write!(f, "malformed merge: {detail}"),
            EnvelopeError::EmptyMessage => write!(f, "empty message"),
            EnvelopeError::KeyMismatch { key, stream } => {
                write!(
                    f,
                    "message key `{key}` is not the event's stream `{stream}`"
                )
            }
        }
    }
}

impl std::error::Error for EnvelopeError {}

/// Where a refused envelope belongs, when enough of it could be read.
///
/// With a stream and a version the core dead-letters the event in sequence (its stream
/// waits at that version, visibly), instead of leaving an unexplained gap.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Routing {
    /// The `id`, when it was valid.
    pub id: Option<Box<str>>,
    /// The `stream`, when it was valid.
    pub stream: Option<Box<str>>,
    /// The `version`, when it was valid.
    pub version: Option<u64>,
}

/// A refused envelope: the defect and whatever routing could be recovered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// The defect.
    pub error: EnvelopeError,
    /// What could be read of the id, stream and version.
    pub routing: Routing,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for ParseError {}

/// Parses and validates one envelope.
pub fn parse_event(bytes: &[u8], policy: OpPolicy) -> Result<Event, ParseError> {
    let unrouted = |error| ParseError {
        error,
        routing: Routing::default(),
    };
    if bytes.len() > EVENT_BYTES_MAX {
        return Err(unrouted(EnvelopeError::TooLarge { bytes: bytes.len() }));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(unrouted(EnvelopeError::EmptyMessage));
    }
    let invalid = |e: serde_json::Error| {
        unrouted(EnvelopeError::InvalidJson {
            detail: e.to_string(),
        })
    };
    // An object (every envelope) is decoded straight into its fields: no map of the
    // whole object is built, and a known field's name allocates nothing. Anything else
    // is decoded as a value, to tell invalid JSON from JSON that is not an object.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
        let fields: Fields = serde_json::from_slice(bytes).map_err(invalid)?;
        return parse_fields(fields, policy);
    }
    match serde_json::from_slice(bytes).map_err(invalid)? {
        Value::Object(object) => parse_object(object, policy),
        _ => Err(unrouted(EnvelopeError::NotAnObject)),
    }
}

/// The envelope's known fields, split from the rest in one pass (no per-field removal,
/// which would reorder or shift the remaining ones).
#[derive(Default)]
struct Fields {
    id: Option<Value>,
    stream: Option<Value>,
    version: Option<Value>,
    event_type: Option<Value>,
    op: Option<Value>,
    data: Option<Value>,
    after: Option<Value>,
    extra: Map<String, Value>,
}

impl Fields {
    fn split(object: Map<String, Value>) -> Self {
        let mut fields = Fields::default();
        for (name, value) in object {
            let key = match Key::of(&name) {
                Some(key) => key,
                None => Key::Other(name),
            };
            fields.put(key, value);
        }
        fields
    }

    /// Puts one field's value in its place; a repeated field keeps its last value.
    fn put(&mut self, key: Key, value: Value) {
        let slot = match key {
            Key::Id => &mut self.id,
            Key::Stream => &mut self.stream,
            Key::Version => &mut self.version,
            Key::Type => &mut self.event_type,
            Key::Op => &mut self.op,
            Key::Data => &mut self.data,
            Key::After => &mut self.after,
            Key::Other(name) => {
                self.extra.insert(name, value);
                return;
            }
        };
        *slot = Some(value);
    }
}

/// Validates an already-decoded JSON object as an envelope.
pub fn parse_object(object: Map<String, Value>, policy: OpPolicy) -> Result<Event, ParseError> {
    parse_fields(Fields::split(object), policy)
}

/// The fields' field names, as an envelope's keys decode: a known one allocates nothing.
enum Key {
    Id,
    Stream,
    Version,
    Type,
    Op,
    Data,
    After,
    Other(String),
}

impl Key {
    fn of(name: &str) -> Option<Key> {
        Some(match name {
            "id" => Key::Id,
            "stream" => Key::Stream,
            "version" => Key::Version,
            "type" => Key::Type,
            "op" => Key::Op,
            "data" => Key::Data,
            "after" => Key::After,
            _ => return None,
        })
    }
}

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Key, D::Error> {
        struct KeyVisitor;
        impl serde::de::Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Key, E> {
                Ok(Key::of(name).unwrap_or_else(|| Key::Other(name.to_string())))
            }
            fn visit_string<E: serde::de::Error>(self, name: String) -> Result<Key, E> {
                Ok(Key::of(&name).unwrap_or(Key::Other(name)))
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

/// Decodes an object into its fields in one pass, as [`Fields::split`] splits a decoded
/// one: a repeated key keeps its last value (and, among the other fields, its first
/// place), as a JSON object decoded into a map does.
impl<'de> serde::Deserialize<'de> for Fields {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Fields, D::Error> {
        struct FieldsVisitor;
        impl<'de> serde::de::Visitor<'de> for FieldsVisitor {
            type Value = Fields;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Fields, A::Error> {
                let mut fields = Fields::default();
                while let Some(key) = map.next_key::<Key>()? {
                    fields.put(key, map.next_value()?);
                }
                Ok(fields)
            }
        }
        deserializer.deserialize_map(FieldsVisitor)
    }
}

/// Validates an envelope's fields.
fn parse_fields(fields: Fields, policy: OpPolicy) -> Result<Event, ParseError> {
    // The routing fields are read first and independently, so that a defect elsewhere
    // still leaves the event routable to its stream.
    let id = name_of(fields.id, "id", EVENT_ID_BYTES_MAX);
    let stream = name_of(fields.stream, "stream", STREAM_NAME_BYTES_MAX);
    let version = match fields.version {
        None | Some(Value::Null) => Err(EnvelopeError::MissingField { field: "version" }),
        Some(value) => version_of(&value),
    };
    let (id, stream, version) = match (id, stream, version) {
        (Ok(id), Ok(stream), Ok(version)) => (id, stream, version),
        (id, stream, version) => return Err(unroutable(id, stream, version)),
    };
    // Routing is only copied out when something is wrong.
    let fail = |error: EnvelopeError| ParseError {
        error,
        routing: Routing {
            id: Some(id.clone()),
            stream: Some(stream.clone()),
            version: Some(version),
        },
    };
    let event_type = string_field(fields.event_type, "type").map_err(&fail)?;
    let op_name = string_field(fields.op, "op").map_err(&fail)?;
    let data = fields.data.unwrap_or(Value::Null);
    let after = match fields.after {
        None | Some(Value::Null) => Vec::new(),
        Some(value) => parse_after(value, &stream, version).map_err(&fail)?,
    };
    let op = op_of(op_name, &data, &stream, policy).map_err(&fail)?;
    let extra = if fields.extra.is_empty() {
        None
    } else {
        Some(Box::new(fields.extra))
    };
    Ok(Event {
        id,
        stream,
        version,
        event_type: event_type.into_boxed_str(),
        op,
        data,
        after,
        extra,
    })
}

/// The error of an envelope whose routing fields are not all readable (the first defect:
/// `id`, then `stream`, then `version`), with whatever of them could be read.
fn unroutable(
    id: Result<Box<str>, EnvelopeError>,
    stream: Result<Box<str>, EnvelopeError>,
    version: Result<u64, EnvelopeError>,
) -> ParseError {
    let first = [
        id.as_ref().err(),
        stream.as_ref().err(),
        version.as_ref().err(),
    ]
    .into_iter()
    .flatten()
    .next()
    .cloned();
    ParseError {
        error: first.expect("called only when a routing field failed"),
        routing: Routing {
            id: id.ok(),
            stream: stream.ok(),
            version: version.ok(),
        },
    }
}

/// A required field that must be a string (`type`, `op`).
fn string_field(value: Option<Value>, field: &'static str) -> Result<String, EnvelopeError> {
    match value {
        None | Some(Value::Null) => Err(EnvelopeError::MissingField { field }),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(EnvelopeError::WrongType {
            field,
            expected: "a string",
        }),
    }
}

/// The operation `op` names; a name outside the document semantics is refused, or kept
/// for a handler, as `policy` says.
fn op_of(
    op_name: String,
    data: &Value,
    stream: &str,
    policy: OpPolicy,
) -> Result<Op, EnvelopeError> {
    Ok(match op_name.as_str() {
        "set" => Op::Set,
        "patch" => Op::Patch,
        "incr" => Op::Incr,
        "delete" => Op::Delete,
        "merge" => Op::Merge {
            from: parse_merge_sources(data, stream)?,
        },
        _ => match policy {
            OpPolicy::Document => return Err(EnvelopeError::UnknownOp { op: op_name }),
            OpPolicy::Custom => Op::Custom(op_name.into_boxed_str()),
        },
    })
}

fn name_of(
    value: Option<Value>,
    field: &'static str,
    max: usize,
) -> Result<Box<str>, EnvelopeError> {
    match value {
        None | Some(Value::Null) => Err(EnvelopeError::MissingField { field }),
        Some(Value::String(s)) => check_name(s, field, max),
        Some(_) => Err(EnvelopeError::WrongType {
            field,
            expected: "a string",
        }),
    }
}

fn check_name(s: String, field: &'static str, max: usize) -> Result<Box<str>, EnvelopeError> {
    if s.is_empty() {
        Err(EnvelopeError::Empty { field })
    } else if s.len() > max {
        Err(EnvelopeError::TooLong {
            field,
            bytes: s.len(),
            max,
        })
    } else {
        Ok(s.into_boxed_str())
    }
}

fn version_of(value: &Value) -> Result<u64, EnvelopeError> {
    match value {
        Value::Number(n) => match n.as_u64() {
            Some(v) if (1..=VERSION_MAX).contains(&v) => Ok(v),
            _ => Err(EnvelopeError::BadVersion {
                value: n.to_string(),
            }),
        },
        _ => Err(EnvelopeError::WrongType {
            field: "version",
            expected: "an integer from 1 to 9223372036854775807",
        }),
    }
}

fn parse_after(
    value: Value,
    own_stream: &str,
    own_version: u64,
) -> Result<Vec<Dependency>, EnvelopeError> {
    let malformed = |detail: String| EnvelopeError::AfterMalformed { detail };
    let Value::Array(entries) = value else {
        return Err(malformed("must be an array".into()));
    };
    if entries.len() > AFTER_ENTRIES_MAX {
        return Err(malformed(format!(
            "{} entries, over the limit of {AFTER_ENTRIES_MAX}",
            entries.len()
        )));
    }
    let mut after = Vec::with_capacity(entries.len());
    for (index, entry) in entries.into_iter().enumerate() {
        let Value::Object(mut entry) = entry else {
            return Err(malformed(format!("entry {index} is not an object")));
        };
        let stream = name_of(entry.remove("stream"), "stream", STREAM_NAME_BYTES_MAX)
            .map_err(|e| malformed(format!("entry {index}: {e}")))?;
        let version = match entry.remove("version") {
            None | Some(Value::Null) => {
                return Err(malformed(format!("entry {index}: missing field `version`")))
            }
            Some(v) => version_of(&v).map_err(|e| malformed(format!("entry {index}: {e}")))?,
        };
        if &*stream == own_stream && version >= own_version {
            // Waiting for itself (or its future) could never be satisfied.
            return Err(malformed(format!(
                "entry {index} waits for its own stream at version {version}, not before {own_version}"
            )));
        }
        if after.iter().any(|d: &Dependency| d.stream == stream) {
            return Err(malformed(format!("entry {index} names `{stream}` twice")));
        }
        after.push(Dependency { stream, version });
    }
    Ok(after)
}

fn parse_merge_sources(data: &Value, own_stream: &str) -> Result<Vec<Box<str>>, EnvelopeError> {
    let malformed = |detail: String| EnvelopeError::MergeMalformed { detail };
    let Some(from) = data.get("from") else {
        return Err(malformed("`data.from` is missing".into()));
    };
    let Value::Array(from) = from else {
        return Err(malformed(
            "`data.from` must be an array of stream names".into(),
        ));
    };
    if from.is_empty() || from.len() > MERGE_SOURCES_MAX {
        return Err(malformed(format!(
            "`data.from` must name 1 to {MERGE_SOURCES_MAX} streams, it names {}",
            from.len()
        )));
    }
    let mut sources: Vec<Box<str>> = Vec::with_capacity(from.len());
    for source in from {
        let Value::String(source) = source else {
            return Err(malformed("`data.from` must hold only strings".into()));
        };
        let source = check_name(source.clone(), "data.from", STREAM_NAME_BYTES_MAX)
            .map_err(|e| malformed(e.to_string()))?;
        if &*source == own_stream {
            return Err(malformed(format!(
                "stream `{own_stream}` cannot merge into itself"
            )));
        }
        if sources.contains(&source) {
            return Err(malformed(format!("`{source}` is named twice")));
        }
        sources.push(source);
    }
    Ok(sources)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Event, ParseError> {
        parse_event(text.as_bytes(), OpPolicy::Document)
    }

    fn error(text: &str) -> EnvelopeError {
        parse(text).expect_err(text).error
    }

    #[test]
    fn parses_a_full_event_and_keeps_extra_fields() {
        let event = parse(
            r#"{"id":"e1","stream":"s","version":3,"type":"T","op":"patch","data":{"a":1},
                "after":[{"stream":"c","version":2}],"meta":{"k":true}}"#,
        )
        .unwrap();
        assert_eq!(&*event.id, "e1");
        assert_eq!(event.version, 3);
        assert_eq!(event.op, Op::Patch);
        assert_eq!(
            event.after,
            vec![Dependency {
                stream: "c".into(),
                version: 2
            }]
        );
        assert_eq!(
            event.extra.as_ref().unwrap()["meta"],
            serde_json::json!({"k": true})
        );
        let again = parse(&event.to_json_string()).unwrap();
        assert_eq!(again, event);
    }

    /// Found by the envelope fuzz target: without serde_json's exact float parsing a
    /// [`parse_event`] decodes an object straight into its fields; it must say exactly
    /// what decoding the whole object as a map, then splitting it, says: the same event,
    /// or the same error with the same routing and the same words.
    #[test]
    fn decoding_into_fields_agrees_with_decoding_the_object() {
        let via_map = |bytes: &[u8], policy| match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(object)) => parse_object(object, policy),
            Ok(_) => Err(ParseError {
                error: EnvelopeError::NotAnObject,
                routing: Routing::default(),
            }),
            Err(e) => Err(ParseError {
                error: EnvelopeError::InvalidJson {
                    detail: e.to_string(),
                },
                routing: Routing::default(),
            }),
        };
        let lines = [
            r#"{"id":"a","stream":"s","version":1,"type":"T","op":"set","data":{"x":1,"y":[1,2]}}"#,
            r#"  {"id":"a","stream":"s","version":2,"type":"T","op":"patch","data":{"x":null},"meta":{"k":1},"z":2}"#,
            r#"{"id":"a","id":"b","stream":"s","version":3,"type":"T","op":"incr","data":{"n":1},"z":1,"y":2,"z":3}"#,
            r#"{"id":"e","stream":"s","version":4,"type":"T","op":"delete","data":null}"#,
            r#"{"id":"m","stream":"t","version":1,"type":"M","op":"merge","data":{"from":["s"]},"after":[{"stream":"s","version":4}]}"#,
            r#"{"id":"c","stream":"t","version":2,"type":"C","op":"custom-op","data":{}}"#,
            r#"{"id":1,"stream":"s","version":"x","type":2}"#,
            r#"{"stream":"s","version":1}"#,
            r#"{"id":"a","stream":"s","version":18446744073709551615,"type":"T","op":"set"}"#,
            r#"{"id":"a","stream":"s","version":1.5,"type":"T","op":"set","data":1e400}"#,
            r#"{1:2}"#,
            r#"{"a":1} trailing"#,
            r#"[1,2]"#,
            r#""just a string""#,
            r#"42"#,
            r#"{}"#,
        ];
        for line in lines {
            // Every prefix too: truncated lines are the usual malformed input.
            for end in 1..=line.len() {
                let bytes = &line.as_bytes()[..end];
                if bytes.iter().all(u8::is_ascii_whitespace) {
                    continue; // refused before any decoding, on either path
                }
                for policy in [OpPolicy::Document, OpPolicy::Custom] {
                    assert_eq!(
                        format!("{:?}", parse_event(bytes, policy)),
                        format!("{:?}", via_map(bytes, policy)),
                        "{}",
                        String::from_utf8_lossy(bytes)
                    );
                }
            }
        }
    }

    /// number could come back one ULP off when ordo wrote the event again (a waiting row,
    /// a dead letter, a handler's request body).
    #[test]
    fn a_float_survives_a_round_trip_to_the_last_bit() {
        let text = r#"{"id":"e","stream":"s","version":1,"type":"T","op":"set","data":{"p":55555555555555555555555555555555555555555555555555555555555555555555555553,"q":0.1,"r":1.7976931348623157e308}}"#;
        let event = parse(text).unwrap();
        assert_eq!(event.data["p"].as_f64(), Some(5.555555555555556e73));
        assert_eq!(parse(&event.to_json_string()).unwrap(), event);
    }

    #[test]
    fn names_each_defect() {
        assert!(matches!(error("{"), EnvelopeError::InvalidJson { .. }));
        assert_eq!(error("[1]"), EnvelopeError::NotAnObject);
        assert_eq!(
            error(r#"{"stream":"s","version":1,"type":"T","op":"set"}"#),
            EnvelopeError::MissingField { field: "id" }
        );
        assert_eq!(
            error(r#"{"id":"","stream":"s","version":1,"type":"T","op":"set"}"#),
            EnvelopeError::Empty { field: "id" }
        );
        let long = "x".repeat(257);
        assert!(matches!(
            error(&format!(
                r#"{{"id":"{long}","stream":"s","version":1,"type":"T","op":"set"}}"#
            )),
            EnvelopeError::TooLong {
                field: "id",
                bytes: 257,
                ..
            }
        ));
        assert!(matches!(
            error(&format!(
                r#"{{"id":"i","stream":"{long}","version":1,"type":"T","op":"set"}}"#
            )),
            EnvelopeError::TooLong {
                field: "stream",
                ..
            }
        ));
        assert_eq!(
            error(r#"{"id":"i","version":1,"type":"T","op":"set"}"#),
            EnvelopeError::MissingField { field: "stream" }
        );
        assert_eq!(
            error(r#"{"id":"i","stream":"s","type":"T","op":"set"}"#),
            EnvelopeError::MissingField { field: "version" }
        );
        for bad in ["0", "-1", "1.5", "1e30"] {
            assert!(
                matches!(
                    error(&format!(
                        r#"{{"id":"i","stream":"s","version":{bad},"type":"T","op":"set"}}"#
                    )),
                    EnvelopeError::BadVersion { .. }
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            error(r#"{"id":"i","stream":"s","version":"1","type":"T","op":"set"}"#),
            EnvelopeError::WrongType {
                field: "version",
                ..
            }
        ));
        assert!(matches!(
            error(r#"{"id":"i","stream":"s","version":1,"type":"T","op":"set","after":{}}"#),
            EnvelopeError::AfterMalformed { .. }
        ));
        assert!(matches!(
            error(
                r#"{"id":"i","stream":"s","version":1,"type":"T","op":"set","after":[{"stream":"c"}]}"#
            ),
            EnvelopeError::AfterMalformed { .. }
        ));
        assert!(matches!(
            error(
                r#"{"id":"i","stream":"s","version":2,"type":"T","op":"set","after":[{"stream":"s","version":2}]}"#
            ),
            EnvelopeError::AfterMalformed { .. }
        ));
        assert_eq!(
            error(r#"{"id":"i","stream":"s","version":1,"type":"T","op":"frob"}"#),
            EnvelopeError::UnknownOp { op: "frob".into() }
        );
        assert!(matches!(
            error(
                r#"{"id":"i","stream":"s","version":1,"type":"T","op":"merge","data":{"from":[]}}"#
            ),
            EnvelopeError::MergeMalformed { .. }
        ));
        assert!(matches!(
            error(
                r#"{"id":"i","stream":"s","version":1,"type":"T","op":"merge","data":{"from":["s"]}}"#
            ),
            EnvelopeError::MergeMalformed { .. }
        ));
        let huge = format!(r#"{{"id":"i","data":"{}"}}"#, "x".repeat(EVENT_BYTES_MAX));
        assert!(matches!(error(&huge), EnvelopeError::TooLarge { .. }));
    }

    #[test]
    fn keeps_routing_when_only_the_body_is_bad() {
        let refused =
            parse(r#"{"id":"i","stream":"s","version":4,"type":"T","op":"frob"}"#).unwrap_err();
        assert_eq!(refused.routing.stream.as_deref(), Some("s"));
        assert_eq!(refused.routing.version, Some(4));
        assert_eq!(refused.routing.id.as_deref(), Some("i"));
    }

    #[test]
    fn custom_policy_accepts_unknown_ops() {
        let event = parse_event(
            br#"{"id":"i","stream":"s","version":1,"type":"T","op":"frob"}"#,
            OpPolicy::Custom,
        )
        .unwrap();
        assert_eq!(event.op, Op::Custom("frob".into()));
    }
}
