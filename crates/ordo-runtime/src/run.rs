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
use ordo_store::{CommitError, Store};

use crate::consumer::{ConsumeError, Consumer};
use crate::source::{Delivery, Polled, Source, SourceError};

/// Default deliveries per commit.
pub const COMMIT_EVENTS_MAX_DEFAULT: usize = 32_768;

/// Default longest time a delivery waits for its commit.
pub const COMMIT_INTERVAL_MS_DEFAULT: u64 = 50;

/// How long one poll of an idle source waits (also how fast a stop request is seen).
pub const POLL_WAIT_MS: u64 = 50;

/// Longest wait for a handler's answer between two looks at the source while calls are
/// out (how late a new delivery may be seen then).
pub const HANDLER_POLL_WAIT_MS: u64 = 5;

/// How long a stop waits for handler calls still out before committing without them
/// (they are sent again after the restart).
pub const STOP_GRACE_MS: u64 = 5_000;

/// How often a group member re-reads the streams its parked events wait for when no
/// notification came (the fallback for a lost `NOTIFY` or a store without them).
pub const AWAITED_RECHECK_MS: u64 = 1_000;

/// How often the loop looks for operator actions left for it (`dlq replay`, `dlq skip`,
/// `parked skip` against a SQLite store this process holds): the contract says within a
/// second.
pub const OPERATOR_RECHECK_MS: u64 = 250;
const _: () = assert!(OPERATOR_RECHECK_MS < 1_000);

/// Most commit conflicts in a row before a run gives up (each one rebuilds the state from
/// the store and reads the uncommitted deliveries again).
pub const CONFLICTS_IN_A_ROW_MAX: u32 = 20;

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
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            exit_when_idle: false,
            commit_events_max: COMMIT_EVENTS_MAX_DEFAULT,
            commit_interval_ms: COMMIT_INTERVAL_MS_DEFAULT,
            progress: false,
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
    /// When the last commit that wrote deliveries finished (the last delivery was durable).
    pub last_delivery_commit: Option<Instant>,
}

/// Why a run failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum RunError {
    /// The source failed.
    Source(SourceError),
    /// The store failed (nothing of the failed batch was written).
    Consume(ConsumeError),
    /// Commits kept conflicting with other processes sharing the store.
    Conflicts {
        /// Conflicts in a row.
        count: u32,
        /// The last one.
        last: ordo_store::ConflictReason,
    },
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Source(e) => e.fmt(f),
            RunError::Consume(e) => e.fmt(f),
            RunError::Conflicts { count, last } => write!(
                f,
                "{count} commits in a row conflicted with other processes sharing the store; last: {last}"
            ),
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
    let mut state = RunLoop::start(consumer, source, options)?;
    loop {
        if let Some(end) = state.step(consumer, source, stop.load(Ordering::SeqCst))? {
            return Ok(state.report(end, consumer));
        }
    }
}

/// The run loop's state between two steps. [`run`] steps it until it ends; a simulation
/// steps several of them (several processes sharing one store) in a seeded interleaving,
/// with the consumers' [`crate::consumer::Clock`] moved by hand: every timer here reads
/// that clock, so one seed gives one run.
#[derive(Debug)]
pub struct RunLoop {
    options: RunOptions,
    delivered: u64,
    commits: u64,
    conflicts: Conflicts,
    first_delivery: Option<Instant>,
    last_delivery: Option<Instant>,
    oldest_uncommitted_ms: Option<u64>,
    last_progress_ms: u64,
    last_recheck_ms: u64,
    last_dead_letter_check_ms: u64,
    last_action_check_ms: u64,
    started_ms: u64,
    /// The source refused to pause partitions (said once, not every turn).
    pause_refused: bool,
}

impl RunLoop {
    /// Positions the source at the stored checkpoints and applies whatever a restart
    /// restored as ready.
    pub fn start<S: Store>(
        consumer: &mut Consumer<S>,
        source: &mut dyn Source,
        options: &RunOptions,
    ) -> Result<Self, RunError> {
        source.resume(&consumer.engine().checkpoints());
        consumer.set_streams_shared(source.shares_streams());
        if source.is_group() && !consumer.is_group_member() {
            // Nothing is owned until the first assignment: restore no member's waiting
            // events before then.
            consumer.claim(&[])?;
            consumer.reload()?;
        }
        // Whatever a restart restored may be ready at once.
        consumer.apply_ready()?;
        if let Some(telemetry) = consumer.telemetry() {
            // A group member is ready once partitions are assigned.
            telemetry.set_ready(!source.is_group());
        }
        let now_ms = consumer.clock().now_ms();
        Ok(RunLoop {
            options: options.clone(),
            delivered: 0,
            commits: 0,
            conflicts: Conflicts::default(),
            first_delivery: None,
            last_delivery: None,
            oldest_uncommitted_ms: None,
            last_progress_ms: now_ms,
            last_recheck_ms: now_ms,
            last_dead_letter_check_ms: now_ms,
            last_action_check_ms: now_ms,
            started_ms: now_ms,
            pause_refused: false,
        })
    }

