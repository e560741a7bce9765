//! One script per mechanism of the engine. Each drives the engine through its public
//! sans-IO API and checks the decisions, not a projection's output.

use ordo_core::{
    parse_event, Action, Config, DeadLetterKind, Disposition, Engine, Event, Notice, OpPolicy,
    Outcome, ReplayOutcome, SourcePosition, VersionMode, Work,
};
use serde_json::{json, Value};

fn event(value: Value) -> Event {
    parse_event(value.to_string().as_bytes(), OpPolicy::Document).expect("valid test event")
}

fn incr(stream: &str, version: u64) -> Event {
    event(
        json!({"id": format!("{stream}-{version}"), "stream": stream, "version": version,
                 "type": "T", "op": "incr", "data": {"n": 1}}),
    )
}

fn after(stream: &str, version: u64, on: &str, on_version: u64) -> Event {
    event(
        json!({"id": format!("{stream}-{version}"), "stream": stream, "version": version,
                 "type": "T", "op": "set", "data": {},
                 "after": [{"stream": on, "version": on_version}]}),
    )
}

fn merge(stream: &str, version: u64, cuts: &[(&str, u64)]) -> Event {
    let from: Vec<&str> = cuts.iter().map(|(s, _)| *s).collect();
    let after: Vec<Value> = cuts
        .iter()
        .map(|(s, v)| json!({"stream": s, "version": v}))
        .collect();
    event(
        json!({"id": format!("{stream}-{version}"), "stream": stream, "version": version,
                 "type": "Merged", "op": "merge", "data": {"from": from}, "after": after}),
    )
}

fn at(offset: u64) -> Option<SourcePosition> {
    Some(SourcePosition {
        partition: 0,
        offset,
    })
}

/// Decides which events the pretend projection refuses, and why.
type Rejector = Box<dyn Fn(&Event) -> Option<String>>;

/// A driver that applies every work at once and records (stream, version, document).
struct Driver {
    engine: Engine,
    log: Vec<(String, u64, String)>,
    reject: Rejector,
    offset: u64,
}

impl Driver {
    fn new(config: Config) -> Self {
        Driver {
            engine: Engine::new(config),
            log: Vec::new(),
            reject: Box::new(|_| None),
            offset: 0,
        }
    }

    fn send(&mut self, event: Event) -> Disposition {
        let position = at(self.offset);
        self.offset += 1;
        let disposition = self.engine.handle_event(0, position, event);
        self.run();
        disposition
    }

    fn run(&mut self) {
        while let Some(work) = self.engine.poll_work(0) {
            self.finish(work);
        }
    }

    fn finish(&mut self, work: Work) {
        let outcome = match (self.reject)(&work.event) {
            Some(reason) => Outcome::Rejected { reason },
            None => {
                self.log.push((
                    work.event.stream.to_string(),
                    work.event.version,
                    work.document().to_string(),
                ));
                Outcome::Applied
            }
        };
        self.engine.handle_outcome(0, work, outcome);
    }

    fn applied(&self) -> Vec<(&str, u64)> {
        self.log.iter().map(|(s, v, _)| (s.as_str(), *v)).collect()
    }
}

#[test]
fn gapless_version_n_plus_one_waits_for_n() {
    let mut d = Driver::new(Config::default());
    assert_eq!(d.send(incr("a", 3)), Disposition::Buffered);
    assert_eq!(d.send(incr("a", 2)), Disposition::Buffered);
    assert!(d.applied().is_empty());
    assert_eq!(d.send(incr("a", 1)), Disposition::Queued);
    assert_eq!(d.applied(), vec![("a", 1), ("a", 2), ("a", 3)]);
    assert_eq!(d.engine.counters().buffered, 2);
}

#[test]
fn skips_are_duplicates_when_the_id_was_seen_and_stale_otherwise() {
    let mut d = Driver::new(Config::default());
    d.send(incr("a", 1));
    assert_eq!(d.send(incr("a", 1)), Disposition::Duplicate);
    let other = event(
        json!({"id": "other", "stream": "a", "version": 1, "type": "T", "op": "incr", "data": {}}),
    );
    assert_eq!(d.send(other), Disposition::Stale);
    // A redelivery of an event still waiting in the buffer is a duplicate too.
    d.send(incr("a", 3));
    assert_eq!(d.send(incr("a", 3)), Disposition::Duplicate);
    let counters = d.engine.counters();
    assert_eq!(
        (counters.duplicate, counters.stale, counters.applied),
        (2, 1, 1)
    );
}

#[test]
fn a_second_event_claiming_a_delivered_version_is_stale_whether_or_not_it_applied() {
    let mut d = Driver::new(Config::default());
    d.send(incr("a", 2));
    let rival = |id: &str| {
        event(json!({"id": id, "stream": "a", "version": 2, "type": "T", "op": "incr", "data": {}}))
    };
    assert_eq!(d.send(rival("rival")), Disposition::Stale, "a@2 waits");
    assert!(matches!(
        d.engine.poll_notice(),
        Some(Notice::Stale { version: 2, .. })
    ));
    assert!(d.engine.take_changes().dead_letters_put.is_empty());
    d.send(incr("a", 1));
    assert_eq!(d.send(rival("rival-2")), Disposition::Stale, "a@2 applied");
    assert_eq!(d.engine.counters().stale, 2);
    assert_eq!(
        d.applied(),
        vec![("a", 1), ("a", 2)],
        "the first claimant keeps the version"
    );
}

