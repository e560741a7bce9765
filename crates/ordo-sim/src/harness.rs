//! A consumer made of the real engine, the real document projection and an in-memory
//! store that keeps a *durable* copy apart from the *live* one.
//!
//! [`Harness::commit`] moves the engine's change set and the documents it touched into
//! the durable copy in one step, as a store transaction would. [`Harness::crash`] throws
//! away everything live and restores from the durable copy alone, so a test sees exactly
//! what a process killed at that moment would come back to.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use ordo_core::{
    ChangeSet, Config, DeadLetter, Disposition, Engine, Event, Load, Loaded, Outcome, Snapshot,
    SourcePosition, StreamRecord, Work,
};
use ordo_projection::{run_work, touched, Document, DocumentProjection};
use ordo_store::{answer_load, pending_snapshot, PendingRows};

use crate::export::Export;
use crate::oracle::row;
use crate::rng::Rng;

/// The in-memory store: what survived the last commit.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    streams: BTreeMap<Arc<str>, StreamRecord>,
    pending: PendingRows,
    /// The dead-letter queue.
    pub dead_letters: BTreeMap<u64, DeadLetter>,
    dedupe: BTreeMap<u64, u64>,
    checkpoints: BTreeMap<u32, u64>,
    counters: ordo_core::Counters,
    next_dead_letter_id: u64,
    documents: HashMap<Arc<str>, Option<Document>>,
    /// How many commits were made.
    pub commits: u64,
}

impl MemoryStore {
    /// Applies one change set and the documents written with it, atomically.
    pub fn commit(&mut self, changes: ChangeSet, documents: Vec<(Arc<str>, Option<Document>)>) {
        for record in changes.streams {
            self.streams.insert(record.stream.clone(), record);
        }
        for key in changes.pending_delete {
            self.pending.remove(&key);
        }
        for record in changes.pending_put {
            self.pending
                .insert((record.stream.clone(), record.version), record);
        }
        for id in changes.dead_letters_delete {
            self.dead_letters.remove(&id);
        }
        for entry in changes.dead_letters_put {
            self.dead_letters.insert(entry.id, entry);
        }
        for (sequence, hash) in changes.dedupe_put {
            self.dedupe.insert(sequence, hash);
        }
        self.dedupe = self.dedupe.split_off(&changes.dedupe_floor);
        for (partition, offset) in changes.checkpoints {
            self.checkpoints.insert(partition, offset);
        }
        self.counters = changes.counters;
        self.next_dead_letter_id = changes.next_dead_letter_id;
        for (name, document) in documents {
            self.documents.insert(name, document);
        }
        self.commits += 1;
    }

    /// What the engine needs to resume. Parked streams stay here (spilled), as the real
    /// stores do it: their names and what they wait for go into the snapshot.
    pub fn snapshot(&self) -> Snapshot {
        let (pending, spilled, spilled_waiters) = pending_snapshot(&self.pending);
        Snapshot {
            streams: self.streams.values().cloned().collect(),
            pending,
            spilled,
            spilled_waiters,
            blocking_dead_letters: self
                .dead_letters
                .values()
                .filter(|d| d.kind == ordo_core::DeadLetterKind::Sequenced)
                .filter_map(|d| Some((d.stream.clone()?, d.version?, d.id)))
                .collect(),
            dedupe: self.dedupe.iter().map(|(s, h)| (*s, *h)).collect(),
            checkpoints: self.checkpoints.iter().map(|(p, o)| (*p, *o)).collect(),
            counters: self.counters,
            next_dead_letter_id: self.next_dead_letter_id,
        }
    }

    /// Answers an engine's load from what was committed.
    pub fn load(&self, load: &Load) -> Loaded {
        answer_load(&self.pending, load)
    }

    /// The committed checkpoint of a partition.
    pub fn checkpoint(&self, partition: u32) -> Option<u64> {
        self.checkpoints.get(&partition).copied()
    }

    /// A stream's committed applied version (0 when unknown).
    pub fn applied(&self, stream: &str) -> u64 {
        self.streams.get(stream).map_or(0, |r| r.applied)
    }

    /// Whether the store holds a waiting event (or skip marker) at this stream version.
    pub fn is_pending(&self, stream: &str, version: u64) -> bool {
        self.pending
            .contains_key(&(Box::<str>::from(stream), version))
    }

    /// Whether the store holds a dead letter for this event id.
    pub fn is_dead_lettered(&self, event_id: &str) -> bool {
        self.dead_letters
            .values()
            .any(|d| d.event_id.as_deref() == Some(event_id))
    }

    /// How many events wait in the store.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }
}

/// Engine + projection + live documents + durable store.
#[derive(Debug)]
pub struct Harness {
    config: Config,
    /// The engine.
    pub engine: Engine,
    documents: HashMap<Arc<str>, Option<Document>>,
    touched: HashSet<Arc<str>>,
    /// The durable copy.
    pub store: MemoryStore,
    out: Vec<Work>,
    /// The virtual clock, in ms.
    pub now_ms: u64,
    /// How many times the consumer crashed and restarted.
    pub restarts: u64,
    /// Event ids the simulated handler refuses (poison) until removed from here.
    pub poison: HashSet<Box<str>>,
}

