//! ordo against a real Kafka-protocol broker (tansu, memory storage, on a free loopback
//! port, started per test and killed afterwards). Each final state is compared with the
//! in-order oracle.
//!
//! `scripts/test.sh` installs tansu (`cargo install tansu --version 0.6.0 --features
//! dynostore`) when it is not on PATH.

mod common;

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    export, json_lines, ok, ordo, postgres_admin, postgres_schema, run, run_idle, until_converged,
    Scratch,
};
use ordo_core::Event;
use ordo_sim::scenarios::Scenario;
use ordo_sim::workload::{deliver, random_history, Disorder, Shape};
use ordo_sim::{compare, oracle, Rng};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

/// Longest wait for the broker to listen.
const BROKER_START_MS: u64 = 15_000;

struct Broker {
    child: Child,
    port: u16,
}

impl Broker {
    fn start() -> Broker {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listener = format!("tcp://127.0.0.1:{port}");
        let child = Command::new("tansu")
            .args([
                "broker",
                "--listener-url",
                &listener,
                "--advertised-listener-url",
                &listener,
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu is on PATH (scripts/test.sh installs it: cargo install tansu --version 0.6.0 --features dynostore)");
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_millis(BROKER_START_MS),
                "tansu did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Broker { child, port }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn create_topic(&self, topic: &str, partitions: u32) {
        let status = Command::new("tansu")
            .args([
                "topic",
                "create",
                "--broker",
                &format!("tcp://{}", self.address()),
                "--partitions",
                &partitions.to_string(),
                topic,
            ])
            .stdout(Stdio::null())
            .status()
            .expect("tansu topic create");
        assert!(status.success());
    }

    fn source(&self, topic: &str, group: &str) -> String {
        format!(
            "kafka://{}/{topic}?group={group}&session.timeout.ms=6000",
            self.address()
        )
    }

    /// The source with ordo's own session timeout (no override).
    fn source_default_session(&self, topic: &str, group: &str) -> String {
        format!("kafka://{}/{topic}?group={group}", self.address())
    }

    fn producer(&self) -> BaseProducer {
        // One message per record batch: tansu 0.6 returns nothing for a fetch that starts
        // inside a batch (it resumes with the next batch produced), so a consumer resuming
        // at a stored offset mid-batch would skip the rest of that batch. Kafka returns
        // the batch and the client skips what it did not ask for; single-message batches
        // make every offset a batch start here.
        ClientConfig::new()
            .set("bootstrap.servers", self.address())
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("batch.num.messages", "1")
            .set("linger.ms", "0")
            .set("message.max.bytes", "3000000")
            .create()
            .expect("producer")
    }

    /// Produces events keyed by stream; `partition_of` pins a partition when given.
    fn produce(&self, topic: &str, events: &[Event], partition_of: Option<&dyn Fn(&str) -> i32>) {
        let producer = self.producer();
        for event in events {
            let body = event.to_json_string();
            let mut record = BaseRecord::to(topic).key(&*event.stream).payload(&body);
            if let Some(partition_of) = partition_of {
                record = record.partition(partition_of(&event.stream));
            }
            send(&producer, record);
        }
        producer.flush(Duration::from_secs(30)).expect("flush");
    }

    fn produce_raw(&self, topic: &str, messages: &[(Option<&str>, Vec<u8>)]) {
        let producer = self.producer();
        for (key, payload) in messages {
            let mut record: BaseRecord<'_, str, [u8]> =
                BaseRecord::to(topic).payload(payload.as_slice());
            if let Some(key) = key {
                record = record.key(*key);
            }
            send(&producer, record);
        }
        producer.flush(Duration::from_secs(30)).expect("flush");
    }
}

fn send<K: rdkafka::message::ToBytes + ?Sized, P: rdkafka::message::ToBytes + ?Sized>(
    producer: &BaseProducer,
    mut record: BaseRecord<'_, K, P>,
) {
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((_, returned)) => {
                record = returned;
                producer.poll(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hash_partition(stream: &str, partitions: u32) -> i32 {
    (ordo_core::id_hash(stream) % u64::from(partitions)) as i32
}

fn run_until_idle(source: &str, store: &str) -> serde_json::Value {
    let output = run_idle(source, store, &["--json", "--idle-ms", "1000"]);
    serde_json::from_slice(&output.stdout).expect("counters")
}

#[test]
fn kafka_end_to_end_matches_the_oracle() {
    let broker = Broker::start();
    broker.create_topic("events", 3);
    let seed = 31;
    let history = random_history(
        seed,
        Shape {
            streams: 40,
            events: 2000,
            ..Shape::default()
        },
    );
    let deliveries = deliver(seed, &history, Disorder::Window(20), 10);
    broker.produce("events", &deliveries, None);
    let scratch = Scratch::new();
    let store = scratch.store("state.db");
    let counters = run_until_idle(&broker.source("events", "g1"), &store);
    assert_eq!(
        counters["applied"].as_u64().unwrap() + counters["duplicate"].as_u64().unwrap(),
        deliveries.len() as u64
    );
    let divergence = compare(&oracle::run(&history), &export(&store), true);
    assert!(divergence.is_empty(), "seed {seed}:\n{divergence}");
    // A second run resumes at the stored offsets: nothing new.
    let again = run_until_idle(&broker.source("events", "g1"), &store);
    assert_eq!(again["applied"], counters["applied"]);
}

#[test]
fn malformed_messages_become_dead_letters_with_partition_offset_and_reason() {
    let broker = Broker::start();
    broker.create_topic("bad", 1);
    let good = r#"{"id":"a1","stream":"a","version":1,"type":"T","op":"set","data":{"ok":true}}"#;
    let wrong_key = r#"{"id":"b1","stream":"b","version":1,"type":"T","op":"set","data":{}}"#;
    let huge = format!(
        r#"{{"id":"c1","stream":"c","version":1,"type":"T","op":"set","data":{{"x":"{}"}}}}"#,
        "x".repeat(1_100_000)
    );
    broker.produce_raw(
        "bad",
        &[
            (Some("z"), b"{not json".to_vec()),
            (Some("b"), Vec::new()),
            (Some("not-b"), wrong_key.as_bytes().to_vec()),
            (Some("c"), huge.into_bytes()),
            (Some("a"), good.as_bytes().to_vec()),
        ],
    );
    let scratch = Scratch::new();
    let store = scratch.store("state.db");
    run_until_idle(&broker.source("bad", "g"), &store);
    let entries = json_lines(&ok(&["dlq", "list", "--store", &store, "--json"]));
    let reasons: Vec<&str> = entries
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert_eq!(entries.len(), 4, "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("invalid JSON")));
    assert!(reasons.iter().any(|r| r.contains("empty message")));
    assert!(reasons
        .iter()
        .any(|r| r.contains("message key `not-b` is not the event's stream `b`")));
    assert!(reasons
        .iter()
        .any(|r| r.contains("over the 1048576-byte limit")));
    for entry in &entries {
        assert_eq!(entry["partition"], 0);
        assert!(entry["offset"].is_u64());
    }
    assert_eq!(
        export(&store)["a"].doc,
        Some(serde_json::json!({"ok": true})),
        "good messages are not blocked"
    );
}

#[test]
fn sigkill_mid_run_then_restart_matches_the_oracle() {
    let broker = Broker::start();
    broker.create_topic("events", 3);
    let seed = 41;
    let history = Scenario::Mixed.history(seed, 6000);
    let deliveries = Scenario::Mixed.deliveries(seed, &history);
    broker.produce("events", &deliveries, None);
    let scratch = Scratch::new();
    let store = scratch.store("state.db");
    let source = broker.source("events", "g");
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
        std::thread::sleep(Duration::from_millis(rng.range(1500, 3500)));
        let _ = Command::new("kill")
            .args(["-KILL", &child.id().to_string()])
            .status();
        let _ = child.wait();
    }
    run_until_idle(&source, &store);
    let divergence = compare(&oracle::run(&history), &export(&store), true);
    assert!(divergence.is_empty(), "seed {seed}:\n{divergence}");
}

#[test]
fn keys_moving_between_partitions_mid_stream_converge() {
    // tansu 0.6 cannot add partitions, so the repartition is staged as a consumer sees
    // it: six partitions, the first part keyed onto three of them, the rest onto six.
    let broker = Broker::start();
    broker.create_topic("moving", 6);
    let seed = 51;
    let history = random_history(
        seed,
        Shape {
            streams: 40,
            events: 2000,
            ..Shape::default()
        },
    );
    let deliveries = deliver(seed, &history, Disorder::Window(5), 5);
    let (first, rest) = deliveries.split_at(deliveries.len() / 2);
    broker.produce("moving", first, Some(&|s| hash_partition(s, 3)));
    broker.produce("moving", rest, Some(&|s| hash_partition(s, 6)));
    let moved = first
        .iter()
        .filter(|e| hash_partition(&e.stream, 3) != hash_partition(&e.stream, 6))
        .count();
    assert!(moved > 0, "some keys must move");
    let scratch = Scratch::new();
    let store = scratch.store("state.db");
    let counters = run_until_idle(&broker.source("moving", "g"), &store);
    assert!(
        counters["buffered"].as_u64().unwrap() > 0,
        "moved keys arrive out of order somewhere"
    );
    let divergence = compare(&oracle::run(&history), &export(&store), true);
    assert!(divergence.is_empty(), "seed {seed}:\n{divergence}");
}

#[test]
fn a_consumer_group_with_a_member_added_and_one_stopped_matches_the_oracle() {
    let broker = Broker::start();
    broker.create_topic("group", 4);
    let seed = 61;
    // Streams that do not depend on each other: cross-partition dependencies and merges
    // between members need the shared-store coordination of the PostgreSQL store.
    let history = Scenario::Bank.history(seed, 9_000);
    let deliveries = Scenario::Bank.deliveries(seed, &history);
    let thirds: Vec<&[Event]> = deliveries.chunks(deliveries.len().div_ceil(3)).collect();
    let scratch = Scratch::new();
    let store = scratch.store("state.db");
    let consumed = || sqlite_consumed(&scratch.path("state.db"));
    let source = broker.source("group", "shared");
    let spawn = |name: &str| {
        let log = scratch.path(name);
        let child = ordo()
            .args([
                "run", "--source", &source, "--store", &store, "--batch", "16",
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        (child, log)
    };
    let assigned = |log: &std::path::Path| {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains("partitions assigned")
    };
    // Traffic arrives while the group changes: a first member alone, a second joining
    // (rebalance), the first leaving (rebalance), the second alone. Each step waits for
    // what it needs (the store's checkpoints, the member's own "partitions assigned"),
    // never for a fixed time.
    broker.produce("group", thirds[0], None);
    let first = spawn("first.log");
    wait_until(
        "the first member read the first third",
        GROUP_STEP_MS,
        || consumed() >= thirds[0].len() as i64,
    );
    let second = spawn("second.log");
    wait_until("the second member joined the group", GROUP_STEP_MS, || {
        assigned(&second.1)
    });
    broker.produce("group", thirds[1], None);
    let two_thirds = (thirds[0].len() + thirds[1].len()) as i64;
    wait_until(
        "the two members read the second third",
        GROUP_STEP_MS,
        || consumed() >= two_thirds,
    );
    let first_out = stop_logged(first);
    broker.produce("group", thirds[2], None);
    wait_until(
        "the second member, alone, read the rest",
        GROUP_STEP_MS,
        || consumed() >= deliveries.len() as i64,
    );
    let second_out = stop_logged(second);
    let (first_count, second_count) = (delivered_in(&first_out), delivered_in(&second_out));
    assert!(
        first_count > 0 && second_count > 0,
        "each member consumed while it was alone: {first_count}, {second_count}"
    );
    // The sweep must find nothing left: the members had read and committed everything.
    let sweep = run_idle(&source, &store, &["--idle-ms", "1000"]);
    assert_eq!(
        delivered_in(&sweep.stderr),
        0,
        "the members left nothing unread or uncommitted"
    );
    let divergence = compare(&oracle::run(&history), &export(&store), true);
    assert!(divergence.is_empty(), "seed {seed}:\n{divergence}");
}

/// Longest wait for one step of a group test (a join, a rebalance, reading a third).
const GROUP_STEP_MS: u64 = 60_000;

/// Partitions of the three-member test's topic.
const SCALE_PARTITIONS: u32 = 6;

/// Polls `done` every 200 ms for at most `limit_ms`; whether it came true.
fn bounded_wait(limit_ms: u64, mut done: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    loop {
        if done() {
            return true;
        }
        if started.elapsed() >= Duration::from_millis(limit_ms) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits for `done` at most `limit_ms`, failing the test with `what` otherwise.
fn wait_until(what: &str, limit_ms: u64, done: impl FnMut() -> bool) {
    assert!(
        bounded_wait(limit_ms, done),
        "{what}: not within {limit_ms} ms"
    );
}

/// Stops a member with SIGTERM, asserting a clean exit; its output.
fn stop(member: Child) -> std::process::Output {
    let _ = Command::new("kill")
        .args(["-TERM", &member.id().to_string()])
        .status();
    let output = member.wait_with_output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Stops a member whose stderr goes to a file with SIGTERM, asserting a clean exit; what
/// it printed.
fn stop_logged((mut member, log): (Child, std::path::PathBuf)) -> Vec<u8> {
    let _ = Command::new("kill")
        .args(["-TERM", &member.id().to_string()])
        .status();
    let status = member.wait().unwrap();
    let printed = std::fs::read(&log).unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&printed)
    );
    printed
}

/// How many offsets a SQLite store's checkpoints cover, read beside a running member.
fn sqlite_consumed(path: &std::path::Path) -> i64 {
    let Ok(db) =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return 0; // not created yet
    };
    db.query_row(
        "SELECT COALESCE(SUM(\"offset\" + 1), 0) FROM checkpoints",
        [],
        |row| row.get(0),
    )
    .unwrap_or(0)
}

/// How many partitions each process (by pid) holds in a PostgreSQL store's claims.
fn claims_by_member(schema: &str) -> std::collections::HashMap<u32, i64> {
    postgres_admin()
        .query(
            &format!(
                "SELECT split_part(member, '-', 1)::BIGINT, COUNT(*) FROM {schema}.claims GROUP BY 1"
            ),
            &[],
        )
        .map(|rows| {
            rows.iter()
                .map(|row| (row.get::<_, i64>(0) as u32, row.get::<_, i64>(1)))
                .collect()
        })
        .unwrap_or_default() // the schema is created by the first member
}

/// How many offsets a PostgreSQL store's checkpoints cover (offsets start at 0).
fn admin_consumed(schema: &str) -> i64 {
    postgres_admin()
        .query_one(
            &format!("SELECT COALESCE(SUM(\"offset\" + 1), 0)::BIGINT FROM {schema}.checkpoints"),
            &[],
        )
        .map_or(0, |row| row.get(0)) // the schema is created by the first member
}

/// The delivery count a finished `ordo run` printed.
fn delivered_in(stderr: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(stderr);
    text.split(" delivered in this run")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no delivery count in: {text}"))
}

/// Three processes in one group sharing PostgreSQL, the one holding the most partitions
/// SIGKILLed mid-stream, a replacement started as a supervisor would. What it proves, and
/// all it asserts: the killed member's partitions are taken over by live members, the
/// group reads every offset produced, and the running group (no final sweep by a single
/// process) reaches the oracle; every member then stops cleanly, or, if the broker handed
/// one partition to two members, is fenced. How many events each member got is the
/// broker's assignment, not ordo's behaviour, and is only printed. (That a zombie writes
/// nothing once fenced is proven where it can be made to happen on purpose: the store's
/// `a_zombie_member_is_fenced` and the group simulation.)
///
/// It failed about half the time until the group simulation (`ordo_sim::group`, seed 57)
/// found why: works a rebuild released were not committed. Later it failed on the
/// broker's assignment alone (a spare member given only partitions already read), which
/// it no longer asserts on.
#[test]
fn three_members_sharing_postgres_survive_a_sigkill_and_rebalances() {
    let broker = Broker::start();
    broker.create_topic("scale", SCALE_PARTITIONS);
    let seed = 67;
    // Dependencies (products after categories) and merges (purchases of merged customers)
    // that cross partitions, so members wait for and redirect into each other's streams.
    let history = Scenario::Mixed.history(seed, 6_000);
    let deliveries = Scenario::Mixed.deliveries(seed, &history);
    let thirds: Vec<&[Event]> = deliveries.chunks(deliveries.len().div_ceil(3)).collect();
    let (mut admin, schema, store) = postgres_schema("ordo_group");
    // A short rebalance timeout too: a killed member never rejoins, and the group must
    // not wait the default five minutes for it.
    let source = format!(
        "{}&max.poll.interval.ms=10000",
        broker.source("scale", "members")
    );
    // Each member's stderr goes to a file (ORDO_TEST_LOG_DIR keeps them for a look).
    let scratch = Scratch::new();
    let logs = std::env::var_os("ORDO_TEST_LOG_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| scratch.path(""));
    let spawned = std::cell::Cell::new(0);
    let spawn = || {
        let log = logs.join(format!("member-{}.log", spawned.get()));
        spawned.set(spawned.get() + 1);
        let child = ordo()
            .args([
                "run", "--source", &source, "--store", &store, "--batch", "16",
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        (child, log)
    };
    let consumed = || admin_consumed(&schema);
    broker.produce("scale", thirds[0], None);
    let mut members = vec![spawn(), spawn(), spawn()];
    wait_until(
        "every partition claimed and the first third read",
        GROUP_STEP_MS,
        || {
            claims_by_member(&schema).values().sum::<i64>() == i64::from(SCALE_PARTITIONS)
                && consumed() >= thirds[0].len() as i64
        },
    );
    broker.produce("scale", thirds[1], None);
    wait_until("the group reading the second third", GROUP_STEP_MS, || {
        consumed() > thirds[0].len() as i64
    });
    // Killed mid-stream: its uncommitted batch is read again by whoever takes its
    // partitions once the group notices (session timeout, then a rebalance). The member
    // that holds the most partitions now is the one whose death matters most.
    let claims = claims_by_member(&schema);
    let held = |i: usize| claims.get(&members[i].0.id()).copied().unwrap_or(0);
    let victim = (0..members.len()).max_by_key(|&i| held(i)).unwrap();
    assert!(held(victim) > 0, "a member holds a claim: {claims:?}");
    let (mut killed, _) = members.remove(victim);
    let killed_pid = killed.id();
    let _ = Command::new("kill")
        .args(["-KILL", &killed_pid.to_string()])
        .status();
    let _ = killed.wait();
    let killed_at = Instant::now();
    // A supervisor starts a replacement; the group rebalances and the dead member's
    // partitions are claimed by live members (the claims table says so). tansu 0.6 keeps
    // a dead member until a live member's heartbeat finds it past its session timeout
    // (6 s here), and may hand it partitions until then; a join that hangs gets one more
    // member after 25 s.
    members.push(spawn());
    let taken_over = |limit_ms: u64| {
        bounded_wait(limit_ms, || {
            !claims_by_member(&schema).contains_key(&killed_pid)
        })
    };
    if !taken_over(25_000) {
        members.push(spawn());
        assert!(
            taken_over(35_000),
            "the killed member's partitions were not taken over within 60 s"
        );
    }
    eprintln!(
        "partitions of the killed member taken over after {:?}",
        killed_at.elapsed()
    );
    broker.produce("scale", thirds[2], None);
    // The group must read everything produced (the sum of the stored checkpoints says how
    // far it got). A partition the broker handed to the dead member before expiring it is
    // unread until the next rebalance; one more member (a rebalance) is started after
    // 20 s without it, at most three times, then this fails: a partition nobody reads.
    let all = deliveries.len() as i64;
    for _ in 0..3 {
        if bounded_wait(20_000, || consumed() >= all) {
            break;
        }
        eprintln!(
            "a partition is not being read (tansu handed it to the dead member): one more member"
        );
        members.push(spawn());
    }
    assert!(
        bounded_wait(20_000, || consumed() >= all),
        "the group read {} of {all} offsets: a partition nobody reads",
        consumed()
    );
    // No last sweep by a single process: the live members themselves must converge
    // (releasing each other's parked events, redirecting into each other's merges)
    // while they run. Wait until the store matches the oracle, or give up after 120 s.
    let expected = oracle::run(&history);
    let took = until_converged(&expected, &store, Duration::from_secs(120), seed);
    eprintln!("the running group converged {took:?} after the last events were produced");
    let mut conflicts = 0;
    let mut counts = Vec::new();
    for (mut member, log) in members {
        let _ = Command::new("kill")
            .args(["-TERM", &member.id().to_string()])
            .status();
        let status = member.wait().unwrap();
        let stderr = std::fs::read(&log).unwrap();
        let text = String::from_utf8_lossy(&stderr);
        // A member the broker double-assigned is fenced: it wrote nothing and says so.
        if status.code() == Some(1) && text.contains("fenced: partition") {
            continue;
        }
        assert_eq!(status.code(), Some(0), "{text}");
        conflicts += text.matches("commit conflict").count();
        counts.push(delivered_in(&stderr));
    }
    // Assignment is the broker's: a spare member may legitimately get nothing to read.
    eprintln!("live members delivered {counts:?}, {conflicts} commit conflicts resolved");
    // Stopping commits nothing that changes the result.
    let divergence = compare(&expected, &export(&store), true);
    assert!(divergence.is_empty(), "seed {seed}:\n{divergence}");
    admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .unwrap();
}

/// Needs a binary built with the `fault-injection` feature (scripts/test.sh builds it so).
#[test]
#[cfg(feature = "fault-injection")]
fn a_relay_crash_between_publish_and_mark_is_absorbed_by_the_consumer() {
    let broker = Broker::start();
    broker.create_topic("outbox", 3);
    let scratch = Scratch::new();
    let app_store = scratch.store("app.db");
    let seed = 71;
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
    let to = format!("kafka://{}/outbox", broker.address());
    let crashed = ordo()
        .args([
            "relay",
            "--store",
            &app_store,
            "--to",
            &to,
            "--exit-when-idle",
            "--batch",
            "100",
        ])
        .env("ORDO_RELAY_CRASH_AFTER_BATCHES", "2")
        .output()
        .unwrap();
    assert_eq!(
        crashed.status.code(),
        Some(137),
        "the relay crashed on purpose"
    );
    ok(&[
        "relay",
        "--store",
        &app_store,
        "--to",
        &to,
        "--exit-when-idle",
        "--batch",
        "100",
    ]);
    let store = scratch.store("state.db");
    let counters = run_until_idle(&broker.source("outbox", "g"), &store);
    assert_eq!(
        counters["duplicate"].as_u64(),
        Some(100),
        "the batch published but not marked went out twice"
    );
    assert_eq!(counters["applied"].as_u64(), Some(history.len() as u64));
    let divergence = compare(&oracle::run(&history), &export(&store), true);
    assert!(divergence.is_empty(), "seed {seed}:\n{divergence}");
}

#[test]
fn an_unreachable_broker_is_a_clear_error_not_a_hang() {
    let scratch = Scratch::new();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = run(&[
        "run",
        "--source",
        &format!("kafka://127.0.0.1:{port}/t?group=g"),
        "--store",
        &scratch.store("s.db"),
        "--exit-when-idle",
    ]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no answer from"), "{stderr}");
}

#[test]
fn a_dead_letter_skipped_by_an_operator_unblocks_a_running_member() {
    let broker = Broker::start();
    broker.create_topic("ops", 1);
    let (mut admin, schema, store) = postgres_schema("ordo_ops");
    let line = |version: u64, data: &str| {
        let op = if version == 1 { "set" } else { "incr" };
        format!(
            r#"{{"id":"s{version}","stream":"s","version":{version},"type":"T","op":"{op}","data":{data}}}"#
        )
        .into_bytes()
    };
    // Version 2 is poison: the projection refuses it and `s` waits behind it.
    broker.produce_raw(
        "ops",
        &[
            (Some("s"), line(1, r#"{"n":1}"#)),
            (Some("s"), line(2, r#"{"n":"text"}"#)),
            (Some("s"), line(3, r#"{"n":1}"#)),
        ],
    );
    let source = broker.source("ops", "ops");
    let scratch = Scratch::new();
    let log = scratch.path("member.log");
    let mut member = ordo()
        .args(["run", "--source", &source, "--store", &store])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let started = Instant::now();
        while !done() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{what} within 30 s; member log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    // Read-only: until the member has created the store, there is none to list.
    let entries = || {
        let listed = run(&["dlq", "list", "--store", &store, "--json"]);
        if listed.status.success() {
            json_lines(&listed)
        } else {
            Vec::new()
        }
    };
    wait_for("the poison event dead-lettered", &|| entries().len() == 1);
    let id = entries()[0]["id"].to_string();
    ok(&[
        "dlq",
        "skip",
        "--store",
        &store,
        "--id",
        &id,
        "--reason",
        "poison amount",
    ]);
    let recorded = admin
        .query_one(
            &format!("SELECT verb, reason, state FROM {schema}.operator_actions"),
            &[],
        )
        .unwrap();
    assert_eq!(
        (
            recorded.get::<_, String>(0),
            recorded.get::<_, String>(1),
            recorded.get::<_, String>(2)
        ),
        ("dlq skip".into(), "poison amount".into(), "done".into())
    );
    // The journal has it, and the dead letter before it.
    let journal = json_lines(&ok(&["notices", "--store", &store, "--json"]));
    let kinds: Vec<&str> = journal
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["dead-lettered", "operator"], "{journal:?}");
    assert_eq!(journal[1]["detail"]["reason"], "poison amount");
    // The operator's process applied version 3; version 4 goes to the running member,
    // which must notice that the dead letter it waited behind is gone.
    broker.produce_raw("ops", &[(Some("s"), line(4, r#"{"n":1}"#))]);
    wait_for("version 4 applied by the running member", &|| {
        export(&store).get("s").is_some_and(|row| row.version == 4)
    });
    assert_eq!(export(&store)["s"].doc, Some(serde_json::json!({"n": 3})));
    let _ = Command::new("kill")
        .args(["-TERM", &member.id().to_string()])
        .status();
    assert_eq!(member.wait().unwrap().code(), Some(0));
    admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .unwrap();
}

/// `--handler` with a Kafka source and a PostgreSQL store: the HTTP service's state and
/// ordo's positions both reach the oracle, with no order or exclusivity breach.
#[test]
fn an_http_handler_behind_kafka_and_postgres_matches_the_oracle() {
    use common::service::{Behaviour, Service};
    let broker = Broker::start();
    broker.create_topic("handled", 3);
    let seed = 73;
    let history = Scenario::Mixed.history(seed, 2_000);
    let deliveries = Scenario::Mixed.deliveries(seed, &history);
    broker.produce("handled", &deliveries, None);
    let (mut admin, schema, store) = postgres_schema("ordo_handler");
    let service = Service::start(Behaviour {
        seed,
        unavailable_per_mille: 50,
        slow_ms_max: 3,
        ..Behaviour::default()
    });
    let source = broker.source("handled", "handled");
    let url = service.url();
    run_idle(
        &source,
        &store,
        &[
            "--idle-ms",
            "1000",
            "--handler",
            &url,
            "--concurrency",
            "16",
            "--handler-backoff-ms",
            "5",
        ],
    );
    let state = service.state.lock().unwrap();
    assert!(state.breaches.is_empty(), "{:?}", &state.breaches);
    assert!(state.peak > 1, "calls overlapped across streams");
    let expected = oracle::run(&history);
    let divergence = compare(&expected, &state.export(), true);
    assert!(divergence.is_empty(), "seed {seed}:\n{divergence}");
    let positions = export(&store);
    for (stream, row) in &expected {
        let version = positions.get(stream).map_or(0, |r| r.version);
        assert_eq!(version, row.version, "seed {seed}: `{stream}`");
    }
    admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .unwrap();
}

/// Two members with a slow handler (calls up to 150 ms) sharing PostgreSQL, one stopped
/// with SIGTERM while its calls are out: the other takes its partitions over and the
/// service reaches the oracle with no order breach. What this cannot show: that the
/// stopping member's calls end before the next owner sends (tansu's rebalance takes
/// seconds, longer than any call here; with `STOP_GRACE_MS` set to 0 it still passes).
/// That rule is the consumer's `settle_handlers` before every rebuild and stop.
#[test]
fn a_handler_group_member_stopped_mid_call_hands_over_and_the_service_reaches_the_oracle() {
    use common::service::{Behaviour, Service};
    let broker = Broker::start();
    broker.create_topic("handled-group", 4);
    let seed = 79;
    // Streams that do not wait for each other: a late event redirected into another
    // member's merge target could run beside that member's own call (docs/design.md).
    let history = Scenario::Bank.history(seed, 1_200);
    let deliveries = Scenario::Bank.deliveries(seed, &history);
    let halves: Vec<&[Event]> = deliveries.chunks(deliveries.len().div_ceil(2)).collect();
    let (mut admin, schema, store) = postgres_schema("ordo_handler_group");
    let service = Service::start(Behaviour {
        seed,
        slow_ms_max: 150,
        ..Behaviour::default()
    });
    let source = broker.source("handled-group", "members");
    let url = service.url();
    let spawn = || {
        ordo()
            .args([
                "run",
                "--source",
                &source,
                "--store",
                &store,
                "--handler",
                &url,
                "--batch",
                "16",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let consumed = || admin_consumed(&schema);
    broker.produce("handled-group", halves[0], None);
    let first = spawn();
    let second = spawn();
    wait_until("both members reading", GROUP_STEP_MS, || {
        claims_by_member(&schema).len() == 2 && consumed() > 0
    });
    broker.produce("handled-group", halves[1], None);
    wait_until("calls out at the service", GROUP_STEP_MS, || {
        service.state.lock().unwrap().running > 0
    });
    let first_out = stop(first);
    wait_until("the second member read the rest", GROUP_STEP_MS, || {
        consumed() >= deliveries.len() as i64
    });
    let second_out = stop(second);
    eprintln!(
        "members delivered {} and {}",
        delivered_in(&first_out.stderr),
        delivered_in(&second_out.stderr)
    );
    let state = service.state.lock().unwrap();
    assert!(state.breaches.is_empty(), "{:?}", &state.breaches);
    let divergence = compare(&oracle::run(&history), &state.export(), true);
    assert!(divergence.is_empty(), "seed {seed}:\n{divergence}");
    admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .unwrap();
}

/// Lag per partition from a live Kafka member's `/metrics`: a handler that never answers
/// for one stream holds its partition's position back (lag > 0 there, and growing in
/// seconds) while the other partition is caught up (lag 0). Then the outbox relay's own
/// metrics while it publishes.
#[test]
fn kafka_lag_per_partition_and_relay_metrics_are_served() {
    use common::scrape::{get, scrape_until, start};
    use common::service::{Behaviour, Service};
    let broker = Broker::start();
    broker.create_topic("lagged", 2);
    let mut events = Vec::new();
    for version in 1..=5u64 {
        for s in 0..20 {
            let line = format!(
                r#"{{"id":"s{s}-{version}","stream":"s-{s}","version":{version},"type":"T","op":"incr","data":{{"n":1}}}}"#
            );
            events.push(
                ordo_core::parse_event(line.as_bytes(), ordo_core::OpPolicy::Custom).unwrap(),
            );
        }
    }
    broker.produce("lagged", &events, Some(&|s: &str| hash_partition(s, 2)));
    let stuck = hash_partition("s-3", 2);
    let free = 1 - stuck;
    let service = Service::start(Behaviour {
        silent_streams: vec!["s-3".into()],
        ..Behaviour::default()
    });
    let scratch = Scratch::new();
    let store = scratch.store("state.db");
    let source = broker.source("lagged", "lagged");
    let handler = service.url();
    let member = start(&[
        "run",
        "--source",
        &source,
        "--store",
        &store,
        "--handler",
        &handler,
        "--handler-timeout-ms",
        "600000",
    ]);
    // librdkafka reports watermarks every 5 s: wait for two reports at most.
    let lag_of = |p: i32| format!("ordo_source_lag_events{{partition=\"{p}\"}}");
    let metrics = scrape_until(&member.address, 30, |m| {
        m.get(&lag_of(stuck)).is_some_and(|l| *l > 0.0) && m.get(&lag_of(free)) == Some(&0.0)
    });
    let on_stuck = events
        .iter()
        .filter(|e| hash_partition(&e.stream, 2) == stuck)
        .count() as f64;
    assert!(metrics[&lag_of(stuck)] < on_stuck, "{metrics:?}");
    let seconds = scrape_until(&member.address, 10, |m| {
        m[&format!("ordo_source_lag_seconds{{partition=\"{stuck}\"}}")] >= 1.0
    });
    assert_eq!(
        seconds[&format!("ordo_source_lag_seconds{{partition=\"{free}\"}}")],
        0.0
    );
    assert_eq!(get(&member.address, "/readyz").0, 200, "assigned: ready");
    drop(member);

    // The relay: an outbox of 30 events, published while scraped.
    broker.create_topic("relayed", 1);
    let app = scratch.path("app.db");
    {
        let mut store = ordo_store::SqliteStore::open(app.to_str().unwrap(), true).unwrap();
        let rows: Vec<(String, String)> = events[..30]
            .iter()
            .map(|e| (e.stream.to_string(), e.to_json_string()))
            .collect();
        store.outbox_append(&rows).unwrap();
    }
    let app_store = format!("sqlite:{}", app.display());
    let to = format!("kafka://{}/relayed", broker.address());
    let relay = start(&["relay", "--store", &app_store, "--to", &to, "--batch", "10"]);
    let metrics = scrape_until(&relay.address, 30, |m| {
        m.get("ordo_relay_published_total") == Some(&30.0)
    });
    assert_eq!(metrics["ordo_relay_batches_total"], 3.0);
    assert_eq!(metrics["ordo_relay_outbox_backlog"], 0.0);
    assert!(metrics["ordo_relay_last_publish_timestamp_seconds"] > 1.7e9);
    assert_eq!(get(&relay.address, "/healthz").0, 200);
}

/// `ordo status --source kafka://…` measures each recorded position's lag against the
/// broker's high watermarks, from the store alone (no running consumer).
#[test]
fn status_with_a_kafka_source_shows_lag_per_partition() {
    let broker = Broker::start();
    broker.create_topic("statused", 2);
    let seed = 79;
    let history = Scenario::Bank.history(seed, 300);
    broker.produce("statused", &history, None);
    let scratch = Scratch::new();
    let store = scratch.store("state.db");
    let source = broker.source("statused", "s");
    run_until_idle(&source, &store);
    let lag = |store: &str| -> Vec<u64> {
        let output = ok(&["status", "--store", store, "--source", &source, "--json"]);
        let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        status["positions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["lag_events"].as_u64().expect("lag measured"))
            .collect()
    };
    assert_eq!(lag(&store), [0, 0]);
    // More events, not consumed: the lag is theirs.
    let more = Scenario::Bank.history(seed + 1, 40);
    broker.produce("statused", &more, None);
    assert_eq!(lag(&store).iter().sum::<u64>(), more.len() as u64);
    let output = ok(&["status", "--store", &store, "--source", &source]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("lag "), "{text}");
}

/// `ordo pause --partition` against a running member on Kafka and PostgreSQL: the paused
/// partition is not read (its events stay in the broker) while the other goes on;
/// resumed, reading goes on from where it stopped and nothing is skipped or applied twice.
#[test]
fn a_paused_kafka_partition_is_not_read_until_resumed() {
    let broker = Broker::start();
    broker.create_topic("paused", 2);
    let (mut admin, schema, store) = postgres_schema("ordo_kafka_pause");
    let line = |stream: &str, version: u64| {
        let op = if version == 1 { "set" } else { "incr" };
        format!(
            r#"{{"id":"{stream}-{version}","stream":"{stream}","version":{version},"type":"T","op":"{op}","data":{{"n":1}}}}"#
        )
        .into_bytes()
    };
    let produce = |version: u64| {
        let producer = broker.producer();
        for (stream, partition) in [("a", 0), ("b", 1)] {
            let body = line(stream, version);
            let record: BaseRecord<'_, str, [u8]> = BaseRecord::to("paused")
                .key(stream)
                .payload(body.as_slice())
                .partition(partition);
            send(&producer, record);
        }
        producer.flush(Duration::from_secs(30)).expect("flush");
    };
    produce(1);
    let source = broker.source("paused", "paused");
    let mut member = common::run_in_background(&source, &store);
    let version = |stream: &str| common::applied_version(&store, stream);
    wait_until("both streams at version 1", 30_000, || {
        version("a") == 1 && version("b") == 1
    });
    ok(&[
        "pause",
        "--store",
        &store,
        "--partition",
        "0",
        "--reason",
        "reprocessing a's upstream",
    ]);
    // The member takes the pause up at its next recheck (within a second).
    std::thread::sleep(Duration::from_millis(2_000));
    produce(2);
    produce(3);
    wait_until("b, on partition 1, goes on", 30_000, || version("b") == 3);
    std::thread::sleep(Duration::from_millis(1_000));
    assert_eq!(version("a"), 1, "partition 0 is not read while paused");
    ok(&[
        "resume",
        "--store",
        &store,
        "--partition",
        "0",
        "--reason",
        "upstream fixed",
    ]);
    wait_until("a, on partition 0, catches up", 30_000, || {
        version("a") == 3
    });
    let rows = export(&store);
    assert_eq!(rows["a"].doc, Some(serde_json::json!({"n": 3})));
    assert_eq!(rows["b"].doc, Some(serde_json::json!({"n": 3})));
    let counters: serde_json::Value =
        serde_json::from_slice(&ok(&["status", "--store", &store, "--json"]).stdout).unwrap();
    assert_eq!(counters["counters"]["duplicate"], 0, "{counters}");
    common::kill_with(&member.0, "-TERM");
    assert_eq!(member.0.wait().unwrap().code(), Some(0));
    admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .unwrap();
}

/// A member SIGKILLed and restarted goes on within seconds with the default settings:
/// the broker expires the dead session after `session.timeout.ms` (6 s by default).
/// (`--member-id`, static membership, is not tried here: tansu 0.6 does not support it,
/// and a restarted static member got nothing for over 60 s; see README.)
#[test]
fn a_killed_member_restarted_goes_on_within_seconds() {
    let broker = Broker::start();
    broker.create_topic("restart", 2);
    let (mut admin, schema, store) = postgres_schema("ordo_kafka_restart");
    let produce_round = |round: u64| {
        let lines: Vec<(Option<&str>, Vec<u8>)> = ["a", "b", "c", "d"]
            .iter()
            .map(|stream| {
                let op = if round == 1 { "set" } else { "incr" };
                (
                    Some(*stream),
                    format!(
                        r#"{{"id":"{stream}-{round}","stream":"{stream}","version":{round},"type":"T","op":"{op}","data":{{"n":1}}}}"#
                    )
                    .into_bytes(),
                )
            })
            .collect();
        broker.produce_raw("restart", &lines);
    };
    let source = broker.source_default_session("restart", "restart");
    let applied = |version: u64| {
        run(&["export", "--store", &store]).status.success()
            && ["a", "b", "c", "d"]
                .iter()
                .all(|s| export(&store).get(*s).is_some_and(|r| r.version == version))
    };
    // Guarded: a failed wait must not leave a member running.
    let start = || common::run_in_background(&source, &store);
    produce_round(1);
    let mut member = start();
    wait_until("the first member applies", 60_000, || applied(1));
    common::kill(&member.0);
    let _ = member.0.wait();
    produce_round(2);
    let restarted = Instant::now();
    let mut member = start();
    wait_until("the restarted member goes on", 60_000, || applied(2));
    let took = restarted.elapsed();
    eprintln!("restart after SIGKILL: {took:?}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    common::kill_with(&member.0, "-TERM");
    assert_eq!(member.0.wait().unwrap().code(), Some(0));
    admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .unwrap();
}
