//! Several `ordo run` processes in one consumer group sharing one store, simulated: the
//! real run loop ([`ordo_runtime::RunLoop`]), the real consumer and engine, the shared
//! store's real commit rules ([`ordo_store::SharedMemoryStore`]), and a simulated group
//! coordinator, all in one thread under one seed.
//!
//! The coordinator behaves as Kafka's eager protocol does: a rebalance revokes every
//! member's partitions, and no new assignment is handed out before every member still in
//! the group has finished its revocation (committed). The faults are the ones that
//! protocol lets through:
//!
//! - **kill**: a process dies (SIGKILL: its uncommitted batch is lost); the group notices
//!   only later (session timeout), then rebalances; a supervisor starts a replacement;
//! - **kick**: a live process misses its heartbeats and is expelled; the others take its
//!   partitions while it still reads and commits them (a zombie) until it notices; only
//!   the claims in the store stop it (fenced: the process exits and is restarted);
//! - **join**: one more process (a rebalance while everything runs);
//! - **lost notifications**: a process never hears `NOTIFY`; the periodic re-check must
//!   release what waits for another member;
//! - **poison**: purchases the document projection refuses become sequenced dead letters
//!   (their stream waits, nothing else does), and an operator skips them with
//!   `ordo dlq skip`'s logic from a process of its own while events are still produced.
//!
//! Every member steps in a seeded interleaving, with a shared clock moved by hand.
//! Checkers draw no randomness: at the end the running group (no final sweep by a single
//! process) must reach the in-order oracle within a bound of steps.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ordo_core::{Config, Event, SourcePosition};
use ordo_runtime::{
    Clock, ConsumeError, Consumer, Polled, RunError, RunLoop, RunOptions, Source, SourceError,
};
use ordo_store::{CommitError, SharedMemory, SharedMemoryStore};

use crate::chaos::partition_of;
use crate::export::{compare, Export};
use crate::oracle;
use crate::rng::Rng;
use crate::scenarios::Scenario;

/// Partitions of the simulated topic.
pub const PARTITIONS: u32 = 6;
/// Processes started at the beginning.
pub const MEMBERS_AT_START: usize = 3;
/// Most processes alive at once (a supervisor does not start more).
pub const MEMBERS_MAX: usize = 5;
/// Most virtual milliseconds one step moves the clock.
pub const STEP_MS_MAX: u64 = 20;
/// Steps between two produced chunks of the topic.
pub const PRODUCE_INTERVAL_STEPS: u64 = 600;
/// Chunks the deliveries are produced in.
pub const PRODUCE_CHUNKS: usize = 6;
/// Steps before the group notices a killed member (its session timeout).
pub const KILL_NOTICED_STEPS: u64 = 400;
/// Steps a kicked member goes on as a zombie before it notices.
pub const KICK_NOTICED_STEPS: u64 = 300;
/// Steps before a supervisor restarts a process that exited.
pub const RESTART_STEPS: u64 = 200;
/// Most steps one run may take after the last chunk was produced and the last fault
/// struck, before it counts as not converging (a liveness bound only a bug reaches).
pub const SETTLE_STEPS_MAX: u64 = 200_000;
/// Steps between two convergence checks.
pub const CONVERGENCE_CHECK_STEPS: u64 = 500;
/// Steps the group runs on after it first matched the oracle, which must change nothing
/// (no late zombie commit, no second apply).
pub const STABLE_STEPS: u64 = 1_000;
/// Deliveries per commit at most (small: many commits, many interleavings).
pub const COMMIT_EVENTS_MAX: usize = 16;
/// Poison events per run (with [`GroupFaults::poison`]).
pub const POISON_EVENTS: usize = 2;
/// Steps between two attempts of the operator to skip dead letters. The attempts start
/// while events are still produced, so later events of a skipped stream reach a member
/// that must have noticed the skip.
pub const OPERATOR_INTERVAL_STEPS: u64 = 300;
/// Lines of trace kept for a failure report.
pub const TRACE_TAIL_LINES: usize = 200;

