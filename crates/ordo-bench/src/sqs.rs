//! Amazon SQS end-to-end, against moto's server mode (`python3 -m moto.server`, a server
//! of the benchmark's own on a free loopback port): a FIFO queue consumed by ordo into
//! SQLite, beside a raw receive-and-delete loop on the same queue in the same run; over
//! many message groups, and over one (the single-group ceiling).
//!
//! The raw loop is a fair baseline: as many loops as ordo has receivers ([`RECEIVERS`]),
//! each receiving ten messages at a time and deleting them in one batch, with the same
//! client ordo uses. moto's own speed bounds both: its long polls spin while a FIFO group
//! is blocked, and it slows down with a queue's length, so the queues here hold a few
//! hundred messages (docs/brokers.md).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ordo_core::Event;
use ordo_sqs::credentials::{CredentialChain, Environment};
use ordo_sqs::{Outgoing, SqsClient, SqsSource, SqsUrl};
use serde_json::json;

/// Longest wait for moto's server to say where it listens.
const START_LIMIT: Duration = Duration::from_secs(30);

/// The region every queue is made in.
pub const REGION: &str = "us-east-1";

/// Receive loops, ordo's and the raw baseline's.
pub const RECEIVERS: usize = 2;

/// Quiet time ordo waits before calling the queue drained (not counted).
const IDLE_MS: u64 = 300;

/// Longest a raw loop may take.
const RAW_LIMIT: Duration = Duration::from_secs(300);

/// Keys for moto (it checks none).
pub fn moto_keys() -> Environment {
    [
        ("AWS_ACCESS_KEY_ID", "ordo-moto"),
        ("AWS_SECRET_ACCESS_KEY", "ordo-moto-secret"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// One moto server, killed when dropped.
pub struct Moto {
    child: Child,
    /// Where it listens (`http://127.0.0.1:PORT`).
    pub endpoint: String,
    runtime: tokio::runtime::Runtime,
    client: SqsClient,
}

impl Moto {
    /// Starts a server on a free loopback port, or says why it cannot.
    pub fn start() -> Result<Moto, String> {
        let mut child = Command::new("python3")
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run python3 -m moto.server ({e})"))?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let (found, listening) = std::sync::mpsc::channel();
        // Reads moto's log to its end, so that its pipe never fills.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.split("Running on ").nth(1) {
                    let _ = found.send(at.trim().to_string());
                }
            }
        });
        let Ok(endpoint) = listening.recv_timeout(START_LIMIT) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("moto's server did not start (pip install 'moto[server]')".into());
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let client = SqsClient::new(&endpoint, REGION, CredentialChain::new(moto_keys()))
            .map_err(|e| e.to_string())?;
        Ok(Moto {
            child,
            endpoint,
            runtime,
            client,
        })
    }

    /// The client, signed with [`moto_keys`].
    pub fn client(&self) -> &SqsClient {
        &self.client
    }

    /// Runs a call of the client to its end.
    pub fn block_on<T>(&self, call: impl std::future::Future<Output = T>) -> T {
        self.runtime.block_on(call)
    }

    /// Creates a queue (FIFO when its name ends in `.fifo`); its URL.
    pub fn queue(&self, name: &str) -> Result<String, String> {
        let mut attributes = json!({});
        if name.ends_with(".fifo") {
            attributes["FifoQueue"] = json!("true");
        }
        let body = json!({ "QueueName": name, "Attributes": attributes });
        let answer = self
            .block_on(
                self.client
                    .call("CreateQueue", &body, Duration::from_secs(10)),
            )
            .map_err(|e| e.to_string())?;
        answer["QueueUrl"]
            .as_str()
            .map(String::from)
            .ok_or_else(|| "CreateQueue without QueueUrl".into())
    }

    /// The source URL of queue `name`, with `extra` query parameters.
    pub fn source(&self, name: &str, extra: &str) -> String {
        format!(
            "sqs://{name}?region={REGION}&endpoint={}{extra}",
            self.endpoint
        )
    }

    /// Sends raw bodies, each with its group and deduplication id, ten a call.
    pub fn send_raw(
        &self,
        queue: &str,
        messages: &[(Option<String>, Option<String>, String)],
    ) -> Result<(), String> {
        for chunk in messages.chunks(ordo_sqs::BATCH_ENTRIES_MAX) {
            let outgoing: Vec<Outgoing<'_>> = chunk
                .iter()
                .map(|(group, id, body)| Outgoing {
                    body,
                    group_id: group.as_deref(),
                    deduplication_id: id.as_deref(),
                })
                .collect();
            let refused = self
                .block_on(self.client.send(queue, &outgoing))
                .map_err(|e| e.to_string())?;
            if let Some(first) = refused.first() {
                return Err(format!("moto refused a message: {first:?}"));
            }
        }
        Ok(())
    }

    /// Sends events to a FIFO queue, the group their stream; every one gets its own
    /// deduplication id (`tag` and its index), so that duplicates among them are sent.
    pub fn send_events(&self, queue: &str, events: &[Event], tag: &str) -> Result<(), String> {
        let messages: Vec<_> = events
            .iter()
            .enumerate()
            .map(|(n, e)| {
                (
                    Some(e.stream.to_string()),
                    Some(format!("{tag}{n}-{}", e.id)),
                    e.to_json_string(),
                )
            })
            .collect();
        self.send_raw(queue, &messages)
    }

    /// Messages in the queue: visible, and received but not deleted.
    pub fn counts(&self, queue: &str) -> Result<(u64, u64), String> {
        let names = [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
        ];
        let attributes = self
            .block_on(self.client.attributes(queue, &names))
            .map_err(|e| e.to_string())?;
        let count = |name: &str| {
            attributes[name]
                .as_str()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("no {name}"))
        };
        Ok((count(names[0])?, count(names[1])?))
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One workload's figures.
#[derive(Clone, Copy, Debug)]
pub struct SqsFigures {
    /// ordo into SQLite, durable, events per second (first delivery to last commit).
    pub ordo_events_per_s: f64,
    /// The raw receive-and-delete loops, messages per second.
    pub raw_events_per_s: f64,
}

