//! One NATS workload of `ordo bench`: `cargo run --release -p ordo-bench --example
//! nats_one EVENTS STREAMS` prints ordo's and the raw loop's events per second.

fn main() {
    // The source's warnings (an ack not confirmed, a pull that failed) on stderr.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::WARN)
        .init();
    let mut args = std::env::args().skip(1);
    let events = args.next().and_then(|a| a.parse().ok()).unwrap_or(30_000);
    let streams = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    match ordo_bench::nats::workload(events, streams, "example") {
        Ok(figures) => println!(
            "ordo {:.0}/s, raw {:.0}/s, ratio {:.3}",
            figures.ordo_events_per_s,
            figures.raw_events_per_s,
            figures.ratio()
        ),
        Err(why) => println!("skipped: {why}"),
    }
}