/// Where the simulated members' checkpoints are kept.
const SOURCE_KEY: &str = "kafka://simulated/topic?group=members";

/// The checkpoint key of the operator's process (it delivers nothing), as `ordo dlq` uses.
const OPERATOR_SOURCE: &str = "ordo:operator";

/// Turns [`POISON_EVENTS`] purchases of customers into an `incr` of the customer's name
/// (a string: the document projection refuses it). Returns the poisoned history and the
/// history the oracle must run once an operator skipped them: each poison replaced by a
/// no-op at its version (a skip passes the version and changes nothing).
fn poisoned(seed: u64, history: &[Event]) -> (Vec<Event>, Vec<Event>) {
    let mut rng = Rng::derive(seed, "poison");
    let mut candidates: Vec<usize> = history
        .iter()
        .enumerate()
        // In the first chunk produced, so the stream has events after the skip.
        .take(history.len() / PRODUCE_CHUNKS)
        .filter(|(_, e)| {
            e.stream.starts_with("customer-") && e.version >= 2 && e.op == ordo_core::Op::Incr
        })
        .map(|(i, _)| i)
        .collect();
    let mut poisoned = history.to_vec();
    let mut skipped = history.to_vec();
    rng.shuffle(&mut candidates);
    for &index in candidates.iter().take(POISON_EVENTS) {
        poisoned[index].data = serde_json::json!({"name": 1});
        skipped[index].op = ordo_core::Op::Patch;
        skipped[index].data = serde_json::json!({});
    }
    (poisoned, skipped)
}

/// Which faults a run throws.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupFaults {
    /// A member is SIGKILLed and replaced.
    pub kill: bool,
    /// A member is expelled while it runs (a zombie until it notices).
    pub kick: bool,
    /// A member joins mid-run.
    pub join: bool,
    /// One member never hears notifications.
    pub lost_notifications: bool,
    /// Poison: purchases the document projection refuses become sequenced dead letters
    /// (their streams wait, nothing else does); later an operator skips them from a
    /// process of its own while the group runs, and the members must go on.
    pub poison: bool,
}

impl GroupFaults {
    /// Everything.
    pub const ALL: GroupFaults = GroupFaults {
        kill: true,
        kick: true,
        join: true,
        lost_notifications: true,
        poison: true,
    };
}

/// What a run is made of.
#[derive(Clone, Copy, Debug)]
pub struct GroupOptions {
    /// About how many events the history holds.
    pub events: usize,
    /// The faults.
    pub faults: GroupFaults,
    /// Run against a broken store that makes none of the sharing checks (checker tests).
    pub unchecked_store: bool,
}

impl Default for GroupOptions {
    fn default() -> Self {
        GroupOptions {
            events: 1_200,
            faults: GroupFaults::ALL,
            unchecked_store: false,
        }
    }
}

/// How one seed's run went.
#[derive(Clone, Debug)]
pub struct GroupReport {
    /// The seed.
    pub seed: u64,
    /// Steps taken.
    pub steps: u64,
    /// Processes started (the first ones, replacements, joiners).
    pub started: u64,
    /// Processes that exited fenced (zombies stopped by their claims).
    pub fenced: u64,
    /// Commits refused as conflicts (another member got there first).
    pub conflicts: u64,
    /// Rebalances.
    pub rebalances: u64,
    /// Why the run failed, when it did (with the divergence from the oracle).
    pub failure: Option<String>,
    /// The last lines of the trace.
    pub trace_tail: Vec<String>,
    /// A fingerprint of the whole trace (the same seed must give the same one).
    pub trace_hash: u64,
}

impl GroupReport {
    /// Whether the group converged to the oracle.
    pub fn ok(&self) -> bool {
        self.failure.is_none()
    }

    /// A failure report that names the seed and how to run it again.
    pub fn failure_text(&self) -> String {
        let mut text = format!(
            "group simulation seed {} failed after {} steps: {}\nrerun: ORDO_GROUP_SEED={} cargo test -p ordo-sim --test group -- --nocapture\nlast trace lines:\n",
            self.seed,
            self.steps,
            self.failure.as_deref().unwrap_or("-"),
            self.seed
        );
        for line in &self.trace_tail {
            let _ = writeln!(text, "  {line}");
        }
        text
    }
}

