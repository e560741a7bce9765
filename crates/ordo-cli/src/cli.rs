//! The raw command line, exactly as typed. Verbs turn it into resolved settings.

use clap::{Args, Parser, Subcommand};

/// ordo: an order-surviving event consumer.
#[derive(Debug, Parser)]
#[command(name = "ordo", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Logs as human lines (text) or one JSON object per line with a timestamp (json), on
    /// stderr; any verb. `ORDO_LOG` sets the level (error, warn, info, debug, trace).
    #[arg(long, global = true, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

const APPEND_HELP: &str = "Examples:
  ordo append --log events.db events.jsonl
  cat events.jsonl | ordo append --log events.db

Events are JSON lines, for example:
  {\"id\":\"e1\",\"stream\":\"account-1\",\"version\":1,\"type\":\"Opened\",\"op\":\"set\",\"data\":{\"balance\":0}}
  {\"id\":\"e2\",\"stream\":\"account-1\",\"version\":2,\"type\":\"Deposited\",\"op\":\"incr\",\"data\":{\"balance\":100}}";

const RUN_HELP: &str = "Examples:
  ordo run --source file:events.jsonl --store sqlite:state.db --exit-when-idle --json
  ordo run --source log:events.db --store sqlite:state.db --metrics 9464
  ordo run --source log:events.db --store sqlite:state.db --handler http://127.0.0.1:8080/events
  ordo run --source 'kafka://127.0.0.1:9092/orders?group=inventory' --store postgres://ordo@127.0.0.1:5432/ordo

Events are JSON lines, for example:
  {\"id\":\"e1\",\"stream\":\"account-1\",\"version\":1,\"type\":\"Opened\",\"op\":\"set\",\"data\":{\"balance\":0}}
  {\"id\":\"p1\",\"stream\":\"product-1\",\"version\":1,\"type\":\"ProductAdded\",\"op\":\"set\",\"data\":{\"name\":\"lamp\"},\"after\":[{\"stream\":\"category-1\",\"version\":1}]}";

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the field scenarios through injected disorder on the embedded log and SQLite,
    /// and check them against the in-order oracle.
    #[command(
        after_help = "Examples:\n  ordo demo\n  ordo demo --keep /tmp/ordo-demo   (keeps the logs and stores to look at)"
    )]
    Demo(DemoArgs),
    /// Consume a source into a store.
    #[command(after_help = RUN_HELP)]
    Run(RunArgs),
    /// Append JSONL events to the embedded event log, as given.
    #[command(after_help = APPEND_HELP)]
    Append(AppendArgs),
    /// Print every stream's state as JSONL, sorted by stream.
    #[command(after_help = "Example:\n  ordo export --store sqlite:state.db | jq .")]
    Export(StoreArgs),
    /// The dead-letter queue.
    Dlq {
        /// What to do with it.
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Events waiting on a gap or a dependency.
    Parked {
        /// What to do with them.
        #[command(subcommand)]
        command: ParkedCommand,
    },
    /// Hold one stream's events (they wait, durable, while others go on), or stop
    /// reading one source partition, until `ordo resume`; recorded with its reason.
    #[command(
        after_help = "Examples:\n  ordo pause --store sqlite:state.db --stream account-2 --reason \"ledger fix in progress (INC-42)\"\n  ordo pause --store postgres://ordo@127.0.0.1:5432/ordo --partition 3 --reason \"broker maintenance\""
    )]
    Pause(PauseArgs),
    /// Undo `ordo pause`: the stream's waiting events go on in order, or reading the
    /// partition goes on from its position.
    #[command(
        after_help = "Example:\n  ordo resume --store sqlite:state.db --stream account-2 --reason \"INC-42 fixed\""
    )]
    Resume(PauseArgs),
    /// The durable journal: late-after-merge, stalls, dead letters, conflicts, operator
    /// actions (who, when, why), newest last.
    #[command(
        after_help = "Examples:\n  ordo notices --store sqlite:state.db --since 2h\n  ordo notices --store sqlite:state.db --kind stalled --json"
    )]
    Notices(NoticesArgs),
    /// One screen: counters, positions and lag, waiting events and dead letters with
    /// their oldest ages, the longest-waiting streams and what each waits for.
    #[command(
        after_help = "Examples:\n  ordo status --store sqlite:state.db\n  ordo status --store postgres://ordo@127.0.0.1:5432/ordo --json\n  ordo status --store sqlite:state.db --source 'kafka://127.0.0.1:9092/orders?group=inventory'"
    )]
    Status(StatusArgs),
    /// The operator's web console: what waits and why, dead letters, one stream
    /// explained, the journal (loopback by default).
    #[command(
        after_help = "Examples:\n  ordo console --store sqlite:state.db            (then open http://127.0.0.1:8480/)\n  ORDO_CONSOLE_TOKEN=$(openssl rand -hex 16) ordo console --store postgres://ordo@db/ordo --listen 0.0.0.0:8480 --redact email"
    )]
    Console(ConsoleArgs),
    /// Publish the store's outbox to Kafka, keyed by stream, in order.
    #[command(
        after_help = "Example:\n  ordo relay --store sqlite:app.db --to kafka://127.0.0.1:9092/events"
    )]
    Relay(RelayArgs),
    /// Deterministic disorder simulation against the in-order oracle.
    #[command(
        after_help = "Examples:\n  ordo chaos --seeds 300\n  ordo chaos --scenario merges --seed 17   (one seed, with its trace)"
    )]
    Chaos(ChaosArgs),
    /// Run the performance suite; every figure is a ratio against a same-run baseline.
    #[command(
        after_help = "Examples:\n  ordo bench --quick\n  ordo bench --json --plot slow_handlers.svg"
    )]
    Bench(BenchArgs),
}

