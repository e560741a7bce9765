//! `ordo console` through the built binary, over plain HTTP (the browser tests come with
//! the console's actions): every page on a store with one of each stuck state, payload
//! redaction, and the access rules (loopback by default, a token anywhere else).

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use common::scrape::exchange;
use common::{ok, ordo, run, write_lines, KilledOnDrop, Scratch};

/// A bank ledger, a catalog and a merge: a poison deposit (a dead letter, a deposit
/// behind it), a lost version, a product whose category never came, a merged customer.
const LINES: [&str; 9] = [
    r#"{"id":"l1","stream":"account-1","version":1,"type":"Opened","op":"set","data":{"balance":0,"email":"ada@example.com"}}"#,
    r#"{"id":"l2","stream":"account-1","version":2,"type":"Deposited","op":"incr","data":{"balance":"<b>100</b>","email":"ada@example.com"}}"#,
    r#"{"id":"l3","stream":"account-1","version":3,"type":"Deposited","op":"incr","data":{"balance":5}}"#,
    r#"{"id":"k1","stream":"account-2","version":1,"type":"Opened","op":"set","data":{"balance":7}}"#,
    r#"{"id":"k3","stream":"account-2","version":3,"type":"Deposited","op":"incr","data":{"balance":1}}"#,
    r#"{"id":"p1","stream":"product-1","version":1,"type":"ProductAdded","op":"set","data":{"name":"<b>lamp</b>"},"after":[{"stream":"category-9","version":1}]}"#,
    r#"{"id":"c1","stream":"customer-1","version":1,"type":"Registered","op":"set","data":{"orders":1}}"#,
    r#"{"id":"c2","stream":"customer-2","version":1,"type":"Registered","op":"set","data":{"orders":2}}"#,
    r#"{"id":"m1","stream":"customer-2","version":2,"type":"CustomersMerged","op":"merge","data":{"from":["customer-1"]},"after":[{"stream":"customer-1","version":1}]}"#,
];

fn stuck_store(scratch: &Scratch) -> String {
    let input = scratch.path("in.jsonl");
    write_lines(&input, &LINES);
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
    store
}

/// `ordo console ARGS --listen 127.0.0.1:0`, and where it listens.
fn console(args: &[&str]) -> (KilledOnDrop, String) {
    let mut child = ordo()
        .arg("console")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("ordo: console on http://") {
                let _ = sender.send(rest.trim_end_matches('/').to_string());
            }
        }
    });
    let address = receiver
        .recv_timeout(Duration::from_secs(20))
        .expect("the console prints where it listens");
    (KilledOnDrop(child), address)
}

/// `GET path` with extra header lines: (status, headers, body).
fn get(address: &str, path: &str, headers: &str) -> (u16, String, String) {
    exchange(address, &format!("GET {path}"), headers, "")
}

fn page(address: &str, path: &str) -> String {
    let (code, _, body) = get(address, path, "");
    assert_eq!(code, 200, "{path}: {body}");
    body
}

