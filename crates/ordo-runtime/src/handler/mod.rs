//! Handlers: the team's own code behind ordo's ordering.
//!
//! The engine decides *when* an event may go (per stream in version order, one at a time
//! per stream and per document, `after` satisfied, merges at their cuts, sequenced dead
//! letters); a [`Handler`] decides *what* it does. [`HandlerPool`] runs up to
//! `concurrency` handler calls at once across streams on a thread of its own, retries
//! what asks for it with exponential backoff and jitter (a stream in backoff holds no
//! call slot), and hands each work back with its outcome. The run loop takes those back
//! whenever it looks (`Consumer::apply_ready`), so commits go on while calls are out: a
//! work's offset settles only once its outcome is back, and whatever was acknowledged but
//! not committed before a crash is sent again, with the same idempotency key, in order.
//!
//! Two handlers ship with ordo: [`HttpHandler`] (`--handler http://…`) and
//! [`ExecHandler`] (`--handler exec:COMMAND`); Rust users implement [`Handler`] for side
//! effects, or [`TransactionalHandler`] to write their own tables in ordo's transaction.

mod call;
mod exec;
mod http;
mod pool;
mod transactional;

pub use call::{Answer, Call};
pub use exec::ExecHandler;
pub use http::{HttpHandler, HttpHandlerError};
pub use pool::{HandlerPool, HandlerPoolError, Returned};
pub(crate) use transactional::apply_in_transaction;
pub use transactional::{Refusal, TransactionalHandler};

/// The handler-answer parsers, for the fuzz targets (`fuzz/`, built with `--cfg fuzzing`
/// by cargo-fuzz); not part of the API otherwise.
#[cfg(fuzzing)]
pub mod fuzzing {
    use super::Answer;

    /// One `exec:` answer line: the request it answers and the answer, or why the line
    /// breaks the protocol.
    pub fn exec_answer(line: &str) -> Result<(u64, Answer), String> {
        super::exec::parse_answer(line)
    }

    /// An HTTP answer: its status, body and `Retry-After` header.
    pub fn http_answer(status: u16, body: &str, retry_after: &str) -> Option<Answer> {
        super::http::fuzz_answer(status, body, retry_after)
    }
}

use std::future::Future;

/// The store setting where `ordo run --handler` records its handler (operator verbs,
/// dry runs and the console read it: a recorded handler, not the built-in projection,
/// applies events).
pub const HANDLER_SETTINGS_KEY: &str = "handler";

/// Default handler calls at once across streams (`--concurrency`).
pub const CONCURRENCY_DEFAULT: usize = 64;

/// Most handler calls at once (a bound on sockets and tasks, not a tuning knob).
pub const CONCURRENCY_MAX: usize = 10_000;

/// Default longest wait for one handler answer (`--handler-timeout-ms`).
pub const HANDLER_TIMEOUT_MS_DEFAULT: u64 = 30_000;

/// Default calls per event before it is dead-lettered with the last error
/// (`--handler-attempts`).
pub const HANDLER_ATTEMPTS_DEFAULT: u32 = 10;

/// Most calls per event (`--handler-attempts` above it is refused).
pub const HANDLER_ATTEMPTS_MAX: u32 = 1_000;

/// Default pause before the second call of an event; it doubles per attempt.
pub const BACKOFF_INITIAL_MS_DEFAULT: u64 = 100;

/// Default longest pause between two calls of one event.
pub const BACKOFF_MAX_MS_DEFAULT: u64 = 30_000;

/// Longest `Retry-After` honoured: a handler asking for more is retried after this.
pub const RETRY_AFTER_MS_MAX: u64 = 300_000;

/// Most bytes of a rejection's text kept as the dead letter's reason.
pub const REASON_BYTES_MAX: usize = 1024;

const _: () = assert!(CONCURRENCY_DEFAULT <= CONCURRENCY_MAX);
const _: () =
    assert!(HANDLER_ATTEMPTS_DEFAULT >= 1 && HANDLER_ATTEMPTS_DEFAULT <= HANDLER_ATTEMPTS_MAX);
const _: () = assert!(BACKOFF_INITIAL_MS_DEFAULT <= BACKOFF_MAX_MS_DEFAULT);
const _: () = assert!(BACKOFF_MAX_MS_DEFAULT <= RETRY_AFTER_MS_MAX);