/// `ordo status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The store.
    #[arg(long)]
    pub store: String,
    /// The source the consumer reads, to measure lag where the store alone cannot: a
    /// Kafka topic (kafka://HOST:PORT/TOPIC?group=G). `log:` sources need no flag.
    #[arg(long)]
    pub source: Option<String>,
    /// One JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `ordo console`.
#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// The store.
    #[arg(long)]
    pub store: String,
    /// Where to listen: a port (loopback) or HOST:PORT; anything but loopback needs a
    /// token.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8480")]
    pub listen: String,
    /// The token every request must carry (at least 16 characters); also
    /// ORDO_CONSOLE_TOKEN.
    #[arg(long, env = "ORDO_CONSOLE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A payload field shown as [redacted] wherever it appears (repeatable).
    #[arg(long, value_name = "FIELD")]
    pub redact: Vec<String>,
    /// How often the console samples the counters for the Overview's rates and
    /// sparklines (an hour of samples is kept).
    #[arg(long, value_name = "MS", default_value_t = ordo_console::history::HISTORY_SAMPLE_MS_DEFAULT)]
    pub history_sample_ms: u64,
    /// A running `ordo run --metrics` endpoint (http://HOST:PORT), read for the loop's
    /// heartbeat, readiness and the source's lag per partition (repeatable: one per
    /// member of a group).
    #[arg(long, value_name = "URL")]
    pub run_metrics: Vec<String>,
}

/// `ordo notices`.
#[derive(Debug, Args)]
pub struct NoticesArgs {
    /// The store.
    #[arg(long)]
    pub store: String,
    /// Only this stream's entries.
    #[arg(long)]
    pub stream: Option<String>,
    /// Only this kind: late-after-merge, stalled, dead-lettered, conflict, operator.
    #[arg(long)]
    pub kind: Option<String>,
    /// Only entries from this time on: a duration back from now (`90s`, `15m`, `2h`,
    /// `3d`) or milliseconds since the epoch.
    #[arg(long, value_name = "T")]
    pub since: Option<String>,
    /// The newest N entries at most (0: all).
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub limit: u64,
    /// One JSON object per entry.
    #[arg(long)]
    pub json: bool,
}

/// `ordo demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the demo's event logs and stores in DIR (created; must be empty) to look at
    /// with `ordo status`, `export`, `notices`, `dlq list`.
    #[arg(long, value_name = "DIR")]
    pub keep: Option<std::path::PathBuf>,
    /// Events per scenario.
    #[arg(long, default_value_t = 4000)]
    pub events: usize,
    /// Seed of the generated histories and their disorder.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Print one JSON object instead of the report.
    #[arg(long)]
    pub json: bool,
}

