//! The built binary, run as a user runs it: append, run, export, dead letters, parked
//! events, bad input. Every final state is compared with the in-order oracle.

mod common;

use common::{
    export, json_lines, ok, postgres_schema, run, run_idle, write_events, write_lines, Scratch,
};
use ordo_sim::workload::{deliver, random_history, Disorder, Shape};
use ordo_sim::{compare, oracle};

const COUNTER_KEYS: [&str; 10] = [
    "applied",
    "duplicate",
    "stale",
    "buffered",
    "parked",
    "released",
    "redirected",
    "late_after_merge",
    "dead_lettered",
    "stalled",
];

fn shape() -> Shape {
    Shape {
        streams: 30,
        events: 1500,
        ..Shape::default()
    }
}

#[test]
fn log_source_end_to_end_matches_the_oracle() {
    for seed in [11, 12, 13] {
        let scratch = Scratch::new();
        let history = random_history(seed, shape());
        let deliveries = deliver(seed, &history, Disorder::Shuffle, 20);
        let input = scratch.path("in.jsonl");
        write_events(&input, &deliveries);
        let log = scratch.path("log.db");
        let log = log.to_str().unwrap();
        ok(&["append", "--log", log, input.to_str().unwrap()]);
        let store = scratch.store("state.db");
        let output = ok(&[
            "run",
            "--source",
            &format!("log:{log}"),
            "--store",
            &store,
            "--exit-when-idle",
            "--json",
            "--batch",
            "100",
        ]);
        let counters: serde_json::Value =
            serde_json::from_slice(&output.stdout).expect("one JSON object");
        for key in COUNTER_KEYS {
            assert!(
                counters[key].is_u64(),
                "seed {seed}: counter `{key}` missing in {counters}"
            );
        }
        assert_eq!(
            counters["applied"].as_u64().unwrap() + counters["duplicate"].as_u64().unwrap(),
            deliveries.len() as u64,
            "seed {seed}: every delivery applied once or skipped as a duplicate"
        );
        let divergence = compare(&oracle::run(&history), &export(&store), true);
        assert!(divergence.is_empty(), "seed {seed} diverged:\n{divergence}");
    }
}

#[test]
fn file_source_end_to_end_matches_the_oracle_and_resumes() {
    let seed = 21;
    let scratch = Scratch::new();
    let history = random_history(seed, shape());
    let deliveries = deliver(seed, &history, Disorder::Window(10), 10);
    let input = scratch.path("in.jsonl");
    write_events(&input, &deliveries);
    let store = scratch.store("state.db");
    let source = format!("file:{}", input.display());
    run_idle(&source, &store, &[]);
    let first = export(&store);
    assert!(compare(&oracle::run(&history), &first, true).is_empty());
    // A second run resumes after the stored checkpoint: nothing is re-applied.
    let output = run_idle(&source, &store, &["--json"]);
    let counters: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(counters["applied"].as_u64().unwrap(), history.len() as u64);
    assert_eq!(export(&store), first);
}

