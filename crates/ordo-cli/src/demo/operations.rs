//! The demo's on-call scenario: a bank ledger whose input holds one of each thing an
//! operator meets (a redelivery, a second writer, a poison deposit, a lost event), run
//! through the real runtime, then fixed with the operator actions the CLI verbs use, and
//! checked against the ledger an in-order, exactly-once consumer of the fixed input keeps.

use std::sync::atomic::AtomicBool;

use anyhow::Context;
use ordo_core::Config;
use ordo_log::EventLog;
use ordo_runtime::operator::Action;
use ordo_runtime::{Consumer, LogSource, RunOptions};
use ordo_store::{SqliteStore, Store};
use serde_json::{json, Value};

/// The ledger as delivered (one line per delivery).
const DELIVERIES: [&str; 10] = [
    r#"{"id":"a1","stream":"account-1","version":1,"type":"Opened","op":"set","data":{"balance":0}}"#,
    r#"{"id":"a2","stream":"account-1","version":2,"type":"Deposited","op":"incr","data":{"balance":50}}"#,
    // A second writer numbered its deposit 2 as well: `stale`, never applied.
    r#"{"id":"x2","stream":"account-1","version":2,"type":"Deposited","op":"incr","data":{"balance":999}}"#,
    // The first deposit again (a redelivery): `duplicate`.
    r#"{"id":"a2","stream":"account-1","version":2,"type":"Deposited","op":"incr","data":{"balance":50}}"#,
    r#"{"id":"a3","stream":"account-1","version":3,"type":"Deposited","op":"incr","data":{"balance":25}}"#,
    r#"{"id":"b1","stream":"account-2","version":1,"type":"Opened","op":"set","data":{"balance":10}}"#,
    // The teller app sent the amount as text: a dead letter, and b3 waits behind it.
    r#"{"id":"b2","stream":"account-2","version":2,"type":"Deposited","op":"incr","data":{"balance":"100"}}"#,
    r#"{"id":"b3","stream":"account-2","version":3,"type":"Deposited","op":"incr","data":{"balance":5}}"#,
    r#"{"id":"c1","stream":"account-3","version":1,"type":"Opened","op":"set","data":{"balance":7}}"#,
    // account-3's version 2 was lost in an outage: version 3 waits, then stalls.
    r#"{"id":"c3","stream":"account-3","version":3,"type":"Deposited","op":"incr","data":{"balance":1}}"#,
];

/// The corrected deposit the operator replays in the dead letter's place.
const CORRECTED: &str = r#"{"id":"b2-fixed","stream":"account-2","version":2,"type":"Deposited","op":"incr","data":{"balance":100}}"#;

/// What an in-order, exactly-once consumer of the fixed ledger holds: (stream, version,
/// balance).
const EXPECTED: [(&str, u64, i64); 3] = [
    ("account-1", 3, 75),
    ("account-2", 3, 115),
    ("account-3", 3, 8),
];

/// What the scenario saw and did.
pub struct Report {
    /// Counters after the first pass, before any fix.
    pub before: ordo_core::Counters,
    /// Each operator action: its verb and what came of it.
    pub actions: Vec<(String, String)>,
    /// Streams that differ from the expected ledger, with what was found.
    pub wrong: Vec<String>,
    /// The dead letter's reason, as `dlq list` shows it.
    pub dead_letter_reason: String,
}

/// Runs the scenario in `dir` (its log and store stay there).
pub fn run(dir: &std::path::Path) -> anyhow::Result<Report> {
    let log_path = path_in(dir, "operations-log.db")?;
    let store_path = path_in(dir, "operations-state.db")?;
    let mut log = EventLog::open(&log_path, true)?;
    log.append_lines(DELIVERIES.iter().copied())?;
    drop(log);

    let store = SqliteStore::open(&store_path, true)?;
    let mut consumer = Consumer::open(store, &format!("log:{log_path}"), Config::default())?;
    consumer.verbose = false;
    let mut source = LogSource::open(&log_path)?;
    let options = RunOptions {
        exit_when_idle: true,
        ..RunOptions::default()
    };
    let report = ordo_runtime::run(
        &mut consumer,
        &mut source,
        &options,
        &AtomicBool::new(false),
    )?;
    let entries = consumer.store().dead_letters()?;
    let poison = entries
        .first()
        .context("the poison deposit was not dead-lettered")?;
    let dead_letter_reason = poison.reason.clone();

    // The on-call fix, as `ordo dlq replay --id N --body fixed.json` and `ordo parked
    // skip` carry it out.
    let mut actions = Vec::new();
    for (action, reason) in [
        (
            Action::Replay {
                id: poison.id,
                body: Some(CORRECTED.into()),
            },
            "amount sent as text by the teller app",
        ),
        (
            Action::SkipMissing {
                stream: "account-3".into(),
                version: 2,
            },
            "lost in the outage; the bank re-books it by hand",
        ),
    ] {
        let record = consumer.perform(&action, action.request(reason))?;
        actions.push((record.verb, record.result));
    }
    consumer.commit()?;
    let wrong = compare(consumer.store().export()?);
    Ok(Report {
        before: report.counters,
        actions,
        wrong,
        dead_letter_reason,
    })
}

/// Streams whose exported state differs from [`EXPECTED`].
fn compare(rows: Vec<ordo_store::ExportRow>) -> Vec<String> {
    let mut wrong = Vec::new();
    for (stream, version, balance) in EXPECTED {
        let found = rows.iter().find(|r| r.stream == stream);
        let got = found.map(|r| (r.version, r.doc.clone()));
        let want = (version, Some(json!({ "balance": balance })));
        if got.as_ref() != Some(&want) {
            wrong.push(format!("{stream}: expected {want:?}, found {got:?}"));
        }
    }
    wrong
}

fn path_in(dir: &std::path::Path, name: &str) -> anyhow::Result<String> {
    Ok(dir
        .join(name)
        .to_str()
        .context("the demo's directory is UTF-8")?
        .to_string())
}

/// The scenario's lines of the report.
pub fn print(report: &Report) {
    let c = report.before;
    outln!("== operations: a bank ledger with a redelivery, a second writer, a poison deposit and a lost event; fixed while nothing is stopped");
    outln!(
        "   {} deliveries; first pass: {} duplicate (a redelivery), {} stale (a second writer at account-1 version 2), {} dead-lettered, {} stalled",
        DELIVERIES.len(),
        c.duplicate,
        c.stale,
        c.dead_lettered,
        c.stalled
    );
    outln!(
        "   the dead letter: account-2 version 2: {}",
        report.dead_letter_reason
    );
    for (verb, result) in &report.actions {
        outln!("   operator: {verb} -> {result}");
    }
    if report.wrong.is_empty() {
        outln!(
            "   ordo:  all {} accounts equal the fixed ledger, in order and exactly once\n",
            EXPECTED.len()
        );
    } else {
        outln!(
            "   ordo:  WRONG after the fix: {}\n",
            report.wrong.join("; ")
        );
    }
}

/// The scenario as JSON.
pub fn to_json(report: &Report) -> Value {
    json!({
        "scenario": "operations",
        "converged": report.wrong.is_empty(),
        "counters_before_fix": report.before.to_json(),
        "actions": report.actions.iter().map(|(verb, result)| json!({"verb": verb, "result": result})).collect::<Vec<_>>(),
        "wrong": report.wrong,
    })
}
