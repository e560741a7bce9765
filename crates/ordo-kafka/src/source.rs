//! The consumer-group source.
//!
//! Rebalances are not answered inside librdkafka's callback: the callback only records
//! them, and the run loop answers after it has applied and committed what it read
//! (librdkafka allows the assign/unassign call to come after the callback, within the
//! session timeout). So a revoked partition is released only once its work is durable,
//! and an assigned one resumes at the offset committed in ordo's store.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ordo_core::SourcePosition;
use ordo_runtime::{Delivery, Polled, Source, SourceError};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::ClientContext;

use crate::url::KafkaUrl;

/// How long to wait for the broker to answer at start before giving up with an error.
pub const BROKER_WAIT_MS: u64 = 10_000;

/// Most stale messages dropped from the consumer's queue when reading again from the
/// checkpoints (librdkafka queues at most `queued.max.messages.kbytes` of them).
pub const REWIND_DRAIN_MAX: usize = 1_000_000;

/// Default quiet time, with every assigned partition read to its end, after which an
/// `--exit-when-idle` run counts the source as drained.
pub const IDLE_MS_DEFAULT: u64 = 1_500;

#[derive(Debug)]
enum Rebalance {
    Revoke(Vec<i32>),
    Assign(Vec<i32>),
}

/// Records rebalances for the run loop instead of answering them at once.
struct GroupContext {
    topic: String,
    pending: Mutex<VecDeque<Rebalance>>,
    /// Set when the source is dropped: the consumer's close must not wait for answers
    /// nobody will give, and everything was committed before.
    closing: AtomicBool,
    /// Each partition's (low, end) offsets, from librdkafka's last statistics.
    watermarks: Mutex<BTreeMap<i32, (i64, i64)>>,
    /// Whether the last statistics saw a broker up (`/readyz`: the source is reachable).
    brokers_up: AtomicBool,
}

impl ClientContext for GroupContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        let up = statistics.brokers.values().any(|b| b.state == "UP");
        self.brokers_up.store(up, Ordering::Relaxed);
        let Some(topic) = statistics.topics.get(&self.topic) else {
            return;
        };
        let mut watermarks = self.watermarks.lock().expect("watermarks");
        for (&partition, stats) in &topic.partitions {
            // A read_committed consumer (librdkafka's default) ends at the last stable
            // offset, not the high watermark; brokers that do not report it give -1.
            let end = if stats.ls_offset >= 0 {
                stats.ls_offset
            } else {
                stats.hi_offset
            };
            // -1 is librdkafka's own unassigned partition; negative offsets: not known yet.
            if partition >= 0 && end >= 0 && stats.lo_offset >= 0 {
                watermarks.insert(partition, (stats.lo_offset, end));
            }
        }
    }
}

impl ConsumerContext for GroupContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        error: RDKafkaRespErr,
        list: &mut TopicPartitionList,
    ) {
        if self.closing.load(Ordering::SeqCst) {
            let _ = match error {
                RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => consumer.assign(list),
                _ => consumer.unassign(),
            };
            return;
        }
        let partitions: Vec<i32> = list
            .elements()
            .iter()
            .filter(|e| e.topic() == self.topic)
            .map(|e| e.partition())
            .collect();
        let event = match error {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => Rebalance::Assign(partitions),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => Rebalance::Revoke(partitions),
            // An error rebalance: treat as losing everything, then rejoin.
            _ => Rebalance::Revoke(partitions),
        };
        self.pending
            .lock()
            .expect("rebalance queue")
            .push_back(event);
    }
}

/// The group session's timeout unless the URL says otherwise (`session.timeout.ms=`).
pub const SESSION_TIMEOUT_MS_DEFAULT: u64 = 6_000;

/// How often librdkafka reports statistics (the watermarks behind the lag metrics).
pub const STATISTICS_INTERVAL_MS: u64 = 5_000;

/// `kafka://HOST:PORT/TOPIC?group=G`: one member of a consumer group.
pub struct KafkaSource {
    consumer: BaseConsumer<GroupContext>,
    topic: String,
    /// Assigned partitions, and whether each has been read to its end.
    assigned: BTreeMap<i32, bool>,
    answering: Option<Rebalance>,
    last_message: Instant,
    idle: Duration,
    /// Partitions an operator paused (whether assigned here or not).
    paused: BTreeSet<u32>,
    /// Assigned partitions librdkafka has been told to pause.
    paused_here: BTreeSet<i32>,
}

/// What one read did.
enum Read {
    /// A message, an end-of-partition mark or an error was taken.
    Went,
    /// A message of a partition no longer assigned was passed over.
    Stray,
    /// The read should stop: nothing came within the wait, or an error came with
    /// nothing read and the deadline past.
    Stop,
}

