//! `ordo chaos`: production's disorder thrown at the real core and projection, one seed
//! at a time, checked against the in-order oracle after every run and against invariants
//! after every step.
//!
//! A run is a script over virtual time, driven by one `u64` seed. Every kind of fault
//! draws from its own salted generator ([`Rng::derive`]), so enabling one fault never
//! shifts another's draws. The world:
//!
//! - producers publish the scenario's history into a partitioned topic (key = stream),
//!   with retries that reorder and duplicate, a partition count that doubles mid-run
//!   (keys move), an event-store publisher that re-publishes after crashing, an event that
//!   is lost for good, and poison events the handler refuses until an operator fixes it;
//! - one consumer reads the partitions at uneven speeds (backlogs between streams), with
//!   several handlers completing out of order, commits now and then, crashes (everything
//!   not committed is lost; cursors restart at the committed checkpoints), and rebalances
//!   (cursors of revoked partitions restart at their committed checkpoints);
//! - at the end the operator replays the dead-letter queue at a limited rate.
//!
//! Checkers draw no randomness: per step, no stream applies out of version order and no
//! event applies twice; per commit, no checkpoint passes an unsettled event; per run, the
//! final state equals the oracle's (the in-order consumer of everything that was
//! published, which waits forever at a lost event, as ordo must: stalled, never skipped).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use ordo_core::{Config, Counters, Event, Op, SourcePosition, VersionMode};
use serde_json::json;

use crate::export::{compare, count_wrong, Divergence, Export};
use crate::harness::Harness;
use crate::rng::Rng;
use crate::scenarios::Scenario;
use crate::workload::{deliver_with_publisher_crashes, event};
use crate::{naive, oracle};

/// Most crashes in one run.
pub const CRASHES_PER_RUN_MAX: u32 = 3;
/// Most rebalances in one run.
pub const REBALANCES_PER_RUN_MAX: u32 = 3;
/// Lines of trace kept for a failure report.
pub const TRACE_TAIL_LINES: usize = 40;
/// Virtual milliseconds between two dead-letter replays (the operator's rate limit).
pub const REPLAY_INTERVAL_MS: u64 = 100;
/// Most consumer steps in one run (a bound that only a bug would reach).
pub const STEPS_PER_RUN_MAX: u64 = 2_000_000;

/// Operator actions taken while events still arrive (a corrected replay or a skip of a
/// dead letter), at most, per run with poison.
pub const OPERATOR_ACTIONS_PER_RUN_MAX: u32 = 4;

/// The kinds of fault, each switchable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Faults {
    /// Handlers complete out of order (several works out at once).
    pub interleaving: bool,
    /// Producer retries: a failed send is resent later (reorder), sometimes after it
    /// was written after all (duplicate).
    pub retries: bool,
    /// Redelivery: events published twice.
    pub duplicates: bool,
    /// Consumer crashes; restart from the durable copy.
    pub crashes: bool,
    /// The partition count doubles mid-run; keys move.
    pub repartition: bool,
    /// Partitions are revoked and reassigned: their cursors go back to the checkpoint.
    pub rebalance: bool,
    /// Poison events, dead-lettered, then replayed late at a limited rate.
    pub poison: bool,
    /// One event is never published: its stream must end stalled.
    pub lost_event: bool,
}

impl Faults {
    /// Everything at once.
    pub const ALL: Faults = Faults {
        interleaving: true,
        retries: true,
        duplicates: true,
        crashes: true,
        repartition: true,
        rebalance: true,
        poison: true,
        lost_event: true,
    };

    /// Nothing at all.
    pub const NONE: Faults = Faults {
        interleaving: false,
        retries: false,
        duplicates: false,
        crashes: false,
        repartition: false,
        rebalance: false,
        poison: false,
        lost_event: false,
    };

    /// Each fault alone, named, for the survival matrix.
    pub fn each() -> Vec<(&'static str, Faults)> {
        let one = |f: fn(&mut Faults)| {
            let mut faults = Faults::NONE;
            f(&mut faults);
            faults
        };
        vec![
            ("interleaving", one(|f| f.interleaving = true)),
            ("retries", one(|f| f.retries = true)),
            ("duplicates", one(|f| f.duplicates = true)),
            ("crashes", one(|f| f.crashes = true)),
            ("repartition", one(|f| f.repartition = true)),
            ("rebalance", one(|f| f.rebalance = true)),
            ("poison", one(|f| f.poison = true)),
        ]
    }
}

/// How often each fault strikes: a percent chance at each draw. Fixed by default; in swarm
/// mode (TigerBeetle's VOPR) drawn from the seed and printed with it, so that some seeds
/// run with a fault almost always on and others with it off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultRates {
    /// A producer's send fails and is retried later (a reorder).
    pub retry_pct: u64,
    /// A failed send was written after all (a duplicate).
    pub retry_written_pct: u64,
    /// An event is published again under a new id (a second writer).
    pub second_writer_pct: u64,
    /// An event is published twice.
    pub duplicate_pct: u64,
    /// The outbox publisher crashes between publishing a batch and marking it.
    pub publisher_crash_pct: u64,
    /// An event is poison: the handler refuses it until an operator fixes it.
    pub poison_pct: u64,
    /// The consumer commits after a fetch.
    pub commit_pct: u64,
    /// An operator acts on a dead letter after a fetch.
    pub operator_pct: u64,
    /// An operator's action is a corrected replay (else a skip).
    pub operator_replay_pct: u64,
    /// The consumer crashes after a fetch.
    pub crash_pct: u64,
    /// A partition is revoked after a fetch.
    pub rebalance_pct: u64,
}

/// In swarm mode, the chance that a fault's rate is drawn as zero (off for the seed).
pub const SWARM_OFF_PCT: u64 = 25;
/// In swarm mode, the most a rate is scaled up from its fixed value.
pub const SWARM_SCALE_MAX: u64 = 4;

