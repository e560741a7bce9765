//! Embedded end-to-end: the embedded log through the runtime into the SQLite store,
//! durable (WAL, synchronous=NORMAL), beside a raw batched SQLite upsert loop reading the
//! same log: the hand-written consumer with no ordering guarantees at all.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use ordo_core::Config;
use ordo_log::EventLog;
use ordo_runtime::telemetry::Telemetry;
use ordo_runtime::{Consumer, LogSource, RunOptions};
use ordo_sim::Rng;
use rusqlite::{params, Connection};

/// The embedded benchmark's size.
#[derive(Clone, Copy, Debug)]
pub struct EmbeddedShape {
    /// Events in the log.
    pub events: usize,
    /// Distinct streams.
    pub streams: usize,
    /// Repetitions; the best counts.
    pub repetitions: usize,
}

impl EmbeddedShape {
    /// 200k events over 10k streams.
    pub fn full() -> Self {
        EmbeddedShape {
            events: 200_000,
            streams: 10_000,
            repetitions: 2,
        }
    }

    /// 50k events, for `--quick`.
    pub fn quick() -> Self {
        EmbeddedShape {
            events: 50_000,
            streams: 5_000,
            repetitions: 1,
        }
    }
}

/// Results of the embedded benchmark.
#[derive(Clone, Debug)]
pub struct EmbeddedResult {
    /// Deliveries in the log.
    pub events: usize,
    /// ordo's durable events per second (best repetition).
    pub embedded_events_per_s: f64,
    /// The raw upsert loop's events per second (best repetition).
    pub baseline_events_per_s: f64,
    /// ordo / raw.
    pub ratio: f64,
    /// Live tail: append-to-delivery latency, median (ms).
    pub tail_latency_ms_p50: f64,
    /// Live tail: append-to-delivery latency, 99th percentile (ms).
    pub tail_latency_ms_p99: f64,
    /// ordo's durable events per second with the metrics on and scraped (best run).
    pub metrics_events_per_s: f64,
    /// Metrics on / off (alternating runs, best of each).
    pub metrics_vs_off: f64,
}

/// Fewest alternating off/on pairs of the metrics A/B.
pub const METRICS_PAIRS_MIN: usize = 3;

/// Events appended one at a time for the live-tail latency measurement.
pub const TAIL_EVENTS: usize = 200;

/// Measures how soon a reader caught up at the log's end sees a new append: a writer
/// appends one event at a time through its own handle while a `LogSource` waits.
fn tail_latency(log_path: &str) -> Result<(f64, f64), String> {
    use ordo_runtime::{Polled, Source};
    let mut writer = EventLog::open(log_path, false).map_err(|e| e.to_string())?;
    let start_position = writer.last_position().map_err(|e| e.to_string())?;
    let reader_path = log_path.to_string();
    let reader = std::thread::spawn(move || -> Result<Vec<Instant>, String> {
        let mut source = LogSource::open(&reader_path).map_err(|e| e.to_string())?;
        source.resume(&[(0, start_position)]);
        let mut seen = Vec::with_capacity(TAIL_EVENTS);
        while seen.len() < TAIL_EVENTS {
            match source
                .poll(1, std::time::Duration::from_secs(5))
                .map_err(|e| e.to_string())?
            {
                Polled::Events(events) => seen.extend(events.iter().map(|_| Instant::now())),
                _ => return Err("the live tail saw nothing for 5 s".into()),
            }
        }
        Ok(seen)
    });
    let mut appended = Vec::with_capacity(TAIL_EVENTS);
    for i in 0..TAIL_EVENTS {
        std::thread::sleep(std::time::Duration::from_millis(3));
        let line = format!(
            r#"{{"id":"tail-{i}","stream":"tail","version":{},"type":"T","op":"incr","data":{{"n":1}}}}"#,
            i + 1
        );
        appended.push(Instant::now());
        writer
            .append_lines([line.as_str()])
            .map_err(|e| e.to_string())?;
    }
    let seen = reader
        .join()
        .map_err(|_| "the tail reader panicked".to_string())??;
    let mut latencies: Vec<f64> = seen
        .iter()
        .zip(&appended)
        .map(|(seen, appended)| seen.saturating_duration_since(*appended).as_secs_f64() * 1000.0)
        .collect();
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    Ok((at(0.5), at(0.99)))
}

struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn build_log(path: &str, shape: EmbeddedShape) -> Result<usize, String> {
    let mut rng = Rng::derive(1, "embedded-bench");
    let mut versions = vec![0u64; shape.streams];
    let mut keyed: Vec<(usize, String)> = Vec::with_capacity(shape.events + shape.events / 50);
    for i in 0..shape.events {
        let s = rng.index(shape.streams);
        versions[s] += 1;
        let line = format!(
            r#"{{"id":"e{i}","stream":"account-{s}","version":{},"type":"Credited","op":"incr","data":{{"balance":{},"operations":1}}}}"#,
            versions[s],
            rng.range(1, 100)
        );
        // Up to 50 places of displacement (retries, partition lag), 2% redelivered.
        let key = i + rng.index(51);
        if rng.chance(2) {
            keyed.push((key + rng.index(200), line.clone()));
        }
        keyed.push((key, line));
    }
    keyed.sort_by_key(|(key, _)| *key);
    let mut log = EventLog::open(path, true).map_err(|e| e.to_string())?;
    log.append_lines(keyed.iter().map(|(_, l)| l.as_str()))
        .map_err(|e| e.to_string())?;
    Ok(keyed.len())
}

/// ordo's rate from a broker: `source` consumed into a fresh SQLite store (in a temporary
/// directory named after `tag`) until drained, counted from the first delivery to the end
/// of the commit that made the last one durable (the quiet time that tells "drained" and
/// the store's close are not throughput).
pub(crate) fn durable_rate(
    tag: &str,
    checkpoint_key: &str,
    source: &mut dyn ordo_runtime::Source,
) -> Result<f64, String> {
    let dir = std::env::temp_dir().join(format!("ordo-{tag}-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let store_path = dir.join("state.db");
    let _ = std::fs::remove_file(&store_path);
    let result = (|| {
        let store = format!("sqlite:{}", store_path.to_str().ok_or("path")?);
        let report = consume_until_idle(&store, checkpoint_key, source, None)?;
        let first = report.first_delivery.ok_or("ordo read nothing")?;
        let durable = report
            .last_delivery_commit
            .ok_or("ordo committed nothing")?;
        Ok(report.delivered as f64 / durable.duration_since(first).as_secs_f64())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Opens a fresh consumer on `store` and runs it until `source` is drained.
pub(crate) fn consume_until_idle(
    store: &str,
    checkpoint_key: &str,
    source: &mut dyn ordo_runtime::Source,
    telemetry: Option<Arc<Telemetry>>,
) -> Result<ordo_runtime::RunReport, String> {
    let store = ordo_store::AnyStore::open(store, true).map_err(|e| e.to_string())?;
    let mut consumer =
        Consumer::open(store, checkpoint_key, Config::default()).map_err(|e| e.to_string())?;
    consumer.verbose = false;
    if let Some(telemetry) = telemetry {
        consumer.set_telemetry(telemetry);
    }
    let options = RunOptions {
        exit_when_idle: true,
        ..RunOptions::default()
    };
    ordo_runtime::run(&mut consumer, source, &options, &AtomicBool::new(false))
        .map_err(|e| e.to_string())
}

fn run_ordo(log: &str, store: &str) -> Result<f64, String> {
    let started = Instant::now();
    let mut source = LogSource::open(log).map_err(|e| e.to_string())?;
    let report = consume_until_idle(store, &format!("log:{log}"), &mut source, None)?;
    Ok(report.delivered as f64 / started.elapsed().as_secs_f64())
}

/// How often the metrics A/B scrapes the running consumer: far more often than a
/// Prometheus server would (15 s is usual), so the measured cost is an upper bound.
pub const SCRAPE_INTERVAL_MS: u64 = 100;

/// [`run_ordo`] with the metrics on, as `ordo run --metrics` runs them: telemetry in the
/// loop and the endpoint served on a thread of its own, scraped every
/// [`SCRAPE_INTERVAL_MS`] (each scrape reads the store's status).
fn run_ordo_with_metrics(log: &str, store: &str) -> Result<f64, String> {
    let telemetry = Telemetry::new(ordo_runtime::telemetry::STUCK_MS_DEFAULT);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let url = store.to_string();
    let mut reader_store: Option<ordo_store::AnyStore> = None;
    let reader: ordo_runtime::telemetry::StatusReader = Box::new(move || {
        if reader_store.is_none() {
            reader_store = Some(
                ordo_store::AnyStore::open_read_only(&url).map_err(ordo_store::ReadError::from)?,
            );
        }
        reader_store.as_mut().expect("just opened").status_summary()
    });
    let serving = ordo_runtime::telemetry::serve_in_background(ordo_runtime::telemetry::Endpoint {
        listener,
        telemetry: telemetry.clone(),
        reader,
    });
    let stop = Arc::new(AtomicBool::new(false));
    let scraping = stop.clone();
    let scraper = std::thread::spawn(move || {
        let mut scrapes = 0u64;
        while !scraping.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok(mut socket) = std::net::TcpStream::connect(address) {
                use std::io::{Read, Write};
                let _ = socket
                    .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                let mut page = Vec::new();
                if socket.read_to_end(&mut page).is_ok() {
                    scrapes += 1;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(SCRAPE_INTERVAL_MS));
        }
        scrapes
    });
    let started = Instant::now();
    let mut source = LogSource::open(log).map_err(|e| e.to_string())?;
    let report = consume_until_idle(store, &format!("log:{log}"), &mut source, Some(telemetry))?;
    let rate = report.delivered as f64 / started.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let scrapes = scraper.join().map_err(|_| "the scraper panicked")?;
    drop(serving);
    if scrapes == 0 {
        return Err("the metrics A/B never scraped the consumer".into());
    }
    Ok(rate)
}

fn run_raw(log_path: &str, store: &str) -> Result<f64, String> {
    let started = Instant::now();
    let mut log = EventLog::open(log_path, false).map_err(|e| e.to_string())?;
    let mut db = Connection::open(store).map_err(|e| e.to_string())?;
    db.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))
        .map_err(|e| e.to_string())?;
    db.execute_batch(
        "PRAGMA synchronous=NORMAL;
         CREATE TABLE IF NOT EXISTS docs (stream TEXT PRIMARY KEY, doc TEXT);
         CREATE TABLE IF NOT EXISTS position (id INTEGER PRIMARY KEY, offset INTEGER);",
    )
    .map_err(|e| e.to_string())?;
    let mut after = 0;
    let mut count = 0usize;
    loop {
        let rows = log
            .read(after, ordo_runtime::limits::COMMIT_EVENTS_MAX_DEFAULT)
            .map_err(|e| e.to_string())?;
        let Some((last, _)) = rows.last() else {
            break;
        };
        after = *last;
        let transaction = db.transaction().map_err(|e| e.to_string())?;
        {
            count += upsert_raw(&transaction, rows.iter().map(|(_, body)| body.as_str()))?;
            transaction
                .execute(
                    "INSERT OR REPLACE INTO position (id, offset) VALUES (1, ?1)",
                    params![after as i64],
                )
                .map_err(|e| e.to_string())?;
        }
        transaction.commit().map_err(|e| e.to_string())?;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// One step of the raw loop a team would write without ordo: each event's data upserted
/// as its stream's row, with no ordering, no dedupe and no merging; a line that does not
/// parse is passed over. Returns the rows written.
pub(crate) fn upsert_raw<'a>(
    transaction: &rusqlite::Transaction<'_>,
    bodies: impl IntoIterator<Item = &'a str>,
) -> Result<usize, String> {
    let mut upsert = transaction
        .prepare_cached(
            "INSERT INTO docs (stream, doc) VALUES (?1, ?2)
             ON CONFLICT (stream) DO UPDATE SET doc = excluded.doc",
        )
        .map_err(|e| e.to_string())?;
    let mut written = 0;
    for body in bodies {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(body) else {
            continue;
        };
        let stream = value["stream"].as_str().unwrap_or_default();
        upsert
            .execute(params![stream, value["data"].to_string()])
            .map_err(|e| e.to_string())?;
        written += 1;
    }
    Ok(written)
}

/// The metrics A/B alone: `pairs` alternating runs without and with the metrics (on
/// and scraped every [`SCRAPE_INTERVAL_MS`]) over one log; each pair's (off, on) events
/// per second.
pub fn metrics_ab(shape: EmbeddedShape, pairs: usize) -> Result<Vec<(f64, f64)>, String> {
    let scratch =
        Scratch(std::env::temp_dir().join(format!("ordo-metrics-ab-{}", std::process::id())));
    std::fs::create_dir_all(&scratch.0).map_err(|e| e.to_string())?;
    let path = |name: &str| scratch.0.join(name).to_string_lossy().into_owned();
    let log = path("log.db");
    build_log(&log, shape)?;
    (0..pairs)
        .map(|pair| {
            let off = run_ordo(&log, &format!("sqlite:{}", path(&format!("off-{pair}.db"))))?;
            let on =
                run_ordo_with_metrics(&log, &format!("sqlite:{}", path(&format!("on-{pair}.db"))))?;
            Ok((off, on))
        })
        .collect()
}

/// One run, without or with the metrics, over a fresh log of `shape` (for an instruction
/// count under callgrind, where the loop's thread is measured apart from the endpoint's):
/// events per second.
pub fn metrics_once(shape: EmbeddedShape, metrics: bool) -> Result<f64, String> {
    let scratch =
        Scratch(std::env::temp_dir().join(format!("ordo-metrics-once-{}", std::process::id())));
    std::fs::create_dir_all(&scratch.0).map_err(|e| e.to_string())?;
    let path = |name: &str| scratch.0.join(name).to_string_lossy().into_owned();
    let log = path("log.db");
    build_log(&log, shape)?;
    let store = format!("sqlite:{}", path("state.db"));
    if metrics {
        run_ordo_with_metrics(&log, &store)
    } else {
        run_ordo(&log, &store)
    }
}

/// Runs the embedded benchmark.
pub fn run(shape: EmbeddedShape) -> Result<EmbeddedResult, String> {
    let scratch = Scratch(std::env::temp_dir().join(format!("ordo-bench-{}", std::process::id())));
    std::fs::create_dir_all(&scratch.0).map_err(|e| e.to_string())?;
    let path = |name: &str| scratch.0.join(name).to_string_lossy().into_owned();
    let log = path("log.db");
    let events = build_log(&log, shape)?;
    let mut ordo_best: f64 = 0.0;
    let mut raw_best: f64 = 0.0;
    let mut metrics_best: f64 = 0.0;
    // Alternating A/B runs (off, on, off, on …): the machine's drift hits both alike.
    for repetition in 0..shape.repetitions.max(METRICS_PAIRS_MIN) {
        ordo_best = ordo_best.max(run_ordo(
            &log,
            &format!("sqlite:{}", path(&format!("ordo-{repetition}.db"))),
        )?);
        metrics_best = metrics_best.max(run_ordo_with_metrics(
            &log,
            &format!("sqlite:{}", path(&format!("metrics-{repetition}.db"))),
        )?);
        if repetition < shape.repetitions {
            raw_best = raw_best.max(run_raw(&log, &path(&format!("raw-{repetition}.db")))?);
        }
    }
    let (tail_latency_ms_p50, tail_latency_ms_p99) = tail_latency(&log)?;
    Ok(EmbeddedResult {
        tail_latency_ms_p50,
        tail_latency_ms_p99,
        events,
        embedded_events_per_s: ordo_best,
        baseline_events_per_s: raw_best,
        ratio: ordo_best / raw_best,
        metrics_events_per_s: metrics_best,
        metrics_vs_off: metrics_best / ordo_best,
    })
}

/// Results of the PostgreSQL benchmark.
#[derive(Clone, Debug)]
pub struct PostgresResult {
    /// Deliveries in the log.
    pub events: usize,
    /// ordo into PostgreSQL, durable, events per second.
    pub postgres_events_per_s: f64,
    /// The raw batched `UNNEST` upsert loop's events per second.
    pub baseline_events_per_s: f64,
    /// ordo / raw.
    pub ratio: f64,
}

/// The server the PostgreSQL benchmark uses (the local one, trust auth).
pub const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn run_raw_postgres(log_path: &str, schema: &str) -> Result<f64, String> {
    let started = Instant::now();
    let mut log = EventLog::open(log_path, false).map_err(|e| e.to_string())?;
    let mut client =
        postgres::Client::connect(POSTGRES_URL, postgres::NoTls).map_err(|e| e.to_string())?;
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema}; SET search_path TO {schema};
             CREATE TABLE IF NOT EXISTS docs (stream TEXT PRIMARY KEY, doc TEXT);
             CREATE TABLE IF NOT EXISTS position (id INT PRIMARY KEY, \"offset\" BIGINT);"
        ))
        .map_err(|e| e.to_string())?;
    let mut after = 0;
    let mut count = 0usize;
    loop {
        let rows = log
            .read(after, ordo_runtime::limits::COMMIT_EVENTS_MAX_DEFAULT)
            .map_err(|e| e.to_string())?;
        let Some((last, _)) = rows.last() else {
            break;
        };
        after = *last;
        // The last write of a stream in a batch wins, as in row-by-row upserts.
        let mut latest: std::collections::HashMap<String, String> =
            std::collections::HashMap::new();
        for (_, body) in &rows {
            let value: serde_json::Value = serde_json::from_str(body).map_err(|e| e.to_string())?;
            let stream = value["stream"].as_str().unwrap_or_default().to_string();
            latest.insert(stream, value["data"].to_string());
            count += 1;
        }
        let (streams, docs): (Vec<String>, Vec<String>) = latest.into_iter().unzip();
        let mut transaction = client.transaction().map_err(|e| e.to_string())?;
        transaction
            .execute(
                "INSERT INTO docs (stream, doc) SELECT * FROM UNNEST($1::text[], $2::text[])
                 ON CONFLICT (stream) DO UPDATE SET doc = excluded.doc",
                &[&streams, &docs],
            )
            .map_err(|e| e.to_string())?;
        transaction
            .execute(
                "INSERT INTO position (id, \"offset\") VALUES (1, $1)
                 ON CONFLICT (id) DO UPDATE SET \"offset\" = excluded.\"offset\"",
                &[&(after as i64)],
            )
            .map_err(|e| e.to_string())?;
        transaction.commit().map_err(|e| e.to_string())?;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// Runs the PostgreSQL benchmark, or says why it cannot.
pub fn run_postgres(shape: EmbeddedShape) -> Result<PostgresResult, String> {
    let mut admin = postgres::Client::connect(POSTGRES_URL, postgres::NoTls)
        .map_err(|e| format!("no PostgreSQL at 127.0.0.1:5432 ({e})"))?;
    let scratch =
        Scratch(std::env::temp_dir().join(format!("ordo-pg-bench-{}", std::process::id())));
    std::fs::create_dir_all(&scratch.0).map_err(|e| e.to_string())?;
    let log = scratch.0.join("log.db").to_string_lossy().into_owned();
    let events = build_log(&log, shape)?;
    let mut ordo_best: f64 = 0.0;
    let mut raw_best: f64 = 0.0;
    for repetition in 0..shape.repetitions {
        let ordo_schema = format!("ordo_bench_{}_{repetition}", std::process::id());
        let raw_schema = format!("ordo_bench_raw_{}_{repetition}", std::process::id());
        for schema in [&ordo_schema, &raw_schema] {
            admin
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .map_err(|e| e.to_string())?;
        }
        ordo_best = ordo_best.max(run_ordo(
            &log,
            &format!("{POSTGRES_URL}?schema={ordo_schema}"),
        )?);
        raw_best = raw_best.max(run_raw_postgres(&log, &raw_schema)?);
        for schema in [&ordo_schema, &raw_schema] {
            let _ = admin.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
        }
    }
    Ok(PostgresResult {
        events,
        postgres_events_per_s: ordo_best,
        baseline_events_per_s: raw_best,
        ratio: ordo_best / raw_best,
    })
}