#[test]
fn dedupe_window_is_bounded_and_only_classifies() {
    let mut d = Driver::new(Config {
        dedupe_window_ids: 2,
        ..Config::default()
    });
    d.send(incr("a", 1));
    d.send(incr("a", 2));
    d.send(incr("a", 3));
    // a-1 fell out of the window: the version guard still skips it, as stale.
    assert_eq!(d.send(incr("a", 1)), Disposition::Stale);
    assert_eq!(d.send(incr("a", 3)), Disposition::Duplicate);
    assert_eq!(d.engine.counters().applied, 3);
}

#[test]
fn monotonic_mode_applies_newer_and_skips_older_without_waiting() {
    let config = Config {
        mode_rules: vec![("sensor-".into(), VersionMode::Monotonic)],
        ..Config::default()
    };
    let mut d = Driver::new(config);
    assert_eq!(d.send(incr("sensor-1", 100)), Disposition::Queued);
    assert_eq!(d.send(incr("sensor-1", 90)), Disposition::Stale);
    assert_eq!(d.send(incr("sensor-1", 250)), Disposition::Queued);
    assert_eq!(d.applied(), vec![("sensor-1", 100), ("sensor-1", 250)]);
    // Other streams stay gapless.
    assert_eq!(d.send(incr("b", 2)), Disposition::Buffered);
}

#[test]
fn an_old_gap_stalls_the_stream_and_only_an_operator_skips_it() {
    let mut d = Driver::new(Config {
        gap_timeout_ms: 1000,
        ..Config::default()
    });
    d.send(incr("a", 1));
    d.send(incr("a", 4));
    assert_eq!(d.engine.poll_timeout(), Some(1000));
    d.engine.handle_timeout(999);
    assert_eq!(d.engine.counters().stalled, 0);
    d.engine.handle_timeout(1000);
    assert_eq!(d.engine.counters().stalled, 1);
    let notices: Vec<Notice> = std::iter::from_fn(|| d.engine.poll_notice()).collect();
    assert!(notices.contains(&Notice::Stalled {
        stream: "a".into(),
        missing: 2,
        waiting: 4
    }));
    d.engine.handle_timeout(1_000_000);
    assert_eq!(d.applied(), vec![("a", 1)], "time alone never skips a gap");
    assert_eq!(d.engine.skip_gap(1000, "a"), Ok(2));
    d.run();
    assert_eq!(d.applied(), vec![("a", 1), ("a", 4)]);
    let counters = d.engine.counters();
    assert_eq!((counters.stalled, counters.skipped), (0, 2));
}

#[test]
fn a_dependency_parks_until_its_version_applies_without_blocking_others() {
    let mut d = Driver::new(Config::default());
    assert_eq!(
        d.send(after("product-1", 1, "category-9", 1)),
        Disposition::Queued
    );
    d.send(incr("product-1", 2));
    d.send(incr("other", 1));
    assert_eq!(d.applied(), vec![("other", 1)]);
    assert_eq!(d.engine.counters().parked, 1);
    let waiting = d.engine.waiting();
    assert!(
        waiting[0]
            .reason
            .contains("waits for `category-9` to apply version 1"),
        "{waiting:?}"
    );
    d.send(incr("category-9", 1));
    assert_eq!(
        d.applied(),
        vec![
            ("other", 1),
            ("category-9", 1),
            ("product-1", 1),
            ("product-1", 2)
        ]
    );
    assert_eq!(d.engine.counters().released, 1);
}

#[test]
fn a_merge_waits_for_its_cuts_then_aliases_and_redirects_late_events() {
    let mut d = Driver::new(Config::default());
    d.send(merge("c", 1, &[("a", 2)]));
    d.send(incr("a", 1));
    assert_eq!(d.applied(), vec![("a", 1)], "the merge waits for a@2");
    d.send(incr("a", 3)); // beyond the cut, arrives before a@2: waits in a's buffer
    d.send(incr("a", 2));
    let log: Vec<_> = d
        .log
        .iter()
        .map(|(s, v, doc)| (s.as_str(), *v, doc.as_str()))
        .collect();
    // a@3 may go before or after the merge (no order between them); both are counted.
    assert!(log.contains(&("c", 1, "c")));
    assert_eq!(d.engine.counters().late_after_merge, 1);
    d.send(incr("a", 4));
    assert_eq!(
        d.log.last().unwrap(),
        &("a".to_string(), 4, "c".to_string())
    );
    let counters = d.engine.counters();
    assert_eq!(counters.late_after_merge, 2);
    assert!(counters.redirected >= 1);
    assert_eq!(d.engine.resolve_document("a").as_deref(), Some("c"));
}

#[test]
fn aliases_resolve_transitively() {
    let mut d = Driver::new(Config::default());
    d.send(incr("a", 1));
    d.send(merge("b", 1, &[("a", 1)]));
    d.send(merge("c", 1, &[("b", 1)]));
    d.send(incr("a", 2));
    assert_eq!(
        d.log.last().unwrap(),
        &("a".to_string(), 2, "c".to_string())
    );
    let positions = d.engine.stream_positions();
    assert_eq!(positions[0], ("a".into(), 2, Some("c".into())));
}

