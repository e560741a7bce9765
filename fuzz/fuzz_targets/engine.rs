//! The engine driven by an arbitrary script of `handle_*`/`poll_*` calls and operator
//! actions over four streams: deliveries (in any order, duplicated, by second writers,
//! with `after`s and merges, or not envelopes at all), outcomes applied or rejected,
//! works held out across commits, timeouts, skips, replays, pauses. The invariants are
//! the simulator's, checked at every step and drawing no randomness:
//! - a gapless stream's work is its next version (applied + 1): nothing out of order;
//! - no event id is applied twice;
//! - at most one work per stream and per document is out;
//! - no stream is tracked beyond the four the script names.
//!
//! The bound on waiting events (2) is below the versions a stream can have (6), so
//! overflow dead letters and their replays (refused while the stream is full) are reached.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use libfuzzer_sys::fuzz_target;
use ordo_core::{Action, Config, DeadLetter, Engine, Outcome, SourcePosition, Work};

const STREAMS: u8 = 4;
const VERSIONS: u8 = 6;
const PENDING_MAX: usize = 2;

struct Script<'a> {
    data: &'a [u8],
}

impl Script<'_> {
    fn next(&mut self) -> Option<u8> {
        let (&first, rest) = self.data.split_first()?;
        self.data = rest;
        Some(first)
    }
}

struct Harness {
    engine: Engine,
    now_ms: u64,
    offset: u64,
    held: Vec<Work>,
    applied_ids: BTreeSet<String>,
    dead_letters: BTreeMap<u64, DeadLetter>,
}

fn stream(n: u8) -> String {
    format!("s{}", n % STREAMS)
}

