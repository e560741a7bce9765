//! The HTTP side: routes, the access check on every request, store reads run off the
//! async threads one at a time (one connection), pages rendered from what they read.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use ordo_store::journal::JournalFilter;

use crate::access::{Access, AccessError, TOKEN_COOKIE};
use crate::pages::{self, DeadLetterFilter, JournalQuery};
use crate::reads::{Reader, JOURNAL_PAGE_MAX};

/// Longest a page waits for the store before it says the store does not answer.
pub const READ_TIMEOUT_MS: u64 = 10_000;

/// Waiting streams the Waiting page names at most.
pub const WAITING_PAGE_STREAMS: usize = 500;

/// How the console runs.
#[derive(Clone, Debug)]
pub struct ConsoleConfig {
    /// The store (`sqlite:PATH`, `postgres://…`).
    pub store: String,
    /// Where to listen.
    pub listen: SocketAddr,
    /// The token required on every request (required off loopback).
    pub token: Option<String>,
    /// Payload fields shown as `[redacted]` wherever they are.
    pub redact: Vec<String>,
}

/// Why the console did not start or stopped.
#[derive(Debug)]
pub enum ServeError {
    /// The access rule refused the configuration.
    Access(AccessError),
    /// The address could not be bound.
    Listen(std::io::Error),
    /// The server failed.
    Serve(std::io::Error),
}

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServeError::Access(error) => error.fmt(f),
            ServeError::Listen(error) => write!(f, "cannot listen: {error}"),
            ServeError::Serve(error) => write!(f, "the console failed: {error}"),
        }
    }
}

impl std::error::Error for ServeError {}

struct Console {
    reader: Mutex<Reader>,
    access: Access,
    redact: Vec<String>,
}

type Shared = Arc<Console>;

/// Serves the console until the process is stopped; `bound` is told the address once
/// it listens (port 0 picks one).
pub fn serve(config: ConsoleConfig, bound: impl FnOnce(SocketAddr)) -> Result<(), ServeError> {
    let access =
        Access::resolve(config.listen, config.token.clone()).map_err(ServeError::Access)?;
    let listener = std::net::TcpListener::bind(config.listen).map_err(ServeError::Listen)?;
    listener.set_nonblocking(true).map_err(ServeError::Listen)?;
    bound(listener.local_addr().map_err(ServeError::Listen)?);
    let console = Arc::new(Console {
        reader: Mutex::new(Reader::new(&config.store)),
        access,
        redact: config.redact,
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ServeError::Serve)?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener).map_err(ServeError::Listen)?;
        axum::serve(listener, router(console))
            .await
            .map_err(ServeError::Serve)
    })
}

fn router(console: Shared) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/waiting", get(waiting))
        .route("/dead-letters", get(dead_letters))
        .route("/dead-letters/{id}", get(dead_letter))
        .route("/streams/{key}", get(stream))
        .route("/journal", get(journal))
        .route_layer(middleware::from_fn_with_state(console.clone(), guard))
        .route("/login", get(login))
        .with_state(console)
}

