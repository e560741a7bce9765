//! The core alone: decisions per second on a disordered workload, beside a plain HashMap
//! apply loop over the same events, and heap bytes per idle tracked stream.

use std::collections::HashMap;
use std::time::Instant;

use ordo_core::{Config, Engine, Event, Op, Outcome, SourcePosition};
use ordo_sim::Rng;
use serde_json::Value;

use crate::alloc::{allocated_since, start_counting};

/// The core benchmark's size.
#[derive(Clone, Copy, Debug)]
pub struct CoreShape {
    /// Distinct streams.
    pub streams: usize,
    /// Events per stream.
    pub versions: u64,
    /// How far (in places) an event may be displaced from its in-order position.
    pub displacement: usize,
    /// Share of events delivered twice (percent).
    pub duplicate_percent: u64,
    /// Events between change-set takes (a commit's worth).
    pub batch: usize,
    /// Timed repetitions; the best counts.
    pub repetitions: usize,
}

impl CoreShape {
    /// 1M events over 100k streams.
    pub fn full() -> Self {
        CoreShape {
            streams: 100_000,
            versions: 10,
            displacement: 1500,
            duplicate_percent: 5,
            batch: 10_000,
            repetitions: 3,
        }
    }

    /// A fifth of it, for `--quick`.
    pub fn quick() -> Self {
        CoreShape {
            streams: 20_000,
            repetitions: 2,
            ..CoreShape::full()
        }
    }
}

/// Results of the core benchmark.
#[derive(Clone, Debug)]
pub struct CoreResult {
    /// Events handled per pass.
    pub events: usize,
    /// Engine decisions per second, warm (best repetition).
    pub engine_events_per_s: f64,
    /// The HashMap apply loop's events per second, warm (best repetition).
    pub baseline_events_per_s: f64,
    /// engine / baseline, warm.
    pub ratio: f64,
    /// Engine decisions per second, cold: every stream new to the engine.
    pub engine_cold_events_per_s: f64,
    /// The HashMap loop, cold.
    pub baseline_cold_events_per_s: f64,
    /// Heap bytes per idle stream, engine state only (dedupe window of two ids).
    pub bytes_per_idle_stream: f64,
    /// Heap bytes per idle stream with the default dedupe window holding one id per stream.
    pub bytes_per_idle_stream_with_dedupe: f64,
    /// Counters of the last engine (both passes), as proof it did the work.
    pub counters: ordo_core::Counters,
}

fn bench_event(stream: &str, version: u64) -> Event {
    Event {
        id: format!("{stream}/{version}").into(),
        stream: stream.into(),
        version,
        event_type: "Counted".into(),
        op: Op::Incr,
        data: Value::Null,
        after: Vec::new(),
        extra: None,
    }
}

/// Streams active at once in the workload: each stream's versions are spread over a
/// block of this many streams' traffic, as bursts of activity are in production.
pub const ACTIVE_STREAMS: usize = 1000;

/// The disordered workload: within blocks of [`ACTIVE_STREAMS`] streams the versions
/// interleave round-robin; then every event is displaced by up to `displacement` places
/// (retries, partition lag), which reorders a stream's own versions; some arrive twice.
pub fn workload(shape: CoreShape, seed: u64, first_version: u64) -> Vec<Event> {
    let mut rng = Rng::derive(seed, "core-bench");
    let total = shape.streams * shape.versions as usize;
    let mut keyed: Vec<(usize, Event)> = Vec::with_capacity(total + total / 10);
    for s in 0..shape.streams {
        let name = format!("stream-{s}");
        let block = s / ACTIVE_STREAMS;
        let lane = s % ACTIVE_STREAMS;
        for round in 0..shape.versions {
            let version = first_version + round;
            let position = block * ACTIVE_STREAMS * shape.versions as usize
                + round as usize * ACTIVE_STREAMS
                + lane;
            let key = position + rng.index(shape.displacement + 1);
            let event = bench_event(&name, version);
            if rng.chance(shape.duplicate_percent) {
                keyed.push((key + rng.index(shape.displacement + 1), event.clone()));
            }
            keyed.push((key, event));
        }
    }
    keyed.sort_by_key(|(key, _)| *key);
    keyed.into_iter().map(|(_, e)| e).collect()
}