impl FaultRates {
    /// The rates every seed runs with outside swarm mode.
    pub const FIXED: FaultRates = FaultRates {
        retry_pct: 8,
        retry_written_pct: 30,
        second_writer_pct: 2,
        duplicate_pct: 6,
        publisher_crash_pct: 15,
        poison_pct: 2,
        commit_pct: 15,
        operator_pct: 1,
        operator_replay_pct: 50,
        crash_pct: 1,
        rebalance_pct: 1,
    };

    /// The rates of one seed in swarm mode: each fault off with [`SWARM_OFF_PCT`] chance,
    /// else anywhere from 1 % to [`SWARM_SCALE_MAX`] times its fixed rate (at most 100 %).
    pub fn swarm(seed: u64) -> FaultRates {
        let mut rng = Rng::derive(seed, "swarm");
        let mut draw = |fixed: u64| {
            if rng.chance(SWARM_OFF_PCT) {
                0
            } else {
                rng.range(1, (fixed * SWARM_SCALE_MAX).clamp(1, 100))
            }
        };
        let fixed = FaultRates::FIXED;
        FaultRates {
            retry_pct: draw(fixed.retry_pct),
            retry_written_pct: draw(fixed.retry_written_pct),
            second_writer_pct: draw(fixed.second_writer_pct),
            duplicate_pct: draw(fixed.duplicate_pct),
            publisher_crash_pct: draw(fixed.publisher_crash_pct),
            poison_pct: draw(fixed.poison_pct),
            commit_pct: draw(fixed.commit_pct),
            operator_pct: draw(fixed.operator_pct),
            operator_replay_pct: draw(fixed.operator_replay_pct),
            crash_pct: draw(fixed.crash_pct),
            rebalance_pct: draw(fixed.rebalance_pct),
        }
    }

    /// As JSON, each rate in percent.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "retry_pct": self.retry_pct,
            "retry_written_pct": self.retry_written_pct,
            "second_writer_pct": self.second_writer_pct,
            "duplicate_pct": self.duplicate_pct,
            "publisher_crash_pct": self.publisher_crash_pct,
            "poison_pct": self.poison_pct,
            "commit_pct": self.commit_pct,
            "operator_pct": self.operator_pct,
            "operator_replay_pct": self.operator_replay_pct,
            "crash_pct": self.crash_pct,
            "rebalance_pct": self.rebalance_pct,
        })
    }
}

impl std::fmt::Display for FaultRates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "retry {}% (written anyway {}%), second writer {}%, duplicate {}%, publisher crash {}%, poison {}%, commit {}%, operator {}% (replay {}%), crash {}%, rebalance {}%",
            self.retry_pct,
            self.retry_written_pct,
            self.second_writer_pct,
            self.duplicate_pct,
            self.publisher_crash_pct,
            self.poison_pct,
            self.commit_pct,
            self.operator_pct,
            self.operator_replay_pct,
            self.crash_pct,
            self.rebalance_pct
        )
    }
}

/// What a chaos run is made of.
#[derive(Clone, Copy, Debug)]
pub struct ChaosOptions {
    /// The history.
    pub workload: Workload,
    /// Events in the history.
    pub events: usize,
    /// Partitions at the start.
    pub partitions: u32,
    /// Most works out at once.
    pub concurrency: usize,
    /// Which faults.
    pub faults: Faults,
    /// Whether each seed draws its own fault rates ([`FaultRates::swarm`]) instead of
    /// running with [`FaultRates::FIXED`].
    pub swarm: bool,
}

impl ChaosOptions {
    /// The fault rates `seed` runs with.
    pub fn rates_for(&self, seed: u64) -> FaultRates {
        if self.swarm {
            FaultRates::swarm(seed)
        } else {
            FaultRates::FIXED
        }
    }
}

impl Default for ChaosOptions {
    fn default() -> Self {
        ChaosOptions {
            workload: Workload::Scenario(Scenario::Mixed),
            events: 400,
            partitions: 3,
            concurrency: 4,
            faults: Faults::ALL,
            swarm: false,
        }
    }
}

/// Where a run's history comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// A field scenario.
    Scenario(Scenario),
    /// Only `set` after creation: order matters, duplicates do not.
    SetOnly,
    /// Only `incr` after creation: duplicates matter, order does not.
    IncrOnly,
}

impl Workload {
    /// The workload's name.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Scenario(s) => s.name(),
            Workload::SetOnly => "set-only",
            Workload::IncrOnly => "incr-only",
        }
    }

    fn history(self, seed: u64, events: usize) -> Vec<Event> {
        match self {
            Workload::Scenario(scenario) => scenario.history(seed, events),
            Workload::SetOnly | Workload::IncrOnly => {
                let mut rng = Rng::derive(seed, "simple-workload");
                let streams = (events / 10).max(2);
                let mut versions = vec![0u64; streams];
                let mut history = Vec::with_capacity(events);
                for n in 0..events {
                    let s = rng.index(streams);
                    versions[s] += 1;
                    let stream = format!("entity-{s}");
                    let (op, data) = if versions[s] == 1 || self == Workload::SetOnly {
                        (Op::Set, json!({"value": n, "n": 0}))
                    } else {
                        (Op::Incr, json!({"n": 1}))
                    };
                    history.push(event(
                        format!("{stream}:{}", versions[s]),
                        &stream,
                        versions[s],
                        "Changed",
                        op,
                        data,
                        vec![],
                    ));
                }
                history
            }
        }
    }
}

/// Fault counts of one run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Sends retried (reordered).
    pub retried: u64,
    /// Events published more than once.
    pub duplicated: u64,
    /// Events published again under a new id (second writers).
    pub second_writers: u64,
    /// Operator actions taken while events still arrived (corrected replays, skips).
    pub operator_actions: u64,
    /// Crashes.
    pub crashes: u64,
    /// Rebalances.
    pub rebalances: u64,
    /// Streams whose partition changed when the partition count grew.
    pub moved_streams: u64,
    /// Poison events.
    pub poisoned: u64,
    /// Dead letters replayed.
    pub replayed: u64,
    /// Events never published.
    pub lost: u64,
    /// Deliveries seen again after a crash or rebalance.
    pub redelivered: u64,
}

