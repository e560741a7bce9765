//! What a running consumer shows to the outside: Prometheus metrics and the two health
//! answers (`/healthz`: the loop is alive; `/readyz`: it can do its job).
//!
//! Two kinds of values, kept apart on purpose:
//! - what the store says (counters, waiting events, dead letters, their ages) is read at
//!   scrape time through a second store connection ([`StatusReader`]), so that the
//!   metrics agree with `--json`, `ordo status` and `parked list`, and the loop pays
//!   nothing for them;
//! - what only this process knows (commit durations, handler latency, the reorder
//!   histogram, rebalances, lag) is kept in atomics the loop updates as it goes, at most
//!   once per commit or per handler answer, never per event.
//!
//! No label ever holds a stream name (unbounded cardinality): partitions and decisions
//! only.

pub(crate) mod endpoint;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ordo_core::{Counters, ReorderDistances, REORDER_BUCKETS};
use ordo_store::{ReadError, StoreStatus};
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

pub use endpoint::{serve, serve_in_background, Endpoint, Serving};
/// For metrics other crates add ([`Telemetry::add_metrics`]).
pub use prometheus_client;

use crate::consumer::now_ms;

/// Default for how long the loop may go without a step, or handler calls without an
/// answer, before `/healthz` turns red.
pub const STUCK_MS_DEFAULT: u64 = 60_000;

/// How long a scrape waits for the loop to measure the source's lag before it answers
/// with the last measurement.
pub const LAG_WAIT_MS: u64 = 500;

/// Buckets of the duration histograms, each twice the one before.
pub const HISTOGRAM_BUCKETS: u16 = 16;

/// The smallest handler-latency bucket (1 ms; the largest is 32.8 s).
pub const HANDLER_LATENCY_BUCKET_MIN_S: f64 = 0.001;

/// The smallest commit-duration bucket (0.5 ms; the largest is 16.4 s).
pub const COMMIT_DURATION_BUCKET_MIN_S: f64 = 0.0005;

/// How often a scrape waiting for a lag measurement looks for it.
const LAG_POLL_MS: u64 = 5;

/// Most `(time, end)` samples kept per partition for the lag in seconds: an hour of
/// scrapes every 15 s whose every look saw the end move.
pub const LAG_SAMPLES_MAX: usize = 240;

/// Reads a store's status for a scrape (a connection of its own, never the loop's).
pub type StatusReader = Box<dyn FnMut() -> Result<StoreStatus, ReadError> + Send>;

/// A partition's end, as the source sees it: the checkpoint a consumer that has read
/// everything would have, and how many events it holds in all (the lag of a consumer
/// that has read nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionEnd {
    /// The partition.
    pub partition: u32,
    /// The checkpoint when caught up.
    pub caught_up_at: u64,
    /// Events in the partition in all (from its first retained one).
    pub events: u64,
}

type PartitionLabels = [(&'static str, u32); 1];
type DecisionLabels = [(&'static str, &'static str); 1];

/// The metrics and health of one running consumer. Shared (`Arc`) between the run loop,
/// the handler pool and the HTTP endpoint.
#[derive(Debug)]
pub struct Telemetry {
    stuck_ms: u64,
    heartbeat_ms: AtomicU64,
    ready: AtomicBool,
    source_reachable: AtomicBool,
    last_commit_ms: AtomicU64,
    lag_wanted: AtomicBool,
    lag_generation: AtomicU64,
    /// Per partition, `(when, end)` each time a measurement saw its end move, oldest
    /// first, at most [`LAG_SAMPLES_MAX`]: how long ago the end passed a position.
    lag_samples: Mutex<BTreeMap<u32, VecDeque<(u64, u64)>>>,
    events: Family<DecisionLabels, Counter>,
    deliveries: Counter,
    parked_events: Gauge,
    stalled_streams: Gauge,
    dead_letters: Gauge,
    oldest_parked_age: Gauge<f64, AtomicU64>,
    oldest_dead_letter_age: Gauge<f64, AtomicU64>,
    last_commit_timestamp: Gauge<f64, AtomicU64>,
    heartbeat_age: Gauge<f64, AtomicU64>,
    store_readable: Gauge,
    lag_events: Family<PartitionLabels, Gauge>,
    lag_seconds: Family<PartitionLabels, Gauge<f64, AtomicU64>>,
    commit_duration: Histogram,
    commit_conflicts: Counter,
    rebalances: Counter,
    reorder: Arc<ReorderHistogram>,
    handlers: Arc<HandlerTelemetry>,
    extra: ExtraMetrics,
}

/// Metrics registered by another part of ordo (the outbox relay's).
type Register = Box<dyn Fn(&mut Registry) + Send + Sync>;

/// [`Register`]s, each run on every scrape's registry.
#[derive(Default)]
struct ExtraMetrics(Mutex<Vec<Register>>);

impl std::fmt::Debug for ExtraMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExtraMetrics")
    }
}