#[test]
fn merges_without_a_cut_or_making_a_cycle_are_dead_lettered() {
    let mut d = Driver::new(Config::default());
    let no_cut = event(
        json!({"id": "m", "stream": "c", "version": 1, "type": "Merged", "op": "merge",
                             "data": {"from": ["a"]}}),
    );
    d.send(no_cut);
    let changes = d.engine.take_changes();
    assert!(changes.dead_letters_put[0]
        .reason
        .contains("no cut for source `a`"));
    assert_eq!(changes.dead_letters_put[0].kind, DeadLetterKind::Sequenced);

    d.send(incr("x", 1));
    d.send(merge("y", 1, &[("x", 1)])); // x -> y
    d.send(merge("x", 2, &[("y", 1)])); // y -> x would close a cycle
    let changes = d.engine.take_changes();
    let reasons: Vec<&str> = changes
        .dead_letters_put
        .iter()
        .map(|e| e.reason.as_str())
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("already merged") || r.contains("cycle")),
        "{reasons:?}"
    );
}

#[test]
fn a_rejected_event_blocks_its_stream_until_replay_or_skip_and_nothing_else() {
    let mut d = Driver::new(Config::default());
    d.reject = Box::new(|e| (&*e.stream == "a" && e.version == 2).then(|| "poison".to_string()));
    d.send(incr("a", 1));
    d.send(incr("a", 2));
    d.send(incr("a", 3));
    d.send(incr("b", 1));
    assert_eq!(d.applied(), vec![("a", 1), ("b", 1)]);
    let entry = d.engine.take_changes().dead_letters_put.remove(0);
    assert_eq!(
        (entry.kind, entry.version, entry.reason.as_str()),
        (DeadLetterKind::Sequenced, Some(2), "poison")
    );

    // Replay while still poisonous: dead-lettered again, stream still waits.
    assert_eq!(
        d.engine.replay_dead_letter(0, &entry),
        Ok(ReplayOutcome::Requeued)
    );
    d.run();
    let entry = d.engine.take_changes().dead_letters_put.remove(0);
    assert_eq!(d.applied(), vec![("a", 1), ("b", 1)]);

    // Fixed downstream: replay applies it, and a@3 follows in order.
    d.reject = Box::new(|_| None);
    assert_eq!(
        d.engine.replay_dead_letter(0, &entry),
        Ok(ReplayOutcome::Requeued)
    );
    d.run();
    assert_eq!(d.applied(), vec![("a", 1), ("b", 1), ("a", 2), ("a", 3)]);
    // Replaying an entry again is refused: it no longer holds the stream.
    assert!(d.engine.replay_dead_letter(0, &entry).is_err());
}

#[test]
fn skipping_a_dead_letter_passes_its_version() {
    let mut d = Driver::new(Config::default());
    d.reject = Box::new(|e| (e.version == 1).then(|| "poison".to_string()));
    d.send(incr("a", 1));
    d.send(incr("a", 2));
    let entry = d.engine.take_changes().dead_letters_put.remove(0);
    d.engine.skip_dead_letter(0, &entry).unwrap();
    d.run();
    assert_eq!(d.applied(), vec![("a", 2)]);
    assert_eq!(d.engine.counters().skipped, 1);
}

#[test]
fn the_dead_letters_streams_wait_behind_are_listed_until_resolved() {
    let mut d = Driver::new(Config::default());
    d.reject = Box::new(|e| (e.version == 1).then(|| "poison".to_string()));
    d.send(incr("a", 1));
    d.send(incr("b", 1));
    d.send(incr("b", 2));
    let mut entries = d.engine.take_changes().dead_letters_put;
    let ids: Vec<u64> = entries.iter().map(|e| e.id).collect();
    assert_eq!(
        d.engine.dead_letter_markers(),
        ids,
        "one marker per blocked stream"
    );
    let first = entries.remove(0);
    d.engine.skip_dead_letter(0, &first).unwrap();
    d.run();
    assert_eq!(d.engine.dead_letter_markers(), vec![entries[0].id]);
    d.engine.skip_dead_letter(0, &entries[0]).unwrap();
    d.run();
    assert!(d.engine.dead_letter_markers().is_empty());
}

#[test]
fn invalid_input_is_dead_lettered_in_sequence_when_routable_and_aside_when_not() {
    let mut d = Driver::new(Config::default());
    assert_eq!(
        d.engine.handle_bytes(0, at(0), b"{not json"),
        Disposition::DeadLettered
    );
    let bad_op = br#"{"id":"x","stream":"a","version":1,"type":"T","op":"frob"}"#;
    assert_eq!(
        d.engine.handle_bytes(0, at(1), bad_op),
        Disposition::DeadLettered
    );
    d.engine.handle_event(0, at(2), incr("a", 2));
    d.engine.handle_event(0, at(3), incr("b", 1));
    d.run();
    assert_eq!(
        d.applied(),
        vec![("b", 1)],
        "a waits at its bad version 1; b flows"
    );
    let changes = d.engine.take_changes();
    let kinds: Vec<_> = changes.dead_letters_put.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![DeadLetterKind::Unroutable, DeadLetterKind::Sequenced]
    );
    assert!(changes.dead_letters_put[1]
        .reason
        .contains("unknown op `frob`"));
    assert_eq!(
        changes.checkpoints,
        vec![(0, 3)],
        "every offset is settled: dead, buffered or applied"
    );
}

