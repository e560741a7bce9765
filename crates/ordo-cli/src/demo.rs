//! `ordo demo`: the field scenarios through injected disorder, checked against the
//! in-order oracle, with a naive consumer for contrast.

use std::process::ExitCode;

use ordo_sim::convergence::{run_deliveries, Options};
use ordo_sim::scenarios::Scenario;
use serde_json::json;

use crate::cli::DemoArgs;

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let mut all_converged = true;
    let mut reports = Vec::new();
    for scenario in Scenario::ALL {
        let history = scenario.history(args.seed, args.events);
        let deliveries = scenario.deliveries(args.seed, &history);
        let options = Options {
            concurrency: 8,
            commit_percent: 5,
            crash_percent: 0,
            ..Options::default()
        };
        let report = run_deliveries(args.seed, &history, &deliveries, options);
        all_converged &= report.converged();
        if !args.json {
            let c = report.counters;
            println!("== {}: {}", scenario.name(), scenario.summary());
            println!(
                "   {} events delivered as {} ({} extra copies), {} entities",
                history.len(),
                deliveries.len(),
                deliveries.len() - history.len(),
                report.streams
            );
            println!(
                "   absorbed: dedupe {} duplicates, version guard {} stale, gap buffer {} buffered, dependency wait {} parked / {} released",
                c.duplicate, c.stale, c.buffered, c.parked, c.released
            );
            println!(
                "             alias redirect {} redirected, {} late after merge, dead letters {}, stalled {}",
                c.redirected, c.late_after_merge, c.dead_lettered, c.stalled
            );
            if report.converged() {
                println!(
                    "   ordo:  all {} entities equal the in-order oracle",
                    report.streams
                );
            } else {
                println!(
                    "   ordo:  DIVERGED on {} entities ({} events left waiting); rerun with --seed {}\n{}",
                    report.divergence.streams.len(),
                    report.left_waiting.len(),
                    args.seed,
                    report.divergence
                );
            }
            println!(
                "   naive: {} of {} entities wrong (arrival order, no guard)\n",
                report.naive_wrong, report.streams
            );
        }
        reports.push(json!({
            "scenario": scenario.name(),
            "events": history.len(),
            "deliveries": deliveries.len(),
            "entities": report.streams,
            "converged": report.converged(),
            "divergences": report.divergence.streams.len(),
            "naive_wrong": report.naive_wrong,
            "counters": report.counters.to_json(),
        }));
    }
    if args.json {
        println!(
            "{}",
            json!({"converged": all_converged, "scenarios": reports})
        );
    } else if all_converged {
        println!("converged: every scenario matches the in-order oracle");
    } else {
        println!("NOT converged: see the scenarios above");
    }
    Ok(if all_converged {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
