//! The HTTP endpoint beside the run loop: `/metrics`, `/healthz` and `/readyz`. It runs on
//! the tokio runtime that waits for signals (the loop itself runs on the blocking pool),
//! so a stuck loop cannot stop it from saying so.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};

use super::{Health, StatusReader, Telemetry};

/// Longest a scrape or probe waits for the store's status.
pub const STORE_READ_TIMEOUT_MS: u64 = 5_000;

/// Pause after a failed `accept` before the next.
const ACCEPT_RETRY_MS: u64 = 100;

/// Longest a stopping endpoint waits for a store read still out.
pub(crate) const SHUTDOWN_WAIT_MS: u64 = 1_000;

/// Where the endpoint listens and what it reads.
pub struct Endpoint {
    /// Bound by the caller (so a taken port is a startup error, not a log line).
    pub listener: std::net::TcpListener,
    /// The telemetry the loop updates.
    pub telemetry: Arc<Telemetry>,
    /// The store's status, through a connection of the endpoint's own.
    pub reader: StatusReader,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("listener", &self.listener)
            .finish()
    }
}

/// What the endpoint shares between requests.
struct Shared {
    telemetry: Arc<Telemetry>,
    reader: Mutex<StatusReader>,
}

/// An endpoint served on a thread of its own (for loops that do not run on tokio, such as
/// the outbox relay); it stops when this is dropped.
#[must_use = "the endpoint stops when this is dropped"]
pub struct Serving {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Serves `endpoint` on a thread of its own until the returned guard is dropped.
pub fn serve_in_background(endpoint: Endpoint) -> Serving {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        runtime.block_on(async move {
            tokio::select! {
                _ = serve(endpoint) => {}
                _ = stopped => {}
            }
        });
        // A store read still out (a database that hangs) must not hold the exit up.
        runtime.shutdown_timeout(Duration::from_millis(SHUTDOWN_WAIT_MS));
    });
    Serving {
        stop: Some(stop),
        thread: Some(thread),
    }
}

/// Serves the endpoint until the task is dropped.
pub async fn serve(endpoint: Endpoint) {
    let Endpoint {
        listener,
        telemetry,
        reader,
    } = endpoint;
    let listener = match listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpListener::from_std(listener))
    {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, "the metrics endpoint cannot listen");
            return;
        }
    };
    let shared = Arc::new(Shared {
        telemetry,
        reader: Mutex::new(reader),
    });
    loop {
        let socket = match listener.accept().await {
            Ok((socket, _)) => socket,
            Err(error) => {
                // Out of file descriptors, say: wait instead of spinning on the thread
                // that also waits for signals.
                tracing::warn!(%error, "the metrics endpoint cannot accept");
                tokio::time::sleep(Duration::from_millis(ACCEPT_RETRY_MS)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<_>| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(answer(&shared, request.uri().path()).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(socket), service)
                .await;
        });
    }
}

async fn answer(shared: &Arc<Shared>, path: &str) -> Response<Full<Bytes>> {
    match path {
        "/metrics" => {
            shared.telemetry.refresh_lag().await;
            let status = read_status(shared).await;
            let text = shared.telemetry.encode(status.as_ref().ok());
            if let Err(error) = &status {
                tracing::warn!(%error, "metrics: the store's status could not be read");
            }
            let mut response = Response::new(Full::new(Bytes::from(text)));
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        "/healthz" => match shared.telemetry.health() {
            Health::Alive => plain(StatusCode::OK, "ok".into()),
            Health::Stuck(why) => plain(StatusCode::SERVICE_UNAVAILABLE, why),
        },
        "/readyz" => {
            if let Health::Stuck(why) = shared.telemetry.health() {
                return plain(StatusCode::SERVICE_UNAVAILABLE, why);
            }
            if !shared.telemetry.is_ready() {
                return plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: starting, or no partition assigned".into(),
                );
            }
            if !shared.telemetry.source_reachable() {
                return plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: the source is unreachable (no broker up)".into(),
                );
            }
            match read_status(shared).await {
                Ok(_) => plain(StatusCode::OK, "ready".into()),
                Err(error) => plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the store cannot be read: {error}"),
                ),
            }
        }
        _ => plain(
            StatusCode::NOT_FOUND,
            "not found (try /metrics, /healthz or /readyz)".into(),
        ),
    }
}

/// The store's status, read on the blocking pool (SQLite and PostgreSQL clients block),
/// within [`STORE_READ_TIMEOUT_MS`]; one read at a time, so a store that hangs ties up
/// one thread, and probes meanwhile get a prompt answer.
async fn read_status(shared: &Arc<Shared>) -> Result<ordo_store::StoreStatus, String> {
    let shared = shared.clone();
    let read = tokio::task::spawn_blocking(move || {
        let mut reader = match shared.reader.try_lock() {
            Ok(reader) => reader,
            Err(std::sync::TryLockError::WouldBlock) => {
                return Err("an earlier store read has not answered yet".to_string())
            }
            Err(std::sync::TryLockError::Poisoned(_)) => {
                return Err("an earlier store read panicked".to_string())
            }
        };
        (reader)().map_err(|e| e.to_string())
    });
    match tokio::time::timeout(Duration::from_millis(STORE_READ_TIMEOUT_MS), read).await {
        Ok(joined) => joined.map_err(|e| e.to_string())?,
        Err(_) => Err(format!(
            "the store did not answer within {STORE_READ_TIMEOUT_MS} ms"
        )),
    }
}

fn plain(status: StatusCode, text: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text + "\n")));
    *response.status_mut() = status;
    response
}
