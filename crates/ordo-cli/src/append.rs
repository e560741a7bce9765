//! `ordo append`: JSONL lines into the embedded event log, as given.

use std::io::{BufRead, BufReader, Read};
use std::process::ExitCode;

use anyhow::Context;
use ordo_log::EventLog;

use crate::cli::AppendArgs;

/// Lines appended per transaction.
const APPEND_BATCH_LINES: usize = 10_000;

pub fn run(args: AppendArgs) -> anyhow::Result<ExitCode> {
    // The input first: a mistyped file name must not leave an empty log behind.
    let input: Box<dyn Read> = match &args.file {
        Some(path) => {
            Box::new(std::fs::File::open(path).with_context(|| format!("cannot read `{path}`"))?)
        }
        None => Box::new(std::io::stdin()),
    };
    // `--log log:PATH` is what `run --source` is given for the same log: take it as well.
    let path = args.log.strip_prefix("log:").unwrap_or(&args.log);
    let mut log = EventLog::open(path, true)?;
    let mut reader = BufReader::new(input);
    let mut batch: Vec<String> = Vec::with_capacity(APPEND_BATCH_LINES);
    let mut appended = 0u64;
    let mut last_position = log.last_position()?;
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .context("reading input")?;
        if read > 0 {
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches(['\n', '\r']);
            if !text.trim().is_empty() {
                batch.push(text.to_string());
            }
        }
        if batch.len() >= APPEND_BATCH_LINES || (read == 0 && !batch.is_empty()) {
            let summary = log.append_lines(batch.iter().map(String::as_str))?;
            appended += summary.appended;
            last_position = summary.last_position;
            batch.clear();
        }
        if read == 0 {
            break;
        }
    }
    eprintln!(
        "ordo: appended {appended} events to `{}` (last position {last_position})",
        args.log
    );
    Ok(ExitCode::SUCCESS)
}
