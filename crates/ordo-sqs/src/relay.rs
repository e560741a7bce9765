//! The outbox relay's SQS side: each event is sent with `MessageGroupId` = its stream and
//! `MessageDeduplicationId` = its event id (FIFO queues; a standard queue takes neither),
//! in `SendMessageBatch` calls made one after another, so that a group's messages reach
//! SQS in outbox order. The batch counts as published once SQS took every entry; a batch
//! sent again after a crash between that and the mark is dropped by the queue's
//! five-minute deduplication window, and beyond it by the consumer's dedupe.

use ordo_runtime::relay::{event_id, Publisher};

use crate::client::{Outgoing, SqsClient, BATCH_ENTRIES_MAX};
use crate::credentials::CredentialChain;
use crate::url::SqsUrl;

/// Most bytes of bodies in one `SendMessageBatch` (SQS refuses a batch over 256 KiB).
pub const SEND_BATCH_BYTES_MAX: usize = 256 * 1024;

/// Publishes outbox batches to one queue.
pub struct SqsPublisher {
    runtime: tokio::runtime::Runtime,
    client: SqsClient,
    queue: String,
    fifo: bool,
}

impl SqsPublisher {
    /// Finds the queue.
    pub fn connect(url: &SqsUrl) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the SQS client's runtime: {e}"))?;
        let client = SqsClient::new(&url.endpoint, &url.region, CredentialChain::from_process())
            .map_err(|e| format!("SQS client: {e}"))?;
        let queue = runtime
            .block_on(client.queue_url(&url.queue))
            .map_err(|e| format!("queue `{}`: {e}", url.queue))?;
        Ok(SqsPublisher {
            runtime,
            client,
            queue,
            fifo: url.fifo(),
        })
    }
}

/// Rows cut into batches SQS takes: at most ten entries and
/// [`SEND_BATCH_BYTES_MAX`] bytes each (a body larger than that alone is a batch of one,
/// which SQS refuses with its own words).
fn batches(rows: &[(u64, String, String)]) -> Vec<&[(u64, String, String)]> {
    let mut cut = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (index, (_, _, body)) in rows.iter().enumerate() {
        let full = index - start == BATCH_ENTRIES_MAX || bytes + body.len() > SEND_BATCH_BYTES_MAX;
        if full && index > start {
            cut.push(&rows[start..index]);
            start = index;
            bytes = 0;
        }
        bytes += body.len();
    }
    if start < rows.len() {
        cut.push(&rows[start..]);
    }
    cut
}

impl Publisher for SqsPublisher {
    fn publish(&mut self, rows: &[(u64, String, String)]) -> Result<(), String> {
        for batch in batches(rows) {
            // A body without an event id (the consumer dead-letters it) still gets an id
            // that is the same each time its row is sent: its outbox id.
            let ids: Vec<String> = batch
                .iter()
                .map(|(row, _, body)| event_id(body).unwrap_or_else(|| format!("outbox-{row}")))
                .collect();
            let outgoing: Vec<Outgoing<'_>> = batch
                .iter()
                .zip(&ids)
                .map(|((_, stream, body), id)| Outgoing {
                    body,
                    group_id: self.fifo.then_some(stream.as_str()),
                    deduplication_id: self.fifo.then_some(id.as_str()),
                })
                .collect();
            let refused = self
                .runtime
                .block_on(self.client.send(&self.queue, &outgoing))
                .map_err(|e| format!("cannot send to `{}`: {e}", self.queue))?;
            if let Some(first) = refused.first() {
                let row = batch.get(first.index).map_or(0, |r| r.0);
                return Err(format!(
                    "SQS refused outbox row {row} ({} of {} in its batch): {}: {}",
                    refused.len(),
                    batch.len(),
                    first.code,
                    first.message
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(sizes: &[usize]) -> Vec<(u64, String, String)> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, n)| (i as u64, "s".to_string(), "x".repeat(*n)))
            .collect()
    }

    #[test]
    fn batches_keep_to_sqs_limits_and_order() {
        let small = rows(&[10; 25]);
        let lengths: Vec<usize> = batches(&small).iter().map(|b| b.len()).collect();
        assert_eq!(lengths, vec![10, 10, 5]);
        let big = rows(&[200 * 1024, 100 * 1024, 10, 300 * 1024, 1]);
        let lengths: Vec<usize> = batches(&big).iter().map(|b| b.len()).collect();
        assert_eq!(lengths, vec![1, 2, 1, 1]);
        let flat: Vec<u64> = batches(&big).concat().iter().map(|r| r.0).collect();
        assert_eq!(flat, vec![0, 1, 2, 3, 4]);
        assert!(batches(&[]).is_empty());
    }

    #[test]
    fn deduplication_ids_are_event_ids() {
        assert_eq!(
            event_id(r#"{"id":"e1","stream":"s"}"#).as_deref(),
            Some("e1")
        );
        assert_eq!(event_id("not json"), None);
    }
}
