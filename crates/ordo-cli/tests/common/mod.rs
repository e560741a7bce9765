//! Helpers for driving the built `ordo` binary as a user would.

#![allow(dead_code)]

pub mod scrape;
pub mod service;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use ordo_core::Event;
use ordo_sim::{Export, Row};

/// The built binary.
pub fn ordo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ordo"))
}

/// Runs `ordo` with arguments and returns its output.
pub fn run(args: &[&str]) -> Output {
    ordo()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("ordo runs")
}

/// Runs `ordo`, asserting exit code 0.
pub fn ok(args: &[&str]) -> Output {
    let output = run(args);
    assert!(
        output.status.success(),
        "ordo {args:?} failed with {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `ordo run --source SOURCE --store STORE --exit-when-idle EXTRA…`, asserting exit 0.
pub fn run_idle(source: &str, store: &str, extra: &[&str]) -> Output {
    ok(&idle_run_args(source, store, extra))
}

/// `ordo run --source S --store T --exit-when-idle EXTRA…`, whatever it ends with.
pub fn try_run_idle(source: &str, store: &str, extra: &[&str]) -> Output {
    run(&idle_run_args(source, store, extra))
}

fn idle_run_args<'a>(source: &'a str, store: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "run",
        "--source",
        source,
        "--store",
        store,
        "--exit-when-idle",
    ];
    args.extend_from_slice(extra);
    args
}

/// A scratch directory for one test.
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    /// A new directory.
    pub fn new() -> Self {
        Scratch {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// A path inside it.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `sqlite:` URL of a store file inside it.
    pub fn store(&self, name: &str) -> String {
        format!("sqlite:{}", self.path(name).display())
    }
}

/// Writes events as JSONL.
pub fn write_events(path: &Path, events: &[Event]) {
    let mut file = std::fs::File::create(path).expect("create jsonl");
    for event in events {
        writeln!(file, "{}", event.to_json_string()).expect("write jsonl");
    }
}

/// Writes raw lines.
pub fn write_lines(path: &Path, lines: &[&str]) {
    let mut file = std::fs::File::create(path).expect("create jsonl");
    for line in lines {
        writeln!(file, "{line}").expect("write line");
    }
}

/// Reads `ordo export` output into the simulator's export shape.
pub fn export(store: &str) -> Export {
    let output = ok(&["export", "--store", store]);
    let mut export = Export::new();
    for line in String::from_utf8(output.stdout).expect("utf-8").lines() {
        let row: serde_json::Value = serde_json::from_str(line).expect("export line is JSON");
        let stream = row["stream"].as_str().expect("stream").to_string();
        export.insert(
            stream,
            Row {
                version: row["version"].as_u64().expect("version"),
                doc: (!row["doc"].is_null()).then(|| row["doc"].clone()),
                deleted: row["deleted"].as_bool().expect("deleted"),
                merged_into: row["merged_into"].as_str().map(String::from),
            },
        );
    }
    export
}

/// Parses JSON lines.
pub fn json_lines(output: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

/// The local PostgreSQL server the tests use (trust auth, database `test`).
pub const POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";

/// An admin connection to the local PostgreSQL server.
pub fn postgres_admin() -> postgres::Client {
    postgres::Client::connect(POSTGRES, postgres::NoTls)
        .expect("PostgreSQL on 127.0.0.1:5432 (database `test`)")
}

/// A schema of this test's own, `{prefix}_{pid}`, dropped first: the admin connection,
/// the schema's name and the store URL that uses it.
pub fn postgres_schema(prefix: &str) -> (postgres::Client, String, String) {
    let schema = format!("{prefix}_{}", std::process::id());
    let mut admin = postgres_admin();
    admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .unwrap();
    let store = format!("{POSTGRES}?schema={schema}");
    (admin, schema, store)
}

/// Appends `events` to a new embedded log in `scratch`; its path.
pub fn append_to_log(scratch: &Scratch, events: &[Event]) -> String {
    let input = scratch.path("in.jsonl");
    write_events(&input, events);
    let log = scratch.path("log.db").to_str().unwrap().to_string();
    ok(&["append", "--log", &log, input.to_str().unwrap()]);
    log
}

/// Sends `signal` (`-KILL`, `-TERM`) to a child.
pub fn kill_with(child: &std::process::Child, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// SIGKILLs a child.
pub fn kill(child: &std::process::Child) {
    kill_with(child, "-KILL");
}

/// A child process killed (and reaped) when this guard goes, however the test ends.
pub struct KilledOnDrop(pub std::process::Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until the store at `store` matches `expected` while its members run (no final
/// sweep by a single process), failing with `seed` and the divergence after `limit`; how
/// long it took.
pub fn until_converged(
    expected: &Export,
    store: &str,
    limit: std::time::Duration,
    seed: u64,
) -> std::time::Duration {
    let started = std::time::Instant::now();
    loop {
        let divergence = ordo_sim::compare(expected, &export(store), true);
        if divergence.is_empty() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "seed {seed}: the running group did not converge within {limit:?}:\n{divergence}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// `ordo run --source SOURCE --store STORE` in the background, output discarded, killed
/// when the guard goes.
pub fn run_in_background(source: &str, store: &str) -> KilledOnDrop {
    KilledOnDrop(
        ordo()
            .args(["run", "--source", source, "--store", store])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ordo runs"),
    )
}

/// The applied version of `stream` in `store` (0 before a run created the store, or
/// when the stream has none yet).
pub fn applied_version(store: &str, stream: &str) -> u64 {
    if !run(&["export", "--store", store]).status.success() {
        return 0;
    }
    export(store).get(stream).map_or(0, |row| row.version)
}
