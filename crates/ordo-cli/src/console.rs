//! `ordo console`: the operator's web console (`ordo_console`).

use std::process::ExitCode;

use anyhow::Context;

use crate::cli::ConsoleArgs;

pub fn run(args: ConsoleArgs) -> anyhow::Result<ExitCode> {
    // Refused before listening: a console on a store that is not there shows nothing.
    ordo_store::AnyStore::open_read_only(&args.store)?;
    let listen = match args.listen.strip_prefix(':').unwrap_or(&args.listen) {
        port if port.parse::<u16>().is_ok() => format!("127.0.0.1:{port}"),
        other => other.to_string(),
    };
    let listen = listen
        .parse()
        .with_context(|| format!("--listen `{listen}`: expected PORT or HOST:PORT"))?;
    let config = ordo_console::ConsoleConfig {
        store: args.store,
        listen,
        token: args.token,
        redact: args.redact,
        history_sample_ms: args.history_sample_ms,
        // Actions run the verbs of this very binary.
        binary: std::env::current_exe().context("the ordo binary's own path")?,
    };
    ordo_console::serve(config, |address| {
        tracing::info!("console on http://{address}/");
    })?;
    Ok(ExitCode::SUCCESS)
}
