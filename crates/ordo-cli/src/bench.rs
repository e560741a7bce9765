//! `ordo bench`: the performance suite. `--only` picks sections (for an A/B run of one
//! measure); each section prints its figures beside the baseline measured in the same run.

use std::process::ExitCode;

use ordo_bench::core::{self as core_bench, CoreResult, CoreShape};
use ordo_bench::embedded::{self, EmbeddedResult, EmbeddedShape, PostgresResult};
use ordo_bench::handler::{self as handler_bench, HandlerReport, HandlerShape};
use ordo_bench::kafka::KafkaResult;
use ordo_bench::mixed::{self, MixedReport, MixedShape};
use ordo_bench::nats::NatsResult;
use ordo_bench::parked::{self, ParkedResult, ParkedShape};
use ordo_bench::slow::{self, SlowReport, SlowShape};
use ordo_bench::sqs::SqsResult;
use serde_json::{json, Value};

use crate::cli::{BenchArgs, BenchSection};

/// Events each broker benchmark sends, full and `--quick`.
const BROKER_EVENTS_FULL: usize = 100_000;
const BROKER_EVENTS_QUICK: usize = 30_000;
/// Messages per SQS workload: moto slows down with a queue's length.
const SQS_EVENTS_FULL: usize = 400;
const SQS_EVENTS_QUICK: usize = 200;

/// Runs the benchmarks asked for, then prints one table or one JSON object.
pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let results = Results::measure(&args)?;
    if args.json {
        outln!("{}", results.json());
    } else {
        results.print_table();
    }
    Ok(ExitCode::SUCCESS)
}

/// What each benchmark measured (`None`: not asked for). The broker and PostgreSQL ones
/// are `Err` with the reason when their server is not there.
#[derive(Default)]
struct Results {
    core: Option<CoreResult>,
    slow: Option<SlowReport>,
    handlers: Option<HandlerReport>,
    parked: Option<ParkedResult>,
    embedded: Option<EmbeddedResult>,
    postgres: Option<Result<PostgresResult, String>>,
    kafka: Option<Result<KafkaResult, String>>,
    nats: Option<Result<NatsResult, String>>,
    sqs: Option<Result<SqsResult, String>>,
    mixed: Option<MixedReport>,
}

impl Results {
    fn measure(args: &BenchArgs) -> anyhow::Result<Results> {
        let wants = |section: BenchSection| args.only.is_empty() || args.only.contains(&section);
        let mut results = Results::default();
        if wants(BenchSection::Core) {
            results.core = Some(measure_core(args));
        }
        // Everything after the core measures the consumer path, which runs as `ordo run`
        // does: without transparent huge pages.
        ordo_bench::alloc::set_transparent_huge_pages(false);
        if wants(BenchSection::Slow) {
            results.slow = Some(measure_slow(args)?);
        }
        if wants(BenchSection::Handlers) {
            results.handlers = Some(measure_handlers(args)?);
        }
        if wants(BenchSection::Parked) {
            results.parked = Some(measure_parked(args)?);
        }
        let embedded_shape = pick(args.quick, EmbeddedShape::quick, EmbeddedShape::full);
        if wants(BenchSection::Embedded) {
            eprintln!(
                "embedded: {} events through the log, runtime and SQLite ...",
                embedded_shape.events
            );
            results.embedded = Some(embedded::run(embedded_shape).map_err(anyhow::Error::msg)?);
        }
        if wants(BenchSection::Postgres) {
            eprintln!(
                "postgres: {} events through the log, runtime and PostgreSQL ...",
                embedded_shape.events
            );
            results.postgres = Some(embedded::run_postgres(embedded_shape));
        }
        results.measure_brokers(args, &wants);
        if wants(BenchSection::Mixed) {
            results.mixed = Some(measure_mixed(args)?);
        }
        Ok(results)
    }

