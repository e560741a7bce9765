//! ordo against the local NATS JetStream server (127.0.0.1:4222, Debian's nats-server
//! 2.9). Each test makes a stream of its own, named after the test and the process, and
//! deletes it at the end, whatever happens. Final states are compared with the in-order
//! oracle.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use common::{export, ok, ordo, run, run_idle, Scratch};
use ordo_core::Event;
use ordo_sim::scenarios::Scenario;
use ordo_sim::{compare, oracle, Rng};

/// The local server.
const SERVER: &str = "127.0.0.1:4222";

/// Messages published before waiting for their acks.
const PUBLISH_CHUNK: usize = 256;

/// A stream of this test's own, deleted on drop.
struct TestStream {
    runtime: tokio::runtime::Runtime,
    context: jetstream::Context,
    name: String,
    subject: String,
}

impl TestStream {
    fn new(test: &str) -> TestStream {
        let name = format!("ORDO_{}_{}", test.to_uppercase(), std::process::id());
        let subject = format!("{}.events", name.to_lowercase());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let context = runtime.block_on(async {
            let client = async_nats::connect(SERVER)
                .await
                .expect("NATS with JetStream on 127.0.0.1:4222");
            let context = jetstream::new(client);
            let _ = context.delete_stream(&name).await;
            context
                .create_stream(stream::Config {
                    name: name.clone(),
                    subjects: vec![format!("{subject}.>")],
                    ..Default::default()
                })
                .await
                .expect("a stream");
            context
        });
        TestStream {
            runtime,
            context,
            name,
            subject,
        }
    }

    fn source(&self, durable: &str) -> String {
        format!("nats://{SERVER}/{}?durable={durable}", self.name)
    }

    /// Publishes raw bodies on `SUBJECT.<entity>`, each with its message id (or none).
    fn publish_raw(&self, messages: &[(String, Vec<u8>, Option<String>)]) {
        // In chunks, each confirmed before the next: a bounded number of acks in flight.
        for chunk in messages.chunks(PUBLISH_CHUNK) {
            self.publish_chunk(chunk);
        }
    }

    fn publish_chunk(&self, messages: &[(String, Vec<u8>, Option<String>)]) {
        self.runtime.block_on(async {
            let mut acks = Vec::with_capacity(messages.len());
            for (entity, body, id) in messages {
                let subject = format!("{}.{entity}", self.subject);
                let ack = match id {
                    Some(id) => {
                        let mut headers = async_nats::HeaderMap::new();
                        headers.insert("Nats-Msg-Id", id.as_str());
                        self.context
                            .publish_with_headers(subject, headers, body.clone().into())
                            .await
                    }
                    None => self.context.publish(subject, body.clone().into()).await,
                };
                acks.push(ack.expect("publish"));
            }
            for ack in acks {
                ack.await.expect("the server stored it");
            }
        });
    }

    /// Publishes events on `SUBJECT.<stream>`, without message ids (a producer's retries
    /// arrive as new messages).
    fn publish(&self, events: &[Event]) {
        let messages: Vec<_> = events
            .iter()
            .map(|e| {
                (
                    e.stream.replace('.', "_"),
                    e.to_json_string().into_bytes(),
                    None,
                )
            })
            .collect();
        self.publish_raw(&messages);
    }
}

impl Drop for TestStream {
    fn drop(&mut self) {
        let _ = self
            .runtime
            .block_on(self.context.delete_stream(&self.name));
    }
}

fn run_until_idle(source: &str, store: &str) -> serde_json::Value {
    let output = run_idle(source, store, &["--json", "--idle-ms", "1000"]);
    serde_json::from_slice(&output.stdout).expect("counters")
}

#[test]
fn nats_end_to_end_with_duplicates_matches_the_oracle() {
    let stream = TestStream::new("e2e");
    let seed = 51;
    let history = Scenario::Mixed.history(seed, 3000);
    // The disordered deliveries hold the producer's retries (duplicates), published as
    // new messages.
    let deliveries = Scenario::Mixed.deliveries(seed, &history);
    assert!(deliveries.len() > history.len(), "duplicates are published");
    stream.publish(&deliveries);
    let scratch = Scratch::new();
    let store = scratch.store("state.db");
    let source = stream.source("ordo");
    let counters = run_until_idle(&source, &store);
    assert!(counters["duplicate"].as_u64().unwrap() > 0, "{counters}");
    let divergence = compare(&oracle::run(&history), &export(&store), true);
    assert!(divergence.is_empty(), "seed {seed}:\n{divergence}");
    // A second run resumes after the stored sequence: nothing is delivered again.
    let again = run_until_idle(&source, &store);
    assert_eq!(again, counters, "nothing new");
}