#[test]
fn every_page_explains_the_stuck_states_of_a_store() {
    let scratch = Scratch::new();
    let store = stuck_store(&scratch);
    let (_console, address) = console(&[
        "--store",
        &store,
        "--listen",
        "127.0.0.1:0",
        "--redact",
        "email",
    ]);
    let overview = page(&address, "/");
    // A file source's end is not known to the console.
    assert!(overview.contains("unknown here"), "{overview}");
    for expected in [
        "1 streams stalled",
        "1 dead letters",
        "version 2 is dead letter #1",
        "missing version 2",
        "<a href=\"/streams/category-9\">category-9</a> to reach version 1",
    ] {
        assert!(
            overview.contains(expected),
            "overview lacks {expected}:\n{overview}"
        );
    }
    let waiting = page(&address, "/waiting");
    assert!(
        waiting.contains("Waiting for a missing version (1 streams)"),
        "{waiting}"
    );
    assert!(waiting.contains("Waiting for `category-9` to reach version 1 (1 streams)"));
    let searched = page(&address, "/waiting?stream=product");
    assert!(searched.contains("product-1") && !searched.contains("account-2"));
    let queue = page(&address, "/dead-letters?kind=sequenced&type=Deposited");
    assert!(
        queue.contains("1 entries") && queue.contains("l2"),
        "{queue}"
    );
    // The filter form as a browser submits it, every field empty.
    let all = page(
        &address,
        "/dead-letters?kind=&stream=&reason=&type=&older_than_min=",
    );
    assert!(all.contains("1 entries"), "{all}");
    let none = page(&address, "/dead-letters?type=Opened");
    assert!(none.contains("0 entries"), "{none}");
    // The payload, with the configured field redacted.
    let entry = page(&address, "/dead-letters/1");
    assert!(
        entry.contains("[redacted]") && !entry.contains("ada@example.com"),
        "{entry}"
    );
    assert!(entry.contains("must be an integer amount"));
    assert!(
        entry.contains("data-would=\"dead-lettered-again\""),
        "the dry run of the entry as it is: {entry}"
    );
    assert_eq!(get(&address, "/dead-letters/99", "").0, 404);
    // One stream explained: its document (redacted), what waits behind what, its journal.
    let account = page(&address, "/streams/account-1");
    for expected in [
        "Applied version <strong>1</strong>",
        "[redacted]",
        "behind version 2",
        "dead letter #1",
        "dead-lettered",
    ] {
        assert!(
            account.contains(expected),
            "stream page lacks {expected}:\n{account}"
        );
    }
    assert!(!account.contains("ada@example.com"));
    let merged = page(&address, "/streams/customer-1");
    assert!(merged.contains("Merged into"), "{merged}");
    assert!(merged.contains("/streams/customer-2"));
    // Data is escaped, never markup: the poison amount is quoted in the reason.
    assert!(
        entry.contains("&lt;b&gt;100&lt;/b&gt;") && !entry.contains("<b>100</b>"),
        "{entry}"
    );
    // A page asked for under another host name (DNS rebinding) is refused.
    let port = address.rsplit(':').next().unwrap();
    let (code, _, _) = get(&address, "/", &format!("Host: attacker.example:{port}\r\n"));
    assert_eq!(code, 421);
    let journal = page(&address, "/journal?kind=stalled");
    assert!(
        journal.contains("1 entries") && journal.contains("account-2"),
        "{journal}"
    );
}

#[test]
fn off_loopback_the_console_needs_a_token_and_every_request_carries_it() {
    let scratch = Scratch::new();
    let store = stuck_store(&scratch);
    let output = run(&["console", "--store", &store, "--listen", "0.0.0.0:0"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not a loopback address"), "{stderr}");
    let output = run(&[
        "console",
        "--store",
        &store,
        "--listen",
        "0.0.0.0:0",
        "--token",
        "short",
    ]);
    assert_eq!(output.status.code(), Some(2));
    // A missing store is refused before listening.
    let missing = scratch.store("missing.db");
    assert_eq!(
        run(&["console", "--store", &missing]).status.code(),
        Some(2)
    );

    let token = "0123456789abcdef0123";
    let (_console, address) =
        console(&["--store", &store, "--listen", "0.0.0.0:0", "--token", token]);
    let port = address.rsplit(':').next().unwrap();
    let address = format!("127.0.0.1:{port}");
    assert_eq!(get(&address, "/", "").0, 401);
    assert_eq!(get(&address, "/streams/account-1", "").0, 401);
    let wrong = "Authorization: Bearer 0123456789abcdef0124\r\n";
    assert_eq!(get(&address, "/", wrong).0, 401);
    let bearer = format!("Authorization: Bearer {token}\r\n");
    assert_eq!(get(&address, "/", &bearer).0, 200);
    assert_eq!(post(&address, "/login", &[("token", "nope")], "").0, 401);
    let (code, form) = post(&address, "/login", &[], "");
    assert_eq!(code, 422, "a login without a token: {form}");
    let (code, head, _) = exchange(
        &address,
        "POST /login",
        "Content-Type: application/x-www-form-urlencoded\r\n",
        &format!("token={token}"),
    );
    assert_eq!(code, 303, "{head}");
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .expect("a cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert!(
        head.contains("HttpOnly") && head.contains("SameSite=Strict"),
        "{head}"
    );
    assert_eq!(
        get(&address, "/journal", &format!("Cookie: {cookie}\r\n")).0,
        200
    );
}

/// `POST path` with a urlencoded form and extra header lines: (status, body).
fn post(address: &str, path: &str, form: &[(&str, &str)], headers: &str) -> (u16, String) {
    let encode = |text: &str| {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                other => format!("%{other:02X}"),
            })
            .collect::<String>()
    };
    let body: Vec<String> = form
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    let headers = format!("{headers}Content-Type: application/x-www-form-urlencoded\r\n");
    let (code, _, body) = exchange(address, &format!("POST {path}"), &headers, &body.join("&"));
    (code, body)
}