impl KafkaSource {
    /// Hands a rebalance to the run loop, which answers it with its checkpoints
    /// ([`Source::complete_rebalance`]).
    fn answer_rebalance(&mut self, rebalance: Rebalance) -> Polled {
        let polled = match &rebalance {
            Rebalance::Revoke(p) => Polled::Revoked(p.iter().map(|&p| p as u32).collect()),
            Rebalance::Assign(p) => Polled::Assigned(p.iter().map(|&p| p as u32).collect()),
        };
        self.answering = Some(rebalance);
        polled
    }

    /// Reads one message (or end-of-partition mark) into `events`.
    fn read_one(
        &mut self,
        timeout: Duration,
        deadline: Instant,
        events: &mut Vec<Delivery>,
    ) -> Read {
        match self.consumer.poll(timeout) {
            None => return Read::Stop,
            Some(Ok(message)) => {
                let partition = message.partition();
                let Some(eof) = self.assigned.get_mut(&partition) else {
                    // Fetched for an assignment that has since been taken back.
                    return Read::Stray;
                };
                *eof = false;
                self.last_message = Instant::now();
                events.push((
                    SourcePosition {
                        partition: partition as u32,
                        offset: message.offset() as u64,
                    },
                    message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    message.key().map(<[u8]>::to_vec),
                ));
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                if let Some(eof) = self.assigned.get_mut(&partition) {
                    *eof = true;
                }
            }
            Some(Err(error)) => {
                // librdkafka retries transport errors itself; report and go on.
                tracing::warn!("kafka: {error}");
                if events.is_empty() && Instant::now() >= deadline {
                    return Read::Stop;
                }
            }
        }
        Read::Went
    }

    /// Joins the group. Fails with a clear error when the broker does not answer within
    /// [`BROKER_WAIT_MS`] or the topic does not exist.
    pub fn open(url: &KafkaUrl, idle_ms: u64) -> Result<Self, SourceError> {
        let group = url
            .group
            .clone()
            .ok_or_else(|| SourceError::Broker("a Kafka source needs ?group=NAME".into()))?;
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &url.brokers)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "true")
            // A member that died is expired after this: short, so that its partitions
            // move on in seconds (`--member-id` avoids even that on a restart).
            .set("session.timeout.ms", SESSION_TIMEOUT_MS_DEFAULT.to_string())
            .set("heartbeat.interval.ms", "1000")
            .set("partition.assignment.strategy", "range")
            // The partitions' watermarks for the lag metrics (`Source::ends`), without a
            // broker call on the loop's thread.
            .set("statistics.interval.ms", STATISTICS_INTERVAL_MS.to_string());
        for (key, value) in &url.params {
            config.set(key, value);
        }
        let context = GroupContext {
            topic: url.topic.clone(),
            pending: Mutex::new(VecDeque::new()),
            closing: AtomicBool::new(false),
            watermarks: Mutex::new(BTreeMap::new()),
            brokers_up: AtomicBool::new(true),
        };
        let consumer: BaseConsumer<GroupContext> = config
            .create_with_context(context)
            .map_err(|e| SourceError::Broker(format!("cannot create a consumer: {e}")))?;
        let metadata = consumer
            .fetch_metadata(Some(&url.topic), Duration::from_millis(BROKER_WAIT_MS))
            .map_err(|e| {
                SourceError::Broker(format!(
                    "no answer from {} within {} s: {e}",
                    url.brokers,
                    BROKER_WAIT_MS / 1000
                ))
            })?;
        let exists = metadata
            .topics()
            .iter()
            .any(|t| t.name() == url.topic && t.error().is_none() && !t.partitions().is_empty());
        if !exists {
            return Err(SourceError::Broker(format!(
                "topic `{}` does not exist",
                url.topic
            )));
        }
        consumer
            .subscribe(&[&url.topic])
            .map_err(|e| SourceError::Broker(format!("cannot subscribe: {e}")))?;
        Ok(KafkaSource {
            consumer,
            topic: url.topic.clone(),
            assigned: BTreeMap::new(),
            answering: None,
            last_message: Instant::now(),
            idle: Duration::from_millis(idle_ms),
            paused: BTreeSet::new(),
            paused_here: BTreeSet::new(),
        })
    }

    /// Pauses the assigned partitions in `self.paused` and resumes the others that were
    /// paused. librdkafka drops what it fetched for a paused partition and, resumed,
    /// fetches again after the last message it handed over, so nothing is skipped.
    ///
    /// `fresh`: the assignment was just made (an assign, a rewind): librdkafka keeps a
    /// partition's pause across assignments, so every assigned partition is set to what
    /// is wanted, not only those that changed.
    fn apply_pauses(&mut self, fresh: bool) -> Result<(), SourceError> {
        let wanted: BTreeSet<i32> = self
            .assigned
            .keys()
            .copied()
            .filter(|p| self.paused.contains(&(*p as u32)))
            .collect();
        let list = |partitions: &mut dyn Iterator<Item = &i32>| {
            let mut list = TopicPartitionList::new();
            for &partition in partitions {
                list.add_partition(&self.topic, partition);
            }
            list
        };
        let (pause, resume) = if fresh {
            let others: Vec<i32> = self
                .assigned
                .keys()
                .copied()
                .filter(|p| !wanted.contains(p))
                .collect();
            (list(&mut wanted.iter()), list(&mut others.iter()))
        } else {
            (
                list(&mut wanted.difference(&self.paused_here)),
                list(&mut self.paused_here.difference(&wanted)),
            )
        };
        let broker = |what: &str, e: KafkaError| SourceError::Broker(format!("{what}: {e}"));
        if pause.count() > 0 {
            self.consumer
                .pause(&pause)
                .map_err(|e| broker("cannot pause partitions", e))?;
        }
        if resume.count() > 0 {
            self.consumer
                .resume(&resume)
                .map_err(|e| broker("cannot resume partitions", e))?;
        }
        self.paused_here = wanted;
        Ok(())
    }

    fn next_rebalance(&self) -> Option<Rebalance> {
        self.consumer
            .context()
            .pending
            .lock()
            .expect("rebalance queue")
            .pop_front()
    }
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        self.consumer
            .context()
            .closing
            .store(true, Ordering::SeqCst);
        // A revocation recorded but not answered yet would hold the close forever.
        if let Some(Rebalance::Revoke(_)) = self.answering.take() {
            let _ = self.consumer.unassign();
        }
        self.consumer.unsubscribe();
    }
}

