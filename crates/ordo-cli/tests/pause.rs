//! `ordo pause` and `ordo resume` against a running `ordo run`, through the built binary,
//! on SQLite and PostgreSQL: a paused account holds its deposits (durably, across a
//! SIGKILL) while the others go on; resumed, they apply in order; a paused partition
//! is not read until it is resumed; both are in the journal with their reasons.

mod common;

use std::time::{Duration, Instant};

use common::{export, json_lines, ok, run, write_lines, KilledOnDrop, Scratch};

fn start(log: &str, store: &str) -> KilledOnDrop {
    common::run_in_background(&format!("log:{log}"), store)
}

fn wait_for(what: &str, done: &dyn Fn() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{what} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn append(scratch: &Scratch, log: &str, name: &str, lines: &[&str]) {
    let path = scratch.path(name);
    write_lines(&path, lines);
    ok(&["append", "--log", log, path.to_str().unwrap()]);
}

/// `ordo ARGS`: (exit code, stdout).
fn verb(args: &[&str]) -> (i32, String) {
    let output = run(args);
    (
        output.status.code().expect("exited"),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

fn pause_and_resume(store: &str) {
    let scratch = Scratch::new();
    let log = scratch.path("log.db").to_str().unwrap().to_string();
    append(
        &scratch,
        &log,
        "opened.jsonl",
        &[
            r#"{"id":"o1","stream":"account-1","version":1,"type":"Opened","op":"set","data":{"balance":0}}"#,
            r#"{"id":"o2","stream":"account-2","version":1,"type":"Opened","op":"set","data":{"balance":0}}"#,
        ],
    );
    let mut child = start(&log, store);
    wait_for("both accounts opened", &|| {
        common::applied_version(store, "account-1") == 1
            && common::applied_version(store, "account-2") == 1
    });

    let pause = [
        "pause",
        "--store",
        store,
        "--stream",
        "account-1",
        "--reason",
        "INC-42: ledger correction in progress",
    ];
    let (code, out) = verb(&pause);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("paused"), "{out}");
    let (code, out) = verb(&pause);
    assert_eq!(code, 1, "a second pause is refused: {out}");
    assert!(out.contains("paused already"), "{out}");
    // On PostgreSQL the verb records the pause and the running consumer takes it up at
    // its next recheck (within a second); on SQLite the run itself carried it out.
    std::thread::sleep(Duration::from_millis(1_500));

    append(
        &scratch,
        &log,
        "deposits.jsonl",
        &[
            r#"{"id":"d1","stream":"account-1","version":2,"type":"Deposited","op":"incr","data":{"balance":10}}"#,
            r#"{"id":"d2","stream":"account-2","version":2,"type":"Deposited","op":"incr","data":{"balance":20}}"#,
            r#"{"id":"d3","stream":"account-1","version":3,"type":"Deposited","op":"incr","data":{"balance":5}}"#,
        ],
    );
    wait_for("account-2 goes on", &|| {
        common::applied_version(store, "account-2") == 2
    });
    wait_for("account-1's deposits wait, durable", &|| {
        json_lines(&ok(&["parked", "list", "--store", store, "--json"])).len() == 2
    });
    let parked = json_lines(&ok(&["parked", "list", "--store", store, "--json"]));
    assert!(
        parked
            .iter()
            .all(|p| p["stream"] == "account-1" && p["waits_for"]["kind"] == "paused"),
        "{parked:?}"
    );
    assert_eq!(common::applied_version(store, "account-1"), 1);
    let status: serde_json::Value =
        serde_json::from_slice(&ok(&["status", "--store", store, "--json"]).stdout).unwrap();
    assert_eq!(status["paused"][0]["stream"], "account-1", "{status}");

    // A crash and a restart keep the pause and the waiting deposits.
    common::kill(&child.0);
    let _ = child.0.wait();
    let mut child = start(&log, store);
    std::thread::sleep(Duration::from_millis(1_500));
    assert_eq!(
        common::applied_version(store, "account-1"),
        1,
        "still paused after a restart"
    );

    let (code, out) = verb(&[
        "resume",
        "--store",
        store,
        "--stream",
        "account-1",
        "--reason",
        "INC-42 done",
    ]);
    assert_eq!(code, 0, "{out}");
    wait_for("account-1's deposits apply in order", &|| {
        common::applied_version(store, "account-1") == 3
    });
    assert_eq!(
        export(store)["account-1"].doc,
        Some(serde_json::json!({"balance": 15}))
    );

    // A paused partition is not read: lag grows, nothing applies, until it resumes.
    let (code, out) = verb(&[
        "pause",
        "--store",
        store,
        "--partition",
        "0",
        "--reason",
        "broker maintenance",
    ]);
    assert_eq!(code, 0, "{out}");
    std::thread::sleep(Duration::from_millis(1_500));
    append(
        &scratch,
        &log,
        "later.jsonl",
        &[
            r#"{"id":"d4","stream":"account-2","version":3,"type":"Deposited","op":"incr","data":{"balance":1}}"#,
        ],
    );
    std::thread::sleep(Duration::from_millis(1_500));
    assert_eq!(
        common::applied_version(store, "account-2"),
        2,
        "partition 0 is not read"
    );
    let (code, out) = verb(&[
        "resume",
        "--store",
        store,
        "--partition",
        "0",
        "--reason",
        "maintenance over",
    ]);
    assert_eq!(code, 0, "{out}");
    wait_for("partition 0 is read again", &|| {
        common::applied_version(store, "account-2") == 3
    });

    let actions = json_lines(&ok(&[
        "notices", "--store", store, "--kind", "operator", "--json",
    ]));
    let verbs: Vec<&str> = actions
        .iter()
        .map(|a| a["detail"]["verb"].as_str().unwrap())
        .collect();
    assert_eq!(
        verbs,
        ["pause", "pause", "resume", "pause", "resume"],
        "{actions:?}"
    );
    assert!(actions[0]["detail"]["reason"]
        .as_str()
        .unwrap()
        .contains("INC-42"));
    assert!(child.0.try_wait().unwrap().is_none(), "ordo run exited");
}

#[test]
fn a_paused_stream_waits_durably_and_a_paused_partition_is_not_read_on_sqlite() {
    let scratch = Scratch::new();
    pause_and_resume(&scratch.store("state.db"));
}

#[test]
fn a_paused_stream_waits_durably_and_a_paused_partition_is_not_read_on_postgres() {
    let (mut admin, schema, store) = common::postgres_schema("ordo_pause");
    pause_and_resume(&store);
    admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .unwrap();
}

#[test]
fn pause_needs_a_reason_and_one_target() {
    let scratch = Scratch::new();
    let store = scratch.store("state.db");
    let output = run(&["pause", "--store", &store, "--stream", "a", "--reason", " "]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--reason"));
    let output = run(&["pause", "--store", &store, "--reason", "why"]);
    assert_eq!(output.status.code(), Some(2), "no target is bad usage");
    let input = scratch.path("empty.jsonl");
    write_lines(&input, &[]);
    let source = format!("file:{}", input.to_str().unwrap());
    common::run_idle(&source, &store, &[]);
    let resume = [
        "resume", "--store", &store, "--stream", "a", "--reason", "why",
    ];
    let output = run(&resume);
    assert_eq!(output.status.code(), Some(1), "nothing to resume");
    assert!(String::from_utf8_lossy(&output.stdout).contains("not paused"));
}
