//! `ordo chaos`: the deterministic disorder simulator.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;
use ordo_sim::chaos::{
    failure_text, run_seed, survival_matrix, ChaosOptions, ChaosReport, MatrixRow, Summary,
    Workload,
};
use ordo_sim::scenarios::Scenario;
use serde_json::json;

use crate::cli::ChaosArgs;

/// How often a long run prints progress.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(10);

/// Failing seeds printed with their trace tails; later ones are only named.
const FAILURES_TRACED_MAX: u64 = 3;

/// Runs one seed (`--seed`) or a range of them, then the survival matrix.
pub fn run(args: ChaosArgs) -> anyhow::Result<ExitCode> {
    let scenarios = scenarios(&args)?;
    anyhow::ensure!(args.events >= 10, "--events must be at least 10");
    let options_for = |seed: u64| ChaosOptions {
        workload: Workload::Scenario(scenarios[(seed % scenarios.len() as u64) as usize]),
        events: args.events,
        swarm: args.swarm,
        ..ChaosOptions::default()
    };
    if let Some(seed) = args.seed {
        let options = options_for(seed);
        let report = run_seed(seed, &options);
        print_seed(&args, &options, &report);
        return Ok(exit_code(report.ok()));
    }
    let started = Instant::now();
    let summary = run_range(&args, options_for);
    let elapsed_s = started.elapsed().as_secs_f64();
    let matrix = if args.matrix_seeds > 0 {
        survival_matrix(args.matrix_seeds, args.events.min(200))
    } else {
        Vec::new()
    };
    let range = RangeReport {
        scenarios: &scenarios,
        summary: &summary,
        matrix: &matrix,
        elapsed_s,
    };
    if args.json {
        range.print_json(&args);
    } else {
        range.print_text(&args);
    }
    Ok(exit_code(summary.divergences == 0))
}

fn scenarios(args: &ChaosArgs) -> anyhow::Result<Vec<Scenario>> {
    Ok(match &args.scenario {
        Some(name) => match Scenario::from_name(name) {
            Some(scenario) => vec![scenario],
            None => bail!("unknown scenario `{name}` (bank, merges, catalog, event-store, mixed)"),
        },
        None => Scenario::ALL.to_vec(),
    })
}

fn exit_code(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// One seed's report, as JSON or for humans.
fn print_seed(args: &ChaosArgs, options: &ChaosOptions, report: &ChaosReport) {
    let seed = report.seed;
    if args.json {
        outln!(
            "{}",
            json!({
                "seed": seed,
                "scenario": options.workload.name(),
                "swarm": report.swarm,
                "fault_rates": report.rates.to_json(),
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
            "seed {seed} ({}): converged; trace hash {:016x}\n  fault rates: {}\n  mechanisms: {}\n  faults: {}",
            options.workload.name(),
            report.trace_hash,
            report.rates,
            report.counters,
            report.faults.to_json()
        );
        outln!("  naive wrong {}, partition-ordered wrong {}, last-writer-wins wrong {} (of {} entities)",
            report.naive_wrong, report.partition_ordered_wrong, report.lww_wrong, report.entities);
    } else {
        outln!("{}", failure_text(report));
    }
}

/// Runs the seed range, naming every failing seed on stderr as it goes.
fn run_range(args: &ChaosArgs, options_for: impl Fn(u64) -> ChaosOptions) -> Summary {
    let mut last_progress = Instant::now();
    let mut summary = Summary::default();
    for seed in args.first_seed..args.first_seed + args.seeds {
        let report = run_seed(seed, &options_for(seed));
        if !report.ok() {
            // Every failing seed is named; the first few with their traces.
            if summary.divergences < FAILURES_TRACED_MAX {
                eprintln!("{}", failure_text(&report));
            } else {
                let swarm = if report.swarm { " --swarm" } else { "" };
                eprintln!("seed {seed} FAILED (reproduce with --seed {seed}{swarm})");
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
    summary
}

/// What a range of seeds and the survival matrix found.
struct RangeReport<'a> {
    scenarios: &'a [Scenario],
    summary: &'a Summary,
    matrix: &'a [MatrixRow],
    elapsed_s: f64,
}

impl RangeReport<'_> {
    fn seeds_per_minute(&self) -> f64 {
        self.summary.seeds as f64 / self.elapsed_s.max(1e-9) * 60.0
    }

    fn print_json(&self, args: &ChaosArgs) {
        let summary = self.summary;
        let matrix_json: Vec<_> = self
            .matrix
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
                "scenarios": self.scenarios.iter().map(|s| s.name()).collect::<Vec<_>>(),
                "events_per_run": args.events,
                "swarm": args.swarm,
                "divergences": summary.divergences,
                "invariant_violations": summary.invariant_violations,
                "naive_divergences": summary.naive_divergences,
                "partition_ordered_divergences": summary.partition_ordered_divergences,
                "lww_divergences": summary.lww_divergences,
                "mechanisms": summary.counters,
                "faults": summary.faults.to_json(),
                "seeds_per_minute": self.seeds_per_minute().round(),
                "matrix": matrix_json,
            })
        );
    }

    fn print_text(&self, args: &ChaosArgs) {
        let summary = self.summary;
        let names: Vec<&str> = self.scenarios.iter().map(|s| s.name()).collect();
        let rates = if args.swarm {
            "fault rates drawn per seed (swarm)"
        } else {
            "fixed fault rates"
        };
        outln!(
            "ordo chaos: {} seeds over {} ({} events each, {rates}), {:.1} s, {:.0} seeds/min",
            summary.seeds,
            names.join(", "),
            args.events,
            self.elapsed_s,
            self.seeds_per_minute()
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
        self.print_matrix(args.matrix_seeds);
        if let Some(failure) = &summary.first_failure {
            outln!("\nfirst failure:\n{failure}");
        }
    }

    fn print_matrix(&self, matrix_seeds: u64) {
        if self.matrix.is_empty() {
            return;
        }
        outln!(
            "\n  survival matrix: seeds (of {matrix_seeds}) a design got wrong, each fault alone"
        );
        let row_text = |cells: [&dyn std::fmt::Display; 6]| {
            format!(
                "    {:<14} {:<10} {:>6} {:>18} {:>7} {:>17}",
                cells[0], cells[1], cells[2], cells[3], cells[4], cells[5]
            )
        };
        outln!(
            "{}",
            row_text([
                &"fault",
                &"workload",
                &"ordo",
                &"partition-ordered",
                &"naive",
                &"last-writer-wins"
            ])
        );
        for row in self.matrix {
            outln!(
                "{}",
                row_text([
                    &row.fault,
                    &row.workload,
                    &row.ordo,
                    &row.partition_ordered,
                    &row.naive,
                    &row.lww
                ])
            );
        }
    }
}