/// The CSRF value a page's forms carry, and the cookie header that goes with it.
fn csrf_of(address: &str, path: &str) -> (String, String) {
    let (code, head, body) = get(address, path, "");
    assert_eq!(code, 200, "{body}");
    let value = body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .expect("a form with a CSRF value")
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let cookie = head
        .lines()
        .filter_map(|l| l.strip_prefix("set-cookie: "))
        .find(|c| c.starts_with("ordo_csrf_"))
        .expect("the CSRF cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    (value, format!("Cookie: {cookie}\r\n"))
}

/// A running `ordo run` on a log holding the stuck ledger and a merge without its cut
/// (dead-lettered), and a console next to it: (the run, the console, its address).
fn live_console(scratch: &Scratch) -> (KilledOnDrop, KilledOnDrop, String) {
    let input = scratch.path("in.jsonl");
    let mut lines = LINES.to_vec();
    // A merge without its cut: dead-lettered, fixed with a corrected body.
    lines.extend([
        r#"{"id":"c3","stream":"customer-3","version":1,"type":"Registered","op":"set","data":{"orders":3}}"#,
        r#"{"id":"c4","stream":"customer-4","version":1,"type":"Registered","op":"set","data":{"orders":4}}"#,
        r#"{"id":"m2","stream":"customer-4","version":2,"type":"CustomersMerged","op":"merge","data":{"from":["customer-3"]}}"#,
    ]);
    write_lines(&input, &lines);
    let log = scratch.path("log.db").to_str().unwrap().to_string();
    ok(&["append", "--log", &log, input.to_str().unwrap()]);
    let store = scratch.store("state.db");
    let running = ordo()
        .args(["run", "--source", &format!("log:{log}"), "--store", &store])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let running = KilledOnDrop(running);
    // The console opens the store the consumer creates: once it is there.
    let created = (0..500).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        run(&["status", "--store", &store]).status.success()
    });
    assert!(created, "the consumer never created its store");
    let (console, address) = console(&[
        "--store",
        &store,
        "--listen",
        "127.0.0.1:0",
        "--history-sample-ms",
        "100",
    ]);
    (running, console, address)
}