    fn measure_brokers(&mut self, args: &BenchArgs, wants: &dyn Fn(BenchSection) -> bool) {
        let events = if args.quick {
            BROKER_EVENTS_QUICK
        } else {
            BROKER_EVENTS_FULL
        };
        if wants(BenchSection::Kafka) {
            eprintln!("kafka: {events} events through tansu, ordo vs a raw consume loop ...");
            self.kafka = Some(ordo_bench::kafka::run(events));
        }
        if wants(BenchSection::Nats) {
            eprintln!(
                "nats: {events} events through the local JetStream, ordo vs a raw pull-and-ack loop, then one hot key ..."
            );
            self.nats = Some(ordo_bench::nats::run(events));
        }
        if wants(BenchSection::Sqs) {
            let events = if args.quick {
                SQS_EVENTS_QUICK
            } else {
                SQS_EVENTS_FULL
            };
            eprintln!(
                "sqs: {events} messages through moto's server, ordo vs raw receive-and-delete loops, then one group ..."
            );
            self.sqs = Some(ordo_bench::sqs::run(events));
        }
    }

    /// Every key of the sections measured, in one object.
    fn json(&self) -> Value {
        let parts = [
            self.core.as_ref().map(core_json),
            self.parked.as_ref().map(parked_json),
            self.slow.as_ref().map(slow_json),
            self.embedded.as_ref().map(embedded_json),
            self.postgres.as_ref().map(|p| postgres_json(p.as_ref())),
            self.kafka.as_ref().map(|k| kafka_json(k.as_ref())),
            self.nats.as_ref().map(|n| nats_json(n.as_ref())),
            self.sqs.as_ref().map(|q| sqs_json(q.as_ref())),
            self.handlers.as_ref().map(handler_json),
            self.mixed.as_ref().map(mixed_json),
        ];
        let mut report = serde_json::Map::new();
        for part in parts.into_iter().flatten() {
            if let Value::Object(keys) = part {
                report.extend(keys);
            }
        }
        Value::Object(report)
    }

    /// The table for humans: one row per measure, ordo against its baseline.
    fn print_table(&self) {
        outln!(
            "{:<44} {:>14} {:>14} {:>8}",
            "measure",
            "ordo",
            "baseline",
            "ratio"
        );
        if let Some(core) = &self.core {
            print_core(core);
        }
        if let Some(parked) = &self.parked {
            print_parked(parked);
        }
        if let Some(slow) = &self.slow {
            print_slow(slow);
        }
        if let Some(handlers) = &self.handlers {
            print_handlers(handlers);
        }
        if let Some(embedded) = &self.embedded {
            print_embedded(embedded);
        }
        if let Some(postgres) = &self.postgres {
            print_postgres(postgres.as_ref());
        }
        if let Some(kafka) = &self.kafka {
            print_kafka(kafka.as_ref());
        }
        if let Some(nats) = &self.nats {
            print_nats(nats.as_ref());
        }
        if let Some(sqs) = &self.sqs {
            print_sqs(sqs.as_ref());
        }
        if let Some(mixed) = &self.mixed {
            print_mixed(mixed);
        }
        if let Some(core) = &self.core {
            outln!("core counters: {}", core.counters);
        }
    }
}

fn core_json(core: &CoreResult) -> Value {
    json!({
        "engine_events_per_s": core.engine_events_per_s.round(),
        "engine_baseline_events_per_s": core.baseline_events_per_s.round(),
        "engine_vs_hashmap": round3(core.ratio),
        "engine_events": core.events,
        "engine_cold_events_per_s": core.engine_cold_events_per_s.round(),
        "engine_cold_baseline_events_per_s": core.baseline_cold_events_per_s.round(),
        "bytes_per_idle_stream": core.bytes_per_idle_stream.round(),
        "bytes_per_idle_stream_with_dedupe": core.bytes_per_idle_stream_with_dedupe.round(),
    })
}

fn parked_json(parked: &ParkedResult) -> Value {
    json!({
        "parked_events": parked.events,
        "parked_heap_bytes_spilled": parked.heap_bytes_spilled,
        "parked_heap_bytes_in_memory": parked.heap_bytes_in_memory,
        "parked_heap_spilled_vs_in_memory": round3(parked.spilled_vs_in_memory()),
        "parked_spilled_streams": parked.spilled_streams,
        "resume_ms_with_parked": round3(parked.resume_ms),
        "resume_raw_read_ms": round3(parked.resume_raw_ms),
        "resume_vs_raw_read": round3(parked.resume_vs_raw_read()),
        "heap_bytes_after_resume": parked.heap_bytes_after_resume,
        "parked_release_ms": round3(parked.release_ms),
    })
}

