//! The core benchmark alone, exactly as `ordo bench` measures it (best of 3 repetitions),
//! for A/B comparisons of engine changes: build it for each version and run the binaries
//! alternately (`cargo run --release -p ordo-bench --example core_only`).

#[global_allocator]
static ALLOCATOR: ordo_bench::CountingAllocator = ordo_bench::CountingAllocator;

fn main() {
    let result = ordo_bench::core::run(ordo_bench::core::CoreShape::full());
    println!(
        "warm {:.0} cold {:.0} baseline {:.0} bytes per idle stream {:.0}",
        result.engine_events_per_s,
        result.engine_cold_events_per_s,
        result.baseline_events_per_s,
        result.bytes_per_idle_stream
    );
}
