//! The handler pool: a thread with a small async runtime that calls the handler for each
//! work the run loop submits, at most `concurrency` calls at once, retrying with backoff,
//! and sends every work back with its outcome.
//!
//! A call holds a slot (a semaphore permit) only while it runs: a stream sleeping in
//! backoff takes no slot from the streams that are healthy.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::mpsc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ordo_core::{Outcome, Work};
use tokio::sync::{watch, Semaphore};

use super::{clip_reason, Answer, Call, Handler, HandlerOptions};

/// Why a pool could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum HandlerPoolError {
    /// The options are out of bounds (the text names the flag).
    Options(String),
    /// Its thread or async runtime could not be made.
    Runtime(std::io::Error),
}

impl std::fmt::Display for HandlerPoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandlerPoolError::Options(text) => f.write_str(text),
            HandlerPoolError::Runtime(e) => write!(f, "handler pool: {e}"),
        }
    }
}

impl std::error::Error for HandlerPoolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HandlerPoolError::Options(_) => None,
            HandlerPoolError::Runtime(e) => Some(e),
        }
    }
}

type BoxedAnswer<'a> = Pin<Box<dyn Future<Output = Answer> + Send + 'a>>;

/// [`Handler`] behind a pointer (the pool is not generic over its handler).
trait DynHandler: Send + Sync {
    fn handle_boxed<'a>(&'a self, call: Call<'a>) -> BoxedAnswer<'a>;
}

impl<H: Handler> DynHandler for H {
    fn handle_boxed<'a>(&'a self, call: Call<'a>) -> BoxedAnswer<'a> {
        Box::pin(async move { self.handle(&call).await })
    }
}

/// A handler's future with its panics caught: a panic is the handler's bug for this
/// event, and the event is dead-lettered with it instead of being lost with its task.
struct CatchUnwind<'a>(BoxedAnswer<'a>);

impl Future for CatchUnwind<'_> {
    type Output = Answer;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answer> {
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.0.as_mut().poll(cx))) {
            Ok(polled) => polled,
            Err(panic) => {
                let text = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                Poll::Ready(Answer::Rejected {
                    reason: format!("the handler panicked: {text}"),
                })
            }
        }
    }
}

/// A work back from the pool: with its outcome, or abandoned (its backoff was cut short
/// by [`HandlerPool::abandon_backoffs`]; no call of it is running).
pub type Returned = (Work, Option<Outcome>);

/// Handler calls running beside the run loop. Submit works the engine handed out, take
/// them back with their outcomes, and give each to the engine's `handle_outcome`.
pub struct HandlerPool {
    works: tokio::sync::mpsc::UnboundedSender<Work>,
    outcomes: mpsc::Receiver<Returned>,
    out: usize,
    options: HandlerOptions,
    slots: Arc<Semaphore>,
    abandon: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for HandlerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerPool")
            .field("out", &self.out)
            .field("options", &self.options)
            .finish()
    }
}

impl HandlerPool {
    /// Starts the pool's thread for `handler`.
    pub fn start(handler: impl Handler, options: HandlerOptions) -> Result<Self, HandlerPoolError> {
        options.validate().map_err(HandlerPoolError::Options)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(HandlerPoolError::Runtime)?;
        let (works, mut submitted) = tokio::sync::mpsc::unbounded_channel::<Work>();
        let (finished, outcomes) = mpsc::channel();
        let handler: Arc<dyn DynHandler> = Arc::new(handler);
        let task_options = Arc::new(options.clone());
        let slots = Arc::new(Semaphore::new(options.concurrency));
        let task_slots = slots.clone();
        let (abandon, abandoned) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("ordo-handlers".into())
            .spawn(move || {
                runtime.block_on(async move {
                    while let Some(work) = submitted.recv().await {
                        let call = call_until_settled(
                            handler.clone(),
                            work,
                            task_slots.clone(),
                            task_options.clone(),
                            abandoned.clone(),
                        );
                        let finished = finished.clone();
                        tokio::spawn(async move {
                            // The loop may be gone (a run that failed); nothing to tell.
                            let _ = finished.send(call.await);
                        });
                    }
                });
            })
            .map_err(HandlerPoolError::Runtime)?;
        Ok(HandlerPool {
            works,
            outcomes,
            out: 0,
            options,
            slots,
            abandon,
            thread: Some(thread),
        })
    }

    /// The options the pool runs with.
    pub fn options(&self) -> &HandlerOptions {
        &self.options
    }

