//! `ordo bench`: the performance suite.

use std::process::ExitCode;

use ordo_bench::core::{self as core_bench, CoreResult, CoreShape};
use ordo_bench::embedded::{self, EmbeddedResult, EmbeddedShape, PostgresResult};
use ordo_bench::handler::{self as handler_bench, HandlerReport, HandlerShape};
use ordo_bench::kafka::KafkaResult;
use ordo_bench::nats::NatsResult;
use ordo_bench::parked::{self, ParkedResult, ParkedShape};
use ordo_bench::slow::{self, SlowReport, SlowShape};
use serde_json::{json, Value};

use crate::cli::BenchArgs;

/// Events each broker benchmark sends, full and `--quick`.
const BROKER_EVENTS_FULL: usize = 100_000;
const BROKER_EVENTS_QUICK: usize = 30_000;

/// Runs every benchmark, then prints one table or one JSON object.
pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let results = Results::measure(&args)?;
    if args.json {
        outln!("{}", results.json());
    } else {
        results.print_table();
    }
    Ok(ExitCode::SUCCESS)
}

/// What every benchmark measured. The broker and PostgreSQL ones are `Err` with the
/// reason when their server is not there.
struct Results {
    core: CoreResult,
    slow: SlowReport,
    handlers: HandlerReport,
    parked: ParkedResult,
    embedded: EmbeddedResult,
    postgres: Result<PostgresResult, String>,
    kafka: Result<KafkaResult, String>,
    nats: Result<NatsResult, String>,
}

impl Results {
    fn measure(args: &BenchArgs) -> anyhow::Result<Results> {
        let shape = pick(args.quick, CoreShape::quick, CoreShape::full);
        eprintln!(
            "core: {} streams x {} versions, displaced up to {}, {}% duplicated ...",
            shape.streams, shape.versions, shape.displacement, shape.duplicate_percent
        );
        let core = core_bench::run(shape);
        // Everything after the core measures the consumer path, which runs as `ordo run`
        // does: without transparent huge pages.
        ordo_bench::alloc::set_transparent_huge_pages(false);
        let slow = measure_slow(args)?;
        let handlers = measure_handlers(args)?;
        let parked_shape = pick(args.quick, ParkedShape::quick, ParkedShape::full);
        eprintln!(
            "parked: {} products waiting for categories, spilled vs kept in memory, then a restart ...",
            parked_shape.events
        );
        let parked = parked::run(parked_shape).map_err(anyhow::Error::msg)?;
        let embedded_shape = pick(args.quick, EmbeddedShape::quick, EmbeddedShape::full);
        eprintln!(
            "embedded: {} events through the log, runtime and SQLite ...",
            embedded_shape.events
        );
        let embedded = embedded::run(embedded_shape).map_err(anyhow::Error::msg)?;
        eprintln!(
            "postgres: {} events through the log, runtime and PostgreSQL ...",
            embedded_shape.events
        );
        let postgres = embedded::run_postgres(embedded_shape);
        let broker_events = if args.quick {
            BROKER_EVENTS_QUICK
        } else {
            BROKER_EVENTS_FULL
        };
        eprintln!("kafka: {broker_events} events through tansu, ordo vs a raw consume loop ...");
        let kafka = ordo_bench::kafka::run(broker_events);
        eprintln!(
            "nats: {broker_events} events through the local JetStream, ordo vs a raw pull-and-ack loop, then one hot key ..."
        );
        let nats = ordo_bench::nats::run(broker_events);
        Ok(Results {
            core,
            slow,
            handlers,
            parked,
            embedded,
            postgres,
            kafka,
            nats,
        })
    }

    /// Every key in one object (built in parts: one `json!` this long exceeds the
    /// macro's recursion limit).
    fn json(&self) -> Value {
        let mut report = serde_json::Map::new();
        for part in [
            self.core_json(),
            self.parked_json(),
            self.slow_json(),
            self.embedded_json(),
            self.broker_json(),
            self.handler_json(),
        ] {
            if let Value::Object(keys) = part {
                report.extend(keys);
            }
        }
        Value::Object(report)
    }