impl FaultCounts {
    fn add(&mut self, other: &FaultCounts) {
        self.retried += other.retried;
        self.duplicated += other.duplicated;
        self.second_writers += other.second_writers;
        self.operator_actions += other.operator_actions;
        self.crashes += other.crashes;
        self.rebalances += other.rebalances;
        self.moved_streams += other.moved_streams;
        self.poisoned += other.poisoned;
        self.replayed += other.replayed;
        self.lost += other.lost;
        self.redelivered += other.redelivered;
    }

    /// As JSON.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "retried": self.retried,
            "duplicated": self.duplicated,
            "second_writers": self.second_writers,
            "operator_actions": self.operator_actions,
            "crashes": self.crashes,
            "rebalances": self.rebalances,
            "moved_streams": self.moved_streams,
            "poisoned": self.poisoned,
            "replayed": self.replayed,
            "lost": self.lost,
            "redelivered": self.redelivered,
        })
    }
}

/// The result of one seed.
#[derive(Debug)]
pub struct ChaosReport {
    /// The seed.
    pub seed: u64,
    /// The fault rates it ran with.
    pub rates: FaultRates,
    /// Whether those rates were drawn from the seed (swarm mode).
    pub swarm: bool,
    /// Difference between ordo and the oracle (empty when converged).
    pub divergence: Divergence,
    /// The first invariant broken, if any.
    pub violation: Option<String>,
    /// ordo's counters.
    pub counters: Counters,
    /// What was thrown at it.
    pub faults: FaultCounts,
    /// Entities in the oracle's final state.
    pub entities: usize,
    /// Entities the naive consumer (arrival order, handlers out of order) got wrong.
    pub naive_wrong: usize,
    /// Entities the partition-ordered consumer without a version guard got wrong.
    pub partition_ordered_wrong: usize,
    /// Entities the last-writer-wins (monotonic) engine got wrong.
    pub lww_wrong: usize,
    /// A hash of the whole trace: the same seed must give the same hash.
    pub trace_hash: u64,
    /// The last lines of the trace.
    pub trace_tail: Vec<String>,
}

impl ChaosReport {
    /// Whether ordo converged with every invariant kept.
    pub fn ok(&self) -> bool {
        self.divergence.is_empty() && self.violation.is_none()
    }
}

/// The trace: hashed entirely, its tail kept for failure reports.
struct Trace {
    hash: u64,
    tail: std::collections::VecDeque<String>,
}

impl Trace {
    fn new() -> Self {
        Trace {
            hash: 0xcbf2_9ce4_8422_2325,
            tail: Default::default(),
        }
    }

    fn record(&mut self, line: String) {
        for byte in line.bytes().chain(std::iter::once(b'\n')) {
            self.hash ^= u64::from(byte);
            self.hash = self.hash.wrapping_mul(0x0100_0000_01b3);
        }
        if std::env::var_os("ORDO_CHAOS_FULL_TRACE").is_some() {
            tracing::info!("TRACE {line}");
        }
        if self.tail.len() == TRACE_TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }
}

/// The partition a keyed producer sends a stream's events to.
pub(crate) fn partition_of(stream: &str, partitions: u32) -> u32 {
    (ordo_core::id_hash(stream) % u64::from(partitions)) as u32
}

/// Events per batch of the outbox publisher that crashes between publish and mark.
const OUTBOX_BATCH_EVENTS: usize = 16;

/// Sends a retried send is held back for, at most.
const RETRY_DELAY_SENDS_MAX: u64 = 6;

/// Sends a second writer's copy is held back for, at most.
const SECOND_WRITER_DELAY_SENDS_MAX: u64 = 20;

/// The topic after the producers are done, and what they did.
struct Topic {
    partitions: Vec<Vec<Event>>,
    lost: Option<Event>,
}

fn publish(
    seed: u64,
    history: &[Event],
    options: &ChaosOptions,
    rates: &FaultRates,
    counts: &mut FaultCounts,
) -> Topic {
    let mut source = outbox_deliveries(seed, history, options, rates, counts);
    let lost = if options.faults.lost_event {
        lose_one_event(seed, &mut source, counts)
    } else {
        None
    };
    let mut producer = Producer::new(seed, options, rates, source.len());
    for (index, event) in source.into_iter().enumerate() {
        producer.send(index, event, counts);
    }
    Topic {
        partitions: producer.flush(),
        lost,
    }
}

/// What the producers hand the topic: in the event-store and mixed scenarios, an outbox
/// publisher that crashes between publishing a batch and marking it re-publishes it.
fn outbox_deliveries(
    seed: u64,
    history: &[Event],
    options: &ChaosOptions,
    rates: &FaultRates,
    counts: &mut FaultCounts,
) -> Vec<Event> {
    match options.workload {
        Workload::Scenario(Scenario::EventStore) | Workload::Scenario(Scenario::Mixed)
            if options.faults.duplicates =>
        {
            let republished = deliver_with_publisher_crashes(
                seed,
                history,
                OUTBOX_BATCH_EVENTS,
                rates.publisher_crash_pct,
            );
            counts.duplicated += (republished.len() - history.len()) as u64;
            republished
        }
        _ => history.to_vec(),
    }
}

/// Loses one event that has a successor in its stream, so that a gap is visible.
fn lose_one_event(seed: u64, source: &mut Vec<Event>, counts: &mut FaultCounts) -> Option<Event> {
    if source.is_empty() {
        return None;
    }
    let mut lost_rng = Rng::derive(seed, "fault:lost");
    let candidates: Vec<usize> = (0..source.len())
        .filter(|&i| {
            source
                .iter()
                .any(|e| e.stream == source[i].stream && e.version > source[i].version)
        })
        .collect();
    if candidates.is_empty() {
        return None;
    }
    let victim = source[candidates[lost_rng.index(candidates.len())]].clone();
    source.retain(|e| e.id != victim.id);
    counts.lost += 1;
    Some(victim)
}

