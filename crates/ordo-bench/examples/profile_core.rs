//! Runs the core benchmark's warm engine loop, for `perf record`.
#[global_allocator]
static ALLOCATOR: ordo_bench::CountingAllocator = ordo_bench::CountingAllocator;

fn main() {
    let shape = ordo_bench::core::CoreShape::full();
    let mut engine = ordo_core::Engine::new(ordo_core::Config {
        dedupe_window_ids: std::env::var("W")
            .ok()
            .and_then(|w| w.parse().ok())
            .unwrap_or(1 << 20),
        ..ordo_core::Config::default()
    });
    let rate = ordo_bench::core::run_engine(
        &mut engine,
        ordo_bench::core::workload(shape, 1, 1),
        shape.batch,
    );
    eprintln!("cold {rate:.0}");
    // Built before any warm pass, so a profile of the warm passes is the engine's alone.
    let passes: Vec<_> = (1..4)
        .map(|pass| ordo_bench::core::workload(shape, 1, 1 + pass * shape.versions))
        .collect();
    for events in passes {
        let rate = ordo_bench::core::run_engine(&mut engine, events, shape.batch);
        eprintln!("warm {rate:.0}");
    }
}