/// The team's code: applies one event, answers how it went.
///
/// Called at most once at a time per stream and per document, in version order; calls for
/// different streams overlap (up to the pool's concurrency). Delivery is at least once:
/// after a crash an event acknowledged but not yet committed comes again with the same
/// [`Call::idempotency_key`], so a handler that ignores a key it has already applied has
/// exactly-once effects.
///
/// ```
/// use ordo_runtime::handler::{Answer, Call, Handler};
///
/// struct Print;
///
/// impl Handler for Print {
///     async fn handle(&self, call: &Call<'_>) -> Answer {
///         println!("{} v{} -> {}", call.event().stream, call.event().version, call.document());
///         Answer::Applied
///     }
/// }
/// ```
pub trait Handler: Send + Sync + 'static {
    /// Applies `call`'s event (or folds a merge's sources); never panics on bad input:
    /// [`Answer::Rejected`] dead-letters the event with its reason.
    fn handle(&self, call: &Call<'_>) -> impl Future<Output = Answer> + Send;
}

/// How the pool calls a handler.
#[derive(Clone, Debug)]
pub struct HandlerOptions {
    /// Handler calls at once across streams.
    pub concurrency: usize,
    /// Longest wait for one answer; then the call counts as a retryable failure.
    pub timeout_ms: u64,
    /// Calls per event before it is dead-lettered with the last error.
    pub attempts: u32,
    /// Pause before the second call; it doubles per attempt, with jitter.
    pub backoff_initial_ms: u64,
    /// Longest pause between two calls.
    pub backoff_max_ms: u64,
    /// Where call latency, retries and stuck calls are reported (`--metrics`).
    pub telemetry: Option<std::sync::Arc<crate::telemetry::HandlerTelemetry>>,
}

impl Default for HandlerOptions {
    fn default() -> Self {
        HandlerOptions {
            concurrency: CONCURRENCY_DEFAULT,
            timeout_ms: HANDLER_TIMEOUT_MS_DEFAULT,
            attempts: HANDLER_ATTEMPTS_DEFAULT,
            backoff_initial_ms: BACKOFF_INITIAL_MS_DEFAULT,
            backoff_max_ms: BACKOFF_MAX_MS_DEFAULT,
            telemetry: None,
        }
    }
}

impl HandlerOptions {
    /// The pause after failed attempt `attempt` (1-based): exponential, capped, with full
    /// jitter in its upper half (`random` in 0..1), or what the handler asked for.
    pub fn backoff_ms(&self, attempt: u32, retry_after_ms: Option<u64>, random: f64) -> u64 {
        if let Some(asked) = retry_after_ms {
            return asked.min(RETRY_AFTER_MS_MAX);
        }
        let doublings = attempt.saturating_sub(1).min(32);
        let ceiling = self
            .backoff_initial_ms
            .saturating_mul(1u64 << doublings)
            .min(self.backoff_max_ms);
        // Half fixed, half random: retries of many streams that failed together (a
        // handler restart) spread out instead of arriving in one wave.
        let half = ceiling / 2;
        half + (half as f64 * random.clamp(0.0, 1.0)) as u64
    }

    /// Checks the bounds; the error names the flag.
    pub fn validate(&self) -> Result<(), String> {
        if self.concurrency == 0 || self.concurrency > CONCURRENCY_MAX {
            return Err(format!("--concurrency must be 1..={CONCURRENCY_MAX}"));
        }
        if self.attempts == 0 || self.attempts > HANDLER_ATTEMPTS_MAX {
            return Err(format!(
                "--handler-attempts must be 1..={HANDLER_ATTEMPTS_MAX}"
            ));
        }
        if self.timeout_ms == 0 {
            return Err("--handler-timeout-ms must be at least 1".into());
        }
        Ok(())
    }
}

/// Keeps at most [`REASON_BYTES_MAX`] bytes of `text`, cut at a character boundary.
pub(crate) fn clip_reason(text: &str) -> String {
    if text.len() <= REASON_BYTES_MAX {
        return text.to_string();
    }
    let mut end = REASON_BYTES_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_honours_retry_after() {
        let options = HandlerOptions::default();
        assert_eq!(options.backoff_ms(1, None, 0.0), 50);
        assert_eq!(options.backoff_ms(1, None, 1.0), 100);
        assert_eq!(options.backoff_ms(4, None, 1.0), 800);
        assert_eq!(options.backoff_ms(30, None, 1.0), BACKOFF_MAX_MS_DEFAULT);
        assert_eq!(options.backoff_ms(u32::MAX, None, 0.5), 22_500);
        assert_eq!(options.backoff_ms(1, Some(2_000), 0.3), 2_000);
        assert_eq!(
            options.backoff_ms(1, Some(u64::MAX), 0.3),
            RETRY_AFTER_MS_MAX
        );
    }

    #[test]
    fn reasons_are_clipped_at_a_character_boundary() {
        let long = "é".repeat(REASON_BYTES_MAX);
        let clipped = clip_reason(&long);
        assert!(clipped.len() <= REASON_BYTES_MAX + '…'.len_utf8());
        assert!(clipped.ends_with('…'));
        assert_eq!(clip_reason("short"), "short");
    }
}
