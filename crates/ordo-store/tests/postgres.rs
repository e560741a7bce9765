//! The PostgreSQL store against the local server (127.0.0.1:5432, trust auth, database
//! `test`), each test in a schema of its own: commit and snapshot round-trip, and a full
//! consumer run checked against the in-order oracle.

use std::sync::Arc;

use ordo_core::{parse_event, Config, Engine, OpPolicy, Outcome, SourcePosition};
use ordo_projection::Document;
use ordo_store::{CommitBatch, PostgresStore, Store};

fn url(schema: &str) -> String {
    format!(
        "postgres://postgres@127.0.0.1:5432/test?schema={schema}_{}",
        std::process::id()
    )
}

fn fresh(schema: &str) -> PostgresStore {
    let mut admin =
        postgres::Client::connect("postgres://postgres@127.0.0.1:5432/test", postgres::NoTls)
            .expect("PostgreSQL on 127.0.0.1:5432 (database `test`)");
    admin
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema}_{} CASCADE",
            std::process::id()
        ))
        .unwrap();
    PostgresStore::open(&url(schema)).unwrap()
}

fn event(stream: &str, version: u64) -> ordo_core::Event {
    let text = format!(
        r#"{{"id":"{stream}-{version}","stream":"{stream}","version":{version},"type":"T","op":"incr","data":{{"n":1}}}}"#
    );
    parse_event(text.as_bytes(), OpPolicy::Document).unwrap()
}

#[test]
fn a_commit_round_trips_through_snapshot() {
    let mut store = fresh("ordo_roundtrip");
    // Restored from the store, as every consumer is: the snapshot reserves its
    // dead-letter ids.
    let mut engine = Engine::restore(Config::default(), store.snapshot("file:x").unwrap(), 0);
    let at = |offset| {
        Some(SourcePosition {
            partition: 0,
            offset,
        })
    };
    engine.handle_event(0, at(0), event("a", 1));
    engine.handle_event(0, at(1), event("a", 3));
    engine.handle_bytes(0, at(2), b"garbage");
    let work = engine.poll_work(0).unwrap();
    engine.handle_outcome(0, work, Outcome::Applied);
    let documents = vec![(
        Arc::from("a"),
        Some(Document::Live(serde_json::json!({"n": 1}))),
    )];
    store
        .commit(
            "file:x",
            CommitBatch {
                actions: Vec::new(),
                journal: Vec::new(),
                retention: Default::default(),
                now_ms: 0,
                changes: engine.take_changes(),
                documents,
            },
        )
        .unwrap();
    let snapshot = store.snapshot("file:x").unwrap();
    assert_eq!(snapshot.checkpoints, vec![(0, 2)]);
    assert_eq!(snapshot.pending.len(), 1);
    assert_eq!(snapshot.dedupe.len(), 2);
    assert_eq!(store.dead_letters().unwrap().len(), 1);
    assert_eq!(
        store.export().unwrap()[0].doc,
        Some(serde_json::json!({"n": 1}))
    );
    assert_eq!(
        store.documents(&[Arc::from("a"), Arc::from("zz")]).unwrap()[1],
        None
    );
    let restored = Engine::restore(Config::default(), snapshot, 0);
    assert_eq!(restored.applied_version("a"), 1);
}

#[test]
fn a_consumer_run_into_postgres_matches_the_oracle() {
    use ordo_runtime::{Consumer, FileSource, RunOptions};
    use ordo_sim::workload::{deliver, random_history, Disorder, Shape};
    let seed = 81;
    let history = random_history(
        seed,
        Shape {
            streams: 30,
            events: 1500,
            ..Shape::default()
        },
    );
    let deliveries = deliver(seed, &history, Disorder::Shuffle, 15);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let lines: Vec<String> = deliveries.iter().map(|e| e.to_json_string()).collect();
    std::fs::write(&input, lines.join("\n")).unwrap();
    let store = fresh("ordo_oracle");
    let mut consumer = Consumer::open(store, "file:in", Config::default()).unwrap();
    consumer.verbose = false;
    let mut source = FileSource::open(input.to_str().unwrap()).unwrap();
    let options = RunOptions {
        exit_when_idle: true,
        commit_events_max: 200,
        ..RunOptions::default()
    };
    ordo_runtime::run(
        &mut consumer,
        &mut source,
        &options,
        &std::sync::atomic::AtomicBool::new(false),
    )
    .unwrap();
    let actual = ordo_sim::export::from_store(consumer.store().export().unwrap());
    let divergence = ordo_sim::compare(&ordo_sim::oracle::run(&history), &actual, true);
    assert!(divergence.is_empty(), "seed {seed}:\n{divergence}");
}