/// What the handler pool reports: call latency, retries, and whether calls are stuck.
#[derive(Debug)]
pub struct HandlerTelemetry {
    latency: Histogram,
    retries: Counter,
    calling: Gauge,
    /// When a call last ended (answered or timed out), or calls started with none out.
    progress_ms: AtomicU64,
}

impl Default for HandlerTelemetry {
    fn default() -> Self {
        HandlerTelemetry {
            latency: Histogram::new(exponential_buckets(
                HANDLER_LATENCY_BUCKET_MIN_S,
                2.0,
                HISTOGRAM_BUCKETS,
            )),
            retries: Counter::default(),
            calling: Gauge::default(),
            progress_ms: AtomicU64::new(now_ms()),
        }
    }
}

impl HandlerTelemetry {
    /// A call attempt starts.
    pub fn call_started(&self) {
        if self.calling.inc() == 0 {
            // Nothing was out: the stuck clock starts now, not at the last answer.
            self.progress_ms.store(now_ms(), Ordering::Relaxed);
        }
    }

    /// A call attempt ended after `seconds` (an answer, or the timeout).
    pub fn call_ended(&self, seconds: f64, retried: bool) {
        self.calling.dec();
        self.latency.observe(seconds);
        if retried {
            self.retries.inc();
        }
        self.progress_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// How long calls have been out with none ending (0 when none is out).
    fn stuck_for_ms(&self, now_ms: u64) -> u64 {
        if self.calling.get() <= 0 {
            return 0;
        }
        now_ms.saturating_sub(self.progress_ms.load(Ordering::Relaxed))
    }
}

/// The reorder-distance histogram, fed by the engine's counts at each commit (one lock
/// per commit, not one observation per event).
#[derive(Debug, Default)]
struct ReorderHistogram(Mutex<ReorderDistances>);

impl TypedMetric for ReorderHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for ReorderHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let h = *self.0.lock().expect("reorder histogram");
        let buckets: Vec<(f64, u64)> = (0..REORDER_BUCKETS)
            .map(|i| {
                let bound = ReorderDistances::upper_bound(i).map_or(f64::MAX, |b| b as f64);
                (bound, h.buckets[i])
            })
            .collect();
        encoder.encode_histogram::<NoLabelSet>(h.sum as f64, h.count(), &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Health as `/healthz` answers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// The loop steps and handler calls end.
    Alive,
    /// Something is stuck; the text says what.
    Stuck(String),
}

impl Telemetry {
    /// Telemetry whose health turns red after `stuck_ms` without progress.
    pub fn new(stuck_ms: u64) -> Arc<Self> {
        assert!(stuck_ms > 0, "a zero stuck bound would always be red");
        let now = now_ms();
        Arc::new(Telemetry {
            stuck_ms,
            heartbeat_ms: AtomicU64::new(now),
            ready: AtomicBool::new(false),
            source_reachable: AtomicBool::new(true),
            last_commit_ms: AtomicU64::new(0),
            lag_wanted: AtomicBool::new(false),
            lag_generation: AtomicU64::new(0),
            lag_samples: Mutex::new(BTreeMap::new()),
            events: Family::default(),
            deliveries: Counter::default(),
            parked_events: Gauge::default(),
            stalled_streams: Gauge::default(),
            dead_letters: Gauge::default(),
            oldest_parked_age: Gauge::default(),
            oldest_dead_letter_age: Gauge::default(),
            last_commit_timestamp: Gauge::default(),
            heartbeat_age: Gauge::default(),
            store_readable: Gauge::default(),
            lag_events: Family::default(),
            lag_seconds: Family::default(),
            commit_duration: Histogram::new(exponential_buckets(
                COMMIT_DURATION_BUCKET_MIN_S,
                2.0,
                HISTOGRAM_BUCKETS,
            )),
            commit_conflicts: Counter::default(),
            rebalances: Counter::default(),
            reorder: Arc::default(),
            handlers: Arc::default(),
            extra: ExtraMetrics::default(),
        })
    }

