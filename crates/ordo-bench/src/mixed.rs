//! The mixed workload, whole-process. A team's topic mixes every mechanism: `ordo demo`'s
//! mixed scenario (sets, patches, incrs, deletes, merges with late purchases, products
//! waiting for categories, an outbox that re-publishes, redelivered copies) with a few
//! malformed lines, as one JSONL file. The `ordo` binary itself consumes it, as a child
//! process (`run --source file:… --store sqlite:… --exit-when-idle`), timed whole: wall
//! clock, and CPU from `getrusage(RUSAGE_CHILDREN)`. Beside it in the same run, the raw
//! loop a team would write without ordo: read each line, parse it, upsert one row per
//! event (its stream the key, its data the document) in batched transactions, with no
//! ordering, no dedupe and no merging.
//!
//! Then how the cost grows with the work: CPU µs per event against the number of streams,
//! and against the share of events that wait (parked behind an `after` until their
//! dependency arrives at the end of the file).

use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use ordo_sim::scenarios::Scenario;
use ordo_sim::Rng;
use rusqlite::Connection;

/// Lines per transaction of the raw loop: `ordo run`'s own default batch.
const RAW_BATCH_LINES: usize = ordo_runtime::limits::COMMIT_EVENTS_MAX_DEFAULT;

/// One malformed line in this many (a truncated event, as a crashed producer leaves).
const MALFORMED_EVERY: usize = 1_000;

/// Dependencies the parked events of the sweep wait for (categories).
const SWEEP_CATEGORIES: usize = 100;

/// What the mixed benchmark runs.
#[derive(Clone, Debug)]
pub struct MixedShape {
    /// Sizes of the mixed scenario, each measured against the raw loop.
    pub events: Vec<usize>,
    /// Events in each run of the two sweeps.
    pub sweep_events: usize,
    /// Stream counts of the first sweep (no event waits).
    pub sweep_streams: Vec<usize>,
    /// Shares of waiting events (percent) of the second sweep.
    pub sweep_parked_percents: Vec<u64>,
}

impl MixedShape {
    /// 150k and 1.5M events; sweeps of 1M events over 1k, 100k and 1M streams, and with
    /// 0, 10 and 50 % of events waiting.
    pub fn full() -> Self {
        MixedShape {
            events: vec![150_000, 1_500_000],
            sweep_events: 1_000_000,
            sweep_streams: vec![1_000, 100_000, 1_000_000],
            sweep_parked_percents: vec![0, 10, 50],
        }
    }

    /// 150k events; sweeps of 100k events over 1k and 100k streams, with 0 and 50 %
    /// waiting.
    pub fn quick() -> Self {
        MixedShape {
            events: vec![150_000],
            sweep_events: 100_000,
            sweep_streams: vec![1_000, 100_000],
            sweep_parked_percents: vec![0, 50],
        }
    }
}

/// One whole-process measurement.
#[derive(Clone, Copy, Debug)]
pub struct Measured {
    /// Lines in the file (events, redelivered copies and malformed lines).
    pub lines: usize,
    /// Wall-clock seconds.
    pub wall_s: f64,
    /// CPU seconds (user + system).
    pub cpu_s: f64,
}

impl Measured {
    /// Lines per wall-clock second.
    pub fn per_s(&self) -> f64 {
        self.lines as f64 / self.wall_s.max(1e-9)
    }

    /// CPU microseconds per line.
    pub fn cpu_us_per_event(&self) -> f64 {
        self.cpu_s * 1e6 / self.lines.max(1) as f64
    }
}

/// The mixed scenario at one size: ordo against the raw loop.
#[derive(Clone, Copy, Debug)]
pub struct MixedRow {
    /// `ordo run`, whole process.
    pub ordo: Measured,
    /// The raw upsert loop, in this process.
    pub raw: Measured,
}

impl MixedRow {
    /// ordo's lines per second against the raw loop's.
    pub fn vs_raw_upsert(&self) -> f64 {
        self.ordo.per_s() / self.raw.per_s().max(1e-9)
    }
}

/// One point of a sweep.
#[derive(Clone, Copy, Debug)]
pub struct SweepPoint {
    /// The streams, or the percent of events waiting.
    pub x: u64,
    /// `ordo run`, whole process.
    pub ordo: Measured,
}

/// What the mixed benchmark measured.
#[derive(Clone, Debug)]
pub struct MixedReport {
    /// Per size of the mixed scenario: (events in the history, the measurements).
    pub rows: Vec<(usize, MixedRow)>,
    /// CPU and rate against the number of streams.
    pub by_streams: Vec<SweepPoint>,
    /// CPU and rate against the percent of events waiting.
    pub by_parked_percent: Vec<SweepPoint>,
}