/// One message of the simulated topic.
#[derive(Clone, Debug)]
struct Message {
    value: Vec<u8>,
    key: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Rebalance {
    Revoke(Vec<u32>),
    Assign(Vec<u32>),
}

#[derive(Debug, Default)]
struct Slot {
    /// Counted by the coordinator (it may be dead and not noticed yet).
    in_group: bool,
    /// Rebalance callbacks not yet completed, in order.
    inbox: VecDeque<Rebalance>,
    /// The callbacks are not seen before this step (a zombie has not noticed yet).
    hidden_until_step: u64,
    /// What the member holds (assignments completed, revocations not yet).
    held: Vec<u32>,
    /// A kicked member joins again once it has completed its revocation.
    rejoin: bool,
}

/// The broker: the topic and the group coordinator.
#[derive(Debug, Default)]
struct Broker {
    topic: Vec<Vec<Message>>,
    slots: BTreeMap<u64, Slot>,
    step: u64,
    rebalances: u64,
    /// What members saw of the coordinator since the simulation last looked.
    log: Vec<String>,
}

impl Broker {
    /// A new generation: everyone in the group revokes what it holds, then gets its
    /// share (handed out only once every revocation completed).
    fn rebalance(&mut self) {
        self.rebalances += 1;
        let members: Vec<u64> = self
            .slots
            .iter()
            .filter(|(_, s)| s.in_group)
            .map(|(id, _)| *id)
            .collect();
        let rotation = self.rebalances as usize;
        for (index, id) in members.iter().enumerate() {
            let share: Vec<u32> = (0..PARTITIONS)
                .filter(|p| (*p as usize + rotation) % members.len() == index)
                .collect();
            let slot = self.slots.get_mut(id).expect("listed above");
            // An assignment not yet seen is replaced: the member learns the newest one.
            slot.inbox.retain(|r| matches!(r, Rebalance::Revoke(_)));
            if slot.inbox.is_empty() && !slot.held.is_empty() {
                slot.inbox.push_back(Rebalance::Revoke(slot.held.clone()));
            }
            slot.inbox.push_back(Rebalance::Assign(share));
        }
    }

    /// The callback `member` may see now, if any.
    fn next_callback(&self, member: u64) -> Option<Rebalance> {
        let slot = self.slots.get(&member)?;
        if slot.hidden_until_step > self.step {
            return None;
        }
        let next = slot.inbox.front()?;
        if matches!(next, Rebalance::Assign(_)) {
            // The barrier: nobody in the group still holds revoked partitions.
            let revoking = self.slots.iter().any(|(id, s)| {
                *id != member && s.in_group && matches!(s.inbox.front(), Some(Rebalance::Revoke(_)))
            });
            if revoking {
                return None;
            }
        }
        Some(next.clone())
    }

    /// The member completed its front callback.
    fn completed(&mut self, member: u64) {
        let Some(slot) = self.slots.get_mut(&member) else {
            return;
        };
        match slot.inbox.pop_front() {
            Some(Rebalance::Revoke(_)) => {
                slot.held.clear();
                if slot.rejoin {
                    slot.rejoin = false;
                    slot.in_group = true;
                    self.rebalance();
                }
            }
            Some(Rebalance::Assign(partitions)) => slot.held = partitions,
            None => {}
        }
    }

    /// The coordinator expels a member (session timeout, or it left) and rebalances.
    fn expel(&mut self, member: u64) {
        if self.slots.remove(&member).is_some_and(|s| s.in_group) {
            self.rebalance();
        }
    }