/// Every page but `/login` passes the access check first.
async fn guard(State(console): State<Shared>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    if console
        .access
        .allows(text(header::AUTHORIZATION), text(header::COOKIE))
    {
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        Html(crate::html::page(
            "Token required",
            "<p>This console needs its token: open <code>/login?token=…</code> once, or send <code>Authorization: Bearer …</code>.</p>",
        )),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct LoginQuery {
    token: String,
}

/// `/login?token=…`: sets the token cookie (HttpOnly, SameSite=Strict) and goes home.
async fn login(State(console): State<Shared>, Query(query): Query<LoginQuery>) -> Response {
    if !console.access.is_token(&query.token) {
        return (StatusCode::UNAUTHORIZED, "wrong token").into_response();
    }
    let mut headers = HeaderMap::new();
    let cookie = format!(
        "{TOKEN_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/",
        query.token
    );
    if let Ok(value) = cookie.parse() {
        headers.insert(header::SET_COOKIE, value);
    }
    (headers, Redirect::to("/")).into_response()
}

/// Runs `read` on the reader off the async threads, within [`READ_TIMEOUT_MS`].
async fn read<T: Send + 'static>(
    console: &Shared,
    read: impl FnOnce(&mut Reader) -> Result<T, ordo_store::ReadError> + Send + 'static,
) -> Result<T, Response> {
    let console = console.clone();
    let task = tokio::task::spawn_blocking(move || {
        let mut reader = console
            .reader
            .lock()
            .map_err(|_| "an earlier read panicked".to_string())?;
        read(&mut reader).map_err(|e| e.to_string())
    });
    let failed = |why: String| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Html(crate::html::page(
                "The store cannot be read",
                &format!("<p class=\"bad\">{}</p>", crate::html::escape(&why)),
            )),
        )
            .into_response()
    };
    match tokio::time::timeout(Duration::from_millis(READ_TIMEOUT_MS), task).await {
        Ok(Ok(Ok(value))) => Ok(value),
        Ok(Ok(Err(why))) => Err(failed(why)),
        Ok(Err(join)) => Err(failed(join.to_string())),
        Err(_) => Err(failed(format!("no answer within {READ_TIMEOUT_MS} ms"))),
    }
}

fn now_ms() -> u64 {
    ordo_runtime::now_ms()
}

async fn overview(State(console): State<Shared>) -> Response {
    match read(&console, |r| {
        r.status(ordo_store::status::LONGEST_WAITING_MAX)
    })
    .await
    {
        Ok(status) => Html(pages::overview(&status, now_ms())).into_response(),
        Err(response) => response,
    }
}

#[derive(serde::Deserialize, Default)]
struct WaitingQuery {
    #[serde(default)]
    stream: String,
}

async fn waiting(State(console): State<Shared>, Query(query): Query<WaitingQuery>) -> Response {
    match read(&console, |r| r.status(WAITING_PAGE_STREAMS)).await {
        Ok(status) => Html(pages::waiting(&status, &query.stream, now_ms())).into_response(),
        Err(response) => response,
    }
}

async fn dead_letters(
    State(console): State<Shared>,
    Query(filter): Query<DeadLetterFilter>,
) -> Response {
    match read(&console, |r| r.dead_letters()).await {
        Ok(entries) => Html(pages::dead_letters(&entries, &filter, now_ms())).into_response(),
        Err(response) => response,
    }
}

async fn dead_letter(State(console): State<Shared>, Path(id): Path<u64>) -> Response {
    match read(&console, move |r| r.forecast(id)).await {
        Ok(found) => match found {
            Some((entry, forecast)) => Html(pages::dead_letter(
                &entry,
                &forecast,
                &console.redact,
                now_ms(),
            ))
            .into_response(),
            None => (
                StatusCode::NOT_FOUND,
                Html(crate::html::page(
                    "No such dead letter",
                    &format!("<p>Entry #{id} is not in the queue (replayed or skipped?). See the <a href=\"/journal\">journal</a>.</p>"),
                )),
            )
                .into_response(),
        },
        Err(response) => response,
    }
}

async fn stream(State(console): State<Shared>, Path(key): Path<String>) -> Response {
    let wanted = key.clone();
    match read(&console, move |r| r.stream(&wanted)).await {
        Ok(view) => Html(pages::stream(&view, &console.redact, now_ms())).into_response(),
        Err(response) => response,
    }
}

async fn journal(State(console): State<Shared>, Query(query): Query<JournalQuery>) -> Response {
    let filter = JournalFilter {
        stream: (!query.stream.is_empty()).then(|| query.stream.clone()),
        kind: (!query.kind.is_empty()).then(|| query.kind.clone()),
        since_ms: None,
        limit: JOURNAL_PAGE_MAX,
    };
    match read(&console, move |r| r.journal(&filter)).await {
        Ok(entries) => Html(pages::journal(&entries, &query)).into_response(),
        Err(response) => response,
    }
}