    /// Tells the source which partitions an operator paused (they may have changed with
    /// an action taken up, or a rebuild that read another process's).
    fn sync_paused_partitions<S: Store>(
        &mut self,
        consumer: &Consumer<S>,
        source: &mut dyn Source,
    ) {
        match source.pause_partitions(consumer.paused_partitions()) {
            Ok(()) => self.pause_refused = false,
            Err(error) if !self.pause_refused => {
                self.pause_refused = true;
                tracing::warn!(%error, "paused partitions are read on");
            }
            Err(_) => {}
        }
    }

    /// What the run did so far, ending with `end`.
    pub fn report<S: Store>(&self, end: RunEnd, consumer: &Consumer<S>) -> RunReport {
        RunReport {
            end,
            counters: consumer.counters(),
            delivered: self.delivered,
            commits: self.commits,
            first_delivery: self.first_delivery,
            last_delivery: self.last_delivery,
            last_delivery_commit: consumer.last_delivery_commit(),
        }
    }

    /// Commits refused so far because another process sharing the store got there first
    /// (each one rebuilt the state and read the batch again).
    pub fn conflicts_total(&self) -> u64 {
        self.conflicts.total
    }

    /// Partitions change hands: whatever was read is applied and committed first (a
    /// conflict drops the batch, which the next owner reads again; no handler call may
    /// still run once the next owner starts sending), then the claims change and the state
    /// is rebuilt from the store, and the source resumes at the stored checkpoints.
    fn rebalance<S: Store>(
        &mut self,
        consumer: &mut Consumer<S>,
        source: &mut dyn Source,
        change: Rebalance<'_>,
    ) -> Result<(), RunError> {
        match change {
            Rebalance::Revoke(partitions) => {
                tracing::info!(?partitions, "partitions revoked");
                if let Some(telemetry) = consumer.telemetry() {
                    telemetry.rebalanced();
                    telemetry.set_ready(false);
                }
            }
            Rebalance::Assign(partitions) => tracing::info!(?partitions, "partitions assigned"),
        }
        consumer.apply_before_rebuild()?;
        if commit(consumer, source, &mut self.conflicts, false)? {
            // What this process committed, told now: after the rebuild the checkpoints
            // are the store's, which for a partition taken over count another member's
            // deliveries (an SQS slot) rather than what this process read.
            source.committed(&consumer.engine().checkpoints());
        }
        self.commits += 1;
        self.oldest_uncommitted_ms = None;
        match change {
            // Forget the revoked partitions' streams: whatever of them still waits here
            // (parked, buffered) is the next owner's now, and nothing may be applied or
            // written for them from this process (its claims no longer cover them, so
            // fencing would not stop it).
            Rebalance::Revoke(partitions) => consumer.release(partitions)?,
            // Claimed before the state is re-read: a former owner that has not noticed it
            // lost a partition can no longer commit for it, so what is read here is final
            // for these partitions.
            Rebalance::Assign(partitions) => consumer.claim(partitions)?,
        }
        consumer.reload()?;
        source.complete_rebalance(&consumer.engine().checkpoints())?;
        if let Rebalance::Assign(partitions) = change {
            consumer.apply_ready()?;
            if let Some(telemetry) = consumer.telemetry() {
                telemetry.rebalanced();
                telemetry.set_ready(!partitions.is_empty());
            }
        }
        Ok(())
    }