impl SqsFigures {
    /// ordo / raw.
    pub fn ratio(&self) -> f64 {
        self.ordo_events_per_s / self.raw_events_per_s
    }
}

/// Results of the SQS benchmark.
#[derive(Clone, Copy, Debug)]
pub struct SqsResult {
    /// Messages per workload.
    pub events: usize,
    /// Over 100 message groups.
    pub spread: SqsFigures,
    /// Every message in one group.
    pub single_group: SqsFigures,
}

/// Runs the benchmark, or says why it cannot (no moto).
pub fn run(events: usize) -> Result<SqsResult, String> {
    let moto = Moto::start()?;
    Ok(SqsResult {
        events,
        spread: workload(&moto, events, 100, "spread")?,
        single_group: workload(&moto, events, 1, "one")?,
    })
}

/// One workload: `events` over `groups` streams on a FIFO queue of its own, read by the
/// raw loops, sent again and read by ordo.
fn workload(moto: &Moto, events: usize, groups: usize, tag: &str) -> Result<SqsFigures, String> {
    let name = format!("bench-{tag}.fifo");
    let queue = moto.queue(&name)?;
    let history = history(events, groups);
    moto.send_events(&queue, &history, "raw")?;
    let raw = raw_loops(moto, &queue, events)?;
    moto.send_events(&queue, &history, "ordo")?;
    let url = SqsUrl::parse(&moto.source(&name, "")).map_err(|e| e.to_string())?;
    let keys = CredentialChain::new(moto_keys());
    let mut source = SqsSource::open_with(&url, IDLE_MS, keys).map_err(|e| e.to_string())?;
    let ordo = crate::embedded::durable_rate("sqs", &format!("sqs:{name}"), &mut source)?;
    Ok(SqsFigures {
        ordo_events_per_s: ordo,
        raw_events_per_s: raw,
    })
}

/// `events` increments over `groups` accounts, in order.
fn history(events: usize, groups: usize) -> Vec<Event> {
    let mut versions = vec![0u64; groups];
    (0..events)
        .map(|i| {
            let g = i % groups;
            versions[g] += 1;
            let body = format!(
                r#"{{"id":"e{i}","stream":"account-{g}","version":{},"type":"Credited","op":"incr","data":{{"balance":{}}}}}"#,
                versions[g],
                i % 97 + 1
            );
            ordo_core::parse_event(body.as_bytes(), ordo_core::OpPolicy::Document)
                .expect("a valid envelope")
        })
        .collect()
}

/// [`RECEIVERS`] loops receiving ten at a time and deleting each batch, until `events`
/// were read; messages per second from the first receive to the last delete.
fn raw_loops(moto: &Moto, queue: &str, events: usize) -> Result<f64, String> {
    let read = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let result: Result<(), String> = moto.block_on(async {
        let loops = (0..RECEIVERS).map(|_| {
            let read = read.clone();
            let client = moto.client().clone();
            let queue = queue.to_string();
            tokio::spawn(async move {
                while read.load(Ordering::Relaxed) < events {
                    if started.elapsed() > RAW_LIMIT {
                        return Err("the raw loops did not finish within 300 s".to_string());
                    }
                    let messages = client
                        .receive(&queue, ordo_sqs::BATCH_ENTRIES_MAX, 1, 30)
                        .await
                        .map_err(|e| e.to_string())?;
                    if messages.is_empty() {
                        continue;
                    }
                    let receipts: Vec<&str> =
                        messages.iter().map(|m| m.receipt_handle.as_str()).collect();
                    client
                        .delete(&queue, &receipts)
                        .await
                        .map_err(|e| e.to_string())?;
                    std::hint::black_box(messages.iter().map(|m| m.body.len()).sum::<usize>());
                    read.fetch_add(messages.len(), Ordering::Relaxed);
                }
                Ok(())
            })
        });
        for handle in loops.collect::<Vec<_>>() {
            handle.await.map_err(|e| e.to_string())??;
        }
        Ok(())
    });
    result?;
    Ok(read.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}
