//! Metrics, health and `ordo status` of a running `ordo run`, through the built binary:
//! a live scrape parsed and compared with `--json` and `ordo status --json`, `/healthz`
//! turning red on a stuck loop (a store that blocks, a handler that never answers) and
//! green again, and the alert rules checked by `promtool`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::scrape::{get, scrape_until, start, Running};
use common::service::{Behaviour, Service};
use common::{json_lines, kill_with, ok, postgres_schema, write_lines, KilledOnDrop, Scratch};

/// A bank ledger and a catalog with one of each waiting state: a poison deposit (a
/// dead letter, and the deposit behind it waits), a lost version (a gap that stalls), a
/// product whose category never came (parked on a dependency).
const LEDGER_AND_CATALOG: [&str; 8] = [
    r#"{"id":"l1","stream":"account-1","version":1,"type":"Opened","op":"set","data":{"balance":0}}"#,
    r#"{"id":"l2","stream":"account-1","version":2,"type":"Deposited","op":"incr","data":{"balance":"100"}}"#,
    r#"{"id":"l3","stream":"account-1","version":3,"type":"Deposited","op":"incr","data":{"balance":5}}"#,
    r#"{"id":"k1","stream":"account-2","version":1,"type":"Opened","op":"set","data":{"balance":7}}"#,
    r#"{"id":"k3","stream":"account-2","version":3,"type":"Deposited","op":"incr","data":{"balance":1}}"#,
    r#"{"id":"k3","stream":"account-2","version":3,"type":"Deposited","op":"incr","data":{"balance":1}}"#,
    r#"{"id":"p1","stream":"product-1","version":1,"type":"ProductAdded","op":"set","data":{"name":"lamp"},"after":[{"stream":"category-9","version":1}]}"#,
    r#"{"id":"c1","stream":"category-1","version":1,"type":"CategoryAdded","op":"set","data":{"name":"lights"}}"#,
];