    /// A live member missed its heartbeats: the others take its partitions now; it
    /// learns at `noticed_step`, revokes, and joins again.
    fn kick(&mut self, member: u64, noticed_step: u64) {
        let Some(slot) = self.slots.get_mut(&member) else {
            return;
        };
        slot.in_group = false;
        slot.inbox.clear();
        slot.inbox.push_back(Rebalance::Revoke(slot.held.clone()));
        slot.hidden_until_step = noticed_step;
        slot.rejoin = true;
        self.rebalance();
    }
}

fn lock(broker: &Mutex<Broker>) -> MutexGuard<'_, Broker> {
    broker.lock().unwrap_or_else(|e| e.into_inner())
}

/// One member's view of the simulated broker: its [`Source`].
struct GroupSource {
    broker: Arc<Mutex<Broker>>,
    member: u64,
    /// Next offset to read per assigned partition.
    positions: BTreeMap<u32, u64>,
    answering: bool,
    rng: Rng,
}

impl Source for GroupSource {
    fn resume(&mut self, _checkpoints: &[(u32, u64)]) {}

    fn poll(&mut self, max: usize, _wait: Duration) -> Result<Polled, SourceError> {
        let broker = lock(&self.broker);
        if let Some(callback) = broker.next_callback(self.member) {
            self.answering = true;
            let line = format!("member {} sees {callback:?}", self.member);
            drop(broker);
            lock(&self.broker).log.push(line);
            return Ok(match callback {
                Rebalance::Revoke(p) => Polled::Revoked(p),
                Rebalance::Assign(p) => Polled::Assigned(p),
            });
        }
        // Uneven speeds: one partition per poll, a random share of what it holds.
        let readable: Vec<u32> = self
            .positions
            .iter()
            .filter(|(p, next)| (**next as usize) < broker.topic[**p as usize].len())
            .map(|(p, _)| *p)
            .collect();
        if readable.is_empty() {
            return Ok(Polled::Idle);
        }
        let partition = readable[self.rng.index(readable.len())];
        let count = self.rng.range(1, max.clamp(1, 8) as u64) as usize;
        let next = self.positions.get_mut(&partition).expect("readable");
        let messages = &broker.topic[partition as usize];
        let mut events = Vec::with_capacity(count);
        while events.len() < count && (*next as usize) < messages.len() {
            let message = &messages[*next as usize];
            events.push((
                SourcePosition {
                    partition,
                    offset: *next,
                },
                message.value.clone(),
                Some(message.key.clone()),
            ));
            *next += 1;
        }
        Ok(Polled::Events(events))
    }

    fn complete_rebalance(&mut self, checkpoints: &[(u32, u64)]) -> Result<(), SourceError> {
        if !std::mem::take(&mut self.answering) {
            return Ok(());
        }
        let broker = self.broker.clone();
        let mut broker = lock(&broker);
        match broker.slots.get(&self.member).and_then(|s| s.inbox.front()) {
            Some(Rebalance::Revoke(_)) => self.positions.clear(),
            Some(Rebalance::Assign(partitions)) => {
                let partitions = partitions.clone();
                self.rewind_to(&partitions, checkpoints);
            }
            None => {}
        }
        broker.completed(self.member);
        Ok(())
    }

    fn is_group(&self) -> bool {
        true
    }

    fn rewind(&mut self, checkpoints: &[(u32, u64)]) -> Result<(), SourceError> {
        let partitions: Vec<u32> = self.positions.keys().copied().collect();
        self.rewind_to(&partitions, checkpoints);
        Ok(())
    }
}

impl GroupSource {
    fn rewind_to(&mut self, partitions: &[u32], checkpoints: &[(u32, u64)]) {
        self.positions = partitions
            .iter()
            .map(|&p| {
                let next = checkpoints
                    .iter()
                    .find(|(c, _)| *c == p)
                    .map_or(0, |(_, offset)| offset + 1);
                (p, next)
            })
            .collect();
    }
}

/// One simulated `ordo run` process.
struct Member {
    id: u64,
    consumer: Consumer<SharedMemoryStore>,
    source: GroupSource,
    run: RunLoop,
}

/// The store's rows as the oracle's export.
fn export(database: &SharedMemory) -> Export {
    crate::export::from_store(database.export())
}