    /// One round: poll the source once, apply, commit when due. `Some` when the run
    /// ended (`stop`: the last batch was committed).
    pub fn step<S: Store>(
        &mut self,
        consumer: &mut Consumer<S>,
        source: &mut dyn Source,
        stop: bool,
    ) -> Result<Option<RunEnd>, RunError> {
        report_health(consumer, source);
        self.sync_paused_partitions(consumer, source);
        if stop {
            // Calls still out get a grace period; what they acknowledge is committed.
            consumer.settle_handlers(Some(Duration::from_millis(STOP_GRACE_MS)));
            // A conflict here leaves the batch to be read again by the next owner.
            if commit(consumer, source, &mut self.conflicts, false)? {
                source.committed(&consumer.engine().checkpoints());
            }
            self.commits += 1;
            return Ok(Some(RunEnd::Stopped));
        }
        let (drained, finished) = match self.poll(consumer, source)? {
            Polled::Revoked(partitions) => {
                self.rebalance(consumer, source, Rebalance::Revoke(&partitions))?;
                return Ok(None);
            }
            Polled::Assigned(partitions) => {
                self.rebalance(consumer, source, Rebalance::Assign(&partitions))?;
                return Ok(None);
            }
            Polled::Nothing => (false, false),
            Polled::Events(events) => {
                self.deliver(consumer, &*source, events);
                consumer.refresh_delivered()?;
                (false, false)
            }
            // Read to the end is not caught up: events read but not yet applied (a slow
            // handler, a gap) still count as lag, measured against positions.
            Polled::Idle => (true, false),
            Polled::Finished => (true, true),
        };
        let now_ms = consumer.clock().now_ms();
        self.look_at_other_processes(consumer, source, now_ms)?;
        consumer.apply_ready()?;
        self.commit_if_due(consumer, source, now_ms, drained)?;
        self.log_progress(consumer, now_ms);
        if drained && consumer.engine().is_quiescent() {
            return self.end_if_idle(consumer, source, finished);
        }
        Ok(None)
    }

    /// Polls the source for as many deliveries as the batch has room for, waiting no
    /// longer than the commit interval allows, and not ahead of saturated handlers.
    fn poll<S: Store>(
        &mut self,
        consumer: &mut Consumer<S>,
        source: &mut dyn Source,
    ) -> Result<Polled, RunError> {
        let room = self
            .options
            .commit_events_max
            .saturating_sub(consumer.uncommitted_events() as usize)
            .max(1);
        let now_ms = consumer.clock().now_ms();
        let wait_ms = match self.oldest_uncommitted_ms {
            Some(since_ms) => self
                .options
                .commit_interval_ms
                .saturating_sub(now_ms.saturating_sub(since_ms)),
            None => POLL_WAIT_MS,
        };
        Ok(if consumer.handlers_saturated() {
            // Slow handlers: read no further ahead of them until they catch up.
            consumer.wait_for_handlers(Duration::from_millis(wait_ms.min(POLL_WAIT_MS)));
            Polled::Nothing
        } else if consumer.handlers_in_flight() > 0 {
            // Calls are out: their answers must not wait behind a blocking poll.
            let polled = source.poll(room, Duration::ZERO)?;
            if matches!(polled, Polled::Nothing | Polled::Idle | Polled::Finished) {
                consumer
                    .wait_for_handlers(Duration::from_millis(wait_ms.min(HANDLER_POLL_WAIT_MS)));
            }
            polled
        } else {
            source.poll(room, Duration::from_millis(wait_ms))?
        })
    }

    /// Hands a batch of deliveries to the consumer. The batch arrived at one moment: one
    /// reading of each clock for all of it.
    fn deliver<S: Store>(
        &mut self,
        consumer: &mut Consumer<S>,
        source: &dyn Source,
        events: Vec<Delivery>,
    ) {
        let received = Instant::now();
        let received_ms = consumer.clock().now_ms();
        if let Some(telemetry) = consumer.telemetry() {
            telemetry.delivered(events.len() as u64);
        }
        if !events.is_empty() {
            self.oldest_uncommitted_ms.get_or_insert(received_ms);
            self.first_delivery.get_or_insert(received);
            self.last_delivery = Some(received);
        }
        for (position, bytes, key) in events {
            consumer.deliver_from(received_ms, position, &bytes, key.as_deref(), || {
                source.origin(position)
            });
            self.delivered += 1;
        }
    }