/// The scenario of a night on call, over HTTP: a running consumer with a poison deposit,
/// a lost version and a merge without its cut; each is found from the overview and fixed
/// in the console (a corrected body, a skip with a reason, a corrected merge), the streams
/// converge while the consumer runs, and the journal holds every action with its reason.
#[test]
fn an_operator_fixes_every_stuck_state_from_the_console_while_ordo_runs() {
    let scratch = Scratch::new();
    let (_running, _console, address) = live_console(&scratch);
    // Found from the overview.
    let overview = (0..3000)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(20));
            get(&address, "/", "")
        })
        .find(|(code, _, body)| *code == 200 && body.contains("2 dead letters"))
        .expect("the overview shows the dead letter")
        .2;
    // The entries, as the console links them.
    let entry_of = |stream: &str| -> String {
        let listed = page(&address, &format!("/dead-letters?stream={stream}"));
        let id = listed
            .split("href=\"/dead-letters/")
            .nth(1)
            .unwrap_or_else(|| panic!("no entry for {stream}:\n{listed}"))
            .split('"')
            .next()
            .unwrap()
            .to_string();
        assert!(overview.contains(&format!("/dead-letters/{id}")) || stream != "account-1");
        format!("/dead-letters/{id}")
    };
    let poison = entry_of("account-1");
    let merge = entry_of("customer-4");

    // A POST without the page's CSRF value, or without a reason, is refused.
    let (csrf, cookie) = csrf_of(&address, &poison);
    let (code, _) = post(
        &address,
        &format!("{poison}/skip"),
        &[("reason", "x")],
        &cookie,
    );
    assert_eq!(code, 422, "no csrf field at all");
    let (code, _) = post(
        &address,
        &format!("{poison}/skip"),
        &[("csrf", "forged"), ("reason", "x")],
        &cookie,
    );
    assert_eq!(code, 403);
    let (code, _) = post(
        &address,
        &format!("{poison}/skip"),
        &[("csrf", &csrf), ("reason", "x")],
        &format!("{cookie}Origin: http://evil.example\r\n"),
    );
    assert_eq!(code, 403, "another site's form");
    let (code, body) = post(
        &address,
        &format!("{poison}/skip"),
        &[("csrf", &csrf), ("reason", " ")],
        &cookie,
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("a reason is required"), "{body}");

    // The poison deposit, replaced by a corrected event.
    let (code, body) = post(
        &address,
        &format!("{poison}/replay"),
        &[
            ("csrf", &csrf),
            ("reason", "amount sent as text by the teller app"),
            (
                "body",
                r#"{"id":"l2-fixed","stream":"account-1","version":2,"type":"Deposited","op":"incr","data":{"balance":100}}"#,
            ),
        ],
        &cookie,
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("requeued"), "{body}");
    // The lost version, passed over from the stream page.
    let (csrf, cookie) = csrf_of(&address, "/streams/account-2");
    let (code, body) = post(
        &address,
        "/streams/account-2/skip-missing",
        &[
            ("csrf", &csrf),
            ("version", "2"),
            ("reason", "--not-a-flag: lost in the outage"),
        ],
        &cookie,
    );
    assert_eq!(code, 200, "{body}");
    // The merge, with its cut, in place of the one without.
    let (csrf, cookie) = csrf_of(&address, &merge);
    assert!(page(&address, &merge).contains("merge has no cut for source"));
    let (code, body) = post(
        &address,
        &format!("{merge}/replay"),
        &[
            ("csrf", &csrf),
            ("reason", "the merge service forgot the cut"),
            (
                "body",
                r#"{"id":"m2-fixed","stream":"customer-4","version":2,"type":"CustomersMerged","op":"merge","data":{"from":["customer-3"]},"after":[{"stream":"customer-3","version":1}]}"#,
            ),
        ],
        &cookie,
    );
    assert_eq!(code, 200, "{body}");
    // Every stream converges on its page while the consumer runs.
    for (stream, version) in [("account-1", 3), ("account-2", 3), ("customer-4", 2)] {
        let expected = format!("Applied version <strong>{version}</strong>");
        let converged = (0..3000).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            page(&address, &format!("/streams/{stream}")).contains(&expected)
        });
        assert!(converged, "{stream} never reached version {version}");
    }
    // The Overview's sparklines and rates, from the console's own samples: the fixes
    // applied events while it watched.
    let overview = page(&address, "/");
    // The embedded log's lag is read from the log itself.
    assert!(overview.contains("lag (events)") && !overview.contains("unknown here"));
    assert!(
        overview.contains(
            "<svg role=\"img\" aria-label=\"applied: events per sample over the last hour\""
        ),
        "{overview}"
    );
    let journal = page(&address, "/journal?kind=operator");
    assert!(page(&address, "/streams/customer-3").contains("Merged into"));
    for expected in [
        "amount sent as text by the teller app",
        "lost in the outage",
        "the merge service forgot the cut",
    ] {
        assert!(journal.contains(expected), "no `{expected}` in:\n{journal}");
    }
}

#[test]
fn an_unauthorised_mutation_is_refused() {
    let scratch = Scratch::new();
    let store = stuck_store(&scratch);
    let token = "0123456789abcdef0123";
    let (_console, address) = console(&[
        "--store",
        &store,
        "--listen",
        "127.0.0.1:0",
        "--token",
        token,
    ]);
    let (code, _) = post(
        &address,
        "/dead-letters/1/skip",
        &[("csrf", "x"), ("reason", "no token")],
        "",
    );
    assert_eq!(code, 401);
    for path in [
        "/streams/account-1/pause",
        "/streams/account-1/resume",
        "/partitions/0/pause",
        "/partitions/pause",
        "/dead-letters/replay",
        "/dead-letters/dry-run",
    ] {
        let (code, _) = post(&address, path, &[("reason", "no token"), ("id", "1")], "");
        assert_eq!(code, 401, "{path} without the token");
    }
    // With the token but without the CSRF value of the console's own page: refused.
    let bearer = format!("Authorization: Bearer {token}\r\n");
    for path in ["/streams/account-1/pause", "/dead-letters/replay"] {
        let form = [("reason", "forged"), ("id", "1"), ("csrf", "guess")];
        let (code, _) = post(&address, path, &form, &bearer);
        assert_eq!(code, 403, "{path} without the CSRF value");
    }
    let status: serde_json::Value =
        serde_json::from_slice(&ok(&["status", "--store", &store, "--json"]).stdout).unwrap();
    assert_eq!(
        status["paused"],
        serde_json::json!([]),
        "nothing was paused"
    );
    let entries = common::json_lines(&ok(&["dlq", "list", "--store", &store, "--json"]));
    assert_eq!(entries.len(), 1, "nothing was skipped");
}