/// The faults' steps, drawn once per seed.
#[derive(Debug, Default)]
struct Schedule {
    kill_step: Option<u64>,
    kick_step: Option<u64>,
    join_step: Option<u64>,
}

struct Simulation {
    seed: u64,
    database: SharedMemory,
    broker: Arc<Mutex<Broker>>,
    clock: Arc<AtomicU64>,
    members: Vec<Member>,
    next_member: u64,
    /// (step, member): the coordinator expels a dead member at that step.
    expulsions: Vec<(u64, u64)>,
    /// Steps at which a supervisor starts a replacement.
    restarts: Vec<u64>,
    deaf: bool,
    report: GroupReport,
    trace: VecDeque<String>,
    last_disturbance_step: u64,
    options: RunOptions,
    /// `ORDO_GROUP_FULL_TRACE=1`: every trace line goes to stderr as it happens.
    full_trace: bool,
    /// Dead letters the operator skipped.
    skipped: u64,
}

impl Simulation {
    fn record(&mut self, step: u64, line: String) {
        let ids: Vec<u64> = self.members.iter().map(|m| m.id).collect();
        let line = format!("{step:>7} {line} {ids:?}");
        for byte in line.bytes() {
            // FNV-1a: a fingerprint of the whole trace, kept without keeping the trace.
            self.report.trace_hash =
                (self.report.trace_hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
        }
        if self.full_trace {
            tracing::info!("{line}");
        }
        if self.trace.len() == TRACE_TAIL_LINES {
            self.trace.pop_front();
        }
        self.trace.push_back(line);
    }

    fn start_member(&mut self, step: u64) -> Result<(), String> {
        self.next_member += 1;
        let id = self.next_member;
        let mut store = self.database.open();
        if std::mem::take(&mut self.deaf) {
            store.lose_notifications(true);
            self.record(step, format!("member {id} will never hear NOTIFY"));
        }
        let clock = Clock::manual(self.clock.clone());
        let mut consumer = Consumer::open_with_clock(store, SOURCE_KEY, Config::default(), clock)
            .map_err(|e| format!("member {id} cannot open: {e}"))?;
        consumer.verbose = false;
        let mut source = GroupSource {
            broker: self.broker.clone(),
            member: id,
            positions: BTreeMap::new(),
            answering: false,
            rng: Rng::derive(self.seed, &format!("source-{id}")),
        };
        let run = RunLoop::start(&mut consumer, &mut source, &self.options)
            .map_err(|e| format!("member {id} cannot start: {e}"))?;
        let mut broker = lock(&self.broker);
        broker.slots.insert(
            id,
            Slot {
                in_group: true,
                ..Slot::default()
            },
        );
        broker.rebalance();
        drop(broker);
        self.report.started += 1;
        self.last_disturbance_step = step;
        self.record(step, format!("member {id} starts (rebalance)"));
        self.members.push(Member {
            id,
            consumer,
            source,
            run,
        });
        Ok(())
    }

    /// The process is gone (killed or exited); the group notices after `noticed_steps`,
    /// a supervisor starts a replacement.
    fn remove_member(&mut self, index: usize, noticed_steps: u64, step: u64) {
        let member = self.members.swap_remove(index);
        if let Some(slot) = lock(&self.broker).slots.get_mut(&member.id) {
            slot.hidden_until_step = u64::MAX;
        }
        self.expulsions.push((step + noticed_steps, member.id));
        self.restarts.push(step + RESTART_STEPS.max(noticed_steps));
        self.last_disturbance_step = step;
    }

    /// An operator runs `ordo dlq skip` against the shared store from a process of its
    /// own: it skips every sequenced dead letter there is and commits; a conflict (a
    /// member moved a stream meanwhile) fails the verb, which the operator runs again at
    /// the next attempt.
    fn operator_skips(&mut self, step: u64) -> Result<(), String> {
        let mut store = self.database.open();
        let entries =
            ordo_store::Store::dead_letters(&mut store).map_err(|e| format!("operator: {e}"))?;
        let clock = Clock::manual(self.clock.clone());
        let mut operator =
            Consumer::open_with_clock(store, OPERATOR_SOURCE, Config::default(), clock)
                .map_err(|e| format!("operator cannot open: {e}"))?;
        operator.verbose = false;
        let mut skipped = 0;
        for entry in &entries {
            if operator.skip(entry).is_ok() {
                skipped += 1;
            }
        }
        match operator.commit() {
            Ok(()) if skipped == 0 => Ok(()),
            Ok(()) => {
                self.skipped += skipped;
                self.last_disturbance_step = step;
                self.record(step, format!("operator skipped {skipped} dead letters"));
                Ok(())
            }
            Err(ConsumeError::Commit(CommitError::Conflict(detail))) => {
                self.record(
                    step,
                    format!("operator's skip conflicted ({detail}); again later"),
                );
                Ok(())
            }
            Err(error) => Err(format!("operator failed: {error}")),
        }
    }

    /// Where the divergent streams stand: their partition and its checkpoint, what
    /// waits in the store, and what each member holds of them.
    fn explain(&self, streams: &[String]) -> String {
        let mut text = String::new();
        let broker = lock(&self.broker);
        for member in &self.members {
            let _ = writeln!(
                text,
                "  member {} reads {:?}, awaits {:?}; coordinator: {:?}",
                member.id,
                member.source.positions,
                member.consumer.engine().awaited_streams(),
                broker.slots.get(&member.id)
            );
        }
        for stream in streams {
            let partition = partition_of(stream, PARTITIONS);
            let _ = writeln!(
                text,
                "  `{stream}`: partition {partition}, {} messages, checkpoint {:?}",
                broker.topic[partition as usize].len(),
                self.database.checkpoint(SOURCE_KEY, partition)
            );
            for record in self.database.pending_of(stream) {
                let _ = writeln!(
                    text,
                    "    stored: v{} {:?} partition {:?} awaits {:?}",
                    record.version, record.state, record.partition, record.awaits
                );
            }
            for member in &self.members {
                let held: Vec<u32> = member.source.positions.keys().copied().collect();
                for waiting in member.consumer.engine().waiting() {
                    if *waiting.stream == **stream {
                        let _ = writeln!(
                            text,
                            "    member {} (reads {held:?}): v{} {}",
                            member.id, waiting.version, waiting.reason
                        );
                    }
                }
            }
        }
        text
    }

    fn step_member(&mut self, index: usize, step: u64) -> Result<(), String> {
        let member = &mut self.members[index];
        let awaited_before = member.consumer.engine().awaited_streams();
        let conflicts_before = member.run.conflicts_total();
        let stepped = member
            .run
            .step(&mut member.consumer, &mut member.source, false);
        let id = member.id;
        let conflicts = member.run.conflicts_total() - conflicts_before;
        self.report.conflicts += conflicts;
        let seen = std::mem::take(&mut lock(&self.broker).log);
        for line in seen {
            self.record(step, line);
        }
        if conflicts > 0 {
            self.record(step, format!("member {id}: commit conflict, state rebuilt"));
        }
        if let Some(member) = self.members.get(index).filter(|m| m.id == id) {
            let awaited = member.consumer.engine().awaited_streams();
            if awaited != awaited_before {
                self.record(step, format!("member {id} waits for {awaited:?}"));
            }
        }
        match stepped {
            Ok(None) => Ok(()),
            Ok(Some(end)) => Err(format!("member {id} ended unexpectedly: {end:?}")),
            Err(RunError::Consume(ConsumeError::Commit(CommitError::Fenced {
                partition, ..
            }))) => {
                // A zombie stopped by its claims: it exits 1, a supervisor restarts it.
                self.report.fenced += 1;
                self.record(
                    step,
                    format!("member {id} fenced on partition {partition}: exits"),
                );
                self.remove_member(index, 0, step);
                Ok(())
            }
            Err(error) => Err(format!("member {id} failed: {error}")),
        }
    }
}

/// Runs one seed.
pub fn run_seed(seed: u64, options: &GroupOptions) -> GroupReport {
    let history = Scenario::Mixed.history(seed, options.events);
    let (history, expected) = if options.faults.poison {
        let (poisoned, skipped) = poisoned(seed, &history);
        (poisoned, oracle::run(&skipped))
    } else {
        let expected = oracle::run(&history);
        (history, expected)
    };
    let deliveries = Scenario::Mixed.deliveries(seed, &history);
    let mut simulation = Simulation {
        seed,
        database: if options.unchecked_store {
            SharedMemory::unchecked()
        } else {
            SharedMemory::new()
        },
        broker: Arc::new(Mutex::new(Broker {
            topic: vec![Vec::new(); PARTITIONS as usize],
            ..Broker::default()
        })),
        clock: Arc::new(AtomicU64::new(0)),
        members: Vec::new(),
        next_member: 0,
        expulsions: Vec::new(),
        restarts: Vec::new(),
        deaf: options.faults.lost_notifications,
        report: GroupReport {
            seed,
            steps: 0,
            started: 0,
            fenced: 0,
            conflicts: 0,
            rebalances: 0,
            failure: None,
            trace_tail: Vec::new(),
            trace_hash: 0xcbf2_9ce4_8422_2325,
        },
        trace: VecDeque::new(),
        last_disturbance_step: 0,
        options: RunOptions {
            commit_events_max: COMMIT_EVENTS_MAX,
            ..RunOptions::default()
        },
        full_trace: std::env::var_os("ORDO_GROUP_FULL_TRACE").is_some(),
        skipped: 0,
    };
    let failure = simulate(&mut simulation, options, &deliveries, &expected).err();
    let mut report = simulation.report.clone();
    report.rebalances = lock(&simulation.broker).rebalances;
    report.failure = failure;
    report.trace_tail = simulation.trace.iter().cloned().collect();
    report
}

fn simulate(
    simulation: &mut Simulation,
    options: &GroupOptions,
    deliveries: &[Event],
    expected: &Export,
) -> Result<(), String> {
    let mut pick = Rng::derive(simulation.seed, "interleaving");
    let mut time = Rng::derive(simulation.seed, "clock");
    let mut faults = Rng::derive(simulation.seed, "faults");
    let production_steps = PRODUCE_CHUNKS as u64 * PRODUCE_INTERVAL_STEPS;
    let mut fault_step = |enabled: bool| {
        let step = faults.range(PRODUCE_INTERVAL_STEPS / 2, production_steps);
        enabled.then_some(step)
    };
    let schedule = Schedule {
        kill_step: fault_step(options.faults.kill),
        kick_step: fault_step(options.faults.kick),
        join_step: fault_step(options.faults.join),
    };
    let chunk_size = deliveries.len().div_ceil(PRODUCE_CHUNKS).max(1);
    let mut chunks = deliveries.chunks(chunk_size);
    for _ in 0..MEMBERS_AT_START {
        simulation.start_member(0)?;
    }
    let mut step = 0u64;
    let mut converged_at: Option<u64> = None;
    loop {
        step += 1;
        simulation.report.steps = step;
        lock(&simulation.broker).step = step;
        if step % PRODUCE_INTERVAL_STEPS == 1 {
            if let Some(chunk) = chunks.next() {
                simulation.produce(step, chunk);
            }
        }
        simulation.strike(step, &schedule, &mut pick)?;
        simulation.expel_and_restart_due(step)?;
        if options.faults.poison
            && step > PRODUCE_INTERVAL_STEPS
            && step.is_multiple_of(OPERATOR_INTERVAL_STEPS)
            && simulation.skipped < POISON_EVENTS as u64
        {
            simulation.operator_skips(step)?;
        }
        simulation.clock.fetch_add(
            time.range(0, STEP_MS_MAX),
            std::sync::atomic::Ordering::SeqCst,
        );
        if !simulation.members.is_empty() {
            let index = pick.index(simulation.members.len());
            simulation.step_member(index, step)?;
        }
        let settled = step > production_steps && step.is_multiple_of(CONVERGENCE_CHECK_STEPS);
        if settled && simulation.converged(step, production_steps, expected, &mut converged_at)? {
            return Ok(());
        }
    }
}

impl Simulation {
    /// Producers write one chunk of the deliveries into the topic, keyed by stream.
    fn produce(&mut self, step: u64, chunk: &[Event]) {
        let mut broker = lock(&self.broker);
        for event in chunk {
            broker.topic[partition_of(&event.stream, PARTITIONS) as usize].push(Message {
                value: event.to_json_string().into_bytes(),
                key: event.stream.as_bytes().to_vec(),
            });
        }
        drop(broker);
        self.last_disturbance_step = step;
        self.record(step, format!("{} events produced", chunk.len()));
    }