    /// What other processes sharing the store did: a member applied what parked events
    /// here wait for; an operator acted from another process (a replay, a skip) or asked
    /// this one to act. Each is looked at on its own interval.
    fn look_at_other_processes<S: Store>(
        &mut self,
        consumer: &mut Consumer<S>,
        source: &mut dyn Source,
        now_ms: u64,
    ) -> Result<(), RunError> {
        if consumer.awaits_other_members() {
            // Another member may have applied what parked events here wait for.
            let notified = consumer.store().poll_progress();
            if notified || now_ms.saturating_sub(self.last_recheck_ms) >= AWAITED_RECHECK_MS {
                self.last_recheck_ms = now_ms;
                consumer.refresh_awaited()?;
            }
        }
        if now_ms.saturating_sub(self.last_dead_letter_check_ms) >= AWAITED_RECHECK_MS {
            // An operator may have acted from another process (a verb against a shared
            // PostgreSQL store): a dead letter a stream here waits behind replayed or
            // skipped, a missing version passed. Rebuild from the store to go on.
            self.last_dead_letter_check_ms = now_ms;
            let acted = consumer.actions_recorded_elsewhere()?
                || (consumer.is_group_member() && consumer.dead_letters_resolved_elsewhere()?);
            if acted {
                consumer.apply_ready()?;
                if commit(consumer, source, &mut self.conflicts, true)? {
                    self.commits += 1;
                    source.committed(&consumer.engine().checkpoints());
                    consumer.reload()?;
                    source.rewind(&consumer.engine().checkpoints())?;
                }
                self.oldest_uncommitted_ms = None;
            }
        }
        if now_ms.saturating_sub(self.last_action_check_ms) >= OPERATOR_RECHECK_MS {
            self.last_action_check_ms = now_ms;
            if consumer.take_requested_actions()? > 0 {
                // The verb waits for its record: commit it with the action's effects now.
                consumer.apply_ready()?;
                if commit(consumer, source, &mut self.conflicts, true)? {
                    self.commits += 1;
                    source.committed(&consumer.engine().checkpoints());
                }
                self.oldest_uncommitted_ms = None;
            }
        }
        Ok(())
    }

    /// Commits when the batch is full, the oldest uncommitted work has waited the commit
    /// interval, or the source is drained (for the latency of the last events).
    fn commit_if_due<S: Store>(
        &mut self,
        consumer: &mut Consumer<S>,
        source: &mut dyn Source,
        now_ms: u64,
        drained: bool,
    ) -> Result<(), RunError> {
        if consumer.has_uncommitted() || consumer.engine().awaits_commit() {
            // Works applied without a delivery (another member's progress, a spilled
            // stream loaded back, a rebuild after an assignment or a conflict that found
            // them ready) must reach the store too, within the commit interval.
            self.oldest_uncommitted_ms.get_or_insert(now_ms);
        }
        let options = &self.options;
        let due = consumer.uncommitted_events() as usize >= options.commit_events_max
            || self.oldest_uncommitted_ms.is_some_and(|since_ms| {
                now_ms.saturating_sub(since_ms) >= options.commit_interval_ms
            })
            // A drained source commits at once, for the latency of the last events; but
            // not per answer while handler calls are out (the interval bounds those).
            || (drained
                && self.oldest_uncommitted_ms.is_some()
                && consumer.handlers_in_flight() == 0);
        if due {
            self.oldest_uncommitted_ms = None;
            if commit(consumer, source, &mut self.conflicts, true)? {
                self.commits += 1;
                source.committed(&consumer.engine().checkpoints());
            }
        }
        Ok(())
    }

    /// `--progress`: a line now and then with the rate so far.
    fn log_progress<S: Store>(&mut self, consumer: &Consumer<S>, now_ms: u64) {
        if !self.options.progress
            || now_ms.saturating_sub(self.last_progress_ms) < PROGRESS_INTERVAL_MS
        {
            return;
        }
        self.last_progress_ms = now_ms;
        let elapsed_ms = now_ms.saturating_sub(self.started_ms).max(1);
        let rate = self.delivered as f64 * 1000.0 / elapsed_ms as f64;
        tracing::info!(
            "{} delivered ({rate:.0}/s), {} applied, {} commits",
            self.delivered,
            consumer.counters().applied,
            self.commits
        );
    }

    /// The source is drained and nothing can progress: with `--exit-when-idle` the run
    /// ends once gaps are reported and released events went out; a finished source ends
    /// it anyway.
    fn end_if_idle<S: Store>(
        &mut self,
        consumer: &mut Consumer<S>,
        source: &mut dyn Source,
        finished: bool,
    ) -> Result<Option<RunEnd>, RunError> {
        if self.options.exit_when_idle {
            if consumer.awaits_other_members() && consumer.refresh_awaited()? > 0 {
                // Not idle: another member moved what parked events wait for.
                return Ok(None);
            }
            consumer.engine.handle_source_drained();
            consumer.apply_ready()?;
            if !consumer.engine().is_quiescent() {
                // Draining released events (fences of merges that can never go): they go
                // first, then the run ends.
                return Ok(None);
            }
            if commit(consumer, source, &mut self.conflicts, true)? {
                self.commits += 1;
                // A source that deletes or acknowledges what is durable (SQS, NATS) must
                // hear of the last commit too.
                source.committed(&consumer.engine().checkpoints());
                return Ok(Some(RunEnd::Idle));
            }
            return Ok(None);
        }
        if finished {
            if commit(consumer, source, &mut self.conflicts, false)? {
                source.committed(&consumer.engine().checkpoints());
            }
            self.commits += 1;
            return Ok(Some(RunEnd::Finished));
        }
        Ok(None)
    }
}