// ----- sharing one store between processes -----

fn open_again(schema: &str) -> PostgresStore {
    PostgresStore::open(&url(schema)).unwrap()
}

fn live(n: i64) -> Option<Document> {
    Some(Document::Live(serde_json::json!({ "n": n })))
}

/// One applied event of `stream` at `version` as a batch writing `doc`.
fn applied_batch(engine: &mut Engine, stream: &str, version: u64, doc: i64) -> CommitBatch {
    engine.handle_event(0, None, event(stream, version));
    let work = engine.poll_work(0).expect("in order");
    engine.handle_outcome(0, work, Outcome::Applied);
    CommitBatch {
        actions: Vec::new(),
        journal: Vec::new(),
        retention: Default::default(),
        now_ms: 0,
        changes: engine.take_changes(),
        documents: vec![(Arc::from(stream), live(doc))],
    }
}

fn is_conflict(result: Result<(), ordo_store::CommitError>) -> bool {
    matches!(result, Err(ordo_store::CommitError::Conflict(_)))
}

#[test]
fn a_document_changed_by_another_member_since_it_was_read_is_a_conflict() {
    let mut first = fresh("ordo_doc_conflict");
    let mut second = open_again("ordo_doc_conflict");
    let mut engine_first = Engine::restore(Config::default(), first.snapshot("s").unwrap(), 0);
    let mut engine_second = Engine::restore(Config::default(), second.snapshot("s").unwrap(), 0);
    // Both read `a` while it is absent; the first creates it.
    first.documents(&[Arc::from("a")]).unwrap();
    second.documents(&[Arc::from("a")]).unwrap();
    first
        .commit("s", applied_batch(&mut engine_first, "a", 1, 1))
        .unwrap();
    assert!(is_conflict(
        second.commit("s", applied_batch(&mut engine_second, "a", 1, 1))
    ));
    // Read again, the second member sees version 1 and writing version 1 again is
    // refused (another member applied it), while version 2 lands.
    let mut engine_second = Engine::restore(Config::default(), second.snapshot("s").unwrap(), 0);
    assert_eq!(engine_second.applied_version("a"), 1);
    second.documents(&[Arc::from("a")]).unwrap();
    second
        .commit("s", applied_batch(&mut engine_second, "a", 2, 2))
        .unwrap();
    // The first member's cached revision is now old: its next write conflicts.
    assert!(is_conflict(
        first.commit("s", applied_batch(&mut engine_first, "a", 2, 2))
    ));
    assert_eq!(
        first.export().unwrap()[0].doc,
        Some(serde_json::json!({"n": 2}))
    );
    assert_eq!(first.export().unwrap()[0].version, 2);
}

