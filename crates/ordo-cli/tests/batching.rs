//! The counters of one uninterrupted run are a function of the input alone: the same
//! deliveries in the same order give the same counters, exit code and documents whatever
//! `--batch` and `--commit-interval-ms` say. Through the built binary, over seeds and
//! scenarios.

mod common;

use common::service::{Behaviour, Service};
use common::{run, write_events, Scratch};
use ordo_core::Event;
use ordo_sim::scenarios::Scenario;
use ordo_sim::Rng;

/// Production's other faults on top of a scenario's disorder: second writers (an old
/// version under a new id, some right behind the original, some much later) and poison
/// events (an `incr` by text, refused by the projection: a sequenced dead letter).
fn with_faults(seed: u64, deliveries: &[Event]) -> Vec<Event> {
    let mut rng = Rng::derive(seed, "batching-faults");
    let mut out: Vec<Event> = Vec::with_capacity(deliveries.len() + deliveries.len() / 20);
    let mut late: Vec<Event> = Vec::new();
    for event in deliveries {
        let mut event = event.clone();
        if rng.chance(1) && matches!(event.op, ordo_core::Op::Incr) {
            let text =
                event
                    .to_json_string()
                    .replacen("\"data\":{", "\"data\":{\"poison\":\"x\",", 1);
            event = ordo_core::parse_event(text.as_bytes(), ordo_core::OpPolicy::Document)
                .expect("still an envelope");
        }
        let rival = rng.chance(3).then(|| {
            let mut rival = event.clone();
            rival.id = format!("{}-rival", event.id).into();
            rival
        });
        out.push(event);
        match rival {
            Some(rival) if rng.chance(50) => out.push(rival),
            Some(rival) => late.push(rival),
            None => {}
        }
    }
    out.extend(late);
    out
}

/// `run --exit-when-idle --json EXTRA…` on a fresh store: (exit code, counters, export).
fn counted(
    input: &str,
    scratch: &Scratch,
    name: &str,
    extra: &[&str],
) -> (i32, serde_json::Value, String) {
    let store = scratch.store(name);
    let mut args = vec![
        "run",
        "--source",
        input,
        "--store",
        &store,
        "--exit-when-idle",
        "--json",
        "--fail-on-dead-letters",
    ];
    args.extend_from_slice(extra);
    let output = run(&args);
    let counters: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("counters: {e}: {}", String::from_utf8_lossy(&output.stderr)));
    let export = String::from_utf8(run(&["export", "--store", &store]).stdout).unwrap();
    (output.status.code().unwrap(), counters, export)
}

#[test]
fn counters_do_not_depend_on_batching() {
    let seeds: u64 = std::env::var("ORDO_BATCH_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let mut failures = Vec::new();
    let (mut stale, mut dead_lettered) = (0, 0);
    for seed in 0..seeds {
        for scenario in [
            Scenario::Mixed,
            Scenario::Merges,
            Scenario::Catalog,
            Scenario::Bank,
        ] {
            let history = scenario.history(seed, 1_500);
            let deliveries = with_faults(seed, &scenario.deliveries(seed, &history));
            let scratch = Scratch::new();
            let path = scratch.path("in.jsonl");
            write_events(&path, &deliveries);
            let input = format!("file:{}", path.display());
            let reference = counted(&input, &scratch, "one.db", &["--batch", "1"]);
            stale += reference.1["stale"].as_u64().unwrap();
            dead_lettered += reference.1["dead_lettered"].as_u64().unwrap();
            if seed < 2 {
                // Your own handler, calls 8 at once answering in 0–3 ms: the same counters.
                let service = Service::start(Behaviour {
                    seed,
                    slow_ms_max: 3,
                    ..Behaviour::default()
                });
                let url = service.url();
                let handled = counted(
                    &input,
                    &scratch,
                    "handled.db",
                    &["--handler", &url, "--concurrency", "8", "--batch", "500"],
                );
                if (handled.0, &handled.1) != (reference.0, &reference.1) {
                    failures.push(format!(
                        "{scenario:?} seed {seed} --handler --concurrency 8: exit {} vs {}, counters {} vs {} (--batch 1)",
                        handled.0, reference.0, handled.1, reference.1
                    ));
                }
            }
            for (name, extra) in [
                ("seven.db", vec!["--batch", "7"]),
                ("big.db", vec!["--batch", "32768"]),
                (
                    "slow.db",
                    vec!["--batch", "100", "--commit-interval-ms", "1"],
                ),
            ] {
                let other = counted(&input, &scratch, name, &extra);
                if other != reference {
                    failures.push(format!(
                        "{scenario:?} seed {seed} {extra:?}: exit {} vs {}, counters {} vs {} (--batch 1){}",
                        other.0,
                        reference.0,
                        other.1,
                        reference.1,
                        if other.2 == reference.2 { "" } else { "; exports differ" }
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        stale > 0 && dead_lettered > 0,
        "the faults were exercised: stale {stale}, dead-lettered {dead_lettered}"
    );
}