#[test]
fn the_pending_bound_dead_letters_instead_of_growing() {
    let mut d = Driver::new(Config {
        stream_pending_events_max: 2,
        ..Config::default()
    });
    d.send(incr("a", 2));
    d.send(incr("a", 3));
    assert_eq!(d.send(incr("a", 4)), Disposition::DeadLettered);
    let changes = d.engine.take_changes();
    assert_eq!(changes.dead_letters_put[0].kind, DeadLetterKind::Overflow);
    d.send(incr("a", 1));
    assert_eq!(d.applied(), vec![("a", 1), ("a", 2), ("a", 3)]);
    let entry = changes.dead_letters_put[0].clone();
    assert_eq!(
        d.engine.replay_dead_letter(0, &entry),
        Ok(ReplayOutcome::Requeued)
    );
    d.run();
    assert_eq!(d.applied().last(), Some(&("a", 4)));
}

#[test]
fn at_most_one_work_per_stream_and_per_document_is_out() {
    let mut engine = Engine::new(Config::default());
    for stream in 0..50 {
        for version in 1..=3 {
            engine.handle_event(0, None, incr(&format!("s{stream}"), version));
        }
    }
    let mut out = Vec::new();
    while let Some(work) = engine.poll_work(0) {
        out.push(work);
    }
    assert_eq!(out.len(), 50, "one per stream, all streams at once");
    let mut documents: Vec<_> = out.iter().map(|w| w.document().to_string()).collect();
    documents.sort();
    documents.dedup();
    assert_eq!(documents.len(), 50);
    // Completing in reverse order keeps each stream in version order.
    for work in out.into_iter().rev() {
        assert_eq!(work.event.version, 1);
        engine.handle_outcome(0, work, Outcome::Applied);
    }
    let next = engine.poll_work(0).unwrap();
    assert_eq!(next.event.version, 2);
    engine.handle_outcome(0, next, Outcome::Applied);
}

#[test]
fn a_redirected_event_waits_while_its_target_document_is_busy() {
    let mut engine = Engine::new(Config::default());
    engine.handle_event(0, None, incr("a", 1));
    let work = engine.poll_work(0).unwrap();
    engine.handle_outcome(0, work, Outcome::Applied);
    engine.handle_event(0, None, merge("c", 1, &[("a", 1)]));
    let merge_work = engine.poll_work(0).unwrap();
    assert!(matches!(merge_work.action, Action::Merge { .. }));
    engine.handle_outcome(0, merge_work, Outcome::Applied);
    engine.handle_event(0, None, incr("c", 2));
    engine.handle_event(0, None, incr("a", 2));
    let first = engine.poll_work(0).unwrap();
    assert_eq!(first.document(), "c");
    assert!(
        engine.poll_work(0).is_none(),
        "the other event for document c must wait"
    );
    engine.handle_outcome(0, first, Outcome::Applied);
    let second = engine.poll_work(0).unwrap();
    assert_eq!(second.document(), "c");
    engine.handle_outcome(0, second, Outcome::Applied);
}

#[test]
fn the_checkpoint_waits_for_work_in_flight_and_for_buffered_rows_to_be_written() {
    let mut engine = Engine::new(Config::default());
    engine.handle_event(0, at(0), incr("a", 1));
    engine.handle_event(0, at(1), incr("b", 2)); // buffered: settles when written
    let work = engine.poll_work(0).unwrap();
    let changes = engine.take_changes();
    assert_eq!(changes.checkpoints, vec![], "offset 0 is in flight");
    assert_eq!(changes.pending_put.len(), 1);
    engine.handle_outcome(0, work, Outcome::Applied);
    assert_eq!(engine.take_changes().checkpoints, vec![(0, 1)]);
}

#[test]
fn restore_resumes_parked_buffered_and_dead_lettered_state() {
    let mut engine = Engine::new(Config::default());
    engine.handle_event(0, at(0), after("p", 1, "cat", 1));
    engine.handle_event(0, at(1), incr("p", 2));
    engine.handle_event(0, at(2), incr("q", 1));
    let work = engine.poll_work(0).unwrap();
    engine.handle_outcome(
        0,
        work,
        Outcome::Rejected {
            reason: "poison".into(),
        },
    );
    assert!(engine.poll_work(0).is_none());
    let changes = engine.take_changes();
    // Play the store: build the snapshot from the change set alone.
    let snapshot = ordo_core::Snapshot {
        streams: changes.streams.clone(),
        pending: changes.pending_put.clone(),
        blocking_dead_letters: changes
            .dead_letters_put
            .iter()
            .map(|d| (d.stream.clone().unwrap(), d.version.unwrap(), d.id))
            .collect(),
        dedupe: changes.dedupe_put.clone(),
        checkpoints: changes.checkpoints.clone(),
        counters: changes.counters,
        next_dead_letter_id: changes.next_dead_letter_id,
        ..ordo_core::Snapshot::default()
    };
    assert_eq!(snapshot.checkpoints, vec![(0, 2)]);
    let mut restored = Engine::restore(Config::default(), snapshot, 0);
    assert!(
        restored.poll_work(0).is_none(),
        "p still waits for cat, q for its dead letter"
    );
    assert_eq!(
        restored.handle_event(0, at(3), incr("p", 2)),
        Disposition::Duplicate
    );
    restored.handle_event(0, at(4), incr("cat", 1));
    let mut applied = Vec::new();
    while let Some(work) = restored.poll_work(0) {
        applied.push((work.event.stream.to_string(), work.event.version));
        restored.handle_outcome(0, work, Outcome::Applied);
    }
    assert_eq!(
        applied,
        vec![("cat".into(), 1), ("p".into(), 1), ("p".into(), 2)]
    );
}

