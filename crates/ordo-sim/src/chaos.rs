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
}

impl Default for ChaosOptions {
    fn default() -> Self {
        ChaosOptions {
            workload: Workload::Scenario(Scenario::Mixed),
            events: 400,
            partitions: 3,
            concurrency: 4,
            faults: Faults::ALL,
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

/// The topic after the producers are done, and what they did.
struct Topic {
    partitions: Vec<Vec<Event>>,
    lost: Option<Event>,
}

fn publish(
    seed: u64,
    history: &[Event],
    options: &ChaosOptions,
    counts: &mut FaultCounts,
) -> Topic {
    let faults = options.faults;
    let mut retry_rng = Rng::derive(seed, "fault:retries");
    let mut duplicate_rng = Rng::derive(seed, "fault:duplicates");
    let mut repartition_rng = Rng::derive(seed, "fault:repartition");
    let mut lost_rng = Rng::derive(seed, "fault:lost");
    // The event-store scenario's publisher crashes between publish and mark.
    let mut source: Vec<Event> = match options.workload {
        Workload::Scenario(Scenario::EventStore) | Workload::Scenario(Scenario::Mixed)
            if faults.duplicates =>
        {
            let republished = deliver_with_publisher_crashes(seed, history, 16, 15);
            counts.duplicated += (republished.len() - history.len()) as u64;
            republished
        }
        _ => history.to_vec(),
    };
    let mut lost = None;
    if faults.lost_event && !source.is_empty() {
        // Lose one event that has a successor in its stream, so a gap is visible.
        let candidates: Vec<usize> = (0..source.len())
            .filter(|&i| {
                source
                    .iter()
                    .any(|e| e.stream == source[i].stream && e.version > source[i].version)
            })
            .collect();
        if !candidates.is_empty() {
            let victim = source[candidates[lost_rng.index(candidates.len())]].clone();
            source.retain(|e| e.id != victim.id);
            counts.lost += 1;
            lost = Some(victim);
        }
    }
    let repartition_at = faults
        .repartition
        .then(|| source.len() / 4 + repartition_rng.index(source.len() / 2 + 1));
    let mut partition_count = options.partitions.max(1);
    let mut partitions: Vec<Vec<Event>> = vec![Vec::new(); partition_count as usize];
    // Sends held back by a retry: (partition, sends still to pass, event).
    let mut retrying: Vec<(u32, u64, Event)> = Vec::new();
    let mut seen_partition: HashMap<Box<str>, u32> = HashMap::new();
    for (index, event) in source.into_iter().enumerate() {
        if repartition_at == Some(index) {
            partition_count *= 2;
            partitions.resize(partition_count as usize, Vec::new());
        }
        let partition = partition_of(&event.stream, partition_count);
        if let Some(previous) = seen_partition.insert(event.stream.clone(), partition) {
            if previous != partition {
                counts.moved_streams += 1;
            }
        }
        let write =
            |p: u32, e: Event, partitions: &mut Vec<Vec<Event>>| partitions[p as usize].push(e);
        // Release retried sends whose delay has passed.
        let mut ready = Vec::new();
        retrying.retain_mut(|(p, left, e)| {
            if *left == 0 {
                ready.push((*p, e.clone()));
                false
            } else {
                *left -= 1;
                true
            }
        });
        for (p, e) in ready {
            write(p, e, &mut partitions);
        }
        if faults.retries && retry_rng.chance(8) {
            counts.retried += 1;
            // The first attempt may have been written after all: a duplicate.
            if retry_rng.chance(30) {
                counts.duplicated += 1;
                write(partition, event.clone(), &mut partitions);
            }
            retrying.push((partition, retry_rng.range(1, 6), event));
            continue;
        }
        write(partition, event.clone(), &mut partitions);
        if faults.duplicates && duplicate_rng.chance(2) {
            // A second writer: the same version under a new id (a replay of old data, a
            // producer that lost track). The first claimant keeps the version; this one
            // is stale, however far behind it arrives.
            counts.second_writers += 1;
            let mut rival = event.clone();
            rival.id = format!("{}~second", event.id).into();
            retrying.push((partition, duplicate_rng.range(0, 20), rival));
        }
        if faults.duplicates && duplicate_rng.chance(6) {
            counts.duplicated += 1;
            write(partition, event, &mut partitions);
        }
    }
    for (p, _, e) in retrying {
        partitions[p as usize].push(e);
    }
    Topic { partitions, lost }
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
    let history = options.workload.history(seed, options.events);
    let mut counts = FaultCounts::default();
    let topic = publish(seed, &history, options, &mut counts);
    let mut trace = Trace::new();
    let mut schedule = Rng::derive(seed, "schedule");
    let mut crash_rng = Rng::derive(seed, "fault:crashes");
    let mut rebalance_rng = Rng::derive(seed, "fault:rebalance");
    let mut poison_rng = Rng::derive(seed, "fault:poison");
    let mut commit_rng = Rng::derive(seed, "commits");
    let mut operator_rng = Rng::derive(seed, "fault:operator");
    let mut operator_actions = 0;
    // Events an operator skipped: the oracle runs them as no-ops.
    let mut skipped: HashSet<Box<str>> = HashSet::new();
    let concurrency = if options.faults.interleaving {
        options.concurrency.max(2)
    } else {
        1
    };

    // A third of the seeds spill every parked stream to the store at each commit; odd
    // seeds write merges before they go out, as with a handler (merge fences then hold
    // across commits and crashes).
    let mut harness = Harness::new(Config {
        parked_streams_in_memory_max: if seed.is_multiple_of(3) { 0 } else { 1 << 16 },
        merges_written_before_dispatch: seed % 2 == 1,
        ..Config::default()
    });
    if options.faults.poison {
        for event in &history {
            if poison_rng.chance(2) {
                harness.poison.insert(event.id.clone());
                counts.poisoned += 1;
            }
        }
    }
    let mut checker = Checker {
        live_versions: HashMap::new(),
        durable_versions: HashMap::new(),
        live_ids: HashSet::new(),
        durable_ids: HashSet::new(),
        gapless: true,
    };
    let partition_count = topic.partitions.len();
    let mut cursors = vec![0usize; partition_count];
    let mut high_water = vec![0usize; partition_count];
    let mut seen: Vec<Event> = Vec::new();
    let mut violation: Option<String> = None;
    let mut crashes = 0;
    let mut rebalances = 0;
    let mut steps = 0u64;

    let restart_cursors = |cursors: &mut Vec<usize>, harness: &Harness, only: Option<usize>| {
        for (p, cursor) in cursors.iter_mut().enumerate() {
            if only.is_none_or(|o| o == p) {
                *cursor = harness
                    .store
                    .checkpoint(p as u32)
                    .map_or(0, |c| c as usize + 1);
            }
        }
    };

    loop {
        steps += 1;
        if steps > STEPS_PER_RUN_MAX {
            violation.get_or_insert_with(|| "the run did not end within its step bound".into());
            break;
        }
        let unread: Vec<usize> = (0..partition_count)
            .filter(|&p| cursors[p] < topic.partitions[p].len())
            .collect();
        if unread.is_empty() {
            break;
        }
        // Uneven fetches: backlogs between partitions, hence between streams.
        let p = unread[schedule.index(unread.len())];
        let fetch = schedule.range(1, 4) as usize;
        for _ in 0..fetch {
            if cursors[p] >= topic.partitions[p].len() {
                break;
            }
            let offset = cursors[p];
            let event = topic.partitions[p][offset].clone();
            if offset < high_water[p] {
                counts.redelivered += 1;
            }
            high_water[p] = high_water[p].max(offset + 1);
            cursors[p] += 1;
            trace.record(format!(
                "deliver p{p}@{offset} {} v{}",
                event.stream, event.version
            ));
            seen.push(event.clone());
            harness.deliver(
                Some(SourcePosition {
                    partition: p as u32,
                    offset: offset as u64,
                }),
                event,
            );
        }
        for _ in 0..schedule.below(4) {
            step_checked(
                &mut harness,
                &mut checker,
                &mut trace,
                &mut schedule,
                concurrency,
                &mut violation,
            );
        }
        harness.advance_clock(1);
        if commit_rng.chance(15) {
            harness.commit();
            trace.record("commit".into());
            if let Err(e) = checker.on_commit(&harness, &topic.partitions) {
                violation.get_or_insert(e);
            }
        }
        if options.faults.poison
            && operator_actions < OPERATOR_ACTIONS_PER_RUN_MAX
            && operator_rng.chance(1)
        {
            operator_actions += 1;
            counts.operator_actions += 1;
            operator_acts(
                &mut harness,
                &mut checker,
                &mut trace,
                &mut operator_rng,
                &mut skipped,
            );
            // The verb commits its action (`Consumer::perform`, then commit).
            harness.commit();
            if let Err(e) = checker.on_commit(&harness, &topic.partitions) {
                violation.get_or_insert(e);
            }
        }
        if options.faults.crashes && crashes < CRASHES_PER_RUN_MAX && crash_rng.chance(1) {
            crashes += 1;
            counts.crashes += 1;
            harness.crash();
            checker.on_crash();
            restart_cursors(&mut cursors, &harness, None);
            trace.record(format!("crash; restart at {cursors:?}"));
        }
        if options.faults.rebalance
            && rebalances < REBALANCES_PER_RUN_MAX
            && rebalance_rng.chance(1)
        {
            rebalances += 1;
            counts.rebalances += 1;
            // Revocation: in-flight work finishes and commits, then the partition goes
            // back to its committed position (its new owner reads from there); whatever was
            // read but not yet applied is delivered again.
            for step in harness.complete_out() {
                record_step(&step, &mut checker, &mut trace, &mut violation);
            }
            harness.commit();
            if let Err(e) = checker.on_commit(&harness, &topic.partitions) {
                violation.get_or_insert(e);
            }
            let revoked = rebalance_rng.index(partition_count);
            restart_cursors(&mut cursors, &harness, Some(revoked));
            trace.record(format!(
                "rebalance: p{revoked} restarts at {}",
                cursors[revoked]
            ));
        }
    }
    let mut run = Run {
        harness: &mut harness,
        checker: &mut checker,
        trace: &mut trace,
        schedule: &mut schedule,
        violation: &mut violation,
        concurrency,
        topic: &topic.partitions,
    };
    run.drain_and_commit();
    // The operator fixes the handler and replays the dead-letter queue, rate-limited.
    let poisoned = std::mem::take(&mut run.harness.poison);
    if !poisoned.is_empty() {
        let mut rounds = 0;
        loop {
            let entries: Vec<_> = run.harness.store.dead_letters.values().cloned().collect();
            if entries.is_empty() || rounds > 16 {
                break;
            }
            rounds += 1;
            for entry in entries {
                run.harness.advance_clock(REPLAY_INTERVAL_MS);
                let result = run
                    .harness
                    .engine
                    .replay_dead_letter(run.harness.now_ms, &entry);
                counts.replayed += 1;
                run.trace
                    .record(format!("replay dead letter {} -> {result:?}", entry.id));
                run.drain_and_commit();
            }
        }
    }
    // Drained: fences of merges that can never go are lifted; what waited for them goes.
    run.harness.engine.handle_source_drained();
    run.drain_and_commit();
    harness.engine.handle_source_drained();
    harness.commit();
    let counters = harness.engine.counters();
    let actual = harness.export();
    // The in-order consumer of what was published waits forever at a lost event.
    let expected_history: Vec<Event> = history
        .iter()
        .filter(|e| topic.lost.as_ref().is_none_or(|lost| e.id != lost.id))
        .cloned()
        .collect();
    // What an operator skipped passes its version and changes nothing.
    let expected = oracle::run_skipping(&expected_history, &skipped);
    let divergence = compare(&expected, &actual, true);
    if let Some(lost) = &topic.lost {
        let reported = harness
            .engine
            .waiting()
            .iter()
            .any(|w| *w.stream == *lost.stream && w.reason.contains("gap"));
        if counters.stalled == 0 || !reported {
            violation.get_or_insert_with(|| {
                format!(
                    "the lost `{}` v{} was not reported as a stalled gap",
                    lost.stream, lost.version
                )
            });
        }
    }
    // Baselines on the very same deliveries. Their handlers fail on the same poison
    // events; without a sequenced dead-letter queue they log and move on (the event is
    // lost to them).
    let seen: Vec<Event> = seen
        .into_iter()
        .filter(|e| !poisoned.contains(&e.id))
        .collect();
    let partition_ordered = naive::run(&seen);
    let mut naive_rng = Rng::derive(seed, "baseline:naive");
    let mut arrival = seen.clone();
    // Handlers completing out of order: each delivery lands within `concurrency` places.
    if concurrency > 1 {
        for i in 0..arrival.len() {
            let j = (i + naive_rng.index(concurrency)).min(arrival.len() - 1);
            arrival.swap(i, j);
        }
    }
    let naive = naive::run(&arrival);
    let lww = run_lww(&seen);
    ChaosReport {
        seed,
        entities: expected.len(),
        naive_wrong: count_wrong(&expected, &naive, false),
        partition_ordered_wrong: count_wrong(&expected, &partition_ordered, false),
        lww_wrong: count_wrong(&expected, &lww, false),
        divergence,
        violation,
        counters,
        faults: counts,
        trace_hash: trace.hash,
        trace_tail: trace.tail.into_iter().collect(),
    }
}

/// The parts of a run the end-of-run steps need together.
struct Run<'a> {
    harness: &'a mut Harness,
    checker: &'a mut Checker,
    trace: &'a mut Trace,
    schedule: &'a mut Rng,
    violation: &'a mut Option<String>,
    concurrency: usize,
    topic: &'a [Vec<Event>],
}

impl Run<'_> {
    /// Applies everything ready (checked step by step), then commits (checked).
    fn drain_and_commit(&mut self) {
        loop {
            while step_checked(
                self.harness,
                self.checker,
                self.trace,
                self.schedule,
                self.concurrency,
                self.violation,
            ) {}
            // A merge written before it goes out goes once this commit wrote it.
            let merges_held = self.harness.engine.awaits_commit();
            self.harness.commit();
            if let Err(e) = self.checker.on_commit(self.harness, self.topic) {
                self.violation.get_or_insert(e);
            }
            if !merges_held {
                break;
            }
        }
    }
}

/// An operator, while events still arrive, takes the oldest sequenced dead letter and
/// either replays a corrected event in its place (the same event under a new id, as
/// `dlq replay --body` does) or skips it (the oracle then runs it as a no-op).
fn operator_acts(
    harness: &mut Harness,
    checker: &mut Checker,
    trace: &mut Trace,
    rng: &mut Rng,
    skipped: &mut HashSet<Box<str>>,
) {
    let Some(entry) = harness
        .store
        .dead_letters
        .values()
        .find(|e| e.kind == ordo_core::DeadLetterKind::Sequenced)
        .cloned()
    else {
        return;
    };
    if rng.chance(50) {
        let Ok(mut event) =
            ordo_core::parse_event(entry.body.as_bytes(), ordo_core::OpPolicy::Document)
        else {
            return;
        };
        event.id = format!("{}~fixed", event.id).into();
        let mut fixed = entry.clone();
        fixed.body = event.to_json_string();
        fixed.event_id = Some(event.id.clone());
        let result = harness.engine.replay_dead_letter(harness.now_ms, &fixed);
        trace.record(format!(
            "operator: corrected replay of dead letter {} -> {result:?}",
            entry.id
        ));
    } else {
        let result = harness.engine.skip_dead_letter(harness.now_ms, &entry);
        trace.record(format!(
            "operator: skip of dead letter {} -> {result:?}",
            entry.id
        ));
        if let (Ok(()), Some(stream), Some(version), Some(id)) =
            (result, &entry.stream, entry.version, &entry.event_id)
        {
            skipped.insert(id.clone());
            checker.skipped(stream, version);
        }
    }
}

/// Records a completed work and checks it.
fn record_step(
    step: &crate::harness::Step,
    checker: &mut Checker,
    trace: &mut Trace,
    violation: &mut Option<String>,
) {
    let verb = if step.applied { "apply" } else { "reject" };
    trace.record(format!("{verb} {} v{}", step.stream, step.version));
    if step.applied {
        if let Err(e) = checker.on_step(&step.stream, step.version, &step.id) {
            violation.get_or_insert(e);
        }
    }
}

/// Completes one work, records it and checks it. False when nothing was left to do.
fn step_checked(
    harness: &mut Harness,
    checker: &mut Checker,
    trace: &mut Trace,
    schedule: &mut Rng,
    concurrency: usize,
    violation: &mut Option<String>,
) -> bool {
    let Some(step) = harness.step(Some(schedule), concurrency) else {
        return false;
    };
    record_step(&step, checker, trace, violation);
    true
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
    let mut text = format!(
        "seed {} FAILED (reproduce with --seed {})\n",
        report.seed, report.seed
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
    fn a_checker_catches_a_broken_consumer() {
        // The checkers must be able to fail: feed them an out-of-order apply.
        let mut checker = Checker {
            live_versions: HashMap::new(),
            durable_versions: HashMap::new(),
            live_ids: HashSet::new(),
            durable_ids: HashSet::new(),
            gapless: true,
        };
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
