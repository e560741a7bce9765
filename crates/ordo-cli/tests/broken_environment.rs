//! Broken environments, through the built binary: a store file that is damaged, and a
//! disk that fills up under a running consumer (SQLite on a small tmpfs; PostgreSQL with
//! its database in a tablespace on one). Each is a clear error, never a panic, and a
//! full disk fails the commit whole: a restart on a roomy disk reaches the same state as
//! a run that never hit the wall.
//!
//! A path this user may not open (a store, a log, a source, a directory for a new store)
//! is a clear error too.
//!
//! The full-disk tests mount a tmpfs and the permission test drops to `nobody` with
//! setpriv, so they need root (the test machines and CI run as root; scripts/test.sh says
//! so when they cannot mount).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{postgres_admin, run, run_idle, try_run_idle, Scratch, POSTGRES};

/// Streams in the full-disk workload.
const STREAMS: u64 = 200;
/// Versions of each stream.
const VERSIONS: u64 = 3;
/// Bytes of incompressible padding in each document (hex of a PRNG).
const PAD_BYTES: usize = 8 * 1024;

/// A tmpfs of `size` mounted at `path`, unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "mounting a tmpfs at {} failed: the full-disk tests need root",
            path.display()
        );
        Tmpfs {
            path: path.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// `STREAMS` × `VERSIONS` `set` events, versions interleaved across streams, each
/// document carrying its version as `v` and incompressible padding.
fn padded_events(path: &Path) {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut lines = Vec::new();
    for version in 1..=VERSIONS {
        for stream in 0..STREAMS {
            let mut pad = String::with_capacity(PAD_BYTES);
            while pad.len() < PAD_BYTES {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                pad.push_str(&format!("{seed:016x}"));
            }
            let event = serde_json::json!({
                "id": format!("e-{stream}-{version}"),
                "stream": format!("item-{stream}"),
                "version": version,
                "type": "Stocked",
                "op": "set",
                "data": {"v": version, "pad": pad},
            });
            lines.push(event.to_string());
        }
    }
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Every exported document carries the version its stream is at: a commit that wrote a
/// stream's position without its document, or the other way round, would break it.
/// Returns how many streams the store holds, and how many are at the last version.
fn documents_match_versions(store: &str) -> (usize, usize) {
    let export = common::export(store);
    for (stream, row) in &export {
        let doc = row.doc.as_ref().expect("set documents are live");
        assert_eq!(
            doc["v"].as_u64(),
            Some(row.version),
            "`{stream}`: the document and the stream's version disagree"
        );
    }
    let done = export.values().filter(|r| r.version == VERSIONS).count();
    (export.len(), done)
}

/// SQLite on a 1 MiB tmpfs: the commit that does not fit fails whole with SQLite's
/// "database or disk is full", exit 1, no panic. What was committed before is consistent,
/// and the same run on a roomy disk, from the copied store, ends where a run that never
/// hit the wall ends.
#[test]
fn a_full_disk_fails_the_sqlite_commit_whole() {
    let scratch = Scratch::new();
    let events = scratch.path("events.jsonl");
    padded_events(&events);
    let source = format!("file:{}", events.display());
    let disk = Tmpfs::mount(&scratch.path("small"), "1m");
    let full_store = disk.path.join("state.db");
    let full_url = format!("sqlite:{}", full_store.display());
    let output = try_run_idle(&source, &full_url, &["--batch", "50"]);
    let said = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "stderr: {said}");
    assert!(said.contains("disk is full"), "stderr: {said}");
    assert!(
        said.contains("nothing of the failed batch was written"),
        "stderr: {said}"
    );
    assert!(!said.contains("panicked"), "stderr: {said}");

    // Move the store (with its WAL) to a roomy disk, as an operator would.
    let roomy = scratch.path("roomy");
    std::fs::create_dir(&roomy).unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", full_store.display()));
        if from.exists() {
            std::fs::copy(&from, roomy.join(format!("state.db{suffix}"))).unwrap();
        }
    }
    drop(disk);
    let moved = format!("sqlite:{}", roomy.join("state.db").display());
    let (streams, done) = documents_match_versions(&moved);
    assert!(
        done < STREAMS as usize,
        "the disk filled before the end ({streams} streams, {done} done)"
    );
    run_idle(&source, &moved, &[]);
    assert_eq!(
        documents_match_versions(&moved),
        (STREAMS as usize, STREAMS as usize)
    );
    let reference = scratch.store("reference.db");
    run_idle(&source, &reference, &[]);
    assert_eq!(common::export(&moved), common::export(&reference));
}