    /// The scheduled faults of this step: a member killed, a member expelled while it
    /// runs (a zombie), a member joining.
    fn strike(&mut self, step: u64, schedule: &Schedule, pick: &mut Rng) -> Result<(), String> {
        if Some(step) == schedule.kill_step && !self.members.is_empty() {
            let index = pick.index(self.members.len());
            let id = self.members[index].id;
            self.record(step, format!("member {id} SIGKILLed"));
            self.remove_member(index, KILL_NOTICED_STEPS, step);
        }
        if Some(step) == schedule.kick_step && !self.members.is_empty() {
            let index = pick.index(self.members.len());
            let id = self.members[index].id;
            self.record(step, format!("member {id} expelled while running (zombie)"));
            lock(&self.broker).kick(id, step + KICK_NOTICED_STEPS);
            self.last_disturbance_step = step;
        }
        if Some(step) == schedule.join_step && self.members.len() < MEMBERS_MAX {
            self.start_member(step)?;
        }
        Ok(())
    }

    /// The coordinator expels the members whose session ran out; killed members whose
    /// restart is due start again.
    fn expel_and_restart_due(&mut self, step: u64) -> Result<(), String> {
        let due: Vec<u64> = self
            .expulsions
            .iter()
            .filter(|(at, _)| *at <= step)
            .map(|(_, id)| *id)
            .collect();
        self.expulsions.retain(|(at, _)| *at > step);
        for id in due {
            lock(&self.broker).expel(id);
            self.last_disturbance_step = step;
            self.record(
                step,
                format!("the coordinator expels member {id} (rebalance)"),
            );
        }
        let restarts = self.restarts.iter().filter(|at| **at <= step).count();
        self.restarts.retain(|at| *at > step);
        for _ in 0..restarts {
            if self.members.len() < MEMBERS_MAX {
                self.start_member(step)?;
            }
        }
        Ok(())
    }

