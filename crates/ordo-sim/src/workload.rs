//! Seeded histories: random multi-stream event histories with dependencies, deletes and
//! merges, written in an order that respects every version and every `after`.
//!
//! Histories are built so that every order the contract allows gives one result: after a
//! stream takes part in a merge (as source or target), it only receives `incr` events,
//! which commute with folding. Where results could legitimately differ (DESIGN.md:
//! non-commuting events with no order between them), no convergence check can be fair.

use ordo_core::{Dependency, Event, Op};
use serde_json::{json, Map, Value};

use crate::rng::Rng;

/// The size and mix of a random history.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// How many streams.
    pub streams: usize,
    /// How many events in all.
    pub events: usize,
    /// Chance (percent) that an event waits for another stream.
    pub dependency_percent: u64,
    /// Chance (percent) that an event is a merge.
    pub merge_percent: u64,
    /// Chance (percent) that an event is a delete.
    pub delete_percent: u64,
}

impl Default for Shape {
    fn default() -> Self {
        Shape {
            streams: 8,
            events: 120,
            dependency_percent: 15,
            merge_percent: 4,
            delete_percent: 6,
        }
    }
}

#[derive(Clone, Default)]
struct StreamModel {
    version: u64,
    merged_away: bool,
    incr_only: bool,
}

/// Builds an event (the generator's and the scenarios' common constructor).
pub fn event(
    id: String,
    stream: &str,
    version: u64,
    event_type: &str,
    op: Op,
    data: Value,
    after: Vec<Dependency>,
) -> Event {
    Event {
        id: id.into(),
        stream: stream.into(),
        version,
        event_type: event_type.into(),
        op,
        data,
        after,
        extra: None,
    }
}

/// A random history for `seed`.
pub fn random_history(seed: u64, shape: Shape) -> Vec<Event> {
    let mut rng = Rng::derive(seed, "history");
    let names: Vec<String> = (0..shape.streams).map(|i| format!("s{i}")).collect();
    let mut model = vec![StreamModel::default(); shape.streams];
    let mut history = Vec::with_capacity(shape.events);
    for n in 0..shape.events {
        let i = rng.index(shape.streams);
        let version = model[i].version + 1;
        let id = format!("{}-{version}-{n}", names[i]);
        let mut after = Vec::new();
        if rng.chance(shape.dependency_percent) {
            let j = rng.index(shape.streams);
            if j != i && model[j].version > 0 {
                after.push(Dependency {
                    stream: names[j].clone().into(),
                    version: rng.range(1, model[j].version),
                });
            }
        }
        let merge_sources = if !model[i].merged_away && rng.chance(shape.merge_percent) {
            pick_merge_sources(&mut rng, &model, i)
        } else {
            Vec::new()
        };
        let (op, data, event_type) = if !merge_sources.is_empty() {
            merge_op(&merge_sources, &names, &mut model, i, &mut after)
        } else {
            plain_op(&mut rng, model[i].incr_only, shape.delete_percent)
        };
        model[i].version = version;
        history.push(event(id, &names[i], version, event_type, op, data, after));
    }
    history
}

/// One or two other live streams, with versions, for stream `i` to merge.
fn pick_merge_sources(rng: &mut Rng, model: &[StreamModel], i: usize) -> Vec<usize> {
    let candidates: Vec<usize> = (0..model.len())
        .filter(|&j| j != i && !model[j].merged_away && model[j].version > 0)
        .collect();
    let mut chosen = Vec::new();
    let wanted = 1 + rng.index(2);
    for _ in 0..wanted.min(candidates.len()) {
        let j = candidates[rng.index(candidates.len())];
        if !chosen.contains(&j) {
            chosen.push(j);
        }
    }
    chosen
}

/// Stream `i` merges `sources`, cut at their current versions (which `after` carries);
/// from then on the sources and the target only receive `incr`, which commutes with
/// folding (see the module's note on fair checks).
fn merge_op(
    sources: &[usize],
    names: &[String],
    model: &mut [StreamModel],
    i: usize,
    after: &mut Vec<Dependency>,
) -> (Op, Value, &'static str) {
    after.retain(|d| !sources.iter().any(|&j| *d.stream == *names[j]));
    for &j in sources {
        after.push(Dependency {
            stream: names[j].clone().into(),
            version: model[j].version,
        });
        model[j].merged_away = true;
        model[j].incr_only = true;
    }
    model[i].incr_only = true;
    let from: Vec<Value> = sources
        .iter()
        .map(|&j| Value::from(names[j].clone()))
        .collect();
    let op = Op::Merge {
        from: sources.iter().map(|&j| names[j].clone().into()).collect(),
    };
    (op, json!({ "from": from }), "Merged")
}

