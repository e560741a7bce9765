//! `inventory LOG DB [--exit-when-idle] [--batch N]`: runs the Inventory service from the
//! embedded event log `LOG` into the SQLite file `DB` (ordo's state and the team's tables,
//! one transaction per batch of at most N deliveries). Stop it with Ctrl-C; it resumes
//! where it stopped.

use std::process::ExitCode;

use inventory::{Inventory, TABLES};
use ordo_core::{Config, OpPolicy};
use ordo_runtime::{run_until_signal, Consumer, RunOptions, SourceUrl};
use ordo_store::SqliteStore;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(log), Some(db)) = (args.first(), args.get(1)) else {
        eprintln!("usage: inventory LOG DB [--exit-when-idle] [--batch N]");
        return ExitCode::from(2);
    };
    let exit_when_idle = args.iter().any(|a| a == "--exit-when-idle");
    let batch = match args.iter().position(|a| a == "--batch") {
        Some(i) => match args.get(i + 1).and_then(|n| n.parse::<usize>().ok()) {
            Some(n) if n > 0 => n,
            _ => {
                eprintln!("inventory: --batch takes a whole number of at least 1");
                return ExitCode::from(2);
            }
        },
        None => ordo_runtime::limits::COMMIT_EVENTS_MAX_DEFAULT,
    };
    match run(log, db, exit_when_idle, batch) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("inventory: {error}");
            ExitCode::from(1)
        }
    }
}

fn run(
    log: &str,
    db: &str,
    exit_when_idle: bool,
    batch: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let store = SqliteStore::open(db, true)?;
    store.connection().execute_batch(TABLES)?;
    // The ops are the team's own (`PurchaseMade` uses `op: "purchase"`); ordo reads `merge`.
    let config = Config {
        op_policy: OpPolicy::Custom,
        ..Config::default()
    };
    let url = SourceUrl::parse(&format!("log:{log}"))?;
    let consumer =
        Consumer::open(store, &url.checkpoint_key(), config)?.with_transactional_handler(Inventory);
    let source = ordo_runtime::open_source(&url)?;
    let options = RunOptions {
        exit_when_idle,
        commit_events_max: batch,
        ..RunOptions::default()
    };
    let (report, _) = run_until_signal(consumer, source, options)?;
    eprintln!(
        "inventory: {} delivered; {}",
        report.delivered, report.counters
    );
    Ok(())
}