/// PostgreSQL with the store's database in a tablespace on a 3 MiB tmpfs (the new
/// database takes 2 MiB of it): the commit
/// that does not fit fails whole ("No space left on device", SQLSTATE 53100), exit 1, no
/// panic, and every stream's document still matches its version.
#[test]
fn a_full_disk_fails_the_postgres_commit_whole() {
    let scratch = Scratch::new();
    let events = scratch.path("events.jsonl");
    padded_events(&events);
    let source = format!("file:{}", events.display());
    let name = format!("ordo_full_{}", std::process::id());
    let disk = Tmpfs::mount(&scratch.path("pgdata"), "3m");
    let chowned = Command::new("chown")
        .args(["postgres:postgres"])
        .arg(&disk.path)
        .status()
        .unwrap();
    assert!(chowned.success());
    let mut admin = postgres_admin();
    let cleanup = |admin: &mut postgres::Client| {
        let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        let _ = admin.batch_execute(&format!("DROP TABLESPACE IF EXISTS {name}"));
    };
    cleanup(&mut admin);
    admin
        .batch_execute(&format!(
            "CREATE TABLESPACE {name} LOCATION '{}'",
            disk.path.display()
        ))
        .unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {name} TABLESPACE {name}"))
        .unwrap();
    let store = POSTGRES.replace("/test", &format!("/{name}"));
    let output = try_run_idle(&source, &store, &["--batch", "50"]);
    let said = stderr(&output);
    let consistent = std::panic::catch_unwind(|| documents_match_versions(&store));
    cleanup(&mut admin);
    drop(disk);
    assert_eq!(output.status.code(), Some(1), "stderr: {said}");
    assert!(said.contains("No space left on device"), "stderr: {said}");
    assert!(said.contains("53100"), "stderr: {said}");
    assert!(!said.contains("panicked"), "stderr: {said}");
    let (streams, done) = consistent.expect("the committed state is consistent");
    assert!(
        done < STREAMS as usize,
        "the disk filled before the end ({streams} streams, {done} done)"
    );
}

/// A store file damaged three ways (its header overwritten, cut in half, every page
/// after the first overwritten) is refused by `run`, `status` and `export` with a clear
/// error naming the damage, exit 2, never a panic.
#[test]
fn a_damaged_store_file_is_a_clear_error() {
    let scratch = Scratch::new();
    let events = scratch.path("events.jsonl");
    padded_events(&events);
    let source = format!("file:{}", events.display());
    let good = scratch.path("good.db");
    run_idle(&source, &format!("sqlite:{}", good.display()), &[]);
    assert!(!PathBuf::from(format!("{}-wal", good.display())).exists());
    let bytes = std::fs::read(&good).unwrap();
    assert!(bytes.len() > 64 * 1024);
    let mut header = bytes.clone();
    header[..100].fill(0x5a);
    let half = bytes[..bytes.len() / 2].to_vec();
    let mut pages = bytes.clone();
    for (i, byte) in pages[4096..].iter_mut().enumerate() {
        *byte = (i % 251) as u8;
    }
    for (name, damaged) in [("header", header), ("half", half), ("pages", pages)] {
        let path = scratch.path(&format!("{name}.db"));
        std::fs::write(&path, damaged).unwrap();
        let url = format!("sqlite:{}", path.display());
        let attempts: [&[&str]; 3] = [
            &[
                "run",
                "--source",
                &source,
                "--store",
                &url,
                "--exit-when-idle",
            ],
            &["status", "--store", &url],
            &["export", "--store", &url],
        ];
        for args in attempts {
            let output = run(args);
            let said = stderr(&output);
            assert_eq!(
                output.status.code(),
                Some(2),
                "{name}: ordo {args:?}\nstderr: {said}"
            );
            assert!(!said.contains("panicked"), "{name}: {args:?}: {said}");
            assert!(
                said.contains("not a database") || said.contains("malformed"),
                "{name}: ordo {args:?} does not say the file is damaged: {said}"
            );
        }
    }
}