/// Runs the engine over the events (a profiling entry point too).
pub fn run_engine(engine: &mut Engine, events: Vec<Event>, batch: usize) -> f64 {
    let count = events.len();
    let started = Instant::now();
    for (offset, event) in events.into_iter().enumerate() {
        let position = SourcePosition {
            partition: 0,
            offset: offset as u64,
        };
        engine.handle_event(0, Some(position), event);
        while let Some(work) = engine.poll_work(0) {
            engine.handle_outcome(0, work, Outcome::Applied);
        }
        if offset % batch == batch - 1 {
            std::hint::black_box(engine.take_changes());
        }
    }
    std::hint::black_box(engine.take_changes());
    let seconds = started.elapsed().as_secs_f64();
    count as f64 / seconds
}

/// The baseline: a plain HashMap apply loop (keep the newest version per stream).
pub fn run_baseline(state: &mut HashMap<Box<str>, (u64, i64)>, events: Vec<Event>) -> f64 {
    let count = events.len();
    let started = Instant::now();
    for event in events {
        match state.get_mut(&*event.stream) {
            Some((version, value)) => {
                if event.version > *version {
                    *version = event.version;
                    *value += 1;
                }
            }
            None => {
                state.insert(event.stream, (event.version, 1));
            }
        }
    }
    std::hint::black_box(&*state);
    let seconds = started.elapsed().as_secs_f64();
    count as f64 / seconds
}

fn idle_stream_bytes(streams: usize, dedupe_window_ids: usize) -> f64 {
    // Measured from before the events exist to after they are all consumed, so what is
    // left is what the engine keeps.
    let before = start_counting();
    let events: Vec<Event> = (0..streams)
        .map(|i| bench_event(&format!("stream-{i}"), 1))
        .collect();
    let mut engine = Engine::new(Config {
        dedupe_window_ids,
        ..Config::default()
    });
    for event in events {
        engine.handle_event(0, None, event);
        while let Some(work) = engine.poll_work(0) {
            engine.handle_outcome(0, work, Outcome::Applied);
        }
    }
    drop(engine.take_changes());
    let bytes = allocated_since(before) as f64 / streams as f64;
    drop(engine);
    bytes
}

/// Runs the core benchmark: a cold pass (every stream new) over versions 1..=n, then a
/// warm pass over versions n+1..=2n on the same engine (streams known, as in a consumer
/// that has been running), each beside the HashMap loop in the same state.
pub fn run(shape: CoreShape) -> CoreResult {
    let mut cold_best: f64 = 0.0;
    let mut warm_best: f64 = 0.0;
    let mut cold_baseline_best: f64 = 0.0;
    let mut warm_baseline_best: f64 = 0.0;
    let mut counters = ordo_core::Counters::default();
    let mut events = 0;
    for repetition in 0..shape.repetitions {
        let seed = repetition as u64 + 1;
        // Alternate engine and baseline so drift in the machine's speed hits both alike;
        // workloads are built outside the timed sections.
        let mut engine = Engine::new(Config::default());
        cold_best = cold_best.max(run_engine(
            &mut engine,
            workload(shape, seed, 1),
            shape.batch,
        ));
        let mut state = HashMap::new();
        cold_baseline_best =
            cold_baseline_best.max(run_baseline(&mut state, workload(shape, seed, 1)));
        let warm = workload(shape, seed, shape.versions + 1);
        events = warm.len();
        warm_best = warm_best.max(run_engine(&mut engine, warm, shape.batch));
        warm_baseline_best = warm_baseline_best.max(run_baseline(
            &mut state,
            workload(shape, seed, shape.versions + 1),
        ));
        counters = engine.counters();
    }
    CoreResult {
        events,
        engine_events_per_s: warm_best,
        baseline_events_per_s: warm_baseline_best,
        ratio: warm_best / warm_baseline_best,
        engine_cold_events_per_s: cold_best,
        baseline_cold_events_per_s: cold_baseline_best,
        bytes_per_idle_stream: idle_stream_bytes(shape.streams, 2),
        bytes_per_idle_stream_with_dedupe: idle_stream_bytes(
            shape.streams,
            ordo_core::limits::DEDUPE_WINDOW_IDS_DEFAULT,
        ),
        counters,
    }
}
