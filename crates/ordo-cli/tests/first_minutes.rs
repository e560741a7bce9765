//! What a new user meets in the first minutes, through the built binary, one test per
//! rough edge: read-only verbs that write nothing and work on a store they may not write,
//! a failed first `run` that leaves nothing behind, a quiet broken pipe, `--help` with
//! defaults, examples and typo suggestions, hints for a bare path, an exit summary that
//! says what still waits, and `ordo demo --keep`.

mod common;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{ok, ordo, postgres_admin, postgres_schema, run, write_lines, KilledOnDrop, Scratch};

/// A ledger with a dead letter, a stall and a dependency that never comes.
const LEDGER: [&str; 6] = [
    r#"{"id":"l1","stream":"account-1","version":1,"type":"Opened","op":"set","data":{"balance":0}}"#,
    r#"{"id":"l2","stream":"account-1","version":2,"type":"Deposited","op":"incr","data":{"balance":"100"}}"#,
    r#"{"id":"k1","stream":"account-2","version":1,"type":"Opened","op":"set","data":{"balance":7}}"#,
    r#"{"id":"k3","stream":"account-2","version":3,"type":"Deposited","op":"incr","data":{"balance":1}}"#,
    r#"{"id":"p1","stream":"product-1","version":1,"type":"ProductAdded","op":"set","data":{"name":"lamp"},"after":[{"stream":"category-9","version":1}]}"#,
    r#"{"id":"c1","stream":"category-1","version":1,"type":"CategoryAdded","op":"set","data":{"name":"lights"}}"#,
];

/// The verbs that only read, with the arguments each takes besides `--store`.
const READ_ONLY_VERBS: [&[&str]; 5] = [
    &["status"],
    &["export"],
    &["dlq", "list"],
    &["parked", "list"],
    &["notices"],
];

fn ledger_file(scratch: &Scratch) -> String {
    let input = scratch.path("ledger.jsonl");
    write_lines(&input, &LEDGER);
    format!("file:{}", input.display())
}

/// The names in a directory, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `ordo ARGS` as a user who may not write the store: `nobody` when the tests run as
/// root (root writes anything), else this user with the store and its directory made
/// read-only.
fn as_reader(args: &[&str], dir: &Path) -> std::process::Output {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    if root {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_ordo"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("setpriv runs")
    } else {
        let files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        for file in &files {
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o444)).unwrap();
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        let output = run(args);
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        for file in &files {
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        output
    }
}

#[test]
fn read_only_verbs_never_create_a_store() {
    let scratch = Scratch::new();
    let missing = scratch.store("missing.db");
    for verb in READ_ONLY_VERBS {
        let mut args = verb.to_vec();
        args.extend(["--store", &missing]);
        let output = run(&args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("does not exist"), "{args:?}: {stderr}");
    }
    assert!(
        listing(&scratch.path("")).is_empty(),
        "{:?}",
        listing(&scratch.path(""))
    );

    // A PostgreSQL schema that holds no store is not created either.
    let (mut admin, schema, store) = postgres_schema("ordo_ro_missing");
    for verb in READ_ONLY_VERBS {
        let mut args = verb.to_vec();
        args.extend(["--store", &store]);
        let output = run(&args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
    }
    let exists = admin
        .query_opt(
            "SELECT 1 FROM information_schema.schemata WHERE schema_name = $1",
            &[&schema],
        )
        .unwrap();
    assert!(
        exists.is_none(),
        "schema {schema} was created by a read-only verb"
    );
}

#[test]
fn read_only_verbs_work_on_a_sqlite_store_they_may_not_write() {
    let scratch = Scratch::new();
    let source = ledger_file(&scratch);
    let store = scratch.store("state.db");
    ok(&[
        "run",
        "--source",
        &source,
        "--store",
        &store,
        "--exit-when-idle",
    ]);
    let dir = scratch.path("");
    let before = listing(&dir);
    let bytes = std::fs::read(scratch.path("state.db")).unwrap();
    for verb in READ_ONLY_VERBS {
        let mut args = verb.to_vec();
        args.extend(["--store", &store]);
        let output = as_reader(&args, &dir);
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(!output.stdout.is_empty(), "{args:?} printed nothing");
    }
    assert_eq!(listing(&dir), before, "a read-only verb left a file behind");
    assert_eq!(std::fs::read(scratch.path("state.db")).unwrap(), bytes);

    // Beside a running consumer too (its WAL is read as well).
    let log = scratch.path("log.db").to_str().unwrap().to_string();
    ok(&["append", "--log", &log, &source["file:".len()..]]);
    let live = scratch.store("live.db");
    let child = ordo()
        .args(["run", "--source", &format!("log:{log}"), "--store", &live])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _child = KilledOnDrop(child);
    let settled = (0..500).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        let output = as_reader(&["dlq", "list", "--store", &live, "--json"], &dir);
        output.status.success() && !output.stdout.is_empty()
    });
    assert!(
        settled,
        "the running consumer's dead letter was never readable"
    );
    let output = as_reader(&["status", "--store", &live, "--json"], &dir);
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(status["dead_letters"]["entries"], 1, "{status}");
}