fn slow_json(slow: &SlowReport) -> Value {
    let per_key_count: serde_json::Map<String, Value> = slow
        .rows
        .iter()
        .filter_map(|r| {
            r.keys
                .map(|k| (k.to_string(), json!(r.events_per_s.round())))
        })
        .collect();
    json!({
        "slow_handler_events": slow.shape.events,
        "slow_handler_concurrency": slow.shape.concurrency,
        "slow_partition_events_per_s": slow.rate("partition", None).round(),
        "slow_key_events_per_s": per_key_count,
        "slow_unordered_events_per_s": slow.rate("unordered", None).round(),
        "key_parallel_vs_partition": round3(slow.key_parallel_vs_partition),
        "key_parallel_vs_unordered": round3(slow.key_parallel_vs_unordered),
    })
}

fn embedded_json(embedded: &EmbeddedResult) -> Value {
    json!({
        "embedded_events_per_s": embedded.embedded_events_per_s.round(),
        "embedded_baseline_events_per_s": embedded.baseline_events_per_s.round(),
        "embedded_vs_raw_sqlite": round3(embedded.ratio),
        "embedded_metrics_events_per_s": embedded.metrics_events_per_s.round(),
        "embedded_metrics_vs_off": round3(embedded.metrics_vs_off),
        "embedded_events": embedded.events,
        "tail_latency_ms_p50": round3(embedded.tail_latency_ms_p50),
        "tail_latency_ms_p99": round3(embedded.tail_latency_ms_p99),
    })
}

fn postgres_json(postgres: Result<&PostgresResult, &String>) -> Value {
    json!({
        "postgres_events_per_s": postgres.ok().map(|p| p.postgres_events_per_s.round()),
        "postgres_raw_events_per_s": postgres.ok().map(|p| p.baseline_events_per_s.round()),
        "postgres_vs_raw": postgres.ok().map(|p| round3(p.ratio)),
        "postgres_skipped": postgres.err(),
    })
}

fn kafka_json(kafka: Result<&KafkaResult, &String>) -> Value {
    json!({
        "kafka_events_per_s": kafka.ok().map(|k| k.kafka_events_per_s.round()),
        "kafka_raw_events_per_s": kafka.ok().map(|k| k.raw_events_per_s.round()),
        "kafka_vs_raw": kafka.ok().map(|k| round3(k.ratio)),
        "kafka_skipped": kafka.err(),
        "single_key_events_per_s_kafka": kafka.ok().map(|k| k.single_key_events_per_s.round()),
        "single_key_raw_events_per_s_kafka": kafka.ok().map(|k| k.single_key_raw_events_per_s.round()),
    })
}

fn nats_json(nats: Result<&NatsResult, &String>) -> Value {
    json!({
        "nats_events_per_s": nats.ok().map(|n| n.spread.ordo_events_per_s.round()),
        "nats_raw_events_per_s": nats.ok().map(|n| n.spread.raw_events_per_s.round()),
        "nats_vs_raw": nats.ok().map(|n| round3(n.spread.ratio())),
        "single_key_events_per_s_nats": nats.ok().map(|n| n.single_key.ordo_events_per_s.round()),
        "single_key_raw_events_per_s_nats": nats.ok().map(|n| n.single_key.raw_events_per_s.round()),
        "nats_skipped": nats.err(),
    })
}

/// The headline keys are the first size (150k events, in `--quick` too); every size and
/// both sweeps follow in full.
fn mixed_json(mixed: &MixedReport) -> Value {
    let sizes: Vec<Value> = mixed
        .rows
        .iter()
        .map(|(events, row)| {
            json!({
                "events": events,
                "lines": row.ordo.lines,
                "events_per_s": row.ordo.per_s().round(),
                "cpu_us_per_event": round3(row.ordo.cpu_us_per_event()),
                "raw_upsert_events_per_s": row.raw.per_s().round(),
                "raw_upsert_cpu_us_per_event": round3(row.raw.cpu_us_per_event()),
                "vs_raw_upsert": round3(row.vs_raw_upsert()),
            })
        })
        .collect();
    let sweep = |points: &[mixed::SweepPoint], x: &str| -> Vec<Value> {
        points
            .iter()
            .map(|p| {
                json!({
                    x: p.x,
                    "events_per_s": p.ordo.per_s().round(),
                    "cpu_us_per_event": round3(p.ordo.cpu_us_per_event()),
                })
            })
            .collect()
    };
    let first = mixed.rows.first().map(|(_, row)| row);
    json!({
        "mixed_events_per_s": first.map(|r| r.ordo.per_s().round()),
        "mixed_vs_raw_upsert": first.map(|r| round3(r.vs_raw_upsert())),
        "mixed_cpu_us_per_event": first.map(|r| round3(r.ordo.cpu_us_per_event())),
        "mixed_raw_upsert_events_per_s": first.map(|r| r.raw.per_s().round()),
        "mixed_sizes": sizes,
        "mixed_by_streams": sweep(&mixed.by_streams, "streams"),
        "mixed_by_parked_percent": sweep(&mixed.by_parked_percent, "parked_percent"),
    })
}

