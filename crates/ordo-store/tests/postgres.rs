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
    let mut engine = Engine::new(Config::default());
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
    let mut actual = ordo_sim::Export::new();
    for row in consumer.store().export().unwrap() {
        actual.insert(
            row.stream,
            ordo_sim::Row {
                version: row.version,
                doc: row.doc,
                deleted: row.deleted,
                merged_into: row.merged_into,
            },
        );
    }
    let divergence = ordo_sim::compare(&ordo_sim::oracle::run(&history), &actual, true);
    assert!(divergence.is_empty(), "seed {seed}:\n{divergence}");
}
