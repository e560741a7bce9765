//! `ordo run`: consume a source into a store.

use std::process::ExitCode;

use anyhow::Context;
use ordo_runtime::telemetry::{Endpoint, StatusReader, Telemetry};
use ordo_runtime::{run_serving, Consumer, RunEnd, RunOptions, SourceUrl};
use ordo_store::Store;

use crate::cli::RunArgs;
use crate::settings::{engine_config, open_store, record_engine_config};

/// Environment variable that makes commit number N fail half-way (tests only, in a
/// build with the `fault-injection` feature): `N:documents` or `N:checkpoints`.
#[cfg(feature = "fault-injection")]
const FAULT_VARIABLE: &str = "ORDO_FAULT_COMMIT";

/// Why `--member-id` is refused where no group is read.
const MEMBER_ID_NEEDS_A_GROUP: &str = "--member-id names a group member: a Kafka source, a NATS source with partitions=N and a PostgreSQL store, or an SQS source with a PostgreSQL store";

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let source_url = SourceUrl::parse(&args.source)?;
    let mut created = CreatedStore::new(&args.store);
    let mut store = open_store(&args.store, true)?;
    // A Kafka consumer group shares one store among its members, and the group gives
    // each partition to one member; other sources have exactly one writer.
    if !matches!(source_url, SourceUrl::Kafka(_)) {
        store.acquire_lease("ordo run")?;
        created.leased();
    }
    let mut config = engine_config(&args.engine, &mut store)?;
    let mut handler = crate::handler::for_run(&args.handler, &mut store)?;
    let telemetry = telemetry_for(&args)?;
    if let (Some(settings), Some(telemetry)) = (&mut handler, &telemetry) {
        settings.options.telemetry = Some(telemetry.handlers());
    }
    // Bound before anything runs: a taken port is a usage error, not a log line.
    let endpoint = match (&args.metrics, &telemetry) {
        (Some(address), Some(telemetry)) => Some(endpoint(address, &args.store, telemetry)?),
        _ => None,
    };
    crate::handler::adapt_config(&mut config, handler.as_ref());
    // The pool starts (its URL parsed, its command checked) before anything is recorded.
    let pool = match &handler {
        Some(settings) => {
            let pool = crate::handler::start(settings)?;
            crate::handler::record(&mut store, settings)?;
            Some(pool)
        }
        None => None,
    };
    record_engine_config(&mut store, &config)?;
    #[cfg(feature = "fault-injection")]
    inject_fault(&mut store)?;
    let (source, checkpoint_key) = open_source(&source_url, &mut store, &args)?;
    let mut consumer = Consumer::open(store, &checkpoint_key, config)?;
    if args.verbose {
        consumer.trace_decisions();
    }
    consumer.set_journal_retention(ordo_store::journal::Retention {
        entries_max: args.notices_max,
        age_ms_max: args.notices_max_age_days.saturating_mul(86_400_000),
    });
    if let Some(pool) = pool {
        consumer = consumer.with_handlers(pool);
    }
    if let Some(telemetry) = telemetry {
        consumer.set_telemetry(telemetry);
    }
    let options = run_options(&args)?;
    // From here on the store holds what the run did, whatever becomes of it.
    created.keep();
    let (report, mut consumer) = match run_serving(consumer, source, options, endpoint) {
        Ok(done) => done,
        Err(error) => {
            tracing::error!("run failed, nothing of the failed batch was written: {error}");
            return Ok(ExitCode::from(1));
        }
    };
    report_end(&args, &report, &mut consumer)
}

/// How the run loop batches and when it stops, from the flags.
fn run_options(args: &RunArgs) -> anyhow::Result<RunOptions> {
    let mut options = RunOptions {
        exit_when_idle: args.exit_when_idle,
        progress: args.progress,
        ..RunOptions::default()
    };
    if let Some(batch) = args.batch {
        anyhow::ensure!(batch > 0, "--batch must be at least 1");
        options.commit_events_max = batch;
    }
    if let Some(interval) = args.commit_interval_ms {
        options.commit_interval_ms = interval;
    }
    Ok(options)
}

