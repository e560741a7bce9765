//! The run loop: source → core → projection → store, with group commit.
//!
//! Deliveries are handed to the engine as they come; whatever may apply is applied at
//! once; a commit writes the batch when it holds [`RunOptions::commit_events_max`]
//! deliveries or its first delivery is [`RunOptions::commit_interval_ms`] old, whichever
//! comes first (throughput and bounded latency). The loop is blocking code: SQLite and
//! the sources block, so [`run_until_signal`] runs it on tokio's blocking pool while tokio
//! itself waits for SIGINT/SIGTERM and asks the loop to stop after its current batch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ordo_core::Counters;
use ordo_store::Store;

use crate::consumer::{ConsumeError, Consumer};
use crate::source::{Polled, Source, SourceError};

/// Default deliveries per commit.
pub const COMMIT_EVENTS_MAX_DEFAULT: usize = 32_768;

/// Default longest time a delivery waits for its commit.
pub const COMMIT_INTERVAL_MS_DEFAULT: u64 = 50;

/// How long one poll of an idle source waits (also how fast a stop request is seen).
pub const POLL_WAIT_MS: u64 = 50;

/// How often progress is printed when asked for.
pub const PROGRESS_INTERVAL_MS: u64 = 2_000;

/// How a run behaves.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Stop once the source is drained and nothing can progress.
    pub exit_when_idle: bool,
    /// Deliveries per commit at most.
    pub commit_events_max: usize,
    /// Longest time a delivery waits for its commit.
    pub commit_interval_ms: u64,
    /// Print progress to stderr now and then.
    pub progress: bool,
    /// Stop abruptly, without committing, after this many deliveries (crash tests and the
    /// demo's crash: what was not committed is lost, as in a `kill -9`).
    pub crash_after_deliveries: Option<u64>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            exit_when_idle: false,
            commit_events_max: COMMIT_EVENTS_MAX_DEFAULT,
            commit_interval_ms: COMMIT_INTERVAL_MS_DEFAULT,
            progress: false,
            crash_after_deliveries: None,
        }
    }
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunEnd {
    /// The source was drained and nothing could progress (`exit_when_idle`).
    Idle,
    /// A file source ended.
    Finished,
    /// A stop was requested (signal); the last batch was committed.
    Stopped,
    /// `crash_after_deliveries` struck: the last batch was thrown away.
    Crashed,
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// How it ended.
    pub end: RunEnd,
    /// The store's counters at the end (cumulative over the store's life).
    pub counters: Counters,
    /// Deliveries read in this run.
    pub delivered: u64,
    /// Commits made in this run.
    pub commits: u64,
    /// When the first delivery of this run arrived (throughput measurements).
    pub first_delivery: Option<Instant>,
    /// When the last delivery of this run arrived.
    pub last_delivery: Option<Instant>,
}

