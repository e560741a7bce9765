//! One seeded convergence run: a random history, delivered with disorder, duplicates,
//! concurrent handlers and crashes, checked against the in-order oracle; the naive
//! consumer runs on the same deliveries for contrast.

use ordo_core::{Config, Counters, Event, SourcePosition};

use crate::export::{compare, count_wrong, Divergence};
use crate::harness::Harness;
use crate::rng::Rng;
use crate::workload::{deliver, random_history, Disorder, Shape};
use crate::{naive, oracle};

/// Most crashes injected into one run, so a run always ends.
pub const CRASHES_PER_RUN_MAX: u32 = 4;

/// What a convergence run throws at the consumer.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// The history's size and mix.
    pub shape: Shape,
    /// How deliveries are reordered.
    pub disorder: Disorder,
    /// Share of events delivered twice (percent).
    pub duplicate_percent: u64,
    /// Most works out at once.
    pub concurrency: usize,
    /// Chance of a commit after each delivery (percent).
    pub commit_percent: u64,
    /// Chance of a crash after each delivery (percent).
    pub crash_percent: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            shape: Shape::default(),
            disorder: Disorder::Shuffle,
            duplicate_percent: 20,
            concurrency: 4,
            commit_percent: 10,
            crash_percent: 1,
        }
    }
}

/// The result of one run.
#[derive(Debug)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// How the consumer's final state differs from the oracle's (empty when converged).
    pub divergence: Divergence,
    /// Events still waiting at the end (must be 0: every event was delivered), with
    /// what each waits for.
    pub left_waiting: Vec<ordo_core::WaitingEvent>,
    /// Streams left spilled (parked, their events only in the store) at the end.
    pub left_spilled: usize,
    /// Loads of spilled streams answered during the run (since the last restart).
    pub loads: u64,
    /// How many streams the naive consumer got wrong.
    pub naive_wrong: usize,
    /// How many streams there were.
    pub streams: usize,
    /// The consumer's counters (since its last restart's committed state).
    pub counters: Counters,
    /// How many crashes were injected.
    pub restarts: u64,
}

impl Report {
    /// Whether the run converged with nothing left behind.
    pub fn converged(&self) -> bool {
        self.divergence.is_empty() && self.left_waiting.is_empty() && self.left_spilled == 0
    }
}

/// Runs one seed of a random history.
pub fn run(seed: u64, options: Options) -> Report {
    let history = random_history(seed, options.shape);
    let deliveries = deliver(seed, &history, options.disorder, options.duplicate_percent);
    run_deliveries(seed, &history, &deliveries, options)
}

/// Runs given deliveries of `history` through a crashing consumer and checks the result.
pub fn run_deliveries(
    seed: u64,
    history: &[Event],
    deliveries: &[Event],
    options: Options,
) -> Report {
    let expected = oracle::run(history);
    let naive = naive::run(deliveries);
    let mut schedule = Rng::derive(seed, "schedule");
    let mut faults = Rng::derive(seed, "crash");
    // Every other seed spills every parked stream to the store at each commit, so that
    // loading them back is exercised as much as keeping them.
    let mut harness = Harness::new(Config {
        parked_streams_in_memory_max: if seed.is_multiple_of(2) { 0 } else { 1 << 16 },
        ..Config::default()
    });
    let mut cursor = 0usize;
    let mut crashes = 0;
    while cursor < deliveries.len() {
        let position = SourcePosition {
            partition: 0,
            offset: cursor as u64,
        };
        harness.deliver(Some(position), deliveries[cursor].clone());
        cursor += 1;
        for _ in 0..schedule.below(3) {
            harness.step(Some(&mut schedule), options.concurrency);
        }
        harness.now_ms += 1;
        if faults.chance(options.commit_percent) {
            harness.commit();
        }
        if crashes < CRASHES_PER_RUN_MAX && faults.chance(options.crash_percent) {
            crashes += 1;
            cursor = harness.crash().map_or(0, |offset| offset as usize + 1);
        }
    }
    harness.drain(Some(&mut schedule), options.concurrency);
    harness.commit();
    let actual = harness.export();
    Report {
        seed,
        divergence: compare(&expected, &actual, true),
        left_waiting: harness.engine.waiting(),
        left_spilled: harness.engine.spilled_streams(),
        loads: harness.engine.spill_totals().1,
        naive_wrong: count_wrong(&expected, &naive, false),
        streams: expected.len(),
        counters: harness.engine.counters(),
        restarts: harness.restarts,
    }
}