/// Engine settings shared by the verbs that consume.
#[derive(Debug, Args, Clone)]
pub struct EngineArgs {
    /// Report a stream stalled when a gap stays open this long [default: 30000, or what
    /// the store recorded].
    #[arg(long, value_name = "MS")]
    pub gap_timeout_ms: Option<u64>,
    /// Streams whose name starts with PREFIX use monotonic versions (repeatable).
    #[arg(long, value_name = "PREFIX")]
    pub monotonic: Vec<String>,
    /// How many event ids the dedupe window remembers [default: 1048576, or what the
    /// store recorded].
    #[arg(long, value_name = "IDS", alias = "dedupe-window")]
    pub dedupe_window_ids: Option<usize>,
    /// Most events one stream may hold waiting before further ones are dead-lettered
    /// [default: 4096, or what the store recorded].
    #[arg(long, value_name = "EVENTS", alias = "stream-pending-max")]
    pub stream_pending_events_max: Option<usize>,
}

/// `ordo run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Where events come from: file:PATH, log:PATH, kafka://HOST:PORT/TOPIC?group=G,
    /// nats://HOST:PORT/STREAM?durable=NAME[&partitions=N&prefix=P] or
    /// sqs://QUEUE?region=R[&endpoint=URL].
    #[arg(long)]
    pub source: String,
    /// Where state goes: sqlite:PATH or postgres://...
    #[arg(long)]
    pub store: String,
    /// Stop once the source is drained and nothing can progress.
    #[arg(long)]
    pub exit_when_idle: bool,
    /// End with one JSON object of counters on stdout.
    #[arg(long)]
    pub json: bool,
    /// Exit 1 when the dead-letter queue is not empty at the end.
    #[arg(long)]
    pub fail_on_dead_letters: bool,
    /// Exit 1 when a stream is stalled at the end (a version that never came).
    #[arg(long)]
    pub fail_on_stalled: bool,
    /// Deliveries per commit at most [default: 32768].
    #[arg(long, value_name = "EVENTS")]
    pub batch: Option<usize>,
    /// Longest time a delivery waits for its commit [default: 50].
    #[arg(long, value_name = "MS")]
    pub commit_interval_ms: Option<u64>,
    /// Print progress to stderr every few seconds.
    #[arg(long)]
    pub progress: bool,
    /// Log every decision about every event: queued, buffered, parked on X, released,
    /// applied, redirected to Y, waits for a merge, duplicate, stale, dead-lettered.
    #[arg(short, long)]
    pub verbose: bool,
    /// Kafka and NATS: quiet time, with every assigned partition at its end, that counts
    /// as drained for --exit-when-idle.
    #[arg(long, value_name = "MS", default_value_t = ordo_kafka::IDLE_MS_DEFAULT)]
    pub idle_ms: u64,
    /// This member's stable name in its group: Kafka's `group.instance.id` (static
    /// membership), or its name in the PostgreSQL group of a partitioned NATS source.
    /// Restarted under the same name, it takes its partitions back at once instead of
    /// waiting for its old session to expire. One name per running member (a hostname,
    /// a pod name).
    #[arg(long, value_name = "NAME")]
    pub member_id: Option<String>,
    /// Journal entries kept at most (`ordo notices`); older ones are deleted.
    #[arg(long, value_name = "N", default_value_t = ordo_store::journal::JOURNAL_ENTRIES_MAX_DEFAULT)]
    pub notices_max: u64,
    /// Journal entries older than this many days are deleted.
    #[arg(long, value_name = "DAYS", default_value_t = ordo_store::journal::JOURNAL_AGE_MS_MAX_DEFAULT / 86_400_000)]
    pub notices_max_age_days: u64,
    /// Serve Prometheus metrics at /metrics, and /healthz and /readyz, on ADDR: a port
    /// (127.0.0.1:PORT), or HOST:PORT to listen elsewhere. Port 0 picks a free one (the
    /// address is printed on stderr).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// /healthz turns red when the run loop has not stepped, or handler calls have been
    /// out with none ending, for this long.
    #[arg(long, value_name = "MS", default_value_t = ordo_runtime::telemetry::STUCK_MS_DEFAULT)]
    pub health_stuck_ms: u64,
    /// Engine settings.
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Your own handler instead of the built-in document projection.
    #[command(flatten)]
    pub handler: HandlerArgs,
}

