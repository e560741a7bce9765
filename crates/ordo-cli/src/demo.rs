//! `ordo demo`: the field scenarios through injected disorder on the embedded event log
//! and the SQLite store, with a crash half-way, checked against the in-order oracle, with
//! a naive consumer for contrast; then an on-call scenario fixed by operator actions.

mod operations;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use ordo_core::Config;
use ordo_log::EventLog;
use ordo_runtime::{Consumer, CrashAfter, LogSource, RunError, RunOptions, SourceError};
use ordo_sim::scenarios::Scenario;
use ordo_sim::{compare, count_wrong, naive, oracle};
use ordo_store::{SqliteStore, Store};
use serde_json::json;

use crate::cli::DemoArgs;

/// Deliveries per commit in the demo: small, so the crash loses a real batch.
const DEMO_BATCH_EVENTS: usize = 256;

/// Where the demo's logs and stores go: a scratch directory removed when dropped, or the
/// `--keep` directory, left for the user to look at.
struct Scratch {
    dir: PathBuf,
    keep: bool,
}

impl Scratch {
    fn new(keep: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let Some(dir) = keep else {
            let dir = std::env::temp_dir().join(format!("ordo-demo-{}", std::process::id()));
            std::fs::create_dir_all(&dir).context("creating a scratch directory")?;
            return Ok(Scratch { dir, keep: false });
        };
        if dir.exists() {
            // Logs are appended to, stores resumed: a second demo in one directory would
            // not be the demo.
            let empty = std::fs::read_dir(dir)
                .with_context(|| format!("--keep {}", dir.display()))?
                .next()
                .is_none();
            anyhow::ensure!(
                empty,
                "--keep {}: the directory must be empty or missing",
                dir.display()
            );
        }
        std::fs::create_dir_all(dir).with_context(|| format!("--keep {}", dir.display()))?;
        Ok(Scratch {
            dir: dir.to_path_buf(),
            keep: true,
        })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// How to read the merge counters, which look alike and are not.
const MERGE_COUNTERS_LEGEND: &str =
    "reading the merge counters: `late after merge` counts events produced for an entity after it
was merged away (a producer still holding the old id); `redirected` counts those ordo applied to
the merge target. They differ when a late event was delivered before the merge itself: it is
applied to its source and folded into the target by the merge (counted late, not redirected).";

struct Outcome {
    deliveries: usize,
    entities: usize,
    divergence: ordo_sim::Divergence,
    naive_wrong: usize,
    counters: ordo_core::Counters,
    dead_letters: usize,
}

fn run_scenario(
    scenario: Scenario,
    args: &DemoArgs,
    scratch: &Scratch,
) -> anyhow::Result<(usize, Outcome)> {
    let history = scenario.history(args.seed, args.events);
    let deliveries = scenario.deliveries(args.seed, &history);
    let scratch_path = |suffix: &str| -> anyhow::Result<String> {
        let path = scratch.dir.join(format!("{}-{suffix}", scenario.name()));
        Ok(path.to_str().context("scratch path is UTF-8")?.to_string())
    };
    let log_path = scratch_path("log.db")?;
    let store_path = scratch_path("state.db")?;
    // Saved to the embedded log in delivery order: the disorder is in the log itself.
    let mut log = EventLog::open(&log_path, true)?;
    let lines: Vec<String> = deliveries.iter().map(|e| e.to_json_string()).collect();
    log.append_lines(lines.iter().map(String::as_str))?;
    drop(log);
    let (counters, dead_letters, actual) =
        crash_and_restart(&log_path, &store_path, deliveries.len() as u64, args.json)?;
    let expected = oracle::run(&history);
    let naive = naive::run(&deliveries);
    Ok((
        history.len(),
        Outcome {
            deliveries: deliveries.len(),
            entities: expected.len(),
            divergence: compare(&expected, &actual, true),
            naive_wrong: count_wrong(&expected, &naive, false),
            counters,
            dead_letters,
        },
    ))
}

/// Consumes the log into the store with the real runtime: a first run killed half-way
/// (what it had not committed is lost, as with kill -9), then a restart until idle.
/// Returns the run's counters, the dead letters and the export.
fn crash_and_restart(
    log_path: &str,
    store_path: &str,
    deliveries: u64,
    json: bool,
) -> anyhow::Result<(ordo_core::Counters, usize, ordo_sim::Export)> {
    let source_key = format!("log:{log_path}");
    let progress = !json && deliveries >= 50_000;
    // One run of the real runtime on a freshly opened store: a restart each time.
    let options = RunOptions {
        exit_when_idle: true,
        commit_events_max: DEMO_BATCH_EVENTS,
        progress,
        ..RunOptions::default()
    };
    let open = || -> anyhow::Result<(Consumer<SqliteStore>, LogSource)> {
        let store = SqliteStore::open(store_path, true)?;
        let mut consumer = Consumer::open(store, &source_key, Config::default())?;
        consumer.verbose = false;
        Ok((consumer, LogSource::open(log_path)?))
    };
    let (mut consumer, source) = open()?;
    let mut source = CrashAfter::new(source, deliveries / 2);
    let crashed = ordo_runtime::run(
        &mut consumer,
        &mut source,
        &options,
        &AtomicBool::new(false),
    );
    anyhow::ensure!(
        matches!(crashed, Err(RunError::Source(SourceError::Crashed { .. }))),
        "the demo's crash did not happen"
    );
    drop(consumer);
    // Restart from what was committed and run until idle: a fresh open, as after a crash.
    let (mut consumer, mut source) = open()?;
    let report = ordo_runtime::run(
        &mut consumer,
        &mut source,
        &options,
        &AtomicBool::new(false),
    )?;
    let store = consumer.store();
    let actual = ordo_sim::export::from_store(store.export()?);
    Ok((report.counters, store.dead_letters()?.len(), actual))
}

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let scratch = Scratch::new(args.keep.as_deref())?;
    let mut all_converged = true;
    let mut reports = Vec::new();
    for scenario in Scenario::ALL {
        if !args.json {
            outln!("== {}: {}", scenario.name(), scenario.summary());
        }
        let (events, outcome) = run_scenario(scenario, &args, &scratch)?;
        let converged = outcome.divergence.is_empty();
        all_converged &= converged;
        if !args.json {
            print_scenario(events, &outcome, args.seed);
        }
        reports.push(json!({
            "scenario": scenario.name(),
            "events": events,
            "deliveries": outcome.deliveries,
            "entities": outcome.entities,
            "converged": converged,
            "divergences": outcome.divergence.streams.len(),
            "naive_wrong": outcome.naive_wrong,
            "dead_letters": outcome.dead_letters,
            "counters": outcome.counters.to_json(),
        }));
    }
    let on_call = operations::run(&scratch.dir)?;
    all_converged &= on_call.wrong.is_empty();
    reports.push(operations::to_json(&on_call));
    if args.json {
        outln!(
            "{}",
            json!({"converged": all_converged, "scenarios": reports})
        );
        return Ok(exit_code(all_converged));
    }
    operations::print(&on_call);
    outln!("{MERGE_COUNTERS_LEGEND}\n");
    if scratch.keep {
        outln!(
            "kept: each scenario's event log and store in {} (try `ordo status --store sqlite:{}/operations-state.db`)\n",
            scratch.dir.display(),
            scratch.dir.display()
        );
    }
    if all_converged {
        outln!("converged: every scenario matches the in-order oracle");
    } else {
        outln!("NOT converged: see the scenarios above");
    }
    Ok(exit_code(all_converged))
}

/// One scenario's outcome for humans: what was absorbed, and against the oracle.
fn print_scenario(events: usize, outcome: &Outcome, seed: u64) {
    let converged = outcome.divergence.is_empty();
    let c = outcome.counters;
    outln!(
            "   {events} events saved to the embedded log as {} deliveries ({} extra copies), {} entities;",
            outcome.deliveries,
            outcome.deliveries - events,
            outcome.entities
        );
    outln!(
        "   consumed into SQLite with a crash half-way (the uncommitted batch lost) and a restart"
    );
    outln!(
            "   absorbed: dedupe {} duplicates | version guard {} stale | gap buffer {} buffered | dependency wait {} parked, {} released",
            c.duplicate, c.stale, c.buffered, c.parked, c.released
        );
    outln!(
            "             alias redirect {} redirected, {} late after merge | dead letters {} | stalled {}",
            c.redirected, c.late_after_merge, outcome.dead_letters, c.stalled
        );
    if converged {
        outln!(
            "   ordo:  all {} entities equal the in-order oracle",
            outcome.entities
        );
    } else {
        outln!(
            "   ordo:  DIVERGED on {} entities; rerun with --seed {}\n{}",
            outcome.divergence.streams.len(),
            seed,
            outcome.divergence
        );
    }
    outln!(
        "   naive: {} of {} entities wrong (arrival order, no guard)\n",
        outcome.naive_wrong,
        outcome.entities
    );
}

fn exit_code(converged: bool) -> ExitCode {
    if converged {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