/// Heartbeat, the source's reachability and (when a scrape asked) the lag.
fn report_health<S: Store>(consumer: &Consumer<S>, source: &mut dyn Source) {
    if let Some(telemetry) = consumer.telemetry().cloned() {
        telemetry.heartbeat();
        telemetry.set_source_reachable(source.reachable());
        if telemetry.lag_wanted() {
            let ends = source.ends();
            telemetry.measured_lag(&ends, &consumer.engine().checkpoints());
        }
    }
}

/// A change of the partitions this process reads, as the source announced it.
#[derive(Clone, Copy)]
enum Rebalance<'a> {
    /// These are taken away.
    Revoke(&'a [u32]),
    /// These are the partitions read from now on.
    Assign(&'a [u32]),
}

/// Commits refused because another process sharing the store got there first.
#[derive(Clone, Copy, Debug, Default)]
struct Conflicts {
    /// Since the last commit that landed (the run gives up beyond a bound).
    in_a_row: u32,
    /// Over the whole run.
    total: u64,
}

/// Commits the consumer's batch. `Ok(false)`: another process sharing the store changed
/// what the batch was computed from; the state was rebuilt from the store and, with
/// `rewind`, the source set back to the stored checkpoints to read the batch again.
fn commit<S: Store>(
    consumer: &mut Consumer<S>,
    source: &mut dyn Source,
    conflicts: &mut Conflicts,
    rewind: bool,
) -> Result<bool, RunError> {
    match consumer.commit() {
        Ok(()) => {
            conflicts.in_a_row = 0;
            Ok(true)
        }
        Err(ConsumeError::Commit(CommitError::Conflict(detail))) => {
            if let Some(telemetry) = consumer.telemetry() {
                telemetry.conflicted();
            }
            conflicts.in_a_row += 1;
            conflicts.total += 1;
            if conflicts.in_a_row > CONFLICTS_IN_A_ROW_MAX {
                return Err(RunError::Conflicts {
                    count: conflicts.in_a_row,
                    last: detail,
                });
            }
            if consumer.verbose {
                tracing::warn!("commit conflict ({detail}); rebuilding from the store and reading the batch again");
            }
            consumer.reload()?;
            consumer.record_conflict(&detail.to_string());
            if rewind {
                source.rewind(&consumer.engine().checkpoints())?;
            }
            consumer.apply_ready()?;
            Ok(false)
        }
        Err(error) => Err(error.into()),
    }
}

/// Runs [`run`] on tokio's blocking pool and stops it gracefully on SIGINT or SIGTERM:
/// the current batch is applied and committed, then the run returns.
pub fn run_until_signal<S: Store + Send + 'static>(
    consumer: Consumer<S>,
    source: Box<dyn Source>,
    options: RunOptions,
) -> Result<(RunReport, Consumer<S>), RunError> {
    run_serving(consumer, source, options, None)
}

/// [`run_until_signal`], serving `endpoint` (`/metrics`, `/healthz`, `/readyz`) beside
/// the loop while it runs.
pub fn run_serving<S: Store + Send + 'static>(
    mut consumer: Consumer<S>,
    mut source: Box<dyn Source>,
    options: RunOptions,
    endpoint: Option<crate::telemetry::Endpoint>,
) -> Result<(RunReport, Consumer<S>), RunError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    if let Some(telemetry) = consumer.telemetry() {
        // Restoring the store took what it took; the loop's clock starts now.
        telemetry.heartbeat();
    }
    let result = runtime.block_on(async move {
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
        let served = endpoint.map(|endpoint| tokio::spawn(crate::telemetry::serve(endpoint)));
        let work = tokio::task::spawn_blocking(move || {
            let report = run(&mut consumer, source.as_mut(), &options, &stop);
            report.map(|r| (r, consumer))
        });
        let result = work.await.expect("the run loop does not panic");
        signals.abort();
        if let Some(served) = served {
            served.abort();
        }
        result
    });
    // A metrics read still out (a database that hangs) must not hold the exit up.
    runtime.shutdown_timeout(Duration::from_millis(
        crate::telemetry::endpoint::SHUTDOWN_WAIT_MS,
    ));
    result
}