/// `--metrics`: the telemetry the run reports to, checked against the handler's timeout.
fn telemetry_for(args: &RunArgs) -> anyhow::Result<Option<std::sync::Arc<Telemetry>>> {
    if args.metrics.is_none() {
        return Ok(None);
    }
    anyhow::ensure!(
        args.health_stuck_ms > 0,
        "--health-stuck-ms must be at least 1"
    );
    if args.handler.handler.is_some() && args.health_stuck_ms <= args.handler.handler_timeout_ms {
        // Then one slow call that is still within its timeout turns /healthz red, and a
        // liveness probe restarts a consumer that is fine.
        tracing::warn!(
            "--health-stuck-ms {} is not above --handler-timeout-ms {}: a call still within its timeout turns /healthz red",
            args.health_stuck_ms,
            args.handler.handler_timeout_ms
        );
    }
    Ok(Some(Telemetry::new(args.health_stuck_ms)))
}

/// The source `--source` names, and the key its positions are stored under (they belong
/// to the topic and group, or the stream, consumer and split: not to a server address).
fn open_source(
    source_url: &SourceUrl,
    store: &mut ordo_store::AnyStore,
    args: &RunArgs,
) -> anyhow::Result<(Box<dyn ordo_runtime::Source>, String)> {
    Ok(match &source_url {
        SourceUrl::Kafka(url) => {
            let mut url = ordo_kafka::KafkaUrl::parse(url).map_err(anyhow::Error::msg)?;
            if let Some(member) = &args.member_id {
                anyhow::ensure!(
                    !url.params.iter().any(|(k, _)| k == "group.instance.id"),
                    "--member-id and group.instance.id in the URL say the same: give one"
                );
                url.params
                    .push(("group.instance.id".into(), member.clone()));
            }
            // Positions belong to the topic and the group, not to a broker address.
            let key = format!(
                "kafka:{}?group={}",
                url.topic,
                url.group.clone().unwrap_or_default()
            );
            (
                Box::new(ordo_kafka::KafkaSource::open(&url, args.idle_ms)?),
                key,
            )
        }
        SourceUrl::Nats(url) => {
            let url = ordo_nats::NatsUrl::parse(url).map_err(anyhow::Error::msg)?;
            // Positions belong to the stream, the consumer and the split into partitions,
            // not to a server address.
            let durable_key = format!(
                "nats:{}?durable={}",
                url.stream,
                url.durable.clone().unwrap_or_default()
            );
            let key = if url.partitions > 1 {
                format!("{durable_key}&partitions={}", url.partitions)
            } else {
                durable_key.clone()
            };
            refuse_another_split(store, &durable_key, &key)?;
            let source = open_nats(&url, &key, store, args)?;
            (source, key)
        }
        SourceUrl::Sqs(url) => {
            let url = ordo_sqs::SqsUrl::parse(url).map_err(anyhow::Error::msg)?;
            // Positions are ordo's own numbering per slot: they belong to the queue and
            // the split into slots, not to an endpoint.
            let key = format!("sqs:{}?slots={}", url.queue, url.slots);
            refuse_another_slot_count(store, &url.queue, &key)?;
            (open_sqs(&url, &key, store, args)?, key)
        }
        other => {
            anyhow::ensure!(args.member_id.is_none(), "{MEMBER_ID_NEEDS_A_GROUP}");
            (ordo_runtime::open_source(other)?, other.checkpoint_key())
        }
    })
}

