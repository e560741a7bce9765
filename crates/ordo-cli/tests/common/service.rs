//! A real HTTP handler service for the handler tests: it keeps its own documents with the
//! document projection's rules, deduplicates by `Idempotency-Key`, and checks what ordo
//! promises a handler: per-stream version order and one call at a time per stream and per
//! document. It answers 503 to a share of calls and is slow on others.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use ordo_core::{parse_event, OpPolicy};
use ordo_projection::{Document, DocumentProjection, Projection};
use ordo_sim::{Export, Rng, Row};

/// How the service misbehaves.
#[derive(Clone, Debug)]
pub struct Behaviour {
    /// Seed of its choices.
    pub seed: u64,
    /// Calls answered 503, per thousand.
    pub unavailable_per_mille: u64,
    /// Longest pause before answering, in ms (drawn per call).
    pub slow_ms_max: u64,
    /// Events whose `type` is this are refused with 422 while `refusing` is on.
    pub refused_type: Option<String>,
    /// Streams the service never answers for.
    pub silent_streams: Vec<String>,
    /// Streams always answered after this many ms (on top of `slow_ms_max`).
    pub slow_streams: Vec<(String, u64)>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            seed: 1,
            unavailable_per_mille: 0,
            slow_ms_max: 0,
            refused_type: None,
            silent_streams: Vec::new(),
            slow_streams: Vec::new(),
        }
    }
}

/// What the service saw and holds.
#[derive(Default)]
pub struct State {
    /// Idempotency keys applied.
    pub applied: HashSet<String>,
    /// Each stream's last applied version.
    pub versions: BTreeMap<String, u64>,
    /// Each document.
    pub documents: HashMap<String, Option<Document>>,
    /// Merge sources and their targets.
    pub aliases: HashMap<String, String>,
    /// Order or exclusivity breaches seen.
    pub breaches: Vec<String>,
    /// Calls running now, and the most at once.
    pub running: usize,
    /// The most calls running at once.
    pub peak: usize,
    /// Calls answered.
    pub calls: u64,
    /// Calls answered 503.
    pub unavailable: u64,
    /// Calls for a key already applied (sent again after a crash).
    pub resent: u64,
    /// Whether `refused_type` is refused now.
    pub refusing: bool,
    busy: HashSet<String>,
    rng: Option<Rng>,
}

impl State {
    /// The service's state in the oracle's shape.
    pub fn export(&self) -> Export {
        let resolve = |stream: &str| {
            let mut current = stream.to_string();
            let mut seen = 0;
            while let Some(next) = self.aliases.get(&current) {
                current = next.clone();
                seen += 1;
                assert!(seen < 10_000, "alias cycle at {stream}");
            }
            (current != stream).then_some(current)
        };
        let streams: std::collections::BTreeSet<&String> =
            self.versions.keys().chain(self.documents.keys()).collect();
        streams
            .into_iter()
            .map(|stream| {
                let document = self.documents.get(stream).cloned().flatten();
                let row = Row {
                    version: self.versions.get(stream).copied().unwrap_or(0),
                    doc: document.as_ref().and_then(|d| d.value().cloned()),
                    deleted: matches!(document, Some(Document::Deleted)),
                    merged_into: resolve(stream),
                };
                (stream.clone(), row)
            })
            .collect()
    }
}

/// The running service.
pub struct Service {
    /// Where it listens.
    pub address: SocketAddr,
    /// What it saw.
    pub state: Arc<Mutex<State>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Service {
    /// Starts on a free loopback port.
    pub fn start(behaviour: Behaviour) -> Service {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            rng: Some(Rng::derive(behaviour.seed, "service")),
            refusing: behaviour.refused_type.is_some(),
            ..State::default()
        }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shared = state.clone();
        let behaviour = Arc::new(behaviour);
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(serve(listener, shared, behaviour, stopped));
        });
        Service {
            address,
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `http://ADDRESS/events`.
    pub fn url(&self) -> String {
        format!("http://{}/events", self.address)
    }

    /// Waits until no call runs (a killed ordo's calls have finished), at most 10 s.
    pub fn wait_quiet(&self) {
        for _ in 0..1000 {
            if self.state.lock().unwrap().running == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the service still runs calls after 10 s");
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    state: Arc<Mutex<State>>,
    behaviour: Arc<Behaviour>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut stopped => return,
        };
        let Ok((socket, _)) = accepted else { continue };
        let state = state.clone();
        let behaviour = behaviour.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let state = state.clone();
                let behaviour = behaviour.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(answer(request, &state, &behaviour).await)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(socket), service)
                .await;
        });
    }
}