impl Source for KafkaSource {
    fn ends(&mut self) -> Vec<ordo_runtime::telemetry::PartitionEnd> {
        // The watermarks of librdkafka's last statistics (every STATISTICS_INTERVAL_MS):
        // no broker call on the loop's thread.
        let watermarks = self
            .consumer
            .context()
            .watermarks
            .lock()
            .expect("watermarks");
        self.assigned
            .keys()
            .filter_map(|partition| {
                let &(low, high) = watermarks.get(partition)?;
                Some(ordo_runtime::telemetry::PartitionEnd {
                    partition: *partition as u32,
                    // A checkpoint is the offset of the last event read.
                    caught_up_at: (high as u64).saturating_sub(1),
                    events: high.saturating_sub(low) as u64,
                })
            })
            .collect()
    }

    fn resume(&mut self, _checkpoints: &[(u32, u64)]) {
        // Positions arrive with each assignment (complete_rebalance).
    }

    fn pause_partitions(&mut self, paused: &BTreeSet<u32>) -> Result<(), SourceError> {
        if *paused != self.paused {
            let before = std::mem::replace(&mut self.paused, paused.clone());
            if let Err(error) = self.apply_pauses(false) {
                // Tried again next turn.
                self.paused = before;
                return Err(error);
            }
        }
        Ok(())
    }

    fn reachable(&self) -> bool {
        self.consumer.context().brokers_up.load(Ordering::Relaxed)
    }

