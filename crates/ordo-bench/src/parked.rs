//! Memory and recovery with many parked events: N products each waiting for one of a
//! thousand categories that have not arrived.
//!
//! Measured through the real runtime and SQLite store, once with spilling (the default:
//! at most [`ordo_core::limits::PARKED_STREAMS_IN_MEMORY_MAX_DEFAULT`] parked streams keep
//! their events in memory) and once with every parked event kept in memory (the
//! baseline: what the heap would hold without spilling). Then a restart: the time to
//! resume (snapshot and restore) against the time to read every waiting row back
//! (what a restore that loads everything costs), and the heap after it. Last, the
//! categories arrive and every product must be released and applied.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use ordo_core::Config;
use ordo_runtime::{Consumer, FileSource, RunOptions};
use ordo_store::SqliteStore;

use crate::alloc::{allocated_since, start_counting};

/// Categories the products wait for.
const CATEGORIES: usize = 1_000;

/// The run's size.
#[derive(Clone, Copy, Debug)]
pub struct ParkedShape {
    /// Parked events (one product stream each).
    pub events: usize,
}

impl ParkedShape {
    /// A million parked events.
    pub fn full() -> Self {
        ParkedShape { events: 1_000_000 }
    }

    /// Fewer, for `--quick`.
    pub fn quick() -> Self {
        ParkedShape { events: 100_000 }
    }
}

/// What was measured.
#[derive(Clone, Debug)]
pub struct ParkedResult {
    /// Parked events.
    pub events: usize,
    /// Heap held by the consumer after parking them, spilling (bytes).
    pub heap_bytes_spilled: usize,
    /// The same, every parked event kept in memory (the baseline).
    pub heap_bytes_in_memory: usize,
    /// Streams spilled at the end of the spilling run.
    pub spilled_streams: usize,
    /// Time to resume from the store after a restart (ms).
    pub resume_ms: f64,
    /// Time to read every waiting row back and parse it (the baseline, ms).
    pub resume_raw_ms: f64,
    /// Heap after the resume (bytes).
    pub heap_bytes_after_resume: usize,
    /// Time from the categories' arrival until every product was applied (ms).
    pub release_ms: f64,
}

impl ParkedResult {
    /// Heap while parked, spilling against keeping everything in memory.
    pub fn spilled_vs_in_memory(&self) -> f64 {
        self.heap_bytes_spilled as f64 / self.heap_bytes_in_memory.max(1) as f64
    }

    /// Resume time against reading every waiting row back.
    pub fn resume_vs_raw_read(&self) -> f64 {
        self.resume_ms / self.resume_raw_ms.max(1e-9)
    }
}

struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write_products(path: &std::path::Path, events: usize) -> Result<(), String> {
    use std::io::Write;
    let file = std::fs::File::create(path).map_err(|e| e.to_string())?;
    let mut out = std::io::BufWriter::new(file);
    for i in 0..events {
        writeln!(
            out,
            r#"{{"id":"p{i}","stream":"product-{i}","version":1,"type":"ProductAdded","op":"set","data":{{"name":"p{i}"}},"after":[{{"stream":"category-{}","version":1}}]}}"#,
            i % CATEGORIES
        )
        .map_err(|e| e.to_string())?;
    }
    out.flush().map_err(|e| e.to_string())
}

fn write_categories(path: &std::path::Path) -> Result<(), String> {
    let lines: Vec<String> = (0..CATEGORIES)
        .map(|c| {
            format!(
                r#"{{"id":"c{c}","stream":"category-{c}","version":1,"type":"CategoryAdded","op":"set","data":{{"name":"c{c}"}}}}"#
            )
        })
        .collect();
    std::fs::write(path, lines.join("\n")).map_err(|e| e.to_string())
}

