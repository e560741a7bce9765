//! What the running consumers say about themselves: the console reads each `ordo run
//! --metrics` endpoint it is given (`--run-metrics`) for the loop's heartbeat, the
//! readiness probe and the source's lag per partition (Kafka's watermarks live in the
//! run's broker client, not in the store). A plain HTTP/1.1 GET over loopback or the
//! operator's network, bounded in time; an endpoint that does not answer is shown as
//! such, never waited on.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Longest one endpoint may take to answer (connect, send, read).
pub const SCRAPE_TIMEOUT_MS: u64 = 1_000;

/// Largest answer read from one endpoint.
pub const SCRAPE_BYTES_MAX: u64 = 4 << 20;

/// Most endpoints a console reads (members of one group).
pub const RUN_ENDPOINTS_MAX: usize = 64;

/// One partition's lag as a run measured it.
#[derive(Clone, Debug, PartialEq)]
pub struct PartitionLag {
    /// The partition.
    pub partition: String,
    /// Events behind the source's end.
    pub events: Option<f64>,
    /// Seconds since the oldest event not yet settled was read (0 when caught up).
    pub seconds: Option<f64>,
}

/// What one run's endpoint said.
#[derive(Clone, Debug, PartialEq)]
pub struct RunHealth {
    /// The endpoint, as given.
    pub endpoint: String,
    /// Why it could not be read, if it could not.
    pub error: Option<String>,
    /// Seconds since the run's loop last turned.
    pub heartbeat_age_seconds: Option<f64>,
    /// `/readyz` answered 200.
    pub ready: bool,
    /// Lag per partition it reads.
    pub lag: Vec<PartitionLag>,
}

/// `http://HOST:PORT[/PATH]`: host, port, and the base path (without a trailing `/metrics`).
fn split(endpoint: &str) -> Result<(String, String), String> {
    let rest = endpoint
        .strip_prefix("http://")
        .ok_or_else(|| format!("`{endpoint}` is not an http:// address"))?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.is_empty() {
        return Err(format!("`{endpoint}` names no host"));
    }
    let base = path.trim_end_matches('/').trim_end_matches("metrics");
    Ok((
        authority.to_string(),
        format!("/{}", base.trim_matches('/')),
    ))
}

/// Checks an endpoint given on the command line.
pub fn check_endpoint(endpoint: &str) -> Result<(), String> {
    split(endpoint).map(|_| ())
}

/// GET `path` from `authority`: (status, body).
fn get(authority: &str, path: &str) -> Result<(u16, String), String> {
    let timeout = Duration::from_millis(SCRAPE_TIMEOUT_MS);
    let address = authority
        .to_socket_addrs()
        .map_err(|e| format!("{authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority}: no address"))?;
    let mut stream =
        TcpStream::connect_timeout(&address, timeout).map_err(|e| format!("{authority}: {e}"))?;
    stream.set_read_timeout(Some(timeout)).ok();
    stream.set_write_timeout(Some(timeout)).ok();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("{authority}: {e}"))?;
    // The whole answer within the time, however slowly it trickles.
    let deadline = std::time::Instant::now() + timeout;
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() || bytes.len() as u64 > SCRAPE_BYTES_MAX {
            return Err(format!(
                "{authority}: no whole answer within {SCRAPE_TIMEOUT_MS} ms"
            ));
        }
        stream.set_read_timeout(Some(left)).ok();
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("{authority}: {e}")),
        }
    }
    let answer = String::from_utf8_lossy(&bytes);
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{authority}: not an HTTP answer"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("{authority}: no status"))?;
    Ok((status, body.to_string()))
}

/// The value of the first sample of `name` in a Prometheus text page whose labels
/// contain `labels` (all of each `key="value"`).
fn samples<'a>(page: &'a str, name: &'a str) -> impl Iterator<Item = (&'a str, f64)> + 'a {
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(move |line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(rest) => rest.split_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            Some((labels, value.trim().parse().ok()?))
        })
}

fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    labels.split(',').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"'))
    })
}

/// Reads every endpoint at once (each within its own bound), in the order given.
pub fn read_all(endpoints: &[String]) -> Vec<RunHealth> {
    std::thread::scope(|scope| {
        let reads: Vec<_> = endpoints
            .iter()
            .map(|endpoint| scope.spawn(move || read(endpoint)))
            .collect();
        reads
            .into_iter()
            .zip(endpoints)
            .map(|(read, endpoint)| {
                read.join().unwrap_or_else(|_| RunHealth {
                    endpoint: endpoint.clone(),
                    error: Some("the read failed".into()),
                    heartbeat_age_seconds: None,
                    ready: false,
                    lag: Vec::new(),
                })
            })
            .collect()
    })
}

/// Reads one run's endpoint.
pub fn read(endpoint: &str) -> RunHealth {
    let mut health = RunHealth {
        endpoint: endpoint.to_string(),
        error: None,
        heartbeat_age_seconds: None,
        ready: false,
        lag: Vec::new(),
    };
    let (authority, base) = match split(endpoint) {
        Ok(parts) => parts,
        Err(error) => {
            health.error = Some(error);
            return health;
        }
    };
    let base = base.trim_end_matches('/');
    match get(&authority, &format!("{base}/metrics")) {
        Ok((200, page)) => {
            health.heartbeat_age_seconds = samples(&page, "ordo_loop_heartbeat_age_seconds")
                .map(|(_, v)| v)
                .next();
            let mut lag: std::collections::BTreeMap<String, PartitionLag> = Default::default();
            for (metric, seconds) in [
                ("ordo_source_lag_events", false),
                ("ordo_source_lag_seconds", true),
            ] {
                for (labels, value) in samples(&page, metric) {
                    let partition = label(labels, "partition").unwrap_or("-").to_string();
                    let entry = lag.entry(partition.clone()).or_insert(PartitionLag {
                        partition,
                        events: None,
                        seconds: None,
                    });
                    if seconds {
                        entry.seconds = Some(value);
                    } else {
                        entry.events = Some(value);
                    }
                }
            }
            health.lag = lag.into_values().collect();
        }
        Ok((status, _)) => health.error = Some(format!("/metrics answered {status}")),
        Err(error) => health.error = Some(error),
    }
    if health.error.is_none() {
        health.ready = matches!(get(&authority, &format!("{base}/readyz")), Ok((200, _)));
    }
    health
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_samples_are_read_apart() {
        assert_eq!(
            split("http://127.0.0.1:9464/metrics").unwrap(),
            ("127.0.0.1:9464".into(), "/".into())
        );
        assert_eq!(split("http://h:1").unwrap(), ("h:1".into(), "/".into()));
        assert!(split("https://h:1").is_err());
        let page = "# HELP x\nordo_loop_heartbeat_age_seconds 0.25\n\
                    ordo_source_lag_events{partition=\"3\"} 12\n\
                    ordo_source_lag_seconds{partition=\"3\"} 1.5\n";
        let beat: Vec<_> = samples(page, "ordo_loop_heartbeat_age_seconds").collect();
        assert_eq!(beat, vec![("", 0.25)]);
        let lag: Vec<_> = samples(page, "ordo_source_lag_events").collect();
        assert_eq!(lag, vec![("partition=\"3\"", 12.0)]);
        assert_eq!(label(lag[0].0, "partition"), Some("3"));
    }
}
