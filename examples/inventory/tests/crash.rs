//! The Inventory service SIGKILLed at random moments: after every kill the team's
//! `customers.version` equals ordo's recorded version for every stream (one
//! transaction holds both), and the final inventory is the in-order one.

use std::collections::{BTreeMap, HashMap};
use std::process::{Command, Stdio};
use std::time::Duration;

use ordo_core::{Dependency, Event, Op};
use ordo_sim::workload::{deliver, event, Disorder};
use ordo_sim::Rng;
use ordo_store::rusqlite::{Connection, OpenFlags};
use serde_json::json;

const SKUS: [&str; 4] = ["widget", "gadget", "gizmo", "doohickey"];

/// Registrations, purchases and merges of `customers` customers, in a valid order; also
/// the inventory an in-order consumer ends with.
fn history(
    seed: u64,
    customers: usize,
    events: usize,
) -> (Vec<Event>, BTreeMap<(String, String), i64>) {
    let mut rng = Rng::derive(seed, "inventory");
    let mut versions: Vec<u64> = vec![0; customers];
    let mut merged_into: HashMap<usize, usize> = HashMap::new();
    let mut inventory: BTreeMap<(String, String), i64> = BTreeMap::new();
    let mut history = Vec::new();
    let name = |c: usize| format!("customer-{c}");
    let resolve = |merged: &HashMap<usize, usize>, mut c: usize| {
        while let Some(&next) = merged.get(&c) {
            c = next;
        }
        c
    };
    while history.len() < events {
        let c = rng.index(customers);
        versions[c] += 1;
        let version = versions[c];
        let id = format!("{}-{version}", name(c));
        if version == 1 {
            history.push(event(
                id,
                &name(c),
                1,
                "CustomerRegistered",
                Op::Custom("register".into()),
                json!({}),
                vec![],
            ));
            continue;
        }
        let source = rng.index(customers);
        let mergeable = source != c
            && versions[source] > 0
            && !merged_into.contains_key(&source)
            && !merged_into.contains_key(&c)
            && rng.chance(3);
        if mergeable {
            let target = name(c);
            let from = name(source);
            history.push(event(
                id,
                &target,
                version,
                "CustomersMerged",
                Op::Merge {
                    from: vec![from.as_str().into()],
                },
                json!({"from": [from]}),
                vec![Dependency {
                    stream: from.as_str().into(),
                    version: versions[source],
                }],
            ));
            let moved: Vec<(String, i64)> = inventory
                .iter()
                .filter(|((owner, _), _)| *owner == from)
                .map(|((_, sku), q)| (sku.clone(), *q))
                .collect();
            for (sku, quantity) in moved {
                inventory.remove(&(from.clone(), sku.clone()));
                *inventory.entry((target.clone(), sku)).or_default() += quantity;
            }
            merged_into.insert(source, c);
            continue;
        }
        let sku = SKUS[rng.index(SKUS.len())];
        let quantity = rng.range(1, 5) as i64;
        history.push(event(
            id,
            &name(c),
            version,
            "PurchaseMade",
            Op::Custom("purchase".into()),
            json!({"sku": sku, "quantity": quantity}),
            vec![],
        ));
        let owner = name(resolve(&merged_into, c));
        *inventory.entry((owner, sku.to_string())).or_default() += quantity;
    }
    (history, inventory)
}

fn read_only(path: &std::path::Path) -> Connection {
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap()
}

/// `(ordo's version, the team's version)` of every stream that either recorded.
fn versions(path: &std::path::Path) -> BTreeMap<String, (i64, i64)> {
    let db = read_only(path);
    let mut both: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let mut ordo = db.prepare("SELECT stream, applied FROM streams").unwrap();
    for row in ordo
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .unwrap()
    {
        let (stream, applied) = row.unwrap();
        both.entry(stream).or_default().0 = applied;
    }
    let mut team = db.prepare("SELECT id, version FROM customers").unwrap();
    for row in team
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .unwrap()
    {
        let (stream, version) = row.unwrap();
        both.entry(stream).or_default().1 = version;
    }
    both
}

