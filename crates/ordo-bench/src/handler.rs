//! Handlers through the real `ordo run --handler` path: a file source, the run loop, the
//! handler pool and its pooled HTTP client, the SQLite store, against a local HTTP server
//! that waits the delay each event carries (0–5 ms) and checks per-key order.
//!
//! Baselines on the same server, in the same run: one call at a time (a partition-ordered
//! consumer) and `concurrency` calls at once with no ordering at all (the ceiling), both
//! a plain hyper client loop. Keys are drawn uniformly over 10,000 keys (so some keys have
//! several events: with all-distinct keys, key ordering would be free) and Zipf-skewed
//! (s = 1.0), where the physical limit is max(the hottest key's serial time, total work ÷
//! concurrency), each measured with the raw client on the same server. A 0 ms handler
//! measures ordo's dispatch overhead per call.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use ordo_core::{Config, OpPolicy};
use ordo_runtime::handler::{HandlerOptions, HandlerPool, HttpHandler};
use ordo_runtime::{Consumer, RunOptions, SourceUrl};
use ordo_sim::Rng;
use tokio::task::JoinSet;

/// The benchmark's shape.
#[derive(Clone, Debug)]
pub struct HandlerShape {
    /// Events per ordo run.
    pub events: usize,
    /// Events of the one-call-at-a-time baseline (a rate; fewer keep it short).
    pub sequential_events: usize,
    /// Keys drawn from.
    pub keys: usize,
    /// Calls at once.
    pub concurrency: usize,
    /// Longest handler wait (each waits a uniform 0..=this).
    pub handler_ms_max: u64,
    /// Seed of keys and delays.
    pub seed: u64,
    /// Repetitions of each measure but the one-at-a-time baseline; the best counts (this
    /// machine's runs swing by 2x).
    pub repetitions: usize,
}

impl HandlerShape {
    /// 10,000 events over 10,000 keys, concurrency 100, 0–5 ms.
    pub fn full() -> Self {
        HandlerShape {
            events: 10_000,
            sequential_events: 2_000,
            keys: 10_000,
            concurrency: 100,
            handler_ms_max: 5,
            seed: 7,
            repetitions: 3,
        }
    }

    /// 3,000 events, for `--quick`.
    pub fn quick() -> Self {
        HandlerShape {
            events: 3_000,
            sequential_events: 600,
            repetitions: 2,
            ..HandlerShape::full()
        }
    }
}

/// What it measured.
#[derive(Clone, Debug)]
pub struct HandlerReport {
    /// ordo, uniform keys (events/s).
    pub uniform_events_per_s: f64,
    /// One call at a time (events/s).
    pub partition_events_per_s: f64,
    /// Unordered, `concurrency` at once (events/s).
    pub unordered_events_per_s: f64,
    /// ordo, Zipf keys (events/s).
    pub zipf_events_per_s: f64,
    /// The physical limit for the Zipf keys (events/s).
    pub zipf_limit_events_per_s: f64,
    /// Events of the hottest Zipf key.
    pub zipf_hottest_key_events: usize,
    /// ordo with a 0 ms handler (calls/s).
    pub zero_latency_calls_per_s: f64,
    /// The raw client, 0 ms, same concurrency (calls/s).
    pub raw_zero_latency_calls_per_s: f64,
    /// The shape measured.
    pub shape: HandlerShape,
}

impl HandlerReport {
    /// `handler_key_parallel_vs_partition` (goal ≥ 50).
    pub fn key_parallel_vs_partition(&self) -> f64 {
        self.uniform_events_per_s / self.partition_events_per_s
    }

    /// `handler_key_parallel_vs_unordered` (goal ≥ 0.9).
    pub fn key_parallel_vs_unordered(&self) -> f64 {
        self.uniform_events_per_s / self.unordered_events_per_s
    }

    /// `handler_zipf_vs_limit` (goal ≥ 0.8).
    pub fn zipf_vs_limit(&self) -> f64 {
        self.zipf_events_per_s / self.zipf_limit_events_per_s
    }

    /// ordo's 0 ms calls/s over the raw client's (goal ≥ 0.7).
    pub fn zero_latency_vs_raw(&self) -> f64 {
        self.zero_latency_calls_per_s / self.raw_zero_latency_calls_per_s
    }
}