/// `/healthz` until it answers `code`, at most `seconds`; the body.
fn health_until(address: &str, code: u16, seconds: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        let (got, body) = get(address, "/healthz");
        if got == code {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz stayed {got} ({body}), expected {code}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERMs a run started with `--json` and returns the counters it printed.
fn stop(mut running: Running) -> serde_json::Value {
    kill_with(&running.child.0, "-TERM");
    let mut stdout = String::new();
    running
        .child
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let status = running.child.0.wait().unwrap();
    assert!(status.success(), "SIGTERM ends a run with 0: {status:?}");
    serde_json::from_str(stdout.trim()).expect("--json prints one object")
}

fn ledger_and_catalog_log(scratch: &Scratch) -> String {
    let input = scratch.path("in.jsonl");
    write_lines(&input, &LEDGER_AND_CATALOG);
    let log = scratch.path("log.db").to_str().unwrap().to_string();
    ok(&["append", "--log", &log, input.to_str().unwrap()]);
    log
}

#[test]
fn a_live_scrape_agrees_with_json_and_with_ordo_status() {
    let scratch = Scratch::new();
    let log = ledger_and_catalog_log(&scratch);
    let store = scratch.store("state.db");
    let source = format!("log:{log}");
    let running = start(&[
        "run",
        "--source",
        &source,
        "--store",
        &store,
        "--gap-timeout-ms",
        "300",
        "--json",
    ]);
    let address = running.address.clone();
    // Settled: everything delivered, account-2's gap stalled.
    let metrics = scrape_until(&address, 20, |m| {
        m.get("ordo_stalled_streams") == Some(&1.0) && m.get("ordo_deliveries_total") == Some(&8.0)
    });
    let (code, body) = get(&address, "/readyz");
    assert_eq!((code, body.trim()), (200, "ready"));
    assert_eq!(get(&address, "/healthz").0, 200);
    assert_eq!(get(&address, "/nothing").0, 404);
    let status: serde_json::Value =
        serde_json::from_slice(&ok(&["status", "--store", &store, "--json"]).stdout).unwrap();
    let counters = stop(running);

    // Every decision counter is the run's own --json and the store's status.
    for (decision, value) in counters.as_object().unwrap() {
        assert_eq!(status["counters"][decision], *value, "{decision}");
        let series = format!("ordo_events_total{{decision=\"{decision}\"}}");
        if decision == "stalled" {
            // Not a counter (it goes down when a gap fills): the stalled-streams gauge.
            assert!(!metrics.contains_key(&series), "{metrics:?}");
            assert_eq!(metrics["ordo_stalled_streams"], value.as_f64().unwrap());
            continue;
        }
        assert_eq!(metrics[&series], value.as_f64().unwrap(), "{decision}");
    }
    assert_eq!(metrics["ordo_store_readable"], 1.0);
    assert_eq!(counters["applied"], 3, "{counters}");
    assert_eq!(counters["duplicate"], 1, "{counters}");
    assert_eq!(counters["dead_lettered"], 1, "{counters}");
    assert_eq!(counters["stalled"], 1, "{counters}");
    // l3 behind the dead letter, k3 behind the gap, p1 on its category.
    assert_eq!(metrics["ordo_parked_events"], 3.0);
    assert_eq!(status["waiting"]["events"], 3);
    let parked = json_lines(&ok(&["parked", "list", "--store", &store, "--json"]));
    assert_eq!(parked.len(), 3, "{parked:?}");
    assert_eq!(metrics["ordo_dead_letters"], 1.0);
    assert_eq!(status["dead_letters"]["entries"], 1);
    assert_eq!(status["stalled_streams"], 1);
    assert!(
        metrics["ordo_oldest_parked_age_seconds"] > 0.0,
        "{metrics:?}"
    );
    assert!(metrics["ordo_oldest_dead_letter_age_seconds"] > 0.0);
    // The last commit: a few seconds ago at most, as the store recorded it.
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let committed = metrics["ordo_last_commit_timestamp_seconds"];
    assert!(
        now_s - committed < 30.0 && now_s >= committed - 1.0,
        "{committed}"
    );
    assert!(status["last_commit_age_seconds"].as_f64().unwrap() < 30.0);
    // Caught up with the log: no lag.
    assert_eq!(metrics["ordo_source_lag_events{partition=\"0\"}"], 0.0);
    assert_eq!(status["positions"][0]["lag_events"], 0);
    assert!(metrics["ordo_commit_duration_seconds_count"] >= 1.0);
    // k3 (v3) arrived one version ahead of account-2's next (v2): one reorder of 1.
    assert_eq!(metrics["ordo_reorder_distance_count"], 1.0, "{metrics:?}");
    assert_eq!(metrics["ordo_reorder_distance_sum"], 1.0, "{metrics:?}");
    assert_eq!(metrics["ordo_reorder_distance_bucket{le=\"1.0\"}"], 1.0);
    // No stream name in any label.
    assert!(
        metrics
            .keys()
            .all(|k| !k.contains("account") && !k.contains("product")),
        "{metrics:?}"
    );
    // Every series the dashboard and the alerts query is one ordo serves.
    for doc in ["grafana/ordo.json", "alerts.yml"] {
        let text =
            std::fs::read_to_string(format!("{}/../../docs/{doc}", env!("CARGO_MANIFEST_DIR")))
                .unwrap();
        for (at, _) in text.match_indices("ordo_") {
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            assert!(
                metrics
                    .keys()
                    .any(|k| k == &name || k.starts_with(&format!("{name}{{"))),
                "{doc} queries {name}, which ordo does not serve"
            );
        }
    }
    // The longest-waiting list names what holds each stream.
    let waits: Vec<String> = status["longest_waiting"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            format!(
                "{} {}",
                w["stream"].as_str().unwrap(),
                w["waits_for"].as_str().unwrap()
            )
        })
        .collect();
    for expected in [
        "account-1 version 2 is dead letter #1",
        "account-2 missing version 2",
        "product-1 `category-9` to reach version 1",
    ] {
        assert!(waits.iter().any(|w| w == expected), "{expected}: {waits:?}");
    }
}

#[test]
fn a_store_that_blocks_turns_healthz_red_and_it_recovers() {
    let scratch = Scratch::new();
    let log = ledger_and_catalog_log(&scratch);
    let store = scratch.store("state.db");
    let source = format!("log:{log}");
    let running = start(&[
        "run",
        "--source",
        &source,
        "--store",
        &store,
        "--health-stuck-ms",
        "1000",
    ]);
    let address = running.address.clone();
    scrape_until(&address, 20, |m| {
        m.get("ordo_deliveries_total") == Some(&8.0)
    });
    health_until(&address, 200, 5);

    // Another process takes SQLite's write lock; the next commit waits on it.
    let mut holder = rusqlite::Connection::open(scratch.path("state.db")).unwrap();
    let lock = holder
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .unwrap();
    let more = scratch.path("more.jsonl");
    write_lines(
        &more,
        &[
            r#"{"id":"k2","stream":"account-2","version":2,"type":"Deposited","op":"incr","data":{"balance":2}}"#,
        ],
    );
    ok(&["append", "--log", &log, more.to_str().unwrap()]);
    let body = health_until(&address, 503, 10);
    assert!(body.contains("loop"), "the reason names the loop: {body}");
    // /metrics still answers while the loop is stuck, and says for how long.
    let metrics = scrape_until(&address, 5, |m| m["ordo_loop_heartbeat_age_seconds"] >= 1.0);
    assert_eq!(metrics["ordo_deliveries_total"], 9.0);

    lock.rollback().unwrap();
    health_until(&address, 200, 20);
    let metrics = scrape_until(&address, 10, |m| {
        m.get("ordo_events_total{decision=\"applied\"}") == Some(&5.0)
    });
    assert_eq!(metrics["ordo_stalled_streams"], 0.0);
    drop(running);
}

#[test]
fn a_handler_that_never_answers_turns_healthz_red() {
    let service = Service::start(Behaviour {
        silent_streams: vec!["account-1".into()],
        ..Behaviour::default()
    });
    let scratch = Scratch::new();
    let log = ledger_and_catalog_log(&scratch);
    let store = scratch.store("state.db");
    let source = format!("log:{log}");
    let handler = service.url();
    let running = start(&[
        "run",
        "--source",
        &source,
        "--store",
        &store,
        "--handler",
        &handler,
        "--handler-timeout-ms",
        "600000",
        "--health-stuck-ms",
        "1000",
    ]);
    let body = health_until(&running.address, 503, 15);
    assert!(
        body.contains("handler"),
        "the reason names the handler: {body}"
    );
    let metrics = scrape_until(&running.address, 5, |_| true);
    assert!(
        metrics["ordo_handler_calls_in_flight"] >= 1.0,
        "{metrics:?}"
    );
    // The loop itself still steps: a stale loop would be the reason given first.
    drop(running);
}

#[test]
fn status_reads_postgresql_as_it_reads_sqlite() {
    let scratch = Scratch::new();
    let log = ledger_and_catalog_log(&scratch);
    let source = format!("log:{log}");
    let (mut admin, schema, postgres) = postgres_schema("ordo_status");
    let sqlite = scratch.store("state.db");
    let mut seen = Vec::new();
    for store in [&sqlite, &postgres] {
        ok(&[
            "run",
            "--source",
            &source,
            "--store",
            store,
            "--exit-when-idle",
        ]);
        let mut status: serde_json::Value =
            serde_json::from_slice(&ok(&["status", "--store", store, "--json"]).stdout).unwrap();
        // Ages differ between the two runs; what they measure must not.
        assert!(status["last_commit_age_seconds"].as_f64().unwrap() < 60.0);
        status["last_commit_age_seconds"] = serde_json::Value::Null;
        for path in [
            ["waiting", "oldest_age_seconds"],
            ["dead_letters", "oldest_age_seconds"],
        ] {
            assert!(status[path[0]][path[1]].as_f64().unwrap() < 60.0);
            status[path[0]][path[1]] = serde_json::Value::Null;
        }
        for list in ["positions", "longest_waiting"] {
            for item in status[list].as_array_mut().unwrap() {
                item.as_object_mut()
                    .unwrap()
                    .retain(|k, _| !k.contains("age"));
            }
        }
        seen.push(status);
    }
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[0]["stalled_streams"], 1);
    admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .unwrap();
}