/// `run --handler`: the team's own code behind ordo's ordering.
#[derive(Debug, Args, Clone)]
pub struct HandlerArgs {
    /// Hand each event, in its turn, to your code instead of the built-in document
    /// projection: http://HOST:PORT/PATH, https://... (one POST per event) or
    /// exec:COMMAND (JSON lines on the command's stdin and stdout).
    #[arg(long, value_name = "URL")]
    pub handler: Option<String>,
    /// Handler calls at once across streams (never two of one stream or document).
    #[arg(long, value_name = "N", default_value_t = ordo_runtime::handler::CONCURRENCY_DEFAULT)]
    pub concurrency: usize,
    /// Longest wait for one handler answer; then the call is retried.
    #[arg(long, value_name = "MS", default_value_t = ordo_runtime::handler::HANDLER_TIMEOUT_MS_DEFAULT)]
    pub handler_timeout_ms: u64,
    /// Calls per event before it is dead-lettered with the last error.
    #[arg(long, value_name = "N", default_value_t = ordo_runtime::handler::HANDLER_ATTEMPTS_DEFAULT)]
    pub handler_attempts: u32,
    /// Pause before an event's second call; it doubles per attempt, with jitter.
    #[arg(long, value_name = "MS", default_value_t = ordo_runtime::handler::BACKOFF_INITIAL_MS_DEFAULT)]
    pub handler_backoff_ms: u64,
    /// Longest pause between two calls of one event (`Retry-After` is honoured).
    #[arg(long, value_name = "MS", default_value_t = ordo_runtime::handler::BACKOFF_MAX_MS_DEFAULT)]
    pub handler_backoff_max_ms: u64,
}

/// `ordo append`.
#[derive(Debug, Args)]
pub struct AppendArgs {
    /// The embedded event log (created if missing).
    #[arg(long)]
    pub log: String,
    /// JSONL file to append (standard input when absent).
    pub file: Option<String>,
}

/// Verbs that only need a store.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// The store: sqlite:PATH or postgres://...
    #[arg(long)]
    pub store: String,
}

/// `ordo dlq ...`.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters with their reasons.
    #[command(after_help = "Example:\n  ordo dlq list --store sqlite:state.db")]
    List(ListArgs),
    /// Put dead letters back in their streams (rate-limited, version-guarded).
    #[command(
        after_help = "Examples:\n  ordo dlq replay --store sqlite:state.db --id 3 --reason \"handler fixed\"\n  ordo dlq replay --store sqlite:state.db --rate 20/s\n  ordo dlq replay --store sqlite:state.db --id 1 --body fixed.json --reason \"amount sent as text\""
    )]
    Replay(ReplayArgs),
    /// Pass over dead letters so their streams go on.
    #[command(
        after_help = "Example:\n  ordo dlq skip --store sqlite:state.db --id 3 --reason \"refund issued by hand\""
    )]
    Skip(SkipArgs),
}

/// `... list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The store.
    #[arg(long)]
    pub store: String,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
}

/// `parked list`.
#[derive(Debug, Args)]
pub struct ParkedListArgs {
    /// The store.
    #[arg(long)]
    pub store: String,
    /// Only this stream's waiting events.
    #[arg(long)]
    pub stream: Option<String>,
    /// List at most N events (0: all); the summary counts them all.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub limit: usize,
    /// One JSON object per line (no summary).
    #[arg(long)]
    pub json: bool,
}