#[test]
fn another_members_progress_releases_parked_events_and_writes_nothing() {
    let mut driver = Driver::new(Config::default());
    // `product` waits for `category` 1, which another member owns.
    driver.send(after("product", 1, "category", 1));
    assert!(driver.log.is_empty());
    assert!(driver.engine.is_awaiting());
    assert_eq!(
        driver
            .engine
            .awaited_streams()
            .iter()
            .map(|s| &**s)
            .collect::<Vec<_>>(),
        vec!["category"]
    );
    driver.engine.take_changes();
    // The other member applied `category` 1 (as read back from the store).
    let moved = driver.engine.handle_progress(
        0,
        &ordo_core::StreamRecord {
            stream: "category".into(),
            applied: 1,
            alias: None,
        },
    );
    assert!(moved);
    driver.run();
    assert_eq!(
        driver.log.len(),
        1,
        "released and applied: {:?}",
        driver.log
    );
    assert!(!driver.engine.is_awaiting());
    let changes = driver.engine.take_changes();
    // Only this member's own stream is written; `category` came from the store.
    let written: Vec<&str> = changes.streams.iter().map(|r| &*r.stream).collect();
    assert_eq!(written, vec!["product"]);
    // Old news changes nothing.
    assert!(!driver.engine.handle_progress(
        0,
        &ordo_core::StreamRecord {
            stream: "category".into(),
            applied: 1,
            alias: None,
        },
    ));
}

#[test]
fn a_member_restores_only_the_waiting_events_of_its_partitions() {
    let mut snapshot = ordo_core::Snapshot::default();
    for (stream, partition) in [("a", Some(0)), ("b", Some(1)), ("c", None)] {
        snapshot.pending.push(ordo_core::PendingRecord {
            stream: stream.into(),
            version: 2,
            state: ordo_core::PendingState::Buffered,
            event: Some(incr(stream, 2)),
            partition,
            awaits: None,
        });
    }
    snapshot.retain_partitions(&[1]);
    let kept: Vec<&str> = snapshot.pending.iter().map(|r| &*r.stream).collect();
    assert_eq!(kept, vec!["b", "c"]);
    // The partition survives a restore and the next write of the row.
    let mut engine = Engine::restore(Config::default(), snapshot, 0);
    engine.handle_event(0, at(9), incr("b", 3));
    engine.handle_source_drained();
    let changes = engine.take_changes();
    let b3 = changes
        .pending_put
        .iter()
        .find(|r| &*r.stream == "b" && r.version == 3)
        .expect("b 3 waits behind the gap at 1");
    assert_eq!(b3.partition, Some(0));
}

#[test]
fn a_spilled_stream_comes_back_and_a_held_redelivery_settles_nothing_early() {
    let mut engine = Engine::new(Config {
        parked_streams_in_memory_max: 0,
        ..Config::default()
    });
    engine.handle_event(0, at(0), after("product", 1, "category", 1));
    assert!(engine.poll_work(0).is_none(), "parked");
    let written = engine.take_changes();
    assert_eq!(
        engine.spilled_streams(),
        1,
        "every parked stream spills at 0"
    );
    assert_eq!(written.pending_put[0].awaits, Some(("category".into(), 1)));
    // Version 2 arrives twice (a redelivery) while its stream is in the store.
    engine.handle_event(0, at(1), incr("product", 2));
    engine.handle_event(0, at(1), incr("product", 2));
    let load = engine.poll_load().expect("the stream is asked for");
    assert_eq!(load, ordo_core::Load::Stream("product".into()));
    engine.handle_loaded(
        0,
        &load,
        ordo_core::Loaded {
            records: written.pending_put.clone(),
            waiters_remaining_min: None,
        },
    );
    assert!(engine.poll_work(0).is_none(), "parked again");
    // Offset 1 is neither applied nor written yet: the checkpoint stays at 0.
    assert_eq!(engine.checkpoints(), vec![(0, 0)]);
    let changes = engine.take_changes();
    assert!(changes.pending_put.iter().any(|r| r.version == 2));
    assert_eq!(engine.checkpoints(), vec![(0, 1)]);
    assert_eq!(
        engine.counters().duplicate,
        1,
        "the redelivery is counted once"
    );
    // The category arrives: the spilled product is loaded back and applies in order.
    engine.handle_event(0, at(2), incr("category", 1));
    let mut applied = Vec::new();
    loop {
        while let Some(load) = engine.poll_load() {
            let records = match &load {
                ordo_core::Load::Waiters { .. } => changes.pending_put.clone(),
                ordo_core::Load::Stream(_) => Vec::new(),
            };
            engine.handle_loaded(
                0,
                &load,
                ordo_core::Loaded {
                    records,
                    waiters_remaining_min: None,
                },
            );
        }
        let Some(work) = engine.poll_work(0) else {
            break;
        };
        applied.push(format!("{}@{}", work.event.stream, work.event.version));
        engine.handle_outcome(0, work, Outcome::Applied);
    }
    assert_eq!(applied, vec!["category@1", "product@1", "product@2"]);
}