/// One event: its key and how long its call waits.
#[derive(Clone, Copy, Debug)]
struct Planned {
    key: usize,
    ms: u64,
}

fn uniform(shape: &HandlerShape, ms_max: u64) -> Vec<Planned> {
    let mut rng = Rng::derive(shape.seed, "handler uniform");
    (0..shape.events)
        .map(|_| Planned {
            key: rng.index(shape.keys),
            ms: rng.range(0, ms_max),
        })
        .collect()
}

fn zipf(shape: &HandlerShape) -> Vec<Planned> {
    let weights: Vec<f64> = (1..=shape.keys).map(|k| 1.0 / k as f64).collect();
    let total: f64 = weights.iter().sum();
    let mut cumulative = Vec::with_capacity(shape.keys);
    let mut sum = 0.0;
    for weight in weights {
        sum += weight / total;
        cumulative.push(sum);
    }
    let mut rng = Rng::derive(shape.seed, "handler zipf");
    (0..shape.events)
        .map(|_| {
            let draw = rng.below(1 << 53) as f64 / (1u64 << 53) as f64;
            let key = cumulative
                .partition_point(|&c| c < draw)
                .min(shape.keys - 1);
            Planned {
                key,
                ms: rng.range(0, shape.handler_ms_max),
            }
        })
        .collect()
}

fn lines(planned: &[Planned]) -> String {
    let mut versions: HashMap<usize, u64> = HashMap::new();
    let mut text = String::with_capacity(planned.len() * 100);
    for (i, event) in planned.iter().enumerate() {
        let version = versions.entry(event.key).or_default();
        *version += 1;
        text.push_str(&format!(
            r#"{{"id":"e{i}","stream":"k{}","version":{version},"type":"Called","op":"call","data":{{"ms":{}}}}}"#,
            event.key, event.ms
        ));
        text.push('\n');
    }
    text
}

/// Only the 0 ms ordo run, `repetitions` times (for profiles); its calls/s.
pub fn run_zero_latency_only(shape: HandlerShape) -> Result<f64, String> {
    let server = Server::start();
    let plan = uniform(&shape, 0);
    let mut best: f64 = 0.0;
    for _ in 0..shape.repetitions.max(1) {
        best = best.max(through_ordo(&server, &shape, &plan)?);
    }
    Ok(best)
}

/// Runs every part. Errors name what could not be set up.
pub fn run(shape: HandlerShape) -> Result<HandlerReport, String> {
    let server = Server::start();
    let best = |measure: &mut dyn FnMut() -> Result<f64, String>| -> Result<f64, String> {
        let mut best: f64 = 0.0;
        for _ in 0..shape.repetitions.max(1) {
            best = best.max(measure()?);
        }
        Ok(best)
    };
    let uniform_plan = uniform(&shape, shape.handler_ms_max);
    let uniform_events_per_s = best(&mut || through_ordo(&server, &shape, &uniform_plan))?;
    let sequential = &uniform_plan[..shape.sequential_events.min(uniform_plan.len())];
    let partition_events_per_s = raw_loop(&server, sequential, 1);
    let unordered_events_per_s =
        best(&mut || Ok(raw_loop(&server, &uniform_plan, shape.concurrency)))?;
    let zipf_plan = zipf(&shape);
    let zipf_events_per_s = best(&mut || through_ordo(&server, &shape, &zipf_plan))?;
    let mut hottest = 0;
    let zipf_limit_events_per_s = best(&mut || {
        let (limit, events) = limit(&server, &shape, &zipf_plan);
        hottest = events;
        Ok(limit)
    })?;
    let zipf_hottest_key_events = hottest;
    let zero_plan = uniform(&shape, 0);
    let zero_latency_calls_per_s = best(&mut || through_ordo(&server, &shape, &zero_plan))?;
    let raw_zero_latency_calls_per_s =
        best(&mut || Ok(raw_loop(&server, &zero_plan, shape.concurrency)))?;
    let breaches = server.breaches();
    if breaches > 0 {
        return Err(format!("{breaches} calls arrived out of per-key order"));
    }
    Ok(HandlerReport {
        uniform_events_per_s,
        partition_events_per_s,
        unordered_events_per_s,
        zipf_events_per_s,
        zipf_limit_events_per_s,
        zipf_hottest_key_events,
        zero_latency_calls_per_s,
        raw_zero_latency_calls_per_s,
        shape,
    })
}