/// The keyed producers writing into the partitioned topic: retries that reorder and
/// duplicate, second writers, duplicates, and a partition count that doubles once.
struct Producer {
    faults: Faults,
    rates: FaultRates,
    retry_rng: Rng,
    duplicate_rng: Rng,
    /// The send at which the partition count doubles.
    repartition_at: Option<usize>,
    partitions: Vec<Vec<Event>>,
    /// Sends held back by a retry: (partition, sends still to pass, event).
    retrying: Vec<(u32, u64, Event)>,
    seen_partition: HashMap<Box<str>, u32>,
}

impl Producer {
    fn new(seed: u64, options: &ChaosOptions, rates: &FaultRates, sends: usize) -> Self {
        let mut repartition_rng = Rng::derive(seed, "fault:repartition");
        Producer {
            faults: options.faults,
            rates: *rates,
            retry_rng: Rng::derive(seed, "fault:retries"),
            duplicate_rng: Rng::derive(seed, "fault:duplicates"),
            repartition_at: options
                .faults
                .repartition
                .then(|| sends / 4 + repartition_rng.index(sends / 2 + 1)),
            partitions: vec![Vec::new(); options.partitions.max(1) as usize],
            retrying: Vec::new(),
            seen_partition: HashMap::new(),
        }
    }

    fn send(&mut self, index: usize, event: Event, counts: &mut FaultCounts) {
        if self.repartition_at == Some(index) {
            let doubled = self.partitions.len() * 2;
            self.partitions.resize(doubled, Vec::new());
        }
        let partition = partition_of(&event.stream, self.partitions.len() as u32);
        if let Some(previous) = self.seen_partition.insert(event.stream.clone(), partition) {
            if previous != partition {
                counts.moved_streams += 1;
            }
        }
        self.release_due_retries();
        if self.faults.retries && self.retry_rng.chance(self.rates.retry_pct) {
            counts.retried += 1;
            // The first attempt may have been written after all: a duplicate.
            if self.retry_rng.chance(self.rates.retry_written_pct) {
                counts.duplicated += 1;
                self.write(partition, event.clone());
            }
            let delay = self.retry_rng.range(1, RETRY_DELAY_SENDS_MAX);
            self.retrying.push((partition, delay, event));
            return;
        }
        self.write(partition, event.clone());
        if self.faults.duplicates && self.duplicate_rng.chance(self.rates.second_writer_pct) {
            // A second writer: the same version under a new id (a replay of old data, a
            // producer that lost track). The first claimant keeps the version; this one
            // is stale, however far behind it arrives.
            counts.second_writers += 1;
            let mut rival = event.clone();
            rival.id = format!("{}~second", event.id).into();
            let delay = self.duplicate_rng.range(0, SECOND_WRITER_DELAY_SENDS_MAX);
            self.retrying.push((partition, delay, rival));
        }
        if self.faults.duplicates && self.duplicate_rng.chance(self.rates.duplicate_pct) {
            counts.duplicated += 1;
            self.write(partition, event);
        }
    }

    /// Writes the retried sends whose delay has passed.
    fn release_due_retries(&mut self) {
        let mut ready = Vec::new();
        self.retrying.retain_mut(|(p, left, e)| {
            if *left == 0 {
                ready.push((*p, e.clone()));
                false
            } else {
                *left -= 1;
                true
            }
        });
        for (p, e) in ready {
            self.write(p, e);
        }
    }

    fn write(&mut self, partition: u32, event: Event) {
        self.partitions[partition as usize].push(event);
    }

    /// The topic once every held-back send has gone.
    fn flush(mut self) -> Vec<Vec<Event>> {
        for (p, _, e) in std::mem::take(&mut self.retrying) {
            self.write(p, e);
        }
        self.partitions
    }
}

/// The per-step and per-commit checks. They read state; they never draw randomness.
struct Checker {
    live_versions: HashMap<Box<str>, u64>,
    durable_versions: HashMap<Box<str>, u64>,
    live_ids: HashSet<Box<str>>,
    durable_ids: HashSet<Box<str>>,
    gapless: bool,
}

impl Checker {
    fn new() -> Self {
        Checker {
            live_versions: HashMap::new(),
            durable_versions: HashMap::new(),
            live_ids: HashSet::new(),
            durable_ids: HashSet::new(),
            gapless: true,
        }
    }

    fn on_step(&mut self, stream: &str, version: u64, id: &str) -> Result<(), String> {
        let last = self.live_versions.get(stream).copied().unwrap_or(0);
        let in_order = if self.gapless {
            version == last + 1
        } else {
            version > last
        };
        if !in_order {
            return Err(format!("`{stream}` applied version {version} after {last}"));
        }
        if !self.live_ids.insert(id.into()) {
            return Err(format!("event `{id}` applied twice"));
        }
        self.live_versions.insert(stream.into(), version);
        Ok(())
    }

    fn on_commit(&mut self, harness: &Harness, topic: &[Vec<Event>]) -> Result<(), String> {
        // Versions can move without an apply (operator skips); take the store's word.
        self.durable_versions = self.live_versions.clone();
        self.durable_ids = self.live_ids.clone();
        for (partition, events) in topic.iter().enumerate() {
            let Some(checkpoint) = harness.store.checkpoint(partition as u32) else {
                continue;
            };
            for (offset, event) in events.iter().enumerate().take(checkpoint as usize + 1) {
                let settled = event.version <= harness.store.applied(&event.stream)
                    || harness.store.is_pending(&event.stream, event.version)
                    || harness.store.is_dead_lettered(&event.id)
                    || redeliverable_copy(topic, harness, &event.id)
                    || redeliverable_claimant(topic, harness, event);
                if !settled {
                    return Err(format!(
                        "checkpoint {checkpoint} of partition {partition} passes offset {offset} (`{}` v{}), which is neither applied, waiting nor dead-lettered in the store",
                        event.stream, event.version
                    ));
                }
            }
        }
        Ok(())
    }

    /// An operator passed `version` of `stream` without applying it.
    fn skipped(&mut self, stream: &str, version: u64) {
        let last = self.live_versions.entry(stream.into()).or_insert(0);
        *last = (*last).max(version);
    }