#[test]
fn the_next_version_delivered_with_a_position_still_respects_a_busy_document() {
    // Deliveries with a source position may take the express lane (decided at delivery);
    // a document held by a redirected work must hold them back all the same.
    let mut engine = Engine::new(Config::default());
    engine.handle_event(0, at(0), incr("a", 1));
    let work = engine.poll_work(0).unwrap();
    engine.handle_outcome(0, work, Outcome::Applied);
    engine.handle_event(0, at(1), merge("c", 1, &[("a", 1)]));
    let merge_work = engine.poll_work(0).unwrap();
    engine.handle_outcome(0, merge_work, Outcome::Applied);
    engine.handle_event(0, at(2), incr("a", 2));
    let redirected = engine.poll_work(0).unwrap();
    assert_eq!(redirected.document(), "c");
    engine.handle_event(0, at(3), incr("c", 2));
    assert!(
        engine.poll_work(0).is_none(),
        "c's own event waits while its document is busy"
    );
    // A redelivery while the first copy is out is a duplicate; another event claiming
    // the version is stale (the first claimant keeps it).
    assert_eq!(
        engine.handle_event(0, at(4), incr("c", 2)),
        Disposition::Duplicate
    );
    engine.handle_outcome(0, redirected, Outcome::Applied);
    let own = engine.poll_work(0).unwrap();
    assert_eq!((own.document(), own.event.version), ("c", 2));
    let mut other = incr("c", 3);
    engine.handle_event(0, at(5), other.clone());
    other.id = "another-id".into();
    assert_eq!(
        engine.handle_event(0, at(6), other),
        Disposition::Stale,
        "a second event for the version queued at delivery is stale"
    );
    engine.handle_outcome(0, own, Outcome::Applied);
    let third = engine.poll_work(0).unwrap();
    assert_eq!(third.event.version, 3);
    engine.handle_outcome(0, third, Outcome::Applied);
    assert!(engine.is_quiescent());
    assert_eq!(engine.checkpoints(), vec![(0, 6)]);
}

/// The snapshot a store would build from one change set.
fn snapshot_of(changes: &ordo_core::ChangeSet) -> ordo_core::Snapshot {
    ordo_core::Snapshot {
        streams: changes.streams.clone(),
        pending: changes.pending_put.clone(),
        dedupe: changes.dedupe_put.clone(),
        checkpoints: changes.checkpoints.clone(),
        counters: changes.counters,
        next_dead_letter_id: changes.next_dead_letter_id,
        ..ordo_core::Snapshot::default()
    }
}

/// Merges written before they go out (as with a handler), so that a merge can be on its
/// way (ready, cuts met) while a later source event is ready too.
fn writing_merges_first() -> Config {
    Config {
        merges_written_before_dispatch: true,
        ..Config::default()
    }
}

#[test]
fn a_source_event_delivered_after_its_merge_waits_for_it_and_is_redirected() {
    let mut d = Driver::new(writing_merges_first());
    d.send(incr("a", 1));
    d.send(incr("b", 1));
    d.send(merge("c", 1, &[("a", 1), ("b", 1)])); // ready; waits for its row
    d.send(incr("a", 2)); // beyond a's cut, delivered after the merge
    assert_eq!(
        d.applied(),
        vec![("a", 1), ("b", 1)],
        "a@2 waits for the merge"
    );
    let waiting = d.engine.waiting();
    let a2 = waiting.iter().find(|w| &*w.stream == "a").unwrap();
    assert!(
        a2.reason.contains("merge at `c` version 1"),
        "{}",
        a2.reason
    );
    let _ = d.engine.take_changes();
    d.run();
    assert_eq!(
        &d.log[2..],
        &[("c".into(), 1, "c".into()), ("a".into(), 2, "c".into())]
    );
    let counters = d.engine.counters();
    assert_eq!((counters.redirected, counters.late_after_merge), (1, 1));
    assert_eq!(
        counters.parked, 0,
        "waiting for a delivered merge is not parked"
    );
    assert!(d.engine.is_quiescent() && d.engine.waiting().is_empty());
}

#[test]
fn a_merge_waiting_for_a_cut_fences_until_the_source_is_drained() {
    let mut d = Driver::new(writing_merges_first());
    d.send(incr("a", 1));
    d.send(merge("c", 1, &[("a", 1), ("b", 1)])); // waits for b@1, not delivered
    d.send(incr("a", 2));
    assert_eq!(
        d.applied(),
        vec![("a", 1)],
        "a@2 waits for the delivered merge"
    );
    assert_eq!(
        d.engine.counters().parked,
        1,
        "the merge awaits an undelivered b@1"
    );
    // b@1 never comes: an in-order consumer applies a@2 to a, and so does ordo once the
    // source is drained.
    d.engine.handle_source_drained();
    d.run();
    assert_eq!(
        d.log.last().unwrap(),
        &("a".to_string(), 2, "a".to_string())
    );
}