#[test]
fn a_stream_merged_away_by_another_member_is_a_conflict_for_its_owner() {
    let mut owner = fresh("ordo_alias_conflict");
    let mut merger = open_again("ordo_alias_conflict");
    let mut engine = Engine::restore(Config::default(), owner.snapshot("s").unwrap(), 0);
    owner.documents(&[Arc::from("src")]).unwrap();
    owner
        .commit("s", applied_batch(&mut engine, "src", 1, 1))
        .unwrap();
    // The merger applies `tgt`'s merge of `src` at cut 1.
    let mut merging = Engine::restore(Config::default(), merger.snapshot("s").unwrap(), 0);
    let merge = parse_event(
        br#"{"id":"m","stream":"tgt","version":1,"type":"M","op":"merge","data":{"from":["src"]},"after":[{"stream":"src","version":1}]}"#,
        OpPolicy::Document,
    )
    .unwrap();
    merging.handle_event(0, None, merge);
    let work = merging.poll_work(0).expect("cut met");
    merging.handle_outcome(0, work, Outcome::Applied);
    merger
        .documents(&[Arc::from("tgt"), Arc::from("src")])
        .unwrap();
    merger
        .commit(
            "s",
            CommitBatch {
                actions: Vec::new(),
                journal: Vec::new(),
                retention: Default::default(),
                now_ms: 0,
                changes: merging.take_changes(),
                documents: vec![(Arc::from("tgt"), live(1)), (Arc::from("src"), None)],
            },
        )
        .unwrap();
    // The owner, not knowing the alias, would apply `src` 2 to `src` itself: refused.
    owner.documents(&[Arc::from("src")]).unwrap();
    assert!(is_conflict(
        owner.commit("s", applied_batch(&mut engine, "src", 2, 2))
    ));
    let rebuilt = Engine::restore(Config::default(), owner.snapshot("s").unwrap(), 0);
    assert_eq!(rebuilt.resolve_document("src").as_deref(), Some("tgt"));
}

#[test]
fn a_member_that_lost_its_partition_cannot_commit_for_it() {
    let mut zombie = fresh("ordo_fencing");
    let mut successor = open_again("ordo_fencing");
    zombie.claim("kafka://t", &[0, 1]).unwrap();
    zombie.snapshot("kafka://t").unwrap();
    successor.claim("kafka://t", &[1]).unwrap();
    successor.snapshot("kafka://t").unwrap();
    let mut engine = Engine::new(Config::default());
    engine.handle_event(
        0,
        Some(SourcePosition {
            partition: 1,
            offset: 0,
        }),
        event("a", 1),
    );
    let work = engine.poll_work(0).unwrap();
    engine.handle_outcome(0, work, Outcome::Applied);
    zombie.documents(&[Arc::from("a")]).unwrap();
    let refused = zombie.commit(
        "kafka://t",
        CommitBatch {
            actions: Vec::new(),
            journal: Vec::new(),
            retention: Default::default(),
            now_ms: 0,
            changes: engine.take_changes(),
            documents: vec![(Arc::from("a"), live(1))],
        },
    );
    match refused {
        Err(ordo_store::CommitError::Fenced {
            partition,
            mine,
            current,
            ..
        }) => assert_eq!((partition, mine, current), (1, 1, 2)),
        other => panic!("expected fencing, got {other:?}"),
    }
    // Nothing of the batch landed.
    assert!(successor.export().unwrap().is_empty());
    assert!(successor
        .snapshot("kafka://t")
        .unwrap()
        .checkpoints
        .is_empty());
    // After giving the partition up (a revocation), the zombie's other partition is fine.
    zombie.release(&[1]).unwrap();
    let mut engine = Engine::new(Config::default());
    zombie.documents(&[Arc::from("b")]).unwrap();
    zombie
        .commit("kafka://t", applied_batch(&mut engine, "b", 1, 1))
        .unwrap();
}

#[test]
fn a_commit_that_moves_streams_notifies_listening_members() {
    let mut listener = fresh("ordo_notify");
    let mut writer = open_again("ordo_notify");
    // The first call starts listening and answers "maybe".
    assert!(listener.poll_progress());
    assert!(!listener.poll_progress());
    let mut engine = Engine::new(Config::default());
    writer.documents(&[Arc::from("a")]).unwrap();
    writer
        .commit("s", applied_batch(&mut engine, "a", 1, 1))
        .unwrap();
    let started = std::time::Instant::now();
    while !listener.poll_progress() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "no notification within 5 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let records = listener
        .stream_records(&[Arc::from("a"), Arc::from("never")])
        .unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].applied, 1);
}

