//! `ordo export`: every stream's state as JSONL, sorted by stream.

use std::io::Write;
use std::process::ExitCode;

use ordo_store::Store;

use crate::cli::StoreArgs;
use crate::settings::open_read_only;

pub fn run(args: StoreArgs) -> anyhow::Result<ExitCode> {
    let mut store = open_read_only(&args.store)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for row in store.export()? {
        writeln!(out, "{}", row.to_json())?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
