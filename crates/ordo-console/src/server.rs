//! The HTTP side: routes, the access check on every request, store reads run off the
//! async threads one at a time (one connection), pages rendered from what they read.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use ordo_store::journal::JournalFilter;
use ordo_store::PauseTarget;

use crate::access::{Access, AccessError, Csrf};
use crate::actions::{Action, Actor, Verb};
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
    /// The `ordo` binary that carries actions out (the console's own executable).
    pub binary: std::path::PathBuf,
    /// How often the console samples the counters for rates and sparklines.
    pub history_sample_ms: u64,
    /// The running consumers' `--metrics` endpoints, read for heartbeat and lag.
    pub run_metrics: Vec<String>,
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
    /// The port it listens on (for the `Host` check).
    port: u16,
    /// One store read at a time, waited for without holding a thread.
    reading: Arc<tokio::sync::Semaphore>,
    reader: Mutex<Reader>,
    history: Mutex<crate::history::History>,
    access: Access,
    csrf: Csrf,
    actor: Actor,
    redact: Vec<String>,
    run_metrics: Vec<String>,
}

type Shared = Arc<Console>;

/// Serves the console until the process is stopped; `bound` is told the address once
/// it listens (port 0 picks one).
pub fn serve(config: ConsoleConfig, bound: impl FnOnce(SocketAddr)) -> Result<(), ServeError> {
    let access =
        Access::resolve(config.listen, config.token.clone()).map_err(ServeError::Access)?;
    let listener = std::net::TcpListener::bind(config.listen).map_err(ServeError::Listen)?;
    listener.set_nonblocking(true).map_err(ServeError::Listen)?;
    let address = listener.local_addr().map_err(ServeError::Listen)?;
    bound(address);
    let access = access.on_port(address.port());
    let console = Arc::new(Console {
        port: address.port(),
        reading: Arc::new(tokio::sync::Semaphore::new(1)),
        reader: Mutex::new(Reader::new(&config.store)),
        history: Mutex::new(crate::history::History::default()),
        access,
        csrf: Csrf::new(address.port()).map_err(ServeError::Serve)?,
        actor: Actor {
            binary: config.binary,
            store: config.store,
        },
        redact: config.redact,
        run_metrics: config.run_metrics,
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ServeError::Serve)?;
    let sample_ms = config.history_sample_ms.max(1);
    runtime.block_on(async move {
        tokio::spawn(sample(console.clone(), sample_ms));
        let listener = tokio::net::TcpListener::from_std(listener).map_err(ServeError::Listen)?;
        axum::serve(listener, router(console))
            .await
            .map_err(ServeError::Serve)
    })
}

/// Samples the counters every `sample_ms` for the Overview's rates and sparklines.
async fn sample(console: Shared, sample_ms: u64) {
    let mut ticks = tokio::time::interval(Duration::from_millis(sample_ms));
    // After a slow read, the next sample comes on time, not as a burst.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        ticks.tick().await;
        // A store that cannot be read now leaves a hole, not a wrong value.
        if let Ok(status) = read(&console, |r| r.status(0)).await {
            if let Ok(mut history) = console.history.lock() {
                history.record(now_ms(), status.counters);
            }
        }
    }
}

fn router(console: Shared) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/waiting", get(waiting))
        .route("/dead-letters", get(dead_letters))
        .route("/dead-letters/{id}", get(dead_letter))
        .route("/streams/{key}", get(stream))
        .route("/journal", get(journal))
        .route("/dead-letters/{id}/replay", post(replay))
        .route("/dead-letters/{id}/skip", post(skip))
        .route("/streams/{key}/skip-missing", post(skip_missing))
        .route("/dead-letters/dry-run", post(selection_dry_run))
        .route("/dead-letters/replay", post(replay_selection))
        .route("/streams/{key}/pause", post(pause_stream))
        .route("/streams/{key}/resume", post(resume_stream))
        .route("/partitions/pause", post(pause_partition_form))
        .route("/partitions/{partition}/pause", post(pause_partition))
        .route("/partitions/{partition}/resume", post(resume_partition))
        .route_layer(middleware::from_fn_with_state(console.clone(), guard))
        .route("/login", get(login_form).post(login))
        .layer(middleware::from_fn_with_state(console.clone(), host_guard))
        .with_state(console)
}

/// Every request, `/login` included, names a host the access rule allows.
async fn host_guard(State(console): State<Shared>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok());
    if console.access.host_allowed(host, console.port) {
        let mut response = next.run(request).await;
        // Never framed by another page.
        if let Ok(value) = "frame-ancestors 'none'".parse() {
            response
                .headers_mut()
                .insert(header::CONTENT_SECURITY_POLICY, value);
        }
        return response;
    }
    (
        StatusCode::MISDIRECTED_REQUEST,
        "this console answers to 127.0.0.1, localhost and [::1] only (or give it a --token)",
    )
        .into_response()
}

