//! Operator verbs against a running `ordo run` on a SQLite store, through the built
//! binary: the verb leaves a request, the running consumer carries it out and records it,
//! and the verb prints what came of it. Hand-written ledger and catalog events.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{export, json_lines, ok, ordo, run, write_lines, KilledOnDrop, Scratch};

/// A bank ledger and a catalog, with one of each stuck state: a poison event (a
/// non-integer `incr`), a lost version, and a merge without its cuts.
fn stuck_lines() -> Vec<&'static str> {
    vec![
        r#"{"id":"l1","stream":"account-1","version":1,"type":"Opened","op":"set","data":{"balance":0}}"#,
        r#"{"id":"l2","stream":"account-1","version":2,"type":"Deposited","op":"incr","data":{"balance":"100"}}"#,
        r#"{"id":"l3","stream":"account-1","version":3,"type":"Deposited","op":"incr","data":{"balance":5}}"#,
        r#"{"id":"k1","stream":"account-2","version":1,"type":"Opened","op":"set","data":{"balance":7}}"#,
        r#"{"id":"k3","stream":"account-2","version":3,"type":"Deposited","op":"incr","data":{"balance":1}}"#,
        r#"{"id":"c1","stream":"customer-1","version":1,"type":"Registered","op":"set","data":{"orders":1}}"#,
        r#"{"id":"c2","stream":"customer-2","version":1,"type":"Registered","op":"set","data":{"orders":2}}"#,
        r#"{"id":"m1","stream":"customer-2","version":2,"type":"CustomersMerged","op":"merge","data":{"from":["customer-1"]}}"#,
    ]
}

