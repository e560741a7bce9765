//! `ordo relay`: the transactional outbox relay.

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use ordo_runtime::relay::{self, Publisher, RelayOptions};
use ordo_runtime::telemetry::{serve_in_background, Telemetry};

use crate::cli::RelayArgs;
use crate::settings::open_sqlite;

/// Environment variable that makes the relay exit after publishing (and before marking)
/// this many batches: crash tests, in a binary built with the `fault-injection` feature
/// only.
#[cfg(feature = "fault-injection")]
const CRASH_VARIABLE: &str = "ORDO_RELAY_CRASH_AFTER_BATCHES";

/// A publisher that exits the process as a crash would once its `left`-th batch is
/// published, before the relay marks it: the restart publishes that batch again.
#[cfg(feature = "fault-injection")]
struct CrashAfterBatches {
    inner: Box<dyn Publisher>,
    left: u64,
}

#[cfg(feature = "fault-injection")]
impl Publisher for CrashAfterBatches {
    fn publish(&mut self, rows: &[(u64, String, String)]) -> Result<(), String> {
        self.inner.publish(rows)?;
        self.left = self.left.saturating_sub(1);
        if self.left == 0 {
            std::process::exit(137);
        }
        Ok(())
    }
}

/// The publisher, wrapped to crash on purpose when [`CRASH_VARIABLE`] asks (never in a
/// shipped build).
fn with_fault_injection(publisher: Box<dyn Publisher>) -> Box<dyn Publisher> {
    #[cfg(feature = "fault-injection")]
    if let Some(left) = std::env::var(CRASH_VARIABLE)
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return Box::new(CrashAfterBatches {
            inner: publisher,
            left,
        });
    }
    publisher
}

pub fn run(args: RelayArgs) -> anyhow::Result<ExitCode> {
    let mut publisher = with_fault_injection(publisher(&args.to)?);
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
    };
    // The relay stops between batches: a batch is published and marked, or not marked.
    let stop = AtomicBool::new(false);
    match relay::run(&mut store, publisher.as_mut(), &options, &stop) {
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

/// The broker `--to` names: `kafka://…`, `nats://…` or `sqs://…`.
fn publisher(to: &str) -> anyhow::Result<Box<dyn Publisher>> {
    if to.starts_with("sqs://") {
        let url = ordo_sqs::SqsUrl::parse(to).map_err(anyhow::Error::msg)?;
        return Ok(Box::new(
            ordo_sqs::SqsPublisher::connect(&url).map_err(anyhow::Error::msg)?,
        ));
    }
    if to.starts_with("nats://") {
        let url = ordo_nats::NatsUrl::parse(to).map_err(anyhow::Error::msg)?;
        return Ok(Box::new(
            ordo_nats::NatsPublisher::connect(&url).map_err(anyhow::Error::msg)?,
        ));
    }
    let url = ordo_kafka::KafkaUrl::parse(to).map_err(anyhow::Error::msg)?;
    Ok(Box::new(
        ordo_kafka::relay::KafkaPublisher::connect(&url).map_err(anyhow::Error::msg)?,
    ))
}