/// The sum of ordo's applied versions (0 before the store exists).
fn applied_sum(path: &std::path::Path) -> i64 {
    let Ok(db) = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY) else {
        return 0;
    };
    db.query_row("SELECT COALESCE(SUM(applied), 0) FROM streams", [], |r| {
        r.get(0)
    })
    .unwrap_or(0)
}

fn inventory(path: &std::path::Path) -> BTreeMap<(String, String), i64> {
    let db = read_only(path);
    let mut statement = db
        .prepare("SELECT customer, sku, quantity FROM inventory")
        .unwrap();
    statement
        .query_map([], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn sigkills_leave_the_teams_tables_and_ordos_versions_equal() {
    let seed: u64 = std::env::var("ORDO_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let (history, expected) = history(seed, 40, 20_000);
    let deliveries = deliver(seed, &history, Disorder::Window(40), 10);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("events.db").to_str().unwrap().to_string();
    let lines: Vec<String> = deliveries.iter().map(|e| e.to_json_string()).collect();
    ordo_log::EventLog::open(&log, true)
        .unwrap()
        .append_lines(lines.iter().map(String::as_str))
        .unwrap();
    let db = dir.path().join("inventory.db");
    let service = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_inventory"));
        // Small batches: many commits, so a kill right after one lands mid-run.
        command
            .args([&log, db.to_str().unwrap(), "--batch", "200"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    };
    let mut killed_mid_run = 0;
    for round in 0..6 {
        // Killed as soon as a commit shows progress: mid-run unless that was the last one.
        let before = applied_sum(&db);
        let mut child = service().spawn().unwrap();
        let started = std::time::Instant::now();
        while applied_sum(&db) <= before
            && started.elapsed() < Duration::from_secs(30)
            && child.try_wait().unwrap().is_none()
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = Command::new("kill")
            .args(["-KILL", &child.id().to_string()])
            .status();
        let _ = child.wait();
        let both = versions(&db);
        for (stream, (ordo, team)) in &both {
            assert_eq!(
                ordo, team,
                "seed {seed} round {round}: `{stream}` ordo at {ordo}, the team's table at {team}"
            );
        }
        if (applied_sum(&db) as usize) < history.len() {
            killed_mid_run += 1;
        }
    }
    assert!(
        killed_mid_run >= 2,
        "seed {seed}: only {killed_mid_run} kills landed mid-run; the test proves nothing"
    );
    let status = service().arg("--exit-when-idle").status().unwrap();
    assert!(status.success());
    for (stream, (ordo, team)) in versions(&db) {
        assert_eq!(ordo, team, "seed {seed}: `{stream}` at the end");
    }
    assert_eq!(
        inventory(&db),
        expected,
        "seed {seed} (ORDO_SEED={seed}): the inventory"
    );
}

#[test]
fn the_hand_written_events_give_the_documented_inventory() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("events.db").to_str().unwrap().to_string();
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/events.jsonl")).unwrap();
    ordo_log::EventLog::open(&log, true)
        .unwrap()
        .append_lines(text.lines())
        .unwrap();
    let db = dir.path().join("inventory.db");
    let status = Command::new(env!("CARGO_BIN_EXE_inventory"))
        .args([&log, db.to_str().unwrap(), "--exit-when-idle"])
        .status()
        .unwrap();
    assert!(status.success());
    let expected: BTreeMap<(String, String), i64> = [
        (("customer-1".to_string(), "gadget".to_string()), 6),
        (("customer-1".to_string(), "widget".to_string()), 3),
    ]
    .into_iter()
    .collect();
    assert_eq!(inventory(&db), expected);
    let db = read_only(&db);
    let merged: Option<String> = db
        .query_row(
            "SELECT merged_into FROM customers WHERE id = 'customer-2'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(merged.as_deref(), Some("customer-1"));
    let reason: String = db
        .query_row(
            "SELECT reason FROM dead_letters WHERE stream = 'customer-3'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        reason.contains("quantity must be a whole number"),
        "{reason}"
    );
}
