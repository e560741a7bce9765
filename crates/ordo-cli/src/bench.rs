//! `ordo bench`: the performance suite.

use std::process::ExitCode;

use ordo_bench::core::{self as core_bench, CoreShape};
use ordo_bench::embedded::{self, EmbeddedShape};
use serde_json::json;

use crate::cli::BenchArgs;

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let shape = if args.quick {
        CoreShape::quick()
    } else {
        CoreShape::full()
    };
    eprintln!(
        "core: {} streams x {} versions, displaced up to {}, {}% duplicated ...",
        shape.streams, shape.versions, shape.displacement, shape.duplicate_percent
    );
    let core = core_bench::run(shape);
    let embedded_shape = if args.quick {
        EmbeddedShape::quick()
    } else {
        EmbeddedShape::full()
    };
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
    let kafka_events = if args.quick { 30_000 } else { 100_000 };
    eprintln!("kafka: {kafka_events} events through tansu, ordo vs a raw consume loop ...");
    let kafka = ordo_bench::kafka::run(kafka_events);
    if args.json {
        let report = json!({
            "engine_events_per_s": core.engine_events_per_s.round(),
            "engine_baseline_events_per_s": core.baseline_events_per_s.round(),
            "engine_vs_hashmap": round3(core.ratio),
            "engine_events": core.events,
            "engine_cold_events_per_s": core.engine_cold_events_per_s.round(),
            "engine_cold_baseline_events_per_s": core.baseline_cold_events_per_s.round(),
            "bytes_per_idle_stream": core.bytes_per_idle_stream.round(),
            "bytes_per_idle_stream_with_dedupe": core.bytes_per_idle_stream_with_dedupe.round(),
            "embedded_events_per_s": embedded.embedded_events_per_s.round(),
            "embedded_baseline_events_per_s": embedded.baseline_events_per_s.round(),
            "embedded_vs_raw_sqlite": round3(embedded.ratio),
            "embedded_events": embedded.events,
            "tail_latency_ms_p50": round3(embedded.tail_latency_ms_p50),
            "tail_latency_ms_p99": round3(embedded.tail_latency_ms_p99),
            "kafka_events_per_s": kafka.as_ref().ok().map(|k| k.kafka_events_per_s.round()),
            "kafka_raw_events_per_s": kafka.as_ref().ok().map(|k| k.raw_events_per_s.round()),
            "kafka_vs_raw": kafka.as_ref().ok().map(|k| round3(k.ratio)),
            "kafka_skipped": kafka.as_ref().err(),
            "postgres_events_per_s": postgres.as_ref().ok().map(|p| p.postgres_events_per_s.round()),
            "postgres_raw_events_per_s": postgres.as_ref().ok().map(|p| p.baseline_events_per_s.round()),
            "postgres_vs_raw": postgres.as_ref().ok().map(|p| round3(p.ratio)),
            "postgres_skipped": postgres.as_ref().err(),
        });
        outln!("{report}");
    } else {
        outln!(
            "{:<44} {:>14} {:>14} {:>8}",
            "measure",
            "ordo",
            "baseline",
            "ratio"
        );
        outln!(
            "{:<44} {:>14.0} {:>14.0} {:>8.3}",
            "core decisions/s (vs HashMap apply loop)",
            core.engine_events_per_s,
            core.baseline_events_per_s,
            core.ratio
        );
        outln!(
            "{:<44} {:>14.0} {:>14.0} {:>8.3}",
            "  ... cold (every stream new)",
            core.engine_cold_events_per_s,
            core.baseline_cold_events_per_s,
            core.engine_cold_events_per_s / core.baseline_cold_events_per_s
        );
        outln!(
            "{:<44} {:>14.0}",
            "heap bytes per idle stream",
            core.bytes_per_idle_stream
        );
        outln!(
            "{:<44} {:>14.0}",
            "  ... with one dedupe id per stream",
            core.bytes_per_idle_stream_with_dedupe
        );
        outln!(
            "{:<44} {:>14.0} {:>14.0} {:>8.3}",
            "embedded durable events/s (vs raw upserts)",
            embedded.embedded_events_per_s,
            embedded.baseline_events_per_s,
            embedded.ratio
        );
        outln!(
            "{:<44} {:>14.3} {:>14}",
            "live tail latency p50 / p99 (ms)",
            embedded.tail_latency_ms_p50,
            format!("{:.3}", embedded.tail_latency_ms_p99)
        );
        match &kafka {
            Ok(k) => outln!(
                "{:<44} {:>14.0} {:>14.0} {:>8.3}",
                "kafka -> SQLite events/s (vs raw consume)",
                k.kafka_events_per_s,
                k.raw_events_per_s,
                k.ratio
            ),
            Err(why) => outln!("{:<44} skipped: {why}", "kafka -> SQLite events/s"),
        }
        match &postgres {
            Ok(p) => outln!(
                "{:<44} {:>14.0} {:>14.0} {:>8.3}",
                "postgres durable events/s (vs raw UNNEST)",
                p.postgres_events_per_s,
                p.baseline_events_per_s,
                p.ratio
            ),
            Err(why) => outln!("{:<44} skipped: {why}", "postgres durable events/s"),
        }
        outln!("core counters: {}", core.counters);
    }
    Ok(ExitCode::SUCCESS)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
