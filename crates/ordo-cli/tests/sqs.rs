//! ordo against Amazon SQS as moto's server mode models it (`moto[server]` from PyPI,
//! installed by scripts/test.sh). Each test starts its own moto server on a free loopback
//! port and kills it at the end, whatever happens; each queue holds a few hundred
//! messages at most (moto's FIFO queues slow down with their length). Final states are
//! compared with the in-order oracle.
//!
//! What moto does not model, and what these tests therefore do not show: signatures
//! (moto accepts any; `crates/ordo-sqs/tests/signature.rs` checks them against botocore),
//! quotas and throttling, and FIFO's promise across concurrent receives (moto checks a
//! group's in-flight state against a copy taken when a receive starts, so two receives
//! at once can split a group; real SQS never does, and ordo's version guard absorbs it
//! either way).

mod common;

use std::process::Stdio;
use std::sync::Once;
use std::time::{Duration, Instant};

use common::{export, ok, ordo, run, KilledOnDrop, Scratch};
use ordo_bench::sqs::Moto;
use ordo_core::Event;
use ordo_sim::scenarios::Scenario;
use ordo_sim::{compare, oracle, Rng};

/// Keys for moto (it checks none); the `ordo` children inherit them.
fn aws_environment() {
    static SET: Once = Once::new();
    SET.call_once(|| {
        std::env::set_var("AWS_ACCESS_KEY_ID", "ordo-test");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "ordo-test-secret");
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    });
}

/// One moto server of this test's own, killed when dropped.
fn moto() -> Moto {
    aws_environment();
    Moto::start().expect("python3 with moto[server] (scripts/test.sh installs it)")
}

