//! `ordo bench --only mixed` through the binary: the mixed workload runs `ordo run` as a
//! child process and the raw upsert loop beside it, and reports the contract's keys with
//! figures that are measured, not placeholders.

mod common;

use common::ok;

#[test]
fn the_mixed_benchmark_reports_measured_ratios_and_the_sweeps() {
    let output = ok(&["bench", "--quick", "--only", "mixed", "--json"]);
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON object");
    for key in [
        "mixed_events_per_s",
        "mixed_vs_raw_upsert",
        "mixed_cpu_us_per_event",
        "mixed_raw_upsert_events_per_s",
    ] {
        let value = report[key].as_f64().unwrap_or(0.0);
        assert!(value > 0.0, "`{key}` is not a positive figure: {report}");
    }
    assert!(
        report.get("engine_vs_hashmap").is_none(),
        "--only mixed ran the core section too: {report}"
    );
    let sizes = report["mixed_sizes"].as_array().expect("mixed_sizes");
    assert_eq!(sizes[0]["events"], 150_000);
    // The file holds the scenario's redelivered copies and malformed lines too.
    assert!(sizes[0]["lines"].as_u64().unwrap() > 150_000, "{report}");
    for (sweep, x) in [
        ("mixed_by_streams", "streams"),
        ("mixed_by_parked_percent", "parked_percent"),
    ] {
        let points = report[sweep].as_array().expect(sweep);
        assert!(points.len() >= 2, "{sweep}: {report}");
        for point in points {
            assert!(point[x].is_u64(), "{sweep}: {point}");
            assert!(point["cpu_us_per_event"].as_f64().unwrap() > 0.0, "{point}");
        }
    }
}