    /// Adds metrics of another part of ordo: `register` puts its (shared) metrics into
    /// each scrape's registry.
    pub fn add_metrics(&self, register: impl Fn(&mut Registry) + Send + Sync + 'static) {
        self.extra
            .0
            .lock()
            .expect("extra metrics")
            .push(Box::new(register));
    }

    /// What the handler pool reports into.
    pub fn handlers(&self) -> Arc<HandlerTelemetry> {
        self.handlers.clone()
    }

    /// The loop stepped (called once per step: one atomic store).
    pub fn heartbeat(&self) {
        self.heartbeat_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Whether the consumer can do its job: started, and (in a group) assigned partitions.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Deliveries read.
    pub fn delivered(&self, count: u64) {
        self.deliveries.inc_by(count);
    }

    /// A commit landed after `seconds`, with the engine's reorder counts since the last.
    pub fn committed(&self, seconds: f64, reorder: &ReorderDistances) {
        self.commit_duration.observe(seconds);
        self.last_commit_ms.store(now_ms(), Ordering::Relaxed);
        if reorder.count() > 0 {
            self.reorder
                .0
                .lock()
                .expect("reorder histogram")
                .add(reorder);
        }
    }

    /// A commit was refused (another process sharing the store got there first).
    pub fn conflicted(&self) {
        self.commit_conflicts.inc();
    }

    /// Partitions were assigned or revoked.
    pub fn rebalanced(&self) {
        self.rebalances.inc();
    }

    /// Whether a scrape asked for the lag (the loop measures it at its next step).
    pub fn lag_wanted(&self) -> bool {
        self.lag_wanted.swap(false, Ordering::Relaxed)
    }

    /// The source's ends against the consumer's positions. A partition's lag in seconds is
    /// the age of the oldest event it has not consumed, as well as the measurements can
    /// tell: the time since the first measurement that saw the end past the position (a
    /// lower bound, as old as this process's first look at most; 0 when caught up).
    pub fn measured_lag(&self, ends: &[PartitionEnd], positions: &[(u32, u64)]) {
        let now = now_ms();
        let mut samples = self.lag_samples.lock().expect("lag samples");
        // Partitions no longer read here (revoked) go; the others are updated in place,
        // so that a scrape encoding meanwhile never sees a partition vanish.
        samples.retain(|&partition, _| {
            let kept = ends.iter().any(|e| e.partition == partition);
            if !kept {
                self.lag_events.remove(&[("partition", partition)]);
                self.lag_seconds.remove(&[("partition", partition)]);
            }
            kept
        });
        for end in ends {
            let position = positions.iter().find(|(p, _)| *p == end.partition);
            let lag = match position {
                Some(&(_, at)) => end.caught_up_at.saturating_sub(at),
                None => end.events,
            };
            let seen = samples.entry(end.partition).or_default();
            if seen
                .back()
                .is_none_or(|&(_, last)| last != end.caught_up_at)
            {
                if seen.len() == LAG_SAMPLES_MAX {
                    seen.pop_front();
                }
                seen.push_back((now, end.caught_up_at));
            }
            let behind_since = match position {
                _ if lag == 0 => now,
                Some(&(_, at)) => seen.iter().find(|&&(_, e)| e > at).map_or(now, |s| s.0),
                None => seen.front().map_or(now, |s| s.0),
            };
            let labels = [("partition", end.partition)];
            self.lag_events.get_or_create(&labels).set(lag as i64);
            let seconds = now.saturating_sub(behind_since) as f64 / 1000.0;
            self.lag_seconds.get_or_create(&labels).set(seconds);
        }
        self.lag_generation.fetch_add(1, Ordering::Release);
    }

    /// Health now.
    pub fn health(&self) -> Health {
        let now = now_ms();
        let idle_ms = now.saturating_sub(self.heartbeat_ms.load(Ordering::Relaxed));
        if idle_ms > self.stuck_ms {
            return Health::Stuck(format!(
                "the run loop has not stepped for {idle_ms} ms (a blocked store or source)"
            ));
        }
        let stuck_ms = self.handlers.stuck_for_ms(now);
        if stuck_ms > self.stuck_ms {
            return Health::Stuck(format!(
                "{} handler calls are out and none has ended for {stuck_ms} ms",
                self.handlers.calling.get()
            ));
        }
        Health::Alive
    }

    /// Whether the loop said it is ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// What the source says of its reachability (the loop passes it on at every step).
    pub fn set_source_reachable(&self, reachable: bool) {
        self.source_reachable.store(reachable, Ordering::Relaxed);
    }

    /// Whether the source was reachable at the loop's last step.
    pub fn source_reachable(&self) -> bool {
        self.source_reachable.load(Ordering::Relaxed)
    }

    /// Sets what the store says (a scrape just read it).
    fn set_status(&self, status: &StoreStatus) {
        let now = now_ms();
        set_counters(&self.events, &status.counters);
        self.parked_events.set(status.waiting() as i64);
        self.stalled_streams.set(status.counters.stalled as i64);
        self.dead_letters.set(status.dead_letters as i64);
        let age = |at: Option<u64>| at.map_or(0.0, |at| now.saturating_sub(at) as f64 / 1000.0);
        self.oldest_parked_age.set(age(status.oldest_waiting_ms));
        self.oldest_dead_letter_age
            .set(age(status.oldest_dead_letter_ms));
        // This process's own last commit; before it made one, the store's.
        let last_ms = match self.last_commit_ms.load(Ordering::Relaxed) {
            0 => status.last_commit_ms().unwrap_or(0),
            ms => ms,
        };
        self.last_commit_timestamp.set(last_ms as f64 / 1000.0);
    }

    /// The Prometheus registry, built once per scrape (cheap: handles are shared).
    fn registry(&self) -> Registry {
        let mut r = Registry::default();
        self.register_store_backed(&mut r);
        self.register_loop(&mut r);
        self.register_handlers(&mut r);
        for register in self.extra.0.lock().expect("extra metrics").iter() {
            register(&mut r);
        }
        r
    }

    /// What a scrape reads from the store: the run counters and what waits.
    fn register_store_backed(&self, r: &mut Registry) {
        r.register(
            "ordo_events",
            "Delivered events by the decision taken (the run counters; same as --json)",
            self.events.clone(),
        );
        r.register(
            "ordo_deliveries",
            "Deliveries read by this process",
            self.deliveries.clone(),
        );
        r.register(
            "ordo_parked_events",
            "Events waiting on a gap or a dependency (what `parked list` shows)",
            self.parked_events.clone(),
        );
        r.register(
            "ordo_stalled_streams",
            "Streams stalled on a gap older than the gap timeout",
            self.stalled_streams.clone(),
        );
        r.register(
            "ordo_dead_letters",
            "Entries in the dead-letter queue",
            self.dead_letters.clone(),
        );
        r.register(
            "ordo_oldest_parked_age_seconds",
            "Age of the oldest waiting event (0: none)",
            self.oldest_parked_age.clone(),
        );
        r.register(
            "ordo_oldest_dead_letter_age_seconds",
            "Age of the oldest dead letter (0: none)",
            self.oldest_dead_letter_age.clone(),
        );
        r.register(
            "ordo_last_commit_timestamp_seconds",
            "When the last commit landed (Unix time)",
            self.last_commit_timestamp.clone(),
        );
        r.register(
            "ordo_store_readable",
            "1 when this scrape read the store; 0 when it could not (the store-backed values are the last read)",
            self.store_readable.clone(),
        );
    }

    /// What the run loop measures as it goes: deliveries, lag, commits, rebalances,
    /// reordering.
    fn register_loop(&self, r: &mut Registry) {
        r.register(
            "ordo_loop_heartbeat_age_seconds",
            "Time since the run loop last stepped",
            self.heartbeat_age.clone(),
        );
        r.register(
            "ordo_source_lag_events",
            "Events in the source beyond this consumer's position, per partition",
            self.lag_events.clone(),
        );
        r.register(
            "ordo_source_lag_seconds",
            "How long each partition has been behind (0: caught up)",
            self.lag_seconds.clone(),
        );
        r.register(
            "ordo_commit_duration_seconds",
            "Time one commit transaction took",
            self.commit_duration.clone(),
        );
        r.register(
            "ordo_commit_conflicts",
            "Commits refused because another process sharing the store got there first",
            self.commit_conflicts.clone(),
        );
        r.register(
            "ordo_rebalances",
            "Partition assignments and revocations",
            self.rebalances.clone(),
        );
        r.register(
            "ordo_reorder_distance",
            "How many versions ahead of its stream's next one an event arrived (events that arrived ahead of a gap)",
            ArcMetric(self.reorder.clone()),
        );
    }

    /// The handler pool's calls.
    fn register_handlers(&self, r: &mut Registry) {
        r.register(
            "ordo_handler_latency_seconds",
            "Time one handler call took (answer or timeout)",
            self.handlers.latency.clone(),
        );
        r.register(
            "ordo_handler_retries",
            "Handler calls answered retryable or timed out",
            self.handlers.retries.clone(),
        );
        r.register(
            "ordo_handler_calls_in_flight",
            "Handler calls out now",
            self.handlers.calling.clone(),
        );
    }

    /// The metrics as Prometheus text, with what the store said (`None`: it could not be
    /// read, and `ordo_store_readable` says so).
    pub fn encode(&self, status: Option<&StoreStatus>) -> String {
        // A failed read leaves the store-backed values as last read: say so.
        self.store_readable.set(i64::from(status.is_some()));
        if let Some(status) = status {
            self.set_status(status);
        }
        let now = now_ms();
        let heartbeat = self.heartbeat_ms.load(Ordering::Relaxed);
        self.heartbeat_age
            .set(now.saturating_sub(heartbeat) as f64 / 1000.0);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry())
            .expect("writing to a String does not fail");
        text
    }

    /// Asks the loop for a lag measurement and waits for it (at most [`LAG_WAIT_MS`]).
    async fn refresh_lag(&self) {
        let before = self.lag_generation.load(Ordering::Acquire);
        self.lag_wanted.store(true, Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(LAG_WAIT_MS);
        while self.lag_generation.load(Ordering::Acquire) == before
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(LAG_POLL_MS)).await;
        }
    }
}

fn set_counters(family: &Family<DecisionLabels, Counter>, counters: &Counters) {
    for (name, value) in counters.fields() {
        if name == "stalled" {
            // Streams stalled now, not a count of events: it goes down when a gap fills,
            // which a counter must not. It is `ordo_stalled_streams`.
            continue;
        }
        // Absolute: the store's counters are the source of truth (and the same as --json).
        family
            .get_or_create(&[("decision", name)])
            .inner()
            .store(value, Ordering::Relaxed);
    }
}

/// A shared metric registered by handle.
#[derive(Debug)]
struct ArcMetric(Arc<ReorderHistogram>);

impl EncodeMetric for ArcMetric {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        ReorderHistogram::TYPE
    }
}