    fn poll(&mut self, max: usize, wait: Duration) -> Result<Polled, SourceError> {
        let deadline = Instant::now() + wait;
        let mut events = Vec::new();
        loop {
            if self.answering.is_none() {
                if let Some(rebalance) = self.next_rebalance() {
                    if events.is_empty() {
                        return Ok(self.answer_rebalance(rebalance));
                    }
                    // Hand over what was read first; the rebalance comes next call.
                    self.consumer
                        .context()
                        .pending
                        .lock()
                        .expect("rebalance queue")
                        .push_front(rebalance);
                    break;
                }
            }
            if events.len() >= max {
                break;
            }
            let timeout = if events.is_empty() {
                deadline.saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            match self.read_one(timeout, deadline, &mut events) {
                Read::Stop => break,
                // A message of a partition taken back: read on at once.
                Read::Stray => continue,
                Read::Went => {}
            }
            if events.is_empty() && Instant::now() >= deadline {
                break;
            }
        }
        if !events.is_empty() {
            return Ok(Polled::Events(events));
        }
        let drained = !self.assigned.is_empty()
            // A paused partition is not read to its end: `--exit-when-idle` waits for it.
            && self.paused_here.is_empty()
            && self.assigned.values().all(|&eof| eof)
            && self.last_message.elapsed() >= self.idle;
        Ok(if drained {
            Polled::Idle
        } else {
            Polled::Nothing
        })
    }

    fn complete_rebalance(&mut self, checkpoints: &[(u32, u64)]) -> Result<(), SourceError> {
        let broker = |what: &str, e: KafkaError| SourceError::Broker(format!("{what}: {e}"));
        match self.answering.take() {
            Some(Rebalance::Revoke(_)) => {
                self.assigned.clear();
                self.paused_here.clear();
                self.consumer
                    .unassign()
                    .map_err(|e| broker("cannot release partitions", e))?;
            }
            Some(Rebalance::Assign(partitions)) => {
                let mut list = TopicPartitionList::new();
                for &partition in &partitions {
                    // Resume after the offset ordo's store committed with the state.
                    let offset = checkpoints
                        .iter()
                        .find(|(p, _)| *p == partition as u32)
                        .map_or(Offset::Beginning, |(_, o)| Offset::Offset(*o as i64 + 1));
                    list.add_partition_offset(&self.topic, partition, offset)
                        .map_err(|e| broker("bad assignment", e))?;
                    self.assigned.insert(partition, false);
                }
                self.last_message = Instant::now();
                self.consumer
                    .assign(&list)
                    .map_err(|e| broker("cannot take partitions", e))?;
                self.apply_pauses(true)?;
            }
            None => {}
        }
        Ok(())
    }

    fn is_group(&self) -> bool {
        true
    }

    fn rewind(&mut self, checkpoints: &[(u32, u64)]) -> Result<(), SourceError> {
        // Unassign, then assign at the stored offsets: dropping the assignment stops the
        // fetchers and discards what they fetched, so reading resumes exactly at the
        // checkpoints. (Re-assigning without unassigning keeps a partition's fetch
        // position; seeking left partitions without fetching on tansu 0.6.)
        let mut list = TopicPartitionList::new();
        for (&partition, eof) in self.assigned.iter_mut() {
            let offset = checkpoints
                .iter()
                .find(|(p, _)| *p == partition as u32)
                .map_or(Offset::Beginning, |(_, o)| Offset::Offset(*o as i64 + 1));
            list.add_partition_offset(&self.topic, partition, offset)
                .map_err(|e| SourceError::Broker(format!("bad assignment: {e}")))?;
            *eof = false;
        }
        self.last_message = Instant::now();
        self.consumer
            .unassign()
            .map_err(|e| SourceError::Broker(format!("cannot release partitions: {e}")))?;
        // Messages fetched before the unassign may still wait in the consumer's queue;
        // handed over, they would reach the engine ahead of the offsets being read again
        // and move the checkpoint past events not yet applied. Drop them.
        let mut dropped = 0;
        while dropped < REWIND_DRAIN_MAX {
            match self.consumer.poll(Duration::ZERO) {
                Some(Ok(_)) => dropped += 1,
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(_)) | None => break,
            }
        }
        if list.count() == 0 {
            return Ok(());
        }
        self.consumer.assign(&list).map_err(|e| {
            SourceError::Broker(format!("cannot read again from the checkpoints: {e}"))
        })?;
        self.apply_pauses(true)
    }

    fn committed(&mut self, checkpoints: &[(u32, u64)]) {
        // For lag monitoring only: ordo's store holds the positions that count.
        let mut list = TopicPartitionList::new();
        for &(partition, offset) in checkpoints {
            if self.assigned.contains_key(&(partition as i32)) {
                let _ = list.add_partition_offset(
                    &self.topic,
                    partition as i32,
                    Offset::Offset(offset as i64 + 1),
                );
            }
        }
        if list.count() > 0 {
            let _ = self.consumer.commit(&list, CommitMode::Async);
        }
    }
}

/// Each partition's end of `url`'s topic, asked of the broker (for `ordo status --source`:
/// one short-lived client, no group joined, nothing committed).
pub fn partition_ends(
    url: &KafkaUrl,
) -> Result<Vec<ordo_runtime::telemetry::PartitionEnd>, String> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &url.brokers);
    for (key, value) in &url.params {
        config.set(key, value);
    }
    let consumer: BaseConsumer = config
        .create()
        .map_err(|e| format!("cannot create a client: {e}"))?;
    let wait = Duration::from_millis(BROKER_WAIT_MS);
    let metadata = consumer
        .fetch_metadata(Some(&url.topic), wait)
        .map_err(|e| {
            format!(
                "no answer from {} within {} s: {e}",
                url.brokers,
                wait.as_secs()
            )
        })?;
    let topic = metadata
        .topics()
        .iter()
        .find(|t| t.name() == url.topic)
        .ok_or_else(|| format!("topic `{}` not found", url.topic))?;
    let mut ends = Vec::new();
    for partition in topic.partitions() {
        let (low, high) = consumer
            .fetch_watermarks(&url.topic, partition.id(), wait)
            .map_err(|e| format!("partition {}: {e}", partition.id()))?;
        ends.push(ordo_runtime::telemetry::PartitionEnd {
            partition: partition.id() as u32,
            // A checkpoint is the offset of the last event read.
            caught_up_at: (high.max(0) as u64).saturating_sub(1),
            events: high.saturating_sub(low).max(0) as u64,
        });
    }
    Ok(ends)
}