/// One completed work, as [`Harness::step`] reports it to checkers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The event's stream.
    pub stream: Box<str>,
    /// The event's version.
    pub version: u64,
    /// The event's id.
    pub id: Box<str>,
    /// Whether it was applied (else dead-lettered).
    pub applied: bool,
}

impl Harness {
    /// A fresh consumer.
    pub fn new(config: Config) -> Self {
        Harness {
            engine: Engine::new(config.clone()),
            config,
            documents: HashMap::new(),
            touched: HashSet::new(),
            store: MemoryStore::default(),
            out: Vec::new(),
            now_ms: 0,
            restarts: 0,
            poison: HashSet::new(),
        }
    }

    /// Delivers one event.
    pub fn deliver(&mut self, position: Option<SourcePosition>, event: Event) -> Disposition {
        self.engine.handle_event(self.now_ms, position, event)
    }

    /// Delivers raw bytes (invalid input is dead-lettered by the engine).
    pub fn deliver_bytes(&mut self, position: Option<SourcePosition>, bytes: &[u8]) -> Disposition {
        self.engine.handle_bytes(self.now_ms, position, bytes)
    }

    /// Takes up to `concurrency` works out, then completes one of them (a random one
    /// when `rng` is given, which interleaves streams as concurrent handlers would).
    /// Returns what was completed, or `None` when nothing was out and nothing was ready.
    pub fn step(&mut self, rng: Option<&mut Rng>, concurrency: usize) -> Option<Step> {
        // Spilled streams come back from the durable copy, as from a real store.
        while let Some(load) = self.engine.poll_load() {
            let loaded = self.store.load(&load);
            self.engine.handle_loaded(self.now_ms, &load, loaded);
        }
        while self.out.len() < concurrency.max(1) {
            match self.engine.poll_work(self.now_ms) {
                Some(work) => self.out.push(work),
                None => break,
            }
        }
        if self.out.is_empty() {
            return None;
        }
        let index = rng.map_or(0, |r| r.index(self.out.len()));
        let work = self.out.swap_remove(index);
        let outcome = self.apply(&work);
        let step = Step {
            stream: work.event.stream.clone(),
            version: work.event.version,
            id: work.event.id.clone(),
            applied: outcome == Outcome::Applied,
        };
        self.engine.handle_outcome(self.now_ms, work, outcome);
        Some(step)
    }

    /// Completes every work already out, in order, without taking new ones (what a
    /// consumer does with in-flight work when a partition is revoked).
    pub fn complete_out(&mut self) -> Vec<Step> {
        let mut steps = Vec::new();
        while !self.out.is_empty() {
            let work = self.out.remove(0);
            let outcome = self.apply(&work);
            steps.push(Step {
                stream: work.event.stream.clone(),
                version: work.event.version,
                id: work.event.id.clone(),
                applied: outcome == Outcome::Applied,
            });
            self.engine.handle_outcome(self.now_ms, work, outcome);
        }
        steps
    }

    /// Steps until nothing is out or ready.
    pub fn drain(&mut self, mut rng: Option<&mut Rng>, concurrency: usize) {
        while self.step(rng.as_deref_mut(), concurrency).is_some() {}
    }

    fn apply(&mut self, work: &Work) -> Outcome {
        if self.poison.contains(&work.event.id) {
            return Outcome::Rejected {
                reason: "simulated handler failure (poison event)".into(),
            };
        }
        let outcome = run_work(&DocumentProjection, work, &mut self.documents);
        if outcome == Outcome::Applied {
            for stream in touched(work) {
                self.touched.insert(Arc::from(stream));
            }
        }
        outcome
    }

    /// Commits the engine's changes and the documents they touched.
    pub fn commit(&mut self) {
        let changes = self.engine.take_changes();
        let documents = self
            .touched
            .drain()
            .map(|name| {
                let document = self.documents.get(&name).cloned().flatten();
                (name, document)
            })
            .collect();
        self.store.commit(changes, documents);
    }

    /// Loses everything not committed and restarts from the store. Returns the committed
    /// checkpoint of partition 0, from which the source must re-deliver.
    pub fn crash(&mut self) -> Option<u64> {
        self.out.clear();
        self.touched.clear();
        self.documents = self.store.documents.clone();
        self.engine = Engine::restore(self.config.clone(), self.store.snapshot(), self.now_ms);
        self.restarts += 1;
        self.store.checkpoint(0)
    }

    /// Moves the clock and lets the engine look at its timers.
    pub fn advance_clock(&mut self, elapsed_ms: u64) {
        self.now_ms += elapsed_ms;
        self.engine.handle_timeout(self.now_ms);
    }

    /// Every stream's live state.
    pub fn export(&self) -> Export {
        let mut export = Export::new();
        for (stream, version, merged_into) in self.engine.stream_positions() {
            if version == 0 && merged_into.is_none() && !self.documents.contains_key(&stream) {
                continue;
            }
            let document = self.documents.get(&stream);
            export.insert(
                stream.to_string(),
                row(version, merged_into.map(|m| m.to_string()), document),
            );
        }
        export
    }
}