    fn on_crash(&mut self) {
        self.live_versions = self.durable_versions.clone();
        self.live_ids = self.durable_ids.clone();
    }
}

/// Whether another copy of the event (a producer duplicate, possibly in another
/// partition after a repartition) sits beyond its partition's committed checkpoint: a
/// restart would deliver it again, so the event is not lost even though this offset is
/// settled as a duplicate of it.
fn redeliverable_copy(topic: &[Vec<Event>], harness: &Harness, id: &str) -> bool {
    topic.iter().enumerate().any(|(p, events)| {
        events_after(events, harness.store.checkpoint(p as u32)).any(|e| &*e.id == id)
    })
}

/// Whether another event claiming the same version (the first claimant, when this one
/// is a second writer's: skipped as stale while the first waited) holds it in the store
/// as a dead letter, or sits beyond its partition's checkpoint: a restart delivers it
/// again, and this one would be stale again.
fn redeliverable_claimant(topic: &[Vec<Event>], harness: &Harness, event: &Event) -> bool {
    let claimant =
        |e: &Event| e.stream == event.stream && e.version == event.version && e.id != event.id;
    topic.iter().enumerate().any(|(p, events)| {
        events
            .iter()
            .any(|e| claimant(e) && harness.store.is_dead_lettered(&e.id))
            || events_after(events, harness.store.checkpoint(p as u32)).any(claimant)
    })
}

fn events_after(events: &[Event], checkpoint: Option<u64>) -> impl Iterator<Item = &Event> {
    let first = checkpoint.map_or(0, |c| c as usize + 1);
    events.iter().skip(first)
}

/// Runs one seed.
pub fn run_seed(seed: u64, options: &ChaosOptions) -> ChaosReport {
    let rates = options.rates_for(seed);
    let history = options.workload.history(seed, options.events);
    let mut counts = FaultCounts::default();
    let topic = publish(seed, &history, options, &rates, &mut counts);
    let mut run = SeedRun::new(seed, options, rates, &history, topic, counts);
    while run.fetch_round() {}
    run.drain_and_commit();
    let poisoned = run.replay_dead_letters();
    // Drained: fences of merges that can never go are lifted; what waited for them goes.
    run.harness.engine.handle_source_drained();
    run.drain_and_commit();
    run.harness.engine.handle_source_drained();
    run.harness.commit();
    run.report(&history, &poisoned)
}

/// One seed's consumer side: the harness, the checks, and the generators of the faults
/// that strike while it reads.
struct SeedRun {
    seed: u64,
    options: ChaosOptions,
    rates: FaultRates,
    harness: Harness,
    checker: Checker,
    trace: Trace,
    topic: Topic,
    /// Picks partitions, fetch sizes and which handler completes next.
    schedule: Rng,
    crash_rng: Rng,
    rebalance_rng: Rng,
    commit_rng: Rng,
    operator_rng: Rng,
    /// Most works out at once.
    concurrency: usize,
    /// The next offset each partition's reader fetches.
    cursors: Vec<usize>,
    /// The highest offset each partition's reader has fetched, plus one.
    high_water: Vec<usize>,
    /// Every delivery, in order, for the baselines.
    seen: Vec<Event>,
    violation: Option<String>,
    counts: FaultCounts,
    crashes: u32,
    rebalances: u32,
    operator_actions: u32,
    steps: u64,
    /// Events an operator skipped: the oracle runs them as no-ops.
    skipped: HashSet<Box<str>>,
}

impl SeedRun {
    fn new(
        seed: u64,
        options: &ChaosOptions,
        rates: FaultRates,
        history: &[Event],
        topic: Topic,
        mut counts: FaultCounts,
    ) -> Self {
        // A third of the seeds spill every parked stream to the store at each commit; odd
        // seeds write merges before they go out, as with a handler (merge fences then
        // hold across commits and crashes).
        let mut harness = Harness::new(Config {
            parked_streams_in_memory_max: if seed.is_multiple_of(3) { 0 } else { 1 << 16 },
            merges_written_before_dispatch: seed % 2 == 1,
            ..Config::default()
        });
        if options.faults.poison {
            let mut poison_rng = Rng::derive(seed, "fault:poison");
            for event in history {
                if poison_rng.chance(rates.poison_pct) {
                    harness.poison.insert(event.id.clone());
                    counts.poisoned += 1;
                }
            }
        }
        let partition_count = topic.partitions.len();
        SeedRun {
            seed,
            options: *options,
            rates,
            harness,
            checker: Checker::new(),
            trace: Trace::new(),
            topic,
            schedule: Rng::derive(seed, "schedule"),
            crash_rng: Rng::derive(seed, "fault:crashes"),
            rebalance_rng: Rng::derive(seed, "fault:rebalance"),
            commit_rng: Rng::derive(seed, "commits"),
            operator_rng: Rng::derive(seed, "fault:operator"),
            concurrency: if options.faults.interleaving {
                options.concurrency.max(2)
            } else {
                1
            },
            cursors: vec![0; partition_count],
            high_water: vec![0; partition_count],
            seen: Vec::new(),
            violation: None,
            counts,
            crashes: 0,
            rebalances: 0,
            operator_actions: 0,
            steps: 0,
            skipped: HashSet::new(),
        }
    }

    /// One round of the consumer: a fetch from one partition, a few handler completions,
    /// and whichever commit, operator action, crash or rebalance the seed draws. False
    /// once every partition is read to its end.
    fn fetch_round(&mut self) -> bool {
        self.steps += 1;
        if self.steps > STEPS_PER_RUN_MAX {
            self.violation
                .get_or_insert_with(|| "the run did not end within its step bound".into());
            return false;
        }
        let unread: Vec<usize> = (0..self.cursors.len())
            .filter(|&p| self.cursors[p] < self.topic.partitions[p].len())
            .collect();
        if unread.is_empty() {
            return false;
        }
        // Uneven fetches: backlogs between partitions, hence between streams.
        let partition = unread[self.schedule.index(unread.len())];
        let fetch = self.schedule.range(1, 4) as usize;
        self.fetch(partition, fetch);
        for _ in 0..self.schedule.below(4) {
            self.step_checked();
        }
        self.harness.advance_clock(1);
        if self.commit_rng.chance(self.rates.commit_pct) {
            self.harness.commit();
            self.trace.record("commit".into());
            self.check_commit();
        }
        self.maybe_operator_acts();
        self.maybe_crash();
        self.maybe_rebalance();
        true
    }