#[test]
fn a_source_event_delivered_before_its_merge_goes_to_its_own_document() {
    let mut d = Driver::new(Config::default());
    d.send(incr("a", 1));
    d.send(incr("a", 2)); // beyond the cut the merge will name, but delivered first
    d.send(merge("c", 1, &[("a", 1)]));
    assert_eq!(d.log[1], ("a".into(), 2, "a".into()));
    assert_eq!(d.log[2], ("c".into(), 1, "c".into()));
    let counters = d.engine.counters();
    assert_eq!((counters.redirected, counters.late_after_merge), (0, 1));
}

#[test]
fn a_dead_lettered_merge_lifts_its_fence_and_a_replay_puts_it_back() {
    let mut d = Driver::new(writing_merges_first());
    d.reject = Box::new(|e| (e.stream.as_ref() == "c").then(|| "refused".to_string()));
    d.send(incr("a", 1));
    d.send(merge("c", 1, &[("a", 1)]));
    d.send(incr("a", 2));
    assert_eq!(d.applied(), vec![("a", 1)], "a@2 waits for the merge");
    let _ = d.engine.take_changes();
    d.run(); // the merge goes, and is refused: a@2 goes on alone
    assert_eq!(
        d.log.last().unwrap(),
        &("a".to_string(), 2, "a".to_string())
    );
    let entry = d.engine.take_changes().dead_letters_put.remove(0);
    d.reject = Box::new(|_| None);
    assert_eq!(
        d.engine.replay_dead_letter(0, &entry),
        Ok(ReplayOutcome::Requeued)
    );
    d.send(incr("a", 3)); // delivered after the replayed merge: fenced again
    assert_eq!(
        d.log.last().unwrap(),
        &("a".to_string(), 2, "a".to_string())
    );
    let _ = d.engine.take_changes();
    d.run();
    assert_eq!(d.log[d.log.len() - 2], ("c".into(), 1, "c".into()));
    assert_eq!(
        d.log.last().unwrap(),
        &("a".to_string(), 3, "c".to_string())
    );
}

#[test]
fn with_merges_written_first_a_merge_goes_out_only_after_its_row_is_taken() {
    let config = Config {
        merges_written_before_dispatch: true,
        ..Config::default()
    };
    let mut engine = Engine::new(config.clone());
    engine.handle_event(0, at(0), incr("a", 1));
    let work = engine.poll_work(0).unwrap();
    engine.handle_outcome(0, work, Outcome::Applied);
    engine.handle_event(0, at(1), merge("c", 1, &[("a", 1)]));
    engine.handle_event(0, at(2), incr("a", 2));
    assert!(
        engine.poll_work(0).is_none(),
        "the merge waits to be written"
    );
    assert!(engine.awaits_commit() && !engine.is_quiescent());
    let changes = engine.take_changes();
    assert!(changes.pending_put.iter().any(|r| &*r.stream == "c"));
    // A crash here, with the merge acknowledged by a handler and not committed: the
    // restored engine knows the merge, and a@2 (read again) waits for it.
    let mut restored = Engine::restore(config, snapshot_of(&changes), 0);
    restored.handle_event(0, at(2), incr("a", 2));
    let first = restored.poll_work(0).unwrap();
    assert!(matches!(first.action, Action::Merge { .. }));
    assert!(restored.poll_work(0).is_none(), "a@2 waits for the merge");
    restored.handle_outcome(0, first, Outcome::Applied);
    let late = restored.poll_work(0).unwrap();
    assert_eq!((late.event.version, late.document()), (2, "c"));
    // The engine that was not restored hands the merge out after its row was taken.
    let work = engine.poll_work(0).unwrap();
    assert!(matches!(work.action, Action::Merge { .. }));
}

#[test]
fn a_stream_holding_a_merge_is_never_spilled() {
    let config = Config {
        parked_streams_in_memory_max: 0,
        ..Config::default()
    };
    let mut engine = Engine::new(config);
    engine.handle_event(0, at(0), merge("c", 1, &[("a", 1)]));
    engine.handle_event(0, at(1), after("p", 1, "q", 1));
    assert!(engine.poll_work(0).is_none());
    let changes = engine.take_changes();
    assert_eq!(engine.spilled_streams(), 1, "p spills, c does not");
    let merge_row = changes
        .pending_put
        .iter()
        .find(|r| &*r.stream == "c")
        .unwrap();
    assert_eq!(
        merge_row.awaits, None,
        "read back at a restart, not spilled"
    );
}

