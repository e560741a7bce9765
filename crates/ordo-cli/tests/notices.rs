//! `ordo notices`: the durable journal, through the built binary. Its entries are written
//! in the commit that carries what they are about, so SIGKILLs neither lose nor repeat
//! them, and its retention bounds it.

mod common;

use std::collections::HashSet;
use std::process::Stdio;
use std::time::Duration;

use common::{append_to_log, json_lines, kill, ok, ordo, run_idle, write_lines, Scratch};
use ordo_sim::scenarios::Scenario;
use ordo_sim::Rng;

fn seed(default: u64) -> u64 {
    std::env::var("ORDO_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Every entry, oldest first.
fn notices(store: &str, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["notices", "--store", store, "--json", "--limit", "0"];
    args.extend_from_slice(extra);
    json_lines(&ok(&args))
}

#[test]
fn the_journal_holds_one_entry_per_counted_event_across_sigkills() {
    let seed = seed(5);
    let history = Scenario::Merges.history(seed, 10_000);
    let deliveries = Scenario::Merges.deliveries(seed, &history);
    let scratch = Scratch::new();
    let log = append_to_log(&scratch, &deliveries);
    let store = scratch.store("state.db");
    let source = format!("log:{log}");
    let mut rng = Rng::derive(seed, "kill");
    let mut killed_mid_run = 0;
    for _ in 0..5 {
        let mut child = ordo()
            .args([
                "run", "--source", &source, "--store", &store, "--batch", "16",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.range(20, 250)));
        kill(&child);
        let _ = child.wait();
        let progress: u64 = common::export(&store).values().map(|r| r.version).sum();
        if progress < history.len() as u64 {
            killed_mid_run += 1;
        }
    }
    assert!(
        killed_mid_run >= 2,
        "seed {seed}: only {killed_mid_run} kills landed mid-run; the test proves nothing"
    );
    let output = run_idle(&source, &store, &["--json"]);
    let counters: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let entries = notices(&store, &[]);
    let count = |kind: &str| entries.iter().filter(|e| e["kind"] == kind).count() as u64;
    assert!(
        counters["late_after_merge"].as_u64().unwrap() > 0,
        "seed {seed}: the workload has late events"
    );
    assert_eq!(
        count("late-after-merge"),
        counters["late_after_merge"].as_u64().unwrap(),
        "seed {seed} (ORDO_SEED={seed}): one entry per counted late event"
    );
    assert_eq!(
        count("dead-lettered"),
        counters["dead_lettered"].as_u64().unwrap(),
        "seed {seed}: one entry per dead letter"
    );
    let late: Vec<(String, u64)> = entries
        .iter()
        .filter(|e| e["kind"] == "late-after-merge")
        .map(|e| {
            (
                e["stream"].as_str().unwrap().to_string(),
                e["version"].as_u64().unwrap(),
            )
        })
        .collect();
    let unique: HashSet<&(String, u64)> = late.iter().collect();
    assert_eq!(unique.len(), late.len(), "seed {seed}: no entry twice");
    // Filters.
    let stream = &late[0].0;
    let mine = notices(&store, &["--stream", stream]);
    assert!(!mine.is_empty() && mine.iter().all(|e| e["stream"] == stream.as_str()));
    let kind = notices(&store, &["--kind", "late-after-merge"]);
    assert_eq!(kind.len(), late.len());
    assert!(notices(&store, &["--since", "0"]).len() == entries.len());
    let future = (ordo_runtime::now_ms() + 60_000).to_string();
    assert!(notices(&store, &["--since", &future]).is_empty());
}

#[test]
fn retention_keeps_the_newest_entries() {
    let scratch = Scratch::new();
    let input = scratch.path("bad.jsonl");
    let lines: Vec<String> = (0..20).map(|i| format!("not an event {i}")).collect();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    write_lines(&input, &lines);
    let store = scratch.store("state.db");
    run_idle(
        &format!("file:{}", input.display()),
        &store,
        &["--notices-max", "5"],
    );
    let entries = notices(&store, &[]);
    assert_eq!(entries.len(), 5);
    let reasons: Vec<&str> = entries
        .iter()
        .map(|e| e["detail"]["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons.iter().all(|r| r.contains("invalid JSON")),
        "{reasons:?}"
    );
    // The newest: dead letters 16..=20.
    let ids: Vec<u64> = entries
        .iter()
        .map(|e| e["detail"]["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![16, 17, 18, 19, 20]);
    let table =
        String::from_utf8(ok(&["notices", "--store", &store, "--limit", "2"]).stdout).unwrap();
    assert_eq!(table.lines().count(), 3, "a header and two rows:\n{table}");
    let refused = common::run(&["notices", "--store", &store, "--kind", "nonsense"]);
    assert_eq!(refused.status.code(), Some(2));
}

#[test]
fn run_v_traces_every_decision_as_json_lines() {
    let scratch = Scratch::new();
    let input = scratch.path("catalog.jsonl");
    write_lines(
        &input,
        &[
            r#"{"id":"p1","stream":"product-1","version":1,"type":"ProductAdded","op":"set","data":{"name":"lamp"},"after":[{"stream":"category-9","version":1}]}"#,
            r#"{"id":"q2","stream":"product-3","version":2,"type":"Priced","op":"patch","data":{"price":5}}"#,
            r#"{"id":"c9","stream":"category-9","version":1,"type":"CategoryCreated","op":"set","data":{"name":"lighting"}}"#,
            r#"{"id":"c9","stream":"category-9","version":1,"type":"CategoryCreated","op":"set","data":{"name":"lighting"}}"#,
            r#"{"id":"q1","stream":"product-3","version":1,"type":"Added","op":"set","data":{"name":"desk"}}"#,
        ],
    );
    let source = format!("file:{}", input.display());
    let store = scratch.store("state.db");
    let output = run_idle(&source, &store, &["-v", "--log-format", "json"]);
    let decisions: Vec<(String, String)> = String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["decision"].is_string())
        .map(|line| {
            (
                line["id"].as_str().unwrap().to_string(),
                line["decision"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let of = |id: &str| -> Vec<&str> {
        decisions
            .iter()
            .filter(|(i, _)| i == id)
            .map(|(_, d)| d.as_str())
            .collect()
    };
    assert_eq!(
        of("p1"),
        vec!["parked", "released", "applied"],
        "{decisions:?}"
    );
    assert_eq!(of("q2"), vec!["buffered", "applied"], "{decisions:?}");
    // A delivery's decision comes when it is delivered, an apply's when it applies: the
    // redelivered copy may be judged before the first applies.
    let mut c9 = of("c9");
    c9.sort_unstable();
    assert_eq!(c9, vec!["applied", "duplicate", "queued"], "{decisions:?}");
    // Without -v, no trace.
    let quiet = run_idle(
        &source,
        &scratch.store("quiet.db"),
        &["--log-format", "json"],
    );
    assert!(!String::from_utf8_lossy(&quiet.stderr).contains("\"decision\""));
}
