//! What replaying a dead letter would do, decided from the store without doing it (`ordo
//! dlq replay --dry-run`, and the console's dry run): the version guard, what the stream
//! still waits for, and — with the built-in document projection — whether the event
//! would be refused again. Nothing is written or sent. What it cannot foresee: a
//! handler's answer, the bound of an overflowing stream, a monotonic stream's rules (it
//! reads them as gapless), and events that arrive before the replay.

use std::sync::Arc;

use ordo_core::{parse_event, DeadLetter, Event, Load, Op, OpPolicy};
use ordo_projection::{DocumentProjection, Projection};
use ordo_store::{ReadError, Store};

/// What a replay would do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Forecast {
    /// It would apply, and this many events waiting behind it on its stream would go on
    /// (as far as nothing else holds them).
    Applies {
        /// Waiting events of its stream.
        behind: usize,
    },
    /// Its version is already applied or passed: a counted no-op.
    AlreadyApplied,
    /// It would be requeued but wait: the reason.
    StillBlocked(String),
    /// It would be requeued and wait behind an earlier dead letter of its stream.
    BehindDeadLetter {
        /// The earlier entry.
        id: u64,
        /// Its version (the stream's next).
        version: u64,
    },
    /// The projection would refuse it again: the reason.
    FailsAgain(String),
    /// A handler decides: it would be sent to it.
    SentToHandler,
    /// It cannot be replayed as it is (no stream, or a body that does not parse).
    Refused(String),
}

impl std::fmt::Display for Forecast {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Forecast::Applies { behind: 0 } => f.write_str("would apply"),
            Forecast::Applies { behind } => {
                write!(
                    f,
                    "would apply; {behind} waiting events of its stream would go on"
                )
            }
            Forecast::AlreadyApplied => {
                f.write_str("already applied (the version guard makes it a no-op)")
            }
            Forecast::StillBlocked(why) => write!(f, "still blocked: {why}"),
            Forecast::BehindDeadLetter { id, version } => {
                write!(
                    f,
                    "still blocked: behind dead letter #{id} (version {version})"
                )
            }
            Forecast::FailsAgain(why) => write!(f, "would be dead-lettered again: {why}"),
            Forecast::SentToHandler => {
                f.write_str("would be sent to the recorded handler, whose answer decides")
            }
            Forecast::Refused(why) => write!(f, "refused: {why}"),
        }
    }
}

impl Forecast {
    /// The one-word outcome, as `--json` and the console label it.
    pub fn outcome(&self) -> &'static str {
        match self {
            Forecast::Applies { .. } => "apply",
            Forecast::AlreadyApplied => "already-applied",
            Forecast::StillBlocked(_) | Forecast::BehindDeadLetter { .. } => "still-blocked",
            Forecast::FailsAgain(_) => "dead-lettered-again",
            Forecast::SentToHandler => "to-handler",
            Forecast::Refused(_) => "refused",
        }
    }
}

/// What replaying `entry` (or `body` in its place) would do, given every dead letter of
/// the store (`queue`); `handler`: a handler, not the built-in projection, applies events.
pub fn forecast(
    store: &mut impl Store,
    entry: &DeadLetter,
    body: Option<&str>,
    queue: &[DeadLetter],
    handler: bool,
) -> Result<Forecast, ReadError> {
    let (stream, version, event) = match replayed_event(entry, body, handler) {
        Ok(found) => found,
        Err(forecast) => return Ok(forecast),
    };
    let key: Arc<str> = Arc::from(stream);
    let record = store.stream_records(std::slice::from_ref(&key))?.pop();
    let applied = record.as_ref().map_or(0, |r| r.applied);
    if version <= applied {
        return Ok(Forecast::AlreadyApplied);
    }
    if let Some(blocked) = blocked_at_stream(store, stream, version, applied, queue)? {
        return Ok(blocked);
    }
    if let Some(refused) = refused_by_engine(store, &event)? {
        return Ok(refused);
    }
    if handler {
        return Ok(Forecast::SentToHandler);
    }
    if !matches!(event.op, Op::Merge { .. }) {
        // Past a merge's cut, the engine applies the event to the merge target.
        let target = match record.and_then(|r| r.alias) {
            Some((target, cut)) if version > cut => alias_chain(store, target.clone())?
                .pop()
                .map_or(target, |(end, _)| end),
            _ => key.clone(),
        };
        let mut document = store
            .documents(std::slice::from_ref(&target))?
            .pop()
            .flatten();
        if let Err(rejection) = DocumentProjection.apply(&mut document, &event) {
            return Ok(Forecast::FailsAgain(rejection.to_string()));
        }
    }
    let behind = store
        .load_pending(&Load::Stream(key))?
        .records
        .iter()
        .filter(|r| r.version > version)
        .count();
    Ok(Forecast::Applies { behind })
}

/// The event a replay would deliver (the entry's, or the corrected `body`), with the
/// stream and version the entry holds; the forecast instead when there is none to send.
fn replayed_event<'a>(
    entry: &'a DeadLetter,
    body: Option<&str>,
    handler: bool,
) -> Result<(&'a str, u64, Event), Forecast> {
    let (Some(stream), Some(version)) = (entry.stream.as_deref(), entry.version) else {
        return Err(Forecast::Refused(
            "the entry names no stream (unroutable): fix it upstream".into(),
        ));
    };
    let policy = if handler {
        OpPolicy::Custom
    } else {
        OpPolicy::Document
    };
    let event = parse_event(body.unwrap_or(&entry.body).trim().as_bytes(), policy)
        .map_err(|error| Forecast::FailsAgain(error.to_string()))?;
    if body.is_some() && (&*event.stream != stream || event.version != version) {
        // As the replay refuses it: a corrected event keeps the entry's place.
        return Err(Forecast::Refused(format!(
            "the corrected event is `{}` version {}; the entry holds `{stream}` version {version}",
            event.stream, event.version
        )));
    }
    Ok((stream, version, event))
}