fn consume(
    store: SqliteStore,
    source: &str,
    file: &std::path::Path,
    config: Config,
) -> Result<(Consumer<SqliteStore>, usize), String> {
    let before = start_counting();
    let mut consumer = Consumer::open(store, source, config).map_err(|e| e.to_string())?;
    consumer.verbose = false;
    let mut input = FileSource::open(&file.to_string_lossy()).map_err(|e| e.to_string())?;
    ordo_runtime::run(
        &mut consumer,
        &mut input,
        &RunOptions {
            exit_when_idle: true,
            ..RunOptions::default()
        },
        &AtomicBool::new(false),
    )
    .map_err(|e| e.to_string())?;
    let heap = allocated_since(before);
    Ok((consumer, heap))
}

/// A restart's cost: snapshot and restore, against reading every waiting row back.
struct Resumed {
    resume_ms: f64,
    resume_raw_ms: f64,
    heap_bytes_after_resume: usize,
}

fn resume(
    open: &impl Fn(&str) -> Result<SqliteStore, String>,
    events: usize,
) -> Result<Resumed, String> {
    let started = Instant::now();
    let mut raw = open("spilled.db")?;
    let rows = raw.read_all_pending().map_err(|e| e.to_string())?;
    let resume_raw_ms = started.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(rows, events, "every parked event is in the store");
    drop(raw);
    let before = start_counting();
    let started = Instant::now();
    let consumer = Consumer::open(open("spilled.db")?, "file:categories", Config::default())
        .map_err(|e| e.to_string())?;
    let resume_ms = started.elapsed().as_secs_f64() * 1000.0;
    let heap_bytes_after_resume = allocated_since(before);
    drop(consumer);
    Ok(Resumed {
        resume_ms,
        resume_raw_ms,
        heap_bytes_after_resume,
    })
}

/// The categories arrive and every product goes: the time until all are applied (ms).
fn release(store: SqliteStore, categories: &Path, events: usize) -> Result<f64, String> {
    let started = Instant::now();
    let (mut consumer, _) = consume(store, "file:categories", categories, Config::default())?;
    let release_ms = started.elapsed().as_secs_f64() * 1000.0;
    let applied = consumer.counters().applied;
    assert_eq!(
        applied as usize,
        events + CATEGORIES,
        "every product released and applied"
    );
    assert_eq!(
        consumer
            .store()
            .pending_count()
            .map_err(|e| e.to_string())?,
        0
    );
    Ok(release_ms)
}

/// Runs the measurement.
pub fn run(shape: ParkedShape) -> Result<ParkedResult, String> {
    let scratch =
        Scratch(std::env::temp_dir().join(format!("ordo-bench-parked-{}", std::process::id())));
    std::fs::create_dir_all(&scratch.0).map_err(|e| e.to_string())?;
    let products = scratch.0.join("products.jsonl");
    let categories = scratch.0.join("categories.jsonl");
    write_products(&products, shape.events)?;
    write_categories(&categories)?;
    let open = |name: &str| {
        SqliteStore::open(&scratch.0.join(name).to_string_lossy(), true).map_err(|e| e.to_string())
    };

    let (consumer, heap_bytes_in_memory) = consume(
        open("in-memory.db")?,
        "file:products",
        &products,
        Config {
            parked_streams_in_memory_max: usize::MAX,
            ..Config::default()
        },
    )?;
    drop(consumer);
    let (consumer, heap_bytes_spilled) = consume(
        open("spilled.db")?,
        "file:products",
        &products,
        Config::default(),
    )?;
    let spilled_streams = consumer.engine().spilled_streams();
    drop(consumer);

    let resumed = resume(&open, shape.events)?;
    let release_ms = release(open("spilled.db")?, &categories, shape.events)?;
    let Resumed {
        resume_ms,
        resume_raw_ms,
        heap_bytes_after_resume,
    } = resumed;
    Ok(ParkedResult {
        events: shape.events,
        heap_bytes_spilled,
        heap_bytes_in_memory,
        spilled_streams,
        resume_ms,
        resume_raw_ms,
        heap_bytes_after_resume,
        release_ms,
    })
}
