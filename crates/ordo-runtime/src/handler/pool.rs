//! The handler pool: a thread with a small async runtime that calls the handler for each
//! work the run loop submits, at most `concurrency` calls at once, retrying with backoff,
//! and sends every work back with its outcome.
//!
//! A call holds a slot (a semaphore permit) only while it runs: a stream sleeping in
//! backoff takes no slot from the streams that are healthy.

use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use ordo_core::{Outcome, Work};
use tokio::sync::Semaphore;

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

/// Handler calls running beside the run loop. Submit works the engine handed out, take
/// them back with their outcomes, and give each to the engine's `handle_outcome`.
pub struct HandlerPool {
    works: tokio::sync::mpsc::UnboundedSender<Work>,
    outcomes: mpsc::Receiver<(Work, Outcome)>,
    out: usize,
    options: HandlerOptions,
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
        let thread = std::thread::Builder::new()
            .name("ordo-handlers".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let slots = Arc::new(Semaphore::new(task_options.concurrency));
                    while let Some(work) = submitted.recv().await {
                        let call = call_until_settled(
                            handler.clone(),
                            work,
                            slots.clone(),
                            task_options.clone(),
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

    /// A finished work, if one is back.
    pub fn try_take(&mut self) -> Option<(Work, Outcome)> {
        let taken = self.outcomes.try_recv().ok()?;
        self.out -= 1;
        Some(taken)
    }

    /// A finished work, waiting at most `timeout` for one.
    pub fn take_within(&mut self, timeout: Duration) -> Option<(Work, Outcome)> {
        if self.out == 0 {
            return None;
        }
        let taken = self.outcomes.recv_timeout(timeout).ok()?;
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

/// Calls the handler for one work until it applies, is rejected, or runs out of attempts.
async fn call_until_settled(
    handler: Arc<dyn DynHandler>,
    work: Work,
    slots: Arc<Semaphore>,
    options: Arc<HandlerOptions>,
) -> (Work, Outcome) {
    let timeout = Duration::from_millis(options.timeout_ms);
    let mut attempt = 1;
    loop {
        let answer = {
            let _slot = slots
                .acquire()
                .await
                .expect("the semaphore is never closed");
            let call = Call::new(&work, attempt);
            match tokio::time::timeout(timeout, handler.handle_boxed(call)).await {
                Ok(answer) => answer,
                Err(_) => Answer::retry(format!("no answer within {} ms", options.timeout_ms)),
            }
        };
        match answer {
            Answer::Applied => return (work, Outcome::Applied),
            Answer::Rejected { reason } => {
                let reason = clip_reason(&format!("handler rejected it: {reason}"));
                return (work, Outcome::Rejected { reason });
            }
            Answer::Retry { reason, after_ms } => {
                if attempt >= options.attempts {
                    let plural = if attempt == 1 { "" } else { "s" };
                    let reason = clip_reason(&format!(
                        "handler failed after {attempt} attempt{plural}; last: {reason}"
                    ));
                    return (work, Outcome::Rejected { reason });
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
                tokio::time::sleep(Duration::from_millis(pause_ms)).await;
                attempt += 1;
            }
        }
    }
}