#[test]
fn sigkill_mid_run_then_restart_matches_the_oracle() {
    let stream = TestStream::new("kill");
    let seed = 53;
    let history = Scenario::Mixed.history(seed, 6000);
    let deliveries = Scenario::Mixed.deliveries(seed, &history);
    stream.publish(&deliveries);
    let scratch = Scratch::new();
    let store = scratch.store("state.db");
    let source = stream.source("ordo");
    let mut rng = Rng::derive(seed, "kill");
    for _ in 0..3 {
        let mut child = ordo()
            .args([
                "run", "--source", &source, "--store", &store, "--batch", "32",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.range(700, 2000)));
        let _ = Command::new("kill")
            .args(["-KILL", &child.id().to_string()])
            .status();
        let _ = child.wait();
    }
    let started = Instant::now();
    run_until_idle(&source, &store);
    // Resumed from the store's sequence at once, not after the server's ack wait.
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the restart took {:?}",
        started.elapsed()
    );
    let divergence = compare(&oracle::run(&history), &export(&store), true);
    assert!(divergence.is_empty(), "seed {seed}:\n{divergence}");
}

#[test]
fn malformed_messages_become_dead_letters_with_their_stream_sequence() {
    let stream = TestStream::new("bad");
    let good = |id: &str, version: u64| {
        format!(
            r#"{{"id":"{id}","stream":"account-1","version":{version},"type":"T","op":"set","data":{{"n":{version}}}}}"#
        )
        .into_bytes()
    };
    stream.publish_raw(&[
        ("account-1".into(), good("a", 1), None),
        ("account-1".into(), b"{not json".to_vec(), None),
        ("account-1".into(), good("b", 2), None),
    ]);
    let scratch = Scratch::new();
    let store = scratch.store("state.db");
    let counters = run_until_idle(&stream.source("ordo"), &store);
    assert_eq!(counters["dead_lettered"], 1, "{counters}");
    let entries = common::json_lines(&ok(&["dlq", "list", "--store", &store, "--json"]));
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["partition"], 0);
    assert_eq!(entries[0]["offset"], 2, "the stream sequence: {entries:?}");
    assert!(
        entries[0]["reason"].as_str().unwrap().contains("JSON"),
        "{entries:?}"
    );
    assert_eq!(export(&store)["account-1"].version, 2, "the others go on");
}

#[test]
fn a_missing_stream_or_durable_is_a_clear_error() {
    let scratch = Scratch::new();
    let store = scratch.store("state.db");
    let output = run(&[
        "run",
        "--source",
        &format!("nats://{SERVER}/ORDO_NO_SUCH_STREAM?durable=x"),
        "--store",
        &store,
        "--exit-when-idle",
    ]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ORDO_NO_SUCH_STREAM"), "{stderr}");
    assert!(
        !stderr.contains("connected"),
        "the client's chatter stays out: {stderr}"
    );
    let output = run(&[
        "run",
        "--source",
        &format!("nats://{SERVER}/ORDERS"),
        "--store",
        &store,
    ]);
    assert_ne!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stderr).contains("durable"));
}

