//! `ordo chaos` through the binary: the JSON contract, reproduction by seed, exit codes.

mod common;

use common::{ok, run};

#[test]
fn chaos_json_reports_zero_divergences_and_every_count() {
    let output = ok(&[
        "chaos",
        "--seeds",
        "25",
        "--events",
        "150",
        "--matrix-seeds",
        "1",
        "--json",
    ]);
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON object");
    assert_eq!(report["seeds"], 25);
    assert_eq!(report["divergences"], 0, "{report}");
    assert!(
        report["naive_divergences"].as_u64().unwrap() > 0,
        "the baseline must be able to fail"
    );
    for key in [
        "applied",
        "duplicate",
        "buffered",
        "parked",
        "released",
        "redirected",
        "late_after_merge",
        "dead_lettered",
        "stalled",
    ] {
        assert!(
            report["mechanisms"][key].is_u64(),
            "mechanism `{key}` missing"
        );
    }
    for key in [
        "retried",
        "duplicated",
        "crashes",
        "rebalances",
        "moved_streams",
        "poisoned",
        "replayed",
        "lost",
    ] {
        assert!(report["faults"][key].is_u64(), "fault `{key}` missing");
    }
    assert!(report["matrix"].as_array().is_some_and(|m| !m.is_empty()));
}

#[test]
fn one_seed_reproduces_the_same_trace() {
    let first = ok(&["chaos", "--seed", "123", "--scenario", "merges", "--json"]);
    let second = ok(&["chaos", "--seed", "123", "--scenario", "merges", "--json"]);
    let a: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    let b: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(a["trace_hash"], b["trace_hash"]);
    assert_eq!(a["counters"], b["counters"]);
    assert_eq!(a["converged"], true);
    assert_eq!(run(&["chaos", "--scenario", "nope"]).status.code(), Some(2));
}