/// Runs `ordo ARGS`, returning (exit code, stdout, how long it took).
fn timed(args: &[&str]) -> (i32, String, Duration) {
    let started = Instant::now();
    let output = run(args);
    let took = started.elapsed();
    assert!(
        output.status.code().is_some(),
        "ordo {args:?} was killed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    (
        output.status.code().unwrap(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        took,
    )
}

/// The entry id of the dead letter at `stream`.
fn entry_of(store: &str, stream: &str) -> String {
    let listed = json_lines(&ok(&["dlq", "list", "--store", store, "--json"]));
    let entry = listed
        .iter()
        .find(|e| e["stream"] == stream)
        .unwrap_or_else(|| panic!("no dead letter for {stream}: {listed:?}"));
    assert!(entry["event_id"].is_string() && entry["first_seen_ms"].is_u64());
    entry["id"].as_u64().unwrap().to_string()
}

/// `dlq replay --body` of account-1's poison deposit, corrected (same stream and version,
/// a new id): (exit code, stdout, how long it took).
fn replay_corrected_deposit(scratch: &Scratch, store: &str) -> (i32, String, Duration) {
    let poison = entry_of(store, "account-1");
    let fixed = scratch.path("fixed.json");
    write_lines(
        &fixed,
        &[
            r#"{"id":"l2-fixed","stream":"account-1","version":2,"type":"Deposited","op":"incr","data":{"balance":100}}"#,
        ],
    );
    timed(&[
        "dlq",
        "replay",
        "--store",
        store,
        "--id",
        &poison,
        "--body",
        fixed.to_str().unwrap(),
        "--reason",
        "amount sent as text by the teller app",
    ])
}

#[test]
fn every_stuck_state_is_fixed_while_ordo_run_holds_the_sqlite_store() {
    let scratch = Scratch::new();
    let input = scratch.path("stuck.jsonl");
    let mut lines = stuck_lines();
    // A withdrawal from a closed account: refused, and the bank decides to drop it.
    lines.push(r#"{"id":"w1","stream":"account-3","version":1,"type":"Withdrawn","op":"incr","data":{"balance":"all"}}"#);
    lines.push(r#"{"id":"w2","stream":"account-3","version":2,"type":"Deposited","op":"incr","data":{"balance":3}}"#);
    write_lines(&input, &lines);
    let log = scratch.path("log.db").to_str().unwrap().to_string();
    ok(&["append", "--log", &log, input.to_str().unwrap()]);
    let store = scratch.store("state.db");
    let source = format!("log:{log}");
    let child = ordo()
        .args(["run", "--source", &source, "--store", &store])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KilledOnDrop(child);
    // Wait for the run to commit both dead letters.
    let settled = (0..1_000).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        let listed = run(&["dlq", "list", "--store", &store, "--json"]);
        listed.status.success() && json_lines(&listed).len() == 3
    });
    assert!(settled, "the run never dead-lettered the three events");

    // The poison deposit, corrected: same stream and version, a new id.
    let (code, out, took) = replay_corrected_deposit(&scratch, &store);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("requeued"), "{out}");
    eprintln!("dlq replay --body answered in {took:?}");

    // The malformed merge, replayed as it is, fails again and says so.
    let merge = entry_of(&store, "customer-2");
    let (code, out, _) = timed(&["dlq", "replay", "--store", &store, "--id", &merge]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("dead-lettered-again"), "{out}");
    // Corrected with its cut, it goes.
    let merge = entry_of(&store, "customer-2");
    let fixed_merge = scratch.path("merge.json");
    write_lines(
        &fixed_merge,
        &[
            r#"{"id":"m1-fixed","stream":"customer-2","version":2,"type":"CustomersMerged","op":"merge","data":{"from":["customer-1"]},"after":[{"stream":"customer-1","version":1}]}"#,
        ],
    );
    let (code, out, _) = timed(&[
        "dlq",
        "replay",
        "--store",
        &store,
        "--id",
        &merge,
        "--body",
        fixed_merge.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");

    // The lost version of account-2.
    let (code, out, took) = timed(&[
        "parked",
        "skip",
        "--store",
        &store,
        "--stream",
        "account-2",
        "--version",
        "2",
        "--reason",
        "lost in the March outage",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("skipped"), "{out}");
    eprintln!("parked skip answered in {took:?}");

    let closed = entry_of(&store, "account-3");
    let (code, out, _) = timed(&[
        "dlq",
        "skip",
        "--store",
        &store,
        "--id",
        &closed,
        "--reason",
        "account closed; withdrawal void",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("skipped"), "{out}");

    let rows = export(&store);
    assert_eq!(rows["account-3"].version, 2);
    assert_eq!(
        rows["account-3"].doc,
        Some(serde_json::json!({"balance": 3}))
    );
    assert_eq!(rows["account-1"].version, 3);
    assert_eq!(
        rows["account-1"].doc,
        Some(serde_json::json!({"balance": 105}))
    );
    assert_eq!(rows["account-2"].version, 3);
    assert_eq!(
        rows["account-2"].doc,
        Some(serde_json::json!({"balance": 8}))
    );
    assert_eq!(
        rows["customer-1"].merged_into.as_deref(),
        Some("customer-2")
    );
    assert_eq!(
        rows["customer-2"].doc,
        Some(serde_json::json!({"orders": 3}))
    );
    assert!(json_lines(&ok(&["dlq", "list", "--store", &store, "--json"])).is_empty());

    // Every action is on record: who, when, why, what came of it.
    let path = store.strip_prefix("sqlite:").unwrap();
    let connection = ordo_store::rusqlite::Connection::open(path).unwrap();
    let mut statement = connection
        .prepare("SELECT verb, reason, state, result, user_name, done_ms FROM operator_actions ORDER BY id")
        .unwrap();
    let records: Vec<(String, String, String, String, String, Option<i64>)> = statement
        .query_map([], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
                row.get(5)?,
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let summary: Vec<(&str, &str, &str)> = records
        .iter()
        .map(|(verb, _, state, result, _, _)| (verb.as_str(), state.as_str(), result.as_str()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("dlq replay", "done", "requeued"),
            ("dlq replay", "done", "dead-lettered-again"),
            ("dlq replay", "done", "requeued"),
            ("parked skip", "done", "skipped"),
            ("dlq skip", "done", "skipped"),
        ]
    );
    assert_eq!(records[0].1, "amount sent as text by the teller app");
    assert_eq!(records[3].1, "lost in the March outage");
    assert!(records.iter().all(|r| !r.4.is_empty() && r.5.is_some()));

    // The run went on the whole time, and still does.
    assert!(child.0.try_wait().unwrap().is_none(), "ordo run exited");
    common::kill_with(&child.0, "-TERM");
    let status = child.0.wait().unwrap();
    assert!(status.success(), "ordo run ended with {status:?}");
}

#[test]
fn a_corrected_event_for_another_stream_or_version_is_refused() {
    let scratch = Scratch::new();
    let input = scratch.path("stuck.jsonl");
    write_lines(&input, &stuck_lines());
    let store = scratch.store("state.db");
    common::run_idle(&format!("file:{}", input.display()), &store, &[]);
    let poison = entry_of(&store, "account-1");
    let wrong = scratch.path("wrong.json");
    write_lines(
        &wrong,
        &[
            r#"{"id":"x","stream":"account-1","version":3,"type":"Deposited","op":"incr","data":{"balance":1}}"#,
        ],
    );
    let (code, out, _) = timed(&[
        "dlq",
        "replay",
        "--store",
        &store,
        "--id",
        &poison,
        "--body",
        wrong.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("refused") && out.contains("version 3"),
        "{out}"
    );
    assert_eq!(export(&store)["account-1"].version, 1, "nothing changed");
}

#[test]
fn parked_list_summarises_by_what_is_awaited_and_filters() {
    let scratch = Scratch::new();
    let input = scratch.path("catalog.jsonl");
    write_lines(
        &input,
        &[
            r#"{"id":"p1","stream":"product-1","version":1,"type":"ProductAdded","op":"set","data":{"name":"lamp"},"after":[{"stream":"category-9","version":1}]}"#,
            r#"{"id":"p2","stream":"product-2","version":1,"type":"ProductAdded","op":"set","data":{"name":"desk"},"after":[{"stream":"category-9","version":1}]}"#,
            r#"{"id":"p2b","stream":"product-2","version":2,"type":"Priced","op":"patch","data":{"price":100}}"#,
            r#"{"id":"q3","stream":"product-3","version":2,"type":"Priced","op":"patch","data":{"price":5}}"#,
        ],
    );
    let store = scratch.store("state.db");
    common::run_idle(&format!("file:{}", input.display()), &store, &[]);
    let table = String::from_utf8(ok(&["parked", "list", "--store", &store]).stdout).unwrap();
    assert!(table.starts_with("4 events wait in 3 streams"), "{table}");
    assert!(
        table.contains("3 events in      2 streams: `category-9` (after)"),
        "{table}"
    );
    assert!(table.contains("1 streams: a missing version"), "{table}");
    let mine = json_lines(&ok(&[
        "parked",
        "list",
        "--store",
        &store,
        "--stream",
        "product-2",
        "--json",
    ]));
    let ids: Vec<&str> = mine
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["p2", "p2b"]);
    assert!(mine.iter().all(
        |e| e["waits_for"]["kind"] == "dependency" && e["waits_for"]["stream"] == "category-9"
    ));
    let limited = json_lines(&ok(&[
        "parked", "list", "--store", &store, "--limit", "1", "--json",
    ]));
    assert_eq!(limited.len(), 1);
    assert_eq!(limited[0]["waits_for"]["kind"], "dependency");
}

/// PostgreSQL: the verbs act themselves and record the action; the running consumer sees
/// the record within a second, rebuilds from the store and goes on.
#[test]
fn every_stuck_state_is_fixed_while_ordo_run_runs_on_postgres() {
    let (mut admin, schema, store) = common::postgres_schema("ordo_ops_live");
    let scratch = Scratch::new();
    let input = scratch.path("stuck.jsonl");
    write_lines(&input, &stuck_lines());
    let log = scratch.path("log.db").to_str().unwrap().to_string();
    ok(&["append", "--log", &log, input.to_str().unwrap()]);
    let source = format!("log:{log}");
    let child = ordo()
        .args(["run", "--source", &source, "--store", &store])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KilledOnDrop(child);
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let started = Instant::now();
        while !done() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{what} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for("two dead letters", &|| {
        let listed = run(&["dlq", "list", "--store", &store, "--json"]);
        listed.status.success() && json_lines(&listed).len() == 2
    });
    let (code, out, _) = replay_corrected_deposit(&scratch, &store);
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = timed(&[
        "parked",
        "skip",
        "--store",
        &store,
        "--stream",
        "account-2",
        "--version",
        "2",
        "--reason",
        "lost in the outage",
    ]);
    assert_eq!(code, 0, "{out}");
    // New events for both streams reach the running consumer, which must have rebuilt
    // past the dead letter and the gap.
    let later = scratch.path("later.jsonl");
    write_lines(
        &later,
        &[
            r#"{"id":"l4","stream":"account-1","version":4,"type":"Deposited","op":"incr","data":{"balance":1}}"#,
            r#"{"id":"k4","stream":"account-2","version":4,"type":"Deposited","op":"incr","data":{"balance":1}}"#,
        ],
    );
    ok(&["append", "--log", &log, later.to_str().unwrap()]);
    wait_for("the running consumer applies the new events", &|| {
        let rows = export(&store);
        rows.get("account-1").is_some_and(|r| r.version == 4)
            && rows.get("account-2").is_some_and(|r| r.version == 4)
    });
    let rows = export(&store);
    assert_eq!(
        rows["account-1"].doc,
        Some(serde_json::json!({"balance": 106}))
    );
    assert_eq!(
        rows["account-2"].doc,
        Some(serde_json::json!({"balance": 9}))
    );
    let operator = json_lines(&ok(&[
        "notices", "--store", &store, "--kind", "operator", "--json",
    ]));
    assert_eq!(operator.len(), 2, "{operator:?}");
    assert!(child.0.try_wait().unwrap().is_none(), "ordo run exited");
    common::kill_with(&child.0, "-TERM");
    assert!(child.0.wait().unwrap().success());
    admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .unwrap();
}

/// `dlq replay --dry-run` says what each replay would do, from the store alone, and
/// changes nothing: the poison deposit as it is would fail again, corrected it would
/// apply and free the deposit behind it; the merge without its cut would fail again.
#[test]
fn a_dry_run_says_what_each_replay_would_do_and_changes_nothing() {
    let scratch = Scratch::new();
    let input = scratch.path("stuck.jsonl");
    write_lines(&input, &stuck_lines());
    let store = scratch.store("state.db");
    let source = format!("file:{}", input.display());
    ok(&[
        "run",
        "--source",
        &source,
        "--store",
        &store,
        "--exit-when-idle",
    ]);
    let before = (
        String::from_utf8(ok(&["dlq", "list", "--store", &store, "--json"]).stdout).unwrap(),
        export(&store),
    );
    let forecasts = json_lines(&ok(&[
        "dlq",
        "replay",
        "--store",
        &store,
        "--dry-run",
        "--json",
    ]));
    let would = |stream: &str| {
        let entry = forecasts
            .iter()
            .find(|f| f["stream"] == stream)
            .unwrap_or_else(|| panic!("no forecast for {stream}: {forecasts:?}"));
        (
            entry["would"].as_str().unwrap().to_string(),
            entry["detail"].as_str().unwrap().to_string(),
        )
    };
    let (outcome, detail) = would("account-1");
    assert_eq!(outcome, "dead-lettered-again", "{detail}");
    assert!(detail.contains("must be an integer amount"), "{detail}");
    let (outcome, detail) = would("customer-2");
    assert_eq!(outcome, "dead-lettered-again", "{detail}");
    assert!(
        detail.contains("merge has no cut for source `customer-1`"),
        "{detail}"
    );

    // The corrected deposit would apply, and the deposit behind it would go on.
    let poison = entry_of(&store, "account-1");
    let fixed = scratch.path("fixed.json");
    write_lines(
        &fixed,
        &[
            r#"{"id":"l2-fixed","stream":"account-1","version":2,"type":"Deposited","op":"incr","data":{"balance":100}}"#,
        ],
    );
    let text = String::from_utf8(
        ok(&[
            "dlq",
            "replay",
            "--store",
            &store,
            "--dry-run",
            "--id",
            &poison,
            "--body",
            fixed.to_str().unwrap(),
        ])
        .stdout,
    )
    .unwrap();
    assert!(
        text.contains("would apply; 1 waiting events of its stream would go on"),
        "{text}"
    );
    // A corrected event for another version is refused, as the replay would refuse it.
    let elsewhere = scratch.path("elsewhere.json");
    write_lines(
        &elsewhere,
        &[
            r#"{"id":"l9","stream":"account-1","version":9,"type":"Deposited","op":"incr","data":{"balance":1}}"#,
        ],
    );
    let text = String::from_utf8(
        ok(&[
            "dlq",
            "replay",
            "--store",
            &store,
            "--dry-run",
            "--id",
            &poison,
            "--body",
            elsewhere.to_str().unwrap(),
        ])
        .stdout,
    )
    .unwrap();
    assert!(
        text.contains("refused: the corrected event is `account-1` version 9"),
        "{text}"
    );
    let after = (
        String::from_utf8(ok(&["dlq", "list", "--store", &store, "--json"]).stdout).unwrap(),
        export(&store),
    );
    assert_eq!(before, after, "a dry run changed the store");
    // What the dry run said is what the replay does.
    let (code, out, _) = replay_corrected_deposit(&scratch, &store);
    assert_eq!(code, 0, "{out}");
    assert_eq!(export(&store)["account-1"].version, 3);
}