    /// Delivers up to `count` events of `partition` from its cursor.
    fn fetch(&mut self, partition: usize, count: usize) {
        let p = partition;
        for _ in 0..count {
            let offset = self.cursors[p];
            let Some(event) = self.topic.partitions[p].get(offset).cloned() else {
                break;
            };
            if offset < self.high_water[p] {
                self.counts.redelivered += 1;
            }
            self.high_water[p] = self.high_water[p].max(offset + 1);
            self.cursors[p] += 1;
            self.trace.record(format!(
                "deliver p{p}@{offset} {} v{}",
                event.stream, event.version
            ));
            self.seen.push(event.clone());
            let position = SourcePosition {
                partition: p as u32,
                offset: offset as u64,
            };
            self.harness.deliver(Some(position), event);
        }
    }

    fn maybe_operator_acts(&mut self) {
        if self.options.faults.poison
            && self.operator_actions < OPERATOR_ACTIONS_PER_RUN_MAX
            && self.operator_rng.chance(self.rates.operator_pct)
        {
            self.operator_actions += 1;
            self.counts.operator_actions += 1;
            self.operator_acts();
            // The verb commits its action (`Consumer::perform`, then commit).
            self.harness.commit();
            self.check_commit();
        }
    }

    fn maybe_crash(&mut self) {
        if self.options.faults.crashes
            && self.crashes < CRASHES_PER_RUN_MAX
            && self.crash_rng.chance(self.rates.crash_pct)
        {
            self.crashes += 1;
            self.counts.crashes += 1;
            self.harness.crash();
            self.checker.on_crash();
            self.restart_cursors(None);
            let cursors = &self.cursors;
            self.trace.record(format!("crash; restart at {cursors:?}"));
        }
    }

    fn maybe_rebalance(&mut self) {
        if !(self.options.faults.rebalance
            && self.rebalances < REBALANCES_PER_RUN_MAX
            && self.rebalance_rng.chance(self.rates.rebalance_pct))
        {
            return;
        }
        self.rebalances += 1;
        self.counts.rebalances += 1;
        // Revocation: in-flight work finishes and commits, then the partition goes back
        // to its committed position (its new owner reads from there); whatever was read
        // but not yet applied is delivered again.
        for step in self.harness.complete_out() {
            self.record_step(&step);
        }
        self.harness.commit();
        self.check_commit();
        let revoked = self.rebalance_rng.index(self.cursors.len());
        self.restart_cursors(Some(revoked));
        let cursor = self.cursors[revoked];
        self.trace
            .record(format!("rebalance: p{revoked} restarts at {cursor}"));
    }

    /// Puts the cursors of every partition (or of `only`) back at their committed
    /// checkpoints.
    fn restart_cursors(&mut self, only: Option<usize>) {
        for (p, cursor) in self.cursors.iter_mut().enumerate() {
            if only.is_none_or(|o| o == p) {
                *cursor = self
                    .harness
                    .store
                    .checkpoint(p as u32)
                    .map_or(0, |c| c as usize + 1);
            }
        }
    }

    /// Checks what the last commit made durable.
    fn check_commit(&mut self) {
        if let Err(e) = self
            .checker
            .on_commit(&self.harness, &self.topic.partitions)
        {
            self.violation.get_or_insert(e);
        }
    }

    /// Applies everything ready (checked step by step), then commits (checked).
    fn drain_and_commit(&mut self) {
        loop {
            while self.step_checked() {}
            // A merge written before it goes out goes once this commit wrote it.
            let merges_held = self.harness.engine.awaits_commit();
            self.harness.commit();
            self.check_commit();
            if !merges_held {
                break;
            }
        }
    }

    /// The operator fixes the handler and replays the dead-letter queue, rate-limited.
    /// Returns the events that were poison.
    fn replay_dead_letters(&mut self) -> HashSet<Box<str>> {
        let poisoned = std::mem::take(&mut self.harness.poison);
        if poisoned.is_empty() {
            return poisoned;
        }
        let mut rounds = 0;
        loop {
            let entries: Vec<_> = self.harness.store.dead_letters.values().cloned().collect();
            if entries.is_empty() || rounds > 16 {
                break;
            }
            rounds += 1;
            for entry in entries {
                self.harness.advance_clock(REPLAY_INTERVAL_MS);
                let now_ms = self.harness.now_ms;
                let result = self.harness.engine.replay_dead_letter(now_ms, &entry);
                self.counts.replayed += 1;
                self.trace
                    .record(format!("replay dead letter {} -> {result:?}", entry.id));
                self.drain_and_commit();
            }
        }
        poisoned
    }

    /// An operator, while events still arrive, takes the oldest sequenced dead letter and
    /// either replays a corrected event in its place (the same event under a new id, as
    /// `dlq replay --body` does) or skips it (the oracle then runs it as a no-op).
    fn operator_acts(&mut self) {
        let Some(entry) = self
            .harness
            .store
            .dead_letters
            .values()
            .find(|e| e.kind == ordo_core::DeadLetterKind::Sequenced)
            .cloned()
        else {
            return;
        };
        let now_ms = self.harness.now_ms;
        if self.operator_rng.chance(self.rates.operator_replay_pct) {
            let Ok(mut event) =
                ordo_core::parse_event(entry.body.as_bytes(), ordo_core::OpPolicy::Document)
            else {
                return;
            };
            event.id = format!("{}~fixed", event.id).into();
            let mut fixed = entry.clone();
            fixed.body = event.to_json_string();
            fixed.event_id = Some(event.id.clone());
            let result = self.harness.engine.replay_dead_letter(now_ms, &fixed);
            self.trace.record(format!(
                "operator: corrected replay of dead letter {} -> {result:?}",
                entry.id
            ));
        } else {
            let result = self.harness.engine.skip_dead_letter(now_ms, &entry);
            self.trace.record(format!(
                "operator: skip of dead letter {} -> {result:?}",
                entry.id
            ));
            if let (Ok(()), Some(stream), Some(version), Some(id)) =
                (result, &entry.stream, entry.version, &entry.event_id)
            {
                self.skipped.insert(id.clone());
                self.checker.skipped(stream, version);
            }
        }
    }