/// The same night on call in a real browser: Debian's chromium, headless, driven by
/// playwright-core (crates/ordo-console/browser/on_call.mjs; scripts/test.sh installs
/// both). `ORDO_CONSOLE_SHOTS=1` writes its screenshots to docs/console/.
#[test]
fn the_on_call_scenario_in_a_real_browser() {
    let browser = concat!(env!("CARGO_MANIFEST_DIR"), "/../ordo-console/browser");
    assert!(
        std::path::Path::new(browser).join("node_modules/playwright-core").exists()
            && std::path::Path::new("/usr/bin/chromium").exists(),
        "needs chromium and playwright-core: scripts/test.sh installs them (apt-get install chromium; npm ci --prefix {browser})"
    );
    let scratch = Scratch::new();
    let (_running, _console, address) = live_console(&scratch);
    let shots = if std::env::var_os("ORDO_CONSOLE_SHOTS").is_some() {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/console").to_string()
    } else {
        scratch.path("shots").to_str().unwrap().to_string()
    };
    std::fs::create_dir_all(&shots).unwrap();
    // In a process group of its own: on a timeout the browser it started goes with it.
    let mut node = std::process::Command::new("node")
        .process_group(0)
        .arg(format!("{browser}/on_call.mjs"))
        .args([&address, &shots])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs");
    // Bounded: a hung browser fails the test instead of the CI run.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while node.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", node.id())])
                .status();
            let _ = node.wait();
            panic!("the browser scenario did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = node.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{said}");
    assert!(said.contains("on-call scenario: ok"), "{said}");
    for shot in [
        "overview",
        "dry-run",
        "dead-letter",
        "waiting",
        "stream",
        "paused",
        "journal",
    ] {
        assert!(
            std::path::Path::new(&shots)
                .join(format!("{shot}.png"))
                .exists(),
            "no {shot}.png"
        );
    }
}