/// `dlq replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The store.
    #[arg(long)]
    pub store: String,
    /// Entries to replay (repeatable); all entries when absent.
    #[arg(long = "id", value_name = "ID")]
    pub ids: Vec<u64>,
    /// Replays per second at most, as N or N/s.
    #[arg(long, default_value = "100/s")]
    pub rate: String,
    /// A corrected event (a JSON file: same stream and version as the entry, any id) to
    /// requeue in the entry's place; needs exactly one --id.
    #[arg(long, value_name = "FILE")]
    pub body: Option<std::path::PathBuf>,
    /// Why (kept with the action).
    #[arg(long, default_value = "")]
    pub reason: String,
    /// One JSON object per replayed entry.
    #[arg(long)]
    pub json: bool,
    /// Say what each replay would do (apply, already applied, still blocked and why,
    /// refused again and why) and do nothing; works on a store it may not write.
    #[arg(long)]
    pub dry_run: bool,
    /// Engine settings (default: the ones the last `run` recorded in the store).
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// `dlq skip`.
#[derive(Debug, Args)]
pub struct SkipArgs {
    /// The store.
    #[arg(long)]
    pub store: String,
    /// Entries to skip (repeatable, at least one).
    #[arg(long = "id", value_name = "ID", required = true)]
    pub ids: Vec<u64>,
    /// Why (kept with the action).
    #[arg(long, default_value = "")]
    pub reason: String,
    /// Engine settings (default: the ones the last `run` recorded in the store).
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// `ordo parked ...`.
#[derive(Debug, Subcommand)]
pub enum ParkedCommand {
    /// List waiting events and what each waits for, after a summary by what is awaited.
    #[command(
        after_help = "Examples:\n  ordo parked list --store sqlite:state.db\n  ordo parked list --store sqlite:state.db --stream account-2 --json"
    )]
    List(ParkedListArgs),
    /// Pass over a missing version known lost, so that the events behind it go on.
    #[command(
        after_help = "Example:\n  ordo parked skip --store sqlite:state.db --stream account-2 --version 2 --reason \"lost in the outage\""
    )]
    Skip(ParkedSkipArgs),
}

/// `parked skip`.
#[derive(Debug, Args)]
pub struct ParkedSkipArgs {
    /// The store.
    #[arg(long)]
    pub store: String,
    /// The stalled stream.
    #[arg(long)]
    pub stream: String,
    /// The missing version to pass over (the stream's next one; the stall names it).
    #[arg(long)]
    pub version: u64,
    /// Why it is known lost (kept with the action).
    #[arg(long)]
    pub reason: String,
    /// Engine settings (default: the ones the last `run` recorded in the store).
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// `ordo pause` and `ordo resume`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["stream", "partition"])))]
pub struct PauseArgs {
    /// The store.
    #[arg(long)]
    pub store: String,
    /// The stream.
    #[arg(long)]
    pub stream: Option<String>,
    /// The source partition (0 for `file:` and `log:` sources).
    #[arg(long)]
    pub partition: Option<u32>,
    /// Why (kept with the action; required).
    #[arg(long)]
    pub reason: String,
    /// Engine settings (default: the ones the last `run` recorded in the store).
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// `ordo bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// A smaller run (well under two minutes).
    #[arg(long)]
    pub quick: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also write the slow-handler table as an SVG chart (events/s against keys) here.
    #[arg(long, value_name = "PATH")]
    pub plot: Option<std::path::PathBuf>,
    /// Only these sections (comma-separated); all when absent.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "SECTIONS")]
    pub only: Vec<BenchSection>,
}

/// A section of `ordo bench`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchSection {
    /// The engine's decisions against a hash-map apply loop.
    Core,
    /// Slow handlers: key-ordered against partition-ordered and unordered.
    Slow,
    /// `ordo run --handler` (HTTP) against a raw client.
    Handlers,
    /// A million parked events: heap, restart, release.
    Parked,
    /// The embedded log into SQLite against raw upserts.
    Embedded,
    /// The embedded log into PostgreSQL against a raw UNNEST loop.
    Postgres,
    /// tansu (Kafka) into SQLite against a raw consume loop.
    Kafka,
    /// NATS JetStream into SQLite against a raw pull-and-ack loop.
    Nats,
    /// Amazon SQS (moto's server mode) into SQLite against raw receive-and-delete loops.
    Sqs,
    /// A mixed topic through `ordo run`, whole process, against a raw upsert loop.
    Mixed,
}

/// `ordo chaos`.
#[derive(Debug, Args)]
pub struct ChaosArgs {
    /// One scenario (bank, merges, catalog, event-store, mixed); all, round-robin, when
    /// absent.
    #[arg(long)]
    pub scenario: Option<String>,
    /// How many seeds (from 0, or from --first-seed).
    #[arg(long, default_value_t = 200)]
    pub seeds: u64,
    /// The first seed of the range.
    #[arg(long, default_value_t = 0)]
    pub first_seed: u64,
    /// Reproduce exactly one seed, printing its trace tail.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Events per run.
    #[arg(long, default_value_t = 400)]
    pub events: usize,
    /// Seeds per cell of the survival matrix (0: skip it).
    #[arg(long, default_value_t = 10)]
    pub matrix_seeds: u64,
    /// Swarm testing: each seed draws its own fault rates (some faults off, some far more
    /// frequent than usual) and prints them with any failure.
    #[arg(long)]
    pub swarm: bool,
    /// Print one JSON object instead of the report.
    #[arg(long)]
    pub json: bool,
}