    /// Completes one work, records it and checks it. False when nothing was left to do.
    fn step_checked(&mut self) -> bool {
        let Some(step) = self
            .harness
            .step(Some(&mut self.schedule), self.concurrency)
        else {
            return false;
        };
        self.record_step(&step);
        true
    }

    /// Records a completed work and checks it.
    fn record_step(&mut self, step: &crate::harness::Step) {
        let verb = if step.applied { "apply" } else { "reject" };
        self.trace
            .record(format!("{verb} {} v{}", step.stream, step.version));
        if step.applied {
            if let Err(e) = self.checker.on_step(&step.stream, step.version, &step.id) {
                self.violation.get_or_insert(e);
            }
        }
    }

    /// Compares the end state with the oracle's and runs the baselines on the same
    /// deliveries.
    fn report(mut self, history: &[Event], poisoned: &HashSet<Box<str>>) -> ChaosReport {
        let counters = self.harness.engine.counters();
        let actual = self.harness.export();
        // The in-order consumer of what was published waits forever at a lost event.
        let lost = self.topic.lost.take();
        let expected_history: Vec<Event> = history
            .iter()
            .filter(|e| lost.as_ref().is_none_or(|lost| e.id != lost.id))
            .cloned()
            .collect();
        // What an operator skipped passes its version and changes nothing.
        let expected = oracle::run_skipping(&expected_history, &self.skipped);
        let divergence = compare(&expected, &actual, true);
        if let Some(lost) = &lost {
            self.check_lost_reported(lost, &counters);
        }
        let baselines = Baselines::run(self.seed, &self.seen, poisoned, self.concurrency);
        ChaosReport {
            seed: self.seed,
            rates: self.rates,
            swarm: self.options.swarm,
            entities: expected.len(),
            naive_wrong: count_wrong(&expected, &baselines.naive, false),
            partition_ordered_wrong: count_wrong(&expected, &baselines.partition_ordered, false),
            lww_wrong: count_wrong(&expected, &baselines.lww, false),
            divergence,
            violation: self.violation,
            counters,
            faults: self.counts,
            trace_hash: self.trace.hash,
            trace_tail: self.trace.tail.into_iter().collect(),
        }
    }

    /// The lost event's stream must end reported as a stalled gap, never skipped.
    fn check_lost_reported(&mut self, lost: &Event, counters: &Counters) {
        let reported = self
            .harness
            .engine
            .waiting()
            .iter()
            .any(|w| *w.stream == *lost.stream && w.reason.contains("gap"));
        if counters.stalled == 0 || !reported {
            self.violation.get_or_insert_with(|| {
                format!(
                    "the lost `{}` v{} was not reported as a stalled gap",
                    lost.stream, lost.version
                )
            });
        }
    }
}

/// The other designs' end states on the very same deliveries. Their handlers fail on the
/// same poison events; without a sequenced dead-letter queue they log and move on (the
/// event is lost to them).
struct Baselines {
    naive: Export,
    partition_ordered: Export,
    lww: Export,
}

impl Baselines {
    fn run(seed: u64, seen: &[Event], poisoned: &HashSet<Box<str>>, concurrency: usize) -> Self {
        let seen: Vec<Event> = seen
            .iter()
            .filter(|e| !poisoned.contains(&e.id))
            .cloned()
            .collect();
        let partition_ordered = naive::run(&seen);
        let mut naive_rng = Rng::derive(seed, "baseline:naive");
        let mut arrival = seen.clone();
        // Handlers completing out of order: each delivery lands within `concurrency`
        // places.
        if concurrency > 1 {
            for i in 0..arrival.len() {
                let j = (i + naive_rng.index(concurrency)).min(arrival.len() - 1);
                arrival.swap(i, j);
            }
        }
        Baselines {
            naive: naive::run(&arrival),
            partition_ordered,
            lww: run_lww(&seen),
        }
    }
}

/// The last-writer-wins design: the same engine, every stream monotonic.
fn run_lww(deliveries: &[Event]) -> Export {
    let mut harness = Harness::new(Config {
        default_mode: VersionMode::Monotonic,
        ..Config::default()
    });
    for (offset, event) in deliveries.iter().enumerate() {
        harness.deliver(
            Some(SourcePosition {
                partition: 0,
                offset: offset as u64,
            }),
            event.clone(),
        );
        harness.drain(None, 1);
    }
    harness.export()
}

/// Totals over many seeds.
#[derive(Debug, Default)]
pub struct Summary {
    /// Seeds run.
    pub seeds: u64,
    /// Seeds where ordo diverged or broke an invariant.
    pub divergences: u64,
    /// Seeds where an invariant broke (included in `divergences`).
    pub invariant_violations: u64,
    /// Seeds where the naive consumer got something wrong.
    pub naive_divergences: u64,
    /// Seeds where the partition-ordered consumer got something wrong.
    pub partition_ordered_divergences: u64,
    /// Seeds where last-writer-wins got something wrong.
    pub lww_divergences: u64,
    /// Summed counters.
    pub counters: BTreeMap<&'static str, u64>,
    /// Summed fault counts.
    pub faults: FaultCounts,
    /// The first failing seed's report.
    pub first_failure: Option<String>,
}

impl Summary {
    /// Adds one seed's report.
    pub fn add(&mut self, report: &ChaosReport) {
        self.seeds += 1;
        self.invariant_violations += u64::from(report.violation.is_some());
        if !report.ok() {
            self.divergences += 1;
            if self.first_failure.is_none() {
                self.first_failure = Some(failure_text(report));
            }
        }
        self.naive_divergences += u64::from(report.naive_wrong > 0);
        self.partition_ordered_divergences += u64::from(report.partition_ordered_wrong > 0);
        self.lww_divergences += u64::from(report.lww_wrong > 0);
        for (name, value) in report.counters.fields() {
            *self.counters.entry(name).or_default() += value;
        }
        self.faults.add(&report.faults);
    }
}

