//! The raw command line, exactly as typed. Verbs turn it into resolved settings.

use clap::{Args, Parser, Subcommand};

/// ordo: an order-surviving event consumer.
#[derive(Debug, Parser)]
#[command(name = "ordo", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the field scenarios through injected disorder and check against the oracle.
    Demo(DemoArgs),
    /// Run the performance suite; every figure is a ratio against a same-run baseline.
    Bench(BenchArgs),
}

/// `ordo demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Events per scenario.
    #[arg(long, default_value_t = 4000)]
    pub events: usize,
    /// Seed of the generated histories and their disorder.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Print one JSON object instead of the report.
    #[arg(long)]
    pub json: bool,
}

/// `ordo bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// A smaller run (well under two minutes).
    #[arg(long)]
    pub quick: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}
