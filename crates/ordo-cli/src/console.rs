//! `ordo console`: the operator's web console (`ordo_console`).

use std::process::ExitCode;

use anyhow::Context;

use crate::cli::ConsoleArgs;

pub fn run(args: ConsoleArgs) -> anyhow::Result<ExitCode> {
    // Refused before listening: a console on a store that is not there shows nothing.
    ordo_store::AnyStore::open_read_only(&args.store)?;
    let listen = crate::settings::listen_address(&args.listen);
    let listen = listen
        .parse()
        .with_context(|| format!("--listen `{listen}`: expected PORT or HOST:PORT"))?;
    if args.run_metrics.len() > ordo_console::runs::RUN_ENDPOINTS_MAX {
        anyhow::bail!(
            "at most {} --run-metrics endpoints",
            ordo_console::runs::RUN_ENDPOINTS_MAX
        );
    }
    for endpoint in &args.run_metrics {
        ordo_console::runs::check_endpoint(endpoint)
            .map_err(|why| anyhow::anyhow!("--run-metrics: {why}"))?;
    }
    let config = ordo_console::ConsoleConfig {
        run_metrics: args.run_metrics,
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