/// `ordo relay`.
#[derive(Debug, Args)]
pub struct RelayArgs {
    /// The store whose outbox is published.
    #[arg(long)]
    pub store: String,
    /// Where to: kafka://HOST:PORT/TOPIC (extra ?key=value go to the producer), or
    /// nats://HOST:PORT/STREAM[?prefix=P] (subject P.<stream>, P the stream name in
    /// lower case by default; Nats-Msg-Id the event id), or sqs://QUEUE?region=R
    /// (MessageGroupId the stream and MessageDeduplicationId the event id on a FIFO queue).
    #[arg(long)]
    pub to: String,
    /// Stop once the outbox is empty.
    #[arg(long)]
    pub exit_when_idle: bool,
    /// Outbox rows per batch.
    #[arg(long, default_value_t = ordo_runtime::relay::RELAY_BATCH_DEFAULT)]
    pub batch: usize,
    /// Serve Prometheus metrics (`ordo_relay_*`, the loop's heartbeat) at /metrics, and
    /// /healthz and /readyz, on ADDR: a port (127.0.0.1:PORT) or HOST:PORT.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// /healthz turns red when the relay loop has not stepped for this long.
    #[arg(long, value_name = "MS", default_value_t = ordo_runtime::telemetry::STUCK_MS_DEFAULT)]
    pub health_stuck_ms: u64,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// The defaults `--help` states in words are the ones the code uses.
    #[test]
    fn stated_defaults_are_the_real_ones() {
        let mut cli = super::Cli::command();
        let help = cli
            .find_subcommand_mut("run")
            .expect("run")
            .render_long_help()
            .to_string();
        for (flag, default) in [
            (
                "--gap-timeout-ms",
                ordo_core::limits::GAP_TIMEOUT_MS_DEFAULT.to_string(),
            ),
            (
                "--dedupe-window-ids",
                ordo_core::limits::DEDUPE_WINDOW_IDS_DEFAULT.to_string(),
            ),
            (
                "--stream-pending-events-max",
                ordo_core::limits::STREAM_PENDING_EVENTS_MAX_DEFAULT.to_string(),
            ),
            (
                "--batch",
                ordo_runtime::limits::COMMIT_EVENTS_MAX_DEFAULT.to_string(),
            ),
            (
                "--commit-interval-ms",
                ordo_runtime::limits::COMMIT_INTERVAL_MS_DEFAULT.to_string(),
            ),
        ] {
            let at = help.find(flag).unwrap_or_else(|| panic!("{flag} in help"));
            let text: String = help[at..].split("\n\n").next().unwrap().into();
            let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(
                text.contains(&format!("[default: {default}")),
                "{flag}: {text}"
            );
        }
    }

    /// A limit's flag is its setting's name; the names before that still parse.
    #[test]
    fn the_older_limit_flags_still_parse() {
        use clap::Parser;
        let parse = |flags: &[&str]| {
            let mut line = vec!["ordo", "run", "--source", "file:x", "--store", "sqlite:y"];
            line.extend_from_slice(flags);
            match super::Cli::try_parse_from(line).expect("parses").command {
                super::Command::Run(run) => run.engine,
                other => panic!("not run: {other:?}"),
            }
        };
        let new = parse(&[
            "--dedupe-window-ids",
            "7",
            "--stream-pending-events-max",
            "9",
        ]);
        let old = parse(&["--dedupe-window", "7", "--stream-pending-max", "9"]);
        assert_eq!(new.dedupe_window_ids, Some(7));
        assert_eq!(new.stream_pending_events_max, Some(9));
        assert_eq!(old.dedupe_window_ids, new.dedupe_window_ids);
        assert_eq!(old.stream_pending_events_max, new.stream_pending_events_max);
    }
}