/// Every page but `/login` passes the access check first.
async fn guard(State(console): State<Shared>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    if console
        .access
        .allows(text(header::AUTHORIZATION), text(header::COOKIE))
    {
        let mut response = next.run(request).await;
        // Every page carries the CSRF cookie its forms are checked against.
        if let Ok(cookie) = console.csrf.cookie().parse() {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
        return response;
    }
    (
        StatusCode::UNAUTHORIZED,
        Html(crate::html::page(
            "Token required",
            "<p>This console needs its token: <a href=\"/login\">log in</a> once, or send <code>Authorization: Bearer …</code>.</p>",
        )),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
}

/// `GET /login`: the form that asks for the token (posted, so that it stays out of
/// URLs, browser history and proxy logs).
async fn login_form() -> Response {
    Html(crate::html::page(
        "Log in",
        "<form class=\"act\" method=\"post\" action=\"/login\">\
         <label>The console's token (<code>--token</code> or <code>ORDO_CONSOLE_TOKEN</code>)\
         <input name=\"token\" type=\"password\" autocomplete=\"current-password\" required></label>\
         <button type=\"submit\">Log in</button></form>",
    ))
    .into_response()
}

/// `POST /login`: sets the token cookie (HttpOnly, SameSite=Strict) and goes home.
async fn login(State(console): State<Shared>, Form(form): Form<LoginForm>) -> Response {
    if !console.access.is_token(&form.token) {
        return (
            StatusCode::UNAUTHORIZED,
            Html(crate::html::page(
                "Log in",
                "<p class=\"bad\">Wrong token. <a href=\"/login\">Try again</a>.</p>",
            )),
        )
            .into_response();
    }
    let mut headers = HeaderMap::new();
    if let Ok(value) = console.access.token_cookie(&form.token).parse() {
        headers.insert(header::SET_COOKIE, value);
    }
    (headers, Redirect::to("/")).into_response()
}

/// Runs `read` on the reader off the async threads, within [`READ_TIMEOUT_MS`].
async fn read<T: Send + 'static>(
    console: &Shared,
    read: impl FnOnce(&mut Reader) -> Result<T, ordo_store::ReadError> + Send + 'static,
) -> Result<T, Response> {
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
    // Waited for here, not on a blocking thread: a store that hangs holds one thread.
    let permit = match tokio::time::timeout(
        Duration::from_millis(READ_TIMEOUT_MS),
        console.reading.clone().acquire_owned(),
    )
    .await
    {
        Ok(Ok(permit)) => permit,
        _ => {
            return Err(failed(
                "an earlier read of the store has not answered".into(),
            ))
        }
    };
    let console = console.clone();
    let task = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let mut reader = console
            .reader
            .lock()
            .map_err(|_| "an earlier read panicked".to_string())?;
        read(&mut reader).map_err(|e| e.to_string())
    });
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
        Ok(status) => {
            let history = console
                .history
                .lock()
                .map(|h| h.clone())
                .unwrap_or_default();
            let endpoints = console.run_metrics.clone();
            // Each endpoint is bounded in time; none holds the store's reader.
            let runs = tokio::task::spawn_blocking(move || crate::runs::read_all(&endpoints))
                .await
                .unwrap_or_default();
            Html(pages::overview(
                &status,
                &history,
                &runs,
                console.csrf.secret(),
                now_ms(),
            ))
            .into_response()
        }
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
        Ok(entries) => Html(pages::dead_letters(
            &entries,
            &filter,
            &console.redact,
            now_ms(),
        ))
        .into_response(),
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
                console.csrf.secret(),
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
        Ok(view) => Html(pages::stream(
            &view,
            &console.redact,
            console.csrf.secret(),
            now_ms(),
        ))
        .into_response(),
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
        Ok(entries) => Html(pages::journal(&entries, &query, &console.redact)).into_response(),
        Err(response) => response,
    }
}

/// The form of every action.
#[derive(serde::Deserialize)]
struct ActionForm {
    csrf: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    body: String,
    #[serde(default)]
    version: Option<u64>,
}

/// Checks the form's CSRF value against the cookie and the origin, then runs `action` as
/// the CLI verb and shows what it said.
async fn act(
    console: Shared,
    headers: HeaderMap,
    form: ActionForm,
    action: impl Into<Action>,
    back: String,
) -> Response {
    let action = action.into();
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    if !console.csrf.allows(
        &form.csrf,
        text(header::COOKIE),
        text(header::ORIGIN),
        text(header::HOST),
    ) {
        return (
            StatusCode::FORBIDDEN,
            Html(crate::html::page(
                "Refused",
                "<p class=\"bad\">This request did not come from the console's own page (CSRF check). Open the page again and retry.</p>",
            )),
        )
            .into_response();
    }
    let what = action.describe();
    let actor = console.actor.clone();
    let reason = form.reason.clone();
    let done = tokio::task::spawn_blocking(move || actor.act(&action, &reason)).await;
    let (code, page) = match done {
        Ok(Ok(outcome)) => (
            if outcome.succeeded {
                StatusCode::OK
            } else {
                StatusCode::CONFLICT
            },
            pages::action_result(&what, outcome.succeeded, &outcome.said, &back),
        ),
        Ok(Err(refused)) => (
            StatusCode::BAD_REQUEST,
            pages::action_result(&what, false, &refused, &back),
        ),
        Err(join) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            pages::action_result(&what, false, &join.to_string(), &back),
        ),
    };
    (code, Html(page)).into_response()
}