fn handler_json(handlers: &HandlerReport) -> Value {
    json!({
        "handler_events": handlers.shape.events,
        "handler_concurrency": handlers.shape.concurrency,
        "handler_uniform_events_per_s": handlers.uniform_events_per_s.round(),
        "handler_partition_events_per_s": handlers.partition_events_per_s.round(),
        "handler_unordered_events_per_s": handlers.unordered_events_per_s.round(),
        "handler_key_parallel_vs_partition": round3(handlers.key_parallel_vs_partition()),
        "handler_key_parallel_vs_unordered": round3(handlers.key_parallel_vs_unordered()),
        "handler_zipf_events_per_s": handlers.zipf_events_per_s.round(),
        "handler_zipf_limit_events_per_s": handlers.zipf_limit_events_per_s.round(),
        "handler_zipf_hottest_key_events": handlers.zipf_hottest_key_events,
        "handler_zipf_vs_limit": round3(handlers.zipf_vs_limit()),
        "handler_calls_per_s_zero_latency": handlers.zero_latency_calls_per_s.round(),
        "handler_raw_calls_per_s_zero_latency": handlers.raw_zero_latency_calls_per_s.round(),
        "handler_zero_latency_vs_raw": round3(handlers.zero_latency_vs_raw()),
    })
}

fn print_core(core: &CoreResult) {
    ratio_row(
        "core decisions/s (vs HashMap apply loop)",
        core.engine_events_per_s,
        core.baseline_events_per_s,
        core.ratio,
    );
    ratio_row(
        "  ... cold (every stream new)",
        core.engine_cold_events_per_s,
        core.baseline_cold_events_per_s,
        core.engine_cold_events_per_s / core.baseline_cold_events_per_s,
    );
    value_row("heap bytes per idle stream", core.bytes_per_idle_stream);
    value_row(
        "  ... with one dedupe id per stream",
        core.bytes_per_idle_stream_with_dedupe,
    );
}

fn print_parked(parked: &ParkedResult) {
    outln!(
        "{:<44} {:>14} {:>14} {:>8.3}",
        format!("heap MB, {} parked (spilled vs in memory)", parked.events),
        format!("{:.1}", parked.heap_bytes_spilled as f64 / 1e6),
        format!("{:.1}", parked.heap_bytes_in_memory as f64 / 1e6),
        parked.spilled_vs_in_memory()
    );
    ratio_row(
        "resume ms after restart (vs reading all rows)",
        parked.resume_ms,
        parked.resume_raw_ms,
        parked.resume_vs_raw_read(),
    );
    outln!(
        "{:<44} {:>14}",
        "  heap MB after resume",
        format!("{:.1}", parked.heap_bytes_after_resume as f64 / 1e6)
    );
    value_row("  ms until every parked event applied", parked.release_ms);
}

fn print_slow(slow: &SlowReport) {
    for row in &slow.rows {
        let label = match row.keys {
            Some(keys) => format!("slow handlers, key-ordered, {keys} keys"),
            None => format!("slow handlers, {}", row.mode),
        };
        value_row(&label, row.events_per_s);
    }
    let most_keys = slow.rate("key", slow.shape.keys.last().copied());
    ratio_row(
        "  key_parallel_vs_partition",
        most_keys,
        slow.rate("partition", None),
        slow.key_parallel_vs_partition,
    );
    ratio_row(
        "  key_parallel_vs_unordered",
        most_keys,
        slow.rate("unordered", None),
        slow.key_parallel_vs_unordered,
    );
}