/// What the run did, for the operator; exit 1 when `--fail-on-*` asks and it applies.
fn report_end(
    args: &RunArgs,
    report: &ordo_runtime::RunReport,
    consumer: &mut Consumer<ordo_store::AnyStore>,
) -> anyhow::Result<ExitCode> {
    let dead_letters = consumer.store().dead_letters()?.len();
    let counters = report.counters;
    if args.json {
        outln!("{}", counters.to_json());
    }
    let how = match report.end {
        RunEnd::Idle => "source drained, nothing can progress",
        RunEnd::Finished => "source ended",
        RunEnd::Stopped => "stopped by signal after committing the last batch",
    };
    tracing::info!(
        "{how}; {} delivered in this run, {} commits; store counters: {counters}; {dead_letters} dead letters",
        report.delivered, report.commits
    );
    if consumer.notices_suppressed() > 0 {
        tracing::info!(
            "{} further notices not printed (see the counters)",
            consumer.notices_suppressed()
        );
    }
    let status = consumer.store().status()?;
    print_still_waiting(&status, &args.store);
    let failed = (args.fail_on_dead_letters && dead_letters > 0)
        || (args.fail_on_stalled && status.counters.stalled > 0);
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Arms the commit fault `ORDO_FAULT_COMMIT` asks for (tests/crash.rs).
#[cfg(feature = "fault-injection")]
fn inject_fault(store: &mut ordo_store::AnyStore) -> anyhow::Result<()> {
    use ordo_store::FaultStage;
    let Ok(fault) = std::env::var(FAULT_VARIABLE) else {
        return Ok(());
    };
    let (commit, stage) = fault
        .split_once(':')
        .with_context(|| format!("{FAULT_VARIABLE} must be N:documents or N:checkpoints"))?;
    let stage = match stage {
        "documents" => FaultStage::AfterDocuments,
        "checkpoints" => FaultStage::AfterCheckpoints,
        other => anyhow::bail!("{FAULT_VARIABLE}: unknown stage `{other}`"),
    };
    match store {
        ordo_store::AnyStore::Sqlite(sqlite) => {
            sqlite.inject_fault(commit.parse().context("fault commit number")?, stage);
            Ok(())
        }
        ordo_store::AnyStore::Postgres(_) => {
            anyhow::bail!("{FAULT_VARIABLE} works with SQLite stores only")
        }
    }
}

/// Refuses to read a NATS stream as another number of partitions than the positions in
/// the store were recorded for: partition n's position means nothing for another split
/// (its subjects differ), so messages would be skipped or never read.
fn refuse_another_split(
    store: &mut ordo_store::AnyStore,
    durable_key: &str,
    key: &str,
) -> anyhow::Result<()> {
    let positions = store.status_summary()?.positions;
    let other = positions.iter().map(|p| p.source.as_str()).find(|source| {
        *source != key
            && (*source == durable_key
                || source
                    .strip_prefix(durable_key)
                    .is_some_and(|rest| rest.starts_with("&partitions=")))
    });
    if let Some(other) = other {
        anyhow::bail!(
            "this store holds positions for `{other}`, a different split of the stream than `{key}`: \
             a partition's position means nothing for another split, and messages stored under \
             PREFIX.<n> for an n the new split does not read would never be read. Keep partitions= \
             as the producers partition (docs/brokers.md, \"Several ordo members on one NATS stream\")"
        );
    }
    Ok(())
}

/// A NATS source: one member of a group when it is partitioned and the store is
/// PostgreSQL (the group's members share it), else the reader of every partition.
fn open_nats(
    url: &ordo_nats::NatsUrl,
    key: &str,
    store: &mut ordo_store::AnyStore,
    args: &RunArgs,
) -> anyhow::Result<Box<dyn ordo_runtime::Source>> {
    let postgres = match store {
        ordo_store::AnyStore::Postgres(postgres) if url.partitions > 1 => postgres,
        _ => {
            anyhow::ensure!(args.member_id.is_none(), "{MEMBER_ID_NEEDS_A_GROUP}");
            return Ok(Box::new(ordo_nats::NatsSource::open(url, args.idle_ms)?));
        }
    };
    let member = join_group(postgres, key, url.partitions, args);
    Ok(Box::new(ordo_nats::NatsSource::open_member(
        url,
        args.idle_ms,
        member,
    )?))
}

/// This process as one member of the group sharing `postgres` under `key`, which
/// splits `partitions` (a NATS stream's subject partitions, an SQS queue's slots).
fn join_group(
    postgres: &mut ordo_store::PostgresStore,
    key: &str,
    partitions: u32,
    args: &RunArgs,
) -> ordo_runtime::membership::Member {
    if let Some(member) = &args.member_id {
        postgres.set_member(member);
    }
    let members = postgres.members(
        key,
        partitions,
        std::time::Duration::from_millis(ordo_runtime::membership::SESSION_TIMEOUT_MS),
    );
    ordo_runtime::membership::Member::start(members, partitions)
}

/// An SQS source: one member of a group when the store is PostgreSQL (any number of
/// processes may share the queue and the store; each reads while it holds a slot), else
/// the queue's one reader.
fn open_sqs(
    url: &ordo_sqs::SqsUrl,
    key: &str,
    store: &mut ordo_store::AnyStore,
    args: &RunArgs,
) -> anyhow::Result<Box<dyn ordo_runtime::Source>> {
    let ordo_store::AnyStore::Postgres(postgres) = store else {
        anyhow::ensure!(args.member_id.is_none(), "{MEMBER_ID_NEEDS_A_GROUP}");
        return Ok(Box::new(ordo_sqs::SqsSource::open(url, args.idle_ms)?));
    };
    let member = join_group(postgres, key, url.slots, args);
    Ok(Box::new(ordo_sqs::SqsSource::open_member(
        url,
        args.idle_ms,
        member,
    )?))
}

/// Slots are positions' partitions: a store that numbered a queue's deliveries in
/// another count of slots would hand waiting events of slots no member takes to nobody.
fn refuse_another_slot_count(
    store: &mut ordo_store::AnyStore,
    queue: &str,
    key: &str,
) -> anyhow::Result<()> {
    let positions = store.status_summary()?.positions;
    let prefix = format!("sqs:{queue}?slots=");
    if let Some(other) = positions
        .iter()
        .map(|p| p.source.as_str())
        .find(|source| *source != key && source.starts_with(&prefix))
    {
        anyhow::bail!(
            "this store holds positions for `{other}`, another count of slots than `{key}`: keep slots= as it was \
             (docs/brokers.md, \"Several ordo members on one SQS queue\")"
        );
    }
    Ok(())
}

/// What is still stuck at the end of a run, by stream, so that nobody has to guess
/// from the counters.
fn print_still_waiting(status: &ordo_store::StoreStatus, store_url: &str) {
    if status.waiting() == 0 && status.counters.stalled == 0 {
        return;
    }
    tracing::info!(
        "still waiting: {} events ({} behind a gap or a dead letter, {} on another stream); {} streams stalled",
        status.waiting(),
        status.buffered,
        status.parked,
        status.counters.stalled
    );
    for stream in &status.longest_waiting {
        tracing::info!(
            "  {}: {} events wait for {}",
            stream.stream,
            stream.events,
            stream.blocker
        );
    }
    let listed = status.longest_waiting.len() as u64;
    let streams_more = if listed == ordo_store::status::LONGEST_WAITING_MAX as u64 {
        " (the longest-waiting streams only)"
    } else {
        ""
    };
    tracing::info!(
        "see `ordo status --store {}`{streams_more} and `ordo parked list`",
        ordo_store::redact(store_url)
    );
}

/// A SQLite store file this `run` is about to create: removed again (with its WAL files)
/// when the run fails before consuming anything (a mistyped source, a taken port), so a
/// failed first try leaves no empty store behind. Only once this process holds the
/// store's lease: two runs started together on a new path both see it missing, and the
/// one that loses the lease must not delete the winner's store.
struct CreatedStore {
    path: Option<std::path::PathBuf>,
    leased: bool,
}

impl CreatedStore {
    fn new(store_url: &str) -> Self {
        let path = match ordo_store::StoreUrl::parse(store_url) {
            Ok(ordo_store::StoreUrl::Sqlite(path)) => std::path::PathBuf::from(path),
            _ => {
                return CreatedStore {
                    path: None,
                    leased: false,
                }
            }
        };
        CreatedStore {
            path: (!path.exists()).then_some(path),
            leased: false,
        }
    }

    fn leased(&mut self) {
        self.leased = true;
    }

    fn keep(&mut self) {
        self.path = None;
    }
}

impl Drop for CreatedStore {
    fn drop(&mut self) {
        if !self.leased {
            return;
        }
        if let Some(path) = self.path.take() {
            for suffix in ["", "-wal", "-shm"] {
                let mut file = path.clone().into_os_string();
                file.push(suffix);
                // Best effort: what cannot be removed was never ours to begin with.
                let _ = std::fs::remove_file(file);
            }
        }
    }
}

/// Binds the metrics endpoint: a bare port (or `:PORT`) means loopback.
pub(crate) fn endpoint(
    address: &str,
    store_url: &str,
    telemetry: &std::sync::Arc<Telemetry>,
) -> anyhow::Result<Endpoint> {
    let address = crate::settings::listen_address(address);
    let listener = std::net::TcpListener::bind(&address)
        .with_context(|| format!("--metrics {address}: cannot listen"))?;
    tracing::info!(
        "metrics on http://{}/metrics (and /healthz, /readyz)",
        listener.local_addr()?
    );
    // A connection of the endpoint's own, opened at the first scrape and again after
    // an error (a restarted database).
    let url = store_url.to_string();
    let mut store: Option<ordo_store::AnyStore> = None;
    let reader: StatusReader = Box::new(move || {
        let opened = match store.as_mut() {
            Some(opened) => opened,
            None => store.insert(
                ordo_store::AnyStore::open_read_only(&url)
                    .map_err(|e| ordo_store::ReadError::Unavailable(e.to_string()))?,
            ),
        };
        let status = opened.status_summary();
        if status.is_err() {
            store = None;
        }
        status
    });
    Ok(Endpoint {
        listener,
        telemetry: telemetry.clone(),
        reader,
    })
}