/// A process that stalls longer than the ack wait (SIGSTOP) has its unacknowledged
/// messages redelivered by the server: the copies are the same stream sequences, which
/// the engine absorbs as duplicates, and the state is the oracle's.
#[test]
fn a_redelivery_after_the_ack_wait_is_absorbed() {
    let stream = TestStream::new("redeliver");
    let history: Vec<Event> = (1..=200u64)
        .map(|n| {
            let stream = format!("account-{}", n % 10);
            let version = (n - 1) / 10 + 1;
            ordo_core::parse_event(
                format!(
                    r#"{{"id":"e{n}","stream":"{stream}","version":{version},"type":"T","op":"incr","data":{{"n":1}}}}"#
                )
                .as_bytes(),
                ordo_core::OpPolicy::Document,
            )
            .unwrap()
        })
        .collect();
    // No duplicates are published: every duplicate counted is a redelivery.
    stream.publish(&history);
    let scratch = Scratch::new();
    let store = scratch.store("state.db");
    let source = format!("{}&ack_wait_ms=1000", stream.source("ordo"));
    // Nothing committed for 8 s, and the source never called idle: what was pulled
    // stays unacknowledged.
    let child = ordo()
        .args(["run", "--source", &source, "--store", &store])
        .args(["--commit-interval-ms", "8000", "--idle-ms", "60000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let child = common::KilledOnDrop(child);
    std::thread::sleep(Duration::from_millis(1_500));
    common::kill_with(&child.0, "-STOP");
    std::thread::sleep(Duration::from_millis(3_000));
    common::kill_with(&child.0, "-CONT");
    let started = Instant::now();
    let settled = loop {
        let status = run(&["status", "--store", &store, "--json"]);
        if status.status.success() {
            let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
            if status["counters"]["applied"] == 200 && status["counters"]["duplicate"] != 0 {
                break status;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no redelivery absorbed within 60 s"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(
        settled["counters"]["duplicate"].as_u64().unwrap() > 0,
        "{settled}"
    );
    let divergence = compare(&oracle::run(&history), &export(&store), true);
    assert!(divergence.is_empty(), "{divergence}");
}

/// `ordo relay --to nats://…`: a relay that crashes between the server's acks and the
/// mark publishes the batch again on restart; the stream's duplicate window drops the
/// copies by `Nats-Msg-Id`, so the consumer reads each event once and reaches the oracle.
/// Needs a binary built with the `fault-injection` feature (scripts/test.sh builds it so).
#[test]
#[cfg(feature = "fault-injection")]
fn a_relay_crash_between_publish_and_mark_is_absorbed_by_the_duplicate_window() {
    let stream = TestStream::new("relay");
    let scratch = Scratch::new();
    let app_store = scratch.store("app.db");
    let seed = 73;
    let history = Scenario::EventStore.history(seed, 600);
    {
        let path = scratch.path("app.db");
        let mut store = ordo_store::SqliteStore::open(path.to_str().unwrap(), true).unwrap();
        let rows: Vec<(String, String)> = history
            .iter()
            .map(|e| (e.stream.to_string(), e.to_json_string()))
            .collect();
        store.outbox_append(&rows).unwrap();
    }
    let to = format!("nats://{SERVER}/{}?prefix={}", stream.name, stream.subject);
    let relay = [
        "relay",
        "--store",
        &app_store,
        "--to",
        &to,
        "--exit-when-idle",
        "--batch",
        "100",
    ];
    let crashed = ordo()
        .args(relay)
        .env("ORDO_RELAY_CRASH_AFTER_BATCHES", "2")
        .output()
        .unwrap();
    assert_eq!(
        crashed.status.code(),
        Some(137),
        "the relay crashed on purpose"
    );
    ok(&relay);
    let stored = stream.runtime.block_on(async {
        let mut handle = stream.context.get_stream(&stream.name).await.unwrap();
        handle.info().await.unwrap().state.messages
    });
    assert_eq!(
        stored,
        history.len() as u64,
        "the batch published twice is stored once"
    );
    let store = scratch.store("state.db");
    let counters = run_until_idle(&stream.source("ordo"), &store);
    assert_eq!(counters["applied"].as_u64(), Some(history.len() as u64));
    let divergence = compare(&oracle::run(&history), &export(&store), true);
    assert!(divergence.is_empty(), "seed {seed}:\n{divergence}");
    // A prefix the stream does not take is refused before anything is published.
    let wrong = format!("nats://{SERVER}/{}?prefix=elsewhere", stream.name);
    let output = run(&[
        "relay",
        "--store",
        &app_store,
        "--to",
        &wrong,
        "--exit-when-idle",
    ]);
    assert_ne!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stderr).contains("elsewhere"));
}

/// Subject partitions in the group test.
const GROUP_PARTITIONS: u32 = 4;

impl TestStream {
    /// A source reading the stream as `GROUP_PARTITIONS` subject partitions.
    fn partitioned_source(&self, durable: &str) -> String {
        format!(
            "nats://{SERVER}/{}?durable={durable}&partitions={GROUP_PARTITIONS}&prefix={}",
            self.name, self.subject
        )
    }

    /// Publishes events on `SUBJECT.<partition>.<stream>`, as a producer using ordo's
    /// partitioner does.
    fn publish_partitioned(&self, events: &[Event]) {
        let messages: Vec<_> = events
            .iter()
            .map(|e| {
                let token = ordo_nats::token(&e.stream);
                let partition = ordo_nats::partition_of(&token, GROUP_PARTITIONS);
                (
                    format!("{partition}.{token}"),
                    e.to_json_string().into_bytes(),
                    None,
                )
            })
            .collect();
        self.publish_raw(&messages);
    }
}

/// Live claims by member name, in a PostgreSQL store's schema.
fn claims_by_member(schema: &str) -> std::collections::BTreeMap<String, i64> {
    common::postgres_admin()
        .query(
            &format!("SELECT member, COUNT(*) FROM {schema}.claims WHERE member <> '' GROUP BY 1"),
            &[],
        )
        .map(|rows| rows.iter().map(|row| (row.get(0), row.get(1))).collect())
        .unwrap_or_default() // the schema is created by the first member
}

/// The epoch of each partition's claim.
fn claim_epochs(schema: &str) -> Vec<i64> {
    common::postgres_admin()
        .query(
            &format!("SELECT epoch FROM {schema}.claims ORDER BY partition"),
            &[],
        )
        .map(|rows| rows.iter().map(|row| row.get(0)).collect())
        .unwrap_or_default()
}

/// Waits for `done` at most `limit`, failing the test with `what` otherwise; how long
/// it took.
fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    started.elapsed()
}

/// Two `ordo run` processes on one stream read as four subject partitions, sharing
/// PostgreSQL: the group splits the partitions, a SIGKILLed member's partitions go to
/// the other after the session timeout, a new member takes half back (hand-over by
/// release, no fencing), a member restarted under its `--member-id` takes its own back
/// at once, and the running group reaches the oracle on a workload whose dependencies
/// and merges cross partitions. The last part of the events is published by `ordo relay`
/// with `partitions=`, so producer and consumers agree on the partitioner.
#[test]
fn two_members_on_subject_partitions_survive_a_sigkill() {
    let stream = TestStream::new("group");
    let seed = 79;
    let history = Scenario::Mixed.history(seed, 4_000);
    let deliveries = Scenario::Mixed.deliveries(seed, &history);
    let parts: Vec<&[Event]> = deliveries.chunks(deliveries.len().div_ceil(3)).collect();
    let (mut admin, schema, store) = common::postgres_schema("ordo_nats_group");
    let source = stream.partitioned_source("members");
    let scratch = Scratch::new();
    // Each member's stderr goes to a file (ORDO_TEST_LOG_DIR keeps them for a look).
    let logs = std::env::var_os("ORDO_TEST_LOG_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| scratch.path(""));
    let spawn = |name: &str, member_id: Option<&str>| {
        let mut command = ordo();
        command.args([
            "run", "--source", &source, "--store", &store, "--batch", "16",
        ]);
        if let Some(id) = member_id {
            command.args(["--member-id", id]);
        }
        let log = logs.join(format!("{name}.log"));
        let child = command
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        (common::KilledOnDrop(child), log)
    };
    stream.publish_partitioned(parts[0]);
    let first = spawn("first", None);
    let (second, _) = spawn("second", Some("second"));
    let split = |claims: &std::collections::BTreeMap<String, i64>| {
        claims.len() == 2 && claims.values().all(|&n| n == 2)
    };
    wait_until("two partitions each", Duration::from_secs(30), || {
        split(&claims_by_member(&schema))
    });
    stream.publish_partitioned(parts[1]);
    // Killed mid-stream: the other takes its partitions once its heartbeat is older than
    // the session timeout.
    std::thread::sleep(Duration::from_millis(300));
    drop(first);
    let took = wait_until(
        "the survivor holds every partition",
        Duration::from_secs(30),
        || claims_by_member(&schema).get("second") == Some(&i64::from(GROUP_PARTITIONS)),
    );
    eprintln!("the killed member's partitions taken over after {took:?}");
    // A new member: the survivor releases two, the newcomer takes them.
    let third = spawn("third", None);
    wait_until("a split with the newcomer", Duration::from_secs(30), || {
        split(&claims_by_member(&schema))
    });
    // The rest through the relay, partitioned the same way.
    let app_store = scratch.store("app.db");
    {
        let path = scratch.path("app.db");
        let mut app = ordo_store::SqliteStore::open(path.to_str().unwrap(), true).unwrap();
        let rows: Vec<(String, String)> = parts[2]
            .iter()
            .map(|e| (e.stream.to_string(), e.to_json_string()))
            .collect();
        app.outbox_append(&rows).unwrap();
    }
    let to = format!(
        "nats://{SERVER}/{}?prefix={}&partitions={GROUP_PARTITIONS}",
        stream.name, stream.subject
    );
    ok(&[
        "relay",
        "--store",
        &app_store,
        "--to",
        &to,
        "--exit-when-idle",
    ]);
    // Restarted under its name, a member takes its partitions back without waiting for
    // its old heartbeat to age.
    let epochs = claim_epochs(&schema);
    drop(second);
    let (second, second_log) = spawn("second-again", Some("second"));
    let back = wait_until(
        "the restarted member re-claims its partitions",
        Duration::from_secs(30),
        || {
            let now = claim_epochs(&schema);
            now.len() == epochs.len() && now.iter().zip(&epochs).filter(|(n, e)| n > e).count() == 2
        },
    );
    eprintln!("restarted under its name, its partitions back after {back:?}");
    assert!(
        back < Duration::from_millis(ordo_runtime::membership::SESSION_TIMEOUT_MS),
        "a restart under the same name does not wait for the session timeout ({back:?})"
    );
    // The running group converges: no final sweep by a single process.
    let expected = oracle::run(&history);
    let took = common::until_converged(&expected, &store, Duration::from_secs(120), seed);
    eprintln!("converged {took:?} after the last publish");
    for (mut child, log) in [(second, second_log), third] {
        common::kill_with(&child.0, "-TERM");
        let status = child.0.wait().unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(status.code(), Some(0), "{text}");
        assert!(
            !text.contains("fenced"),
            "a hand-over fenced a member: {text}"
        );
    }
    let divergence = compare(&expected, &export(&store), true);
    assert!(divergence.is_empty(), "seed {seed}:\n{divergence}");
    admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .unwrap();
}

/// A store that read a stream as N subject partitions refuses to read it as another
/// number under the same durable name (partition n's position means nothing for another
/// split): a clear error, exit 2, before anything is read.
#[test]
fn another_split_of_the_same_durable_is_refused() {
    let stream = TestStream::new("split");
    let history = Scenario::Mixed.history(83, 300);
    stream.publish_partitioned(&history);
    let scratch = Scratch::new();
    let store = scratch.store("state.db");
    let counters = run_until_idle(&stream.partitioned_source("split"), &store);
    assert_eq!(counters["applied"].as_u64(), Some(history.len() as u64));
    for other in [
        format!("nats://{SERVER}/{}?durable=split", stream.name),
        format!(
            "nats://{SERVER}/{}?durable=split&partitions=2&prefix={}",
            stream.name, stream.subject
        ),
    ] {
        let output = run(&[
            "run",
            "--source",
            &other,
            "--store",
            &store,
            "--exit-when-idle",
        ]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("a different split"), "{stderr}");
    }
    // Nothing was read or written by the refused runs.
    let divergence = compare(&oracle::run(&history), &export(&store), true);
    assert!(divergence.is_empty(), "{divergence}");
}

/// `ordo pause --partition` on a running NATS consumer: the partition is not read (its
/// subjects' new messages wait in the stream) until `ordo resume`, while the others go on.
#[test]
fn a_paused_nats_partition_is_not_read_until_resumed() {
    let stream = TestStream::new("pause");
    let scratch = Scratch::new();
    let store = scratch.store("state.db");
    let event = |stream: &str, version: u64| {
        let text = format!(
            r#"{{"id":"{stream}-{version}","stream":"{stream}","version":{version},"type":"T","op":"incr","data":{{"n":1}}}}"#
        );
        ordo_core::parse_event(text.as_bytes(), ordo_core::OpPolicy::Document).unwrap()
    };
    // One stream in partition 0 and one elsewhere.
    let in_partition = |p: u32| {
        (0..)
            .map(|i| format!("account-{i}"))
            .find(|s| ordo_nats::partition_of(&ordo_nats::token(s), GROUP_PARTITIONS) == p)
            .unwrap()
    };
    let (paused, other) = (in_partition(0), in_partition(1));
    stream.publish_partitioned(&[event(&paused, 1), event(&other, 1)]);
    let _run = common::run_in_background(&stream.partitioned_source("pause"), &store);
    wait_until("both applied", Duration::from_secs(30), || {
        common::applied_version(&store, &paused) == 1
            && common::applied_version(&store, &other) == 1
    });
    let pause = [
        "pause",
        "--store",
        &store,
        "--partition",
        "0",
        "--reason",
        "maintenance",
    ];
    ok(&pause);
    std::thread::sleep(Duration::from_millis(1_500));
    stream.publish_partitioned(&[event(&paused, 2), event(&other, 2)]);
    wait_until(
        "the other partition goes on",
        Duration::from_secs(30),
        || common::applied_version(&store, &other) == 2,
    );
    std::thread::sleep(Duration::from_millis(1_500));
    assert_eq!(
        common::applied_version(&store, &paused),
        1,
        "partition 0 is not read"
    );
    ok(&[
        "resume",
        "--store",
        &store,
        "--partition",
        "0",
        "--reason",
        "done",
    ]);
    wait_until("partition 0 is read again", Duration::from_secs(30), || {
        common::applied_version(&store, &paused) == 2
    });
}