/// An envelope built from four script bytes: a plain op, an `after`, or a merge.
fn envelope(kind: u8, s: u8, v: u8, other: u8) -> String {
    let (name, version) = (stream(s), 1 + v % VERSIONS);
    let writer = (kind >> 4) & 1; // a second writer claims the version with another id
    let id = format!("{name}-{version}-{writer}");
    let other_name = stream(other);
    let other_version = 1 + (other >> 2) % VERSIONS;
    match kind % 6 {
        0 => format!(r#"{{"id":"{id}","stream":"{name}","version":{version},"type":"T","op":"incr","data":{{"n":1}}}}"#),
        1 => format!(r#"{{"id":"{id}","stream":"{name}","version":{version},"type":"T","op":"set","data":{{"v":{version}}}}}"#),
        2 => format!(r#"{{"id":"{id}","stream":"{name}","version":{version},"type":"T","op":"patch","data":{{"p":{version}}},"after":[{{"stream":"{other_name}","version":{other_version}}}]}}"#),
        3 => format!(r#"{{"id":"{id}","stream":"{name}","version":{version},"type":"T","op":"merge","data":{{"from":["{other_name}"]}},"after":[{{"stream":"{other_name}","version":{other_version}}}]}}"#),
        4 => format!(r#"{{"id":"{id}","stream":"{name}","version":{version},"type":"T","op":"delete"}}"#),
        _ => format!(r#"{{"id":"{id}","stream":"{name}","version":{version},"type":"T","op":"incr","data":{{"n":"x"}}}}"#),
    }
}

impl Harness {
    fn deliver(&mut self, bytes: &[u8], positioned: bool) {
        let position = positioned.then(|| {
            self.offset += 1;
            SourcePosition {
                partition: 0,
                offset: self.offset,
            }
        });
        let _ = self.engine.handle_bytes(self.now_ms, position, bytes);
    }

    /// Takes every ready work out, checking it, and holds it.
    fn poll(&mut self) {
        while let Some(work) = self.engine.poll_work(self.now_ms) {
            let stream = &*work.event.stream;
            assert_eq!(
                work.event.version,
                self.engine.applied_version(stream) + 1,
                "`{stream}` out of order"
            );
            let busy = |w: &Work| {
                let mut locked = vec![w.document().to_string(), w.event.stream.to_string()];
                if let Action::Merge { sources } = &w.action {
                    locked.extend(sources.iter().map(|s| s.to_string()));
                }
                locked
            };
            for out in &self.held {
                let (a, b) = (busy(out), busy(&work));
                assert!(
                    !a.iter().any(|d| b.contains(d)),
                    "two works on one stream or document: {a:?} and {b:?}"
                );
            }
            self.held.push(work);
        }
    }

    /// Hands back the `pick`-th work held, applied or rejected.
    fn answer(&mut self, pick: u8, reject: bool) {
        if self.held.is_empty() {
            return;
        }
        let work = self.held.swap_remove(pick as usize % self.held.len());
        let outcome = if reject {
            Outcome::Rejected {
                reason: "fuzz".into(),
            }
        } else {
            assert!(
                self.applied_ids.insert(work.event.id.to_string()),
                "`{}` applied twice",
                work.event.id
            );
            Outcome::Applied
        };
        self.engine.handle_outcome(self.now_ms, work, outcome);
    }

    fn commit(&mut self) {
        let changes = self.engine.take_changes();
        for entry in changes.dead_letters_put {
            self.dead_letters.insert(entry.id, entry);
        }
        for id in changes.dead_letters_delete {
            self.dead_letters.remove(&id);
        }
        // Nothing spills with the default in-memory bound, so no load is ever asked.
        assert!(self.engine.poll_load().is_none());
        while self.engine.poll_notice().is_some() {}
    }

    fn operator(&mut self, what: u8, arg: u8) {
        let entry = self
            .dead_letters
            .values()
            .nth(arg as usize % self.dead_letters.len().max(1))
            .cloned();
        match (what % 5, entry) {
            (0, _) => {
                let _ = self.engine.skip_gap(self.now_ms, &stream(arg));
            }
            (1, Some(entry)) => {
                let _ = self.engine.replay_dead_letter(self.now_ms, &entry);
            }
            (2, Some(entry)) => {
                let _ = self.engine.skip_dead_letter(self.now_ms, &entry);
            }
            (3, _) => {
                let _ = self.engine.pause(&stream(arg));
            }
            (4, _) => {
                let _ = self.engine.resume(&stream(arg));
            }
            _ => {}
        }
    }

    fn check_bounds(&self) {
        assert!(self.engine.stream_count() <= STREAMS as usize);
        // Works decided at delivery (the express lane) are out before they are polled.
        assert!(self.held.len() <= self.engine.in_flight());
    }
}

fuzz_target!(|data: &[u8]| {
    let config = Config {
        stream_pending_events_max: PENDING_MAX,
        gap_timeout_ms: 100,
        ..Config::default()
    };
    let mut h = Harness {
        engine: Engine::new(config),
        now_ms: 0,
        offset: 0,
        held: Vec::new(),
        applied_ids: BTreeSet::new(),
        dead_letters: BTreeMap::new(),
    };
    let mut script = Script { data };
    while let Some(op) = script.next() {
        let (a, b, c) = (
            script.next().unwrap_or(0),
            script.next().unwrap_or(0),
            script.next().unwrap_or(0),
        );
        match op % 8 {
            0..=2 => {
                let envelope = envelope(a, b, c, op >> 3);
                h.deliver(envelope.as_bytes(), op & 0x80 == 0);
            }
            3 => {
                let len = (a as usize % 16).min(script.data.len());
                let (raw, rest) = script.data.split_at(len);
                script.data = rest;
                h.deliver(raw, true);
            }
            4 => h.poll(),
            5 => h.answer(a, b % 8 == 0),
            6 => h.commit(),
            _ => {
                h.now_ms += u64::from(a);
                h.engine.handle_timeout(h.now_ms);
                h.operator(b, c);
            }
        }
        h.check_bounds();
    }
    // The end: everything out comes back applied, and what is ready goes out.
    loop {
        h.poll();
        if h.held.is_empty() {
            break;
        }
        while !h.held.is_empty() {
            h.answer(0, false);
        }
    }
    h.engine.handle_source_drained();
    h.commit();
    h.check_bounds();
});
