//! Scraping a running `ordo` (`--metrics 127.0.0.1:0`) as Prometheus would.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{ordo, KilledOnDrop};

/// A running `ordo run` with `--metrics 127.0.0.1:0` and where it listens.
pub struct Running {
    /// The process.
    pub child: KilledOnDrop,
    /// Where its endpoint listens.
    pub address: String,
}

/// Starts `ordo run ARGS --metrics 127.0.0.1:0` and reads the address it prints.
pub fn start(args: &[&str]) -> Running {
    let mut child = ordo()
        .args(args)
        .args(["--metrics", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (sender, receiver) = mpsc::channel();
    // Keeps draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("ordo: metrics on http://") {
                let _ = sender.send(rest.split('/').next().unwrap().to_string());
            }
        }
    });
    let address = receiver
        .recv_timeout(Duration::from_secs(20))
        .expect("ordo run prints where its metrics are");
    Running {
        child: KilledOnDrop(child),
        address,
    }
}

/// `GET path` on `address`: (status code, body).
pub fn get(address: &str, path: &str) -> (u16, String) {
    let (code, _, body) = exchange(address, &format!("GET {path}"), "", "");
    (code, body)
}

/// One HTTP/1.1 exchange on a new connection: `request` is the method and path, `headers`
/// extra header lines (a `Host:` among them replaces the address's), `body` sent as is.
/// (status, head, body).
pub fn exchange(address: &str, request: &str, headers: &str, body: &str) -> (u16, String, String) {
    let mut socket = TcpStream::connect(address).expect("the server accepts");
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let host = if headers.starts_with("Host:") {
        String::new()
    } else {
        format!("Host: {address}\r\n")
    };
    let length = if body.is_empty() {
        String::new()
    } else {
        format!("Content-Length: {}\r\n", body.len())
    };
    write!(
        socket,
        "{request} HTTP/1.1\r\n{host}{headers}{length}Connection: close\r\n\r\n{body}"
    )
    .unwrap();
    let mut answer = String::new();
    socket.read_to_string(&mut answer).expect("an answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("HTTP head and body");
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, head.to_string(), body.to_string())
}

/// Samples of a Prometheus text page: `name{labels}` → value.
pub fn samples(page: &str) -> BTreeMap<String, f64> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("sample: {l}"));
            (
                name.to_string(),
                value.parse().unwrap_or_else(|_| panic!("value: {l}")),
            )
        })
        .collect()
}

/// Scrapes `/metrics` until `done` holds of the samples, at most `seconds`.
pub fn scrape_until(
    address: &str,
    seconds: u64,
    done: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        let (code, page) = get(address, "/metrics");
        assert_eq!(code, 200, "{page}");
        let samples = samples(&page);
        if done(&samples) {
            return samples;
        }
        assert!(Instant::now() < deadline, "never reached: {page}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