/// Whether the stream itself holds the event back: paused by an operator, or not yet at
/// the version before it (behind another dead letter, or a version still missing).
fn blocked_at_stream(
    store: &mut impl Store,
    stream: &str,
    version: u64,
    applied: u64,
    queue: &[DeadLetter],
) -> Result<Option<Forecast>, ReadError> {
    let paused = store
        .pauses()?
        .into_iter()
        .any(|p| matches!(&p.target, ordo_store::PauseTarget::Stream(s) if s.as_str() == stream));
    if paused {
        return Ok(Some(Forecast::StillBlocked(format!(
            "`{stream}` is paused by an operator (`ordo resume` lets it go)"
        ))));
    }
    if version == applied + 1 {
        return Ok(None);
    }
    let earlier = queue
        .iter()
        .find(|d| d.stream.as_deref() == Some(stream) && d.version == Some(applied + 1));
    Ok(Some(match earlier {
        Some(earlier) => Forecast::BehindDeadLetter {
            id: earlier.id,
            version: applied + 1,
        },
        None => Forecast::StillBlocked(format!("version {} of `{stream}` is missing", applied + 1)),
    }))
}

/// As the engine judges the stream's next event: a merge's cuts first, then `after`,
/// then a merge's sources (one merged away already, or a cycle).
fn refused_by_engine(store: &mut impl Store, event: &Event) -> Result<Option<Forecast>, ReadError> {
    if let Some(why) = event.merge_without_cut() {
        return Ok(Some(Forecast::FailsAgain(why)));
    }
    for dependency in &event.after {
        let reached = store
            .stream_records(&[Arc::from(&*dependency.stream)])?
            .pop()
            .map_or(0, |r| r.applied);
        if reached < dependency.version {
            return Ok(Some(Forecast::StillBlocked(format!(
                "waits for `{}` to reach version {} (it is at {reached})",
                dependency.stream, dependency.version
            ))));
        }
    }
    if let Op::Merge { from } = &event.op {
        for source in from {
            let merged = store.stream_records(&[Arc::from(&**source)])?.pop();
            if let Some((target, _)) = merged.and_then(|r| r.alias) {
                return Ok(Some(Forecast::FailsAgain(format!(
                    "source `{source}` is already merged into `{target}`"
                ))));
            }
        }
    }
    Ok(None)
}

/// What replaying `entries` one after the other, in the order given, would do: each as
/// [`forecast`] says for a replay now, except that an entry blocked behind an earlier
/// entry of `entries` (the next version of its stream) that would go is said to go after
/// it (`after`: that entry's id). The projection is not tried on the document the
/// earlier replay would leave: that is known only once it has applied.
pub fn forecast_in_order(
    store: &mut impl Store,
    entries: &[DeadLetter],
    body: Option<&str>,
    queue: &[DeadLetter],
    handler: bool,
) -> Result<Vec<(Forecast, Option<u64>)>, ReadError> {
    // Per stream: the version the earlier replays would have applied through, and by
    // which entry.
    let mut through: std::collections::HashMap<Box<str>, (u64, u64)> = Default::default();
    let mut all = Vec::with_capacity(entries.len());
    for entry in entries {
        let mut forecast = forecast(store, entry, body, queue, handler)?;
        let mut after = None;
        if let (Some(stream), Some(version)) = (entry.stream.clone(), entry.version) {
            let chained = through
                .get(&stream)
                .filter(|(applied, _)| version == applied + 1)
                .map(|&(_, by)| by);
            // Only an event that waits for nothing else (no `after`, not a merge with its
            // cuts) is known to go once the earlier one has.
            let waits_for_nothing_else = parse_event(
                body.unwrap_or(&entry.body).trim().as_bytes(),
                OpPolicy::Custom,
            )
            .is_ok_and(|e| e.after.is_empty() && !matches!(e.op, Op::Merge { .. }));
            let behind_only_the_earlier = matches!(forecast, Forecast::BehindDeadLetter { .. });
            if let (true, true, Some(by)) =
                (behind_only_the_earlier, waits_for_nothing_else, chained)
            {
                forecast = if handler {
                    Forecast::SentToHandler
                } else {
                    Forecast::Applies { behind: 0 }
                };
                after = Some(by);
            }
            if matches!(forecast, Forecast::Applies { .. } | Forecast::SentToHandler) {
                through.insert(stream, (version, entry.id));
            }
        }
        all.push((forecast, after));
    }
    Ok(all)
}

/// Where `stream`'s merges lead: each target and its cut, in order (merges of merges), at
/// most [`ALIAS_CHAIN_MAX`] links (the forecast and the console's stream page).
pub fn alias_chain(
    store: &mut impl Store,
    stream: Arc<str>,
) -> Result<Vec<(Arc<str>, u64)>, ReadError> {
    let mut chain = Vec::new();
    let mut at = stream;
    while chain.len() < ALIAS_CHAIN_MAX {
        match store
            .stream_records(std::slice::from_ref(&at))?
            .pop()
            .and_then(|r| r.alias)
        {
            Some((next, cut)) => {
                chain.push((next.clone(), cut));
                at = next;
            }
            None => break,
        }
    }
    Ok(chain)
}

/// Most alias links followed.
pub const ALIAS_CHAIN_MAX: usize = 16;