/// Removes the scratch directory when the benchmark ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the benchmark; `ordo` is the binary to measure (the running one, for `ordo bench`).
pub fn run(ordo: &Path, shape: &MixedShape) -> Result<MixedReport, String> {
    let scratch =
        Scratch(std::env::temp_dir().join(format!("ordo-bench-mixed-{}", std::process::id())));
    std::fs::create_dir_all(&scratch.0).map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    for &events in &shape.events {
        let file = scratch.0.join(format!("mixed-{events}.jsonl"));
        write_mixed(&file, events)?;
        let ordo_run = run_ordo(ordo, &file, &scratch.0.join(format!("ordo-{events}.db")))?;
        let raw = run_raw(&file, &scratch.0.join(format!("raw-{events}.db")))?;
        rows.push((
            events,
            MixedRow {
                ordo: ordo_run,
                raw,
            },
        ));
    }
    let mut by_streams = Vec::new();
    for &streams in &shape.sweep_streams {
        let file = scratch.0.join(format!("streams-{streams}.jsonl"));
        write_sweep(&file, shape.sweep_events, streams, 0)?;
        let store = scratch.0.join(format!("streams-{streams}.db"));
        let ordo_run = run_ordo(ordo, &file, &store)?;
        by_streams.push(SweepPoint {
            x: streams as u64,
            ordo: ordo_run,
        });
    }
    let mut by_parked_percent = Vec::new();
    for &percent in &shape.sweep_parked_percents {
        let file = scratch.0.join(format!("parked-{percent}.jsonl"));
        let streams = shape.sweep_streams.first().copied().unwrap_or(1_000);
        write_sweep(&file, shape.sweep_events, streams, percent)?;
        let store = scratch.0.join(format!("parked-{percent}.db"));
        let ordo_run = run_ordo(ordo, &file, &store)?;
        by_parked_percent.push(SweepPoint {
            x: percent,
            ordo: ordo_run,
        });
    }
    Ok(MixedReport {
        rows,
        by_streams,
        by_parked_percent,
    })
}

/// The mixed scenario's deliveries as JSONL, one malformed line in [`MALFORMED_EVERY`].
fn write_mixed(path: &Path, events: usize) -> Result<(), String> {
    let history = Scenario::Mixed.history(1, events);
    let deliveries = Scenario::Mixed.deliveries(1, &history);
    let mut out = BufWriter::new(std::fs::File::create(path).map_err(|e| e.to_string())?);
    for (i, event) in deliveries.iter().enumerate() {
        let line = event.to_json_string();
        if i % MALFORMED_EVERY == MALFORMED_EVERY - 1 {
            // Cut in half, as a crashed producer leaves it (bytes: a cut may split a
            // character, which is malformed too).
            let half = &line.as_bytes()[..line.len() / 2];
            out.write_all(half)
                .and_then(|()| out.write_all(b"\n"))
                .map_err(|e| e.to_string())?;
        }
        writeln!(out, "{line}").map_err(|e| e.to_string())?;
    }
    out.flush().map_err(|e| e.to_string())
}