/// Kept apart so that a failure names the check.
fn promtool() -> Option<std::path::PathBuf> {
    ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
}

#[test]
fn the_alert_rules_pass_promtool() {
    let promtool = promtool().expect("promtool (Debian's prometheus; scripts/test.sh installs it)");
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/alerts.yml");
    let output = std::process::Command::new(promtool)
        .args(["check", "rules", rules])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A free loopback port (Prometheus takes a port, not a listener).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Asks Prometheus's HTTP API `path` until `done` holds of the answer, at most `seconds`.
fn prometheus_until(
    address: &str,
    path: &str,
    seconds: u64,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Ok(mut socket) = TcpStream::connect(address) {
            let (code, body) = {
                socket
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let _ = write!(
                    socket,
                    "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
                );
                let mut answer = String::new();
                let _ = socket.read_to_string(&mut answer);
                let (head, body) = answer.split_once("\r\n\r\n").unwrap_or(("", ""));
                (
                    head.split(' ').nth(1).unwrap_or("0").to_string(),
                    body.to_string(),
                )
            };
            // Prometheus answers in chunks; the JSON is the one line that parses.
            let value = body
                .lines()
                .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok());
            if let (true, Some(value)) = (code == "200", value) {
                if done(&value) {
                    return value;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never answered {path} as expected"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn prometheus_scrapes_a_live_run_and_loads_the_alert_rules() {
    let Some(prometheus) = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
        .iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        panic!("prometheus (Debian's prometheus; scripts/test.sh installs it)");
    };
    let scratch = Scratch::new();
    let log = ledger_and_catalog_log(&scratch);
    let store = scratch.store("state.db");
    let source = format!("log:{log}");
    let running = start(&["run", "--source", &source, "--store", &store]);
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/alerts.yml");
    let config = scratch.path("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             rule_files: ['{rules}']\n\
             scrape_configs:\n  - job_name: ordo\n    static_configs: [{{targets: ['{}']}}]\n",
            running.address
        ),
    )
    .unwrap();
    let web = format!("127.0.0.1:{}", free_port());
    let server = std::process::Command::new(prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            scratch.path("tsdb").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _server = KilledOnDrop(server);
    let query = "/api/v1/query?query=ordo_events_total%7Bdecision%3D%22duplicate%22%7D";
    let answer = prometheus_until(&web, query, 30, |v| {
        v["data"]["result"][0]["value"][1] == "1"
    });
    assert_eq!(answer["data"]["result"][0]["metric"]["job"], "ordo");
    // The rules loaded and evaluate without error against ordo's series.
    let rules = prometheus_until(&web, "/api/v1/rules", 30, |v| {
        v["data"]["groups"][0]["rules"]
            .as_array()
            .is_some_and(|r| r.iter().all(|r| r["health"] == "ok"))
    });
    let firing = prometheus_until(&web, "/api/v1/alerts", 30, |v| {
        v["data"]["alerts"].as_array().is_some_and(|a| {
            a.iter()
                .any(|a| a["labels"]["alertname"] == "OrdoDeadLetters")
        })
    });
    assert!(
        rules["data"]["groups"][0]["rules"]
            .as_array()
            .unwrap()
            .len()
            >= 10
    );
    assert!(!firing["data"]["alerts"].as_array().unwrap().is_empty());
    drop(running);
}
