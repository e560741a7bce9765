//! ordo on NATS JetStream: [`NatsSource`], durable pull consumers (one per subject
//! partition) whose positions are stream sequences kept in ordo's store, acknowledged
//! only after the commit that made each event durable; [`NatsPublisher`], the outbox
//! relay's side, publishing with `Nats-Msg-Id`; and the partitioner both agree on
//! ([`partition_of`]).

mod partition;
mod relay;
mod source;
mod url;

pub use partition::{partition_of, subject, token, PARTITIONS_MAX};
pub use relay::NatsPublisher;
pub use source::{NatsSource, ACK_WAIT_MS, MAX_ACK_PENDING, SERVER_WAIT_MS};
pub use url::NatsUrl;