    /// Compares the shared store with the oracle. True once it has matched for
    /// [`STABLE_STEPS`]; an error when it moves away after matching, or does not match
    /// within [`SETTLE_STEPS_MAX`] of the last disturbance.
    fn converged(
        &mut self,
        step: u64,
        production_steps: u64,
        expected: &Export,
        converged_at: &mut Option<u64>,
    ) -> Result<bool, String> {
        let divergence = compare(expected, &export(&self.database), true);
        match (divergence.is_empty(), *converged_at) {
            (true, None) => {
                *converged_at = Some(step);
                self.record(step, "the running group matches the oracle".into());
            }
            (true, Some(at)) if step >= at + STABLE_STEPS => return Ok(true),
            (true, Some(_)) => {}
            (false, Some(at)) => {
                return Err(format!(
                "the group matched the oracle at step {at}, then moved away from it:\n{divergence}"
            ))
            }
            (false, None) => {}
        }
        if divergence.is_empty() {
            return Ok(false);
        }
        if step - self.last_disturbance_step.max(production_steps) > SETTLE_STEPS_MAX {
            let streams: Vec<String> = divergence
                .streams
                .iter()
                .map(|(s, _, _)| s.clone())
                .collect();
            return Err(format!(
                "the running group did not converge within {SETTLE_STEPS_MAX} steps of the last disturbance:\n{divergence}{}",
                self.explain(&streams)
            ));
        }
        Ok(false)
    }
}
