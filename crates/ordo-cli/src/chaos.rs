//! `ordo chaos`: the deterministic disorder simulator.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;
use ordo_sim::chaos::{failure_text, run_seed, survival_matrix, ChaosOptions, Summary, Workload};
use ordo_sim::scenarios::Scenario;
use serde_json::json;

use crate::cli::ChaosArgs;

/// How often a long run prints progress.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(10);

pub fn run(args: ChaosArgs) -> anyhow::Result<ExitCode> {
    let scenarios: Vec<Scenario> = match &args.scenario {
        Some(name) => match Scenario::from_name(name) {
            Some(scenario) => vec![scenario],
            None => bail!("unknown scenario `{name}` (bank, merges, catalog, event-store, mixed)"),
        },
        None => Scenario::ALL.to_vec(),
    };
    anyhow::ensure!(args.events >= 10, "--events must be at least 10");
    let options_for = |seed: u64| ChaosOptions {
        workload: Workload::Scenario(scenarios[(seed % scenarios.len() as u64) as usize]),
        events: args.events,
        ..ChaosOptions::default()
    };
    if let Some(seed) = args.seed {
        let options = options_for(seed);
        let report = run_seed(seed, &options);
        if args.json {
            outln!(
                "{}",
                json!({
                    "seed": seed,
                    "scenario": options.workload.name(),
                    "converged": report.ok(),
                    "violation": report.violation,
                    "divergences": report.divergence.streams.len(),
                    "trace_hash": format!("{:016x}", report.trace_hash),
                    "counters": report.counters.to_json(),
                    "faults": report.faults.to_json(),
                    "trace_tail": report.trace_tail,
                })
            );
        } else if report.ok() {
            outln!(
                "seed {seed} ({}): converged; trace hash {:016x}\n  mechanisms: {}\n  faults: {}",
                options.workload.name(),
                report.trace_hash,
                report.counters,
                report.faults.to_json()
            );
            outln!("  naive wrong {}, partition-ordered wrong {}, last-writer-wins wrong {} (of {} entities)",
                report.naive_wrong, report.partition_ordered_wrong, report.lww_wrong, report.entities);
        } else {
            outln!("{}", failure_text(&report));
        }
        return Ok(if report.ok() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }

    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut summary = Summary::default();
    for seed in args.first_seed..args.first_seed + args.seeds {
        let report = run_seed(seed, &options_for(seed));
        if !report.ok() {
            // Every failing seed is named; the first few with their traces.
            if summary.divergences < 3 {
                eprintln!("{}", failure_text(&report));
            } else {
                eprintln!("seed {seed} FAILED (reproduce with --seed {seed})");
            }
        }
        summary.add(&report);
        if last_progress.elapsed() >= PROGRESS_INTERVAL {
            last_progress = Instant::now();
            eprintln!(
                "ordo chaos: {} seeds, {} divergences",
                summary.seeds, summary.divergences
            );
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let seeds_per_minute = summary.seeds as f64 / elapsed.max(1e-9) * 60.0;
    let matrix = if args.matrix_seeds > 0 {
        survival_matrix(args.matrix_seeds, args.events.min(200))
    } else {
        Vec::new()
    };
    if args.json {
        let matrix_json: Vec<_> = matrix
            .iter()
            .map(|row| {
                json!({"fault": row.fault, "workload": row.workload, "seeds": row.seeds,
                       "ordo": row.ordo, "partition_ordered": row.partition_ordered,
                       "naive": row.naive, "lww": row.lww})
            })
            .collect();
        outln!(
            "{}",
            json!({
                "seeds": summary.seeds,
                "scenarios": scenarios.iter().map(|s| s.name()).collect::<Vec<_>>(),
                "events_per_run": args.events,
                "divergences": summary.divergences,
                "invariant_violations": summary.invariant_violations,
                "naive_divergences": summary.naive_divergences,
                "partition_ordered_divergences": summary.partition_ordered_divergences,
                "lww_divergences": summary.lww_divergences,
                "mechanisms": summary.counters,
                "faults": summary.faults.to_json(),
                "seeds_per_minute": seeds_per_minute.round(),
                "matrix": matrix_json,
            })
        );
    } else {
        let names: Vec<&str> = scenarios.iter().map(|s| s.name()).collect();
        outln!(
            "ordo chaos: {} seeds over {} ({} events each), {:.1} s, {:.0} seeds/min",
            summary.seeds,
            names.join(", "),
            args.events,
            elapsed,
            seeds_per_minute
        );
        outln!(
            "  ordo divergences: {} (invariant violations: {})",
            summary.divergences,
            summary.invariant_violations
        );
        outln!(
            "  baselines on the same deliveries, seeds with a wrong entity: naive {} | partition-ordered, no version guard {} | last-writer-wins {}",
            summary.naive_divergences, summary.partition_ordered_divergences, summary.lww_divergences
        );
        outln!("  what each mechanism absorbed:");
        for (name, value) in &summary.counters {
            outln!("    {name:<18} {value}");
        }
        outln!("  faults injected: {}", summary.faults.to_json());
        if !matrix.is_empty() {
            outln!(
                "\n  survival matrix: seeds (of {}) a design got wrong, each fault alone",
                args.matrix_seeds
            );
            outln!(
                "    {:<14} {:<10} {:>6} {:>18} {:>7} {:>17}",
                "fault",
                "workload",
                "ordo",
                "partition-ordered",
                "naive",
                "last-writer-wins"
            );
            for row in &matrix {
                outln!(
                    "    {:<14} {:<10} {:>6} {:>18} {:>7} {:>17}",
                    row.fault,
                    row.workload,
                    row.ordo,
                    row.partition_ordered,
                    row.naive,
                    row.lww
                );
            }
        }
        if let Some(failure) = &summary.first_failure {
            outln!("\nfirst failure:\n{failure}");
        }
    }
    Ok(if summary.divergences == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