fn print_handlers(handlers: &HandlerReport) {
    ratio_row(
        "handler (HTTP), uniform keys vs 1 at a time",
        handlers.uniform_events_per_s,
        handlers.partition_events_per_s,
        handlers.key_parallel_vs_partition(),
    );
    ratio_row(
        "  ... vs unordered, same concurrency",
        handlers.uniform_events_per_s,
        handlers.unordered_events_per_s,
        handlers.key_parallel_vs_unordered(),
    );
    ratio_row(
        "handler, Zipf keys vs the physical limit",
        handlers.zipf_events_per_s,
        handlers.zipf_limit_events_per_s,
        handlers.zipf_vs_limit(),
    );
    ratio_row(
        "handler calls/s at 0 ms (vs raw HTTP client)",
        handlers.zero_latency_calls_per_s,
        handlers.raw_zero_latency_calls_per_s,
        handlers.zero_latency_vs_raw(),
    );
}

fn print_embedded(embedded: &EmbeddedResult) {
    ratio_row(
        "embedded durable events/s (vs raw upserts)",
        embedded.embedded_events_per_s,
        embedded.baseline_events_per_s,
        embedded.ratio,
    );
    ratio_row(
        "embedded, metrics on and scraped (vs off)",
        embedded.metrics_events_per_s,
        embedded.embedded_events_per_s,
        embedded.metrics_vs_off,
    );
    outln!(
        "{:<44} {:>14.3} {:>14}",
        "live tail latency p50 / p99 (ms)",
        embedded.tail_latency_ms_p50,
        format!("{:.3}", embedded.tail_latency_ms_p99)
    );
}

fn print_postgres(postgres: Result<&PostgresResult, &String>) {
    match postgres {
        Ok(p) => ratio_row(
            "postgres durable events/s (vs raw UNNEST)",
            p.postgres_events_per_s,
            p.baseline_events_per_s,
            p.ratio,
        ),
        Err(why) => skipped_row("postgres durable events/s", why),
    }
}

fn print_kafka(kafka: Result<&KafkaResult, &String>) {
    match kafka {
        Ok(k) => {
            ratio_row(
                "kafka -> SQLite events/s (vs raw consume)",
                k.kafka_events_per_s,
                k.raw_events_per_s,
                k.ratio,
            );
            ratio_row(
                "kafka, one hot key (vs raw, one partition)",
                k.single_key_events_per_s,
                k.single_key_raw_events_per_s,
                k.single_key_events_per_s / k.single_key_raw_events_per_s,
            );
        }
        Err(why) => skipped_row("kafka -> SQLite events/s", why),
    }
}

fn print_nats(nats: Result<&NatsResult, &String>) {
    match nats {
        Ok(n) => {
            ratio_row(
                "nats -> SQLite events/s (vs raw pull+ack)",
                n.spread.ordo_events_per_s,
                n.spread.raw_events_per_s,
                n.spread.ratio(),
            );
            ratio_row(
                "nats, one hot key (vs raw, same stream)",
                n.single_key.ordo_events_per_s,
                n.single_key.raw_events_per_s,
                n.single_key.ratio(),
            );
        }
        Err(why) => skipped_row("nats -> SQLite events/s", why),
    }
}

fn sqs_json(sqs: Result<&SqsResult, &String>) -> Value {
    json!({
        "sqs_events_per_s": sqs.ok().map(|q| q.spread.ordo_events_per_s.round()),
        "sqs_raw_events_per_s": sqs.ok().map(|q| q.spread.raw_events_per_s.round()),
        "sqs_vs_raw": sqs.ok().map(|q| round3(q.spread.ratio())),
        "single_group_events_per_s_sqs": sqs.ok().map(|q| q.single_group.ordo_events_per_s.round()),
        "single_group_raw_events_per_s_sqs": sqs.ok().map(|q| q.single_group.raw_events_per_s.round()),
        "single_group_sqs_vs_raw": sqs.ok().map(|q| round3(q.single_group.ratio())),
        "sqs_skipped": sqs.err(),
    })
}

fn print_sqs(sqs: Result<&SqsResult, &String>) {
    match sqs {
        Ok(q) => {
            ratio_row(
                "sqs (moto) -> SQLite msgs/s (vs raw recv+del)",
                q.spread.ordo_events_per_s,
                q.spread.raw_events_per_s,
                q.spread.ratio(),
            );
            ratio_row(
                "sqs, one message group (vs raw, same queue)",
                q.single_group.ordo_events_per_s,
                q.single_group.raw_events_per_s,
                q.single_group.ratio(),
            );
        }
        Err(why) => skipped_row("sqs (moto) -> SQLite msgs/s", why),
    }
}