#[test]
fn malformed_lines_are_dead_letters_with_reasons_and_block_nothing_else() {
    let scratch = Scratch::new();
    let input = scratch.path("in.jsonl");
    write_lines(
        &input,
        &[
            r#"{"id":"a1","stream":"a","version":1,"type":"T","op":"incr","data":{"n":1}}"#,
            r#"{not json"#,
            r#"{"id":"x","version":1,"type":"T","op":"set","data":{}}"#,
            r#"{"id":"a2","stream":"a","version":2,"type":"T","op":"frobnicate","data":{}}"#,
            r#"{"id":"a3","stream":"a","version":3,"type":"T","op":"incr","data":{"n":1}}"#,
            r#"{"id":"b1","stream":"b","version":1,"type":"T","op":"set","data":{"ok":true}}"#,
            r#"{"id":"c1","stream":"c","version":1,"type":"T","op":"set","data":{"s":"text"}}"#,
            r#"{"id":"c2","stream":"c","version":2,"type":"T","op":"incr","data":{"s":1}}"#,
            r#"{"id":"d0","stream":"d","version":0,"type":"T","op":"set","data":{}}"#,
            // Above i64::MAX: the stores could not keep it as itself.
            r#"{"id":"e1","stream":"e","version":9223372036854775809,"type":"T","op":"set","data":{}}"#,
        ],
    );
    let store = scratch.store("state.db");
    let source = format!("file:{}", input.display());
    let output = run(&[
        "run",
        "--source",
        &source,
        "--store",
        &store,
        "--exit-when-idle",
        "--fail-on-dead-letters",
    ]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "dead letters with --fail-on-dead-letters"
    );

    let entries = json_lines(&ok(&["dlq", "list", "--store", &store, "--json"]));
    let reasons: Vec<&str> = entries
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert_eq!(entries.len(), 6, "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("invalid JSON")));
    assert!(reasons.iter().any(|r| r.contains("missing field `stream`")));
    assert!(reasons
        .iter()
        .any(|r| r.contains("unknown op `frobnicate`")));
    assert!(reasons
        .iter()
        .any(|r| r.contains("holds \"text\", not an integer")));
    assert!(reasons
        .iter()
        .any(|r| r.contains("`version` must be an integer from 1 to") && r.contains(", got 0")));
    assert!(reasons
        .iter()
        .any(|r| r.ends_with("got 9223372036854775809")));
    for entry in &entries {
        assert!(
            entry.get("stream").is_some()
                && entry.get("version").is_some()
                && entry.get("id").is_some()
        );
    }

    let state = export(&store);
    assert_eq!(
        state["b"].doc,
        Some(serde_json::json!({"ok": true})),
        "b is not blocked"
    );
    assert_eq!(state["a"].version, 1, "a waits at its bad version 2");
    assert_eq!(state["c"].version, 1, "c waits behind its rejected incr");

    let parked = json_lines(&ok(&["parked", "list", "--store", &store, "--json"]));
    let a3 = parked
        .iter()
        .find(|p| p["id"] == "a3")
        .expect("a3 is listed as waiting");
    assert!(
        a3["reason"].as_str().unwrap().contains("dead letter"),
        "{a3}"
    );

    // Skipping the sequenced entry lets `a` go on to version 3.
    let a2 = entries.iter().find(|e| e["event_id"] == "a2").unwrap();
    ok(&[
        "dlq",
        "skip",
        "--store",
        &store,
        "--id",
        &a2["id"].to_string(),
    ]);
    let state = export(&store);
    assert_eq!(state["a"].version, 3);
    assert_eq!(state["a"].doc, Some(serde_json::json!({"n": 2})));

    // Replaying what still does not parse is refused, and the entry stays.
    let garbage = entries
        .iter()
        .find(|e| e["reason"].as_str().unwrap().contains("invalid JSON"))
        .unwrap();
    let output = run(&[
        "dlq",
        "replay",
        "--store",
        &store,
        "--id",
        &garbage["id"].to_string(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        json_lines(&ok(&["dlq", "list", "--store", &store, "--json"])).len(),
        5
    );
}

#[test]
fn dlq_replay_is_version_guarded_and_rate_limited() {
    let scratch = Scratch::new();
    let input = scratch.path("in.jsonl");
    let line = |id: &str, v: u64| {
        format!(
            r#"{{"id":"{id}","stream":"s","version":{v},"type":"T","op":"incr","data":{{"n":1}}}}"#
        )
    };
    // Version 3 waits first; a rival for version 3 is stale (the first claimant keeps
    // it); with a bound of one waiting event, version 4 and a rival for it are
    // dead-lettered as overflow; 1 and 2 (heads) still go.
    let lines = [
        line("s3", 3),
        line("rival3", 3),
        line("s4", 4),
        line("rival", 4),
        line("s1", 1),
        line("s2", 2),
    ];
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    write_lines(&input, &lines);
    let store = scratch.store("state.db");
    let source = format!("file:{}", input.display());
    let counted = run_idle(
        &source,
        &store,
        &["--stream-pending-events-max", "1", "--json"],
    );
    let counters: serde_json::Value = serde_json::from_slice(&counted.stdout).unwrap();
    assert_eq!(counters["stale"], 1, "{counters}");
    let stale = json_lines(&ok(&[
        "notices", "--store", &store, "--kind", "stale", "--json",
    ]));
    assert_eq!(stale[0]["detail"]["id"], "rival3");
    let entries = json_lines(&ok(&["dlq", "list", "--store", &store, "--json"]));
    let kinds: Vec<&str> = entries
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"overflow"), "{entries:?}");
    assert_eq!(
        export(&store)["s"].version,
        3,
        "4 waits in the dead-letter queue"
    );

    let started = std::time::Instant::now();
    let output = ok(&[
        "dlq", "replay", "--store", &store, "--rate", "10/s", "--json",
    ]);
    let results = json_lines(&output);
    assert_eq!(results.len(), entries.len());
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(100 * (entries.len() as u64 - 1)),
        "replays are spaced by the rate"
    );
    let by_id = |id: &str| {
        results
            .iter()
            .find(|r| r["id"] == entries.iter().find(|e| e["event_id"] == id).unwrap()["id"])
            .unwrap()
    };
    assert_eq!(by_id("s4")["result"], "requeued");
    assert_eq!(by_id("rival")["result"], "already-applied", "version guard");
    let state = export(&store);
    assert_eq!(state["s"].version, 4);
    assert_eq!(state["s"].doc, Some(serde_json::json!({"n": 4})));
    assert!(json_lines(&ok(&["dlq", "list", "--store", &store, "--json"])).is_empty());
}