/// The physical limit for `planned`, as events/s: its time is the longer of the hottest
/// key's calls made one after another and all calls made `concurrency` at once with no
/// order, both measured on the same server (so HTTP and timer costs count on both sides).
/// Also the hottest key's event count.
fn limit(server: &Server, shape: &HandlerShape, planned: &[Planned]) -> (f64, usize) {
    let hottest = hottest_key(planned);
    let serial: Vec<Planned> = planned
        .iter()
        .copied()
        .filter(|e| e.key == hottest)
        .collect();
    let serial_s = serial.len() as f64 / raw_loop(server, &serial, 1);
    let parallel_s = planned.len() as f64 / raw_loop(server, planned, shape.concurrency);
    (
        planned.len() as f64 / serial_s.max(parallel_s),
        serial.len(),
    )
}

/// The key whose calls wait longest in total.
fn hottest_key(planned: &[Planned]) -> usize {
    let mut per_key: HashMap<usize, u64> = HashMap::new();
    for event in planned {
        *per_key.entry(event.key).or_default() += event.ms + 1;
    }
    per_key
        .into_iter()
        .max_by_key(|&(key, ms)| (ms, std::cmp::Reverse(key)))
        .map_or(0, |(key, _)| key)
}

/// `ordo run --source file: --store sqlite: --handler http://… --exit-when-idle`, in
/// process; events per second from start to the last commit.
fn through_ordo(server: &Server, shape: &HandlerShape, planned: &[Planned]) -> Result<f64, String> {
    server.reset();
    let dir = tempfile_dir()?;
    let input = dir.join("events.jsonl");
    std::fs::write(&input, lines(planned)).map_err(|e| e.to_string())?;
    let store = ordo_store::SqliteStore::open(dir.join("state.db").to_str().unwrap(), true)
        .map_err(|e| e.to_string())?;
    let url = SourceUrl::parse(&format!("file:{}", input.display())).map_err(|e| e.to_string())?;
    let config = Config {
        op_policy: OpPolicy::Custom,
        ..Config::default()
    };
    let handler = HttpHandler::new(&server.url()).map_err(|e| e.to_string())?;
    let options = HandlerOptions {
        concurrency: shape.concurrency,
        ..HandlerOptions::default()
    };
    let pool = HandlerPool::start(handler, options).map_err(|e| e.to_string())?;
    let mut consumer = Consumer::open(store, &url.checkpoint_key(), config)
        .map_err(|e| e.to_string())?
        .with_handlers(pool);
    consumer.verbose = false;
    let mut source = ordo_runtime::open_source(&url).map_err(|e| e.to_string())?;
    let run = RunOptions {
        exit_when_idle: true,
        ..RunOptions::default()
    };
    let started = Instant::now();
    let report = ordo_runtime::run(
        &mut consumer,
        source.as_mut(),
        &run,
        &AtomicBool::new(false),
    )
    .map_err(|e| e.to_string())?;
    let elapsed = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    if report.counters.applied != planned.len() as u64 {
        return Err(format!(
            "ordo applied {} of {} events",
            report.counters.applied,
            planned.len()
        ));
    }
    Ok(planned.len() as f64 / elapsed)
}