    fn core_json(&self) -> Value {
        let core = &self.core;
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

    fn parked_json(&self) -> Value {
        let parked = &self.parked;
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

    fn slow_json(&self) -> Value {
        let slow = &self.slow;
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

    fn embedded_json(&self) -> Value {
        let embedded = &self.embedded;
        let postgres = self.postgres.as_ref();
        json!({
            "embedded_events_per_s": embedded.embedded_events_per_s.round(),
            "embedded_baseline_events_per_s": embedded.baseline_events_per_s.round(),
            "embedded_vs_raw_sqlite": round3(embedded.ratio),
            "embedded_metrics_events_per_s": embedded.metrics_events_per_s.round(),
            "embedded_metrics_vs_off": round3(embedded.metrics_vs_off),
            "embedded_events": embedded.events,
            "tail_latency_ms_p50": round3(embedded.tail_latency_ms_p50),
            "tail_latency_ms_p99": round3(embedded.tail_latency_ms_p99),
            "postgres_events_per_s": postgres.ok().map(|p| p.postgres_events_per_s.round()),
            "postgres_raw_events_per_s": postgres.ok().map(|p| p.baseline_events_per_s.round()),
            "postgres_vs_raw": postgres.ok().map(|p| round3(p.ratio)),
            "postgres_skipped": postgres.err(),
        })
    }

    fn broker_json(&self) -> Value {
        let kafka = self.kafka.as_ref();
        let nats = self.nats.as_ref();
        json!({
            "kafka_events_per_s": kafka.ok().map(|k| k.kafka_events_per_s.round()),
            "kafka_raw_events_per_s": kafka.ok().map(|k| k.raw_events_per_s.round()),
            "kafka_vs_raw": kafka.ok().map(|k| round3(k.ratio)),
            "kafka_skipped": kafka.err(),
            "single_key_events_per_s_kafka": kafka.ok().map(|k| k.single_key_events_per_s.round()),
            "single_key_raw_events_per_s_kafka": kafka.ok().map(|k| k.single_key_raw_events_per_s.round()),
            "nats_events_per_s": nats.ok().map(|n| n.spread.ordo_events_per_s.round()),
            "nats_raw_events_per_s": nats.ok().map(|n| n.spread.raw_events_per_s.round()),
            "nats_vs_raw": nats.ok().map(|n| round3(n.spread.ratio())),
            "single_key_events_per_s_nats": nats.ok().map(|n| n.single_key.ordo_events_per_s.round()),
            "single_key_raw_events_per_s_nats": nats.ok().map(|n| n.single_key.raw_events_per_s.round()),
            "nats_skipped": nats.err(),
        })
    }

    fn handler_json(&self) -> Value {
        let handlers = &self.handlers;
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

    /// The table for humans: one row per measure, ordo against its baseline.
    fn print_table(&self) {
        outln!(
            "{:<44} {:>14} {:>14} {:>8}",
            "measure",
            "ordo",
            "baseline",
            "ratio"
        );
        self.print_core();
        self.print_parked();
        self.print_slow();
        self.print_handlers();
        self.print_embedded();
        self.print_brokers();
        outln!("core counters: {}", self.core.counters);
    }

    fn print_core(&self) {
        let core = &self.core;
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

    fn print_parked(&self) {
        let parked = &self.parked;
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

    fn print_slow(&self) {
        let slow = &self.slow;
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

    fn print_handlers(&self) {
        let handlers = &self.handlers;
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

    fn print_embedded(&self) {
        let embedded = &self.embedded;
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
        match &self.postgres {
            Ok(p) => ratio_row(
                "postgres durable events/s (vs raw UNNEST)",
                p.postgres_events_per_s,
                p.baseline_events_per_s,
                p.ratio,
            ),
            Err(why) => skipped_row("postgres durable events/s", why),
        }
    }

    fn print_brokers(&self) {
        match &self.kafka {
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
        match &self.nats {
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