fn respond(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// Clears a call's busy marks however the call ends (a connection dropped mid-call too).
struct Busy<'a> {
    state: &'a Mutex<State>,
    keys: Vec<String>,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        let mut state = self.state.lock().unwrap();
        for key in &self.keys {
            state.busy.remove(key);
        }
        state.running -= 1;
    }
}

async fn answer(
    request: Request<Incoming>,
    state: &Mutex<State>,
    behaviour: &Behaviour,
) -> Response<Full<Bytes>> {
    let key = request
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let Ok(body) = request.into_body().collect().await else {
        return respond(StatusCode::BAD_REQUEST, "unreadable body");
    };
    let body: serde_json::Value = match serde_json::from_slice(&body.to_bytes()) {
        Ok(body) => body,
        Err(e) => return respond(StatusCode::BAD_REQUEST, &format!("not JSON: {e}")),
    };
    let event_text = body["event"].to_string();
    let Ok(event) = parse_event(event_text.as_bytes(), OpPolicy::Custom) else {
        return respond(StatusCode::BAD_REQUEST, "the body's event is no envelope");
    };
    let document = body["document"].as_str().unwrap_or_default().to_string();
    let sources: Vec<String> = body["sources"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let stream = event.stream.to_string();
    let (delay_ms, unavailable, busy) = {
        let mut guard = state.lock().unwrap();
        let state = &mut *guard;
        if key.as_deref() != Some(&*event.id) {
            state.breaches.push(format!(
                "{stream} v{}: Idempotency-Key {key:?}",
                event.version
            ));
        }
        let mut wanted = vec![format!("stream:{stream}"), format!("document:{document}")];
        wanted.extend(sources.iter().map(|s| format!("document:{s}")));
        wanted.dedup();
        // Only the marks this call set are its to clear: a breach must not hide the next.
        let mut marks = Vec::new();
        for mark in wanted {
            if state.busy.insert(mark.clone()) {
                marks.push(mark);
            } else {
                let version = event.version;
                state.breaches.push(format!(
                    "{stream} v{version}: {mark} already has a call running"
                ));
            }
        }
        state.running += 1;
        state.peak = state.peak.max(state.running);
        let rng = state.rng.as_mut().unwrap();
        let fixed_ms = behaviour
            .slow_streams
            .iter()
            .find(|(slow, _)| *slow == stream)
            .map_or(0, |(_, ms)| *ms);
        let delay_ms = fixed_ms
            + if behaviour.slow_ms_max > 0 {
                rng.range(0, behaviour.slow_ms_max)
            } else {
                0
            };
        let unavailable = rng.range(0, 999) < behaviour.unavailable_per_mille;
        (delay_ms, unavailable, marks)
    };
    let _busy = Busy { state, keys: busy };
    if behaviour.silent_streams.contains(&stream) {
        std::future::pending::<()>().await;
    }
    if delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    }
    let mut state = state.lock().unwrap();
    state.calls += 1;
    if unavailable {
        state.unavailable += 1;
        return respond(StatusCode::SERVICE_UNAVAILABLE, "busy, try later");
    }
    if state.applied.contains(&*event.id) {
        state.resent += 1;
        return respond(StatusCode::OK, "already applied");
    }
    if state.refusing && behaviour.refused_type.as_deref() == Some(&*event.event_type) {
        return respond(
            StatusCode::UNPROCESSABLE_ENTITY,
            "sku unknown to the warehouse",
        );
    }
    let applied = state.versions.get(&stream).copied().unwrap_or(0);
    if event.version != applied + 1 {
        state.breaches.push(format!(
            "{stream}: v{} sent while v{applied} was the last applied",
            event.version
        ));
    }
    let projection = DocumentProjection;
    let result = if sources.is_empty() {
        let slot = state.documents.entry(document.clone()).or_default();
        projection.apply(slot, &event)
    } else {
        let mut folded = state.documents.get(&document).cloned().flatten();
        let mut result = Ok(());
        for source in &sources {
            let from = state.documents.get(source).cloned().flatten();
            result = projection.fold(&mut folded, from);
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() {
            state.documents.insert(document.clone(), folded);
            for source in &sources {
                state.documents.insert(source.clone(), None);
                state.aliases.insert(source.clone(), document.clone());
            }
        }
        result
    };
    match result {
        Ok(()) => {
            state.applied.insert(event.id.to_string());
            state.versions.insert(stream, event.version);
            respond(StatusCode::OK, "")
        }
        Err(rejection) => respond(StatusCode::UNPROCESSABLE_ENTITY, &rejection.reason),
    }
}