fn print_mixed(mixed: &MixedReport) {
    for (events, row) in &mixed.rows {
        ratio_row(
            &format!("mixed {events} events, whole run (vs raw upsert)"),
            row.ordo.per_s(),
            row.raw.per_s(),
            row.vs_raw_upsert(),
        );
        outln!(
            "{:<44} {:>14.2} {:>14.2}",
            "  CPU µs per event (ordo / raw upsert)",
            row.ordo.cpu_us_per_event(),
            row.raw.cpu_us_per_event()
        );
    }
    for (label, points) in [
        ("streams", &mixed.by_streams),
        ("% waiting", &mixed.by_parked_percent),
    ] {
        for point in points {
            outln!(
                "{:<44} {:>14.0} {:>14}",
                format!("  {} {label}: events/s, CPU µs/event", point.x),
                point.ordo.per_s(),
                format!("{:.2}", point.ordo.cpu_us_per_event())
            );
        }
    }
}

fn measure_core(args: &BenchArgs) -> CoreResult {
    let shape = pick(args.quick, CoreShape::quick, CoreShape::full);
    eprintln!(
        "core: {} streams x {} versions, displaced up to {}, {}% duplicated ...",
        shape.streams, shape.versions, shape.displacement, shape.duplicate_percent
    );
    core_bench::run(shape)
}

fn measure_parked(args: &BenchArgs) -> anyhow::Result<ParkedResult> {
    let shape = pick(args.quick, ParkedShape::quick, ParkedShape::full);
    eprintln!(
        "parked: {} products waiting for categories, spilled vs kept in memory, then a restart ...",
        shape.events
    );
    parked::run(shape).map_err(anyhow::Error::msg)
}

fn measure_mixed(args: &BenchArgs) -> anyhow::Result<MixedReport> {
    let shape = if args.quick {
        MixedShape::quick()
    } else {
        MixedShape::full()
    };
    eprintln!(
        "mixed: the demo's mixed scenario at {:?} events through `ordo run` (whole process) vs a raw upsert loop; then {} events over {:?} streams and with {:?} % waiting ...",
        shape.events, shape.sweep_events, shape.sweep_streams, shape.sweep_parked_percents
    );
    let ordo = std::env::current_exe()?;
    mixed::run(&ordo, &shape).map_err(anyhow::Error::msg)
}

fn measure_slow(args: &BenchArgs) -> anyhow::Result<SlowReport> {
    let shape = pick(args.quick, SlowShape::quick, SlowShape::full);
    eprintln!(
        "slow handlers: {} events, 0-{} ms each, concurrency {}, partition / keys {:?} / unordered ...",
        shape.events, shape.handler_ms_max, shape.concurrency, shape.keys
    );
    let slow = slow::run(shape);
    if let Some(path) = &args.plot {
        std::fs::write(path, slow::plot_svg(&slow))
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        eprintln!("slow handlers: chart written to {}", path.display());
    }
    Ok(slow)
}

fn measure_handlers(args: &BenchArgs) -> anyhow::Result<HandlerReport> {
    let shape = pick(args.quick, HandlerShape::quick, HandlerShape::full);
    eprintln!(
        "handlers: {} events through ordo run --handler (HTTP, 0-{} ms, concurrency {}), uniform and Zipf keys ...",
        shape.events, shape.handler_ms_max, shape.concurrency
    );
    handler_bench::run(shape).map_err(anyhow::Error::msg)
}

/// A measure against its baseline.
fn ratio_row(label: &str, ordo: f64, baseline: f64, ratio: f64) {
    outln!("{label:<44} {ordo:>14.0} {baseline:>14.0} {ratio:>8.3}");
}

/// A measure with no baseline.
fn value_row(label: &str, value: f64) {
    outln!("{label:<44} {value:>14.0}");
}

fn skipped_row(label: &str, why: &str) {
    outln!("{label:<44} skipped: {why}");
}

/// The `--quick` shape or the full one.
fn pick<T>(quick: bool, quick_shape: fn() -> T, full_shape: fn() -> T) -> T {
    if quick {
        quick_shape()
    } else {
        full_shape()
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
