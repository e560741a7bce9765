//! The Kafka benchmark alone (needs `tansu` on PATH), for iterating on it and profiling:
//! `cargo run --release -p ordo-bench --example kafka_only [EVENTS]`.

#[global_allocator]
static ALLOCATOR: ordo_bench::CountingAllocator = ordo_bench::CountingAllocator;

fn main() {
    let events = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    if std::env::var_os("THP").is_none() {
        ordo_bench::alloc::set_transparent_huge_pages(false);
    }
    match ordo_bench::kafka::run(events) {
        Ok(result) => println!(
            "kafka: ordo {:.0}/s, raw {:.0}/s, ratio {:.3}",
            result.kafka_events_per_s, result.raw_events_per_s, result.ratio
        ),
        Err(why) => {
            eprintln!("kafka benchmark skipped: {why}");
            std::process::exit(2);
        }
    }
}
