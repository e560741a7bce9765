//! `ordo relay`: publishes the store's outbox to a broker, in order, one batch at a time.
//!
//! Each batch is handed to a [`Publisher`] (Kafka, NATS JetStream), which returns only
//! once the broker confirmed every event of it; only then is the batch marked published.
//! A crash between the confirmation and the mark publishes the batch again on restart:
//! at least once, and the consumer's dedupe (and the broker's own, where it has one)
//! absorbs the copies.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ordo_store::SqliteStore;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use crate::telemetry::Telemetry;

/// Publishes outbox rows to one broker.
pub trait Publisher {
    /// Publishes `rows` (outbox id, stream, event body), in order, and returns once the
    /// broker has confirmed every one; an error leaves the batch unpublished.
    fn publish(&mut self, rows: &[(u64, String, String)]) -> Result<(), String>;
}

/// The event id in an outbox body, for a broker's deduplication id (`Nats-Msg-Id`,
/// SQS's `MessageDeduplicationId`); none if it cannot be read: the consumer
/// dead-letters such a body anyway.
pub fn event_id(body: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    value["id"].as_str().map(String::from)
}

/// Outbox rows per batch by default.
pub const RELAY_BATCH_DEFAULT: usize = 1000;

/// How long an idle relay sleeps between looks at the outbox.
pub const IDLE_POLL_MS: u64 = 50;

/// How the relay runs.
#[derive(Clone, Debug)]
pub struct RelayOptions {
    /// Stop once the outbox is empty.
    pub exit_when_idle: bool,
    /// Rows per batch.
    pub batch: usize,
    /// Where the relay reports (`relay --metrics`): heartbeat, readiness and the
    /// `ordo_relay_*` metrics.
    pub telemetry: Option<Arc<Telemetry>>,
}

/// The relay's own metrics, added to a [`Telemetry`].
#[derive(Clone, Default)]
struct RelayMetrics {
    published: Counter,
    batches: Counter,
    backlog: Gauge,
    last_publish: Gauge<f64, AtomicU64>,
}

impl RelayMetrics {
    fn register(telemetry: &Telemetry) -> Self {
        let metrics = RelayMetrics::default();
        let shared = metrics.clone();
        telemetry.add_metrics(move |r| {
            r.register(
                "ordo_relay_published",
                "Outbox events published and marked",
                shared.published.clone(),
            );
            r.register(
                "ordo_relay_batches",
                "Outbox batches published and marked",
                shared.batches.clone(),
            );
            r.register(
                "ordo_relay_outbox_backlog",
                "Outbox events not yet published",
                shared.backlog.clone(),
            );
            r.register(
                "ordo_relay_last_publish_timestamp_seconds",
                "When the last batch was marked published (Unix time)",
                shared.last_publish.clone(),
            );
        });
        metrics
    }
}

impl Default for RelayOptions {
    fn default() -> Self {
        RelayOptions {
            exit_when_idle: false,
            batch: RELAY_BATCH_DEFAULT,
            telemetry: None,
        }
    }
}

/// What a relay run did.
#[derive(Clone, Copy, Debug, Default)]
pub struct RelayReport {
    /// Events published (and marked).
    pub published: u64,
    /// Batches.
    pub batches: u64,
}

/// Runs the relay until the outbox is empty (with `exit_when_idle`) or `stop` is set.
pub fn run(
    store: &mut SqliteStore,
    publisher: &mut dyn Publisher,
    options: &RelayOptions,
    stop: &AtomicBool,
) -> Result<RelayReport, String> {
    let telemetry = options.telemetry.as_deref();
    let metrics = telemetry.map(RelayMetrics::register);
    if let Some(telemetry) = telemetry {
        telemetry.set_ready(true);
    }
    let mut report = RelayReport::default();
    while !stop.load(Ordering::SeqCst) {
        if let (Some(telemetry), Some(metrics)) = (telemetry, &metrics) {
            telemetry.heartbeat();
            if telemetry.lag_wanted() {
                // A scrape asked: the backlog is the relay's lag (counted only then, as
                // it costs a scan of the unpublished rows).
                let backlog = store.outbox_backlog().map_err(|e| e.to_string())?;
                metrics.backlog.set(backlog as i64);
                telemetry.measured_lag(&[], &[]);
            }
        }
        let rows = store
            .outbox_unpublished(options.batch)
            .map_err(|e| e.to_string())?;
        let Some(&(last, _, _)) = rows.last() else {
            if options.exit_when_idle {
                break;
            }
            std::thread::sleep(Duration::from_millis(IDLE_POLL_MS));
            continue;
        };
        publisher.publish(&rows)?;
        report.batches += 1;
        store
            .outbox_mark_published(last)
            .map_err(|e| e.to_string())?;
        report.published += rows.len() as u64;
        if let Some(metrics) = &metrics {
            metrics.published.inc_by(rows.len() as u64);
            metrics.batches.inc();
            metrics.last_publish.set(crate::now_ms() as f64 / 1000.0);
        }
    }
    Ok(report)
}