    /// Hands a work to the handler.
    pub fn submit(&mut self, work: Work) {
        self.works
            .send(work)
            .expect("the pool's thread runs while the pool exists");
        self.out += 1;
    }

    /// Works submitted whose outcome was not taken yet (calling, or in backoff).
    pub fn in_flight(&self) -> usize {
        self.out
    }

    /// Calls running now (holding a slot; works in backoff hold none).
    pub fn calling(&self) -> usize {
        self.options.concurrency - self.slots.available_permits()
    }

    /// From now on (until [`Self::resume_backoffs`]) works in backoff, or about to sleep
    /// one, come back abandoned at once instead of being called again: before the state
    /// is rebuilt, only calls on the wire need to end.
    pub fn abandon_backoffs(&mut self) {
        let _ = self.abandon.send(true);
    }

    /// Retries go on as usual again.
    pub fn resume_backoffs(&mut self) {
        let _ = self.abandon.send(false);
    }

    /// A returned work, if one is back.
    pub fn try_take(&mut self) -> Option<Returned> {
        let taken = self.outcomes.try_recv().ok()?;
        self.out -= 1;
        Some(taken)
    }

    /// A returned work, waiting at most `timeout` for one.
    pub fn take_within(&mut self, timeout: Duration) -> Option<Returned> {
        if self.out == 0 {
            return None;
        }
        let taken = match self.outcomes.recv_timeout(timeout) {
            Ok(taken) => taken,
            Err(mpsc::RecvTimeoutError::Timeout) => return None,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // Handler panics are caught in their tasks; only a bug ends the thread.
                panic!(
                    "the handler pool's thread ended with {} works out",
                    self.out
                )
            }
        };
        self.out -= 1;
        Some(taken)
    }
}

impl Drop for HandlerPool {
    fn drop(&mut self) {
        // Closing the channel ends the dispatcher; calls still out are abandoned (their
        // events were not committed, so they are sent again after a restart).
        let (closed, _) = tokio::sync::mpsc::unbounded_channel();
        drop(std::mem::replace(&mut self.works, closed));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Calls the handler for one work until it applies, is rejected, runs out of attempts,
/// or is abandoned while waiting to be called again.
async fn call_until_settled(
    handler: Arc<dyn DynHandler>,
    work: Work,
    slots: Arc<Semaphore>,
    options: Arc<HandlerOptions>,
    mut abandoned: watch::Receiver<bool>,
) -> Returned {
    let timeout = Duration::from_millis(options.timeout_ms);
    let mut attempt = 1;
    loop {
        let answer = {
            // Not started while a rebuild waits for the calls out: nothing new goes out.
            let _slot = tokio::select! {
                slot = slots.acquire() => slot.expect("the semaphore is never closed"),
                _ = abandoned.wait_for(|abandon| *abandon) => return (work, None),
            };
            let call = CatchUnwind(handler.handle_boxed(Call::new(&work, attempt)));
            let started = std::time::Instant::now();
            if let Some(telemetry) = &options.telemetry {
                telemetry.call_started();
            }
            let answer = match tokio::time::timeout(timeout, call).await {
                Ok(answer) => answer,
                Err(_) => Answer::retry(format!("no answer within {} ms", options.timeout_ms)),
            };
            if let Some(telemetry) = &options.telemetry {
                let retried = matches!(answer, Answer::Retry { .. });
                telemetry.call_ended(started.elapsed().as_secs_f64(), retried);
            }
            answer
        };
        let (reason, after_ms) = match answer {
            Answer::Applied => return (work, Some(Outcome::Applied)),
            Answer::Rejected { reason } => {
                let reason = clip_reason(&format!("handler rejected it: {reason}"));
                return (work, Some(Outcome::Rejected { reason }));
            }
            Answer::Retry { reason, after_ms } => (reason, after_ms),
        };
        if attempt >= options.attempts {
            let plural = if attempt == 1 { "" } else { "s" };
            let reason = clip_reason(&format!(
                "handler failed after {attempt} attempt{plural}; last: {reason}"
            ));
            return (work, Some(Outcome::Rejected { reason }));
        }
        let pause_ms = options.backoff_ms(attempt, after_ms, fastrand::f64());
        tracing::debug!(
            stream = %work.event.stream,
            version = work.event.version,
            attempt,
            pause_ms,
            %reason,
            "handler call failed; retrying"
        );
        let pause = tokio::time::sleep(Duration::from_millis(pause_ms));
        tokio::select! {
            () = pause => {}
            _ = abandoned.wait_for(|abandon| *abandon) => return (work, None),
        }
        attempt += 1;
    }
}