#[test]
fn read_only_verbs_work_with_a_postgresql_role_that_may_only_select() {
    let scratch = Scratch::new();
    let source = ledger_file(&scratch);
    let (mut admin, schema, store) = postgres_schema("ordo_ro_role");
    ok(&[
        "run",
        "--source",
        &source,
        "--store",
        &store,
        "--exit-when-idle",
    ]);
    let role = format!("ordo_reader_{}", std::process::id());
    admin
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS {role};
             CREATE ROLE {role} LOGIN;
             GRANT USAGE ON SCHEMA {schema} TO {role};
             GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role};"
        ))
        .unwrap();
    let reader = store.replacen("postgres@", &format!("{role}@"), 1);
    assert_ne!(reader, store);
    for verb in READ_ONLY_VERBS {
        let mut args = verb.to_vec();
        args.extend(["--store", &reader]);
        let output = run(&args);
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // The role really may not write: a run with it fails.
    let output = run(&[
        "run",
        "--source",
        &source,
        "--store",
        &reader,
        "--exit-when-idle",
    ]);
    assert!(!output.status.success());
    admin
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; DROP OWNED BY {role}; DROP ROLE {role};"
        ))
        .unwrap();
    let _ = postgres_admin();
}

#[test]
fn a_failed_first_run_leaves_no_store_behind() {
    let scratch = Scratch::new();
    let store = scratch.store("state.db");
    let missing = format!("file:{}", scratch.path("no-such.jsonl").display());
    let output = run(&["run", "--source", &missing, "--store", &store]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read"));
    // A taken metrics port, after the store was opened.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let source = ledger_file(&scratch);
    let output = run(&[
        "run",
        "--source",
        &source,
        "--store",
        &store,
        "--metrics",
        &port,
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot listen"));
    assert_eq!(listing(&scratch.path("")), ["ledger.jsonl"]);
    // An existing store is never removed by a failed run.
    ok(&[
        "run",
        "--source",
        &source,
        "--store",
        &store,
        "--exit-when-idle",
    ]);
    let output = run(&["run", "--source", &missing, "--store", &store]);
    assert_eq!(output.status.code(), Some(2));
    assert!(scratch.path("state.db").exists());
    // `append` with a mistyped input file leaves no empty log either.
    let log = scratch.path("log.db");
    let output = run(&["append", "--log", log.to_str().unwrap(), "no-such.jsonl"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(!log.exists());
}

#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    let scratch = Scratch::new();
    let input = scratch.path("many.jsonl");
    let lines: Vec<String> = (0..20_000)
        .map(|i| format!(r#"{{"id":"e{i}","stream":"s-{i}","version":1,"type":"T","op":"set","data":{{"n":{i}}}}}"#))
        .collect();
    write_lines(
        &input,
        &lines.iter().map(String::as_str).collect::<Vec<_>>(),
    );
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
    // `ordo export | head -1`: the reader goes away after one line.
    let mut child = ordo()
        .args(["export", "--store", &store])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 64];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stderr), "");
    assert!(
        matches!(output.status.code(), Some(0) | Some(141)),
        "{:?}",
        output.status
    );
}

#[test]
fn help_shows_defaults_examples_and_events_and_suggests_a_mistyped_flag() {
    let help = String::from_utf8(ok(&["run", "--help"]).stdout).unwrap();
    for expected in [
        "[default: 32768]",
        "[default: 50]",
        "[default: 30000, or what the store recorded]",
        "Examples:",
        "ordo run --source file:events.jsonl",
        r#"{"id":"e1","stream":"account-1","version":1"#,
    ] {
        assert!(
            help.contains(expected),
            "run --help lacks {expected}:\n{help}"
        );
    }
    for verb in [
        &["demo"][..],
        &["append"],
        &["export"],
        &["status"],
        &["notices"],
        &["dlq", "list"],
        &["dlq", "replay"],
        &["dlq", "skip"],
        &["parked", "list"],
        &["parked", "skip"],
        &["relay"],
        &["chaos"],
        &["bench"],
    ] {
        let mut args = verb.to_vec();
        args.push("--help");
        let help = String::from_utf8(ok(&args).stdout).unwrap();
        let first = format!("ordo {}", verb.join(" "));
        assert!(
            help.contains("Example") && help.contains(&first),
            "{verb:?} --help has no example:\n{help}"
        );
    }
    let output = run(&["run", "--sorce", "file:x", "--store", "sqlite:x"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("'--source'"), "{stderr}");
}

#[test]
fn a_bare_path_gets_a_hint_and_a_log_url_is_taken_by_append() {
    let scratch = Scratch::new();
    let output = run(&["status", "--store", "state.db"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("say `sqlite:state.db`"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = run(&["run", "--source", "events.jsonl", "--store", "sqlite:x.db"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("say `file:events.jsonl`"), "{stderr}");
    assert!(stderr.contains("`log:events.jsonl`"), "{stderr}");
    assert!(!Path::new("x.db").exists());
    // `append --log log:PATH`, as `run --source` names the same log.
    let source = ledger_file(&scratch);
    let log = format!("log:{}", scratch.path("log.db").display());
    ok(&["append", "--log", &log, &source["file:".len()..]]);
    let store = scratch.store("state.db");
    ok(&[
        "run",
        "--source",
        &log,
        "--store",
        &store,
        "--exit-when-idle",
    ]);
    assert!(scratch.path("log.db").exists());
}

#[test]
fn the_exit_summary_says_what_still_waits_and_fail_on_stalled_exits_1() {
    let scratch = Scratch::new();
    let source = ledger_file(&scratch);
    let store = scratch.store("state.db");
    let output = ok(&[
        "run",
        "--source",
        &source,
        "--store",
        &store,
        "--exit-when-idle",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    for expected in [
        "still waiting: 2 events",
        "1 streams stalled",
        "account-2: 1 events wait for missing version 2",
        "product-1: 1 events wait for `category-9` to reach version 1",
        "ordo status --store",
    ] {
        assert!(stderr.contains(expected), "no `{expected}` in:\n{stderr}");
    }
    let output = run(&[
        "run",
        "--source",
        &source,
        "--store",
        &store,
        "--exit-when-idle",
        "--fail-on-stalled",
    ]);
    assert_eq!(output.status.code(), Some(1));
    // Once the lost version is passed, nothing is stalled and the same run exits 0.
    ok(&[
        "parked",
        "skip",
        "--store",
        &store,
        "--stream",
        "account-2",
        "--version",
        "2",
        "--reason",
        "lost",
    ]);
    ok(&[
        "run",
        "--source",
        &source,
        "--store",
        &store,
        "--exit-when-idle",
        "--fail-on-stalled",
    ]);
}

#[test]
fn demo_keep_leaves_its_logs_and_stores_and_the_report_explains_itself() {
    let scratch = Scratch::new();
    let dir = scratch.path("demo");
    let output = ok(&["demo", "--events", "300", "--keep", dir.to_str().unwrap()]);
    let report = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "== operations",
        "1 stale",
        "1 dead-lettered",
        "1 stalled",
        "operator: dlq replay -> requeued",
        "operator: parked skip -> skipped",
        "all 3 accounts equal the fixed ledger",
        "`redirected` counts those ordo applied to",
        "converged: every scenario",
    ] {
        assert!(report.contains(expected), "no `{expected}` in:\n{report}");
    }
    let names = listing(&dir);
    for expected in [
        "merges-state.db",
        "operations-log.db",
        "operations-state.db",
    ] {
        assert!(names.iter().any(|n| n == expected), "{names:?}");
    }
    let store = format!("sqlite:{}/operations-state.db", dir.display());
    let notices = String::from_utf8_lossy(&ok(&["notices", "--store", &store]).stdout).into_owned();
    assert!(notices.contains("parked skip by"), "{notices}");
    // A second demo into the same directory is refused.
    let output = run(&["demo", "--events", "300", "--keep", dir.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn member_id_is_for_group_sources_only() {
    let scratch = Scratch::new();
    let input = scratch.path("empty.jsonl");
    write_lines(&input, &[]);
    let source = format!("file:{}", input.to_str().unwrap());
    let store = scratch.store("state.db");
    let output = run(&[
        "run",
        "--source",
        &source,
        "--store",
        &store,
        "--member-id",
        "m1",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("Kafka"));
}

/// A directory or a FIFO where a file is expected (a source, an event log, a store) is
/// refused at once with what it is, exit 2: never a hang on the FIFO, never SQLite's
/// "disk I/O error", and nothing created.
#[test]
fn a_directory_or_a_fifo_is_refused_as_a_source_a_log_or_a_store() {
    let scratch = Scratch::new();
    let dir = scratch.path("dir");
    std::fs::create_dir(&dir).unwrap();
    let fifo = scratch.path("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let events = ledger_file(&scratch);
    let store = scratch.store("state.db");
    for (path, kind) in [(&dir, "a directory"), (&fifo, "a FIFO")] {
        let path = path.to_str().unwrap();
        let (file, log, sqlite) = (
            format!("file:{path}"),
            format!("log:{path}"),
            format!("sqlite:{path}"),
        );
        let attempts: [&[&str]; 5] = [
            &[
                "run",
                "--source",
                &file,
                "--store",
                &store,
                "--exit-when-idle",
            ],
            &[
                "run",
                "--source",
                &log,
                "--store",
                &store,
                "--exit-when-idle",
            ],
            &[
                "run",
                "--source",
                &events,
                "--store",
                &sqlite,
                "--exit-when-idle",
            ],
            &["status", "--store", &sqlite],
            &["append", "--log", path, &events["file:".len()..]],
        ];
        for args in attempts {
            let output = run(args);
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
            assert!(stderr.contains(kind), "{args:?}: {stderr}");
        }
    }
    assert!(!scratch.path("state.db").exists(), "nothing was created");
}
