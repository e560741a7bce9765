//! Slow handlers: many streams' handlers at once, each stream's events still in order.
//!
//! The engine hands out at most one work per stream (and per document), so a pool of
//! asynchronous handlers may run up to `concurrency` works at once without ever running
//! two events of one stream together or out of order: the Confluent Parallel Consumer's
//! key-ordered mode, decided by the same core the simulator checks. Use it when a handler
//! waits on something slow (an HTTP call, another database); the built-in document
//! projection is microseconds and runs on the loop thread instead ([`crate::run`]).

use std::future::Future;

use ordo_core::{Engine, Outcome, SourcePosition, Work};
use tokio::task::JoinSet;

/// Deliveries handed to the engine ahead of the handlers (bounds the engine's buffers:
/// a single hot stream may hold at most this many).
pub const DELIVERED_AHEAD_MAX: usize = 1_000;

/// What [`apply_concurrently`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HandlerReport {
    /// Works whose handler finished.
    pub finished: u64,
    /// Most handlers running at once.
    pub concurrency_peak: usize,
}

/// Delivers `deliveries` to `engine` (at most [`DELIVERED_AHEAD_MAX`] ahead of the
/// handlers) and runs `handler` on every work the engine releases, up to `concurrency` at
/// once, until everything delivered is finished or waits. Call inside a tokio runtime.
///
/// `handler` gets the work and must give it back with its outcome: the engine needs the
/// work to settle its offset and release the stream's next event.
pub async fn apply_concurrently<H, F>(
    engine: &mut Engine,
    deliveries: impl IntoIterator<Item = (SourcePosition, Vec<u8>)>,
    concurrency: usize,
    now_ms: impl Fn() -> u64,
    mut handler: H,
) -> HandlerReport
where
    H: FnMut(Work) -> F,
    F: Future<Output = (Work, Outcome)> + Send + 'static,
{
    assert!(concurrency >= 1, "at least one handler at a time");
    let mut deliveries = deliveries.into_iter().peekable();
    let mut running = JoinSet::new();
    let mut report = HandlerReport::default();
    let mut delivered = 0u64;
    loop {
        while delivered - report.finished < DELIVERED_AHEAD_MAX as u64 {
            let Some((position, bytes)) = deliveries.next() else {
                break;
            };
            engine.handle_bytes(now_ms(), Some(position), &bytes);
            delivered += 1;
        }
        while running.len() < concurrency {
            match engine.poll_work(now_ms()) {
                Some(work) => {
                    running.spawn(handler(work));
                }
                None => break,
            }
        }
        report.concurrency_peak = report.concurrency_peak.max(running.len());
        match running.join_next().await {
            Some(joined) => {
                let (work, outcome) = joined.expect("a handler task does not panic");
                engine.handle_outcome(now_ms(), work, outcome);
                report.finished += 1;
            }
            // Nothing running and nothing released: the rest waits (or nothing is left).
            None if deliveries.peek().is_none() => break,
            None => {
                // Everything delivered so far waits (a gap, a dependency): deliver more.
                if delivered - report.finished >= DELIVERED_AHEAD_MAX as u64 {
                    break;
                }
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    #[test]
    fn slow_handlers_overlap_across_streams_but_never_within_one() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let mut engine = Engine::new(ordo_core::Config::default());
        let deliveries: Vec<(SourcePosition, Vec<u8>)> = (0..200u64)
            .map(|i| {
                let stream = format!("k{}", i % 20);
                let version = i / 20 + 1;
                let body = format!(
                    r#"{{"id":"e{i}","stream":"{stream}","version":{version},"type":"T","op":"incr","data":{{"n":1}}}}"#
                );
                (
                    SourcePosition {
                        partition: 0,
                        offset: i,
                    },
                    body.into_bytes(),
                )
            })
            .collect();
        let finished: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
        let log = finished.clone();
        let report = runtime.block_on(apply_concurrently(
            &mut engine,
            deliveries,
            8,
            || 0,
            move |work| {
                let log = log.clone();
                async move {
                    // Later versions finish faster: without ordering they would overtake.
                    let delay = 4u64.saturating_sub(work.event.version % 4);
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    log.lock()
                        .unwrap()
                        .push((work.event.stream.to_string(), work.event.version));
                    (work, Outcome::Applied)
                }
            },
        ));
        assert_eq!(report.finished, 200);
        assert_eq!(report.concurrency_peak, 8);
        let finished = finished.lock().unwrap();
        for stream in 0..20 {
            let versions: Vec<u64> = finished
                .iter()
                .filter(|(s, _)| *s == format!("k{stream}"))
                .map(|(_, v)| *v)
                .collect();
            assert_eq!(versions, (1..=10).collect::<Vec<_>>(), "k{stream} in order");
        }
        assert!(engine.is_settled());
    }
}
