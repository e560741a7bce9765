//! The outbox relay's Kafka side: each batch is sent with an idempotent producer
//! (`enable.idempotence=true`, `acks=all`: no duplicates or reordering from the
//! producer's own retries), keyed by stream, and flushed before it counts as published
//! (the loop is [`ordo_runtime::relay`]'s).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ordo_runtime::relay::Publisher;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;

use crate::url::KafkaUrl;

/// Longest wait for a batch's deliveries.
pub const FLUSH_TIMEOUT_MS: u64 = 30_000;

struct DeliveryCounter {
    failed: AtomicU64,
}

impl ClientContext for DeliveryCounter {}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _opaque: ()) {
        if let Err((error, _)) = result {
            tracing::error!("relay: delivery failed: {error}");
            self.failed.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Publishes outbox batches to one Kafka topic.
pub struct KafkaPublisher {
    producer: BaseProducer<DeliveryCounter>,
    topic: String,
}

impl KafkaPublisher {
    /// Creates the producer and checks that the broker answers.
    pub fn connect(url: &KafkaUrl) -> Result<Self, String> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &url.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "30000");
        for (key, value) in &url.params {
            config.set(key, value);
        }
        let producer: BaseProducer<DeliveryCounter> = config
            .create_with_context(DeliveryCounter {
                failed: AtomicU64::new(0),
            })
            .map_err(|e| format!("cannot create a producer: {e}"))?;
        producer
            .client()
            .fetch_metadata(
                Some(&url.topic),
                Duration::from_millis(crate::BROKER_WAIT_MS),
            )
            .map_err(|e| {
                format!(
                    "no answer from {} within {} s: {e}",
                    url.brokers,
                    crate::BROKER_WAIT_MS / 1000
                )
            })?;
        Ok(KafkaPublisher {
            producer,
            topic: url.topic.clone(),
        })
    }
}

impl Publisher for KafkaPublisher {
    fn publish(&mut self, rows: &[(u64, String, String)]) -> Result<(), String> {
        for (_, stream, body) in rows {
            let mut record = BaseRecord::to(&self.topic)
                .key(stream.as_str())
                .payload(body.as_str());
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                        record = returned;
                        self.producer.poll(Duration::from_millis(10));
                    }
                    Err((error, _)) => return Err(format!("cannot send: {error}")),
                }
            }
        }
        self.producer
            .flush(Duration::from_millis(FLUSH_TIMEOUT_MS))
            .map_err(|e| {
                format!(
                    "deliveries not confirmed within {} s: {e}",
                    FLUSH_TIMEOUT_MS / 1000
                )
            })?;
        let failed = self.producer.context().failed.swap(0, Ordering::SeqCst);
        if failed > 0 {
            return Err(format!(
                "{failed} deliveries failed; the batch stays unpublished and will be sent again"
            ));
        }
        Ok(())
    }
}