fn tempfile_dir() -> Result<std::path::PathBuf, String> {
    let dir = std::env::temp_dir().join(format!(
        "ordo-bench-handler-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    Ok(dir)
}

/// A plain pooled hyper client posting the same bodies, `concurrency` at once, no order.
fn raw_loop(server: &Server, planned: &[Planned], concurrency: usize) -> f64 {
    server.reset_order_only();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let bodies: Vec<Bytes> = lines(planned)
        .lines()
        .map(|line| Bytes::from(format!(r#"{{"event":{line},"raw":true}}"#)))
        .collect();
    let url: hyper::Uri = server.url().parse().expect("a URL");
    runtime.block_on(async move {
        let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        let started = Instant::now();
        let mut running = JoinSet::new();
        for body in bodies {
            if running.len() == concurrency {
                running.join_next().await;
            }
            let client = client.clone();
            let url = url.clone();
            running.spawn(async move {
                let request = hyper::Request::post(url)
                    .header(hyper::header::CONTENT_TYPE, "application/json")
                    .body(Full::new(body))
                    .expect("a request");
                if let Ok(response) = client.request(request).await {
                    let _ = response.into_body().collect().await;
                }
            });
        }
        while running.join_next().await.is_some() {}
        planned.len() as f64 / started.elapsed().as_secs_f64()
    })
}

/// The local handler service: waits `data.ms`, answers 204, and counts calls that came
/// before their key's previous version (ordo's runs only; raw loops are unordered).
struct Server {
    address: SocketAddr,
    state: Arc<Mutex<ServerState>>,
    _thread: std::thread::JoinHandle<()>,
}

#[derive(Default)]
struct ServerState {
    versions: HashMap<String, u64>,
    breaches: u64,
    check_order: bool,
}

impl Server {
    fn start() -> Server {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        listener.set_nonblocking(true).expect("non-blocking");
        let address = listener.local_addr().expect("an address");
        let state = Arc::new(Mutex::new(ServerState::default()));
        let shared = state.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime");
            runtime.block_on(serve(listener, shared));
        });
        Server {
            address,
            state,
            _thread: thread,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/events", self.address)
    }

    fn reset(&self) {
        let mut state = self.state.lock().expect("server state");
        state.versions.clear();
        state.check_order = true;
    }

    fn reset_order_only(&self) {
        self.state.lock().expect("server state").check_order = false;
    }

    fn breaches(&self) -> u64 {
        self.state.lock().expect("server state").breaches
    }
}

async fn serve(listener: std::net::TcpListener, state: Arc<Mutex<ServerState>>) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
    // Ends with the process (the benchmark runs once).
    while let Ok((socket, _)) = listener.accept().await {
        let _ = socket.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(request, &state).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(socket), service)
                .await;
        });
    }
}

async fn answer(
    request: hyper::Request<hyper::body::Incoming>,
    state: &Mutex<ServerState>,
) -> hyper::Response<Full<Bytes>> {
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let event = &value["event"];
    let ms = event["data"]["ms"].as_u64().unwrap_or(0);
    {
        let mut state = state.lock().expect("server state");
        if state.check_order {
            let stream = event["stream"].as_str().unwrap_or_default().to_string();
            let version = event["version"].as_u64().unwrap_or(0);
            let last = state.versions.entry(stream).or_default();
            let in_order = version == *last + 1;
            *last = (*last).max(version);
            if !in_order {
                state.breaches += 1;
            }
        }
    }
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    hyper::Response::builder()
        .status(204)
        .body(Full::new(Bytes::new()))
        .expect("a response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_keys_are_skewed_and_the_limit_is_the_hottest_key_or_the_pool() {
        let shape = HandlerShape {
            events: 5_000,
            ..HandlerShape::quick()
        };
        let planned = zipf(&shape);
        let count = |plan: &[Planned], key| plan.iter().filter(|e| e.key == key).count();
        // With s = 1 over 10,000 keys the first key draws about 1/H(10000) ≈ 10.3 %.
        let hottest = count(&planned, hottest_key(&planned));
        assert!((350..700).contains(&hottest), "{hottest}");
        let flat = uniform(&shape, shape.handler_ms_max);
        let flat_hottest = count(&flat, hottest_key(&flat));
        assert!(flat_hottest < 10, "{flat_hottest}");
    }

    #[test]
    fn a_small_run_goes_through_ordo_in_key_order() {
        let shape = HandlerShape {
            events: 400,
            sequential_events: 50,
            keys: 40,
            concurrency: 16,
            handler_ms_max: 2,
            seed: 3,
            repetitions: 1,
        };
        let report = run(shape).expect("the benchmark runs");
        assert!(report.uniform_events_per_s > 0.0);
        assert!(report.zipf_vs_limit() > 0.0);
    }
}
