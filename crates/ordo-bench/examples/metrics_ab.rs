//! The cost of `ordo run --metrics` on embedded throughput, alone: alternating runs
//! without and with the metrics (scraped every 100 ms, far more often than Prometheus
//! would) over one log of 200k events, the ratio of each pair, and their median.
//!
//! `cargo run --release -p ordo-bench --example metrics_ab [PAIRS]` (default 10).
//!
//! `metrics_ab once off|on` runs one 50k-event run, for `valgrind --tool=callgrind
//! --separate-threads=yes`: the loop runs on the main thread, the endpoint and the
//! scraper on threads of their own, so the loop's own cost is counted apart.

use ordo_bench::embedded::{metrics_ab, EmbeddedShape};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("once") {
        let on = args.get(2).map(String::as_str) == Some("on");
        match ordo_bench::embedded::metrics_once(EmbeddedShape::quick(), on) {
            Ok(rate) => println!("{} {rate:.0} ev/s", if on { "on" } else { "off" }),
            Err(error) => {
                println!("failed: {error}");
                std::process::exit(1);
            }
        }
        return;
    }
    let pairs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    // As `ordo run` runs (see `set_transparent_huge_pages`).
    ordo_bench::alloc::set_transparent_huge_pages(false);
    let results = match metrics_ab(EmbeddedShape::full(), pairs) {
        Ok(results) => results,
        Err(error) => {
            println!("metrics A/B failed: {error}");
            std::process::exit(1);
        }
    };
    let mut ratios = Vec::new();
    for (pair, (off, on)) in results.iter().enumerate() {
        let ratio = on / off;
        ratios.push(ratio);
        println!("pair {pair:>2}: off {off:>9.0} ev/s  on {on:>9.0} ev/s  on/off {ratio:.3}");
    }
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
    let off_best = results.iter().map(|r| r.0).fold(0.0, f64::max);
    let on_best = results.iter().map(|r| r.1).fold(0.0, f64::max);
    println!(
        "on/off: median {median:.3}, mean {mean:.3}, best-of-each {:.3} ({pairs} pairs)",
        on_best / off_best
    );
}