#[test]
fn members_reserve_distinct_dead_letter_ids_and_add_up_counters() {
    let mut first = fresh("ordo_ids");
    let mut second = open_again("ordo_ids");
    let mut engine_first = Engine::restore(Config::default(), first.snapshot("s").unwrap(), 0);
    let mut engine_second = Engine::restore(Config::default(), second.snapshot("s").unwrap(), 0);
    engine_first.handle_bytes(0, None, b"not json");
    engine_second.handle_bytes(0, None, b"not json either");
    for (store, engine) in [
        (&mut first, &mut engine_first),
        (&mut second, &mut engine_second),
    ] {
        store
            .commit(
                "s",
                CommitBatch {
                    actions: Vec::new(),
                    journal: Vec::new(),
                    retention: Default::default(),
                    now_ms: 0,
                    changes: engine.take_changes(),
                    documents: Vec::new(),
                },
            )
            .unwrap();
    }
    let ids: Vec<u64> = first.dead_letters().unwrap().iter().map(|d| d.id).collect();
    assert_eq!(ids.len(), 2, "both dead letters kept: {ids:?}");
    assert_ne!(ids[0], ids[1]);
    assert_eq!(first.counters().unwrap().dead_lettered, 2);
    // A rebuild (a conflict, a rebalance) goes on in the same block: ids stay dense
    // within a process instead of jumping a block per rebuild.
    // The first store reserved the first block, so its entry has the lower id.
    let before = ids.iter().copied().min().unwrap();
    let mut rebuilt = Engine::restore(Config::default(), first.snapshot("s").unwrap(), 0);
    rebuilt.handle_bytes(0, None, b"still not json");
    first
        .commit(
            "s",
            CommitBatch {
                actions: Vec::new(),
                journal: Vec::new(),
                retention: Default::default(),
                now_ms: 0,
                changes: rebuilt.take_changes(),
                documents: Vec::new(),
            },
        )
        .unwrap();
    let now: Vec<u64> = first.dead_letters().unwrap().iter().map(|d| d.id).collect();
    assert!(
        now.contains(&(before + 1)),
        "the rebuilt engine went on in its block after {before}: {now:?}"
    );
}

#[test]
fn a_lost_connection_is_re_established_and_the_commit_lands_whole() {
    let mut store = fresh("ordo_reconnect");
    let mut admin =
        postgres::Client::connect("postgres://postgres@127.0.0.1:5432/test", postgres::NoTls)
            .unwrap();
    let mut engine = Engine::restore(Config::default(), store.snapshot("s").unwrap(), 0);
    store.documents(&[Arc::from("a")]).unwrap();
    let pid = store.backend_pid().unwrap();
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap();
    store
        .commit("s", applied_batch(&mut engine, "a", 1, 1))
        .unwrap();
    assert_ne!(store.backend_pid().unwrap(), pid);
    assert_eq!(store.export().unwrap()[0].version, 1);
}

#[test]
fn a_connection_that_cannot_come_back_is_a_clear_error_without_the_password() {
    let role = format!("ordo_gone_{}", std::process::id());
    let mut admin =
        postgres::Client::connect("postgres://postgres@127.0.0.1:5432/test", postgres::NoTls)
            .unwrap();
    admin
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {role} CASCADE; DROP ROLE IF EXISTS {role};
             CREATE ROLE {role} LOGIN SUPERUSER"
        ))
        .unwrap();
    let mut store = PostgresStore::open(&format!(
        "postgres://{role}:hunter2secret@127.0.0.1:5432/test?schema={role}"
    ))
    .unwrap();
    let mut engine = Engine::restore(Config::default(), store.snapshot("s").unwrap(), 0);
    store.documents(&[Arc::from("a")]).unwrap();
    let pid = store.backend_pid().unwrap();
    admin
        .batch_execute(&format!("ALTER ROLE {role} NOLOGIN"))
        .unwrap();
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap();
    let error = store
        .commit("s", applied_batch(&mut engine, "a", 1, 1))
        .expect_err("no login, no commit");
    let message = error.to_string();
    admin
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {role} CASCADE; DROP OWNED BY {role}; DROP ROLE {role}"
        ))
        .unwrap();
    assert!(
        matches!(error, ordo_store::CommitError::Unavailable(_)),
        "{message}"
    );
    assert!(message.contains("attempts"), "{message}");
    assert!(!message.contains("hunter2secret"), "{message}");
    assert!(message.contains("***"), "{message}");
}
