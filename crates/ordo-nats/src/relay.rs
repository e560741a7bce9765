//! The outbox relay's NATS side: each event is published to JetStream on
//! `PREFIX.<stream>` (`PREFIX.<partition>.<stream>` with `partitions=N`, see
//! [`crate::partition`]) with `Nats-Msg-Id` set to its event id, and the batch counts as
//! published once the server acknowledged every event (the loop is
//! [`ordo_runtime::relay`]'s). A batch published again after a crash between the acks
//! and the mark is dropped by the stream's duplicate window (two minutes by default),
//! and beyond it by the consumer's dedupe.

use std::time::Duration;

use ordo_runtime::relay::{event_id, Publisher};

use crate::partition::subject;
use crate::url::NatsUrl;

/// Events published before their acks are awaited.
const PUBLISH_WINDOW: usize = 256;

/// Publishes outbox batches to one JetStream stream.
pub struct NatsPublisher {
    runtime: tokio::runtime::Runtime,
    context: async_nats::jetstream::Context,
    prefix: String,
    /// `partitions=N`: published on `PREFIX.<partition>.<stream>`.
    partitions: u32,
}

impl NatsPublisher {
    /// Connects and checks that the stream exists and takes `PREFIX.>`.
    pub fn connect(url: &NatsUrl) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the NATS client's runtime: {e}"))?;
        let wait = Duration::from_millis(crate::SERVER_WAIT_MS);
        let prefix = url
            .prefix
            .clone()
            .unwrap_or_else(|| url.stream.to_lowercase());
        let context = runtime.block_on(async {
            let client = async_nats::ConnectOptions::new()
                .connection_timeout(wait)
                .connect(&url.server)
                .await
                .map_err(|e| format!("no answer from {}: {e}", url.server))?;
            let context = async_nats::jetstream::new(client);
            let mut stream = tokio::time::timeout(wait, context.get_stream(&url.stream))
                .await
                .map_err(|_| format!("stream `{}`: no answer", url.stream))?
                .map_err(|e| format!("stream `{}`: {e}", url.stream))?;
            let subjects = &stream
                .info()
                .await
                .map_err(|e| format!("stream `{}`: {e}", url.stream))?
                .config
                .subjects;
            let wanted = format!("{prefix}.>");
            if !subjects.iter().any(|s| s == &wanted || s == ">") {
                return Err(format!(
                    "stream `{}` takes {subjects:?}, not `{wanted}` (set ?prefix=)",
                    url.stream
                ));
            }
            Ok(context)
        })?;
        Ok(NatsPublisher {
            runtime,
            context,
            prefix,
            partitions: url.partitions,
        })
    }
}

impl Publisher for NatsPublisher {
    fn publish(&mut self, rows: &[(u64, String, String)]) -> Result<(), String> {
        let wait = Duration::from_millis(crate::SERVER_WAIT_MS);
        self.runtime.block_on(async {
            for window in rows.chunks(PUBLISH_WINDOW) {
                let mut acks = Vec::with_capacity(window.len());
                for (_, stream, body) in window {
                    let subject = subject(&self.prefix, self.partitions, stream);
                    let mut headers = async_nats::HeaderMap::new();
                    if let Some(id) = event_id(body) {
                        headers.insert("Nats-Msg-Id", id.as_str());
                    }
                    let ack = self
                        .context
                        .publish_with_headers(subject, headers, body.clone().into())
                        .await
                        .map_err(|e| format!("cannot publish: {e}"))?;
                    acks.push(ack);
                }
                for ack in acks {
                    tokio::time::timeout(wait, ack)
                        .await
                        .map_err(|_| "the server did not confirm within 10 s".to_string())?
                        .map_err(|e| format!("the server refused: {e}"))?;
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_and_message_ids_come_from_the_event() {
        assert_eq!(
            event_id(r#"{"id":"e1","stream":"s"}"#).as_deref(),
            Some("e1")
        );
        assert_eq!(event_id("not json"), None);
    }
}