/// `events` events over `streams` streams (sets, then patches and incrs), slightly
/// displaced; `parked_percent` of them name a category in `after` whose only event comes
/// at the end of the file, so they wait (parked) until then.
fn write_sweep(
    path: &Path,
    events: usize,
    streams: usize,
    parked_percent: u64,
) -> Result<(), String> {
    let mut rng = Rng::derive(events as u64 ^ streams as u64, "mixed-sweep");
    let mut versions = vec![0u64; streams.max(1)];
    let mut keyed: Vec<(usize, String)> = Vec::with_capacity(events + SWEEP_CATEGORIES);
    for i in 0..events {
        let s = if i < streams { i } else { rng.index(streams) };
        versions[s] += 1;
        let version = versions[s];
        let (op, data) = match version {
            1 => (
                "set",
                format!(
                    r#"{{"name":"item {s}","qty":{},"tags":["t{}"]}}"#,
                    rng.below(100),
                    rng.below(5)
                ),
            ),
            v if v % 2 == 0 => ("patch", format!(r#"{{"price":{}}}"#, rng.below(1000))),
            _ => ("incr", r#"{"qty":1}"#.to_string()),
        };
        let after = if rng.chance(parked_percent) {
            format!(
                r#","after":[{{"stream":"category-{}","version":1}}]"#,
                rng.index(SWEEP_CATEGORIES)
            )
        } else {
            String::new()
        };
        let line = format!(
            r#"{{"id":"e{i}","stream":"product-{s}","version":{version},"type":"Changed","op":"{op}","data":{data}{after}}}"#
        );
        // Retries and partition lag: up to 20 places late.
        keyed.push((i + rng.index(21), line));
    }
    keyed.sort_by_key(|(key, _)| *key);
    let mut out = BufWriter::new(std::fs::File::create(path).map_err(|e| e.to_string())?);
    for (_, line) in &keyed {
        writeln!(out, "{line}").map_err(|e| e.to_string())?;
    }
    if parked_percent > 0 {
        for c in 0..SWEEP_CATEGORIES {
            writeln!(
                out,
                r#"{{"id":"c{c}","stream":"category-{c}","version":1,"type":"Created","op":"set","data":{{"name":"category {c}"}}}}"#
            )
            .map_err(|e| e.to_string())?;
        }
    }
    out.flush().map_err(|e| e.to_string())
}

/// CPU seconds (user + system) of `who`: `RUSAGE_SELF` (this process so far) or
/// `RUSAGE_CHILDREN` (the children it has waited for).
#[allow(unsafe_code)]
fn cpu_s(who: libc::c_int) -> f64 {
    // SAFETY: `rusage` is plain integers, for which all zeroes is a valid value, and
    // `getrusage` only writes the struct it is handed.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// `ordo run` on `file` into a new SQLite store, whole process: started, run until idle,
/// exited. Fails unless it exits 0.
fn run_ordo(ordo: &Path, file: &Path, store: &Path) -> Result<Measured, String> {
    let lines = count_lines(file)?;
    let cpu_before = cpu_s(libc::RUSAGE_CHILDREN);
    let started = Instant::now();
    let output = Command::new(ordo)
        .arg("run")
        .arg("--source")
        .arg(format!("file:{}", file.display()))
        .arg("--store")
        .arg(format!("sqlite:{}", store.display()))
        .arg("--exit-when-idle")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot start {}: {e}", ordo.display()))?;
    let wall_s = started.elapsed().as_secs_f64();
    if !output.status.success() {
        return Err(format!(
            "ordo run failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(Measured {
        lines,
        wall_s,
        cpu_s: cpu_s(libc::RUSAGE_CHILDREN) - cpu_before,
    })
}

/// The loop without ordo: parse each line, upsert its stream's row with its data, in
/// batched transactions (WAL, synchronous=NORMAL, as ordo's store); a line that does not
/// parse is passed over.
fn run_raw(file: &Path, store: &Path) -> Result<Measured, String> {
    let cpu_before = cpu_s(libc::RUSAGE_SELF);
    let started = Instant::now();
    let input = std::io::BufReader::new(std::fs::File::open(file).map_err(|e| e.to_string())?);
    let mut db = Connection::open(store).map_err(|e| e.to_string())?;
    db.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))
        .map_err(|e| e.to_string())?;
    db.execute_batch(
        "PRAGMA synchronous=NORMAL;
         CREATE TABLE docs (stream TEXT PRIMARY KEY, doc TEXT);",
    )
    .map_err(|e| e.to_string())?;
    let mut lines = 0;
    let mut batch: Vec<String> = Vec::with_capacity(RAW_BATCH_LINES);
    for line in input.lines() {
        batch.push(line.map_err(|e| e.to_string())?);
        if batch.len() == RAW_BATCH_LINES {
            lines += upsert_batch(&mut db, &batch)?;
            batch.clear();
        }
    }
    lines += upsert_batch(&mut db, &batch)?;
    Ok(Measured {
        lines,
        wall_s: started.elapsed().as_secs_f64(),
        cpu_s: cpu_s(libc::RUSAGE_SELF) - cpu_before,
    })
}

/// One transaction of the raw loop. Returns the lines it read.
fn upsert_batch(db: &mut Connection, batch: &[String]) -> Result<usize, String> {
    let transaction = db.transaction().map_err(|e| e.to_string())?;
    crate::embedded::upsert_raw(&transaction, batch.iter().map(String::as_str))?;
    transaction.commit().map_err(|e| e.to_string())?;
    Ok(batch.len())
}

fn count_lines(file: &Path) -> Result<usize, String> {
    let input = std::io::BufReader::new(std::fs::File::open(file).map_err(|e| e.to_string())?);
    Ok(input.split(b'\n').count())
}