#[test]
fn bad_paths_and_urls_are_clear_errors_with_exit_code_2() {
    let scratch = Scratch::new();
    let missing = scratch.store("missing.db");
    let output = run(&["export", "--store", &missing]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("does not exist"));

    let input = scratch.path("in.jsonl");
    write_lines(&input, &[]);
    let nowhere = format!("sqlite:{}", scratch.path("no/such/dir/state.db").display());
    let output = run(&[
        "run",
        "--source",
        &format!("file:{}", input.display()),
        "--store",
        &nowhere,
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("directory"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let output = run(&[
        "run",
        "--source",
        "ftp://x",
        "--store",
        &scratch.store("s.db"),
    ]);
    assert_eq!(output.status.code(), Some(2));
    let output = run(&[
        "run",
        "--source",
        "file:/no/such/file.jsonl",
        "--store",
        &scratch.store("s.db"),
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read"));
    let output = run(&["export", "--store", "mysql://x"]);
    assert_eq!(output.status.code(), Some(2));
    let output = run(&["frobnicate"]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn postgres_store_end_to_end_matches_the_oracle() {
    let seed = 91;
    let scratch = Scratch::new();
    let history = random_history(seed, shape());
    let deliveries = deliver(seed, &history, Disorder::Shuffle, 15);
    let input = scratch.path("in.jsonl");
    write_events(&input, &deliveries);
    let (mut admin, schema, store) = postgres_schema("ordo_e2e");
    let output = run_idle(
        &format!("file:{}", input.display()),
        &store,
        &["--json", "--batch", "300"],
    );
    let counters: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        counters["applied"].as_u64().unwrap() + counters["duplicate"].as_u64().unwrap(),
        deliveries.len() as u64
    );
    let divergence = compare(&oracle::run(&history), &export(&store), true);
    assert!(divergence.is_empty(), "seed {seed}:\n{divergence}");
    admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .unwrap();
}

#[test]
fn a_postgres_password_never_appears_in_errors() {
    let output = run(&[
        "export",
        "--store",
        "postgres://ordo:sup3rsecret@127.0.0.1:1/test",
    ]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot connect"), "{stderr}");
    assert!(!stderr.contains("sup3rsecret"), "{stderr}");
}

#[test]
fn parked_events_are_listed_and_released_after_a_restart() {
    // Parked streams stay in the store after a restart (spilled); the operator view must
    // still list them, and the awaited event must still release them.
    let scratch = Scratch::new();
    let store = scratch.store("state.db");
    let products = scratch.path("products.jsonl");
    write_lines(
        &products,
        &[
            r#"{"id":"p1","stream":"product-1","version":1,"type":"T","op":"set","data":{"n":1},"after":[{"stream":"category-1","version":1}]}"#,
            r#"{"id":"p2","stream":"product-1","version":2,"type":"T","op":"incr","data":{"n":1}}"#,
        ],
    );
    run_idle(&format!("file:{}", products.display()), &store, &[]);
    let parked = json_lines(&ok(&["parked", "list", "--store", &store, "--json"]));
    assert_eq!(parked.len(), 2, "{parked:?}");
    assert!(
        parked[0]["reason"]
            .as_str()
            .unwrap()
            .contains("waits for `category-1` to apply version 1"),
        "{parked:?}"
    );
    let categories = scratch.path("categories.jsonl");
    write_lines(
        &categories,
        &[r#"{"id":"c1","stream":"category-1","version":1,"type":"T","op":"set","data":{}}"#],
    );
    run_idle(&format!("file:{}", categories.display()), &store, &[]);
    assert_eq!(
        export(&store)["product-1"].doc,
        Some(serde_json::json!({"n": 2}))
    );
    assert!(json_lines(&ok(&["parked", "list", "--store", &store, "--json"])).is_empty());
}

/// A lost version: the stall names `ordo parked skip`, which refuses the wrong version
/// and a missing reason, then passes the lost one and applies what waited behind it.
#[test]
fn a_stall_names_parked_skip_which_passes_the_lost_version() {
    let scratch = Scratch::new();
    let input = scratch.path("in.jsonl");
    write_lines(
        &input,
        &[
            r#"{"id":"l1","stream":"ledger-1","version":1,"type":"Opened","op":"set","data":{"balance":0}}"#,
            r#"{"id":"l3","stream":"ledger-1","version":3,"type":"Credited","op":"incr","data":{"balance":5}}"#,
            r#"{"id":"l4","stream":"ledger-1","version":4,"type":"Credited","op":"incr","data":{"balance":7}}"#,
            r#"{"id":"o1","stream":"ledger-2","version":1,"type":"Opened","op":"set","data":{"balance":1}}"#,
        ],
    );
    let store = scratch.store("state.db");
    let source = format!("file:{}", input.display());
    let output = run_idle(&source, &store, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr
            .contains("ordo parked skip --store STORE --stream ledger-1 --version 2 --reason TEXT"),
        "{stderr}"
    );
    let skip = |version: &str, reason: &str| {
        run(&[
            "parked",
            "skip",
            "--store",
            &store,
            "--stream",
            "ledger-1",
            "--version",
            version,
            "--reason",
            reason,
        ])
    };
    let wrong = skip("3", "lost at the producer");
    assert_eq!(wrong.status.code(), Some(1));
    let said = String::from_utf8_lossy(&wrong.stdout);
    assert!(
        said.contains("is not `ledger-1`'s next missing version (that is 2)"),
        "{said}"
    );
    assert_eq!(
        skip("2", " ").status.code(),
        Some(2),
        "a reason is required"
    );
    let skipped = skip("2", "lost at the producer");
    assert!(skipped.status.success());
    let said = String::from_utf8_lossy(&skipped.stdout);
    assert!(said.contains("2 events applied behind it"), "{said}");
    let rows = export(&store);
    assert_eq!(rows["ledger-1"].version, 4);
    assert_eq!(
        rows["ledger-1"].doc,
        Some(serde_json::json!({"balance": 12}))
    );
    assert!(json_lines(&ok(&["parked", "list", "--store", &store, "--json"])).is_empty());
    let counters: serde_json::Value =
        serde_json::from_slice(&run_idle(&source, &store, &["--json"]).stdout).unwrap();
    assert_eq!(counters["skipped"], 1);
    // Nothing is missing any more: a second skip is refused.
    assert_eq!(skip("5", "again").status.code(), Some(1));
}

/// A store whose engine settings an older ordo recorded (`dedupe_window`,
/// `stream_pending_max`) runs with them, and is recorded again under both names.
#[test]
fn engine_settings_recorded_under_the_older_names_still_apply() {
    let scratch = Scratch::new();
    let store = scratch.store("state.db");
    let empty = scratch.path("empty.jsonl");
    write_lines(&empty, &[]);
    run_idle(&format!("file:{}", empty.display()), &store, &[]);
    let path = scratch.path("state.db");
    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'setting:engine'",
        [r#"{"gap_timeout_ms":30000,"dedupe_window":7,"stream_pending_max":1,"monotonic":[]}"#],
    )
    .unwrap();
    drop(db);
    // Versions 3 and 4 wait for 1 and 2: with one waiting event allowed, 4 overflows.
    let input = scratch.path("events.jsonl");
    let line = |version: u64| {
        format!(
            r#"{{"id":"s{version}","stream":"s","version":{version},"type":"T","op":"set","data":{{"v":{version}}}}}"#
        )
    };
    let lines = [line(3), line(4)];
    write_lines(
        &input,
        &lines.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    run_idle(&format!("file:{}", input.display()), &store, &[]);
    let entries = json_lines(&ok(&["dlq", "list", "--store", &store, "--json"]));
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["kind"], "overflow", "{entries:?}");
    let db = rusqlite::Connection::open(&path).unwrap();
    let recorded: String = db
        .query_row(
            "SELECT value FROM meta WHERE key = 'setting:engine'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    let recorded: serde_json::Value = serde_json::from_str(&recorded).unwrap();
    for key in ["stream_pending_events_max", "stream_pending_max"] {
        assert_eq!(recorded[key], 1, "{recorded}");
    }
    for key in ["dedupe_window_ids", "dedupe_window"] {
        assert_eq!(recorded[key], 7, "{recorded}");
    }
}
