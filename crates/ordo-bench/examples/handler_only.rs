//! The handler part of `ordo bench` alone, for A/B runs:
//! `cargo run --release -p ordo-bench --example handler_only [-- --quick]`.

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let shape = if quick {
        ordo_bench::handler::HandlerShape::quick()
    } else {
        ordo_bench::handler::HandlerShape::full()
    };
    if std::env::args().any(|a| a == "--zero-only") {
        let rate = ordo_bench::handler::run_zero_latency_only(ordo_bench::handler::HandlerShape {
            repetitions: 10,
            ..shape
        })
        .expect("the handler benchmark runs");
        println!("0 ms through ordo: {rate:.0} calls/s");
        return;
    }
    let report = ordo_bench::handler::run(shape).expect("the handler benchmark runs");
    println!(
        "uniform {:.0}/s partition {:.0}/s unordered {:.0}/s -> vs_partition {:.1} vs_unordered {:.3}",
        report.uniform_events_per_s,
        report.partition_events_per_s,
        report.unordered_events_per_s,
        report.key_parallel_vs_partition(),
        report.key_parallel_vs_unordered()
    );
    println!(
        "zipf {:.0}/s limit {:.0}/s (hottest key {} events) -> zipf_vs_limit {:.3}",
        report.zipf_events_per_s,
        report.zipf_limit_events_per_s,
        report.zipf_hottest_key_events,
        report.zipf_vs_limit()
    );
    println!(
        "0 ms: ordo {:.0} calls/s raw {:.0} calls/s -> {:.3}",
        report.zero_latency_calls_per_s,
        report.raw_zero_latency_calls_per_s,
        report.zero_latency_vs_raw()
    );
}

#[global_allocator]
static ALLOCATOR: ordo_bench::CountingAllocator = ordo_bench::CountingAllocator;
