//! `ordo relay`: the transactional outbox relay.

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use ordo_kafka::relay::{self, RelayOptions};
use ordo_kafka::KafkaUrl;
use ordo_runtime::telemetry::{serve_in_background, Telemetry};

use crate::cli::RelayArgs;
use crate::settings::open_sqlite;

/// Environment variable that makes the relay exit after publishing (and before marking)
/// this many batches (tests only).
const CRASH_VARIABLE: &str = "ORDO_RELAY_CRASH_AFTER_BATCHES";

pub fn run(args: RelayArgs) -> anyhow::Result<ExitCode> {
    let url = KafkaUrl::parse(&args.to).map_err(anyhow::Error::msg)?;
    anyhow::ensure!(args.batch > 0, "--batch must be at least 1");
    anyhow::ensure!(
        args.health_stuck_ms > 0,
        "--health-stuck-ms must be at least 1"
    );
    let mut store = open_sqlite(&args.store, false)?;
    store.acquire_lease("ordo relay")?;
    let telemetry = args
        .metrics
        .as_ref()
        .map(|_| Telemetry::new(args.health_stuck_ms));
    let _serving = match (&args.metrics, &telemetry) {
        (Some(address), Some(telemetry)) => Some(serve_in_background(crate::run::endpoint(
            address,
            &args.store,
            telemetry,
        )?)),
        _ => None,
    };
    let options = RelayOptions {
        telemetry,
        exit_when_idle: args.exit_when_idle,
        batch: args.batch,
        crash_after_published_batches: std::env::var(CRASH_VARIABLE)
            .ok()
            .and_then(|v| v.parse().ok()),
    };
    // The relay stops between batches: a batch is published and marked, or not marked.
    let stop = AtomicBool::new(false);
    match relay::run(&mut store, &url, &options, &stop) {
        Ok(report) => {
            tracing::info!(
                "relay: published {} events in {} batches",
                report.published,
                report.batches
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            tracing::error!("relay: {error}");
            Ok(ExitCode::from(1))
        }
    }
}