/// A failing seed, for humans: the seed, what broke, and the end of the trace.
pub fn failure_text(report: &ChaosReport) -> String {
    let swarm = if report.swarm { " --swarm" } else { "" };
    let mut text = format!(
        "seed {} FAILED (reproduce with --seed {}{swarm})\nfault rates: {}\n",
        report.seed, report.seed, report.rates
    );
    if let Some(violation) = &report.violation {
        let _ = writeln!(text, "invariant broken: {violation}");
    }
    if !report.divergence.is_empty() {
        let _ = writeln!(
            text,
            "final state differs from the oracle:\n{}",
            report.divergence
        );
    }
    let _ = writeln!(text, "last {} trace lines:", report.trace_tail.len());
    for line in &report.trace_tail {
        let _ = writeln!(text, "  {line}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_trace() {
        let options = ChaosOptions::default();
        let a = run_seed(17, &options);
        let b = run_seed(17, &options);
        assert_eq!(a.trace_hash, b.trace_hash);
        assert_eq!(a.counters, b.counters);
        assert_ne!(a.trace_hash, run_seed(18, &options).trace_hash);
    }

    #[test]
    fn every_scenario_converges_under_every_fault() {
        for scenario in Scenario::ALL {
            let options = ChaosOptions {
                workload: Workload::Scenario(scenario),
                ..ChaosOptions::default()
            };
            for seed in 0..40 {
                let report = run_seed(seed, &options);
                assert!(
                    report.ok(),
                    "{}: {}",
                    scenario.name(),
                    failure_text(&report)
                );
            }
        }
    }

    #[test]
    fn swarm_seeds_draw_their_own_rates_and_converge() {
        let options = ChaosOptions {
            swarm: true,
            ..ChaosOptions::default()
        };
        let rates: Vec<FaultRates> = (0..60).map(|seed| options.rates_for(seed)).collect();
        assert_eq!(rates[7], FaultRates::swarm(7), "a seed's rates are its own");
        assert!(
            rates.iter().any(|r| r.crash_pct == 0),
            "some seed runs without crashes"
        );
        assert!(
            rates
                .iter()
                .any(|r| r.retry_pct > FaultRates::FIXED.retry_pct),
            "some seed retries more than the fixed rate"
        );
        let mut all = FaultCounts::default();
        for (seed, rates) in rates.iter().enumerate() {
            let report = run_seed(seed as u64, &options);
            all.add(&report.faults);
            assert_eq!(report.rates, *rates);
            assert!(report.ok(), "{}", failure_text(&report));
            // Each rate is wired to its fault: off means none of that fault happened.
            let faults = report.faults;
            for (rate, count, what) in [
                (rates.retry_pct, faults.retried, "retries"),
                (
                    rates.second_writer_pct,
                    faults.second_writers,
                    "second writers",
                ),
                (rates.poison_pct, faults.poisoned, "poison events"),
                (
                    rates.operator_pct,
                    faults.operator_actions,
                    "operator actions",
                ),
                (rates.crash_pct, faults.crashes, "crashes"),
                (rates.rebalance_pct, faults.rebalances, "rebalances"),
            ] {
                assert!(
                    rate > 0 || count == 0,
                    "seed {seed}: {what} at rate 0: {count}"
                );
            }
        }
        // And on: over sixty seeds, every fault struck somewhere.
        assert!(
            all.crashes > 0 && all.retried > 0 && all.rebalances > 0,
            "{all:?}"
        );
        assert!(all.poisoned > 0 && all.second_writers > 0, "{all:?}");
        let text = failure_text(&run_seed(3, &options));
        assert!(text.contains("--seed 3 --swarm"), "{text}");
        assert!(
            text.contains(&format!("fault rates: {}", rates[3])),
            "{text}"
        );
    }

    #[test]
    fn a_checker_catches_a_broken_consumer() {
        // The checkers must be able to fail: feed them an out-of-order apply.
        let mut checker = Checker::new();
        assert!(checker.on_step("s", 1, "a").is_ok());
        assert!(checker.on_step("s", 3, "c").is_err());
        assert!(checker.on_step("t", 1, "a").is_err(), "the same id twice");
    }
}

/// Which designs survive which fault, on which kind of operation.
#[derive(Debug)]
pub struct MatrixRow {
    /// The fault (alone).
    pub fault: &'static str,
    /// The workload (`set-only` or `incr-only`).
    pub workload: &'static str,
    /// Seeds run.
    pub seeds: u64,
    /// Seeds ordo got wrong.
    pub ordo: u64,
    /// Seeds the partition-ordered consumer (no version guard) got wrong.
    pub partition_ordered: u64,
    /// Seeds the naive consumer got wrong.
    pub naive: u64,
    /// Seeds last-writer-wins got wrong.
    pub lww: u64,
}

/// Runs each fault alone on a set-only and an incr-only workload against every design.
pub fn survival_matrix(seeds: u64, events: usize) -> Vec<MatrixRow> {
    let mut rows = Vec::new();
    for (fault, faults) in Faults::each() {
        for workload in [Workload::SetOnly, Workload::IncrOnly] {
            let options = ChaosOptions {
                workload,
                events,
                faults,
                ..ChaosOptions::default()
            };
            let mut row = MatrixRow {
                fault,
                workload: workload.name(),
                seeds,
                ordo: 0,
                partition_ordered: 0,
                naive: 0,
                lww: 0,
            };
            for seed in 0..seeds {
                let report = run_seed(seed, &options);
                row.ordo += u64::from(!report.ok());
                row.partition_ordered += u64::from(report.partition_ordered_wrong > 0);
                row.naive += u64::from(report.naive_wrong > 0);
                row.lww += u64::from(report.lww_wrong > 0);
            }
            rows.push(row);
        }
    }
    rows
}
