//! ordo on Kafka.
//!
//! - [`KafkaSource`]: a consumer-group member whose positions live in ordo's store,
//!   committed in the same transaction as the state (the broker gets a copy only for lag
//!   monitoring). Assignments resume at the stored offsets; revocations wait until what
//!   was read is applied and committed.
//! - [`relay`]: the transactional outbox relay, publishing what applications wrote to
//!   the store's outbox, keyed by stream, in order, with an idempotent producer.

pub mod relay;
mod source;
mod url;

pub use source::{partition_ends, KafkaSource, BROKER_WAIT_MS, IDLE_MS_DEFAULT};
pub use url::KafkaUrl;
