//! `ordo bench`: the performance suite.

use std::process::ExitCode;

use ordo_bench::core::{self as core_bench, CoreShape};
use ordo_bench::embedded::{self, EmbeddedShape};
use ordo_bench::handler::{self as handler_bench, HandlerShape};
use ordo_bench::parked::{self, ParkedShape};
use ordo_bench::slow::{self, SlowShape};
use serde_json::json;

use crate::cli::BenchArgs;

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let shape = pick(args.quick, CoreShape::quick, CoreShape::full);
    eprintln!(
        "core: {} streams x {} versions, displaced up to {}, {}% duplicated ...",
        shape.streams, shape.versions, shape.displacement, shape.duplicate_percent
    );
    let core = core_bench::run(shape);
    // Everything after the core measures the consumer path, which runs as `ordo run` does:
    // without transparent huge pages.
    ordo_bench::alloc::set_transparent_huge_pages(false);
    let slow_shape = pick(args.quick, SlowShape::quick, SlowShape::full);
    eprintln!(
        "slow handlers: {} events, 0-{} ms each, concurrency {}, partition / keys {:?} / unordered ...",
        slow_shape.events, slow_shape.handler_ms_max, slow_shape.concurrency, slow_shape.keys
    );
    let slow = slow::run(slow_shape);
    if let Some(path) = &args.plot {
        std::fs::write(path, slow::plot_svg(&slow))
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        eprintln!("slow handlers: chart written to {}", path.display());
    }
    let handler_shape = pick(args.quick, HandlerShape::quick, HandlerShape::full);
    eprintln!(
        "handlers: {} events through ordo run --handler (HTTP, 0-{} ms, concurrency {}), uniform and Zipf keys ...",
        handler_shape.events, handler_shape.handler_ms_max, handler_shape.concurrency
    );
    let handlers = handler_bench::run(handler_shape).map_err(anyhow::Error::msg)?;
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
    let kafka_events = if args.quick { 30_000 } else { 100_000 };
    eprintln!("kafka: {kafka_events} events through tansu, ordo vs a raw consume loop ...");
    let kafka = ordo_bench::kafka::run(kafka_events);
    eprintln!(
        "nats: {kafka_events} events through the local JetStream, ordo vs a raw pull-and-ack loop, then one hot key ..."
    );
    let nats = ordo_bench::nats::run(kafka_events);
    if args.json {
        // Two objects: one `json!` this long exceeds the macro's recursion limit.
        let handler_keys = json!({
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
        });
        let mut report = json!({
            "engine_events_per_s": core.engine_events_per_s.round(),
            "engine_baseline_events_per_s": core.baseline_events_per_s.round(),
            "engine_vs_hashmap": round3(core.ratio),
            "engine_events": core.events,
            "engine_cold_events_per_s": core.engine_cold_events_per_s.round(),
            "engine_cold_baseline_events_per_s": core.baseline_cold_events_per_s.round(),
            "bytes_per_idle_stream": core.bytes_per_idle_stream.round(),
            "bytes_per_idle_stream_with_dedupe": core.bytes_per_idle_stream_with_dedupe.round(),
            "parked_events": parked.events,
            "parked_heap_bytes_spilled": parked.heap_bytes_spilled,
            "parked_heap_bytes_in_memory": parked.heap_bytes_in_memory,
            "parked_heap_spilled_vs_in_memory": round3(parked.heap_bytes_spilled as f64 / parked.heap_bytes_in_memory.max(1) as f64),
            "parked_spilled_streams": parked.spilled_streams,
            "resume_ms_with_parked": round3(parked.resume_ms),
            "resume_raw_read_ms": round3(parked.resume_raw_ms),
            "resume_vs_raw_read": round3(parked.resume_ms / parked.resume_raw_ms.max(1e-9)),
            "heap_bytes_after_resume": parked.heap_bytes_after_resume,
            "parked_release_ms": round3(parked.release_ms),
            "slow_handler_events": slow.shape.events,
            "slow_handler_concurrency": slow.shape.concurrency,
            "slow_partition_events_per_s": slow.rate("partition", None).round(),
            "slow_key_events_per_s": slow.rows.iter().filter_map(|r| r.keys.map(|k| (k.to_string(), json!(r.events_per_s.round())))).collect::<serde_json::Map<String, serde_json::Value>>(),
            "slow_unordered_events_per_s": slow.rate("unordered", None).round(),
            "key_parallel_vs_partition": round3(slow.key_parallel_vs_partition),
            "key_parallel_vs_unordered": round3(slow.key_parallel_vs_unordered),
            "embedded_events_per_s": embedded.embedded_events_per_s.round(),
            "embedded_baseline_events_per_s": embedded.baseline_events_per_s.round(),
            "embedded_vs_raw_sqlite": round3(embedded.ratio),
            "embedded_metrics_events_per_s": embedded.metrics_events_per_s.round(),
            "embedded_metrics_vs_off": round3(embedded.metrics_vs_off),
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
        let broker_keys = json!({
            "single_key_events_per_s_kafka": kafka.as_ref().ok().map(|k| k.single_key_events_per_s.round()),
            "single_key_raw_events_per_s_kafka": kafka.as_ref().ok().map(|k| k.single_key_raw_events_per_s.round()),
            "nats_events_per_s": nats.as_ref().ok().map(|n| n.spread.ordo_events_per_s.round()),
            "nats_raw_events_per_s": nats.as_ref().ok().map(|n| n.spread.raw_events_per_s.round()),
            "nats_vs_raw": nats.as_ref().ok().map(|n| round3(n.spread.ratio())),
            "single_key_events_per_s_nats": nats.as_ref().ok().map(|n| n.single_key.ordo_events_per_s.round()),
            "single_key_raw_events_per_s_nats": nats.as_ref().ok().map(|n| n.single_key.raw_events_per_s.round()),
            "nats_skipped": nats.as_ref().err(),
        });
        if let (Some(all), serde_json::Value::Object(more)) = (report.as_object_mut(), broker_keys)
        {
            all.extend(more);
        }
        if let (Some(all), serde_json::Value::Object(more)) = (report.as_object_mut(), handler_keys)
        {
            all.extend(more);
        }
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
            "{:<44} {:>14} {:>14} {:>8.3}",
            format!("heap MB, {} parked (spilled vs in memory)", parked.events),
            format!("{:.1}", parked.heap_bytes_spilled as f64 / 1e6),
            format!("{:.1}", parked.heap_bytes_in_memory as f64 / 1e6),
            parked.heap_bytes_spilled as f64 / parked.heap_bytes_in_memory.max(1) as f64
        );
        outln!(
            "{:<44} {:>14.0} {:>14.0} {:>8.3}",
            "resume ms after restart (vs reading all rows)",
            parked.resume_ms,
            parked.resume_raw_ms,
            parked.resume_ms / parked.resume_raw_ms.max(1e-9)
        );
        outln!(
            "{:<44} {:>14}",
            "  heap MB after resume",
            format!("{:.1}", parked.heap_bytes_after_resume as f64 / 1e6)
        );
        outln!(
            "{:<44} {:>14.0}",
            "  ms until every parked event applied",
            parked.release_ms
        );
        for row in &slow.rows {
            let label = match row.keys {
                Some(keys) => format!("slow handlers, key-ordered, {keys} keys"),
                None => format!("slow handlers, {}", row.mode),
            };
            outln!("{:<44} {:>14.0}", label, row.events_per_s);
        }
        outln!(
            "{:<44} {:>14.0} {:>14.0} {:>8.3}",
            "  key_parallel_vs_partition",
            slow.rate("key", slow.shape.keys.last().copied()),
            slow.rate("partition", None),
            slow.key_parallel_vs_partition
        );
        outln!(
            "{:<44} {:>14.0} {:>14.0} {:>8.3}",
            "  key_parallel_vs_unordered",
            slow.rate("key", slow.shape.keys.last().copied()),
            slow.rate("unordered", None),
            slow.key_parallel_vs_unordered
        );
        let rows = [
            (
                "handler (HTTP), uniform keys vs 1 at a time",
                handlers.uniform_events_per_s,
                handlers.partition_events_per_s,
                handlers.key_parallel_vs_partition(),
            ),
            (
                "  ... vs unordered, same concurrency",
                handlers.uniform_events_per_s,
                handlers.unordered_events_per_s,
                handlers.key_parallel_vs_unordered(),
            ),
            (
                "handler, Zipf keys vs the physical limit",
                handlers.zipf_events_per_s,
                handlers.zipf_limit_events_per_s,
                handlers.zipf_vs_limit(),
            ),
            (
                "handler calls/s at 0 ms (vs raw HTTP client)",
                handlers.zero_latency_calls_per_s,
                handlers.raw_zero_latency_calls_per_s,
                handlers.zero_latency_vs_raw(),
            ),
        ];
        for (label, ordo, baseline, ratio) in rows {
            outln!("{label:<44} {ordo:>14.0} {baseline:>14.0} {ratio:>8.3}");
        }
        outln!(
            "{:<44} {:>14.0} {:>14.0} {:>8.3}",
            "embedded durable events/s (vs raw upserts)",
            embedded.embedded_events_per_s,
            embedded.baseline_events_per_s,
            embedded.ratio
        );
        outln!(
            "{:<44} {:>14.0} {:>14.0} {:>8.3}",
            "embedded, metrics on and scraped (vs off)",
            embedded.metrics_events_per_s,
            embedded.embedded_events_per_s,
            embedded.metrics_vs_off
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
        if let Ok(k) = &kafka {
            outln!(
                "{:<44} {:>14.0} {:>14.0} {:>8.3}",
                "kafka, one hot key (vs raw, one partition)",
                k.single_key_events_per_s,
                k.single_key_raw_events_per_s,
                k.single_key_events_per_s / k.single_key_raw_events_per_s
            );
        }
        match &nats {
            Ok(n) => {
                outln!(
                    "{:<44} {:>14.0} {:>14.0} {:>8.3}",
                    "nats -> SQLite events/s (vs raw pull+ack)",
                    n.spread.ordo_events_per_s,
                    n.spread.raw_events_per_s,
                    n.spread.ratio()
                );
                outln!(
                    "{:<44} {:>14.0} {:>14.0} {:>8.3}",
                    "nats, one hot key (vs raw, same stream)",
                    n.single_key.ordo_events_per_s,
                    n.single_key.raw_events_per_s,
                    n.single_key.ratio()
                );
            }
            Err(why) => outln!("{:<44} skipped: {why}", "nats -> SQLite events/s"),
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
