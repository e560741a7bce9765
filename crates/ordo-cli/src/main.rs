//! `ordo`: the order-surviving event consumer's command-line tool.
//!
//! Raw flags are parsed by clap into [`cli::Cli`]; each verb resolves them into its own
//! configuration before doing any work.

mod bench;
mod cli;
mod demo;

use std::process::ExitCode;

use clap::Parser;

#[global_allocator]
static ALLOCATOR: ordo_bench::CountingAllocator = ordo_bench::CountingAllocator;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            // clap's own exit code for usage errors is 2; help and version are 0.
            return ExitCode::from(if error.use_stderr() { 2 } else { 0 });
        }
    };
    let result = match cli.command {
        cli::Command::Demo(args) => demo::run(args),
        cli::Command::Bench(args) => bench::run(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("ordo: error: {error:#}");
            ExitCode::from(2)
        }
    }
}