/// An `incr` (always, once the stream took part in a merge), a `delete`, a `set` or a
/// `patch`.
fn plain_op(rng: &mut Rng, incr_only: bool, delete_percent: u64) -> (Op, Value, &'static str) {
    if incr_only || rng.chance(40) {
        let mut data = Map::new();
        data.insert(
            format!("n{}", rng.index(3)),
            Value::from(rng.range(1, 9) as i64 - 3),
        );
        if rng.chance(30) {
            data.insert(
                format!("n{}", rng.index(3)),
                Value::from(rng.range(1, 5) as i64),
            );
        }
        (Op::Incr, Value::Object(data), "Counted")
    } else if rng.chance(delete_percent * 100 / 60) {
        (Op::Delete, Value::Null, "Deleted")
    } else if rng.chance(50) {
        let data = json!({
            "s0": format!("v{}", rng.below(100)),
            "n0": rng.below(50) as i64,
            "tags": [format!("t{}", rng.below(5))],
            "o": { "k": rng.below(10) as i64 },
        });
        (Op::Set, data, "Set")
    } else {
        let value = if rng.chance(20) {
            Value::Null
        } else {
            Value::from(format!("p{}", rng.below(100)))
        };
        (
            Op::Patch,
            json!({ "s1": value, "o": { "q": rng.below(10) as i64 } }),
            "Patched",
        )
    }
}

/// How a history reaches the consumer.
#[derive(Clone, Copy, Debug)]
pub enum Disorder {
    /// Fully shuffled.
    Shuffle,
    /// Mostly in order, each event displaced by up to this many places.
    Window(usize),
}

/// The history as delivered: reordered, with a share of events delivered twice.
pub fn deliver(
    seed: u64,
    history: &[Event],
    disorder: Disorder,
    duplicate_percent: u64,
) -> Vec<Event> {
    let mut rng = Rng::derive(seed, "delivery");
    let mut deliveries: Vec<Event> = Vec::with_capacity(history.len() * 2);
    for event in history {
        deliveries.push(event.clone());
        if rng.chance(duplicate_percent) {
            deliveries.push(event.clone());
        }
    }
    match disorder {
        Disorder::Shuffle => rng.shuffle(&mut deliveries),
        Disorder::Window(width) => {
            // Sort by a jittered key: each event moves by at most `width` places.
            let mut keyed: Vec<(usize, Event)> = deliveries
                .into_iter()
                .enumerate()
                .map(|(i, e)| (i + rng.index(width + 1), e))
                .collect();
            keyed.sort_by_key(|(key, _)| *key);
            deliveries = keyed.into_iter().map(|(_, e)| e).collect();
        }
    }
    deliveries
}

/// Deliveries through an outbox-style publisher that crashes between publishing a batch
/// and marking it published, so the whole batch is published again; two publisher
/// instances overlap for a while, interleaving their batches.
pub fn deliver_with_publisher_crashes(
    seed: u64,
    history: &[Event],
    batch: usize,
    crash_percent: u64,
) -> Vec<Event> {
    let mut rng = Rng::derive(seed, "publisher");
    let mut deliveries = Vec::with_capacity(history.len() * 2);
    let mut marked = 0usize;
    while marked < history.len() {
        let end = (marked + batch).min(history.len());
        if rng.chance(crash_percent) {
            // Published part of the batch, then crashed before marking: a restarted
            // publisher starts over from the last mark.
            let published = marked + rng.index(end - marked + 1);
            deliveries.extend_from_slice(&history[marked..published]);
            continue;
        }
        deliveries.extend_from_slice(&history[marked..end]);
        marked = end;
    }
    // A second instance racing the first reorders neighbouring batches.
    let mut chunks: Vec<Vec<Event>> = deliveries
        .chunks(batch.max(1))
        .map(|c| c.to_vec())
        .collect();
    for i in 1..chunks.len() {
        if rng.chance(25) {
            chunks.swap(i - 1, i);
        }
    }
    chunks.into_iter().flatten().collect()
}
