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

#[test]
fn swarm_seeds_print_their_fault_rates_and_reproduce() {
    let seed_json = |args: &[&str]| -> serde_json::Value {
        serde_json::from_slice(&ok(args).stdout).expect("one JSON object")
    };
    let fixed = seed_json(&["chaos", "--seed", "5", "--json"]);
    let swarm = seed_json(&["chaos", "--seed", "5", "--swarm", "--json"]);
    let again = seed_json(&["chaos", "--seed", "5", "--swarm", "--json"]);
    assert_eq!(fixed["swarm"], false);
    assert_eq!(fixed["fault_rates"]["commit_pct"], 15, "{fixed}");
    assert_eq!(swarm["swarm"], true);
    assert_ne!(swarm["fault_rates"], fixed["fault_rates"], "{swarm}");
    assert_ne!(swarm["trace_hash"], fixed["trace_hash"]);
    assert_eq!(swarm["trace_hash"], again["trace_hash"]);
    assert_eq!(swarm["fault_rates"], again["fault_rates"]);
    let range = seed_json(&[
        "chaos",
        "--seeds",
        "20",
        "--swarm",
        "--matrix-seeds",
        "0",
        "--json",
    ]);
    assert_eq!(range["swarm"], true);
    assert_eq!(range["divergences"], 0, "{range}");
}