/// Runs `ordo` as the unprivileged user `nobody` (setpriv, util-linux): root may open
/// every file, so only another user meets a missing permission.
fn run_as_nobody(args: &[&str]) -> Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_ordo"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("setpriv runs (util-linux)")
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A store, an event log or a source file this user may not open, and a directory it
/// may not write a new store into: each is refused at once, exit 2, with the system's
/// "Permission denied" and the path (not SQLite's "unable to open database file", not
/// "not an ordo store"), and nothing is created.
#[test]
fn a_path_without_permission_is_a_clear_error() {
    let scratch = Scratch::new();
    let root = scratch.path("");
    chmod(&root, 0o755);
    let events = scratch.path("events.jsonl");
    padded_events(&events);
    chmod(&events, 0o644);
    let source = format!("file:{}", events.display());
    let locked_store = scratch.path("locked.db");
    run_idle(&source, &format!("sqlite:{}", locked_store.display()), &[]);
    chmod(&locked_store, 0o600);
    let locked_events = scratch.path("locked.jsonl");
    std::fs::copy(&events, &locked_events).unwrap();
    chmod(&locked_events, 0o600);
    let read_only_dir = scratch.path("read-only");
    std::fs::create_dir(&read_only_dir).unwrap();
    chmod(&read_only_dir, 0o755);
    let writable_dir = scratch.path("writable");
    std::fs::create_dir(&writable_dir).unwrap();
    chmod(&writable_dir, 0o777);
    let locked = format!("sqlite:{}", locked_store.display());
    let new_in_read_only = format!("sqlite:{}", read_only_dir.join("new.db").display());
    let fresh = format!("sqlite:{}", writable_dir.join("fresh.db").display());
    let locked_source = format!("file:{}", locked_events.display());
    let events_path = events.to_str().unwrap();
    let idle = "--exit-when-idle";
    let cases: [(&[&str], &str); 5] = [
        (&["status", "--store", &locked], "cannot be read"),
        (&["export", "--store", &locked], "cannot be read"),
        (
            &["run", "--source", &source, "--store", &locked, idle],
            "cannot be opened for writing",
        ),
        (
            &[
                "run",
                "--source",
                &source,
                "--store",
                &new_in_read_only,
                idle,
            ],
            "cannot be opened for writing",
        ),
        (
            &["run", "--source", &locked_source, "--store", &fresh, idle],
            "cannot read",
        ),
    ];
    for (args, says) in cases {
        let output = run_as_nobody(args);
        let said = stderr(&output);
        assert_eq!(
            output.status.code(),
            Some(2),
            "ordo {args:?}\nstderr: {said}"
        );
        assert!(
            said.contains(says) && said.contains("Permission denied"),
            "ordo {args:?} does not say `{says}` and `Permission denied`: {said}"
        );
        assert!(!said.contains("panicked"), "{args:?}: {said}");
    }
    // A real event log, readable by root alone: neither appended to nor consumed.
    let log = scratch.path("locked-log.db");
    let log_path = log.to_str().unwrap();
    assert_eq!(
        run(&["append", "--log", log_path, events_path])
            .status
            .code(),
        Some(0)
    );
    chmod(&log, 0o600);
    let log_source = format!("log:{log_path}");
    for args in [
        &["append", "--log", log_path, events_path][..],
        &["run", "--source", &log_source, "--store", &fresh, idle][..],
    ] {
        let output = run_as_nobody(args);
        let said = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "ordo {args:?}: {said}");
        assert!(
            said.contains(log_path) && said.contains("Permission denied"),
            "ordo {args:?}: {said}"
        );
    }
    assert!(
        !writable_dir.join("fresh.db").exists(),
        "a run refused at its source leaves no store behind"
    );
    // As root, the same locked store opens: the refusal was the permission, not the file.
    assert_eq!(run(&["status", "--store", &locked]).status.code(), Some(0));
}