async fn replay(
    State(console): State<Shared>,
    Path(id): Path<u64>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    let body = Some(form.body.trim().to_string()).filter(|b| !b.is_empty());
    let back = format!("/dead-letters/{id}");
    act(console, headers, form, Verb::Replay { id, body }, back).await
}

async fn skip(
    State(console): State<Shared>,
    Path(id): Path<u64>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    let back = format!("/dead-letters/{id}");
    act(console, headers, form, Verb::Skip { id }, back).await
}

async fn skip_missing(
    State(console): State<Shared>,
    Path(key): Path<String>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    let Some(version) = form.version else {
        return (StatusCode::BAD_REQUEST, "the form names no version").into_response();
    };
    let back = pages::stream_href(&key);
    let action = Verb::SkipMissing {
        stream: key,
        version,
    };
    act(console, headers, form, action, back).await
}

async fn pause_stream(
    State(console): State<Shared>,
    Path(key): Path<String>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    let back = pages::stream_href(&key);
    let action = Verb::Pause(PauseTarget::Stream(key));
    act(console, headers, form, action, back).await
}

async fn resume_stream(
    State(console): State<Shared>,
    Path(key): Path<String>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    let back = pages::stream_href(&key);
    let action = Verb::Resume(PauseTarget::Stream(key));
    act(console, headers, form, action, back).await
}

async fn pause_partition(
    State(console): State<Shared>,
    Path(partition): Path<u32>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    let action = Verb::Pause(PauseTarget::Partition(partition));
    act(console, headers, form, action, "/".into()).await
}

async fn resume_partition(
    State(console): State<Shared>,
    Path(partition): Path<u32>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    let action = Verb::Resume(PauseTarget::Partition(partition));
    act(console, headers, form, action, "/".into()).await
}

#[derive(serde::Deserialize)]
struct PartitionForm {
    csrf: String,
    #[serde(default)]
    reason: String,
    partition: u32,
}

/// The overview's form, which names the partition in a field.
async fn pause_partition_form(
    State(console): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<PartitionForm>,
) -> Response {
    let action = Verb::Pause(PauseTarget::Partition(form.partition));
    let form = ActionForm {
        csrf: form.csrf,
        reason: form.reason,
        body: String::new(),
        version: None,
    };
    act(console, headers, form, action, "/".into()).await
}

/// A selection of dead letters, as the list page's form sends it (`id` repeated).
struct Selection {
    ids: Vec<u64>,
    per_second: u32,
    form: ActionForm,
}

impl Selection {
    fn parse(body: &[u8]) -> Result<Selection, String> {
        let mut ids = Vec::new();
        let mut per_second = DEFAULT_REPLAY_RATE;
        let mut form = ActionForm {
            csrf: String::new(),
            reason: String::new(),
            body: String::new(),
            version: None,
        };
        for (key, value) in form_urlencoded::parse(body) {
            match &*key {
                "id" => ids.push(
                    value
                        .parse()
                        .map_err(|_| format!("`{value}` is not an entry number"))?,
                ),
                "rate" => {
                    per_second = value
                        .trim()
                        .parse()
                        .map_err(|_| format!("`{value}` is not a rate (replays per second)"))?
                }
                "csrf" => form.csrf = value.into_owned(),
                "reason" => form.reason = value.into_owned(),
                _ => {}
            }
        }
        ids.sort_unstable();
        ids.dedup();
        crate::actions::check_selection(&ids, per_second)?;
        Ok(Selection {
            ids,
            per_second,
            form,
        })
    }
}

/// The rate the confirmation form offers first (replays per second).
const DEFAULT_REPLAY_RATE: u32 = 10;

fn bad_selection(why: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Html(pages::action_result(
            "Replay of a selection",
            false,
            &why,
            "/dead-letters",
        )),
    )
        .into_response()
}

/// `POST /dead-letters/dry-run`: what replaying the selected entries would do, each,
/// with the form that replays them for real. Reads only.
async fn selection_dry_run(State(console): State<Shared>, body: axum::body::Bytes) -> Response {
    let selection = match Selection::parse(&body) {
        Ok(selection) => selection,
        Err(why) => return bad_selection(why),
    };
    let ids = selection.ids.clone();
    match read(&console, move |r| r.forecasts(&ids)).await {
        Ok(forecasts) => Html(pages::selection_dry_run(
            &forecasts,
            selection.per_second,
            &console.redact,
            console.csrf.secret(),
        ))
        .into_response(),
        Err(response) => response,
    }
}

/// `POST /dead-letters/replay`: replays the selected entries at the chosen rate.
async fn replay_selection(
    State(console): State<Shared>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let selection = match Selection::parse(&body) {
        Ok(selection) => selection,
        Err(why) => return bad_selection(why),
    };
    let action = Action::ReplayMany {
        ids: selection.ids,
        per_second: selection.per_second,
    };
    act(
        console,
        headers,
        selection.form,
        action,
        "/dead-letters".into(),
    )
    .await
}