/// The entry numbers the dead-letter page lists, in order.
fn listed_ids(page: &str) -> Vec<String> {
    page.split("name=\"id\" value=\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_string())
        .collect()
}

/// A stream that could not drain: its events beyond the bound were dead-lettered as
/// overflow. Once the missing version arrives, the operator filters the queue by the
/// stream, dry-runs all of it (the second entry applies once the first has), replays
/// it at a chosen rate, and the stream converges; then pauses and resumes a stream.
#[test]
fn a_stream_s_dead_letters_are_dry_run_and_replayed_together_at_a_rate() {
    let scratch = Scratch::new();
    let input = scratch.path("in.jsonl");
    // account-9 misses version 1; versions 2 and 3 wait (the bound), 4 and 5 overflow.
    let deposit = |version: u64| {
        format!(
            r#"{{"id":"d{version}","stream":"account-9","version":{version},"type":"Deposited","op":"incr","data":{{"balance":{version}}}}}"#
        )
    };
    let lines: Vec<String> = (2..=5).map(deposit).collect();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    write_lines(&input, &lines);
    let log = scratch.path("log.db").to_str().unwrap().to_string();
    ok(&["append", "--log", &log, input.to_str().unwrap()]);
    let store = scratch.store("state.db");
    let source = format!("log:{log}");
    let running = common::scrape::start(&[
        "run",
        "--source",
        &source,
        "--store",
        &store,
        "--stream-pending-events-max",
        "2",
    ]);
    let queued = (0..1500).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        let listed = run(&["dlq", "list", "--store", &store, "--json"]);
        listed.status.success() && common::json_lines(&listed).len() == 2
    });
    assert!(queued, "versions 4 and 5 overflow into the queue");
    // The run's own endpoint, and one of a member that is not there.
    let endpoint = format!("http://{}", running.address);
    let gone = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let (_console, address) = console(&[
        "--store",
        &store,
        "--listen",
        "127.0.0.1:0",
        "--run-metrics",
        &endpoint,
        "--run-metrics",
        &gone,
    ]);
    let overview = page(&address, "/");
    assert!(overview.contains("Running consumers"), "{overview}");
    assert!(
        overview.contains("partition 0: "),
        "the log's lag: {overview}"
    );
    assert!(
        overview.contains(">ready<"),
        "the run's /readyz: {overview}"
    );
    assert!(
        overview.contains("s ago"),
        "the loop's heartbeat: {overview}"
    );
    assert!(
        overview.contains("unreachable"),
        "the member that is gone: {overview}"
    );
    // The missing version arrives: 1, 2 and 3 apply.
    let first = scratch.path("first.jsonl");
    write_lines(
        &first,
        &[
            r#"{"id":"o1","stream":"account-9","version":1,"type":"Opened","op":"set","data":{"balance":0}}"#,
        ],
    );
    ok(&["append", "--log", &log, first.to_str().unwrap()]);
    let version = || {
        common::export(&store)
            .get("account-9")
            .map_or(0, |row| row.version)
    };
    let caught_up = (0..1500).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        version() == 3
    });
    assert!(caught_up, "versions 1 to 3 apply");

    let listing = page(&address, "/dead-letters?stream=account-9");
    let ids = listed_ids(&listing);
    assert_eq!(ids.len(), 4, "checkboxes and the all-shown form: {ids:?}");
    let entries = &ids[..2];
    let mut form: Vec<(&str, &str)> = entries.iter().map(|id| ("id", id.as_str())).collect();
    let (code, dry_run) = post(&address, "/dead-letters/dry-run", &form, "");
    assert_eq!(code, 200, "{dry_run}");
    assert_eq!(
        dry_run.matches("data-would=\"apply\"").count(),
        2,
        "{dry_run}"
    );
    assert!(
        dry_run.contains(&format!("would apply once #{}", entries[0])),
        "{dry_run}"
    );
    assert_eq!(version(), 3, "a dry run changes nothing");

    let (csrf, cookie) = csrf_of(&address, "/");
    form.extend([
        ("csrf", csrf.as_str()),
        ("rate", "5"),
        ("reason", "stream caught up after the outage"),
    ]);
    let (code, done) = post(&address, "/dead-letters/replay", &form, &cookie);
    assert_eq!(code, 200, "{done}");
    assert_eq!(done.matches("requeued").count(), 2, "{done}");
    let converged = (0..1500).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        version() == 5
    });
    assert!(converged, "the replayed versions apply in order");
    let doc = common::export(&store)["account-9"].doc.clone();
    assert_eq!(doc, Some(serde_json::json!({"balance": 14})));
    let too_fast = [("id", "1"), ("rate", "5000"), ("csrf", csrf.as_str())];
    let (code, said) = post(&address, "/dead-letters/dry-run", &too_fast, "");
    assert_eq!(code, 400, "{said}");

    // Pause from the stream page, then resume from the overview's list of pauses.
    let pause = [
        ("csrf", csrf.as_str()),
        ("reason", "INC-7: audit of account-9"),
    ];
    let (code, said) = post(&address, "/streams/account-9/pause", &pause, &cookie);
    assert_eq!(code, 200, "{said}");
    let stream_page = page(&address, "/streams/account-9");
    assert!(stream_page.contains("Paused by"), "{stream_page}");
    assert!(stream_page.contains("INC-7: audit of account-9"));
    let overview = page(&address, "/");
    assert!(overview.contains("1 paused"), "{overview}");
    assert!(overview.contains("/streams/account-9/resume"), "{overview}");
    let resume = [("csrf", csrf.as_str()), ("reason", "audit done")];
    let (code, said) = post(&address, "/streams/account-9/resume", &resume, &cookie);
    assert_eq!(code, 200, "{said}");
    assert!(!page(&address, "/").contains("paused</div>"));
    let journal = page(&address, "/journal?kind=operator");
    for reason in ["stream caught up after the outage", "INC-7", "audit done"] {
        assert!(
            journal.contains(reason),
            "journal lacks {reason}: {journal}"
        );
    }
}