/// Why a run failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum RunError {
    /// The source failed.
    Source(SourceError),
    /// The store failed (nothing of the failed batch was written).
    Consume(ConsumeError),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Source(e) => e.fmt(f),
            RunError::Consume(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for RunError {}

impl From<SourceError> for RunError {
    fn from(error: SourceError) -> Self {
        RunError::Source(error)
    }
}

impl From<ConsumeError> for RunError {
    fn from(error: ConsumeError) -> Self {
        RunError::Consume(error)
    }
}

/// Runs the loop until the source ends, goes idle (with `exit_when_idle`), or `stop` is
/// set. Blocking.
pub fn run<S: Store>(
    consumer: &mut Consumer<S>,
    source: &mut dyn Source,
    options: &RunOptions,
    stop: &AtomicBool,
) -> Result<RunReport, RunError> {
    source.resume(&consumer.engine.checkpoints());
    let mut delivered = 0u64;
    let mut commits = 0u64;
    let mut first_delivery = None;
    let mut last_delivery = None;
    let mut oldest_uncommitted: Option<Instant> = None;
    let mut last_progress = Instant::now();
    let started = Instant::now();
    let commit_interval = Duration::from_millis(options.commit_interval_ms);
    // Whatever a restart restored may be ready at once.
    consumer.apply_ready()?;
    let end = loop {
        if stop.load(Ordering::SeqCst) {
            break RunEnd::Stopped;
        }
        let room = options
            .commit_events_max
            .saturating_sub(consumer.uncommitted_events() as usize)
            .max(1);
        let wait = match oldest_uncommitted {
            Some(since) => commit_interval.saturating_sub(since.elapsed()),
            None => Duration::from_millis(POLL_WAIT_MS),
        };
        let polled = source.poll(room, wait)?;
        let mut drained = false;
        let mut finished = false;
        match polled {
            Polled::Revoked(_) | Polled::Assigned(_) => {
                // Whatever was read is applied and committed before partitions change
                // hands; on assignment the state is re-read, since another process may
                // have moved the assigned streams on.
                consumer.apply_ready()?;
                consumer.commit()?;
                commits += 1;
                oldest_uncommitted = None;
                if matches!(polled, Polled::Assigned(_)) {
                    consumer.reload()?;
                }
                source.committed(&consumer.engine.checkpoints());
                source.complete_rebalance(&consumer.engine.checkpoints())?;
                continue;
            }
            Polled::Nothing => {}
            Polled::Events(events) => {
                for (position, bytes, key) in events {
                    consumer.deliver_keyed(position, &bytes, key.as_deref());
                    delivered += 1;
                    oldest_uncommitted.get_or_insert_with(Instant::now);
                    first_delivery.get_or_insert_with(Instant::now);
                    last_delivery = Some(Instant::now());
                    if options.crash_after_deliveries == Some(delivered) {
                        return Ok(RunReport {
                            end: RunEnd::Crashed,
                            counters: consumer.counters(),
                            delivered,
                            commits,
                            first_delivery,
                            last_delivery,
                        });
                    }
                }
            }
            Polled::Idle => drained = true,
            Polled::Finished => {
                drained = true;
                finished = true;
            }
        }
        consumer.apply_ready()?;
        let due = consumer.uncommitted_events() as usize >= options.commit_events_max
            || oldest_uncommitted.is_some_and(|since| since.elapsed() >= commit_interval)
            || (drained && oldest_uncommitted.is_some());
        if due {
            consumer.commit()?;
            commits += 1;
            oldest_uncommitted = None;
            source.committed(&consumer.engine.checkpoints());
        }
        if options.progress
            && last_progress.elapsed() >= Duration::from_millis(PROGRESS_INTERVAL_MS)
        {
            last_progress = Instant::now();
            let rate = delivered as f64 / started.elapsed().as_secs_f64().max(1e-9);
            eprintln!(
                "ordo: {delivered} delivered ({rate:.0}/s), {} applied, {commits} commits",
                consumer.counters().applied
            );
        }
        if drained && consumer.engine.is_quiescent() {
            if options.exit_when_idle {
                consumer.engine.handle_source_drained();
                consumer.apply_ready()?;
                break RunEnd::Idle;
            }
            if finished {
                break RunEnd::Finished;
            }
        }
    };
    consumer.commit()?;
    commits += 1;
    Ok(RunReport {
        end,
        counters: consumer.counters(),
        delivered,
        commits,
        first_delivery,
        last_delivery,
    })
}

/// Runs [`run`] on tokio's blocking pool and stops it gracefully on SIGINT or SIGTERM:
/// the current batch is applied and committed, then the run returns.
pub fn run_until_signal<S: Store + Send + 'static>(
    mut consumer: Consumer<S>,
    mut source: Box<dyn Source>,
    options: RunOptions,
) -> Result<(RunReport, Consumer<S>), RunError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async move {
        let stop = Arc::new(AtomicBool::new(false));
        let signal_stop = stop.clone();
        let signals = tokio::spawn(async move {
            let mut terminate =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            signal_stop.store(true, Ordering::SeqCst);
        });
        let work = tokio::task::spawn_blocking(move || {
            let report = run(&mut consumer, source.as_mut(), &options, &stop);
            report.map(|r| (r, consumer))
        });
        let result = work.await.expect("the run loop does not panic");
        signals.abort();
        result
    })
}
