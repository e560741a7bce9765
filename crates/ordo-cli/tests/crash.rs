//! Crash consistency through the built binary: SIGKILL at random moments with restarts,
//! commit faults injected half-way through a transaction, and graceful SIGTERM.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{append_to_log, export, kill_with, ordo, run, run_idle, Scratch};
use ordo_core::{Event, Op};
use ordo_sim::workload::{deliver, event, random_history, Disorder, Shape};
use ordo_sim::{compare, oracle, Rng};

#[test]
fn sigkill_at_random_moments_then_restart_converges_to_the_oracle() {
    let seed: u64 = std::env::var("ORDO_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let scratch = Scratch::new();
    let shape = Shape {
        streams: 60,
        events: 20_000,
        ..Shape::default()
    };
    let history = random_history(seed, shape);
    let deliveries = deliver(seed, &history, Disorder::Window(50), 15);
    let log = append_to_log(&scratch, &deliveries);
    let store = scratch.store("state.db");
    let source = format!("log:{log}");
    let mut rng = Rng::derive(seed, "kill");
    let mut killed_mid_run = 0;
    for round in 0..5 {
        let mut child = ordo()
            .args([
                "run", "--source", &source, "--store", &store, "--batch", "16",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ordo run starts");
        std::thread::sleep(Duration::from_millis(rng.range(20, 400)));
        kill_with(&child, "-KILL");
        let status = child.wait().expect("ordo run ends");
        assert!(
            !status.success(),
            "seed {seed} round {round}: killed runs do not exit 0"
        );
        let progress: u64 = export(&store).values().map(|row| row.version).sum();
        if progress < history.len() as u64 {
            killed_mid_run += 1;
        }
    }
    assert!(
        killed_mid_run >= 2,
        "seed {seed}: only {killed_mid_run} kills landed mid-run; the test proves nothing"
    );
    run_idle(&source, &store, &[]);
    let divergence = compare(&oracle::run(&history), &export(&store), true);
    assert!(
        divergence.is_empty(),
        "seed {seed} diverged (ORDO_SEED={seed}):\n{divergence}"
    );
}

/// Streams whose every event adds 1 to `n`: after any commit, `n` must equal the
/// stream's version, or state and position moved apart.
fn counting_history(streams: usize, versions: u64) -> Vec<Event> {
    let mut history = Vec::new();
    for version in 1..=versions {
        for s in 0..streams {
            let stream = format!("counter-{s}");
            history.push(event(
                format!("{stream}-{version}"),
                &stream,
                version,
                "Counted",
                Op::Incr,
                serde_json::json!({"n": 1}),
                vec![],
            ));
        }
    }
    history
}

fn assert_counts_match_versions(store: &str, context: &str) -> u64 {
    let mut total = 0;
    for (stream, row) in export(store) {
        let n = row.doc.as_ref().and_then(|d| d["n"].as_u64()).unwrap_or(0);
        assert_eq!(
            n, row.version,
            "{context}: `{stream}` applied {n} increments at version {}",
            row.version
        );
        total += row.version;
    }
    total
}

/// Needs a binary built with the `fault-injection` feature (scripts/test.sh builds it so).
#[test]
#[cfg(feature = "fault-injection")]
fn an_injected_commit_fault_writes_neither_state_nor_position() {
    for stage in ["documents", "checkpoints"] {
        let scratch = Scratch::new();
        let history = counting_history(20, 40);
        let deliveries = deliver(5, &history, Disorder::Window(30), 20);
        let log = append_to_log(&scratch, &deliveries);
        let store = scratch.store("state.db");
        let source = format!("log:{log}");
        let output = ordo()
            .args([
                "run",
                "--source",
                &source,
                "--store",
                &store,
                "--exit-when-idle",
                "--batch",
                "40",
                "--json",
            ])
            .env("ORDO_FAULT_COMMIT", format!("4:{stage}"))
            .output()
            .expect("ordo runs");
        assert_eq!(
            output.status.code(),
            Some(1),
            "{stage}: a failed commit is a failed run"
        );
        assert!(String::from_utf8_lossy(&output.stderr).contains("injected fault"));
        // What is in the store is exactly the first three commits: counts equal versions,
        // and the counters written in the same transactions agree.
        let applied_before = assert_counts_match_versions(&store, stage);
        assert!(applied_before > 0, "{stage}: earlier commits are kept");
        // The restart re-reads from the committed position and applies nothing twice.
        let output = run_idle(&source, &store, &["--json"]);
        let counters: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let total = assert_counts_match_versions(&store, stage);
        assert_eq!(
            total,
            history.len() as u64,
            "{stage}: every event applied exactly once"
        );
        assert_eq!(counters["applied"].as_u64(), Some(total));
    }
}

#[test]
fn sigterm_finishes_the_batch_commits_and_exits_zero() {
    let scratch = Scratch::new();
    let history = counting_history(10, 30);
    let log = append_to_log(&scratch, &history);
    let store = scratch.store("state.db");
    let source = format!("log:{log}");
    let child = ordo()
        .args(["run", "--source", &source, "--store", &store])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ordo run starts");
    // Wait until it has consumed everything, then ask it to stop.
    let mut waited = 0;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        waited += 1;
        let output = run(&["export", "--store", &store]);
        let done = output.status.success()
            && String::from_utf8_lossy(&output.stdout).lines().count() == 10
            && assert_counts_match_versions(&store, "while running") == history.len() as u64;
        if done || waited > 100 {
            break;
        }
    }
    kill_with(&child, "-TERM");
    let output = child.wait_with_output().expect("ordo run ends");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("stopped by signal"));
    assert_eq!(
        assert_counts_match_versions(&store, "after SIGTERM"),
        history.len() as u64
    );
}