fn run_until_idle(source: &str, store: &str) -> serde_json::Value {
    let output = common::run_idle(source, store, &["--json"]);
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn sqs_fifo_end_to_end_with_duplicates_matches_the_oracle() {
    let moto = moto();
    let queue = moto.queue("orders.fifo").unwrap();
    let seed = 101;
    let history = Scenario::Mixed.history(seed, 250);
    // The scenario's deliveries: duplicates, and each stream's events in the order its
    // producers sent them (versions out of order included).
    let deliveries = Scenario::Mixed.deliveries(seed, &history);
    moto.send_events(&queue, &deliveries, "").unwrap();
    let scratch = Scratch::new();
    let store = scratch.store("state.db");
    let counters = run_until_idle(&moto.source("orders.fifo", ""), &store);
    assert!(
        counters["duplicate"].as_u64().unwrap() > 0,
        "duplicates reached ordo: {counters}"
    );
    let divergence = compare(&oracle::run(&history), &export(&store), true);
    assert!(divergence.is_empty(), "seed {seed}:\n{divergence}");
    assert_eq!(
        moto.counts(&queue).unwrap(),
        (0, 0),
        "every message deleted"
    );
    // Nothing more to read: a second run applies nothing and changes nothing.
    let again = run_until_idle(&moto.source("orders.fifo", ""), &store);
    assert_eq!(again["applied"], counters["applied"], "{again}");
}

/// A standard queue gives no order at all: the version guard and the gap buffer put each
/// stream back in order.
#[test]
fn a_standard_queue_in_any_order_matches_the_oracle() {
    let moto = moto();
    let queue = moto.queue("ledger").unwrap();
    let seed = 103;
    let history = Scenario::Mixed.history(seed, 250);
    let mut deliveries = Scenario::Mixed.deliveries(seed, &history);
    let mut rng = Rng::derive(seed, "shuffle");
    for i in (1..deliveries.len()).rev() {
        deliveries.swap(i, rng.range(0, i as u64 + 1) as usize);
    }
    let messages: Vec<_> = deliveries
        .iter()
        .map(|e| (None, None, e.to_json_string()))
        .collect();
    moto.send_raw(&queue, &messages).unwrap();
    let scratch = Scratch::new();
    let store = scratch.store("state.db");
    run_until_idle(&moto.source("ledger", ""), &store);
    let divergence = compare(&oracle::run(&history), &export(&store), true);
    assert!(divergence.is_empty(), "seed {seed}:\n{divergence}");
    assert_eq!(moto.counts(&queue).unwrap(), (0, 0));
}

/// SIGKILL at random moments: what a killed process held comes back after its
/// visibility timeout (3 s here) and is absorbed; the state is the oracle's.
#[test]
fn sigkill_mid_run_then_restart_matches_the_oracle() {
    let moto = moto();
    let queue = moto.queue("kills.fifo").unwrap();
    let seed = 107;
    let history = Scenario::Mixed.history(seed, 300);
    let deliveries = Scenario::Mixed.deliveries(seed, &history);
    moto.send_events(&queue, &deliveries, "").unwrap();
    let scratch = Scratch::new();
    let store = scratch.store("state.db");
    let source = moto.source("kills.fifo", "&visibility_timeout_s=3");
    let mut rng = Rng::derive(seed, "kill");
    for _ in 0..3 {
        let child = ordo()
            .args([
                "run", "--source", &source, "--store", &store, "--batch", "16",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let child = KilledOnDrop(child);
        std::thread::sleep(Duration::from_millis(rng.range(300, 1500)));
        common::kill(&child.0);
    }
    let started = Instant::now();
    // Idle only once the killed processes' messages came back and were read.
    let output = common::run_idle(&source, &store, &["--json", "--idle-ms", "4000"]);
    eprintln!("recovered in {:?}", started.elapsed());
    let counters: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let divergence = compare(&oracle::run(&history), &export(&store), true);
    assert!(
        divergence.is_empty(),
        "seed {seed}: {counters}\n{divergence}"
    );
    assert_eq!(moto.counts(&queue).unwrap(), (0, 0));
}

/// A process stalled past the visibility timeout (SIGSTOP) loses its messages to the
/// queue, which gives them out again; the copies are duplicates to the engine, and the
/// state is the oracle's.
#[test]
fn a_redelivery_after_the_visibility_timeout_is_absorbed() {
    let moto = moto();
    let queue = moto.queue("stall.fifo").unwrap();
    let history: Vec<Event> = (1..=120u64)
        .map(|n| {
            let stream = format!("account-{}", n % 6);
            let version = (n - 1) / 6 + 1;
            ordo_core::parse_event(
                format!(
                    r#"{{"id":"e{n}","stream":"{stream}","version":{version},"type":"Deposited","op":"incr","data":{{"balance":{n}}}}}"#
                )
                .as_bytes(),
                ordo_core::OpPolicy::Document,
            )
            .unwrap()
        })
        .collect();
    // No duplicates sent: every duplicate counted is a redelivery.
    moto.send_events(&queue, &history, "").unwrap();
    let scratch = Scratch::new();
    let store = scratch.store("state.db");
    // Receives that wait 20 s: those out when the process stops are still waiting at the
    // server when the held messages' visibility ends, and take the copies.
    let stalling = moto.source("stall.fifo", "&visibility_timeout_s=3&wait_s=20");
    let source = moto.source("stall.fifo", "&visibility_timeout_s=3");
    // Nothing committed for 8 s: what was received stays held, then the process stops
    // for longer than the visibility timeout, so the keeper cannot extend it.
    let child = ordo()
        .args(["run", "--source", &stalling, "--store", &store])
        .args(["--commit-interval-ms", "8000", "--idle-ms", "60000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let child = KilledOnDrop(child);
    std::thread::sleep(Duration::from_millis(1_500));
    common::kill_with(&child.0, "-STOP");
    std::thread::sleep(Duration::from_millis(5_000));
    common::kill_with(&child.0, "-CONT");
    // The first commit (8 s after the first delivery) holds the copies received after
    // the stall as duplicates of what was held through it.
    let started = Instant::now();
    let duplicates = loop {
        let status = run(&["status", "--store", &store, "--json"]);
        if status.status.success() {
            let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
            let duplicates = status["counters"]["duplicate"].as_u64().unwrap_or(0);
            if duplicates > 0 {
                break duplicates;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no redelivery absorbed within 60 s"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    eprintln!("{duplicates} redelivered copies absorbed");
    // The rest at the usual commit interval (a FIFO group waits for its delete).
    common::kill_with(&child.0, "-TERM");
    drop(child);
    run_until_idle(&source, &store);
    let divergence = compare(&oracle::run(&history), &export(&store), true);
    assert!(divergence.is_empty(), "{divergence}");
    assert_eq!(moto.counts(&queue).unwrap(), (0, 0));
}

#[test]
fn a_malformed_message_is_dead_lettered_with_its_message_id_and_deleted() {
    let moto = moto();
    let queue = moto.queue("bad.fifo").unwrap();
    let good = |id: &str, version: u64| {
        format!(
            r#"{{"id":"{id}","stream":"sku-1","version":{version},"type":"Stocked","op":"set","data":{{"n":{version}}}}}"#
        )
    };
    let group = || Some("sku-1".to_string());
    moto.send_raw(
        &queue,
        &[
            (group(), Some("1".into()), good("a", 1)),
            (group(), Some("2".into()), "{not json".into()),
            (group(), Some("3".into()), good("b", 2)),
            // The group is another stream than the event's: refused like a Kafka key.
            (Some("sku-9".into()), Some("4".into()), good("c", 3)),
        ],
    )
    .unwrap();
    let scratch = Scratch::new();
    let store = scratch.store("state.db");
    let counters = run_until_idle(&moto.source("bad.fifo", ""), &store);
    assert_eq!(counters["dead_lettered"], 2, "{counters}");
    let entries = common::json_lines(&ok(&["dlq", "list", "--store", &store, "--json"]));
    assert_eq!(entries.len(), 2, "{entries:?}");
    let reasons: Vec<&str> = entries
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    // Two groups: SQS may give either first.
    assert!(reasons.iter().any(|r| r.contains("JSON")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("sku-9")), "{reasons:?}");
    for reason in &reasons {
        assert!(reason.contains("(SQS message "), "{reason}");
    }
    assert_eq!(export(&store)["sku-1"].version, 2, "the others go on");
    assert_eq!(
        moto.counts(&queue).unwrap(),
        (0, 0),
        "dead letters are deleted too"
    );
}

#[test]
fn a_missing_queue_or_region_is_a_clear_error() {
    let moto = moto();
    let scratch = Scratch::new();
    let store = scratch.store("state.db");
    let output = common::try_run_idle(&moto.source("no-such-queue.fifo", ""), &store, &[]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no-such-queue.fifo"), "{stderr}");
    assert!(
        stderr.contains("QueueDoesNotExist") || stderr.contains("NonExistentQueue"),
        "{stderr}"
    );
    let output = ordo()
        .args(["run", "--source", "sqs://q", "--store", &store])
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("no region"));
}

/// `ordo relay --to sqs://…`: the outbox goes out with the stream as the group and the
/// event id as the deduplication id; a relay that crashes between SQS's answer and the
/// mark sends the batch again, which the queue's deduplication drops, and ordo reading
/// the queue reaches the oracle. Needs the `fault-injection` feature (scripts/test.sh).
#[test]
#[cfg(feature = "fault-injection")]
fn the_relay_publishes_in_order_and_a_crash_is_absorbed_by_deduplication() {
    let moto = moto();
    let queue = moto.queue("outbox.fifo").unwrap();
    let scratch = Scratch::new();
    let app_store = scratch.store("app.db");
    let seed = 109;
    let history = Scenario::EventStore.history(seed, 200);
    {
        let path = scratch.path("app.db");
        let mut store = ordo_store::SqliteStore::open(path.to_str().unwrap(), true).unwrap();
        let rows: Vec<(String, String)> = history
            .iter()
            .map(|e| (e.stream.to_string(), e.to_json_string()))
            .collect();
        store.outbox_append(&rows).unwrap();
    }
    let to = moto.source("outbox.fifo", "");
    let relay = [
        "relay",
        "--store",
        &app_store,
        "--to",
        &to,
        "--exit-when-idle",
        "--batch",
        "50",
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
    assert_eq!(
        moto.counts(&queue).unwrap(),
        (history.len() as u64, 0),
        "the batch sent twice is queued once"
    );
    let store = scratch.store("state.db");
    let counters = run_until_idle(&moto.source("outbox.fifo", ""), &store);
    assert_eq!(counters["applied"].as_u64(), Some(history.len() as u64));
    assert_eq!(counters["duplicate"], 0, "{counters}");
    let divergence = compare(&oracle::run(&history), &export(&store), true);
    assert!(divergence.is_empty(), "seed {seed}:\n{divergence}");
}

/// Slots held, by member, in a PostgreSQL store's schema.
fn slots_by_member(schema: &str) -> std::collections::BTreeMap<String, i64> {
    common::postgres_admin()
        .query(
            &format!("SELECT member, COUNT(*) FROM {schema}.claims WHERE member <> '' GROUP BY 1"),
            &[],
        )
        .map(|rows| rows.iter().map(|row| (row.get(0), row.get(1))).collect())
        .unwrap_or_default() // the schema is created by the first member
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    started.elapsed()
}

/// Slots in the group test.
const GROUP_SLOTS: u32 = 4;

/// Two `ordo run` processes on one FIFO queue sharing PostgreSQL. SQS gives any group to
/// either; the store's document revisions and stream checks keep them from applying one
/// stream from the same starting point, and a stream waiting on a version the other
/// applied reads it from the store. One member is SIGKILLed mid-stream: its messages come
/// back after their visibility timeout, its slots (and the waiting events numbered in
/// them) go to the survivor, and the running group reaches the oracle on a workload whose
/// dependencies and merges cross groups.
#[test]
fn two_members_on_one_fifo_queue_survive_a_sigkill() {
    let moto = moto();
    let queue = moto.queue("members.fifo").unwrap();
    let seed = 113;
    let history = Scenario::Mixed.history(seed, 300);
    let deliveries = Scenario::Mixed.deliveries(seed, &history);
    let (first_part, second_part) = deliveries.split_at(deliveries.len() / 2);
    let (mut admin, schema, store) = common::postgres_schema("ordo_sqs_group");
    let source = moto.source(
        "members.fifo",
        &format!(
            "&slots={GROUP_SLOTS}&visibility_timeout_s={}",
            ordo_sqs::GROUP_VISIBILITY_TIMEOUT_S_MIN
        ),
    );
    let scratch = Scratch::new();
    let logs = std::env::var_os("ORDO_TEST_LOG_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| scratch.path(""));
    let spawn = |name: &str| {
        let log = logs.join(format!("{name}.log"));
        let child = ordo()
            .args([
                "run", "--source", &source, "--store", &store, "--batch", "16",
            ])
            .args(["--member-id", name])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        (KilledOnDrop(child), log)
    };
    let (first, _) = spawn("first");
    let (mut second, second_log) = spawn("second");
    wait_until("two slots each", Duration::from_secs(30), || {
        let slots = slots_by_member(&schema);
        slots.len() == 2 && slots.values().all(|&n| n == 2)
    });
    moto.send_events(&queue, first_part, "").unwrap();
    std::thread::sleep(Duration::from_millis(800));
    drop(first);
    moto.send_events(&queue, second_part, "").unwrap();
    let took = wait_until(
        "the survivor holds every slot",
        Duration::from_secs(30),
        || slots_by_member(&schema).get("second") == Some(&i64::from(GROUP_SLOTS)),
    );
    eprintln!("the killed member's slots taken over after {took:?}");
    let expected = oracle::run(&history);
    let took = common::until_converged(&expected, &store, Duration::from_secs(120), seed);
    eprintln!("converged {took:?} after the last send");
    common::kill_with(&second.0, "-TERM");
    let status = second.0.wait().unwrap();
    let text = std::fs::read_to_string(&second_log).unwrap();
    assert_eq!(status.code(), Some(0), "{text}");
    let divergence = compare(&expected, &export(&store), true);
    assert!(divergence.is_empty(), "seed {seed}:\n{divergence}");
    assert_eq!(
        moto.counts(&queue).unwrap(),
        (0, 0),
        "every message deleted"
    );
    admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .unwrap();
}
