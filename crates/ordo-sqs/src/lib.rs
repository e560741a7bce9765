//! ordo on Amazon SQS, FIFO and standard queues: [`SqsSource`], long-polling receives
//! whose messages are deleted only after the commit that made each event durable, their
//! visibility extended until then; [`SqsPublisher`], the outbox relay's side, sending
//! with `MessageGroupId` = stream and `MessageDeduplicationId` = event id.
//!
//! The client is this crate's own: SQS's JSON protocol over the hyper client ordo already
//! has, signed with Signature Version 4 ([`sigv4`]), keys from the AWS default chain
//! ([`credentials`]). The AWS SDK would add some two hundred crates to a build on two
//! cores for the five calls ordo makes.

mod client;
pub mod credentials;
mod http;
mod relay;
pub mod sigv4;
mod source;
mod url;

pub use client::{
    Message, Outgoing, Refused, SqsClient, SqsError, ATTEMPTS_MAX, BATCH_ENTRIES_MAX,
};
pub use http::{Http, HttpError};
pub use relay::{SqsPublisher, SEND_BATCH_BYTES_MAX};
pub use source::{SqsSource, GROUP_VISIBILITY_TIMEOUT_S_MIN, OUTSTANDING_MAX};
pub use url::SqsUrl;
