//! `ordo console` through the built binary, over plain HTTP (the browser tests come with
//! the console's actions): every page on a store with one of each stuck state, payload
//! redaction, and the access rules (loopback by default, a token anywhere else).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use common::{ok, ordo, run, write_lines, KilledOnDrop, Scratch};

/// A bank ledger, a catalog and a merge: a poison deposit (a dead letter, a deposit
/// behind it), a lost version, a product whose category never came, a merged customer.
const LINES: [&str; 9] = [
    r#"{"id":"l1","stream":"account-1","version":1,"type":"Opened","op":"set","data":{"balance":0,"email":"ada@example.com"}}"#,
    r#"{"id":"l2","stream":"account-1","version":2,"type":"Deposited","op":"incr","data":{"balance":"100","email":"ada@example.com"}}"#,
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
    let mut socket = TcpStream::connect(address).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        socket,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\n{headers}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    socket.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, head.to_string(), body.to_string())
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
    // Data is escaped, never markup.
    let product = page(&address, "/streams/product-1");
    assert!(!product.contains("<b>lamp</b>"));
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
    assert_eq!(get(&address, "/login?token=nope", "").0, 401);
    let (code, head, _) = get(&address, &format!("/login?token={token}"), "");
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
