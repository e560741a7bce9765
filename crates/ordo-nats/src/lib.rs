//! ordo on NATS JetStream: [`NatsSource`], a durable pull consumer whose positions are
//! stream sequences kept in ordo's store, acknowledged only after the commit that made
//! each event durable; and [`NatsPublisher`], the outbox relay's side, publishing with
//! `Nats-Msg-Id`.

mod relay;
mod source;
mod url;

pub use relay::NatsPublisher;
pub use source::{NatsSource, ACK_WAIT_MS, MAX_ACK_PENDING, SERVER_WAIT_MS};
pub use url::NatsUrl;