#[test]
fn a_replay_out_before_its_row_was_written_is_written_while_out() {
    let mut engine = Engine::new(Config::default());
    engine.handle_event(0, at(0), incr("a", 1));
    let work = engine.poll_work(0).unwrap();
    engine.handle_outcome(
        0,
        work,
        Outcome::Rejected {
            reason: "poison".into(),
        },
    );
    let entry = engine.take_changes().dead_letters_put.remove(0);
    assert_eq!(
        engine.replay_dead_letter(0, &entry),
        Ok(ReplayOutcome::Requeued)
    );
    // Out (a handler call, say) before any commit wrote the replayed event: nothing
    // would deliver it again, so this change set writes it beside deleting the entry.
    let out = engine.poll_work(0).unwrap();
    let changes = engine.take_changes();
    assert_eq!(changes.dead_letters_delete, vec![entry.id]);
    assert!(changes
        .pending_put
        .iter()
        .any(|r| &*r.stream == "a" && r.version == 1));
    let mut restored = Engine::restore(Config::default(), snapshot_of(&changes), 0);
    assert_eq!(
        restored.poll_work(0).unwrap().event.version,
        1,
        "a crash here loses nothing"
    );
    // Applied: the row goes in the next change set.
    engine.handle_outcome(0, out, Outcome::Applied);
    let changes = engine.take_changes();
    assert!(changes
        .pending_delete
        .iter()
        .any(|(s, v)| &**s == "a" && *v == 1));
}

#[test]
fn a_long_parked_release_is_noticed() {
    let mut engine = Engine::new(Config {
        long_parked_ms: 1_000,
        ..Config::default()
    });
    engine.handle_event(0, at(0), after("p", 1, "cat", 1));
    engine.handle_event(10, at(1), after("q", 1, "cat", 2));
    assert!(engine.poll_work(10).is_none());
    engine.handle_event(1_005, at(2), incr("cat", 1));
    engine.handle_event(1_005, at(3), incr("cat", 2));
    let mut released = Vec::new();
    while let Some(work) = engine.poll_work(1_005) {
        engine.handle_outcome(1_005, work, Outcome::Applied);
    }
    while let Some(notice) = engine.poll_notice() {
        if let Notice::Released {
            stream, waited_ms, ..
        } = notice
        {
            released.push((stream.to_string(), waited_ms));
        }
    }
    // p waited 1,005 ms (noticed), q 995 ms (not).
    assert_eq!(released, vec![("p".to_string(), 1_005)]);
    assert_eq!(engine.counters().released, 2);
}

#[test]
fn a_paused_stream_holds_its_events_durably_while_others_go_on_and_resumes_in_order() {
    let mut d = Driver::new(Config::default());
    d.send(incr("a", 1));
    assert!(d.engine.pause("a"));
    assert!(!d.engine.pause("a"), "a second pause changes nothing");
    d.send(incr("a", 2));
    d.send(incr("b", 1));
    d.send(incr("a", 3));
    assert_eq!(d.applied(), vec![("a", 1), ("b", 1)], "b goes on; a waits");
    let waiting = d.engine.waiting();
    assert_eq!(waiting.len(), 2);
    assert!(waiting
        .iter()
        .all(|w| w.waits_for == ordo_core::WaitsFor::Paused && w.reason.contains("paused")));
    // What waits is written at the next commit, so the source may move past it.
    let changes = d.engine.take_changes();
    let written: Vec<u64> = changes
        .pending_put
        .iter()
        .filter(|p| &*p.stream == "a")
        .map(|p| p.version)
        .collect();
    assert_eq!(written, vec![2, 3], "{changes:?}");
    assert!(d.engine.is_quiescent(), "nothing can go while a is paused");
    assert_eq!(d.engine.paused_streams(), vec![std::sync::Arc::from("a")]);
    assert!(d.engine.resume("a"));
    assert!(!d.engine.resume("a"));
    d.run();
    assert_eq!(
        d.applied(),
        vec![("a", 1), ("b", 1), ("a", 2), ("a", 3)],
        "a resumes in version order"
    );
    assert!(d.engine.waiting().is_empty());
}

#[test]
fn a_paused_stream_stays_paused_when_what_it_waited_for_arrives() {
    let mut d = Driver::new(Config::default());
    d.send(after("p", 1, "c", 1)); // parked on c@1
    assert!(d.engine.pause("p"));
    d.send(incr("c", 1)); // releases p@1, but p is paused
    assert_eq!(d.applied(), vec![("c", 1)]);
    assert!(d.engine.resume("p"));
    d.run();
    assert_eq!(d.applied(), vec![("c", 1), ("p", 1)]);
}

#[test]
fn pausing_makes_what_already_waits_in_memory_durable() {
    let mut engine = Engine::new(Config::default());
    engine.handle_event(0, at(0), incr("a", 1));
    let first = engine.poll_work(0).expect("a@1 goes out");
    // In line behind the one out: nothing would write it, the source re-delivers it.
    engine.handle_event(0, at(1), incr("a", 2));
    let changes = engine.take_changes();
    assert!(
        !changes.pending_put.iter().any(|p| p.version == 2),
        "in line, not written: {changes:?}"
    );
    assert!(engine.pause("a"));
    let changes = engine.take_changes();
    assert!(
        changes
            .pending_put
            .iter()
            .any(|p| &*p.stream == "a" && p.version == 2),
        "held by the pause, so written: {changes:?}"
    );
    engine.handle_outcome(0, first, Outcome::Applied);
    assert!(
        engine.poll_work(0).is_none(),
        "an event already out finishes; a@2 waits"
    );
    assert!(engine.resume("a"));
    assert_eq!(engine.poll_work(0).map(|w| w.event.version), Some(2));
}
